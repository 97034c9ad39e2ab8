"""Long-form decoding: time and peak memory as the recording grows, against decoding the whole file in one piece.

    python bench/longform.py [--model DIR] [--seconds 60] [--scale 10] [--decode ctc-greedy|beam]

Two recordings are built from the shipped English clips joined with 0.5 s pauses (tests/_longaudio.py): about
`--seconds` long, and `--scale` times that. Each is transcribed in a fresh process by `espzoo transcribe` (cut at
pauses by silero-vad, windows decoded and stitched: decode.longform), and by the peer: the whole file read at once
and put through the same model's encoder in one piece with greedy CTC (what decoding a long file without
segmentation does; ESPnet 202611's `decode_long` serves S2T models only, and the demo model is an ASR model).
Peak memory is each process's maximum resident set (wait4's ru_maxrss), time the process's wall clock with its
imports and model load. Printed: real-time factors, peak memory, the growth of each from 1x to `--scale`x (ideal:
1.0 for time per second of audio and for memory), and last the ratio of the peer's to espzoo's real-time factor at
the longer length.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
DEFAULT_MODEL = ROOT / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"

PEER = """
import sys, soundfile
from espzoo.decode import DecodeOptions, load_recognizer
recognizer = load_recognizer(sys.argv[1], DecodeOptions(decode="ctc-greedy"))
wave, rate = soundfile.read(sys.argv[2], dtype="float32")
print(recognizer.greedy_ctc([wave])[0])
"""


def measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak resident MB, stdout) of `cmd` run alone."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        text = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[:4]} failed (exit {os.waitstatus_to_exitcode(status)})")
    return seconds, usage.ru_maxrss / 1024, text


def _decode_seconds(model: str, decode: str, audio: Path) -> float:
    """Seconds `espzoo.decode.transcribe` takes on `audio` with the model already loaded (VAD, windows, decoding)."""
    import torch

    from espzoo.decode.recognizer import DecodeOptions, load_recognizer
    from espzoo.decode.runner import transcribe

    torch.set_num_threads(1)
    recognizer = load_recognizer(model, DecodeOptions(decode=decode, jobs=None))
    transcribe(recognizer, [audio])  # warm: the VAD model loaded, first-call costs paid
    started = time.perf_counter()
    transcribe(recognizer, [audio])
    return time.perf_counter() - started


def main() -> int:
    from _longaudio import clips, join

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--decode", default="ctc-greedy", choices=("ctc-greedy", "beam"))
    args = parser.parse_args()
    pool = clips("en", "train")
    per_clip = 2.9  # seconds a clip takes with its pause, about
    espzoo = str(Path(sys.executable).with_name("espzoo"))
    results: dict[tuple[str, int], tuple[float, float, float]] = {}
    timing: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="espzoo-bench-long-") as tmp:
        for scale in (1, args.scale):
            count = int(args.seconds * scale / per_clip)
            chosen = (pool * (count // len(pool) + 1))[:count]
            joined = join(Path(tmp) / f"x{scale}.wav", chosen)
            runs = {
                "espzoo": [espzoo, "transcribe", args.model, str(joined.path), "--decode", args.decode, "--jobs", "1",
                           "--threads", "1"],
                "whole file": [sys.executable, "-c", PEER, args.model, str(joined.path)],
            }
            timing[scale] = (joined.seconds, _decode_seconds(args.model, args.decode, joined.path))
            for name, cmd in runs.items():
                seconds, peak, _ = measured(cmd)
                results[(name, scale)] = (joined.seconds, seconds, peak)
                print(f"{name:>10}  {joined.seconds:7.1f} s of audio: {seconds:6.1f} s wall, RTF "
                      f"{seconds / joined.seconds:.3f}, peak {peak:7.0f} MB", flush=True)
    (a_audio, a_time), (b_audio, b_time) = timing[1], timing[args.scale]
    print(f"    espzoo  decoding alone (model loaded once, in this process): {a_time:.1f} s for {a_audio:.0f} s, "
          f"{b_time:.1f} s for {b_audio:.0f} s: {b_time / a_time / (b_audio / a_audio):.2f}x the time per second")
    for name in ("espzoo", "whole file"):
        (a_audio, a_wall, a_peak), (b_audio, b_wall, b_peak) = results[(name, 1)], results[(name, args.scale)]
        print(f"{name:>10}  {args.scale}x the audio: {b_wall / a_wall / (b_audio / a_audio):.2f}x the time per second "
              f"of audio, {b_peak / a_peak:.2f}x the peak memory")
    audio, wall, _ = results[("espzoo", args.scale)]
    peer_audio, peer_wall, _ = results[("whole file", args.scale)]
    ratio = (peer_wall / peer_audio) / (wall / audio)
    print(f"RTF ratio at {audio:.0f} s (whole-file / espzoo long-form): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
