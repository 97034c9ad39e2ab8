"""Data augmentation done once at data preparation, as ESPnet's asr.sh does it: speed perturbation of a prepared
Kaldi dir, and the noise list ESPnet's preprocessor reads.

Speed perturbation is asr.sh's `--speed_perturb_factors "0.9 1.0 1.1"` (utils/perturb_data_dir_speed.sh): for each
factor f other than 1.0 every utterance gets a copy `sp<f>-<utt>` whose audio is sox's `speed f` (resampled by f,
so it lasts 1/f as long, pitch and tempo both changed), and whose speaker is `sp<f>-<speaker>`: the perturbed
speakers are kept apart from the originals, as Kaldi's script does. The resampling is soxr's (the resampler sox
itself uses, and the one espzoo.data.convert converts with); the copies are written once, as FLAC, beside the
converted audio, and found again by a later run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

from espzoo.data.sources import Dataset
from espzoo.errors import AugmentError
from espzoo.utils.fs import atomic_write, replace_dir

SPEED_FACTORS = (0.9, 1.0, 1.1)  # asr.sh's default --speed_perturb_factors
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # what soundfile reads, and so ESPnet's preprocessor


def speed_prefix(factor: float) -> str:
    """`sp0.9-`: the prefix perturb_data_dir_speed.sh gives utterance and speaker ids."""
    return f"sp{factor:g}-"


def speed_perturb(dataset: Dataset, factors: tuple[float, ...], dest: Path, cache: Path,
                  workers: int | None = None) -> Dataset:
    """A Kaldi dir at `dest` with `dataset`'s utterances (factor 1.0, if given, keeps them as they are) and a
    speed-perturbed copy of each for every other factor; wav.scp, text, utt2spk and speech_shape sorted by id.
    The perturbed audio goes to `cache/sp<f>/`. `dest` is replaced only when complete."""
    for factor in factors:
        if not 0.5 <= factor <= 2.0:
            raise AugmentError(f"speed factor {factor:g} is outside 0.5..2.0; use factors like 0.9,1.0,1.1.")
    wav = _table(dataset.dir / "wav.scp")
    text = _table(dataset.dir / "text")
    speakers = _table(dataset.dir / "utt2spk") if (dataset.dir / "utt2spk").is_file() else {u: u for u in wav}
    shapes = {u: int(v.split(",")[0]) for u, v in _table(dataset.speech_shape).items()}
    rows: list[tuple[str, str, str, str, int]] = []  # utt, path, text, speaker, samples
    if 1.0 in factors:
        rows += [(u, wav[u], text[u], speakers.get(u, u), shapes[u]) for u in wav]
    jobs = [(f, u) for f in factors if f != 1.0 for u in wav]
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        done = list(pool.map(lambda job: _perturbed(wav[job[1]], job[0], dataset.sample_rate, cache), jobs))
    for (factor, utt), (path, samples) in zip(jobs, done, strict=True):
        prefix = speed_prefix(factor)
        rows.append((prefix + utt, path, text[utt], prefix + speakers.get(utt, utt), samples))
    rows.sort(key=lambda r: r[0])
    perturbed = replace(dataset, dir=Path(dest).resolve(), num_utterances=len(rows),
                        total_seconds=round(sum(r[4] for r in rows) / dataset.sample_rate, 3))
    _write(perturbed, rows, factors)
    return perturbed


def _perturbed(source: str, factor: float, rate: int, cache: Path) -> tuple[str, int]:
    """sox's `speed factor` of `source` (a file at `rate`): soxr resamples it to rate/factor, which is then read
    at `rate`. Cached by the source's path, size and time and the factor."""
    import soundfile as sf

    stat = os.stat(source)
    key = hashlib.sha256(f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\0{factor:g}".encode()).hexdigest()[:20]
    target = cache / f"sp{factor:g}" / f"{key}.flac"
    if target.is_file():
        return str(target), sf.info(str(target)).frames
    import numpy as np
    import soxr

    audio, got = sf.read(source, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if got != rate:  # prepared data is at the model's rate; anything else is a bug upstream, said plainly
        raise AugmentError(f"{source} is at {got} Hz, not the {rate} Hz the data was prepared at; prepare it again.")
    out = np.clip(soxr.resample(mono, rate * factor, rate, quality="HQ"), -1.0, 1.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: sf.write(str(tmp), out, rate, format="FLAC", subtype="PCM_16"))
    return str(target), len(out)


def _write(dataset: Dataset, rows: list[tuple[str, str, str, str, int]], factors: tuple[float, ...]) -> None:
    dest = dataset.dir
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, column in (("wav.scp", 1), ("text", 2), ("utt2spk", 3), ("speech_shape", 4)):
            (tmp / name).write_text("".join(f"{r[0]} {r[column]}\n" for r in rows), encoding="utf-8")
        summary = {k: v for k, v in asdict(dataset).items() if k != "dir"}
        summary["speed_perturb"] = list(factors)
        (tmp / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _table(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=1)
        if parts:
            out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


def noise_files(folder: str | Path) -> list[Path]:
    """The recordings in `folder` (recursively) ESPnet's preprocessor can read; AugmentError when there are none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AugmentError(f"--augment noise:{folder}: there is no such folder; give a folder of noise recordings "
                           f"({', '.join(AUDIO_SUFFIXES)}).")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not found:
        raise AugmentError(f"--augment noise:{folder}: the folder holds no recordings ({', '.join(AUDIO_SUFFIXES)}); "
                           "put noise files in it or drop noise from --augment.")
    return found


def noise_list(folder: str | Path, dest: Path, sample_rate: int) -> Path:
    """`dest/noise.scp` ("key path" lines, what ESPnet's --noise_scp reads) over mono copies of the recordings in
    `folder` at `sample_rate`: ESPnet's ASR preprocessor mixes noise in without resampling it."""
    import numpy as np
    import soundfile as sf

    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, path in enumerate(noise_files(folder)):
        try:
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:  # type: ignore[attr-defined]
            raise AugmentError(f"--augment noise: {path} cannot be read ({err}); remove it from the folder.") from None
        mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
        if rate != sample_rate:
            import soxr

            mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
        target = dest / f"noise{i:05d}.flac"
        atomic_write(target, lambda tmp, m=mono: sf.write(str(tmp), np.clip(m, -1, 1), sample_rate, format="FLAC",
                                                          subtype="PCM_16"))
        lines.append(f"noise{i:05d} {target.resolve()}\n")
    scp = dest / "noise.scp"
    atomic_write(scp, lambda tmp: tmp.write_text("".join(lines), encoding="utf-8"))
    return scp
