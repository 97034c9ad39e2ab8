"""Long recordings: read in blocks, cut at pauses by a voice-activity detector, decoded window by window, stitched.

    from espzoo.decode.longform import speech_segments, windows
    segments = speech_segments(Path("interview.wav"))          # [(start, end), ...] in seconds, at pauses
    for start, end in windows(segments, max_segment=20.0):     # merged up to 20 s, each decoded on its own
        ...

A recording longer than `DecodeOptions.max_segment` (default `DEFAULT_MAX_SEGMENT`) is never decoded in one piece:
the attention decoder of a model trained on short utterances loops on long input, and the encoder's attention grows
with the square of its length. `expand` turns each long file into windows (`Utterance`s with `start`/`end`, which
`espzoo.decode.runner.load_audio` reads with a seek: only that window is in memory), the usual decoding runs them
(batched for greedy CTC, in worker processes with `--jobs`), and `Expansion.stitch` joins each file's windows back
into one transcript. Files no longer than `max_segment` pass through untouched: short files decode as before.

The detector is silero-vad (its model ships inside the PyPI package: nothing is downloaded); its speech
probabilities are computed block by block over the file (`read_blocks`), so memory stays flat in the length
of the recording, and `get_speech_timestamps_from_probs` turns them into segments no longer than `max_segment`,
cut at the longest pause where speech runs on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espzoo.errors import AudioError, NoSpeechError

if TYPE_CHECKING:
    import numpy as np

    from espzoo.decode.runner import Decoded, Utterance

# Windows no longer than this by default: ESPnet's recipes train on utterances up to about 20 s, and an attention
# decoder trained on such stays sane on them (on 80 s of joined clips the tiny demo model loops).
DEFAULT_MAX_SEGMENT = 20.0
VAD_RATE = 16000  # silero-vad runs at 16 kHz (or 8 kHz); other rates are resampled for it, block by block
VAD_CHUNK = 512  # samples per speech probability at 16 kHz (32 ms), as silero-vad's own loop
BLOCK_SECONDS = 30.0  # audio read at a time
MIN_WINDOW = 1.0  # seconds: a shorter speech segment is decoded together with the next one
WINDOW_ID = "{id}@{start:010.3f}"  # a window's utterance id: the file's, and where the window starts


@dataclass(frozen=True)
class VadOptions:
    """How silero-vad cuts a recording (its own parameters; the defaults are its defaults but a longer pause)."""

    threshold: float = 0.5  # speech probability above which a chunk is speech
    min_speech: float = 0.25  # seconds: shorter bursts are dropped
    min_silence: float = 0.3  # seconds of pause that end a segment
    pad: float = 0.25  # seconds added at each side (the detector cuts tight; the models were trained with margins)


def duration(path: Path) -> float:
    """Seconds of audio in `path`, from its header (nothing decoded)."""
    import soundfile

    try:
        return float(soundfile.info(str(path)).duration)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as error:
        raise AudioError(f"cannot read audio {path} ({error}); check the path or convert it to WAV/FLAC.") from error


def read_blocks(path: Path, sample_rate: int, *, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """The file as consecutive mono float32 blocks at `sample_rate` (soxr's streaming resampler across blocks):
    only one block of the file is in memory at a time."""
    import numpy as np
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as audio:
            rate = audio.samplerate
            stream = None
            if rate != sample_rate:
                import soxr

                stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
            frames = max(1, int(block_seconds * rate))
            while True:
                block = audio.read(frames, dtype="float32", always_2d=True)
                last = len(block) < frames
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                if stream is not None:
                    mono = stream.resample_chunk(np.ascontiguousarray(mono), last=last)
                if len(mono):
                    yield np.ascontiguousarray(mono, dtype=np.float32)
                if last:
                    return
    except (RuntimeError, soundfile.LibsndfileError, OSError) as error:
        raise AudioError(f"cannot read audio {path} ({error}); check the path or convert it to WAV/FLAC.") from error


_VAD: dict[str, Any] = {}


def _vad_model() -> Any:
    if "model" not in _VAD:
        from silero_vad import load_silero_vad

        _VAD["model"] = load_silero_vad()  # the TorchScript model inside the package
    return _VAD["model"]


# The detector is sequential (a state carried chunk to chunk) and costs ~2 ms a call on one CPU thread whatever the
# batch (2.2 ms for 1 row, 4.7 ms for 32): the file is read STREAMS lanes at a time, each lane STREAM_CHUNKS chunks
# (30.7 s) run as one batch row, started WARMUP_CHUNKS chunks (2 s) early so that its state has settled on the audio
# before the chunks it reports (measured with a lane every 3.2 s: the speech/non-speech decision of 1.4% of chunks
# differs from one pass over the whole file with 1 s of warm-up, 0.7% with 2 s, 0.4% with 4 s).
# Memory: STREAMS lanes of audio (16 min at 16 kHz: 63 MB), whatever the file's length.
STREAMS = 32
STREAM_CHUNKS = 960
WARMUP_CHUNKS = 64


def speech_probabilities(path: Path, *, progress: Callable[[float], None] | None = None) -> list[float]:
    """silero-vad's speech probability of each 32 ms chunk of `path` (as its own loop over the whole file gives
    them, up to the lanes' warm-up: see STREAMS), reading the file block by block."""
    import numpy as np
    import torch

    model = _vad_model()
    group = STREAMS * STREAM_CHUNKS * VAD_CHUNK  # samples reported per batch
    warm = WARMUP_CHUNKS * VAD_CHUNK
    probabilities: list[float] = []
    history = np.zeros(warm, dtype=np.float32)  # the audio just before the pending samples (silence at the start)
    pending = np.zeros(0, dtype=np.float32)
    seconds = 0.0

    def run(audio: np.ndarray) -> None:
        nonlocal history, seconds
        chunks = -(-len(audio) // VAD_CHUNK)
        padded = np.zeros(chunks * VAD_CHUNK, dtype=np.float32)
        padded[: len(audio)] = audio
        lanes = -(-chunks // STREAM_CHUNKS)
        with_history = np.concatenate([history, padded])
        rows = np.zeros((lanes, (WARMUP_CHUNKS + STREAM_CHUNKS) * VAD_CHUNK), dtype=np.float32)
        for lane in range(lanes):
            piece = with_history[lane * STREAM_CHUNKS * VAD_CHUNK : (lane * STREAM_CHUNKS + WARMUP_CHUNKS
                                                                    + STREAM_CHUNKS) * VAD_CHUNK]
            rows[lane, : len(piece)] = piece
        batch = torch.from_numpy(rows).view(lanes, -1, VAD_CHUNK)
        model.reset_states()  # the state takes the batch size of the first call
        out = torch.stack([model(batch[:, t], VAD_RATE)[:, 0] for t in range(batch.size(1))], dim=1)
        probabilities.extend(out[:, WARMUP_CHUNKS:].reshape(-1)[:chunks].tolist())
        history = with_history[-warm:]
        seconds += len(audio) / VAD_RATE
        if progress:
            progress(seconds)

    with torch.inference_mode():
        for block in read_blocks(path, VAD_RATE):
            pending = np.concatenate([pending, block])
            while len(pending) >= group:
                run(pending[:group])
                pending = pending[group:]
        if len(pending):
            run(pending)
    return probabilities


def speech_segments(
    path: Path, *, max_segment: float = DEFAULT_MAX_SEGMENT, vad: VadOptions | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[tuple[float, float]]:
    """Where `path` holds speech: (start, end) in seconds, each no longer than `max_segment` (a longer stretch of
    speech is cut at its longest pause, else hard). Raises NoSpeechError when there is none."""
    from silero_vad import get_speech_timestamps_from_probs

    vad = vad or VadOptions()
    total = duration(path)
    if total <= 0:
        raise AudioError(f"audio {path} lasts 0 s; remove it or record again.")
    probabilities = speech_probabilities(path, progress=progress)
    found = get_speech_timestamps_from_probs(
        probabilities, sampling_rate=VAD_RATE, threshold=vad.threshold,
        min_speech_duration_ms=int(vad.min_speech * 1000), max_speech_duration_s=max_segment - 2 * vad.pad,
        min_silence_duration_ms=int(vad.min_silence * 1000), speech_pad_ms=int(vad.pad * 1000),
        audio_length_samples=int(round(total * VAD_RATE)),
    )
    segments = [(s["start"] / VAD_RATE, min(total, s["end"] / VAD_RATE)) for s in found]
    if not segments:
        raise NoSpeechError(f"{path} holds no speech the voice-activity detector can find ({total:.1f} s of "
                            "silence or noise); check that it is the right file.")
    return segments


def windows(
    segments: Sequence[tuple[float, float]], max_segment: float, *, min_window: float = MIN_WINDOW
) -> list[tuple[float, float]]:
    """Speech segments as decoding windows: each segment alone, except that a window shorter than `min_window`
    takes the next segment in (pause included) while the two fit in `max_segment` seconds.

    Not merged up to `max_segment`: a model hears, window by window, what it was trained on (an utterance between
    pauses). Measured on 56 s of joined clips, the tiny demo model (trained on ~2.5 s clips): CER 14.0% per clip,
    15.8% per pause-cut segment, 23.4% on windows merged up to 6 s and 33.2% up to 20 s (beam search); greedy CTC
    14.9%, 15.3%, 17.0%, 16.5%."""
    merged: list[tuple[float, float]] = []
    for start, end in segments:
        if merged and merged[-1][1] - merged[-1][0] < min_window and end - merged[-1][0] <= max_segment:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True)
class Window:
    """One piece of a long file: which input it belongs to, and where it lies in that file (seconds)."""

    item: int  # index of the input it came from
    start: float
    end: float


@dataclass(frozen=True)
class Expansion:
    """The inputs with each long file replaced by its windows, and how to put their transcripts back together."""

    items: list[Utterance]
    pieces: list[Window]  # one per entry of `items`
    originals: int  # how many inputs there were

    @property
    def long(self) -> bool:
        return len(self.items) != self.originals or any(p.end > 0 for p in self.pieces)

    def stitch(self, decoded: Decoded) -> Decoded:
        """`decoded` (one hypothesis per window) back to one per input: each file's windows joined in order."""
        if not self.long:
            return decoded
        texts: list[list[str]] = [[] for _ in range(self.originals)]
        for piece, text in zip(self.pieces, decoded.hypotheses, strict=True):
            if text.strip():
                texts[piece.item].append(text.strip())
        return replace(decoded, hypotheses=[" ".join(t) for t in texts])

    def progress(self, report: Callable[[int, int], None] | None) -> Callable[[int, int], None] | None:
        """`report` fed in whole seconds of audio instead of items when long files were cut (windows are of
        similar length, so done windows / all windows stands for the share of the audio)."""
        if report is None or not self.long:
            return report
        total = sum((p.end - p.start) for p in self.pieces if p.end > 0) + 0.0
        seconds = int(round(total))

        def in_seconds(done: int, count: int) -> None:
            report(int(round(seconds * done / max(1, count))), seconds)

        return in_seconds

    def windows_of(self, item: int) -> list[tuple[float, float]]:
        """The windows of input `item` ((0, 0) for an input decoded whole)."""
        return [(p.start, p.end) for p in self.pieces if p.item == item]


def max_segment_of(max_segment: float | None) -> float:
    value = DEFAULT_MAX_SEGMENT if max_segment is None else float(max_segment)
    if value < 1.0:
        raise AudioError(f"--max-segment {value:g} s is too short for speech; pass 1 s or more (default "
                         f"{DEFAULT_MAX_SEGMENT:g}).")
    return value


def expand(
    items: Sequence[Utterance], max_segment: float | None = None, *, vad: VadOptions | None = None,
    progress: Callable[[float], None] | None = None,
) -> Expansion:
    """Each item longer than `max_segment` seconds (a whole file, or a Kaldi segment) as its speech windows;
    shorter ones as they are. The detector runs only when some item is long."""
    limit = max_segment_of(max_segment)
    out: list[Utterance] = []
    pieces: list[Window] = []
    for index, item in enumerate(items):
        length = (item.end - item.start) if item.end is not None else _length_or_zero(item.audio) - item.start
        if length <= limit:
            out.append(item)
            pieces.append(Window(index, 0.0, 0.0))
            continue
        if item.start or item.end is not None:  # a long Kaldi segment: cut evenly (the detector reads whole files)
            found = _even(item.start, item.start + length, limit)
        else:
            found = windows(speech_segments(item.audio, max_segment=limit, vad=vad, progress=progress), limit)
        for start, end in found:
            out.append(replace(item, id=WINDOW_ID.format(id=item.id, start=start), start=start, end=end))
            pieces.append(Window(index, start, end))
    return Expansion(out, pieces, len(items))


def _length_or_zero(path: Path) -> float:
    try:
        return duration(path)
    except AudioError:
        return 0.0  # unreadable: load_audio names it when it is decoded


def _even(start: float, end: float, limit: float) -> list[tuple[float, float]]:
    count = int(-(-(end - start) // limit))
    step = (end - start) / count
    return [(start + i * step, start + (i + 1) * step) for i in range(count)]
