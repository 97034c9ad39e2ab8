"""Where espzoo keeps its own files ($ESPZOO_HOME, default ~/.cache/espzoo): user catalog, caches, crash reports;
and where the files it ships live (the catalog, the language table, the embedded assets)."""

from __future__ import annotations

import os
from pathlib import Path


def espzoo_home() -> Path:
    return Path(os.environ.get("ESPZOO_HOME") or Path.home() / ".cache" / "espzoo")


# zoo/ (the `espzoo` package): catalog.yaml, languages.tsv and assets/ sit at its top, whichever subpackage reads them
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
