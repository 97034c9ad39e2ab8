"""Test-wide safety: nothing may reach the real Hub, and every test gets its own caches."""

from __future__ import annotations

import os
import signal
import warnings
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


def _sigint_state() -> tuple[object, bool, bool]:
    """Python's SIGINT handler, and whether the OS has SIGINT ignored or blocked for this process."""
    status = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":\t" in line)
    bit = 1 << (signal.SIGINT - 1)
    return (signal.getsignal(signal.SIGINT), bool(int(status.get("SigIgn", "0"), 16) & bit),
            bool(int(status.get("SigBlk", "0"), 16) & bit))


@pytest.fixture(autouse=True)
def _sigint_left_as_found(request: pytest.FixtureRequest) -> object:
    """Ctrl-C tests (test_trainer) need Python's own SIGINT handling, and children inherit an ignored SIGINT. Once, in
    a full run on Python 3.13, both SIGINT tests found it gone (a Ctrl-C to a runner had no effect) while they pass
    alone: a test or library run in this process had changed it. Whoever changes it is named and it is put back."""
    found = _sigint_state()
    yield
    if _sigint_state() != found:
        warnings.warn(f"{request.node.nodeid} left SIGINT handling changed: {found} -> {_sigint_state()}; restored",
                      stacklevel=1)
        signal.signal(signal.SIGINT, found[0] if callable(found[0]) else signal.default_int_handler)
        if not found[2]:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


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
