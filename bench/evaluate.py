"""Time `espzoo evaluate` against ESPnet's own decoding program on the same model, data and beam.

    python bench/evaluate.py [--model DIR] [--data DIR] [--beam 4] [--repeat 1]

Both run as fresh processes (what a user waits for: imports, model build, decoding): espzoo's command, and
`python -m espnet2.bin.asr_inference` run from the model's folder with the config and checkpoint meta.yaml
names, the same beam and the same CTC weight (the model's). Defaults: the shipped demo model and the English
test set. Prints each side's time and whether the transcripts agree, then the ratio (espzoo / ESPnet) last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_MODEL = ROOT / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"
DEFAULT_DATA = ROOT / "zoo" / "assets" / "speech" / "en" / "test"


def timed(cmd: list[str], **kwargs: object) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a hub-layout model folder with meta.yaml")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a Kaldi data dir at the model's rate")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from espzoo._espnet import espnet_env

    meta = yaml.safe_load((args.model / "meta.yaml").read_text())
    config_rel, model_rel = meta["yaml_files"]["asr_train_config"], meta["files"]["asr_model_file"]
    config = yaml.safe_load((args.model / config_rel).read_text())
    ctc_weight = float((config.get("model_conf") or {}).get("ctc_weight", 0.5))
    env = espnet_env()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # ESPnet reads wav.scp paths from its working dir: give it absolute ones.
        wav_scp = work / "wav.scp"
        wav_scp.write_text("".join(
            f"{utt} {(args.data / path).resolve()}\n"
            for utt, path in (line.split(maxsplit=1) for line in (args.data / "wav.scp").read_text().splitlines())
        ))
        ours_times, theirs_times = [], []
        for run in range(args.repeat):
            seconds, done = timed(
                [str(BIN / "espzoo"), "evaluate", str(args.model), "--data", str(args.data), "--json", "--rows",
                 "--beam", str(args.beam), "--out-dir", str(work / f"ours{run}")], env=env,
            )
            ours_times.append(seconds)
            report = json.loads(done.stdout)
            seconds, _ = timed(
                [sys.executable, "-m", "espnet2.bin.asr_inference", "--ngpu", "0",
                 "--output_dir", str(work / f"espnet{run}"),
                 "--data_path_and_name_and_type", f"{wav_scp},speech,sound",
                 "--asr_train_config", config_rel, "--asr_model_file", model_rel,
                 "--beam_size", str(args.beam), "--ctc_weight", str(ctc_weight)],
                cwd=args.model, env=env,
            )
            theirs_times.append(seconds)
        theirs_text = dict(
            (line.split(maxsplit=1) + [""])[:2]
            for line in (work / "espnet0" / "1best_recog" / "text").read_text(encoding="utf-8").splitlines()
        )
        same = sum(row["hypothesis"] == theirs_text.get(row["id"]) for row in report["rows"])
    ours, theirs = statistics.median(ours_times), statistics.median(theirs_times)
    print(f"model {args.model.name}, {report['utterances']} utterances, {report['audio_seconds']:.1f} s of audio, "
          f"beam {args.beam}, ctc weight {ctc_weight:g}")
    print(f"espzoo evaluate: {ours:.2f} s (WER {100 * report['wer']:.1f}%, CER {100 * report['cer']:.1f}%)")
    print(f"espnet2.bin.asr_inference: {theirs:.2f} s")
    print(f"identical transcripts: {same}/{report['utterances']}")
    print(f"espzoo evaluate / ESPnet asr_inference time ratio: {ours / theirs:.3f} (goal <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
