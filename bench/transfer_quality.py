"""Does the pretrained model help a new vocabulary, and do composed rows help more? Test CER at equal steps.

    nice .venv/bin/python bench/transfer_quality.py                      # 4 starts x 5 seeds, lr sensitivity
    nice .venv/bin/python bench/transfer_quality.py --seeds 0 1 2 --points 1 2 4 --lrs    # smaller, no lr sweep
    nice .venv/bin/python bench/transfer_quality.py --starts espnet-way compose --points 8 16 32 --lr 8e-3 --lrs

The demo's task: the tiny English char conformer shipped in zoo/assets/pretrained (espzoo-demo/tiny-en-char)
learns Spanish (zoo/assets/speech/es/train: 90 utterances) with a new Spanish BPE vocabulary (`bpe:N` trained
on the train transcripts, the same token list for every start: checked). Four starts, each the init.pth that
espzoo's own plan + apply writes for the new vocabulary, seeded alike:

  (a) scratch     nothing loaded (the encoder, decoder and CTC excluded): ESPnet's random initialization.
  (b) espnet-way  ESPnet's `--init_param pretrained.pth --ignore_init_mismatch true`: everything loads but the
                  vocabulary-sized tensors (ctc.ctc_lo.*, decoder.embed.0.weight, decoder.output_layer.*), which
                  keep the new model's random init (TransferOptions(transplant=False, ignore_init_mismatch=True),
                  which tests/test_transfer.py checks is bit for bit ESPnet's own loader).
  (c) mean        espzoo's transplant: shared tokens keep their pretrained rows, new tokens the mean row.
  (d) compose     the same, new tokens start from the mean of the rows of the old tokens that spell them.

Each start is trained the same way: ESPnet's model (ESPnetASRModel.forward: CTC + attention loss, as
configured), Adam with ESPnet's WarmupLR (warmup 10% of the steps, espzoo's default), gradient clip 5, the same
batches in the same order for a given seed, all four starts in one process per seed. Training runs in this
process, not through `espzoo finetune`, to measure the init alone at a cost this machine can pay (a finetune
run pays ~1 min of start-up); the Spanish normalization stats are the pretrained model's in every start.

Test CER: greedy CTC (espzoo.decode's Recognizer.greedy_ctc on the model being trained) on a Spanish test set
of --test-size espeak-ng utterances that scripts/make_speech.py synthesizes beyond the committed ones (none
repeats a committed sentence), at each of --points epochs. Printed: mean ± standard deviation over seeds at each
point; then a learning-rate sweep of (b) and (d) at the last point; last, whether (d) < (b) beyond the spread
(mean difference larger than the larger of the two standard deviations) at the end. Work files go to
bench/.work/transfer_quality/ (--work; removed at the end unless --keep).

Measured 2026-11-30 on 2 shared cores (load 10-18), test CER mean ± sd over seeds 0-4:
  defaults (1616 s):  epoch 1 / 2 / 4 / 8 at lr 2e-3
    scratch     100.0 ± 0.0   100.0 ± 0.0   98.3 ± 2.4   90.8 ± 3.1
    espnet-way  100.0 ± 0.0    99.8 ± 0.3   93.8 ± 3.5   72.2 ± 6.9
    mean         81.1 ± 0.9    83.7 ± 1.1   69.5 ± 1.8   60.2 ± 0.5
    compose      70.6 ± 2.1    71.2 ± 1.0   54.4 ± 1.1   41.3 ± 0.7
    epoch 8, lr 5e-4 / 2e-3 / 8e-3: espnet-way 98.4 ± 0.8 / 72.2 ± 6.9 / 38.4 ± 11.2;
                                    compose    66.6 ± 1.0 / 41.3 ± 0.7 / 23.0 ± 1.0
  --starts espnet-way compose --points 8 16 32 --lr 8e-3 --lrs (1312 s): epoch 8 / 16 / 32
    espnet-way  27.4 ± 5.0   18.2 ± 3.8   15.4 ± 2.5
    compose     21.0 ± 0.9   16.0 ± 1.2   13.9 ± 0.9   (not beyond the spread at epoch 32)
  the same command with a 3-epoch model of make_demo_model.py's corpus (not shipped; --model; 1217 s, load 10-15):
    espnet-way  43.3 ± 7.7   18.7 ± 3.6   14.0 ± 2.5
    compose     17.9 ± 1.0   13.6 ± 0.8   12.3 ± 1.0   (not beyond the spread at epoch 32; ratio 0.88)
  so the new model is the better start for compose at every point (beyond both spreads), not for head-drop at 8.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"
SPEECH = ROOT / "zoo" / "assets" / "speech" / "es"
WORK = ROOT / "bench" / ".work" / "transfer_quality"
STARTS = ("scratch", "espnet-way", "mean", "compose")


@dataclass(frozen=True)
class Run:
    start: str
    seed: int
    lr: float
    cer: dict[int, float]  # epoch -> test CER
    seconds: float


def transfer_options(start: str, vocab: str) -> Any:
    from espzoo.transfer.plan import TransferOptions

    if start == "scratch":  # only the (parameter-free) front end and the pretrained normalization stats load
        return TransferOptions(vocab=vocab, excludes=("encoder", "decoder", "ctc"))
    if start == "espnet-way":
        return TransferOptions(vocab=vocab, transplant=False, ignore_init_mismatch=True)
    return TransferOptions(vocab=vocab, new_rows=start)  # type: ignore[arg-type]


def prepare_start(
    start: str, seed: int, vocab: str, dest: Path, model: Path = MODEL
) -> tuple[Path, list[str], dict[str, int]]:
    """espzoo's plan + apply for `start` (init.pth, config.yaml in `dest`); model.pth beside them so that
    espzoo.decode loads it as an experiment dir. Returns (dest, token list, the plan's new-token counts)."""
    from espzoo.transfer.apply import apply_plan
    from espzoo.transfer.plan import plan_transfer

    plan = plan_transfer(str(model), transfer_options(start, vocab), workdir=dest / "vocab")
    result = apply_plan(plan, dest, seed=seed)
    os.link(result.checkpoint, dest / "model.pth")
    return dest, list(plan.vocabulary.tokens), plan.summary()["new_tokens"]


def load_split(data: Path, sample_rate: int) -> list[tuple[str, Any, str]]:
    from espzoo.decode.runner import load_audio

    texts = dict(line.split(" ", 1) for line in (data / "text").read_text(encoding="utf-8").splitlines())
    waves = dict(line.split(" ", 1) for line in (data / "wav.scp").read_text(encoding="utf-8").splitlines())
    return [(u, load_audio(data / waves[u].strip(), sample_rate), texts[u].strip()) for u in sorted(texts)]


def batches(train: list[tuple[str, Any, str]], size: int, rng: random.Random) -> list[list[int]]:
    """Utterances sorted by length, cut into batches of `size`, the batches shuffled (ESPnet's sorted batching)."""
    order = sorted(range(len(train)), key=lambda i: len(train[i][1]))
    cut = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(cut)
    return cut


def test_cer(recognizer: Any, test: list[tuple[str, Any, str]]) -> float:
    from espzoo.decode.scoring import error_rates

    model = recognizer.speech2text.asr_model
    model.eval()
    by_length = sorted(test, key=lambda item: len(item[1]))
    hypotheses: dict[str, str] = {}
    for group in (by_length[i : i + 10] for i in range(0, len(by_length), 10)):  # similar lengths batched
        for (utt, _, _), text in zip(group, recognizer.greedy_ctc([w for _, w, _ in group]), strict=True):
            hypotheses[utt] = text
    return error_rates([t for _, _, t in test], [hypotheses[u] for u, _, _ in test]).cer.rate


def train_start(folder: Path, seed: int, lr: float, args: argparse.Namespace, data: dict[str, Any]) -> Run:
    import torch
    from espnet2.schedulers.warmup_lr import WarmupLR

    from espzoo.decode.recognizer import DecodeOptions, load_recognizer

    started = time.monotonic()
    torch.manual_seed(seed)
    recognizer = load_recognizer(folder, DecodeOptions(decode="ctc-greedy", threads=1, jobs=1))
    model = recognizer.speech2text.asr_model
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    tokenizer, converter = recognizer.speech2text.tokenizer, recognizer.speech2text.converter
    train = data["train"]
    labels = [torch.tensor(converter.tokens2ids(tokenizer.text2tokens(t))) for _, _, t in train]
    steps_per_epoch = -(-len(train) // args.batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = WarmupLR(optimizer, warmup_steps=max(1, int(0.1 * steps_per_epoch * max(args.points))))
    rng = random.Random(seed)
    cer = {}
    for epoch in range(1, max(args.points) + 1):
        model.train()
        for batch in batches(train, args.batch, rng):
            waves = [torch.as_tensor(train[i][1], dtype=torch.float32) for i in batch]
            speech = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
            text = torch.nn.utils.rnn.pad_sequence([labels[i] for i in batch], batch_first=True, padding_value=-1)
            loss, _, _ = model(
                speech, torch.tensor([len(w) for w in waves]), text, torch.tensor([len(labels[i]) for i in batch])
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
        if epoch in args.points:
            cer[epoch] = test_cer(recognizer, data["test"])
    return Run(folder.name, seed, lr, cer, time.monotonic() - started)


def one_seed(job: tuple[int, tuple[str, ...], tuple[float, ...], argparse.Namespace]) -> list[Run]:
    """Every (start, lr) of one seed, in this (worker) process."""
    import torch

    seed, starts, lrs, args = job
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)  # ESPnet's torch.cuda.amp notice, once per step
    from espzoo.models.espnet_env import import_asr_task

    import_asr_task()
    vocab = f"bpe:{args.bpe}:{SPEECH / 'train' / 'text'}"
    data = {"train": load_split(SPEECH / "train", 16000), "test": load_split(args.test, 16000)}
    runs = []
    for start in starts:
        dest, tokens, new = prepare_start(start, seed, vocab, args.work / f"seed{seed}" / start, args.model)
        if start == "compose":
            print(f"  seed {seed}: new tokens' rows {new}", flush=True)
        for lr in lrs if start in ("espnet-way", "compose") else lrs[:1]:
            run = train_start(dest, seed, lr, args, data)
            run = Run(start, seed, lr, run.cer, run.seconds)
            runs.append((run, tuple(tokens)))
            points = "  ".join(f"ep{e} {c:6.1%}" for e, c in run.cer.items())
            print(f"  seed {seed} {start:<10} lr {lr:g}  {points}  ({run.seconds:.0f} s)", flush=True)
    if len({t for _, t in runs}) != 1:
        raise SystemExit("transfer_quality: the starts ended with different token lists; the comparison is void.")
    return [r for r, _ in runs]


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--points", type=int, nargs="+", default=[1, 2, 4, 8], help="epochs at which to test")
    parser.add_argument("--bpe", type=int, default=60, help="units of the new Spanish BPE vocabulary (as the demo)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak lr (the demo's, for this tiny data)")
    parser.add_argument("--lrs", type=float, nargs="*", default=[5e-4, 8e-3],
                        help="further peak lrs for (b) and (d): the sensitivity sweep (none: skip it)")
    parser.add_argument("--batch", type=int, default=8, help="utterances per batch")
    parser.add_argument("--test-size", type=int, default=60, help="synthesized Spanish test utterances")
    parser.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS),
                        help="the starts to train (espnet-way and compose are always among them)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained in parallel (one thread each)")
    parser.add_argument("--work", type=Path, default=WORK, help="where the work files go (replaced whole)")
    parser.add_argument("--keep", action="store_true", help="keep the work files")
    parser.add_argument("--model", type=Path, default=MODEL, help="the pretrained English model (a hub repo dir)")
    args = parser.parse_args()
    args.points = sorted(set(args.points))
    starts = tuple(s for s in STARTS if s in {*args.starts, "espnet-way", "compose"})

    started = time.monotonic()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_speech

    if shutil.which("espeak-ng") is None:
        sys.exit("transfer_quality: espeak-ng is not installed; it makes the test set (apt-get install espeak-ng).")
    args.test = make_speech.write_extra(make_speech.SPANISH, args.test_size, args.work / "test")
    lrs = (args.lr, *[lr for lr in args.lrs if lr != args.lr])
    print(f"{len(args.seeds)} seeds, test at epochs {args.points}, lr {args.lr:g} (sweep {list(lrs[1:])} for "
          f"espnet-way and compose), batch {args.batch}, vocab bpe:{args.bpe}; test set {args.test_size} "
          f"synthesized Spanish utterances; {args.model}", flush=True)
    jobs = [(seed, starts, lrs, args) for seed in args.seeds]
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            runs = list(itertools.chain.from_iterable(pool.map(one_seed, jobs, chunksize=1)))
    else:
        runs = list(itertools.chain.from_iterable(map(one_seed, jobs)))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)

    print(f"\ntest CER (greedy CTC, {args.test_size} utterances), mean ± sd over {len(args.seeds)} seeds, "
          f"lr {args.lr:g}:")
    print(f"  {'start':<11}" + "".join(f"{'epoch ' + str(e):>17}" for e in args.points))
    at = {s: {e: spread([r.cer[e] for r in runs if r.start == s and r.lr == args.lr]) for e in args.points}
          for s in starts}
    for start in starts:
        print(f"  {start:<11}" + "".join(f"{m:>10.1%} ± {sd:4.1%}" for m, sd in at[start].values()))
    if len(lrs) > 1:
        last = args.points[-1]
        print(f"\nlearning-rate sensitivity, test CER at epoch {last}, mean ± sd:")
        for start in ("espnet-way", "compose"):
            cells = [spread([r.cer[last] for r in runs if r.start == start and r.lr == lr]) for lr in sorted(lrs)]
            print(f"  {start:<11}" + "".join(f"  lr {lr:g}: {m:.1%} ± {sd:.1%}" for lr, (m, sd) in
                                              zip(sorted(lrs), cells, strict=True)))
        wins = [lr for lr in sorted(lrs) if _beyond(runs, lr, last)]
        print(f"  compose < espnet-way beyond the spread at lr {wins or 'none'} of {sorted(lrs)}")
    print(f"\nbench wall time {time.monotonic() - started:.0f} s")
    last = args.points[-1]
    (b, b_sd), (d, d_sd) = at["espnet-way"][last], at["compose"][last]
    verdict = "yes" if _beyond(runs, args.lr, last) else "no"
    print(f"compose < espnet-way at epoch {last} beyond the spread: {verdict} "
          f"({d:.1%} ± {d_sd:.1%} vs {b:.1%} ± {b_sd:.1%}; ratio {d / b:.2f}x)")
    return 0


def _beyond(runs: list[Run], lr: float, epoch: int) -> bool:
    """(d) < (b) by more than the larger of their standard deviations over seeds."""
    b, b_sd = spread([r.cer[epoch] for r in runs if r.start == "espnet-way" and r.lr == lr])
    d, d_sd = spread([r.cer[epoch] for r in runs if r.start == "compose" and r.lr == lr])
    return b - d > max(b_sd, d_sd)


if __name__ == "__main__":
    sys.exit(main())
