"""Lazy public faces: a package names what it offers, and the module holding each name is imported on first use,
so `import espzoo.hub` costs nothing and no package's `__init__` takes part in an import cycle."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def attach(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(`__getattr__`, `__dir__`, `__all__`) for `package`, whose names live in its submodules:
    `exports` maps each public name to the submodule (relative to `package`) that defines it, or to
    "submodule:name" where the submodule calls it otherwise."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = exports[name].partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attribute or name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)


def faces(**modules: str) -> dict[str, str]:
    """{name: module} from `module="name name ..."` keyword arguments (one line per submodule in an `__init__`)."""
    return {name: module for module, names in modules.items() for name in names.split()}
