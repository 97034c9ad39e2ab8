"""The huggingface_hub boundary (espzoo.hub.hf): every private name it relies on still exists, nothing else reaches
past it, its light re-implementations agree with huggingface_hub's own, and process-wide settings are restored."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from espzoo.hub import hf as _hf

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("module", "name"), _hf.PRIVATE_NAMES, ids=[f"{m}.{n}" for m, n in _hf.PRIVATE_NAMES])
def test_every_private_name_still_exists(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"huggingface_hub moved {module}.{name}: update hub.hf"


def test_the_installed_major_version_is_the_one_pinned() -> None:
    import huggingface_hub

    assert int(huggingface_hub.__version__.split(".")[0]) == _hf.HF_MAJOR
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(rf'"huggingface_hub>={_hf.HF_MAJOR}\.[\d.]+,<{_hf.HF_MAJOR + 1}"', pyproject)


def test_nothing_but_the_boundary_reaches_huggingface_hub_internals() -> None:
    private = re.compile(r"huggingface_hub\.(_\w+|utils\._\w+|file_download)|\bhttpx2\b|DOWNLOAD_CHUNK_SIZE")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("zoo", "cli", "bench", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py")) if path != ROOT / "zoo" / "hub" / "hf.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if private.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []


def test_cache_layout_rules_agree_with_huggingface_hub(tmp_path: Path) -> None:
    # huggingface_hub reads HF_HOME at import: ask a fresh interpreter.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HF_HOME")} | {"HF_HOME": str(tmp_path)}
    code = ("from huggingface_hub import constants; from huggingface_hub.file_download import repo_folder_name; "
            "print(constants.HF_HUB_CACHE); print(repo_folder_name(repo_id='espnet/bn_x', repo_type='model'))")
    cache, folder = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True, timeout=60).stdout.split()
    old = {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_CACHE")}
    try:
        os.environ.pop("HF_HUB_CACHE", None)
        os.environ["HF_HOME"] = str(tmp_path)
        assert _hf.hub_cache_dir() == Path(cache)
    finally:
        for key, value in old.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert _hf.repo_folder("espnet/bn_x") == folder
    assert _hf.incomplete_etag(Path("abc123.0f1e2d3c.incomplete")) == "abc123"
    assert _hf.lock_path(tmp_path, "espnet/bn_x", "abc") == tmp_path / ".locks" / folder / "abc.lock"


def test_download_chunk_size_is_set_only_inside_espzoo_calls(tmp_path: Path) -> None:
    from huggingface_hub import constants

    from espzoo.hub import session as hub_session

    default = constants.DOWNLOAD_CHUNK_SIZE
    # a session used to set it process-wide; it sets it only around its own calls now
    hub_session.Session("espnet/x", tmp_path, "http://127.0.0.1:9", None, retries=0, backoff=0)
    assert constants.DOWNLOAD_CHUNK_SIZE == default
    with _hf.download_chunk_size(hub_session.DOWNLOAD_CHUNK):
        assert constants.DOWNLOAD_CHUNK_SIZE == hub_session.DOWNLOAD_CHUNK
        with _hf.download_chunk_size(hub_session.DOWNLOAD_CHUNK):  # nested (hub.read inside a pull): still set
            pass
        assert constants.DOWNLOAD_CHUNK_SIZE == hub_session.DOWNLOAD_CHUNK
    assert constants.DOWNLOAD_CHUNK_SIZE == default


def test_progress_reaches_the_callback_and_nothing_is_drawn(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[int, str, float, float | None]] = []
    bar_class = _hf.tqdm_class(lambda *event: seen.append(event))
    bar = bar_class(total=100, unit="B", desc="model.pth")
    bar.update(40)
    bar.update(60)
    bar.close()
    assert seen[-1] == (0, "B", 100, 100) and capsys.readouterr().err == ""
    files = bar_class(iterable=["a", "b"], desc="Fetching 2 files")
    assert list(files) == ["a", "b"] and seen[-1][:3] == (1, "files", 2)
