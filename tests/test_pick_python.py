"""scripts/pick_python.sh, which names the Python a new .venv is made with (Makefile, .ci/run): the newest of
3.13, 3.12, 3.11 that really runs and really is that version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pick_python.sh"
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _pick(bin_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bin_dir), "PYENV_ROOT": str(tmp_path / "no-pyenv"), "HOME": str(tmp_path)}
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)


def _shim(path: Path) -> None:
    """What a pyenv shim for an installed but unselected version does: exits non-zero."""
    path.write_text("#!/bin/sh\necho \"pyenv: $(basename $0): command not found\" >&2\nexit 127\n")
    path.chmod(0o755)


def test_skips_a_shim_that_fails_and_a_name_that_lies(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    others = [v for v in ("3.13", "3.12", "3.11") if v != VERSION]
    _shim(bin_dir / f"python{others[0]}")
    (bin_dir / f"python{others[1]}").symlink_to(sys.executable)  # runs, but is not the version its name says
    (bin_dir / f"python{VERSION}").symlink_to(sys.executable)
    done = _pick(bin_dir, tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, f"python{VERSION}"), done.stderr


def test_finds_pyenvs_installs_when_the_shims_fail(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for v in ("3.13", "3.12", "3.11"):
        _shim(bin_dir / f"python{v}")
    installed = tmp_path / "no-pyenv" / "versions" / f"{VERSION}.0" / "bin"
    installed.mkdir(parents=True)
    (installed / f"python{VERSION}").symlink_to(sys.executable)
    done = _pick(bin_dir, tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, str(installed / f"python{VERSION}")), done.stderr


def test_none_found_is_one_sentence(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _shim(bin_dir / "python3.12")
    done = _pick(bin_dir, tmp_path)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == ["no Python 3.11-3.13 found; install one, or name one with PYTHON="]
