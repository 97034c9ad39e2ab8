"""Decoding many utterances: audio read per utterance, batches sized by seconds of audio, in this process or
in worker processes (--jobs), results in the input's order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from espzoo.hub.session import Snapshot
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from espzoo.decode.recognizer import (
    MAX_DECODE_SECONDS,
    DecodeOptions,
    ModelFiles,
    Recognizer,
    decode_mode,
    load_recognizer,
    locate_model,
)
from espzoo.decode.scoring import _is_data_set
from espzoo.errors import AudioError, AudioFileMissingError, DecodeWorkerError

if TYPE_CHECKING:

    from espzoo.hub.session import Snapshot
from espzoo.decode.recognizer import lm_in_use


@dataclass(frozen=True)
class Utterance:
    """One thing to decode: an id, its audio (a segment of it when `end` is set), its reference if known."""

    id: str
    audio: Path
    text: str | None = None
    start: float = 0.0  # seconds (Kaldi `segments`)
    end: float | None = None
    speaker: str | None = None  # utt2spk's (the utterance's own id where the data names no speakers)


def load_audio(path: Path, sample_rate: int, *, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """A file (any format soundfile reads) as mono float32 at `sample_rate`: channels averaged, soxr-resampled."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        first = int(round(start * info.samplerate))
        last = None if end is None else int(round(end * info.samplerate))
        seconds = ((last if last is not None else info.frames) - first) / info.samplerate
        if seconds > MAX_DECODE_SECONDS:  # attention over the whole file: 2 h asked for 518 GB
            raise AudioError(f"{path} lasts {seconds:.0f} s, over the {MAX_DECODE_SECONDS:.0f} s espzoo decodes in "
                             "one piece; transcribe/evaluate cut it at pauses (--max-segment).")
        wave, rate = soundfile.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as error:
        raise AudioError(f"cannot read audio {path} ({error}); check the path or convert it to WAV/FLAC.") from error
    wave = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if wave.size == 0:
        raise AudioError(f"audio {path} is empty; remove it from the data set.")
    if rate != sample_rate:
        import soxr

        wave = soxr.resample(wave, rate, sample_rate, quality="HQ").astype("float32", copy=False)
    return wave


@contextmanager
def prepared_utterances(
    data: str | Path, sample_rate: int, *, skip_bad: bool = False, audio_column: str | None = None,
    text_column: str | None = None,
) -> Iterator[list[Utterance]]:
    """The utterances of a data set with references, checked and converted by `espzoo.data.convert.prepare`.

    `data` is a Kaldi dir (`wav.scp`, `text`, optional `segments`), a manifest (.csv/.tsv/.jsonl with audio
    and text) or a Hugging Face dataset (espzoo.data.hfdata); bad entries raise `DataError` listing them all, unless
    `skip_bad` drops them. Audio that is not mono at `sample_rate` is converted into a temporary folder that lives
    as long as the context.
    """
    import tempfile

    from espzoo.data.convert import prepare

    with tempfile.TemporaryDirectory(prefix="espzoo-eval-") as tmp:
        dataset = prepare(data, Path(tmp) / "data", sample_rate=sample_rate, skip_bad=skip_bad,
                          audio_column=audio_column, text_column=text_column)
        texts = dataset.transcripts()
        speakers = _two_columns(dataset.dir / "utt2spk") if (dataset.dir / "utt2spk").is_file() else {}
        yield [
            Utterance(utt_id, Path(location), texts.get(utt_id, ""), speaker=speakers.get(utt_id, utt_id))
            for utt_id, location in _two_columns(dataset.wav_scp).items()
        ]


def _two_columns(path: Path) -> dict[str, str]:
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            table[key] = value.strip()
    return table


def decode(
    recognizer: Recognizer,
    utterances: str | Path | Iterable[Utterance | str | Path],
    *,
    progress: Progress | None = None,
) -> list[str]:
    """Transcripts of a data set's utterances (Kaldi dir or manifest), or of audio files (any rate, any
    channels), in order, in this process (see `evaluate`/`transcribe` for worker processes).

    Beam search takes one utterance at a time, as ESPnet's own asr_inference does (it refuses batch_size > 1):
    batching it would change results, since a conformer's convolution modules see the padding of shorter
    inputs. Greedy CTC (`DecodeOptions.decode`) batches utterances of similar length.
    """
    if isinstance(utterances, (str, Path)) and _is_data_set(Path(utterances)):
        with prepared_utterances(utterances, recognizer.sample_rate) as items:
            return _decode(recognizer, recognizer.model, recognizer.options, items, progress).hypotheses
    if isinstance(utterances, (str, Path)):
        utterances = [utterances]
    items = [u if isinstance(u, Utterance) else Utterance(Path(u).stem, Path(u)) for u in utterances]
    return _decode(recognizer, recognizer.model, recognizer.options, items, progress).hypotheses


@dataclass(frozen=True)
class Decoded:
    """Hypotheses in input order, the seconds of audio they cover, and how they were made."""

    hypotheses: list[str]
    audio_seconds: float
    mode: str
    jobs: int
    # Wall-clock seconds of decoding: after the model is loaded in this process; with worker processes,
    # from their start, so including each one's (parallel) model load.
    seconds: float = 0.0


# A worker process holds ESPnet and one model: ~0.6 GB resident on CPU before the model's own tensors.
WORKER_BASE_BYTES = 700 * 2**20


def default_jobs(files: ModelFiles, options: DecodeOptions, utterances: int) -> int:
    """`options.jobs`, else one worker per core while the memory available holds each one's model (GPUs: 1)."""
    if options.jobs is not None:
        return max(1, min(options.jobs, utterances))
    if options.device != "cpu":
        return 1
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_worker = WORKER_BASE_BYTES + 3 * files.checkpoint.stat().st_size  # weights, their float32 copy, activations
    available = _available_memory()
    by_memory = max(1, available // per_worker) if available else cores
    return max(1, min(cores, by_memory, utterances))


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _units(items: list[Utterance], sample_rate: int, mode: str, batch_seconds: float) -> list[list[int]]:
    """Indices of `items` in the groups decoded together, longest first (so that workers finish together).

    Beam search: one utterance each. Greedy CTC: runs of similar length whose padded size (rows x the
    longest) stays within `batch_seconds` of audio, which keeps padding, and its effect, small.
    """
    import soundfile

    def seconds(u: Utterance) -> float:
        if u.end is not None:
            return u.end - u.start
        try:
            return soundfile.info(str(u.audio)).duration - u.start
        except (RuntimeError, soundfile.LibsndfileError, OSError):
            return 0.0  # unreadable: load_audio names it when its unit is decoded

    lengths = [seconds(u) for u in items]
    order = sorted(range(len(items)), key=lambda i: -lengths[i])
    if mode != "ctc-greedy":
        return [[i] for i in order]
    units: list[list[int]] = []
    for i in order:  # longest first: a unit's first row is its longest
        if units and (len(units[-1]) + 1) * lengths[units[-1][0]] <= batch_seconds:
            units[-1].append(i)
        else:
            units.append([i])
    return units


def _decode_unit(recognizer: Recognizer, items: Sequence[Utterance]) -> tuple[list[str], float]:
    waves = [load_audio(u.audio, recognizer.sample_rate, start=u.start, end=u.end) for u in items]
    seconds = sum(len(w) for w in waves) / recognizer.sample_rate
    if recognizer.mode == "ctc-greedy":
        return recognizer.greedy_ctc(waves), seconds
    return [recognizer(w) for w in waves], seconds


@dataclass
class _Merge:
    """Decoded units put back in input order, with the audio seconds they cover and progress reported."""

    total: int
    progress: Progress | None
    hypotheses: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    done: int = 0

    def __post_init__(self) -> None:
        self.hypotheses = [""] * self.total

    def add(self, unit: list[int], texts: list[str], seconds: float) -> None:
        for i, text in zip(unit, texts, strict=True):
            self.hypotheses[i] = text
        self.audio_seconds += seconds
        self.done += len(unit)
        if self.progress:
            self.progress(self.done, self.total)


def _decode_here(recognizer: Recognizer, items: list[Utterance], progress: Progress | None) -> Decoded:
    """Decode `items` in this process, with `recognizer`."""
    import time

    started = time.perf_counter()
    merged = _Merge(len(items), progress)
    units = _units(items, recognizer.sample_rate, recognizer.mode, recognizer.options.batch_seconds)
    if recognizer.mode != "ctc-greedy":
        units.sort()  # one at a time: input order, so that a failure names the first bad file
    for unit in units:
        merged.add(unit, *_decode_unit(recognizer, [items[i] for i in unit]))
    return Decoded(merged.hypotheses, merged.audio_seconds, recognizer.mode, 1, time.perf_counter() - started)


def _decode_in_workers(
    files: ModelFiles, options: DecodeOptions, items: list[Utterance], jobs: int, progress: Progress | None
) -> Decoded:
    """Decode `items` in `jobs` fresh processes, each loading its own model; results merged in input order.

    Processes are spawned, not forked: a fork of a process whose torch thread pool is running can hang.
    Each job gets cores / jobs torch threads unless `options.threads` says otherwise.
    """
    import multiprocessing
    import os
    import time
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from dataclasses import replace

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    worker_options = replace(options, jobs=1, threads=options.threads or max(1, cores // jobs))
    mode = "beam" if lm_in_use(files, options) else decode_mode(files.config, options)  # an LM needs the search
    units = _units(items, files.sample_rate, mode, options.batch_seconds)
    started = time.perf_counter()
    merged = _Merge(len(items), progress)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_start,
                             initargs=(files, worker_options)) as pool:
        pending = {pool.submit(_worker_decode, [items[i] for i in unit]): unit for unit in units}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    merged.add(pending.pop(future), *future.result())
        except BrokenProcessPool:
            raise DecodeWorkerError(
                f"a decoding worker process died (out of memory, or killed); run again with fewer jobs "
                f"(--jobs {max(1, jobs // 2)})."
            ) from None
        finally:
            for future in pending:
                future.cancel()
    return Decoded(merged.hypotheses, merged.audio_seconds, mode, jobs, time.perf_counter() - started)


def _worker_start(files: ModelFiles, options: DecodeOptions) -> None:
    # Loading the model happens in the first task, not here: an initializer that raises breaks the whole pool
    # with no message, while a task's exception (a bad checkpoint, say) comes back to the caller as it is.
    _WORKER.update(files=files, options=options)


def _worker_decode(items: list[Utterance]) -> tuple[list[str], float]:
    if "recognizer" not in _WORKER:
        _WORKER["recognizer"] = load_recognizer(_WORKER["files"], _WORKER["options"])
    return _decode_unit(_WORKER["recognizer"], items)


def transcribe(
    model: str | Path | Snapshot | Recognizer,
    files: Sequence[str | Path],
    *,
    options: DecodeOptions | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """One transcript per audio file, in order."""
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise AudioFileMissingError(f"no such audio file: {', '.join(missing)}; check the path.")
    located = model.model if isinstance(model, Recognizer) else locate_model(model)
    options = model.options if isinstance(model, Recognizer) else (options or DecodeOptions())
    items = [Utterance(Path(f).stem, Path(f)) for f in files]
    return _decode(model, located, options, items, progress).hypotheses


def _decode(
    model: object, files: ModelFiles, options: DecodeOptions, items: list[Utterance], progress: Progress | None
) -> Decoded:
    """With the Recognizer given, or in this process, or in worker processes (`default_jobs`).

    A model already loaded decodes here unless more jobs are asked for explicitly: loading it again in
    each worker costs more than it saves on a few utterances.
    """
    from espzoo.decode.longform import expand  # long recordings: windows in, one transcript per input out (issue 23)

    expansion = expand(items, options.max_segment)
    return expansion.stitch(_decode_items(model, files, options, expansion.items, expansion.progress(progress)))


def _decode_items(
    model: object, files: ModelFiles, options: DecodeOptions, items: list[Utterance], progress: Progress | None
) -> Decoded:
    if isinstance(model, Recognizer) and options.jobs is None:
        return _decode_here(model, items, progress)
    jobs = default_jobs(files, options, len(items))
    if jobs > 1:
        return _decode_in_workers(files, options, items, jobs, progress)
    recognizer = model if isinstance(model, Recognizer) else load_recognizer(files, options)
    return _decode_here(recognizer, items, progress)


Progress = Callable[[int, int], None]  # (done, total)


_WORKER: dict[str, Any] = {}  # in a worker process: what _worker_start was given, and the model once loaded
