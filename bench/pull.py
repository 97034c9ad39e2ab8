"""Time `espzoo.hub.pull` of a ~500 MB repo from the mirror against `curl` of the same files from the same server.

    python bench/pull.py [--mb 500]

The mirror (`espzoo mirror serve`) runs in its own process over a generated ESPnet-layout repo of random bytes.
The peer is curl fetching every file of the repo (following the LFS redirects) into a fresh folder; espzoo pulls
the same files (--all) into a fresh HF cache, and so does the path without parallel ranges (huggingface_hub alone,
`hub.PARALLEL_MIN` out of reach: the "before"); each pull runs in a fresh process, as a user's does, timed from
after its imports. With --repeat N the three alternate N times (curl, before, after)
and medians are reported, as the machine may be shared. Then a pull pinned to the cached commit: its wall time and
the requests the mirror saw. Prints the throughput ratio (espzoo / curl) last. Goal: >= 0.8.
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
import urllib.request
from pathlib import Path

REPO = "espzoo-bench/asr_500mb"
BIN = Path(sys.executable).parent


def make_repo(root: Path, total_mb: int) -> list[str]:
    """README, meta.yaml, config, token list, stats and three checkpoints of random bytes summing to total_mb."""
    folder = root / REPO
    exp = folder / "exp" / "asr_train_asr_conformer_raw_en_bpe5000"
    (exp).mkdir(parents=True)
    (folder / "data" / "token_list").mkdir(parents=True)
    (folder / "README.md").write_text("---\ntags: [espnet, audio, automatic-speech-recognition]\nlanguage: en\n---\n")
    (folder / "meta.yaml").write_text(
        f"files:\n  asr_model_file: {exp.relative_to(folder)}/valid.acc.ave.pth\n"
        f"yaml_files:\n  asr_train_config: {exp.relative_to(folder)}/config.yaml\n"
    )
    (exp / "config.yaml").write_text("encoder: conformer\ntoken_type: bpe\n")
    (folder / "data" / "token_list" / "tokens.txt").write_text("\n".join(f"tok{i}" for i in range(5000)))
    sizes = {"valid.acc.ave.pth": total_mb * 3 // 5, "1epoch.pth": total_mb // 5, "2epoch.pth": total_mb // 5}
    for name, mb in sizes.items():
        with open(exp / name, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


class RequestLog:
    """Requests the mirror served, counted from its --log file (`espzoo mirror serve` has no stats route)."""

    def __init__(self, path: Path) -> None:
        self.path, self.start = path, 0

    def _lines(self) -> int:
        return len(self.path.read_text().splitlines()) if self.path.is_file() else 0

    def reset(self) -> None:
        self.start = self._lines()

    def count(self) -> int:
        return self._lines() - self.start


def run_curl(url: str, files: list[str], out: Path) -> float:
    """Seconds for curl to fetch every file into a fresh folder."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["curl", "-sSfL", "--create-dirs"]
    for rel in files:
        cmd += ["-o", str(out / rel), f"{url}/{REPO}/resolve/main/{rel}"]
    os.sync()  # see run_pull
    started = time.perf_counter()
    curl = subprocess.Popen(cmd)
    # A watchdog instead of wait(timeout=...), which polls in 50 ms steps and would add them to curl's time.
    watchdog = threading.Timer(600, curl.kill)
    watchdog.start()
    try:
        if curl.wait() != 0:
            raise subprocess.CalledProcessError(curl.returncode, cmd)
    finally:
        watchdog.cancel()
    return time.perf_counter() - started


def run_pull(hf_home: Path, parallel: bool, files: list[str]) -> tuple[float, str]:
    """Seconds for `espzoo.hub.pull --all` into a fresh HF cache, and the commit, in a fresh process as a user's
    pull is (a warm process hid a 3x slowdown once); its modules are loaded before the clock starts. `parallel`
    False: large files through huggingface_hub alone (the "before")."""
    shutil.rmtree(hf_home / "hub", ignore_errors=True)  # not HF_HOME: huggingface_hub keeps a registry there
    # The previous run's 524 MB are still being written back to disk and would throttle this run's writes: each
    # run, curl's and espzoo's alike, starts with nothing dirty.
    os.sync()
    code = (
        "import time, huggingface_hub\n"
        "from huggingface_hub import HfApi, hf_hub_download, snapshot_download\n"
        "from huggingface_hub.hf_api import RepoFile\n"
        "from espzoo.hub import download, session\n"
        f"session.PARALLEL_MIN = {'session.PARALLEL_MIN' if parallel else '1 << 62'}\n"
        "started = time.perf_counter()\n"
        f"snap = download.pull({REPO!r}, all_files=True, progress=False)\n"
        "print(time.perf_counter() - started, snap.commit, len(snap.files))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, HF_HOME=str(hf_home)), check=True,
                         capture_output=True, text=True, timeout=600).stdout.split()
    assert int(out[2]) == len(files), "the pull did not fetch the same files"
    return float(out[0]), out[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="Size of the generated repo in MB.")
    parser.add_argument("--repeat", type=int, default=1, help="Rounds of curl / before / after, alternating.")
    args = parser.parse_args()
    if not shutil.which("curl"):
        sys.exit("curl is not installed; install it (the peer of this benchmark) and run again.")
    with tempfile.TemporaryDirectory(prefix="espzoo-bench-pull-") as tmp:
        work = Path(tmp)
        files = make_repo(work / "root", args.mb)
        total = sum((work / "root" / REPO / f).stat().st_size for f in files)
        env = dict(os.environ, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=str(work / "hf"))
        env.pop("HF_HUB_CACHE", None)
        requests = RequestLog(work / "requests.jsonl")
        server = subprocess.Popen([str(BIN / "espzoo"), "mirror", "serve", "--root", str(work / "root"), "--port", "0",
                                   "--log", str(requests.path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            url = server.stdout.readline().strip()  # type: ignore[union-attr]
            # Warm the mirror's hashes (first request hashes the repo) so neither side pays for it.
            urllib.request.urlopen(f"{url}/api/models/{REPO}", timeout=120).read()

            os.environ.update(HF_ENDPOINT=url, HF_HOME=str(work / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
                              HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
            os.environ.pop("HF_HUB_CACHE", None)
            curl_runs, before_runs, after_runs, after_requests, commit = [], [], [], 0, ""
            for _ in range(args.repeat):
                curl_runs.append(run_curl(url, files, work / "curl"))
                before_runs.append(run_pull(work / "hf", parallel=False, files=files)[0])
                requests.reset()
                seconds, commit = run_pull(work / "hf", parallel=True, files=files)
                after_runs.append(seconds)
                after_requests = requests.count()
            curl_s, before_s, pull_s = (statistics.median(r) for r in (curl_runs, before_runs, after_runs))
            pull_requests = after_requests

            # The pinned pulls below: load the client's modules first (curl's start-up is ~10 ms; importing
            # huggingface_hub is ~200 ms, reported below as the CLI's cached-pull time).
            import huggingface_hub  # noqa: F401
            from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # noqa: F401

            from espzoo.hub import hf as _hf
            from espzoo.hub.download import pull

            _hf.read_tree(work, "0" * 40)  # loads the tree cache module (None: nothing cached there)

            requests.reset()
            started = time.perf_counter()
            pull(f"{REPO}@{commit}", all_files=True, progress=False)
            pinned_s = time.perf_counter() - started
            pinned_requests = requests.count()

            requests.reset()
            started = time.perf_counter()
            subprocess.run([str(BIN / "espzoo"), "pull", f"{REPO}@{commit}", "--all", "--json"], check=True,
                           env=dict(env, HF_ENDPOINT=url), stdout=subprocess.DEVNULL, timeout=120)
            cli_pinned_s = time.perf_counter() - started
            cli_pinned_requests = requests.count()
        finally:
            server.terminate()
            server.wait(timeout=10)
    mb = total / 1e6
    runs = f" (median of {args.repeat}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    print(f"repo: {len(files)} files, {mb:.0f} MB, served by `espzoo mirror serve` on 127.0.0.1{runs}")
    print(f"curl (peer):          {curl_s:6.2f} s  {mb / curl_s:7.0f} MB/s  runs: {fmt(curl_runs)}")
    print(f"pull, hf alone:       {before_s:6.2f} s  {mb / before_s:7.0f} MB/s  runs: {fmt(before_runs)} (before)")
    print(f"espzoo pull --all:    {pull_s:6.2f} s  {mb / pull_s:7.0f} MB/s  runs: {fmt(after_runs)} "
          f"({pull_requests} requests)")
    print(f"pinned cached pull:   {pinned_s * 1000:6.1f} ms, {pinned_requests} requests (library call)")
    print(f"pinned cached pull:   {cli_pinned_s * 1000:6.1f} ms, {cli_pinned_requests} requests (a CLI process)")
    print(f"throughput ratio before (hf alone / curl): {curl_s / before_s:.2f}")
    print(f"throughput ratio (espzoo pull / curl): {curl_s / pull_s:.2f} (goal >= 0.8)")
    return 0


def fmt(runs: list[float]) -> str:
    return " ".join(f"{r:.2f}" for r in runs)


if __name__ == "__main__":
    sys.exit(main())
