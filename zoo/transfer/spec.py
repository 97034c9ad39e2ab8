"""The transfer spec grammar: `SOURCE[:include=...][:exclude=...]`, and module names matched against tensor
names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from espzoo.errors import TransferError
from espzoo.repo import (
    looks_like_repo_id,
)

NORMALIZE_PREFIX = "normalize"


@dataclass(frozen=True)
class TransferSpec:
    """One `--init_param`: take tensors from SOURCE (under SRC), put them under DST, except EXCLUDES.

    `includes` is espzoo sugar (`--include encoder`): when given, only keys under these modules load.
    """

    source: str
    src: str | None = None
    dst: str | None = None
    excludes: tuple[str, ...] = ()
    includes: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = ":".join([self.source, self.src or "", self.dst or "", ",".join(self.excludes)]).rstrip(":")
        return text + (f" (include {','.join(self.includes)})" if self.includes else "")


def parse_spec(text: str) -> TransferSpec:
    """Parse ESPnet's `SOURCE[:SRC[:DST[:EXCLUDES]]]`.

    SOURCE is the longest `:`-joined prefix that names an existing file or folder (so paths holding `:` work),
    otherwise a repo id `org/name[@rev]`. Empty fields mean "none"; empty excludes are ignored.
    """
    parts = text.split(":")
    for n in range(len(parts), 0, -1):
        candidate = ":".join(parts[:n])
        if candidate and Path(candidate).expanduser().exists():
            source, fields = str(Path(candidate).expanduser()), parts[n:]
            break
    else:
        if not looks_like_repo_id(parts[0]):
            raise TransferError(
                f"The source of spec {text!r} ({parts[0]!r}) is neither an existing checkpoint or folder "
                "nor a repo id like org/name[@rev]; check the path."
            )
        source, fields = parts[0], parts[1:]
    if len(fields) > 3:
        raise TransferError(
            f"Spec {text!r} has {len(fields) + 1} fields; the form is SOURCE:SRC:DST:EXCLUDES "
            "(EXCLUDES comma-separated)."
        )
    src, dst, excludes = (fields + ["", "", ""])[:3]
    return TransferSpec(
        source=source,
        src=src.strip(" .") or None,
        dst=dst.strip(" .") or None,
        excludes=tuple(e.strip(" .") for e in excludes.split(",") if e.strip(" .")),
    )


def under(key: str, module: str) -> bool:
    """Whether `key` is `module` itself or inside it (a module-boundary prefix match)."""
    return key == module or key.startswith(module + ".")


def module_names(keys: Iterable[str]) -> list[str]:
    """Every module path (and key) in `keys`: `a.b.c` gives `a`, `a.b`, `a.b.c`."""
    names: dict[str, None] = {}
    for key in keys:
        parts = key.split(".")
        for i in range(1, len(parts) + 1):
            names[".".join(parts[:i])] = None
    return list(names)


def _no_match(what: str, name: str, keys: Iterable[str]) -> TransferError:
    modules = module_names(keys)
    close = difflib.get_close_matches(name, modules, n=5, cutoff=0.4)
    top = sorted({m.split(".")[0] for m in modules})
    hint = f"closest: {', '.join(close)}" if close else f"top-level modules: {', '.join(top)}"
    return TransferError(f"{what} {name!r} matches no tensor ({hint}).")
