"""Per-epoch time of one `espzoo finetune` process against a two-node run of two processes on 127.0.0.1.

    .venv/bin/python bench/distributed.py --model DIR [--utterances 24] [--epochs 3] [--repeats 1]

The same tiny model (a hub-layout folder, e.g. the test fixture's), the same Spanish training utterances
and batch size; the two-node run is ranks 0 and 1 of ESPnet's DDP on gloo (each rank takes half of each
batch). Per-epoch time is ESPnet's own `[train] ... time=N seconds` of each epoch after the first (the
first carries start-up), median over epochs and repeats; runs are interleaved (A B, B A). Printed last:
the 2-process / 1-process ratio of that time (on 2 shared cores it cannot go below 1/2).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ESPZOO = str(Path(sys.executable).with_name("espzoo"))
sys.path.insert(0, str(ROOT / "tests"))  # the Kaldi-dir subset of the tests, defined once there
_TRAIN_TIME = re.compile(r"(\d+)epoch results: \[train\].*?time=([\d.]+) seconds")


def epoch_times(log: Path) -> list[float]:
    return [float(m.group(2)) for m in _TRAIN_TIME.finditer(log.read_text(errors="replace")) if int(m.group(1)) > 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a hub-layout model folder")
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="espzoo-bench-dist-"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", ESPZOO_HOME=str(work / "home"))
    from _hubtools import SPEECH, subset

    two = ("text", "wav.scp")
    train = subset(SPEECH / "train", work / "train", args.utterances, two)
    dev = subset(SPEECH / "dev", work / "dev", 6, two)

    def command(out: Path) -> list[str]:
        return [ESPZOO, "finetune", str(args.model), "--train", str(train), "--valid", str(dev), "--out", str(out),
                "--batch-bins", "200000", "--max-epoch", str(args.epochs), "--json"]

    def single(k: int) -> list[float]:
        out = work / f"one{k}"
        subprocess.run(command(out), env=env, check=True, capture_output=True, timeout=3600)
        return epoch_times(out / "train.log")

    def two_nodes(k: int) -> list[float]:
        out = work / f"two{k}"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        procs = [subprocess.Popen([*command(out), "--num-nodes", "2", "--node-rank", str(rank), "--master-addr",
                                   "127.0.0.1", "--master-port", port], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for rank in (1, 0)]
        if any(p.wait(timeout=3600) for p in procs):
            raise SystemExit(f"the two-node run failed; see {out / 'train.log'}")
        return epoch_times(out / "train.log")

    ones: list[float] = []
    twos: list[float] = []
    try:
        for k in range(args.repeats):
            for side in (("one", "two") if k % 2 == 0 else ("two", "one")):
                (ones if side == "one" else twos).extend(single(k) if side == "one" else two_nodes(k))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, two = statistics.median(ones), statistics.median(twos)
    print(f"{args.utterances} utterances, {args.epochs} epochs, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"1 process: {one:.2f} s per epoch (epochs after the first: {', '.join(f'{t:.2f}' for t in ones)})")
    print(f"2 processes (2 nodes on loopback, gloo): {two:.2f} s per epoch ({', '.join(f'{t:.2f}' for t in twos)})")
    print(f"per-epoch time ratio 2 processes / 1 process: {two / one:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
