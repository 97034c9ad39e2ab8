"""What an LM trained by `espzoo lm train` buys, and what it costs in decoding time.

    python bench/lm.py [--out EXP_DIR] [--data DIR] [--weights 0,0.1,0.3,0.5] [--repeat 3] [--epochs 12]

Without --out it first fine-tunes the shipped English char model on the shipped Spanish speech for --epochs epochs
(an under-trained model, as a user with little data has; about a minute) and trains an LM on the Spanish training
text with `espzoo lm train` (ESPnet's LM task, on the fine-tune's own BPE tokens). Then, in this process, with the
model loaded once per setting and the same beam: WER/CER on --data (the Spanish test set) without the LM and at each
weight, and the decode time of the whole set, median of --repeat runs, with the LM (weight 0.3, or the first
non-zero weight) against without. The ratio (with LM / without) is printed last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PRETRAINED = ROOT / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"
SPEECH = ROOT / "zoo" / "assets" / "speech" / "es"


def espzoo(*args: str) -> None:
    done = subprocess.run([str(BIN / "espzoo"), *args], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"espzoo {' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")


def prepare(out: Path, epochs: int) -> Path:
    espzoo("finetune", str(PRETRAINED), "--train", str(SPEECH / "train"), "--valid", str(SPEECH / "dev"),
           "--vocab", "bpe:60", "--max-epoch", str(epochs), "--lr", "8e-3", "--batch-bins", "200000",
           "--out", str(out))
    espzoo("lm", "train", str(out), "--text", str(SPEECH / "train" / "text"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="an experiment dir with OUT/lm (default: made here)")
    parser.add_argument("--data", type=Path, default=SPEECH / "test")
    parser.add_argument("--weights", default="0,0.1,0.3,0.5")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--beam", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("ESPZOO_HOME", tempfile.mkdtemp(prefix="espzoo-bench-home-"))

    from espzoo.decode.recognizer import DecodeOptions, load_recognizer
    from espzoo.decode.report import evaluate
    from espzoo.models.lm import parse_weights

    with tempfile.TemporaryDirectory(prefix="espzoo-bench-lm-") as tmp:
        out = args.out or prepare(Path(tmp) / "exp", args.epochs)
        weights = parse_weights(args.weights)
        print(f"model {out}, data {args.data}, beam {args.beam}")
        print(f"{'LM weight':>10} {'WER %':>7} {'CER %':>7}")
        for weight in weights:
            options = DecodeOptions(beam_size=args.beam, jobs=1, lm="none" if weight == 0 else None,
                                    lm_weight=None if weight == 0 else weight)
            report = evaluate(load_recognizer(out, options), args.data, Path(tmp) / f"w{weight:g}")
            print(f"{weight:>10g} {100 * report.wer.rate:>7.2f} {100 * report.cer.rate:>7.2f}")

        timed_weight = 0.3 if 0.3 in weights else next((w for w in weights if w > 0), 0.3)
        times = {}
        for name, options in (("without", DecodeOptions(beam_size=args.beam, jobs=1, lm="none")),
                              ("with", DecodeOptions(beam_size=args.beam, jobs=1, lm_weight=timed_weight))):
            recognizer = load_recognizer(out, options)
            runs = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                evaluate(recognizer, args.data, Path(tmp) / f"t_{name}")
                runs.append(time.perf_counter() - start)
            times[name] = statistics.median(runs)
            print(f"decode {name} LM: {times[name]:.2f} s (median of {args.repeat})")
    print(f"decode time with LM (weight {timed_weight:g}) / without: {times['with'] / times['without']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
