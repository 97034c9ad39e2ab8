"""Peak memory of `espzoo.data.convert.prepare` on a parquet dataset as it grows, against reading the table whole.

    .venv/bin/python bench/hfdata_memory.py [--rows 400] [--scale 8]

A parquet dataset of ROWS distinct utterances (the committed Spanish speech as 16 kHz WAV bytes, one sample changed
per row so that no two rows are the same file), 100 rows a row group as `datasets` writes audio, and one SCALE times
larger. Each measurement is a fresh process's peak RSS (ru_maxrss): prepare on the small and on the large set, and,
as the peer, pyarrow's `read_table` of the large set (what loading the whole table costs). Printed last: the
large/small ratio of prepare's peak (flat memory: about 1) and the peer's peak over prepare's on the large set.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "zoo" / "assets" / "speech" / "es" / "train"
ROW_GROUP = 100  # datasets' row group size for audio datasets


def build(folder: Path, rows: int) -> int:
    """`rows` distinct utterances as parquet files of 400 rows; returns the bytes written."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    texts = dict(line.split(maxsplit=1) for line in (SPEECH / "text").read_text(encoding="utf-8").splitlines())
    wavs = dict(line.split(maxsplit=1) for line in (SPEECH / "wav.scp").read_text().splitlines())
    ids = sorted(wavs)
    audio = {u: sf.read(str(SPEECH / wavs[u]), dtype="int16")[0] for u in ids}
    folder.mkdir(parents=True)
    batch: list[dict] = []
    for n in range(rows):
        utt = ids[n % len(ids)]
        samples = audio[utt].copy()
        samples[0] = np.int16(n % 30000)  # a distinct file per row
        buffer = io.BytesIO()
        sf.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
        batch.append({"audio": {"bytes": buffer.getvalue(), "path": f"{utt}-{n:06d}.wav"}, "sentence": texts[utt]})
        if len(batch) == 400 or n == rows - 1:
            pq.write_table(pa.Table.from_pylist(batch), folder / f"train-{n // 400:05d}.parquet",
                           row_group_size=ROW_GROUP)
            batch = []
    return sum(p.stat().st_size for p in folder.glob("*.parquet"))


def peak_mb(code: str) -> float:
    script = code + "\nimport resource; print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(done.stdout.split("PEAK")[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--scale", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="espzoo-bench-hfdata-") as tmp:
        work = Path(tmp)
        sizes = {"small": build(work / "small", args.rows), "large": build(work / "large", args.rows * args.scale)}
        peaks = {}
        for name in ("small", "large"):
            peaks[name] = peak_mb(f"from espzoo.data import prepare\n"
                                  f"prepare({str(work / name)!r}, {str(work / ('out_' + name) / 'train')!r}, "
                                  "sample_rate=16000, workers=2)")
            print(f"prepare {name}: {sizes[name] / 2**20:.0f} MB of parquet, peak RSS {peaks[name]:.0f} MB")
        whole = peak_mb(f"import pyarrow.parquet as pq\ntable = pq.read_table({str(work / 'large')!r})")
        print(f"pyarrow read_table large (peer): peak RSS {whole:.0f} MB")
        print(f"ratio prepare large/small peak RSS: {peaks['large'] / peaks['small']:.2f} "
              f"(data x{args.scale}); read_table/prepare on large: {whole / peaks['large']:.2f}")


if __name__ == "__main__":
    main()
