"""Where espzoo keeps its own files ($ESPZOO_HOME, default ~/.cache/espzoo): user catalog, caches, crash reports."""

from __future__ import annotations

import os
from pathlib import Path


def espzoo_home() -> Path:
    return Path(os.environ.get("ESPZOO_HOME") or Path.home() / ".cache" / "espzoo")
