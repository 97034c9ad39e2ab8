"""Time `espzoo search` and `espzoo recommend` against the peer `espnet_model_zoo_query` on equivalent queries.

    python bench/search.py [--repeat 5]

Both run as fresh processes (what a user waits for); the peer's table ships in its package, so both
are offline. The peer has no `recommend`: its nearest answer to "which model for my language" is its ASR models
of that language. Prints each query's median time, then the ratio (espzoo / peer) last. Goal: <= 0.25.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# (espzoo arguments, espnet_model_zoo_query arguments) asking the same question.
QUERIES = [
    (["search", "--task", "asr"], ["task=asr"]),
    (["search", "--task", "asr", "--lang", "en"], ["task=asr", "lang=en"]),
    (["search", "--corpus", "librispeech"], ["corpus=librispeech"]),
    (["search", "--task", "asr", "--lang", "ja"], ["task=asr", "lang=jp"]),
    (["search", "--lang", "spanish", "--max-params", "400M"], ["lang=es"]),
    (["recommend", "--lang", "es"], ["task=asr", "lang=es"]),
    (["recommend", "--lang", "top", "--max-params", "400M"], ["task=asr", "lang=top"]),
]


def wall(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from start to exit. A watchdog thread kills a hung run: `wait(timeout=...)` would poll in steps
    of up to 50 ms, a bias larger than the difference being measured for a 0.1 s command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        code = proc.wait()
    finally:
        watchdog.cancel()
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    peer = BIN / "espnet_model_zoo_query"
    if not peer.exists() and not shutil.which("espnet_model_zoo_query"):
        print("the peer is missing: pip install 'espzoo[bench]' (espnet_model_zoo==0.1.7)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ESPZOO_HOME": home, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
        ours_total, peer_total = 0.0, 0.0
        print(f"{'query':48} {'espzoo':>8} {'peer':>8}")
        for ours_args, peer_args in QUERIES:
            wall([str(BIN / "espzoo"), *ours_args], env)  # warm the page cache and espzoo's parse cache
            wall([str(peer), *peer_args], env)
            ours = statistics.median(wall([str(BIN / "espzoo"), *ours_args], env) for _ in range(args.repeat))
            theirs = statistics.median(wall([str(peer), *peer_args], env) for _ in range(args.repeat))
            ours_total += ours
            peer_total += theirs
            print(f"{' '.join(ours_args):48} {ours:8.3f} {theirs:8.3f}")
    print(f"espzoo search+recommend / espnet_model_zoo_query time ratio: {ours_total / peer_total:.3f} "
          "(goal <= 0.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
