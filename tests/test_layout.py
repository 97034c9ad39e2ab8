"""The design, checked from the source: every import of every module (those inside functions included, those
only for type checkers excluded) goes down the flow, none closes a cycle, no module takes another subpackage's
private name, no library file is over 700 lines, ESPnet's task names are spelled only in espzoo.tasks, and no
test imports another test module."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "zoo"

# The units of the library, lowest first: a unit imports only units before it (and itself). The subpackages
# follow the flow (catalog -> hub -> models -> data -> lora -> transfer -> decode -> train -> publish); serve
# (the mirror) sits beside hub and after it; decode comes before train because the recipe decodes too (it aligns
# long recordings with the pretrained model before training); the root modules are facts every layer uses.
LAYERS = ("errors", "tasks", "utils", "repo", "catalog", "hub", "serve", "models", "data", "lora", "transfer",
          "decode", "train", "publish")
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ZOO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["espzoo", *parts])


MODULES = {_module_name(p): p for p in sorted(ZOO.rglob("*.py"))}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (annotations only: never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in ast.walk(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name, line) for each espzoo import of `module`."""
    found = []
    for node in _runtime_nodes(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "espzoo":
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                found.append((target, "", node.lineno) if target in MODULES else (node.module, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "espzoo"]
    return found


def _unit(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "espzoo"


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}


def test_no_import_cycle() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_every_import_goes_down_the_flow() -> None:
    upward = []
    for module in MODULES:
        if module == "espzoo":  # the lazy public face names every layer (as strings, imported on use)
            continue
        mine = LAYERS.index(_unit(module))
        for target, name, line in _imports(module):
            unit = _unit(target)
            if unit != "espzoo" and LAYERS.index(unit) > mine:
                upward.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target} {name}".rstrip())
    assert not upward, "imports up the flow:\n" + "\n".join(upward)
    assert set(LAYERS) == {_unit(m) for m in MODULES} - {"espzoo"}, "a unit is missing from LAYERS"


def test_no_module_takes_another_subpackages_private_name() -> None:
    taken = []
    for module in MODULES:
        for target, name, line in _imports(module):
            private = name.startswith("_") or target.rsplit(".", 1)[-1].startswith("_")
            if private and not name.startswith("__") and _unit(target) != _unit(module):
                taken.append(f"{MODULES[module].relative_to(ROOT)}:{line} takes {target} {name}".rstrip())
    assert not taken, "\n".join(taken)


def test_no_library_file_is_over_700_lines() -> None:
    lengths = {p.relative_to(ROOT): len(p.read_text(encoding="utf-8").splitlines())
               for p in [*ZOO.rglob("*.py"), *(ROOT / "cli").rglob("*.py")]}
    assert not {p: n for p, n in lengths.items() if n > MAX_LINES}


def test_task_names_are_spelled_only_in_the_registry() -> None:
    from espzoo.tasks import TASKS

    names = {t.name for t in TASKS} | {t.family for t in TASKS}
    spelled = []
    for path in [*ZOO.rglob("*.py"), *(ROOT / "cli").rglob("*.py")]:
        if path == ZOO / "tasks.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not spelled, "\n".join(spelled)


def test_no_test_imports_another_test_module() -> None:
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    crossing = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                       [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            crossing += [f"{path.name}:{node.lineno} imports {m}" for m in modules if m in tests]
    assert not crossing, "\n".join(crossing)
