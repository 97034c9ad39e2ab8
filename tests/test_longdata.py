"""Long recordings as training data (issue 23, train.longdata): a Kaldi dir of recordings over a minute, one transcript
each, built from the shipped English clips (known boundaries), aligned by the shipped demo model and cut."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _longaudio import Joined, clips, join

from espzoo.train.longdata import CutReport, cut_recordings, has_long_recordings

DEMO = Path(__file__).resolve().parent.parent / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"
DEV = Path(__file__).resolve().parent.parent / "zoo" / "assets" / "speech" / "en" / "dev"
TEST = Path(__file__).resolve().parent.parent / "zoo" / "assets" / "speech" / "en" / "test"
ESPZOO = str(Path(sys.executable).with_name("espzoo"))


def _kaldi(folder: Path, recordings: dict[str, tuple[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wav.scp").write_text("".join(f"{k} {a}\n" for k, (a, _) in recordings.items()), encoding="utf-8")
    (folder / "text").write_text("".join(f"{k} {t}\n" for k, (_, t) in recordings.items()), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def long_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Joined]]:
    """Two recordings of 30 train clips each (~80 s: over the 60 s a training utterance may last), and a Kaldi dir
    with one transcript per recording (relative audio paths, as a corpus ships them)."""
    root = tmp_path_factory.mktemp("longdata")
    (root / "audio").mkdir()
    chosen = clips("en", "train")[:60]
    joined = [join(root / "audio" / f"r{i}.wav", chosen[30 * i : 30 * (i + 1)]) for i in range(2)]
    _kaldi(root, {f"r{i}": (f"audio/r{i}.wav", " ".join(j.texts)) for i, j in enumerate(joined)})
    return root, joined


def test_only_long_recordings_without_segments_are_cut(long_set: tuple[Path, list[Joined]], tmp_path: Path) -> None:
    root, _ = long_set
    assert has_long_recordings(root, 60.0)
    assert not has_long_recordings(root, 100.0)
    assert not has_long_recordings(TEST, 60.0)  # clips: as before
    segmented = _kaldi(tmp_path / "seg", {"r0": (str(root / "audio" / "r0.wav"), "x")})
    (segmented / "segments").write_text("u1 r0 0.0 2.0\n")
    assert not has_long_recordings(segmented, 60.0)


@pytest.fixture(scope="module")
def cut(long_set: tuple[Path, list[Joined]], tmp_path_factory: pytest.TempPathFactory) -> tuple[CutReport, Path]:
    out = tmp_path_factory.mktemp("cut") / "train_long"
    return cut_recordings(str(DEMO), long_set[0], out), out


def test_cuts_recover_the_clips(cut: tuple[CutReport, Path], long_set: tuple[Path, list[Joined]]) -> None:
    report, out = cut
    _, joined = long_set
    assert report.recordings == 2 and not report.dropped and not report.problems
    for recording, clip_set in zip(("r0", "r1"), joined, strict=True):
        cuts = [c for c in report.kept if c.recording == recording]
        assert [c.text for c in cuts] == clip_set.texts  # one utterance per clip, its words exactly
        for c, start, end in zip(cuts, clip_set.starts, clip_set.ends, strict=True):
            assert abs(c.start - start) <= 0.3 and abs(c.end - end) <= 0.3, (c, start, end)
    segments = (out / "segments").read_text().splitlines()
    assert len(segments) == 60 and (out / "dropped.txt").read_text() == ""
    spoken = sum(e - s for j in joined for s, e in zip(j.starts, j.ends, strict=True))
    assert spoken - 5 < report.seconds_kept < spoken + 60 * 2 * 0.3  # the speech, with margins of up to 0.3 s


def test_speech_the_transcript_lacks_is_dropped_and_listed(long_set: tuple[Path, list[Joined]],
                                                            tmp_path: Path) -> None:
    root, joined = long_set
    texts = list(joined[0].texts)
    texts[5] = "zebra quartz jumps vex whiz"  # the transcript does not say what clip 5 says
    data = _kaldi(tmp_path / "data", {"r0": (str(root / "audio" / "r0.wav"), " ".join(texts))})
    report = cut_recordings(str(DEMO), data, tmp_path / "out")
    dropped_text = (tmp_path / "out" / "dropped.txt").read_text()
    assert any("zebra" in c.text for c in report.dropped) and "zebra" in dropped_text
    assert not any("zebra" in c.text for c in report.kept)
    assert len(report.kept) >= 25


def _finetune_cer(train: Path, out: Path) -> tuple[float, str]:
    done = subprocess.run([ESPZOO, "finetune", str(DEMO), "--train", str(train), "--valid", str(DEV), "--out",
                           str(out), "--max-epoch", "3", "--seed", "1"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = subprocess.run([ESPZOO, "evaluate", str(out), "--data", str(TEST), "--json"], capture_output=True,
                            text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr[-3000:]
    return json.loads(scored.stdout)["cer"], done.stderr


def test_finetune_from_long_recordings_matches_clips(long_set: tuple[Path, list[Joined]], tmp_path: Path) -> None:
    root, _ = long_set
    chosen = clips("en", "train")[:60]
    as_clips = _kaldi(tmp_path / "clips", {u: (str(a), t) for u, a, t in chosen})
    from_long, said = _finetune_cer(root, tmp_path / "long")
    assert "2 long recording(s)" in said and "cut into 60 utterances" in said.replace("\n", " ")
    from_clips, _ = _finetune_cer(as_clips, tmp_path / "clip")
    assert from_long <= from_clips + 0.03, (from_long, from_clips)
