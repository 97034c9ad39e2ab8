"""Does transplanting shared-token rows help? Test CER after equal training from three starts, in one run.

    .venv/bin/python bench/transfer_quality.py [--epochs 8] [--seeds 0 1 2] [--bpe 60] [--keep]

The demo's task: the tiny English char conformer shipped in zoo/assets/pretrained (espzoo-demo/tiny-en-char)
learns Spanish (zoo/assets/speech/es: 90 train, 15 dev, 15 test utterances) with a new Spanish BPE vocabulary.
Three starts, each trained by ESPnet with the identical TrainOptions (epochs, lr, batch bins, warmup, seed,
5-best averaging) and the identical vocabulary (`bpe:N` trained on the train transcripts; the token lists are
checked equal), then decoded on the test set with the same DecodeOptions:

  (a) scratch     the same architecture and vocabulary, no init checkpoint at all (`trainer.run` with
                  init_checkpoint=None: ESPnet's own random initialization, seeded).
  (b) espnet-way  ESPnet's `--init_param pretrained.pth --ignore_init_mismatch true`: everything loads except
                  the vocabulary-sized tensors (ctc.ctc_lo.*, decoder.embed.0.weight, decoder.output_layer.*),
                  which are dropped and keep the new model's random init. Planned with
                  TransferOptions(transplant=False, ignore_init_mismatch=True), which tests/test_transfer.py
                  checks is bit for bit what ESPnet's own loader gives.
  (c) espzoo      the default fine-tune: as (b), but every token both vocabularies share keeps its pretrained
                  row in those tensors (new tokens start at the mean row).

Feature normalization is the same for all three: the pretrained model's GlobalMVN statistics (espzoo's default
`stats="pretrained"`; (b) loads them as ESPnet's init_param does; (a) is given the same stats file), so only
the initial weights differ. Printed last: the mean CER/WER of each start over the seeds, and whether c < b < a.
Everything goes under bench/.work/transfer_quality/ (removed at the end unless --keep).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from espzoo.evaluate import DecodeOptions, evaluate
from espzoo.finetune import FinetuneRequest, finetune, prepare_finetune
from espzoo.trainer import TrainOptions, run
from espzoo.transfer import TransferOptions

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"
SPEECH = ROOT / "zoo" / "assets" / "speech" / "es"
WORK = ROOT / "bench" / ".work" / "transfer_quality"
CONDITIONS = ("scratch", "espnet-way", "espzoo")


@dataclass(frozen=True)
class Outcome:
    condition: str
    seed: int
    cer: float
    wer: float
    train_seconds: float
    tokens: tuple[str, ...]
    loaded: str  # what the init gave, from the plan


def transfer_options(condition: str, vocab: str) -> TransferOptions:
    if condition == "espnet-way":
        return TransferOptions(vocab=vocab, transplant=False, ignore_init_mismatch=True)
    return TransferOptions(vocab=vocab)  # espzoo's default; scratch only borrows its vocabulary and stats


def train_one(condition: str, seed: int, vocab: str, options: TrainOptions, out: Path) -> Outcome:
    request = FinetuneRequest(
        model=str(MODEL), train=SPEECH / "train", valid=SPEECH / "dev", out=out,
        transfer=transfer_options(condition, vocab), training=options, command=[f"bench/transfer_quality {condition}"],
    )
    started = time.monotonic()
    if condition == "scratch":
        # The same data preparation, vocabulary and stats as the others; the init checkpoint it writes is unused.
        prepared = prepare_finetune(request)
        run(
            prepared.config, vocabulary=prepared.plan.vocabulary, init_checkpoint=None,
            stats_file=(prepared.config.get("normalize_conf") or {}).get("stats_file"),
            train=prepared.train, valid=prepared.valid, out=out, options=options,
            provenance={"source": {"model": "none (from scratch)"}},
        )
        loaded = "nothing (random init)"
    else:
        finetune(request)
        loaded = _plan_line(out / "plan.json")
    seconds = time.monotonic() - started
    report = evaluate(out, SPEECH / "test", out / "eval_test", options=DecodeOptions())
    tokens = tuple((out / "tokens.txt").read_text(encoding="utf-8").split("\n"))
    return Outcome(condition, seed, report.cer.rate, report.wer.rate, seconds, tokens, loaded)


def _plan_line(path: Path) -> str:
    import json

    summary = json.loads(path.read_text(encoding="utf-8"))["summary"]
    parts = [f"{a} {v['tensors']}" for a, v in summary["actions"].items()]
    vocab = summary.get("vocabulary") or {}
    shared = f", {vocab.get('shared_tokens')}/{vocab.get('size')} tokens shared" if vocab else ""
    return "tensors: " + ", ".join(parts) + shared


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bpe", type=int, default=60, help="units of the new Spanish BPE vocabulary (as the demo)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak lr (the demo's, for this tiny data)")
    parser.add_argument("--batch-bins", type=int, default=200_000, help="the demo's, for this tiny data")
    parser.add_argument("--keep", action="store_true", help="keep bench/.work/transfer_quality")
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    vocab = f"bpe:{args.bpe}:{SPEECH / 'train' / 'text'}"
    outcomes: list[Outcome] = []
    started = time.monotonic()
    print(f"{args.epochs} epochs, lr {args.lr:g}, batch_bins {args.batch_bins}, vocab bpe:{args.bpe}, "
          f"seeds {args.seeds}; model {MODEL.relative_to(ROOT)}, data {SPEECH.relative_to(ROOT)}", flush=True)
    for seed in args.seeds:
        options = TrainOptions(max_epoch=args.epochs, lr=args.lr, batch_bins=args.batch_bins, seed=seed)
        for condition in CONDITIONS:
            outcome = train_one(condition, seed, vocab, options, WORK / f"seed{seed}" / condition)
            outcomes.append(outcome)
            print(f"  seed {seed} {condition:<10}  CER {outcome.cer:6.1%}  WER {outcome.wer:6.1%}  "
                  f"train {outcome.train_seconds:5.1f} s  init: {outcome.loaded}", flush=True)
    if len({o.tokens for o in outcomes}) != 1:
        sys.exit("transfer_quality: the three starts ended with different token lists; the comparison is void.")

    mean = {
        c: (statistics.mean(o.cer for o in outcomes if o.condition == c),
            statistics.mean(o.wer for o in outcomes if o.condition == c))
        for c in CONDITIONS
    }
    (a_cer, a_wer), (b_cer, b_wer), (c_cer, c_wer) = (mean[c] for c in CONDITIONS)
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    seconds = time.monotonic() - started
    print(f"\ntest set es/test, mean of {len(args.seeds)} seed(s); bench time {seconds:.0f} s")
    for condition in CONDITIONS:  # the spread over seeds: a 15-utterance test set is noisy
        cers = [o.cer for o in outcomes if o.condition == condition]
        print(f"  {condition:<10}  CER {mean[condition][0]:6.1%}  (seeds: {min(cers):.1%} .. {max(cers):.1%})")
    print(f"WER scratch / espnet-way / espzoo: {a_wer:.1%} / {b_wer:.1%} / {c_wer:.1%}")
    print(f"CER scratch / espnet-way / espzoo: {a_cer:.1%} / {b_cer:.1%} / {c_cer:.1%}")
    print(f"CER ratio espzoo / espnet-way: {c_cer / b_cer:.2f}x; espnet-way / scratch: {b_cer / a_cer:.2f}x")
    holds = c_cer < b_cer < a_cer
    print(f"c < b < a (espzoo < espnet-way < scratch): {'yes' if holds else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
