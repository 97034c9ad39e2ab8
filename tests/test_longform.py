"""Long recordings (issue 23): built from the shipped English clips joined with pauses (known boundaries and text),
decoded by the shipped demo model (a real ESPnet conformer with an attention decoder and a CTC branch, trained on
those clips one by one): beam search stands for attention models, greedy CTC for CTC-only ones (the same code path
`--decode auto` takes for a CTC-only model)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from _longaudio import Joined, clips, join

from espzoo.decode.align import align_recording, srt, timed_transcripts, vtt
from espzoo.decode.longform import expand, read_blocks, speech_segments, windows
from espzoo.decode.recognizer import DecodeOptions, Recognizer, load_recognizer
from espzoo.decode.runner import Utterance, decode, load_audio
from espzoo.decode.scoring import error_rates
from espzoo.errors import AlignError, NoSpeechError

DEMO = Path(__file__).resolve().parent.parent / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"
ESPZOO = str(Path(sys.executable).with_name("espzoo"))


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Joined:
    """56 s: the 20 test and dev clips, 0.5 s of near-silence between them."""
    return join(tmp_path_factory.mktemp("long") / "long.wav", clips("en", "test") + clips("en", "dev"))


@pytest.fixture(scope="module", params=["beam", "ctc-greedy"])
def recognizer(request: pytest.FixtureRequest) -> Recognizer:
    return load_recognizer(DEMO, DecodeOptions(decode=request.param, beam_size=4))


def test_long_form_cer_is_within_3_points_of_per_utterance(recognizer: Recognizer, joined: Joined) -> None:
    reference = " ".join(joined.texts)
    per_clip = " ".join(decode(recognizer, [a for _, a, _ in clips("en", "test") + clips("en", "dev")]))
    whole = decode(recognizer, [joined.path])  # 56 s > 20 s: cut at pauses, decoded window by window
    assert len(whole) == 1
    per_cer = error_rates([reference], [per_clip]).cer.rate
    long_cer = error_rates([reference], whole).cer.rate
    assert per_cer < 0.3  # the model reads these clips: the comparison means something
    assert long_cer <= per_cer + 0.03, (recognizer.mode, per_cer, long_cer)


def test_word_starts_hit_utterance_starts(recognizer: Recognizer, joined: Joined) -> None:
    segments = timed_transcripts(recognizer, joined.path)
    starts = [w.start for s in segments for w in s.words]
    hits = sum(any(abs(s - u) <= 0.5 for s in starts) for u in joined.starts)
    assert hits >= 0.8 * len(joined.starts)
    for segment in segments:  # words inside their segment, in order
        assert segment.start - 1e-6 <= segment.words[0].start <= segment.words[-1].end <= segment.end + 0.05
        assert all(a.start <= b.start for a, b in zip(segment.words, segment.words[1:], strict=False))


CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)([,.])(\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)$")


def _cues(text: str, separator: str) -> list[tuple[float, float, str]]:
    cues = []
    for line_no, line in enumerate(lines := text.splitlines()):
        found = CUE.match(line)
        if found:
            assert found.group(4) == separator
            g = [int(x) for x in found.groups() if x not in ",."]
            cues.append((g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000, g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000,
                         lines[line_no + 1]))
    return cues


def test_srt_and_vtt_parse(joined: Joined) -> None:
    recognizer = load_recognizer(DEMO, DecodeOptions(decode="ctc-greedy"))
    segments = timed_transcripts(recognizer, joined.path)
    subtitles = srt(segments)
    blocks = subtitles.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [str(i) for i in range(1, len(segments) + 1)]
    cues = _cues(subtitles, ",")
    web = vtt(segments)
    assert web.startswith("WEBVTT\n\n") and _cues(web, ".") == cues
    assert len(cues) == len(segments) >= 10
    assert all(0 <= a < b <= joined.seconds for a, b, _ in cues)
    assert all(prev[1] <= cur[0] for prev, cur in zip(cues, cues[1:], strict=False))
    assert [c[2] for c in cues] == [s.text for s in segments]


def test_align_recovers_the_boundaries(joined: Joined) -> None:
    recognizer = load_recognizer(DEMO, DecodeOptions())
    result = align_recording(recognizer, joined.path, joined.texts, ids=joined.ids)
    assert [s.id for s in result.segments] == joined.ids and not result.unaligned
    for segment, start, end in zip(result.segments, joined.starts, joined.ends, strict=True):
        assert abs(segment.start - start) <= 0.15 and abs(segment.end - end) <= 0.35, (segment, start, end)
    assert [w.word for w in result.segments[0].words] == joined.texts[0].split()


def test_a_transcript_of_another_recording_is_refused(joined: Joined) -> None:
    recognizer = load_recognizer(DEMO, DecodeOptions())
    wrong = [text for _, _, text in clips("en", "train")[: len(joined.texts)]]
    with pytest.raises(AlignError, match="do not match .*check that the transcript belongs to this recording"):
        align_recording(recognizer, joined.path, wrong)


def test_a_partly_wrong_transcript_is_reported_not_forced(joined: Joined) -> None:
    recognizer = load_recognizer(DEMO, DecodeOptions())
    texts = list(joined.texts)
    texts[3] = "zebra quartz jumps vex whiz"  # not in the audio
    result = align_recording(recognizer, joined.path, texts, ids=joined.ids)
    assert joined.ids[3] in [s.id for s in result.unaligned]
    assert len(result.unaligned) <= 3


def test_short_files_are_left_whole(tmp_path: Path) -> None:
    items = [Utterance(u, a) for u, a, _ in clips("en", "test")[:3]]
    expansion = expand(items)
    assert expansion.items == items and not expansion.long


def test_windows_keep_segments_apart_and_merge_only_short_ones() -> None:
    assert windows([(0.0, 2.0), (2.5, 4.0)], 20.0) == [(0.0, 2.0), (2.5, 4.0)]
    assert windows([(0.0, 0.5), (0.8, 3.0), (3.5, 4.0)], 20.0) == [(0.0, 3.0), (3.5, 4.0)]
    assert windows([(0.0, 0.5), (0.8, 30.0)], 20.0) == [(0.0, 0.5), (0.8, 30.0)]  # would not fit


def test_segments_are_no_longer_than_max_segment(joined: Joined) -> None:
    segments = speech_segments(joined.path, max_segment=3.0)
    assert all(b - a <= 3.0 + 1e-6 for a, b in segments) and len(segments) >= 20
    long_segment = Utterance("x", joined.path, start=1.0, end=31.0)  # a Kaldi segment: cut evenly
    pieces = expand([long_segment], 12.0).items
    assert [(p.start, p.end) for p in pieces] == [(1.0, 11.0), (11.0, 21.0), (21.0, 31.0)]


def test_blocks_are_the_file_resampled(tmp_path: Path, joined: Joined) -> None:
    wave, _ = soundfile.read(str(joined.path), dtype="float32")
    stereo = tmp_path / "stereo44.wav"
    import soxr

    soundfile.write(str(stereo), np.stack([wave, wave], axis=1)[: 16000 * 20].repeat(1, axis=0), 16000)
    at_44 = tmp_path / "at44.wav"
    soundfile.write(str(at_44), soxr.resample(wave[: 16000 * 20], 16000, 44100), 44100)
    blocks = list(read_blocks(at_44, 16000, block_seconds=3.0))
    assert len(blocks) >= 6 and max(len(b) for b in blocks) <= 3.2 * 16000
    streamed = np.concatenate(blocks)
    whole = load_audio(at_44, 16000)
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    assert np.abs(streamed[:n] - whole[:n]).max() < 0.02
    mono = np.concatenate(list(read_blocks(stereo, 16000, block_seconds=3.0)))
    assert np.allclose(mono, wave[: 16000 * 20], atol=1e-6)


def test_silence_only_is_one_sentence(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    soundfile.write(str(silent), np.zeros(16000 * 30, dtype="float32"), 16000)
    with pytest.raises(NoSpeechError):
        expand([Utterance("s", silent)])


def _espzoo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ESPZOO, *args], capture_output=True, text=True, timeout=300)


def test_cli_formats_and_bad_input(tmp_path: Path, joined: Joined) -> None:
    as_json = _espzoo("transcribe", str(DEMO), str(joined.path), "--format", "json", "--decode", "ctc-greedy")
    assert as_json.returncode == 0, as_json.stderr
    [entry] = json.loads(as_json.stdout)
    assert entry["path"] == str(joined.path) and len(entry["segments"]) >= 10
    assert {"start", "end", "text", "words"} <= set(entry["segments"][0])
    assert {"start", "end", "word"} <= set(entry["segments"][0]["words"][0])

    text = tmp_path / "long.txt"
    text.write_text("\n".join(joined.texts) + "\n", encoding="utf-8")
    kaldi = _espzoo("align", str(DEMO), str(joined.path), str(text), "--format", "segments")
    assert kaldi.returncode == 0, kaldi.stderr
    rows = [line.split() for line in kaldi.stdout.splitlines()]
    assert len(rows) == len(joined.texts) and all(r[1] == "long" for r in rows)
    assert all(abs(float(r[2]) - s) <= 0.15 for r, s in zip(rows, joined.starts, strict=True))

    silent = tmp_path / "silent.wav"
    soundfile.write(str(silent), np.zeros(16000 * 30, dtype="float32"), 16000)
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0, dtype="float32"), 16000)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("\n".join(t for _, _, t in clips("en", "train")[:20]) + "\n", encoding="utf-8")
    for args, said in [
        (("transcribe", str(DEMO), str(silent)), "holds no speech"),
        (("align", str(DEMO), str(silent), str(text)), "holds no speech"),
        (("align", str(DEMO), str(empty), str(text)), "lasts 0 s"),
        (("align", str(DEMO), str(joined.path), str(wrong)), "belongs to this recording"),
    ]:
        done = _espzoo(*args)
        assert done.returncode != 0 and said in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_windows_decode_in_worker_processes_as_here(joined: Joined) -> None:
    from espzoo.decode.runner import transcribe

    short = clips("en", "test")[0][1]
    options = DecodeOptions(decode="ctc-greedy")
    here = transcribe(load_recognizer(DEMO, options), [short, joined.path, short])
    in_workers = transcribe(DEMO, [short, joined.path, short], options=DecodeOptions(decode="ctc-greedy", jobs=2))
    assert in_workers == here and len(here) == 3 and here[0] == here[2]
    assert len(here[1].split()) > 5 * len(here[0].split())  # the long file's windows, stitched in order


def test_vad_lanes_find_what_silero_finds_on_the_whole_file(joined: Joined, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    import espzoo.decode.longform as longform

    wave, rate = soundfile.read(str(joined.path), dtype="float32")
    theirs = get_speech_timestamps(torch.from_numpy(wave), load_silero_vad(), sampling_rate=rate, return_seconds=True,
                                   min_silence_duration_ms=300, speech_pad_ms=250)
    one_lane = longform.speech_probabilities(joined.path)
    monkeypatch.setattr(longform, "STREAM_CHUNKS", 100)  # 3.2 s lanes: 18 of them on this file, run as one batch
    lanes = longform.speech_probabilities(joined.path)
    assert len(lanes) == len(one_lane) == -(-len(wave) // 512)
    assert np.mean((np.array(lanes) > 0.5) != (np.array(one_lane) > 0.5)) < 0.02
    ours = speech_segments(joined.path)
    assert len(ours) == len(theirs) == len(joined.starts)
    for (start, end), found in zip(ours, theirs, strict=True):
        assert abs(start - found["start"]) <= 0.15 and abs(end - found["end"]) <= 0.15
