"""espzoo.hub against the mirror on 127.0.0.1: the real huggingface_hub client, real tiny ESPnet repos."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _hubtools import ESPZOO, client_env, make_espnet_repo, sha256_of
from typer.testing import CliRunner

from espzoo import errors
from espzoo.catalog.catalog import Catalog
from espzoo.catalog.entries import shipped_catalog_path
from espzoo.cli.main import app
from espzoo.hub import cache as hub_cache
from espzoo.hub import download as hub_download
from espzoo.hub import refresh as catalog_refresh
from espzoo.hub import session as hub_session
from espzoo.serve.faults import Faults
from espzoo.serve.server import MirrorServer

CHAR, BPE, NOMETA = "espzoo-test/tiny-char", "espzoo-test/tiny-bpe", "espzoo-test/tiny-nometa"
BIG = "espzoo-test/asr_big"
BIG_CKPT = "exp/asr_train_asr_conformer_raw_en_char/valid.acc.ave_10best.pth"


def serve(root: Path, monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> MirrorServer:
    server = MirrorServer(root, test_hooks=True)  # the tests inject faults
    monkeypatch.setenv("HF_ENDPOINT", server.start())
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return server


@pytest.fixture()
def mirror(mirror_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server = serve(mirror_root, monkeypatch, tmp_path / "hf")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big_root")
    make_espnet_repo(root, BIG, big_mb=30)
    return root


@pytest.fixture()
def big_mirror(big_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server = serve(big_root, monkeypatch, tmp_path / "hf")
    yield server
    server.stop()


def espzoo(args: list[str], hf_home: Path, endpoint: str, timeout: float = 120, **env: str):
    return subprocess.run([ESPZOO, *args], env=client_env(endpoint, hf_home, **env), capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------------------------------------
# What is pulled


def test_pull_fetches_what_a_finetune_needs(mirror: MirrorServer, mirror_root: Path):
    snaps = {repo: hub_download.pull(repo, progress=False) for repo in (CHAR, BPE, NOMETA)}
    assert snaps[CHAR].files == [
        "README.md", "data/token_list/char/tokens.txt", "exp/asr_stats_raw_char/train/feats_stats.npz",
        "exp/asr_train_asr_conformer_raw_char/config.yaml",
        "exp/asr_train_asr_conformer_raw_char/valid.acc.ave_2best.pth", "meta.yaml",
    ]
    assert "data/token_list/bpe_unigram30/bpe.model" in snaps[BPE].files
    # Without meta.yaml the training folder is found by content, and the averaged checkpoint wins.
    assert snaps[NOMETA].files == [
        "README.md", "data/en_token_list/char/tokens.txt", "exp/asr_stats_raw_en_char_sp/train/feats_stats.npz",
        "exp/asr_train_conformer_tiny_raw_en_char_sp/config.yaml",
        "exp/asr_train_conformer_tiny_raw_en_char_sp/valid.acc.ave_2best.pth",
    ]
    for repo, snap in snaps.items():
        assert snap.commit == mirror.revision(repo).commit and snap.path.name == snap.commit
        source = mirror_root / repo
        for rel in snap.files:
            assert sha256_of(snap.path / rel) == sha256_of(source / rel), rel
        on_disk = sorted(p.relative_to(snap.path).as_posix() for p in snap.path.rglob("*") if p.is_file())
        assert on_disk == snap.files
    everything = hub_download.pull(NOMETA, all_files=True, progress=False)
    assert {"conf/decode_asr.yaml", "exp/asr_train_conformer_tiny_raw_en_char_sp/valid.acc.best.pth"} <= set(
        everything.files)


def test_file_selection_rules():
    assert hub_session.best_checkpoint(["e/checkpoint.pth", "e/3epoch.pth", "e/valid.loss.best.pth",
                                "e/valid.acc.best.pth", "e/valid.acc.ave_10best.pth"]) == "e/valid.acc.ave_10best.pth"
    assert hub_session.best_checkpoint(["e/3epoch.pth", "e/valid.loss.best.pth"]) == "e/valid.loss.best.pth"
    listing = ["README.md", "exp/lm_train/config.yaml", "exp/lm_train/valid.loss.ave.pth",
               "exp/asr_x/config.yaml", "exp/asr_x/valid.acc.ave.pth", "data/token_list/bpe_unigram50/bpe.model",
               "exp/asr_x/images/acc.png"]
    chosen = hub_session.select_files(listing, lambda path: "bpemodel: data/token_list/bpe_unigram50/bpe.model\n")
    assert chosen == ["README.md", "data/token_list/bpe_unigram50/bpe.model", "exp/asr_x/config.yaml",
                      "exp/asr_x/valid.acc.ave.pth"]
    tts_meta = "files:\n  model_file: exp/tts/train.loss.ave.pth\nyaml_files:\n  train_config: exp/tts/config.yaml\n"
    with pytest.raises(errors.NotAsrModelError, match="names no ASR model"):
        hub_session.select_files(["meta.yaml", "exp/tts/config.yaml", "exp/tts/train.loss.ave.pth"], lambda p: tts_meta)
    with pytest.raises(errors.NotAsrModelError, match="not an ESPnet ASR model"):
        hub_session.select_files(["README.md", "model.safetensors"], lambda p: None)


# ---------------------------------------------------------------------------------------------
# Reproducible and offline


def test_cached_pinned_pull_makes_zero_requests(mirror: MirrorServer, tmp_path: Path):
    first = hub_download.pull(CHAR, progress=False)
    mirror.reset()
    again = hub_download.pull(f"{CHAR}@{first.commit}", progress=False)
    assert mirror.stats.requests == 0 and again.files == first.files
    hub_download.pull(CHAR, progress=False)  # a branch must be resolved: one model-info request, no file request
    assert [e["path"] for e in mirror.stats.log] == [f"/api/models/{CHAR}"]
    # The console script, in its own process, pinned to the cached commit: zero requests too.
    mirror.reset()
    proc = espzoo(["pull", f"{CHAR}@{first.commit}", "--json"], tmp_path / "hf", mirror.url)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["commit"] == first.commit
    assert mirror.stats.requests == 0


def test_lock_file_pins_the_commit(mirror_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "root"
    shutil.copytree(mirror_root / CHAR, root / CHAR)
    server = serve(root, monkeypatch, tmp_path / "hf")
    lock = tmp_path / "espzoo.lock"
    try:
        first = hub_download.pull(CHAR, lock_file=lock, progress=False)
        assert hub_cache.read_lock(lock)[CHAR]["commit"] == first.commit
        (root / CHAR / "README.md").write_text((root / CHAR / "README.md").read_text() + "\nA new line.\n")
        assert server.revision(CHAR).commit != first.commit  # main moved
        server.reset()
        pinned = hub_download.pull(CHAR, lock_file=lock, progress=False)
        assert pinned.commit == first.commit and server.stats.requests == 0
        moved = hub_download.pull(f"{CHAR}@main", lock_file=lock, progress=False)
        assert moved.commit == server.revision(CHAR).commit
        assert hub_cache.read_lock(lock)[CHAR]["commit"] == moved.commit
    finally:
        server.stop()


def test_pull_by_tag_and_offline_by_tag(mirror_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "root"
    shutil.copytree(mirror_root / CHAR, root / CHAR)
    shutil.copytree(mirror_root / CHAR, root / f"{CHAR}@v1.0")  # a release kept beside main
    (root / CHAR / "README.md").write_text("---\ntags: [espnet]\n---\nmain moved on\n")
    server = serve(root, monkeypatch, tmp_path / "hf")
    try:
        tagged = hub_download.pull(f"{CHAR}@v1.0", progress=False)
        main = hub_download.pull(CHAR, progress=False)
        assert tagged.commit == server.revision(CHAR, "v1.0").commit != main.commit
        ref = tmp_path / "hf" / "hub" / f"models--{CHAR.replace('/', '--')}" / "refs" / "v1.0"
        assert ref.read_text() == tagged.commit
    finally:
        server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = hub_download.pull(f"{CHAR}@v1.0", progress=False)
    assert offline.offline and offline.commit == tagged.commit


def test_offline_uses_the_cache_and_says_so(mirror: MirrorServer, tmp_path: Path):
    home = tmp_path / "hf"
    snap = hub_download.pull(CHAR, progress=False)
    offline = espzoo(["pull", CHAR, "--json"], home, mirror.url, HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["commit"] == snap.commit and "HF_HUB_OFFLINE" in offline.stderr
    refused = espzoo(["pull", CHAR, "--json"], home, "http://127.0.0.1:9")
    assert refused.returncode == 0, refused.stderr
    assert json.loads(refused.stdout)["path"] == str(snap.path) and "cannot be reached" in refused.stderr
    uncached = espzoo(["pull", BPE], home, mirror.url, HF_HUB_OFFLINE="1")
    assert uncached.returncode == 1 and "is not in the cache" in uncached.stderr
    assert uncached.stderr.count("\n") == 1  # one sentence, no traceback
    partial = espzoo(["pull", CHAR, "--all"], home, "http://127.0.0.1:9")
    assert partial.returncode == 0  # the tiny char repo has nothing beyond what a fine-tune needs
    # A pinned commit asks nothing until a file is missing; without the cached tree listing the Hub is asked,
    # is found gone, and the snapshot's own files answer.
    for tree in (home / "hub").glob("models--*/trees/*.json"):
        tree.unlink()
    pinned = espzoo(["pull", f"{CHAR}@{snap.commit}", "--json"], home, "http://127.0.0.1:9")
    assert pinned.returncode == 0 and "cannot be reached" in pinned.stderr, pinned.stderr
    assert json.loads(pinned.stdout)["files"] == snap.files


def test_offline_partial_snapshot_is_reported(mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch):
    hub_download.pull(NOMETA, progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_download.pull(NOMETA, progress=False).offline
    with pytest.raises(errors.NotCachedError, match="only partly cached"):
        hub_download.pull(NOMETA, all_files=True, progress=False)


# ---------------------------------------------------------------------------------------------
# Failures


def test_server_errors_are_retried_then_reported(mirror: MirrorServer):
    mirror.faults = Faults(fail_first=2)
    snap = hub_download.pull(CHAR, backoff=0.01, progress=False)
    statuses = [e["status"] for e in mirror.stats.log]
    assert statuses[:3] == [500, 500, 200] and snap.commit == mirror.revision(CHAR).commit
    mirror.reset()
    mirror.faults = Faults(fail_first=1000)
    with pytest.raises(errors.HubUnavailableError, match=r"kept failing .* \(HTTP 500, 3 tries\)"):
        hub_download.pull(BPE, retries=2, backoff=0.01, progress=False)
    assert mirror.stats.requests == 3


def test_slow_hub_times_out(mirror: MirrorServer):
    mirror.faults = Faults(delay=2.0)
    started = time.monotonic()
    with pytest.raises(errors.HubUnavailableError, match="kept failing"):
        hub_download.pull(CHAR, timeout=0.3, retries=1, backoff=0.01, progress=False)
    assert time.monotonic() - started < 10


def test_errors_are_one_clear_sentence(mirror: MirrorServer, mirror_root: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch):
    did_you_mean = "espnet/bn_openslr5 does not exist .* did you mean espnet/bn_openslr53"
    with pytest.raises(errors.RepoNotFoundError, match=did_you_mean):
        hub_download.pull("espnet/bn_openslr5", progress=False)
    with pytest.raises(errors.RevisionNotFoundError, match="has no revision 'v9'"):
        hub_download.pull(f"{CHAR}@v9", progress=False)
    with pytest.raises(errors.HubError, match="not a repo reference"):
        hub_download.pull("no-slash", progress=False)
    root = tmp_path / "root"
    shutil.copytree(mirror_root / CHAR, root / "espzoo-test/gated")
    (root / "espzoo-test/gated/.espzoo-gated").write_text("")
    (root / "espnet/tts_model").mkdir(parents=True)
    (root / "espnet/tts_model/README.md").write_text("---\ntags: [espnet, text-to-speech]\n---\n")
    (root / "espnet/tts_model/meta.yaml").write_text("files:\n  model_file: exp/tts/model.pth\n")
    server = serve(root, monkeypatch, tmp_path / "hf2")
    try:
        with pytest.raises(errors.GatedRepoError, match="set HF_TOKEN"):
            hub_download.pull("espzoo-test/gated", progress=False)
        monkeypatch.setenv("HF_TOKEN", "hf_anything")
        assert hub_download.pull("espzoo-test/gated", progress=False).files
        with pytest.raises(errors.NotAsrModelError, match="names no ASR model"):
            hub_download.pull("espnet/tts_model", progress=False)
    finally:
        server.stop()


def test_disk_full_is_one_sentence_and_leaves_no_partial_blob(big_mirror: MirrorServer, tmp_path: Path):
    import resource

    def limit_file_size() -> None:  # as `ulimit -f` does: a write past 5 MB fails (EFBIG), like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (5_000_000, 5_000_000))

    home = tmp_path / "hf"
    proc = subprocess.run([ESPZOO, "pull", BIG], env=client_env(big_mirror.url, home), capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_file_size)
    assert proc.returncode == 1 and "no room to write espzoo-test/asr_big" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    blobs = home / "hub" / f"models--{BIG.replace('/', '--')}" / "blobs"
    assert not list(blobs.glob("*.incomplete"))
    assert not (home / "hub" / f"models--{BIG.replace('/', '--')}" / "snapshots").exists() or not list(
        (home / "hub").rglob(BIG_CKPT.split("/")[-1]))


# ---------------------------------------------------------------------------------------------
# Reliability: killed downloads, concurrent pulls, corruption


def test_rm_of_a_repo_being_pulled_is_refused_and_the_pull_finishes(big_mirror: MirrorServer, big_root: Path,
                                                                    tmp_path: Path):
    """`espzoo rm REPO` while `espzoo pull REPO` downloads it: refused in one sentence (the cache's lock for the
    repo is held by the pull), the pull finishes with every byte, and rm then works (issue 27: 8)."""
    home = tmp_path / "hf"
    digest = sha256_of(big_root / BIG / BIG_CKPT)
    big_mirror.faults = Faults(rate=5_000_000)
    proc = subprocess.Popen([ESPZOO, "pull", BIG, "--json"], env=client_env(big_mirror.url, home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    blobs = home / "hub" / f"models--{BIG.replace('/', '--')}" / "blobs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not list(blobs.glob(f"{digest}.*")):
        time.sleep(0.05)
    refused = espzoo(["rm", BIG], home, big_mirror.url)
    out, err = proc.communicate(timeout=120)
    assert refused.returncode not in (0, None) and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: {BIG} is being pulled by another espzoo process; run espzoo rm again when that pull is done."]
    assert proc.returncode == 0, err
    assert sha256_of(Path(json.loads(out)["path"]) / BIG_CKPT) == digest
    big_mirror.faults = Faults()
    removed = espzoo(["rm", BIG], home, big_mirror.url)
    assert removed.returncode == 0, removed.stderr
    assert not (home / "hub" / f"models--{BIG.replace('/', '--')}").exists()


def test_ctrl_c_during_a_pull_of_a_file_under_the_parallel_size_ends_it_at_once(big_mirror: MirrorServer,
                                                                                 big_root: Path, tmp_path: Path):
    """Ctrl-C while huggingface_hub downloads an LFS file too small for parallel parts (31 MB, served at 300 KB/s:
    about 100 s to go): the pull ends within a second or two with exit 130 and one line, and the next pull resumes
    the partial file (issue 27: 2)."""
    home = tmp_path / "hf"
    digest = sha256_of(big_root / BIG / BIG_CKPT)
    assert (big_root / BIG / BIG_CKPT).stat().st_size < hub_session.PARALLEL_MIN
    big_mirror.faults = Faults(rate=300_000)
    proc = subprocess.Popen([ESPZOO, "pull", BIG], env=client_env(big_mirror.url, home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    blobs = home / "hub" / f"models--{BIG.replace('/', '--')}" / "blobs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not [
            p for p in blobs.glob(f"{digest}.*.incomplete") if p.stat().st_size > 100_000]:
        time.sleep(0.05)
    assert proc.poll() is None, "the pull ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    waited = time.monotonic() - sent
    assert waited < 3.0, f"the pull ended {waited:.1f} s after Ctrl-C"
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)
    big_mirror.faults = Faults()
    snap = hub_download.pull(BIG, progress=False)
    assert sha256_of(snap.path / BIG_CKPT) == digest


def test_download_killed_midfile_completes_on_the_next_pull(big_mirror: MirrorServer, big_root: Path,
                                                            tmp_path: Path):
    home = tmp_path / "hf"
    digest = sha256_of(big_root / BIG / BIG_CKPT)
    total = (big_root / BIG / BIG_CKPT).stat().st_size
    big_mirror.faults = Faults(rate=5_000_000)  # 31 MB at 5 MB/s: time to kill it part way
    proc = subprocess.Popen([ESPZOO, "pull", BIG], env=client_env(big_mirror.url, home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    blobs = home / "hub" / f"models--{BIG.replace('/', '--')}" / "blobs"
    deadline = time.monotonic() + 60
    partial: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in blobs.glob(f"{digest}.*.incomplete") if p.stat().st_size > 2_000_000]
        if partial:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert partial, "the checkpoint download never got going"
    killed_at = partial[0].stat().st_size
    assert 2_000_000 < killed_at < total
    big_mirror.faults = Faults()
    big_mirror.reset()
    snap = hub_download.pull(BIG, progress=False)
    assert any(note.startswith("resumed") for note in snap.notes), snap.notes
    assert sha256_of(snap.path / BIG_CKPT) == digest
    assert not list(blobs.glob("*.incomplete"))
    # Only the missing bytes were fetched: one GET of the checkpoint, from where the killed process stopped.
    gets = [e for e in big_mirror.stats.log if e["path"] == f"/lfs/{digest}"]
    assert len(gets) == 1 and int(gets[0]["range"].split("=")[1].rstrip("-")) == killed_at
    print(f"\nkilled at {killed_at / 1e6:.1f} MB of {total / 1e6:.1f} MB; next pull: {snap.notes[0]}")


def test_cut_connection_resumes_where_it_stopped(big_mirror: MirrorServer, big_root: Path):
    big_mirror.faults = Faults(drop_after=3_000_000)
    snap = hub_download.pull(BIG, progress=False)
    assert sha256_of(snap.path / BIG_CKPT) == sha256_of(big_root / BIG / BIG_CKPT)
    digest = sha256_of(big_root / BIG / BIG_CKPT)
    gets = [e for e in big_mirror.stats.log if e["path"] == f"/lfs/{digest}"]
    # Cut after 3 MB; the client asks for the rest only (64 KiB pieces: at most one piece is fetched twice).
    assert [g["range"] is None for g in gets] == [True, False]
    resumed_at = int(gets[1]["range"].split("=")[1].rstrip("-"))
    assert 3_000_000 - hub_session.DOWNLOAD_CHUNK <= resumed_at <= 3_000_000


def test_four_processes_pulling_at_once_share_one_copy(big_mirror: MirrorServer, big_root: Path, tmp_path: Path):
    home = tmp_path / "hf"
    procs = [subprocess.Popen([ESPZOO, "pull", BIG, "--all", "--json"], env=client_env(big_mirror.url, home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-500:] for o in outputs]
    results = [json.loads(out) for out, _ in outputs]
    assert len({r["commit"] for r in results}) == 1 and len({r["path"] for r in results}) == 1
    snapshot = Path(results[0]["path"])
    source = big_root / BIG
    for rel in results[0]["files"]:
        assert sha256_of(snapshot / rel) == sha256_of(source / rel), rel
    blobs = list((home / "hub" / f"models--{BIG.replace('/', '--')}" / "blobs").iterdir())
    assert len(blobs) == len(results[0]["files"]) and not [b for b in blobs if b.name.endswith(".incomplete")]
    big_gets = [e for e in big_mirror.stats.log if e["method"] == "GET" and e["path"].endswith(
        sha256_of(source / BIG_CKPT))]
    print(f"\n4 concurrent pulls: {big_mirror.stats.requests} requests, the 31 MB checkpoint sent {len(big_gets)}x")


def test_verify_finds_and_fixes_a_corrupted_blob(mirror: MirrorServer, mirror_root: Path, tmp_path: Path):
    snap = hub_download.pull(CHAR, progress=False)
    assert hub_cache.verify(CHAR).ok
    ckpt = "exp/asr_train_asr_conformer_raw_char/valid.acc.ave_2best.pth"
    blob = (snap.path / ckpt).resolve()
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00corrupted\x00")
    # Offline: the ids recorded at pull time are enough to find it.
    offline = espzoo(["verify", CHAR], tmp_path / "hf", "http://127.0.0.1:9", HF_HUB_OFFLINE="1")
    assert offline.returncode == 1 and "1 of 6 cached files do not match" in offline.stderr, offline.stderr
    assert "CORRUPTED" in offline.stdout
    report = hub_cache.verify(CHAR)
    assert [c.path for c in report.bad] == [ckpt]
    fixed = CliRunner().invoke(app, ["verify", CHAR, "--fix", "--json"])
    assert fixed.exit_code == 0, fixed.output
    assert [f["path"] for f in json.loads(fixed.stdout)["files"] if f["fixed"]] == [ckpt]
    assert sha256_of(snap.path / ckpt) == sha256_of(mirror_root / CHAR / ckpt)
    assert hub_cache.verify(CHAR).ok


# ---------------------------------------------------------------------------------------------
# Cache management, catalog refresh, the CLI


def test_ls_and_rm(mirror: MirrorServer):
    runner = CliRunner()
    snap = hub_download.pull(CHAR, progress=False)
    hub_download.pull(BPE, progress=False)
    listed = runner.invoke(app, ["ls", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["repo_id"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {CHAR, BPE} and rows[CHAR]["commit"] == snap.commit and rows[CHAR]["refs"] == ["main"]
    assert rows[CHAR]["size"] > 100_000
    removed = runner.invoke(app, ["rm", f"{CHAR}@main", "--json"])
    assert removed.exit_code == 0 and json.loads(removed.stdout)["commits"] == [snap.commit]
    assert [r["repo_id"] for r in json.loads(runner.invoke(app, ["ls", "--json"]).stdout)] == [BPE]
    missing = runner.invoke(app, ["rm", CHAR])
    assert missing.exit_code == 1 and "is not in the cache" in missing.output


def test_info_shows_the_bundle_of_a_pulled_repo(mirror: MirrorServer):
    runner = CliRunner()
    assert runner.invoke(app, ["info", CHAR]).exit_code == 1  # neither in the catalog nor pulled yet
    snap = hub_download.pull(CHAR, progress=False)
    requests = mirror.stats.requests
    shown = runner.invoke(app, ["info", CHAR, "--json"])
    assert shown.exit_code == 0, shown.output
    pulled = json.loads(shown.stdout)["pulled"]
    assert pulled["commit"] == snap.commit and pulled["encoder"] == "conformer" and pulled["task"] == "asr"
    assert pulled["vocab_size"] > 3 and pulled["checkpoint"].endswith(".pth")
    assert mirror.stats.requests == requests  # read from the cache: no request
    assert runner.invoke(app, ["info", f"{CHAR}@{'0' * 40}"]).exit_code == 1  # a revision that is not cached


def test_catalog_refresh_merges_hub_cards(mirror_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "root"
    shutil.copytree(mirror_root / "espzoo-test", root / "espzoo-test")
    (root / "espnet/bn_openslr53").mkdir(parents=True)
    (root / "espnet/bn_openslr53/README.md").write_text(
        "---\ntags: [espnet, audio, automatic-speech-recognition]\nlanguage: bn\nlicense: cc-by-4.0\n---\n")
    server = serve(root, monkeypatch, tmp_path / "hf")
    try:
        shipped = Catalog.load(shipped_catalog_path())
        result = CliRunner().invoke(app, ["catalog", "refresh", "--author", "espzoo-test", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["added"] == 3
        catalog = Catalog.load()  # the user catalog now
        assert len(catalog) == len(shipped) + 3
        entry = catalog.get(CHAR)
        assert entry is not None and entry.task == "asr" and entry.languages
        assert any(h.entry.repo_id == CHAR for h in catalog.search("tiny-char"))
        updated = catalog_refresh.refresh_catalog("espnet")
        assert updated.updated == 1 and updated.total == len(shipped)  # rebuilt over the shipped entries
        merged = Catalog.load().get("espnet/bn_openslr53")
        assert merged is not None and merged.license == "cc-by-4.0" and merged.results  # results kept
        # --configs reads each model's meta.yaml and config: architecture, tokens, sample rate.
        deep = CliRunner().invoke(app, ["catalog", "refresh", "--author", "espzoo-test", "--configs", "--json"])
        assert deep.exit_code == 0, deep.output
        char = Catalog.load().get(CHAR)
        assert char is not None and char.architecture.get("encoder") == "conformer"
        assert char.tokens.get("type") == "char" and char.tokens.get("size", 0) > 10 and char.sample_rate == 16000
        nometa = Catalog.load().get(NOMETA)
        assert nometa is not None and not nometa.architecture  # no meta.yaml: the card's facts only
    finally:
        server.stop()


def test_cli_pull_json_and_errors(mirror: MirrorServer, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["pull", CHAR, "--json", "--lock", str(tmp_path / "espzoo.lock")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"repo_id", "commit", "path", "files"} and Path(data["path"]).is_dir()
    assert (tmp_path / "espzoo.lock").read_text().count(data["commit"]) == 1
    bad = runner.invoke(app, ["pull", "espzoo-test/nope"])
    assert bad.exit_code == 1 and "espzoo-test/nope does not exist" in bad.output
    table = espzoo(["pull", CHAR], tmp_path / "hf", mirror.url)
    assert table.returncode == 0 and data["commit"] in table.stdout


def test_progress_bars_are_drawn_with_rich(big_mirror: MirrorServer, capsys: pytest.CaptureFixture[str]):
    from espzoo.cli.hub import download_bars  # the library reports progress; the CLI draws it

    with download_bars(enabled=True) as progress:
        hub_download.pull(BIG, progress=progress)
    err = capsys.readouterr().err
    assert "downloading" in err and "31.5/31.5 MB" in err and "files" in err


# ---------------------------------------------------------------------------------------------
# Large LFS files in parallel byte ranges (espzoo.hub.fetch)


def _blob_gets(server: MirrorServer, digest: str) -> list[dict]:
    return [e for e in server.stats.log if e["method"] == "GET" and e["path"] == f"/lfs/{digest}"]


def _range_start(entry: dict) -> int:
    return int(entry["range"].split("=")[1].split("-")[0])


def test_parallel_pull_lands_a_byte_identical_blob_where_huggingface_hub_puts_it(
        big_mirror: MirrorServer, big_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub import scan_cache_dir

    from espzoo.hub import fetch

    digest = sha256_of(big_root / BIG / BIG_CKPT)
    size = (big_root / BIG / BIG_CKPT).stat().st_size
    monkeypatch.setattr(hub_session, "PARALLEL_MIN", 1_000_000)
    snap = hub_download.pull(BIG, all_files=True, progress=False)
    parts = _blob_gets(big_mirror, digest)
    # One ranged GET per part, the parts tiling the file.
    assert sorted(e["range"] for e in parts) == sorted(
        f"bytes={p.start}-{p.end - 1}" for p in fetch.split(size, fetch.PARTS))
    link = snap.path / BIG_CKPT
    blobs = tmp_path / "hf" / "hub" / f"models--{BIG.replace('/', '--')}" / "blobs"
    assert sha256_of(link) == digest and link.resolve() == blobs / digest
    assert not [p.name for p in blobs.iterdir() if "incomplete" in p.name or p.name.endswith(".parts")]
    # The same file pulled by huggingface_hub alone: the same blob name, relative link and mode.
    monkeypatch.setattr(hub_session, "PARALLEL_MIN", 1 << 62)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_alone"))
    alone = hub_download.pull(BIG, all_files=True, progress=False)
    assert os.readlink(alone.path / BIG_CKPT) == os.readlink(link)
    assert (alone.path / BIG_CKPT).resolve().stat().st_mode == link.resolve().stat().st_mode
    # `hf cache` sees it like any other download.
    info = scan_cache_dir(tmp_path / "hf" / "hub")
    (repo,) = [r for r in info.repos if r.repo_id == BIG]
    (revision,) = repo.revisions
    files = {f.file_name: f for f in revision.files}
    assert files[Path(BIG_CKPT).name].size_on_disk == size and not info.incomplete_files and not info.warnings


def test_parallel_part_cut_midway_retries_from_where_it_stopped(big_mirror: MirrorServer, big_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    from espzoo.hub import fetch

    digest = sha256_of(big_root / BIG / BIG_CKPT)
    size = (big_root / BIG / BIG_CKPT).stat().st_size
    monkeypatch.setattr(hub_session, "PARALLEL_MIN", 1_000_000)
    big_mirror.faults = Faults(drop_after=3_000_000)  # the first part served is cut after 3 MB
    snap = hub_download.pull(BIG, progress=False)
    assert sha256_of(snap.path / BIG_CKPT) == digest
    gets = _blob_gets(big_mirror, digest)
    starts = {p.start for p in fetch.split(size, fetch.PARTS)}
    retries = [e for e in gets if _range_start(e) not in starts]
    assert len(gets) == fetch.PARTS + 1 and len(retries) == 1
    # The cut part asked again for its missing bytes only (fetch.CHUNK pieces: at most one is fetched twice).
    part_start = max(s for s in starts if s < _range_start(retries[0]))
    assert 3_000_000 - fetch.CHUNK <= _range_start(retries[0]) - part_start <= 3_000_000


def test_killed_parallel_pull_resumes_each_part_on_the_next_pull(big_mirror: MirrorServer, big_root: Path,
                                                                  tmp_path: Path):
    from espzoo.hub import fetch

    home = tmp_path / "hf"
    digest = sha256_of(big_root / BIG / BIG_CKPT)
    size = (big_root / BIG / BIG_CKPT).stat().st_size
    big_mirror.faults = Faults(rate=2_000_000)  # 4 parts at 2 MB/s each: time to kill it part way
    code = (f"from espzoo.hub import download, session; session.PARALLEL_MIN = 1_000_000; "
            f"download.pull({BIG!r}, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=client_env(big_mirror.url, home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = fetch.partial_path(home / "hub" / f"models--{BIG.replace('/', '--')}" / "blobs" / digest)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and fetch.written(partial, size) < 9_000_000:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    recorded = fetch.written(partial, size)
    assert 9_000_000 <= recorded < size, "the parallel download never got going"
    big_mirror.faults = Faults()
    big_mirror.reset()
    snap = hub_download.pull(BIG, progress=False)  # default threshold: the resume is espzoo.hub.cache's, any size
    assert any(note.startswith("resumed") for note in snap.notes), snap.notes
    assert sha256_of(snap.path / BIG_CKPT) == digest
    assert not partial.exists() and not fetch.state_path(partial).exists()
    # Only what the state file did not record as written was fetched again, by the parts that had it missing.
    gets = _blob_gets(big_mirror, digest)
    fetched = sum(int(e["range"].split("-")[1]) - _range_start(e) + 1 for e in gets)
    assert fetched == size - recorded and 1 <= len(gets) <= fetch.PARTS


def test_server_without_range_support_gets_a_whole_download(big_mirror: MirrorServer, big_root: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from espzoo.hub import fetch

    digest = sha256_of(big_root / BIG / BIG_CKPT)
    monkeypatch.setattr(hub_session, "PARALLEL_MIN", 1_000_000)
    big_mirror.faults = Faults(ignore_range=1)
    snap = hub_download.pull(BIG, progress=False)
    assert sha256_of(snap.path / BIG_CKPT) == digest
    gets = _blob_gets(big_mirror, digest)
    # One ranged probe, answered with the whole file and dropped; then huggingface_hub's plain GET.
    assert [e["range"] is None for e in gets] == [False, True]
    blobs = tmp_path / "hf" / "hub" / f"models--{BIG.replace('/', '--')}" / "blobs"
    assert not fetch.partial_path(blobs / digest).exists() and not list(blobs.glob("*.parts"))


def test_parallel_pull_on_a_full_disk_is_one_sentence_and_leaves_no_partial(big_mirror: MirrorServer,
                                                                            tmp_path: Path):
    import resource

    def limit_file_size() -> None:  # a write past 5 MB fails (EFBIG), like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (5_000_000, 5_000_000))

    home = tmp_path / "hf"
    code = (f"from espzoo import errors\nfrom espzoo.hub import download, session\nsession.PARALLEL_MIN = 1_000_000\n"
            f"try:\n    download.pull({BIG!r}, progress=False)\n"
            "except errors.HubDiskFullError as exc:\n    print(exc)\n    raise SystemExit(1)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=client_env(big_mirror.url, home), capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_file_size)
    assert proc.returncode == 1 and proc.stdout.startswith("no room to write espzoo-test/asr_big"), proc.stderr
    blobs = home / "hub" / f"models--{BIG.replace('/', '--')}" / "blobs"
    assert not [p.name for p in blobs.iterdir() if "incomplete" in p.name or p.name.endswith(".parts")]


def test_parallel_pulls_at_once_fetch_the_file_once(big_mirror: MirrorServer, big_root: Path, tmp_path: Path):
    home = tmp_path / "hf"
    digest = sha256_of(big_root / BIG / BIG_CKPT)
    size = (big_root / BIG / BIG_CKPT).stat().st_size
    code = (f"from espzoo.hub import download, session; session.PARALLEL_MIN = 1_000_000; "
            f"print(download.pull({BIG!r}, progress=False).path)")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=client_env(big_mirror.url, home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    assert sha256_of(Path(outputs[0][0].strip()) / BIG_CKPT) == digest
    # huggingface_hub's lock for the blob is held while its parts download: the others wait, then find it.
    fetched = sum(int(e["range"].split("-")[1]) - _range_start(e) + 1 if e["range"] else size
                  for e in _blob_gets(big_mirror, digest))
    assert fetched == size
