"""Times for words and segments: CTC forced alignment of a text to audio, with the model's own CTC branch.

    from espzoo.decode.align import timed_transcripts, align_recording, srt, vtt
    segments = timed_transcripts(recognizer, Path("talk.wav"))     # [Segment(start, end, text, words)], decoded
    result = align_recording(recognizer, Path("talk.wav"), ["first line", "second line"])  # a known transcript
    Path("talk.srt").write_text(srt(result.segments))

Every ASR model ESPnet builds has a CTC branch (attention models through `ctc_weight`), so this works for attention
and CTC-only models alike: the encoder's CTC log-probabilities over a window, the window's text as token ids, and
torchaudio's `forced_align` (the Viterbi path of CTC) put each token on frames; a word spans its tokens' frames.
A word's `score` (and a segment's `confidence`) is the mean probability the model gives to the aligned tokens on
their frames: text that the audio does not contain gets a low one. Long recordings are handled window by window
(espzoo.decode.longform): the frames of the pauses between windows are blank for the aligner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espzoo.errors import AlignError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from espzoo.decode.recognizer import Recognizer

# A segment whose aligned tokens get a mean probability under this is reported as not in the audio.
MIN_CONFIDENCE = 0.4


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "word": self.word,
                "score": round(self.score, 3)}


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    confidence: float | None = None
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text,
                                "words": [w.to_dict() for w in self.words]}
        if self.confidence is not None:
            data["confidence"] = round(self.confidence, 3)
        if self.id is not None:
            data["id"] = self.id
        return data


@dataclass(frozen=True)
class Alignment:
    """A recording aligned to a known transcript: one segment per transcript line, with its confidence."""

    audio: Path
    segments: list[Segment]
    min_confidence: float

    @property
    def unaligned(self) -> list[Segment]:
        """The lines the audio does not seem to contain (confidence under `min_confidence`)."""
        return [s for s in self.segments if (s.confidence or 0.0) < self.min_confidence]

    def to_dict(self) -> dict[str, Any]:
        return {"audio": str(self.audio), "segments": [s.to_dict() for s in self.segments],
                "unaligned": [s.id for s in self.unaligned], "min_confidence": self.min_confidence}


def _model(recognizer: Recognizer) -> Any:
    speech2text = recognizer.speech2text
    model = next((getattr(speech2text, name) for name in ("asr_model", "s2t_model", "model")
                  if getattr(speech2text, name, None) is not None), None)
    if model is None or getattr(model, "ctc", None) is None:
        raise AlignError(f"{recognizer.model.source} has no CTC branch to align with; timestamps need one.")
    return model


def ctc_log_probs(recognizer: Recognizer, wave: np.ndarray) -> tuple[torch.Tensor, float]:
    """The CTC log-probabilities of `wave` (frames x vocabulary) and the seconds each frame covers."""
    import warnings

    import torch

    model = _model(recognizer)
    speech = torch.as_tensor(wave, dtype=torch.float32)[None].to(recognizer.options.device)
    lengths = torch.tensor([len(wave)], dtype=torch.long, device=recognizer.options.device)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ESPnet 202511's torch.cuda.amp.autocast
        encoded, _ = model.encode(speech, lengths)
        if isinstance(encoded, tuple):
            encoded = encoded[0]
        log_probs = model.ctc.log_softmax(encoded)[0].float().cpu()
    return log_probs, len(wave) / recognizer.sample_rate / max(1, log_probs.size(0))


def word_tokens(recognizer: Recognizer, words: Sequence[str]) -> list[list[int]]:
    """Token ids of each word, as the model spells it (a char model's `<space>` opens every word after the first)."""
    speech2text = recognizer.speech2text
    tokenizer, converter = speech2text.tokenizer, speech2text.converter
    vocabulary = set(converter.token_list)
    space = "<space>" if "<space>" in vocabulary else None
    out: list[list[int]] = []
    for i, word in enumerate(words):
        tokens = tokenizer.text2tokens(word) if tokenizer is not None else [word]
        if space and i > 0:
            tokens = [space, *tokens]
        out.append([int(t) for t in converter.tokens2ids(tokens)])
    return out


def align_words(
    recognizer: Recognizer, log_probs: torch.Tensor, frame_seconds: float, words: Sequence[str], *,
    offset: float = 0.0,
) -> list[Word]:
    """Each of `words` on the frames of `log_probs` (CTC's best path through exactly that text), in seconds."""
    import torch
    import torchaudio.functional as F

    if not words:
        return []
    tokens = word_tokens(recognizer, words)
    flat = [t for word in tokens for t in word]
    repeats = sum(1 for a, b in zip(flat, flat[1:], strict=False) if a == b)
    if len(flat) + repeats > log_probs.size(0):
        raise AlignError(f"the text has {len(flat)} tokens, more than {log_probs.size(0)} frames of audio can hold "
                         f"({log_probs.size(0) * frame_seconds:.1f} s); check that the transcript is this audio's.")
    blank = int(getattr(_model(recognizer), "blank_id", 0))
    path, scores = F.forced_align(log_probs[None], torch.tensor([flat], dtype=torch.int32), blank=blank)
    spans = F.merge_tokens(path[0], scores[0].exp(), blank=blank)  # one span per token, in order
    result: list[Word] = []
    index = 0
    for word, ids in zip(words, tokens, strict=True):
        own = spans[index : index + len(ids)]
        index += len(ids)
        if len(own) > 1 and _is_space(recognizer, ids[0]):
            own = own[1:]  # a char model's leading <space>: the word starts at its first letter
        start, end = own[0].start, own[-1].end
        score = sum(s.score * (s.end - s.start) for s in own) / max(1, sum(s.end - s.start for s in own))
        result.append(Word(offset + start * frame_seconds, offset + end * frame_seconds, word, float(score)))
    return result


def _is_space(recognizer: Recognizer, token: int) -> bool:
    return recognizer.speech2text.converter.token_list[token] == "<space>"


def timed_transcripts(recognizer: Recognizer, audio: Path) -> list[Segment]:
    """`audio` decoded window by window (espzoo.decode.longform; a short file is one window), each window's text
    aligned to it: its segments with word times."""
    from espzoo.decode.longform import duration, expand
    from espzoo.decode.runner import Utterance, decode, load_audio

    whole = Utterance(Path(audio).stem, Path(audio))
    expansion = expand([whole], recognizer.options.max_segment)
    texts = decode(recognizer, expansion.items)
    segments: list[Segment] = []
    for item, text in zip(expansion.items, texts, strict=True):
        start = item.start
        end = item.end if item.end is not None else duration(Path(audio))
        words = text.split()
        if not words:
            continue
        wave = load_audio(item.audio, recognizer.sample_rate, start=item.start, end=item.end)
        log_probs, frame = ctc_log_probs(recognizer, wave)
        try:
            timed = align_words(recognizer, log_probs, frame, words, offset=start)
        except AlignError:  # a hypothesis longer than CTC allows (attention decoding): the window's times alone
            timed = []
        segments.append(Segment(start, end, " ".join(words), timed,
                                confidence=_confidence(timed) if timed else None))
    return segments


def _confidence(words: Sequence[Word]) -> float:
    return sum(w.score for w in words) / len(words) if words else 0.0


def recording_log_probs(recognizer: Recognizer, audio: Path) -> tuple[torch.Tensor, float]:
    """CTC log-probabilities over the whole recording, window by window (espzoo.decode.longform), on one frame grid:
    frames between windows (pauses) are blank. Returns them and the seconds per frame."""
    import torch

    from espzoo.decode.longform import duration, expand
    from espzoo.decode.runner import Utterance, load_audio

    total = duration(Path(audio))
    if total <= 0:
        raise AlignError(f"audio {audio} lasts 0 s; there is nothing to align.")
    expansion = expand([Utterance(Path(audio).stem, Path(audio))], recognizer.options.max_segment)
    parts: list[tuple[float, torch.Tensor, float]] = []
    for item in expansion.items:
        wave = load_audio(item.audio, recognizer.sample_rate, start=item.start, end=item.end)
        log_probs, frame = ctc_log_probs(recognizer, wave)
        parts.append((item.start, log_probs, frame))
    frame = sum(p[2] for p in parts) / len(parts)
    grid = torch.full((int(total / frame) + 2, parts[0][1].size(1)), -1e4)
    grid[:, int(getattr(_model(recognizer), "blank_id", 0))] = 0.0
    for start, log_probs, _ in parts:
        first = min(int(round(start / frame)), grid.size(0) - log_probs.size(0))
        grid[first : first + log_probs.size(0)] = log_probs
    return grid, frame


def align_recording(
    recognizer: Recognizer, audio: Path, lines: Sequence[str], *, ids: Sequence[str] | None = None,
    min_confidence: float = MIN_CONFIDENCE,
) -> Alignment:
    """A recording and its transcript (one segment per line) -> word and segment times, with each line's
    confidence; lines under `min_confidence` are reported (`Alignment.unaligned`), not dropped. A transcript of which
    most lines match nowhere (another recording's) raises AlignError."""
    texts = [" ".join(line.split()) for line in lines]
    if not any(texts):
        raise AlignError("the transcript is empty; pass the text spoken in the recording, one segment a line.")
    names = list(ids) if ids is not None else [f"{Path(audio).stem}_{i:04d}" for i in range(len(texts))]
    log_probs, frame = recording_log_probs(recognizer, audio)
    words = [w for text in texts for w in text.split()]
    timed = align_words(recognizer, log_probs, frame, words)
    segments: list[Segment] = []
    index = 0
    for name, text in zip(names, texts, strict=True):
        count = len(text.split())
        own = timed[index : index + count]
        index += count
        if not own:
            continue
        segments.append(Segment(own[0].start, own[-1].end, text, own, _confidence(own), name))
    result = Alignment(Path(audio), segments, min_confidence)
    if segments and 2 * len(result.unaligned) > len(segments):  # the tiny demo model: 0/20 right, 15/20 wrong
        raise AlignError(f"{len(result.unaligned)} of the {len(segments)} transcript lines do not match {audio} "
                         f"(confidence under {min_confidence:g}); check that the transcript belongs to this recording.")
    return result


# ---------------------------------------------------------------------------------------------------------
# Writers


def _clock(seconds: float, separator: str) -> str:
    millis = int(round(max(0.0, seconds) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues `HH:MM:SS,mmm --> HH:MM:SS,mmm`, blank line between."""
    cues = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
            for i, s in enumerate(segments, start=1)]
    return "\n".join(cues)


def vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: the `WEBVTT` header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`."""
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def kaldi_segments(segments: Sequence[Segment], recording: str) -> str:
    """Kaldi `segments`: `<utterance-id> <recording-id> <start> <end>` a line."""
    return "".join(f"{s.id or f'{recording}_{i:04d}'} {recording} {s.start:.3f} {s.end:.3f}\n"
                   for i, s in enumerate(segments))
