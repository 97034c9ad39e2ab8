"""Long recordings as training data: one transcript per recording, aligned and cut into utterances.

    from espzoo.train.longdata import has_long_recordings, cut_recordings
    if has_long_recordings(Path("data/train"), max_seconds=60):
        report = cut_recordings("espnet/some_model@<sha>", Path("data/train"), Path("OUT/data/train_cut"))
        # OUT/data/train_cut: wav.scp (the recordings), segments, text, utt2spk; dropped.txt lists what was left out

A Kaldi dir without `segments` whose transcript covers each whole recording, some of them longer than the model
takes, is aligned with the pretrained model (espzoo.decode.align: CTC forced alignment of the whole transcript over the
recording, window by window), cut into utterances at the pauses between words (no longer than `max_segment`),
and each utterance kept only if the model's confidence in its words reaches `min_confidence` (a transcript that
skips or adds speech shows there). The result is an ordinary Kaldi dir with `segments`, which `espzoo.data.prepare`
then checks as any other. Recordings no longer than `max_segment` stay whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from espzoo.errors import AlignError, DataError


@dataclass(frozen=True)
class CutOptions:
    max_segment: float = 20.0  # seconds: the longest utterance cut out
    min_pause: float = 0.3  # seconds between two words where an utterance may end
    margin: float = 0.15  # seconds of audio kept before the first and after the last word
    min_confidence: float = 0.5  # mean probability of the utterance's aligned tokens under which it is dropped


@dataclass(frozen=True)
class Cut:
    id: str
    recording: str
    start: float
    end: float
    text: str
    confidence: float


@dataclass(frozen=True)
class CutReport:
    kept: list[Cut]
    dropped: list[Cut]
    recordings: int  # long recordings aligned
    seconds_total: float  # their length
    whole: int = 0  # short recordings kept whole
    problems: list[str] = field(default_factory=list)  # recordings that could not be aligned at all

    @property
    def seconds_kept(self) -> float:
        return sum(c.end - c.start for c in self.kept)

    def note(self, name: str) -> str:
        return (f"{name}: {self.recordings} long recording(s), {self.seconds_total / 3600:.2f} h, cut into "
                f"{len(self.kept)} utterances ({self.seconds_kept / 3600:.2f} h kept); {len(self.dropped)} dropped for "
                f"low alignment confidence" + (f", {len(self.problems)} recording(s) not aligned" if self.problems
                                                else ""))


def _two_columns(path: Path) -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            rows[key] = value.strip()
    return rows


def _audio_path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute() and (base / path).exists():
        return (base / path).resolve()
    return path.resolve()


def has_long_recordings(source: str | Path, max_seconds: float) -> bool:
    """A Kaldi dir without `segments` holding some recording longer than `max_seconds` (its header says)."""
    from espzoo.decode.longform import duration

    source = Path(source)
    if not (source.is_dir() and (source / "wav.scp").is_file() and (source / "text").is_file()):
        return False
    if (source / "segments").exists():
        return False
    for value in _two_columns(source / "wav.scp").values():
        if value.endswith("|"):
            continue
        path = _audio_path(value, source)
        try:
            if path.is_file() and duration(path) > max_seconds:
                return True
        except Exception:  # noqa: BLE001 - unreadable: the data check names it
            continue
    return False


def split_words(words: Sequence[object], options: CutOptions) -> list[list[object]]:
    """Aligned words (espzoo.decode.align.Word) grouped into utterances: a new one at a pause of `min_pause`, and
    before one would grow past `max_segment`."""
    groups: list[list[object]] = []
    for word in words:
        if groups:
            current = groups[-1]
            pause = word.start - current[-1].end  # type: ignore[attr-defined]
            too_long = word.end - current[0].start > options.max_segment - 2 * options.margin  # type: ignore[attr-defined]
            if pause < options.min_pause and not too_long:
                current.append(word)
                continue
        groups.append([word])
    return groups


def cut_recordings(model: str, source: str | Path, out_dir: str | Path, *, options: CutOptions | None = None,
                   device: str = "cpu") -> CutReport:
    """Align each long recording of the Kaldi dir `source` with `model` and write a Kaldi dir with `segments` at
    `out_dir` (see the module's docstring); `dropped.txt` there lists the utterances left out and why."""
    from espzoo.decode.align import align_recording
    from espzoo.decode.longform import duration
    from espzoo.decode.recognizer import DecodeOptions, load_recognizer

    options = options or CutOptions()
    source, out_dir = Path(source), Path(out_dir)
    audio = _two_columns(source / "wav.scp")
    texts = _two_columns(source / "text")
    recognizer = load_recognizer(model, DecodeOptions(device=device, max_segment=options.max_segment))
    kept: list[Cut] = []
    dropped: list[Cut] = []
    problems: list[str] = []
    wav_lines, seconds_total, recordings, whole = [], 0.0, 0, 0
    for recording, value in audio.items():
        path = _audio_path(value, source)
        text = texts.get(recording, "")
        wav_lines.append(f"{recording} {path}")
        length = duration(path)
        if length <= options.max_segment:
            whole += 1
            kept.append(Cut(recording, recording, 0.0, length, text, 1.0))
            continue
        recordings += 1
        seconds_total += length
        try:
            aligned = align_recording(recognizer, path, [text], min_confidence=0.0)
        except (AlignError, DataError) as error:
            problems.append(f"{recording}: {error}")
            continue
        words = [w for s in aligned.segments for w in s.words]
        previous_end = 0.0
        groups = split_words(words, options)
        for index, group in enumerate(groups):
            following = groups[index + 1][0].start if index + 1 < len(groups) else length  # type: ignore[attr-defined]
            start = max(previous_end, group[0].start - options.margin)  # type: ignore[attr-defined]
            end = min(following, group[-1].end + options.margin, length)  # type: ignore[attr-defined]
            previous_end = end
            confidence = sum(w.score for w in group) / len(group)  # type: ignore[attr-defined]
            cut = Cut(f"{recording}-{int(round(start * 100)):07d}-{int(round(end * 100)):07d}", recording, start, end,
                      " ".join(w.word for w in group), confidence)  # type: ignore[attr-defined]
            (kept if confidence >= options.min_confidence else dropped).append(cut)
    _write(out_dir, wav_lines, kept, dropped, problems)
    return CutReport(kept, dropped, recordings, seconds_total, whole, problems)


def _write(out_dir: Path, wav_lines: list[str], kept: list[Cut], dropped: list[Cut], problems: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "wav.scp": wav_lines,
        "segments": [f"{c.id} {c.recording} {c.start:.3f} {c.end:.3f}" for c in kept],
        "text": [f"{c.id} {c.text}" for c in kept],
        "utt2spk": [f"{c.id} {c.recording}" for c in kept],
        "dropped.txt": [f"{c.id} {c.start:.3f} {c.end:.3f} confidence {c.confidence:.2f} {c.text}" for c in dropped]
        + [f"not aligned: {p}" for p in problems],
    }
    for name, lines in files.items():
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        tmp.replace(out_dir / name)


def cut_if_long(model: str, data: str | Path, out_dir: Path, *, max_seconds: float,
                note: Callable[[str], None], child: Path | None = None) -> str | Path:
    """`data` itself, or, when it is a Kaldi dir of long recordings (`has_long_recordings`), the Kaldi dir cut from it
    at `out_dir` by `cut_recordings` with `model` (run in OUT's standby training child when there is one: this
    process does not import ESPnet). `note` hears how many hours survived and where the dropped list is."""
    if not has_long_recordings(data, max_seconds):
        return data
    options = CutOptions(max_segment=min(CutOptions.max_segment, max_seconds))
    if child is not None:
        from espzoo.train.child import in_standby

        report = in_standby(child, cut_recordings, model, data, out_dir, options=options)
    else:
        report = cut_recordings(model, data, out_dir, options=options)
    if not report.kept:
        raise DataError(f"{data}: no utterance of its long recordings aligned with confidence "
                        f"{options.min_confidence:g} or more; check that each transcript is its recording's.")
    note(report.note(out_dir.name.removesuffix("_long")) + f" (list: {out_dir / 'dropped.txt'})")
    return out_dir
