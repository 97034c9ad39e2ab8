"""espzoo's trainer.run and `espzoo finetune` against the same training run straight through
`python -m espnet2.bin.asr_train`.

    .venv/bin/python bench/finetune.py [--utterances 32] [--epochs 2] [--repeats 2] [--keep]

Both train the same tiny ESPnet model (conformer 2 blocks d=64, transformer decoder 1 block, char tokens)
from the same init checkpoint on the same committed English speech, with the identical config file and
data/shape arguments (espzoo's OUT/conf/train.yaml and `espnet_args`), in this one run. espzoo's time counts
everything `run()` does (text shapes, config, the init checkpoint check, ESPnet, reading the log, assembling
OUT); the peer's is the asr_train process alone. Each side runs `--repeats` times, interleaved (A B B A) so
both see the same drift in load, and the minimum of each is compared. Printed: the wall time ratio
(goal <= 1.05x), then the difference in seconds of the time to the first training step (from the call to
ESPnet's "1/Nepoch started" log line). Also printed: the CPU time ratio
(this machine is shared, so wall time is noisy; CPU time much less so).

`espzoo finetune` (the CLI, in a fresh process, as a user runs it) starts from a model folder holding the same
init weights and architecture: its time to the first training step also counts Python's start, resolving the
model, checking and converting the data, planning and applying the transfer (done by the training child, which
imports ESPnet meanwhile, so espzoo's own process never does) and writing the config, while the peer was handed
all of that ready. That difference, the one a user waits for, is the last line; trainer.run's (the data and init
checkpoint given) comes before it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from espzoo.data.convert import prepare
from espzoo.models.espnet_env import espnet_env, import_asr_task
from espzoo.models.tiny import TINY_ASR_CONFIG
from espzoo.train.driver import run
from espzoo.train.options import TrainOptions, espnet_args
from espzoo.transfer.vocab import Vocabulary

SPEECH = Path(__file__).resolve().parent.parent / "zoo" / "assets" / "speech" / "en"
# The tiny architecture of the test fixtures and the demo model (espzoo.models.tiny), at 16 kHz with global MVN.
BASE = {
    "frontend": "default",
    "frontend_conf": {**TINY_ASR_CONFIG["frontend_conf"], "fs": 16000},
    "normalize": "global_mvn",
    **{key: TINY_ASR_CONFIG[key] for key in ("encoder", "encoder_conf", "decoder", "decoder_conf", "model_conf")},
}
_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?1/\d+epoch started")


def _subset(source: Path, dest: Path, count: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    lines = (source / "wav.scp").read_text().splitlines()[:count]
    keep = {line.split()[0] for line in lines}
    (dest / "wav.scp").write_text("".join(f"{k} {(source / v).resolve()}\n" for k, v in (x.split() for x in lines)))
    texts = [t for t in (source / "text").read_text().splitlines() if t.split()[0] in keep]
    (dest / "text").write_text("\n".join(texts) + "\n")
    return dest


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _first_step_seconds(log: Path, started_wall: float) -> float | None:
    match = _STAMP.search(log.read_text(errors="replace"))
    if match is None:
        return None
    stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return stamp - started_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, interleaved A B B A")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (printed) instead of removing it")
    parser.add_argument("--ngpu", type=int, default=0, help="train on N GPUs (both sides)")
    opts = parser.parse_args()

    import torch

    root = Path(tempfile.mkdtemp(prefix="espzoo_bench_finetune_"))
    if opts.keep:
        print(f"work dir: {root}")
    texts = [line.split(maxsplit=1)[1] for line in (SPEECH / "train" / "text").read_text().splitlines()]
    tokens = ["<blank>", "<unk>", "<space>", *sorted({c for t in texts for c in t} - {" "}), "<sos/eos>"]
    rng = np.random.default_rng(0)
    mean, var = rng.normal(-4.0, 1.0, 80), rng.uniform(1.0, 4.0, 80)
    stats = root / "feats_stats.npz"
    np.savez(stats, count=np.array(1000), sum=mean * 1000, sum_square=(var + mean**2) * 1000)
    base = dict(BASE, normalize_conf={"stats_file": str(stats)})

    asr_task = import_asr_task()  # also warms the page cache for both runs
    args = asr_task.get_parser().parse_args(["--token_list", "unused"])
    for key, value in dict(base, token_list=tokens, token_type="char").items():
        setattr(args, key, value)
    torch.manual_seed(0)
    init = root / "init.pth"
    torch.save(asr_task.build_model(args).state_dict(), init)
    train = prepare(
        _subset(SPEECH / "train", root / "src" / "train", opts.utterances), root / "data" / "train", sample_rate=16000
    )
    valid = prepare(SPEECH / "dev", root / "data" / "dev", sample_rate=16000)
    print(f"data: {train.num_utterances} train utterances ({train.total_seconds:.0f} s), {valid.num_utterances} valid")

    options = TrainOptions(max_epoch=opts.epochs, ngpu=opts.ngpu)
    model_dir = _model_folder(root / "model", base, tokens, stats, init)
    cli_source = root / "src" / "train"

    def espzoo_run(i: int) -> tuple[float, float, float | None, Any]:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        result = run(
            base,
            vocabulary=Vocabulary(tokens, "char"),
            init_checkpoint=init,
            stats_file=stats,
            train=train,
            valid=valid,
            out=root / f"espzoo{i}",
            options=options,
        )
        return time.perf_counter() - t0, _cpu_seconds() - cpu0, result.seconds_to_first_step, result

    def peer_run(i: int, conf: Path) -> tuple[float, float, float | None, None]:
        out = root / f"espnet{i}"
        out.mkdir()
        args = espnet_args(
            conf / "conf" / "train.yaml",
            train=train,
            valid=valid,
            train_text_shape=conf / "shapes" / train.name / "text_shape.char",
            valid_text_shape=conf / "shapes" / valid.name / "text_shape.char",
            output_dir=out / "espnet",
            options=options,
        ) + ["--resume", "false"]
        log = out / "train.log"
        started_wall, cpu0, t0 = time.time(), _cpu_seconds(), time.perf_counter()
        with log.open("wb") as f:
            code = subprocess.call(
                [sys.executable, "-m", "espnet2.bin.asr_train", *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=espnet_env(),
            )
        if code != 0:
            sys.exit(f"the peer run failed (exit {code}); see {log}")
        return time.perf_counter() - t0, _cpu_seconds() - cpu0, _first_step_seconds(log, started_wall), None

    def cli_run(i: int) -> tuple[float, float, float | None, None]:
        out = root / f"cli{i}"
        command = [str(Path(sys.executable).with_name("espzoo")), "finetune", str(model_dir), "--train",
                   str(cli_source), "--valid", str(SPEECH / "dev"), "--out", str(out), "--max-epoch", str(opts.epochs),
                   "--ngpu", str(opts.ngpu), "--json"]
        started_wall, cpu0, t0 = time.time(), _cpu_seconds(), time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"espzoo finetune failed (exit {done.returncode}): {done.stderr[-2000:]}")
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        return wall, cpu, _first_step_seconds(out / "train.log", started_wall), None

    # A B C, C B A ...: every side sees the same drift of this shared machine's load; the minimum of each is reported.
    espzoo_runs, peer_runs, cli_runs = [], [], []
    runs = {"espzoo": espzoo_runs, "peer": peer_runs, "finetune": cli_runs}
    for pair in range(opts.repeats):
        order = ("espzoo", "peer", "finetune") if pair % 2 == 0 else ("finetune", "peer", "espzoo")
        for side in order:
            if side == "espzoo":
                espzoo_runs.append(espzoo_run(len(espzoo_runs)))
            elif side == "peer":
                peer_runs.append(peer_run(len(peer_runs), root / "espzoo0"))
            else:
                cli_runs.append(cli_run(len(cli_runs)))
            wall, cpu, first, _ = runs[side][-1]
            print(f"  {side}: {wall:.2f} s wall, {cpu:.2f} s CPU, first step at {first or float('nan'):.2f} s")

    result = espzoo_runs[0][3]
    print(f"epochs: {result.epochs}; final valid acc {result.history[-1].valid_acc}")
    if not opts.keep:
        shutil.rmtree(root, ignore_errors=True)
    espzoo_s, peer_s = min(r[0] for r in espzoo_runs), min(r[0] for r in peer_runs)
    espzoo_cpu, peer_cpu = min(r[1] for r in espzoo_runs), min(r[1] for r in peer_runs)
    firsts = [r[2] for r in espzoo_runs if r[2] is not None]
    peer_firsts = [r[2] for r in peer_runs if r[2] is not None]
    print(f"espzoo trainer.run (min of {len(espzoo_runs)}): {espzoo_s:.2f} s wall, {espzoo_cpu:.2f} s CPU")
    print(f"python -m espnet2.bin.asr_train (min of {len(peer_runs)}): {peer_s:.2f} s wall, {peer_cpu:.2f} s CPU")
    print(f"CPU time ratio espzoo / asr_train: {espzoo_cpu / peer_cpu:.3f}x")
    print(f"ratio espzoo / asr_train: {espzoo_s / peer_s:.3f}x wall time (goal <= 1.05x)")
    first, peer_first = min(firsts, default=float("nan")), min(peer_firsts, default=float("nan"))
    cli_first = min((r[2] for r in cli_runs if r[2] is not None), default=float("nan"))
    print(f"time to first training step (min), trainer.run: espzoo {first:.2f} s, asr_train {peer_first:.2f} s, "
          f"difference {first - peer_first:+.2f} s (load {os.getloadavg()[0]:.1f})")
    print(f"time to first training step (min), espzoo finetune (data, plan, transfer included): {cli_first:.2f} s, "
          f"asr_train {peer_first:.2f} s, difference {cli_first - peer_first:+.2f} s "
          f"(goal <= +1.0 s; load {os.getloadavg()[0]:.1f})")


def _model_folder(folder: Path, base: dict[str, Any], tokens: list[str], stats: Path, init: Path) -> Path:
    """An experiment dir (config.yaml, model.pth, feats_stats.npz) of the bench's init weights, for the CLI."""
    folder.mkdir(parents=True)
    shutil.copy(stats, folder / "feats_stats.npz")
    shutil.copy(init, folder / "model.pth")
    config = dict(base, token_list=tokens, token_type="char", normalize_conf={"stats_file": "feats_stats.npz"})
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


if __name__ == "__main__":
    main()
