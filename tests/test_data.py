"""espzoo.data: Kaldi dirs and manifests in, checked and converted Kaldi dirs out.

Speech is the committed espeak-ng audio (zoo/assets/speech); the format tests write tones and noise with
numpy + soundfile (stereo, 8 kHz, 44.1 kHz, WAV/FLAC/OGG), which are real audio files in those formats.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _hubtools import CV_SENTENCES, common_voice, es_files
from _paths import SPEECH_ROOT

from espzoo.data.convert import prepare
from espzoo.data.sources import load_dataset
from espzoo.errors import DataError

SPEECH = SPEECH_ROOT


def _tone(path: Path, *, rate: int = 16000, seconds: float = 0.5, channels: int = 1, fmt: str | None = None) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    audio = np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else mono
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), rate, format=fmt)
    return path


def _kaldi(root: Path, entries: dict[str, tuple[str, str]]) -> Path:
    """A Kaldi dir: id -> (wav.scp value, transcript)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "wav.scp").write_text("".join(f"{k} {w}\n" for k, (w, _) in entries.items()), encoding="utf-8")
    (root / "text").write_text("".join(f"{k} {t}\n" for k, (_, t) in entries.items()), encoding="utf-8")
    return root


def _scp(path: Path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


def test_committed_kaldi_dir_used_in_place(tmp_path: Path) -> None:
    ds = prepare(SPEECH / "en" / "dev", tmp_path / "out" / "data" / "dev", sample_rate=16000)
    assert ds.num_utterances == 10 and ds.converted == 0 and ds.skipped == []
    wavs = _scp(ds.wav_scp)
    # Already 16 kHz mono FLAC: ESPnet reads the originals, by absolute path.
    assert all(Path(p).is_absolute() and Path(p).is_file() and str(SPEECH) in p for p in wavs.values())
    shapes = {k: int(v) for k, v in (line.split() for line in ds.speech_shape.read_text().splitlines())}
    assert shapes["caf3-en0131"] == sf.info(wavs["caf3-en0131"]).frames
    assert ds.total_seconds == pytest.approx(sum(shapes.values()) / 16000, abs=1e-3)
    assert ds.transcripts()["caf3-en0131"] == "her friend writes a letter every morning"
    assert load_dataset(ds.dir) == ds


def test_manifest_tsv_resampled_and_cached(tmp_path: Path) -> None:
    ds = prepare(SPEECH / "es" / "dev" / "manifest.tsv", tmp_path / "data" / "dev", sample_rate=8000)
    assert ds.num_utterances == 15 and ds.converted == 15 and ds.cached == 0
    wavs = _scp(ds.wav_scp)
    first = next(iter(wavs.values()))
    assert sf.info(first).samplerate == 8000 and sf.info(first).channels == 1
    assert str(tmp_path / "data" / "audio") in first
    mtimes = {p: os.stat(p).st_mtime_ns for p in wavs.values()}

    again = prepare(SPEECH / "es" / "dev" / "manifest.tsv", tmp_path / "data" / "dev", sample_rate=8000)
    assert again.converted == 0 and again.cached == 15
    assert {p: os.stat(p).st_mtime_ns for p in _scp(again.wav_scp).values()} == mtimes


@pytest.mark.parametrize(
    ("name", "rate", "channels", "fmt"),
    [
        ("stereo.wav", 16000, 2, None),
        ("low.wav", 8000, 1, None),
        ("cd.flac", 44100, 1, None),
        ("v.ogg", 16000, 1, "OGG"),
    ],
)
def test_formats_become_mono_at_model_rate(
    tmp_path: Path, name: str, rate: int, channels: int, fmt: str | None
) -> None:
    src = _tone(tmp_path / "in" / name, rate=rate, channels=channels, fmt=fmt)
    ds = prepare(_kaldi(tmp_path / "kaldi", {"u1": (str(src), "a tone")}), tmp_path / "out" / "u", sample_rate=16000)
    path = _scp(ds.wav_scp)["u1"]
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert ds.converted == 1
    assert abs(info.frames - 8000) <= 2  # 0.5 s at 16 kHz, whatever the source rate
    audio, _ = sf.read(path)
    if channels == 2:  # mixed to mono: the mean of the channels (0.5x and 1x the signal)
        source, _ = sf.read(str(src))
        np.testing.assert_allclose(audio, source.mean(axis=1), atol=1e-3)


def test_segments_cut_recordings(tmp_path: Path) -> None:
    rec = _tone(tmp_path / "rec.wav", seconds=2.0)
    root = tmp_path / "kaldi"
    root.mkdir()
    (root / "wav.scp").write_text(f"rec1 {rec}\n")
    (root / "segments").write_text("s1 rec1 0.0 0.5\ns2 rec1 0.5 1.75\n")
    (root / "text").write_text("s1 one\ns2 two\n")
    (root / "utt2spk").write_text("s1 spkA\ns2 spkA\n")
    ds = prepare(root, tmp_path / "out" / "seg", sample_rate=16000)
    shapes = dict(line.split() for line in ds.speech_shape.read_text().splitlines())
    assert shapes == {"s1": "8000", "s2": "20000"}
    assert (ds.dir / "utt2spk").read_text() == "s1 spkA\ns2 spkA\n"


def _bad_dir(tmp_path: Path) -> Path:
    good = _tone(tmp_path / "a" / "good.wav")
    empty = tmp_path / "a" / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    long = _tone(tmp_path / "a" / "long.wav", rate=8000, seconds=3.0)
    corrupt = tmp_path / "a" / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wav file")
    root = tmp_path / "kaldi"
    root.mkdir()
    (root / "wav.scp").write_text(
        f"good {good}\nmissing a/nowhere.wav\nempty {empty}\nlong {long}\ncorrupt {corrupt}\n"
        f"notext {good}\npiped cat {good} |\ngood {good}\nblank {good}\n"
    )
    (root / "text").write_text(
        "good hello\nmissing hi\nempty hey\nlong ho\ncorrupt ha\npiped hm\nnoaudio orphan text\nblank\n"
    )
    return root


def test_every_problem_reported_at_once_and_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "out" / "train"
    with pytest.raises(DataError) as caught:
        prepare(_bad_dir(tmp_path), out, sample_rate=16000, max_seconds=2.0)
    found = {(p.utt_id, p.where.split(":")[0]): p.what for p in caught.value.problems}
    message = str(caught.value)
    expected = {
        ("missing", "wav.scp"): "audio file not found",
        ("empty", "wav.scp"): "empty (0 samples)",
        ("long", "wav.scp"): "lasts 3.0 s, over the 2 s an utterance may last for this model",
        ("corrupt", "wav.scp"): "unreadable audio",
        ("notext", "wav.scp"): "no transcript",
        ("piped", "wav.scp"): "pipe command",
        ("good", "wav.scp"): "duplicate id (first at wav.scp:1)",
        ("noaudio", "text"): "no audio for this transcript",
        ("blank", "text"): "empty transcript",
    }
    for key, what in expected.items():
        assert what in found[key], (key, found.get(key))
    assert "wav.scp:2 [missing]" in message and "pass --skip-bad" in message and "fix:" in message
    assert "skip_bad=True" not in message  # the CLI's words: most users meet this on the command line
    assert not (tmp_path / "out").exists()


def test_skip_bad_drops_and_reports(tmp_path: Path) -> None:
    ds = prepare(_bad_dir(tmp_path), tmp_path / "out" / "train", sample_rate=16000, max_seconds=2.0, skip_bad=True)
    assert _scp(ds.wav_scp).keys() == {"good"}
    assert ds.num_utterances == 1 and len(ds.skipped) == 9
    assert any("audio file not found" in s for s in ds.skipped)
    assert json.loads((ds.dir / "dataset.json").read_text())["skipped"] == ds.skipped


def test_pipes_run_only_when_allowed(tmp_path: Path) -> None:
    src = _tone(tmp_path / "src.wav", rate=22050)
    root = _kaldi(tmp_path / "kaldi", {"p1": (f"cat {src} |", "piped tone")})
    with pytest.raises(DataError, match="pass --allow-pipes if you trust"):
        prepare(root, tmp_path / "out" / "p", sample_rate=16000)
    ds = prepare(root, tmp_path / "out" / "p", sample_rate=16000, allow_pipes=True)
    info = sf.info(_scp(ds.wav_scp)["p1"])
    assert (info.samplerate, ds.converted) == (16000, 1)
    failing = _kaldi(tmp_path / "kaldi2", {"p2": ("false |", "x")})
    with pytest.raises(DataError, match="pipe command failed"):
        prepare(failing, tmp_path / "out" / "p2", sample_rate=16000, allow_pipes=True)


def test_manifest_jsonl_csv_and_their_errors(tmp_path: Path) -> None:
    _tone(tmp_path / "clips" / "a.wav")
    _tone(tmp_path / "clips" / "b.flac", rate=44100)
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(
        '{"audio_filepath": "clips/a.wav", "text": "first one", "speaker": "x"}\n'
        '{"audio_filepath": "clips/b.flac", "text": "second\\n one"}\n'
    )
    ds = prepare(jsonl, tmp_path / "out" / "j", sample_rate=16000)
    assert ds.transcripts() == {"a": "first one", "b": "second one"}
    assert (ds.dir / "utt2spk").read_text() == "a x\nb b\n"

    csv_path = tmp_path / "m.csv"
    csv_path.write_text('path,sentence\nclips/a.wav,"hello, world"\nclips/a.wav,again\n')
    with pytest.raises(DataError, match=r"m.csv:3 \[clips-a\]: duplicate id \(first at m.csv:2\)"):
        prepare(csv_path, tmp_path / "out" / "c", sample_rate=16000)

    no_text = tmp_path / "n.tsv"
    no_text.write_text("audio\twords\nclips/a.wav\thi\n")
    with pytest.raises(DataError, match="no text column .*rename the text column to one of: text"):
        prepare(no_text, tmp_path / "out" / "n", sample_rate=16000)
    ds = prepare(no_text, tmp_path / "out" / "n", sample_rate=16000, text_column="words")
    assert ds.texts() == ["hi"]


def test_not_data_at_all(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "out", sample_rate=16000)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="has no wav.scp"):
        prepare(tmp_path / "empty_dir", tmp_path / "out", sample_rate=16000)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="neither a Kaldi data dir nor a manifest"):
        prepare(tmp_path / "notes.txt", tmp_path / "out", sample_rate=16000)


def test_failed_prepare_keeps_previous_dir(tmp_path: Path) -> None:
    src = tmp_path / "kaldi"
    shutil.copytree(SPEECH / "en" / "dev", src)
    out = tmp_path / "out" / "dev"
    first = prepare(src, out, sample_rate=16000)
    before = first.wav_scp.read_text()
    (src / "text").write_text((src / "text").read_text() + "extra an orphan transcript\n")
    with pytest.raises(DataError, match="no audio for this transcript"):
        prepare(src, out, sample_rate=16000)
    assert first.wav_scp.read_text() == before and load_dataset(out).num_utterances == 10
    assert sorted(p.name for p in out.parent.iterdir()) == ["dev"]


def _truncated_flac(path: Path) -> Path:
    """A FLAC whose header is intact but whose frames stop halfway (a copy cut off, a full disk)."""
    whole = _tone(path.with_name("whole.flac"), seconds=3.0)
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert sf.info(str(path)).frames == sf.info(str(whole)).frames  # the header alone looks fine
    return path


def test_audio_is_decoded_to_its_end_during_the_check(tmp_path: Path) -> None:
    cut = _truncated_flac(tmp_path / "audio" / "cut.flac")
    good = _tone(tmp_path / "audio" / "good.wav")
    source = _kaldi(tmp_path / "src", {"cut": (str(cut), "uno"), "good": (str(good), "dos")})
    # libsndfile stops with "flac decoder lost sync" (others decode fewer frames than the header says: "cut off").
    with pytest.raises(DataError, match=r"wav.scp:1 \[cut\]: .*cut.flac (is cut off|.*flac decoder lost sync)"):
        prepare(source, tmp_path / "out" / "data" / "train", sample_rate=16000)
    assert not (tmp_path / "out" / "data" / "train").exists()

    ds = prepare(source, tmp_path / "out" / "data" / "train", sample_rate=16000, skip_bad=True)
    assert ds.num_utterances == 1 and ds.dropped == 1
    assert ds.skipped_list is not None and "[cut]" in ds.skipped_list.read_text()
    note = ds.skipped_note() or ""
    assert "dropped 1 utterance(s) from the train set" in note and str(ds.skipped_list) in note


def test_text_encodings_boms_and_empty_audio_cells_are_one_sentence(tmp_path: Path) -> None:
    good = _tone(tmp_path / "audio" / "a.wav")
    latin1 = _kaldi(tmp_path / "latin1", {"a": (str(good), "x")})
    (latin1 / "text").write_bytes("a canción\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"text is not UTF-8 text \(byte 0xf3 on line 1\); re-save it as UTF-8"):
        prepare(latin1, tmp_path / "out1", sample_rate=16000)

    bom = tmp_path / "bom.csv"  # as a spreadsheet saves it: the BOM must not hide the 'audio' column
    bom.write_bytes("\ufeffaudio,text\naudio/a.wav,hola\n".encode())
    assert prepare(bom, tmp_path / "out2", sample_rate=16000).num_utterances == 1

    empty = tmp_path / "empty.csv"
    empty.write_text("audio,text\n,hola\naudio/a.wav,adiós\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.csv:2: no audio path"):
        prepare(empty, tmp_path / "out3", sample_rate=16000)
    assert prepare(empty, tmp_path / "out3", sample_rate=16000, skip_bad=True).dropped == 1

    columns = tmp_path / "columns.csv"
    columns.write_text("sound,words\naudio/a.wav,hola\n", encoding="utf-8")
    with pytest.raises(DataError, match="rename the audio column to one of") as err:
        prepare(columns, tmp_path / "out4", sample_rate=16000)
    assert "audio_column=" not in str(err.value)  # an option the command line does not have


# ---------------------------------------------------------------------------------------------------------
# Corpora as downloaded (issue 27)


def test_a_common_voice_release_folder_as_downloaded(tmp_path: Path) -> None:
    """`cv-corpus-X/es/train.tsv`: bare names found in clips/ beside it, MP3 at 48 kHz converted once, the text
    kept as written (quotes, case, punctuation), the speaker from client_id; `cv-corpus-X/es/train` (the folder and
    the split) is the same data."""
    assert sf.available_formats().get("MP3"), "this soundfile cannot write MP3"
    lang = common_voice(tmp_path)
    ds = prepare(lang / "train.tsv", tmp_path / "out" / "train", sample_rate=16000)
    assert (ds.num_utterances, ds.converted) == (6, 6)
    texts = ds.transcripts()
    assert [texts[f"common_voice_es_train{i}"] for i in range(6)] == [" ".join(s.split()) for s in CV_SENTENCES]
    speakers = _scp(ds.dir / "utt2spk")
    assert speakers["common_voice_es_train0"] == "client0" and speakers["common_voice_es_train1"] == "client1"
    shapes = {k: int(v) for k, v in (line.split() for line in ds.speech_shape.read_text().splitlines())}
    originals = [sf.info(str(f)).frames for f in es_files(6)]
    assert [shapes[f"common_voice_es_train{i}"] for i in range(6)] == pytest.approx(originals, rel=0.02)
    again = prepare(lang / "train", tmp_path / "out2" / "train", sample_rate=16000)
    assert again.transcripts() == texts and again.source == str(lang / "train.tsv")
    # `--vocab char:cv-corpus-X/es/train.tsv` learns from the sentences, not from the table's raw lines.
    from espzoo.transfer.vocab import read_texts

    assert read_texts(lang / "train.tsv") == read_texts(lang / "train") == ds.texts()


def test_fleurs_and_audio_folders_beside_a_table(tmp_path: Path) -> None:
    """FLEURS: SPLIT.tsv without a header row (id, file name, raw transcription, transcription, ...) and the files
    in audio/SPLIT/; the raw transcription is kept. Any table whose paths are relative to wavs/, audio/ or clips/
    beside it is read the same way; a file found in none of them is named where it was looked for."""
    fleurs = tmp_path / "fleurs" / "es_419"
    rows = []
    for i, source in enumerate(es_files(4)):
        audio, rate = sf.read(str(source))
        (fleurs / "audio" / "dev").mkdir(parents=True, exist_ok=True)
        sf.write(str(fleurs / "audio" / "dev" / f"{1000 + i}.wav"), audio, rate)
        rows.append(f"{i}\t{1000 + i}.wav\tEl Café, nº {i}.\tel café nº {i}\tE|l|C\t{len(audio)}\tFEMALE")
    (fleurs / "dev.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ds = prepare(fleurs / "dev.tsv", tmp_path / "out" / "dev", sample_rate=16000)
    assert ds.num_utterances == 4 and ds.converted == 0
    assert sorted(ds.transcripts().values()) == [f"El Café, nº {i}." for i in range(4)]
    assert all("/audio/dev/" in p for p in _scp(ds.wav_scp).values())

    ljs = tmp_path / "ljs"
    (ljs / "wavs").mkdir(parents=True)
    for source in es_files(3):
        shutil.copy(source, ljs / "wavs" / source.name)
    names = [f.name for f in es_files(3)]
    (ljs / "metadata.csv").write_text("file,text\n" + "".join(f"{n},Texto {n}\n" for n in names), encoding="utf-8")
    assert prepare(ljs / "metadata.csv", tmp_path / "out" / "ljs", sample_rate=16000).num_utterances == 3
    (ljs / "metadata.csv").write_text("file,text\nmissing.flac,x\n" + "".join(f"{n},y\n" for n in names[:1]))
    with pytest.raises(DataError, match=rf"audio file not found: {ljs / 'wavs' / 'missing.flac'}"):
        prepare(ljs / "metadata.csv", tmp_path / "out" / "ljs2", sample_rate=16000)
