"""Time `espzoo evaluate` against ESPnet's own decoding program on the same model, data and beam.

    python bench/evaluate.py [--model DIR] [--data DIR] [--beam 4] [--repeat 1] [--device cpu|cuda]

Three programs run as fresh processes, interleaved (what a user waits for: imports, model build, decoding):
`espzoo evaluate --jobs 1`, `espzoo evaluate --jobs 2`, and `python -m espnet2.bin.asr_inference` run from
the model's folder with the config and checkpoint meta.yaml names, the same beam and the same CTC weight
(the model's). Then, in this process, greedy CTC two ways on the same model: each utterance alone (a batch
of one, ESPnet's encoder and `ctc.argmax`) and espzoo's padded batches (`--decode ctc-greedy`), with how
many transcripts differ, with and without espzoo's padding guards. With `--device cuda` everything runs on
the GPU (where none is visible this says so and measures nothing: a GPU figure only comes from a GPU).
Defaults: the shipped demo model and the English train set (130 utterances). The ratio
(espzoo's faster job count / ESPnet) is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
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
DEFAULT_DATA = ROOT / "zoo" / "assets" / "speech" / "en" / "train"


def timed(cmd: list[str], **kwargs: object) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done


def greedy_ctc_comparison(model: Path, data: Path, device: str) -> dict[str, float | int]:
    """Greedy CTC of each utterance alone vs padded batches (guards on and off), in this process."""
    import itertools

    import torch

    from espzoo.decode.recognizer import DecodeOptions, load_recognizer
    from espzoo.decode.runner import decode, load_audio, prepared_utterances

    recognizer = load_recognizer(model, DecodeOptions(decode="ctc-greedy", device=device))
    asr = recognizer.speech2text.asr_model
    special = (asr.blank_id, asr.sos, asr.eos)
    with prepared_utterances(data, recognizer.sample_rate) as items:
        waves = [load_audio(u.audio, recognizer.sample_rate) for u in items]
        start = time.perf_counter()
        alone = []
        with torch.inference_mode():
            for wave in waves:  # ESPnet's own path, a batch of one: no padding at all
                speech = torch.as_tensor(wave)[None].to(device)
                encoded, _ = asr.encode(speech, torch.tensor([speech.size(1)], device=device))
                best = asr.ctc.argmax(encoded)[0].tolist()
                tokens = recognizer.speech2text.converter.ids2tokens(
                    [t for t, _ in itertools.groupby(best) if t not in special]
                )
                alone.append(recognizer.speech2text.tokenizer.tokens2text(tokens))
        alone_s = time.perf_counter() - start
        start = time.perf_counter()
        batched = decode(recognizer, items)
        batched_s = time.perf_counter() - start
        unguarded = load_recognizer(model, DecodeOptions(decode="ctc-greedy", device=device, pad_guards=False))
        raw = decode(unguarded, items)
    return {
        "utterances": len(waves),
        "alone_s": alone_s,
        "batched_s": batched_s,
        "same_guarded": sum(a == b for a, b in zip(alone, batched, strict=True)),
        "same_unguarded": sum(a == b for a, b in zip(alone, raw, strict=True)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a hub-layout model folder with meta.yaml")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a Kaldi data dir at the model's rate")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from espzoo.models.espnet_env import espnet_env

    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            print(f"--device {args.device}: no GPU is visible on this machine; no GPU figure was measured.")
            return 2
    meta = yaml.safe_load((args.model / "meta.yaml").read_text())
    config_rel, model_rel = meta["yaml_files"]["asr_train_config"], meta["files"]["asr_model_file"]
    config = yaml.safe_load((args.model / config_rel).read_text())
    ctc_weight = float((config.get("model_conf") or {}).get("ctc_weight", 0.5))
    env = espnet_env()
    ngpu = "0" if args.device == "cpu" else "1"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # ESPnet reads wav.scp paths from its working dir: give it absolute ones.
        wav_scp = work / "wav.scp"
        wav_scp.write_text("".join(
            f"{utt} {(args.data / path).resolve()}\n"
            for utt, path in (line.split(maxsplit=1) for line in (args.data / "wav.scp").read_text().splitlines())
        ))
        times: dict[str, list[float]] = {"jobs1": [], "jobs2": [], "espnet": []}
        reports: dict[str, dict] = {}
        for run in range(args.repeat):
            for jobs in (1, 2):  # interleaved with ESPnet's run below, so that load changes hit all sides
                seconds, done = timed(
                    [str(BIN / "espzoo"), "evaluate", str(args.model), "--data", str(args.data), "--json", "--rows",
                     "--beam", str(args.beam), "--decode", "beam", "--jobs", str(jobs), "--device", args.device,
                     "--out-dir", str(work / f"ours{jobs}_{run}")], env=env,
                )
                times[f"jobs{jobs}"].append(seconds)
                reports[f"jobs{jobs}"] = json.loads(done.stdout)
            seconds, _ = timed(
                [sys.executable, "-m", "espnet2.bin.asr_inference", "--ngpu", ngpu,
                 "--output_dir", str(work / f"espnet{run}"),
                 "--data_path_and_name_and_type", f"{wav_scp},speech,sound",
                 "--asr_train_config", config_rel, "--asr_model_file", model_rel,
                 "--beam_size", str(args.beam), "--ctc_weight", str(ctc_weight)],
                cwd=args.model, env=env,
            )
            times["espnet"].append(seconds)
        theirs_text = dict(
            (line.split(maxsplit=1) + [""])[:2]
            for line in (work / "espnet0" / "1best_recog" / "text").read_text(encoding="utf-8").splitlines()
        )
    report = reports["jobs1"]
    same = {k: sum(row["hypothesis"] == theirs_text.get(row["id"]) for row in r["rows"]) for k, r in reports.items()}
    ctc = greedy_ctc_comparison(args.model, args.data, args.device)
    one, two, theirs = (statistics.median(times[k]) for k in ("jobs1", "jobs2", "espnet"))
    n = report["utterances"]
    print(f"model {args.model.name}, {n} utterances, {report['audio_seconds']:.1f} s of audio, beam {args.beam}, "
          f"ctc weight {ctc_weight:g}, device {args.device}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"espzoo evaluate --jobs 1: {one:.2f} s (WER {100 * report['wer']:.1f}%, CER {100 * report['cer']:.1f}%; "
          f"decoding {reports['jobs1']['decode_seconds']:.2f} s, RTF {reports['jobs1']['real_time_factor']:.3f})")
    print(f"espzoo evaluate --jobs 2: {two:.2f} s (decoding incl. the workers' model load "
          f"{reports['jobs2']['decode_seconds']:.2f} s)")
    print(f"espnet2.bin.asr_inference: {theirs:.2f} s")
    print(f"identical transcripts to ESPnet: jobs 1 {same['jobs1']}/{n}, jobs 2 {same['jobs2']}/{n}")
    print(f"greedy CTC, each utterance alone (ESPnet encode + ctc.argmax): {ctc['alone_s']:.2f} s; "
          f"espzoo's padded batches: {ctc['batched_s']:.2f} s ({ctc['alone_s'] / ctc['batched_s']:.2f}x)")
    print(f"greedy CTC transcripts identical to each-alone: {ctc['same_guarded']}/{n} with espzoo's padding guards, "
          f"{ctc['same_unguarded']}/{n} with ESPnet's plain padded batch")
    print(f"jobs 2 / jobs 1 time ratio: {two / one:.3f}")
    best = min(one, two)
    print(f"espzoo evaluate (best of jobs 1, 2) / ESPnet asr_inference time ratio: {best / theirs:.3f} (goal <= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
