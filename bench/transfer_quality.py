"""Does the pretrained model help a new vocabulary, and do composed rows help more? Test CER at equal steps.

    nice .venv/bin/python bench/transfer_quality.py                      # 4 starts x 5 seeds, lr sensitivity
    nice .venv/bin/python bench/transfer_quality.py --seeds 0 1 2 --points 1 2 4 --lrs    # smaller, no lr sweep
    nice .venv/bin/python bench/transfer_quality.py --starts espnet-way compose --points 8 16 32 --lr 8e-3 --lrs
    nice .venv/bin/python bench/transfer_quality.py --variants parts --points 32 64 --lr 8e-3 --lrs   # issue 26

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

The recipe's parts (issue 26), each alone on the compose start and all together (`--variants parts` names them
with espnet-way and compose; or list them): compose+speed (the training set speed-perturbed 0.9/1.0/1.1 by
espzoo.data.augment, as asr.sh does: an epoch is then three times the utterances), compose+specaug (ESPnet's SpecAug
that espzoo.train.augment writes into the config; the demo model's config has none), compose+warmup (the first
--warmup-frozen epochs with espzoo.train.schedule's frozen body, then a fresh optimizer and warmup for the rest, as
the second ESPnet run of `finetune --warmup-frozen` has), compose+lrdecay (Adam's parameter groups at the rates
schedule.lr_scales gives, --lr-decay), compose+all. Noise is not benched (no noise recordings ship). --train-extra N
adds N synthesized Spanish training utterances (sentences after the test set's: none repeats) to the 90 committed.

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
Measured 2026-12-08 (issue 26) at small scale only, on 2 shared cores (load 6-9): not convergence numbers, and the
speed variants see 3x the steps per epoch. --variants parts --seeds 0 1 --points 4 8 --lrs --lr 8e-3
--warmup-frozen 2 (546 s; seed 0's espnet-way and compose equal main's bench to the digit):
    espnet-way       79.3 ± 14.9   43.7 ± 6.1        compose+specaug  42.6 ± 3.4   27.1 ± 1.9
    compose          32.3 ± 0.6    22.4 ± 0.6        compose+warmup   41.7 ± 0.4   22.7 ± 0.5
    compose+speed    13.3 ± 0.7     8.6 ± 1.0        compose+lrdecay  32.9 ± 1.7   24.1 ± 0.6
    compose+all      30.9 ± 1.5    10.0 ± 1.0
  The convergence comparison (5 seeds, --points 32 64) that must choose finetune's defaults has not been run.
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
PARTS = ("speed", "specaug", "warmup", "lrdecay")
# variant -> (start, recipe parts): the starts alone, then the recipe's parts on espzoo's default start
VARIANTS = {**{s: (s, ()) for s in STARTS}, **{f"compose+{p}": ("compose", (p,)) for p in PARTS},
            "compose+all": ("compose", PARTS)}
PARTS_SET = ("espnet-way", "compose", *[v for v in VARIANTS if v.startswith("compose+")])  # --variants parts


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
    start: str, seed: int, vocab: str, dest: Path, model: Path = MODEL, parts: tuple[str, ...] = ()
) -> tuple[Path, list[str], dict[str, int], Any]:
    """espzoo's plan + apply for `start` (init.pth, config.yaml in `dest`); model.pth beside them so that
    espzoo.decode loads it as an experiment dir; with "specaug" in `parts`, the config gets the SpecAug that
    `finetune --augment specaug` writes. Returns (dest, token list, the plan's new-token counts, the plan)."""
    from espzoo.train.augment import AugmentOptions, augment_config
    from espzoo.transfer.apply import apply_plan
    from espzoo.transfer.plan import plan_transfer
    from espzoo.utils.yaml_io import dump_yaml, load_yaml

    plan = plan_transfer(str(model), transfer_options(start, vocab), workdir=dest / "vocab")
    result = apply_plan(plan, dest, seed=seed)
    os.link(result.checkpoint, dest / "model.pth")
    if "specaug" in parts:
        config, _ = augment_config(load_yaml(result.config.read_text(encoding="utf-8")), AugmentOptions(specaug=True))
        result.config.write_text(dump_yaml(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return dest, list(plan.vocabulary.tokens), plan.summary()["new_tokens"], plan


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


def optimizer_for(model: Any, lr: float, parts: tuple[str, ...], decay: float, steps: int) -> tuple[Any, Any]:
    """Adam (with --lr-decay's parameter groups for "lrdecay", as ESPnet builds them from espzoo's factors) and
    ESPnet's WarmupLR over `steps` steps (warmup 10%, espzoo's default)."""
    import torch
    from espnet2.schedulers.warmup_lr import WarmupLR

    from espzoo.train.schedule import lr_scales

    named = list(model.named_parameters())
    scales = lr_scales([n for n, _ in named], decay) if "lrdecay" in parts else {}
    groups: dict[float, list[Any]] = {}
    for name, parameter in named:
        groups.setdefault(scales.get(name, 1.0), []).append(parameter)
    optimizer = torch.optim.Adam([{"params": p, "lr": lr * s} for s, p in sorted(groups.items())], lr=lr)
    return optimizer, WarmupLR(optimizer, warmup_steps=max(1, int(0.1 * steps)))


def set_frozen(model: Any, modules: list[str], frozen: bool) -> None:
    """ESPnet's freeze_param (a parameter under a listed module stops training), or all of it training again."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not (frozen and any(name == m or name.startswith(m + ".") for m in modules)))


def train_start(folder: Path, seed: int, lr: float, args: argparse.Namespace, data: dict[str, Any],
                parts: tuple[str, ...] = (), plan: Any = None) -> Run:
    import torch

    from espzoo.decode.recognizer import DecodeOptions, load_recognizer
    from espzoo.train.schedule import frozen_body

    started = time.monotonic()
    torch.manual_seed(seed)
    recognizer = load_recognizer(folder, DecodeOptions(decode="ctc-greedy", threads=1, jobs=1))
    model = recognizer.speech2text.asr_model
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    tokenizer, converter = recognizer.speech2text.tokenizer, recognizer.speech2text.converter
    train = data["train_sp" if "speed" in parts else "train"]
    labels = [torch.tensor(converter.tokens2ids(tokenizer.text2tokens(t))) for _, _, t in train]
    steps_per_epoch = -(-len(train) // args.batch)
    epochs = max(args.points)
    warm = min(args.warmup_frozen, epochs - 1) if "warmup" in parts else 0
    body = frozen_body(plan) if warm else []
    set_frozen(model, body, bool(warm))
    # Two ESPnet runs with --warmup-frozen: the frozen one, then a fresh optimizer and warmup for the rest.
    optimizer, scheduler = optimizer_for(model, lr, parts, args.lr_decay, steps_per_epoch * (warm or epochs))
    rng = random.Random(seed)
    cer = {}
    for epoch in range(1, epochs + 1):
        if warm and epoch == warm + 1:
            set_frozen(model, body, False)
            optimizer, scheduler = optimizer_for(model, lr, parts, args.lr_decay, steps_per_epoch * (epochs - warm))
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
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 5.0)
            optimizer.step()
            scheduler.step()
        if epoch in args.points:
            cer[epoch] = test_cer(recognizer, data["test"])
    return Run(folder.name, seed, lr, cer, time.monotonic() - started)


def one_seed(job: tuple[int, tuple[str, ...], tuple[float, ...], argparse.Namespace]) -> list[Run]:
    """Every (variant, lr) of one seed, in this (worker) process."""
    import torch

    seed, variants, lrs, args = job
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)  # ESPnet's torch.cuda.amp notice, once per step
    from espzoo.models.espnet_env import import_asr_task

    import_asr_task()
    vocab = f"bpe:{args.bpe}:{SPEECH / 'train' / 'text'}"
    data = {"train": load_split(args.train, 16000), "test": load_split(args.test, 16000)}
    if args.train_sp is not None:
        data["train_sp"] = load_split(args.train_sp, 16000)
    runs = []
    for variant in variants:
        start, parts = VARIANTS[variant]
        dest, tokens, new, plan = prepare_start(start, seed, vocab, args.work / f"seed{seed}" / variant, args.model,
                                                parts)
        if variant == "compose":
            print(f"  seed {seed}: new tokens' rows {new}", flush=True)
        for lr in lrs if variant in ("espnet-way", "compose") else lrs[:1]:
            run = train_start(dest, seed, lr, args, data, parts, plan)
            run = Run(variant, seed, lr, run.cer, run.seconds)
            runs.append((run, tuple(tokens)))
            points = "  ".join(f"ep{e} {c:6.1%}" for e, c in run.cer.items())
            print(f"  seed {seed} {variant:<15} lr {lr:g}  {points}  ({run.seconds:.0f} s)", flush=True)
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
    parser.add_argument("--train-extra", type=int, default=0,
                        help="synthesized Spanish training utterances added to the 90 committed ones")
    parser.add_argument("--starts", "--variants", dest="variants", nargs="+", choices=[*VARIANTS, "parts"],
                        default=list(STARTS), help="the variants to train (espnet-way and compose are always among "
                        "them); `parts`: espnet-way, compose and each recipe part on compose, alone and together")
    parser.add_argument("--warmup-frozen", type=int, default=2, help="frozen warm-up epochs of compose+warmup/all")
    parser.add_argument("--lr-decay", type=float, default=0.9, help="the decay of compose+lrdecay/all")
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained in parallel (one thread each)")
    parser.add_argument("--work", type=Path, default=WORK, help="where the work files go (replaced whole)")
    parser.add_argument("--keep", action="store_true", help="keep the work files")
    parser.add_argument("--model", type=Path, default=MODEL, help="the pretrained English model (a hub repo dir)")
    args = parser.parse_args()
    args.points = sorted(set(args.points))
    asked = set(PARTS_SET if "parts" in args.variants else ()) | set(args.variants) | {"espnet-way", "compose"}
    variants = tuple(v for v in VARIANTS if v in asked)

    started = time.monotonic()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_speech

    if shutil.which("espeak-ng") is None:
        sys.exit("transfer_quality: espeak-ng is not installed; it makes the test set (apt-get install espeak-ng).")
    extra = make_speech.write_extra(make_speech.SPANISH, args.test_size + args.train_extra, args.work / "extra")
    args.test, args.train = split_extra(extra, args.test_size, args.work)
    args.train_sp = None
    if any("speed" in VARIANTS[v][1] for v in variants):  # espzoo's own data prep and speed perturbation
        from espzoo.data.augment import speed_perturb
        from espzoo.data.convert import prepare

        prepared = prepare(args.train, args.work / "data" / "train", sample_rate=16000)
        args.train_sp = speed_perturb(prepared, (0.9, 1.0, 1.1), args.work / "data" / "train_sp",
                                      args.work / "data" / "audio").dir
    lrs = (args.lr, *[lr for lr in args.lrs if lr != args.lr])
    print(f"{len(args.seeds)} seeds, test at epochs {args.points}, lr {args.lr:g} (sweep {list(lrs[1:])} for "
          f"espnet-way and compose), batch {args.batch}, vocab bpe:{args.bpe}; train {90 + args.train_extra} "
          f"utterances, test {args.test_size} synthesized Spanish utterances; --warmup-frozen {args.warmup_frozen}, "
          f"--lr-decay {args.lr_decay:g}; {args.model}", flush=True)
    jobs = [(seed, variants, lrs, args) for seed in args.seeds]
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
    print(f"  {'variant':<16}" + "".join(f"{'epoch ' + str(e):>17}" for e in args.points))
    at = {v: {e: spread([r.cer[e] for r in runs if r.start == v and r.lr == args.lr]) for e in args.points}
          for v in variants}
    for variant in variants:
        print(f"  {variant:<16}" + "".join(f"{m:>10.1%} ± {sd:4.1%}" for m, sd in at[variant].values()))
    if any("speed" in VARIANTS[v][1] for v in variants):
        print("  (speed variants: an epoch is the perturbed set, 3x the utterances and steps, as in asr.sh)")
    last = args.points[-1]
    if len(lrs) > 1:
        print(f"\nlearning-rate sensitivity, test CER at epoch {last}, mean ± sd:")
        for start in ("espnet-way", "compose"):
            cells = [spread([r.cer[last] for r in runs if r.start == start and r.lr == lr]) for lr in sorted(lrs)]
            print(f"  {start:<11}" + "".join(f"  lr {lr:g}: {m:.1%} ± {sd:.1%}" for lr, (m, sd) in
                                              zip(sorted(lrs), cells, strict=True)))
        wins = [lr for lr in sorted(lrs) if _beyond(runs, lr, last) is True]
        print(f"  compose < espnet-way beyond the spread at lr {wins or 'none'} of {sorted(lrs)}")
    b, b_sd = at["espnet-way"][last]
    print(f"\nagainst ESPnet's way (espnet-way, {b:.1%} ± {b_sd:.1%}) at epoch {last}, lr {args.lr:g}:")
    for variant in variants:
        if variant != "espnet-way":
            m, sd = at[variant][last]
            beyond = {True: "beyond the spread", False: "within the spread", None: "no spread with one seed"}[
                _beyond(runs, args.lr, last, variant)]
            print(f"  {variant:<16} {m:6.1%} ± {sd:4.1%}  ratio {m / b:.2f}x  {beyond}")
    print(f"\nbench wall time {time.monotonic() - started:.0f} s")
    (d, d_sd) = at["compose"][last]
    verdict = {True: "yes", False: "no", None: "undecided (one seed: no spread)"}[_beyond(runs, args.lr, last)]
    goal = "met" if d / b <= 0.85 and verdict == "yes" else "not met"
    print(f"espzoo's default (compose, no augmentation, no schedule) < espnet-way at epoch {last} beyond the spread: "
          f"{verdict} ({d:.1%} ± {d_sd:.1%} vs {b:.1%} ± {b_sd:.1%}; ratio {d / b:.2f}x; goal <= 0.85x: {goal})")
    return 0


def split_extra(extra: Path, test_size: int, work: Path) -> tuple[Path, Path]:
    """The synthesized utterances: the first `test_size` are the test set, the rest join the committed training set
    (absolute audio paths, Kaldi order)."""
    def rows(folder: Path, name: str) -> list[tuple[str, str]]:
        return [tuple(line.split(" ", 1)) for line in (folder / name).read_text(encoding="utf-8").splitlines() if line]

    ids = sorted((u for u, _ in rows(extra, "text")), key=lambda u: int(u[-4:]))  # in the order they were made
    test_ids, more = set(ids[:test_size]), set(ids[test_size:])
    test, train = work / "test", work / "train"
    for dest, parts in ((test, [(extra, test_ids)]), (train, [(SPEECH / "train", None), (extra, more)])):
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("wav.scp", "text", "utt2spk"):
            lines = []
            for folder, keep in parts:
                for utt, value in rows(folder, name):
                    if keep is None or utt in keep:
                        value = str((folder / value.strip()).resolve()) if name == "wav.scp" else value.strip()
                        lines.append(f"{utt} {value}\n")
            (dest / name).write_text("".join(sorted(lines)), encoding="utf-8")
    return test, train


def _beyond(runs: list[Run], lr: float, epoch: int, variant: str = "compose") -> bool | None:
    """`variant` < espnet-way by more than the larger of their standard deviations over seeds (None: one seed)."""
    ours = [r.cer[epoch] for r in runs if r.start == variant and r.lr == lr]
    if len(ours) < 2:
        return None
    b, b_sd = spread([r.cer[epoch] for r in runs if r.start == "espnet-way" and r.lr == lr])
    d, d_sd = spread(ours)
    return b - d > max(b_sd, d_sd)


if __name__ == "__main__":
    sys.exit(main())
