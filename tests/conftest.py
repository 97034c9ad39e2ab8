"""Test-wide safety: nothing may reach the real Hub, and every test gets its own caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports huggingface_hub (it reads these once, at import).
# Port 9 on loopback refuses at once: a test that forgets to point at the mirror fails fast, offline.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_ETAG_TIMEOUT"] = "5"
os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] = "10"
os.environ.pop("HF_TOKEN", None)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_homes(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh ESPZOO_HOME per test, so a user catalog or cache on this machine never leaks in."""
    home = tmp_path_factory.mktemp("espzoo_home")
    monkeypatch.setenv("ESPZOO_HOME", str(home))
