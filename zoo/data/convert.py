"""A user's speech data, checked and turned into a Kaldi data dir that ESPnet's trainer reads.

    from espzoo.data import prepare

    train = prepare("data/train", "exp/bn_ft/data/train", sample_rate=16000)      # a Kaldi data dir
    dev = prepare("dev.tsv", "exp/bn_ft/data/dev", sample_rate=16000, skip_bad=True)  # or a manifest
    print(train.num_utterances, train.total_seconds, train.dir / "wav.scp")

Input is either a Kaldi data dir (`wav.scp`, `text`, optional `utt2spk` and `segments`), a manifest: a
CSV/TSV/JSONL file with an audio path column and a text column (optional id and speaker columns), its paths
relative to the manifest, or a Hugging Face dataset (espzoo.data.hfdata: `hf:ORG/NAME[:CONFIG][@REV]:SPLIT`, a
datasets.save_to_disk folder, parquet files), whose embedded audio is written once into the cache (named by its
content) and then checked and converted like any file. Relative paths in a wav.scp are read from the data dir
first, then from the current directory (Kaldi's own convention, for dirs made by a recipe).

Everything is checked before anything is written or converted, and every problem is reported in one
`DataError` (file:line, what is wrong, how to fix it); with `skip_bad=True` the offending utterances are
dropped and listed in `Dataset.skipped` instead. Messages name the command line's options (`--skip-bad` is
`skip_bad=True`, `--allow-pipes` is `allow_pipes=True`): most users meet them there.

Audio in any format soundfile reads is accepted. Files that are already mono WAV/FLAC at the model's rate are
used where they are; everything else (another rate, several channels, another format, a segment of a
recording, a pipe command's output) is converted once — mixed to mono, resampled with soxr — into a cache
keyed by the source file's path, size and modification time, so the next run converts nothing.

The Kaldi dir is written under a temporary name and renamed into place when complete: a failed prepare leaves
nothing that a later run would trust. It holds `wav.scp` (absolute paths), `text`, `utt2spk`, `speech_shape`
(samples per utterance, ESPnet's shape file for raw audio) and `dataset.json` (the summary).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from espzoo.data import hfdata
from espzoo.data.sources import SKIPPED_LIST, Dataset, Problem, _read_hf, _read_local, _Utterance, find_manifest
from espzoo.errors import DataError
from espzoo.utils.fs import atomic_write, replace_dir

# Formats ESPnet's sound reader takes as they are; anything else is converted into the cache.
DIRECT_FORMATS = ("WAV", "FLAC")


# Length limits of the data check: audio longer than MAX_SECONDS (an S2T model: its speech_length) and transcripts
# longer than text_limit() are refused, naming the utterance.
MAX_SECONDS = 60.0


MAX_CHARS_PER_SECOND = 40


MIN_TEXT_LIMIT = 100


MAX_LISTED = 10  # problems shown in a DataError message; all of them are in DataError.problems


PIPE_TIMEOUT_S = 600


DECODE_BLOCK = 1 << 16  # frames read at a time while checking that a file decodes to its end


CACHE_VERSION = "1"  # bump when the conversion changes, so old cache entries are not reused


@dataclass(frozen=True)
class _Limits:
    sample_rate: int
    min_seconds: float
    max_seconds: float
    allow_pipes: bool
    cache_dir: Path


def _run_pipe(command: str) -> bytes:
    done = subprocess.run(command, shell=True, capture_output=True, timeout=PIPE_TIMEOUT_S, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"the command failed with exit code {done.returncode}: {message[-1] if message else ''}")
    return done.stdout


def _cache_path(utt: _Utterance, limits: _Limits) -> Path:
    """Where `utt`'s converted audio lives: keyed by what it is made from, so a changed source is redone."""
    if utt.is_pipe:
        source = f"pipe:{utt.audio}"
    else:
        stat = os.stat(utt.audio)
        source = f"file:{utt.audio}:{stat.st_size}:{stat.st_mtime_ns}"
    key = hashlib.sha256(f"{CACHE_VERSION}|{source}|{utt.start}|{utt.end}|{limits.sample_rate}".encode()).hexdigest()
    return limits.cache_dir / key[:2] / f"{key[2:24]}.flac"


def _needs_conversion(utt: _Utterance, rate: int) -> bool:
    return (
        utt.is_pipe
        or utt.start is not None
        or utt.channels != 1
        or utt.rate != rate
        or utt.format not in DIRECT_FORMATS
    )


def _probe(utt: _Utterance, limits: _Limits) -> Problem | None:
    """Read `utt`'s audio header (pipes: run and convert) and check its length; a Problem if unusable."""
    import soundfile as sf

    if utt.is_pipe:
        if not limits.allow_pipes:
            return Problem(
                utt.where,
                f"a pipe command ('{utt.audio} |') would run a shell command",
                "convert the audio to files, or pass --allow-pipes if you trust this wav.scp",
                utt.id,
            )
        cached = _cache_path(utt, limits)
        try:
            if cached.is_file():  # converted by an earlier run: the command is not run again
                utt.frames, utt.rate, utt.channels = sf.info(str(cached)).frames, limits.sample_rate, 1
            else:
                _convert(utt, limits, _run_pipe(utt.audio))
        except (OSError, RuntimeError, subprocess.TimeoutExpired, sf.LibsndfileError) as err:
            return Problem(utt.where, f"pipe command failed: {err}", "run it by hand and fix it", utt.id)
    else:
        if not os.path.isfile(utt.audio):
            return Problem(
                utt.where, f"audio file not found: {utt.audio}", "fix the path or drop the utterance", utt.id
            )
        try:
            info = sf.info(utt.audio)
            decoded = _decode_all(utt.audio)
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            return Problem(
                utt.where,
                f"unreadable audio {utt.audio} ({err})",
                "re-encode it as WAV or FLAC (e.g. ffmpeg -i IN OUT.flac), or drop the utterance",
                utt.id,
            )
        if info.frames > 0 and decoded < info.frames:
            return Problem(
                utt.where,
                f"the audio {utt.audio} is cut off: its header says {info.frames / info.samplerate:.2f} s but only "
                f"{decoded / info.samplerate:.2f} s decode",
                "re-encode or replace the file, or drop the utterance",
                utt.id,
            )
        utt.frames, utt.rate, utt.channels, utt.format = info.frames, info.samplerate, info.channels, info.format
    return _check_length(utt, limits)


def _decode_all(path: str) -> int:
    """Decode the whole file (the header alone passes a truncated FLAC, which then stops training mid-epoch with
    'flac decoder lost sync'); the frames decoded. Threads decode in parallel: libsndfile runs without the GIL."""
    import soundfile as sf

    frames = 0
    with sf.SoundFile(path) as f:
        while True:
            block = f.read(DECODE_BLOCK, dtype="int16", always_2d=True)
            if not len(block):
                return frames
            frames += len(block)


def _check_length(utt: _Utterance, limits: _Limits) -> Problem | None:
    seconds = utt.frames / utt.rate if utt.rate else 0.0
    if utt.start is not None:
        end = seconds if utt.end is None else utt.end
        if end > seconds + 0.01:
            return Problem(
                utt.where, f"segment ends at {end:.2f} s but the recording lasts {seconds:.2f} s", "fix it", utt.id
            )
        seconds = end - utt.start
    if utt.frames == 0:
        return Problem(utt.where, "the audio is empty (0 samples)", "drop the utterance or replace the file", utt.id)
    if seconds < limits.min_seconds:
        return Problem(
            utt.where, f"the audio lasts {seconds:.3f} s, too short to hold speech", "drop the utterance", utt.id
        )
    if seconds > limits.max_seconds:
        return Problem(
            utt.where,
            f"the audio lasts {seconds:.1f} s, over the {limits.max_seconds:g} s an utterance may last for this model",
            "cut the recording into utterances (a Kaldi segments file)",
            utt.id,
        )
    control = next((c for c in utt.text if (ord(c) < 32 and c != "\t") or 0x7F <= ord(c) < 0xA0), None)
    if control is not None:  # a NUL ends the line for C readers; an ESC, a \r would be tokens of the vocabulary
        return Problem(utt.where, f"the transcript holds the control character {control!r}",
                       "remove it from the transcript", utt.id)
    most = text_limit(seconds)
    if len(utt.text) > most:
        return Problem(
            utt.where,
            f"the transcript holds {len(utt.text):,} characters, over the {most:,} that {seconds:.1f} s of speech can "
            f"hold ({MAX_CHARS_PER_SECOND} a second)",
            "check that the transcript is this audio's, or cut the recording into utterances",
            utt.id,
        )
    return None


def text_limit(seconds: float) -> int:
    """The most characters a transcript of `seconds` of speech may hold: far above any speech rate (about 15 a second
    read aloud), far below what makes ESPnet's attention allocate without end (a 1 MB line: about 1 TB)."""
    return MIN_TEXT_LIMIT + int(seconds * MAX_CHARS_PER_SECOND)


def _convert(utt: _Utterance, limits: _Limits, data: bytes | None = None) -> tuple[str, int, bool]:
    """(path ESPnet reads, samples at the model's rate, whether work was done) for one utterance."""
    import numpy as np
    import soundfile as sf

    if data is None and not _needs_conversion(utt, limits.sample_rate):
        return utt.audio, utt.frames, False
    target = _cache_path(utt, limits)
    if data is None and target.is_file():
        return str(target), sf.info(str(target)).frames, False

    if data is not None:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    else:
        start = 0 if utt.start is None else int(round(utt.start * utt.rate))
        stop = None if utt.end is None else int(round(utt.end * utt.rate))
        audio, rate = sf.read(utt.audio, start=start, stop=stop, dtype="float32", always_2d=True)
    utt.frames, utt.rate, utt.channels = len(audio), rate, audio.shape[1]
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != limits.sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, limits.sample_rate, quality="HQ")
    mono = np.clip(mono, -1.0, 1.0)
    atomic_write(target, lambda tmp: sf.write(str(tmp), mono, limits.sample_rate, format="FLAC", subtype="PCM_16"))
    return str(target), len(mono), True


def prepare(
    source: str | Path,
    out_dir: str | Path,
    *,
    sample_rate: int,
    name: str | None = None,
    skip_bad: bool = False,
    allow_pipes: bool = False,
    min_seconds: float = 0.1,
    max_seconds: float = MAX_SECONDS,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    audio_column: str | None = None,
    text_column: str | None = None,
    id_column: str | None = None,
) -> Dataset:
    """Check `source` (a Kaldi data dir, a manifest or a Hugging Face dataset), convert its audio, and write a
    Kaldi dir at `out_dir`.

    Raises DataError naming every offending entry unless `skip_bad`, which drops them instead. Converted audio
    (and a dataset's embedded audio) goes to `cache_dir` (default: an `audio` folder beside `out_dir`, shared by
    train and valid sets). `audio_column`/`text_column` name a manifest's or dataset's columns when they are not
    the usual ones.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    name = name or out_dir.name
    cache = Path(cache_dir).resolve() if cache_dir else out_dir.parent / "audio"
    extracted: list[Path] = []  # a dataset's embedded audio this call wrote: removed again when the check fails
    anchor = next(p for p in (cache, *cache.parents) if p.exists())  # folders made below it are removed with them
    try:
        return _prepare(source, out_dir, name, cache, extracted, sample_rate=sample_rate, skip_bad=skip_bad,
                        allow_pipes=allow_pipes, min_seconds=min_seconds, max_seconds=max_seconds, workers=workers,
                        audio_column=audio_column, text_column=text_column, id_column=id_column)
    except BaseException:
        _remove_written(extracted, anchor)
        raise


def _remove_written(files: list[Path], anchor: Path) -> None:
    """Remove `files` and the folders below `anchor` they leave empty."""
    folders = set()
    for file in files:
        file.unlink(missing_ok=True)
        folders.update(p for p in file.parents if anchor in p.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:  # not empty (another run's files), or gone
            pass


def _prepare(source: str | Path, out_dir: Path, name: str, cache: Path, extracted: list[Path], *, sample_rate: int,
             skip_bad: bool, allow_pipes: bool, min_seconds: float, max_seconds: float, workers: int | None,
             audio_column: str | None, text_column: str | None, id_column: str | None) -> Dataset:
    if hfdata.is_hf_source(source):  # before resolving: an hf: reference or a glob is not a path
        text = str(source)
        source = text if text.startswith(hfdata.HF_SCHEME) else str(Path(text).expanduser().resolve())
        reading = _read_hf(source, audio_column, text_column, id_column, cache / "hf", extracted)
    else:
        source = find_manifest(Path(source).expanduser().resolve())
        reading = _read_local(source, audio_column, text_column, id_column)

    limits = _Limits(
        sample_rate=sample_rate,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        allow_pipes=allow_pipes,
        cache_dir=cache,
    )
    workers = workers or min(8, os.cpu_count() or 1)
    candidates = [u for u in reading.utterances if u.id not in reading.bad_ids]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = reading.problems + [p for p in pool.map(lambda u: _probe(u, limits), candidates) if p]
    bad_ids = {p.utt_id for p in problems if p.utt_id and p.drops_utterance}
    kept = [u for u in candidates if u.id not in bad_ids]
    if problems and not skip_bad:
        raise _data_error(source, problems)
    if not kept:
        raise DataError(
            f"No usable utterances in {source}: all {len(reading.utterances)} were dropped "
            f"({problems[0] if problems else 'none listed'}); fix the data."
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda u: _convert(u, limits), kept))
    dataset = Dataset(
        name=name,
        dir=out_dir,
        num_utterances=len(kept),
        total_seconds=round(sum(samples for _, samples, _ in results) / sample_rate, 3),
        sample_rate=sample_rate,
        skipped=[str(p) for p in problems],
        dropped=len(bad_ids) + sum(1 for p in problems if p.utt_id is None and p.drops_utterance),
        converted=sum(1 for _, _, work in results if work) + sum(1 for u in kept if u.is_pipe),
        cached=sum(
            1 for u, (path, _, work) in zip(kept, results, strict=True) if not (work or u.is_pipe or path == u.audio)
        ),
        source=str(source),
    )
    _write_kaldi_dir(dataset, kept, results)
    return dataset


def _data_error(source: Path | str, problems: list[Problem]) -> DataError:
    if len(problems) == 1:  # one sentence
        return DataError(f"{source}: {problems[0]}; or pass --skip-bad to drop it.", problems)
    utts = len({p.utt_id for p in problems if p.utt_id})
    shown = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return DataError(
        f"{len(problems)} problem(s) in {source} ({utts} utterance(s)); fix them, or pass --skip-bad to drop "
        f"those utterances:\n{shown}{more}",
        problems,
    )


def _write_kaldi_dir(dataset: Dataset, utterances: list[_Utterance], results: list[tuple[str, int, bool]]) -> None:
    """Write the dir under a temporary name, then swap it in (an old dir is replaced only when complete)."""
    out_dir = dataset.dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        rows = sorted(zip(utterances, results, strict=True), key=lambda r: r[0].id)
        _write_lines(tmp / "wav.scp", (f"{u.id} {path}" for u, (path, _, _) in rows))
        _write_lines(tmp / "text", (f"{u.id} {u.text}" for u, _ in rows))
        _write_lines(tmp / "utt2spk", (f"{u.id} {u.speaker}" for u, _ in rows))
        _write_lines(tmp / "speech_shape", (f"{u.id} {samples}" for u, (_, samples, _) in rows))
        if dataset.skipped:  # what skip_bad dropped, and why: the user is told where this list is
            _write_lines(tmp / SKIPPED_LIST, dataset.skipped)
        summary = {k: v for k, v in asdict(dataset).items() if k != "dir"}
        (tmp / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
