"""YAML read safely, and fast: libyaml's safe loader where PyYAML has it (the pure-Python one takes ~30 s on OWSM's
inline 50k-token list), never a loader that builds arbitrary objects (configs and meta.yaml come from the Hub)."""

from __future__ import annotations

from typing import IO, Any

import yaml

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the same text as yaml.safe_dump, ~4x faster
YAMLError = yaml.YAMLError


def load_yaml(source: str | bytes | IO[str]) -> Any:
    """The data of a YAML text or stream (None for an empty one); yaml.YAMLError when it is not YAML."""
    return yaml.load(source, Loader=SAFE_LOADER)  # noqa: S506 (a safe loader)


def dump_yaml(data: Any, **options: Any) -> str:
    """yaml.safe_dump's text (its options), by libyaml where PyYAML has it (an OWSM config's 50k tokens: 6x faster)."""
    return yaml.dump(data, Dumper=SAFE_DUMPER, **options)
