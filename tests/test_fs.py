"""Outputs appear complete or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from espzoo.utils.fs import atomic_write, replace_dir, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text(tmp_path / "out" / "config.yaml", "old\n")

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["config.yaml"]


def test_replace_dir_swaps_a_finished_folder_in(tmp_path: Path) -> None:
    dest, new = tmp_path / "train", tmp_path / ".train.tmp"
    dest.mkdir()
    (dest / "text").write_text("old")
    new.mkdir()
    (new / "text").write_text("new")
    replace_dir(new, dest)
    assert (dest / "text").read_text() == "new" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # the old folder is gone too
