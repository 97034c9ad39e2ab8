"""Test-wide safety: nothing may reach the real Hub, and every test gets its own caches."""

from __future__ import annotations

import os
import signal
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

# A suite started in the background by a script (`cmd &` without job control, as CI harnesses may) inherits SIGINT
# ignored, and so does every child it starts; the Ctrl-C tests (test_trainer) need SIGINT as a terminal gives it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _tiny_repo(variant: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real ESPnet model in hub layout (tests/fixtures/make_tiny_repo.py; cached across runs).

    Its files are shared by every test of the session: copy the folder before changing anything in it.
    """
    from fixtures.make_tiny_repo import build_tiny_repo

    with pytest.MonkeyPatch.context() as mp:  # the build's own ESPZOO_HOME, not the user's
        mp.setenv("ESPZOO_HOME", str(tmp_path_factory.mktemp("fixture_home")))
        return build_tiny_repo(variant)


@pytest.fixture(scope="session")
def tiny_repo_char(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_repo("char", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_repo_bpe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_repo("bpe", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_repo_nometa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_repo("nometa", tmp_path_factory)


@pytest.fixture(scope="session")
def mirror_root(
    tiny_repo_char: Path, tiny_repo_bpe: Path, tiny_repo_nometa: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`<root>/espzoo-test/tiny-{char,bpe,nometa}/`: copies of the three repos, for `mirror serve --root`."""
    import shutil

    root = tmp_path_factory.mktemp("mirror_root")
    for name, repo in (("tiny-char", tiny_repo_char), ("tiny-bpe", tiny_repo_bpe), ("tiny-nometa", tiny_repo_nometa)):
        shutil.copytree(repo, root / "espzoo-test" / name)
    return root


@pytest.fixture(autouse=True)
def _isolated_homes(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh ESPZOO_HOME per test, so a user catalog or cache on this machine never leaks in."""
    home = tmp_path_factory.mktemp("espzoo_home")
    monkeypatch.setenv("ESPZOO_HOME", str(home))


def _tiny_s2t(variant: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real OWSM-style model trained by ESPnet's S2T task (tests/fixtures/make_tiny_s2t.py; cached)."""
    from fixtures.make_tiny_s2t import build_tiny_s2t

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESPZOO_HOME", str(tmp_path_factory.mktemp("fixture_home")))
        return build_tiny_s2t(variant)


@pytest.fixture(scope="session")
def tiny_s2t(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_s2t("s2t", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_s2t_ctc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_s2t("s2t_ctc", tmp_path_factory)
