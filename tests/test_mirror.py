"""The mirror answers the real huggingface_hub client (run in a subprocess, as settings are read at import)."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from _hubtools import ESPZOO, client_env, make_espnet_repo, run_client, sha256_of

from espzoo.serve.add import add_from_cache
from espzoo.serve.faults import Faults
from espzoo.serve.server import MirrorServer
from espzoo.serve.sources import git_blob_sha1

REPO = "espzoo-test/asr_big"


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated ESPnet-layout repo whose checkpoint is ~30 MB (the LFS redirect and Range paths)."""
    root = tmp_path_factory.mktemp("big_root")
    make_espnet_repo(root, REPO, big_mb=30)
    return root


@pytest.fixture()
def mirror(big_root: Path):
    with MirrorServer(big_root, test_hooks=True) as server:
        yield server


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_snapshot_download_gets_every_file_byte_exact(mirror: MirrorServer, big_root: Path, tmp_path: Path):
    result = run_client(f"""
        from huggingface_hub import snapshot_download
        result = snapshot_download({REPO!r})
    """, mirror.url, tmp_path / "hf")
    snapshot = Path(result)
    source = big_root / REPO
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()) == files
    for rel in files:
        assert sha256_of(snapshot / rel) == sha256_of(source / rel), rel
    # The big checkpoint went through the LFS redirect to the second origin, named by its sha256 in the cache.
    checkpoint = snapshot / "exp/asr_train_asr_conformer_raw_en_char/valid.acc.ave_10best.pth"
    assert checkpoint.resolve().name == sha256_of(checkpoint)
    assert any(e["path"].startswith("/lfs/") for e in mirror.stats.log)


def test_model_info_tree_and_list_models(mirror: MirrorServer, big_root: Path, tmp_path: Path):
    result = run_client(f"""
        from huggingface_hub import HfApi
        api = HfApi()
        info = api.model_info({REPO!r}, files_metadata=True)
        by_rev = api.model_info({REPO!r}, revision=info.sha)
        top = sorted(f.path for f in api.list_repo_tree({REPO!r}))
        sub = sorted(f.path for f in api.list_repo_tree({REPO!r}, path_in_repo="exp/asr_stats_raw_en_char",
                                                         recursive=True))
        listed = list(api.list_models(author="espzoo-test", cardData=True))
        searched = [m.id for m in api.list_models(search="big")] + [m.id for m in api.list_models(search="nothing")]
        others = [m.id for m in api.list_models(author="someone-else")]
        result = dict(
            sha=info.sha, sha_by_rev=by_rev.sha, tags=info.tags,
            siblings={{s.rfilename: [s.size, s.blob_id, s.lfs.sha256 if s.lfs else None] for s in info.siblings}},
            top=top, sub=sub, listed=[m.id for m in listed], card=listed[0].card_data.to_dict(),
            searched=searched, others=others,
        )
    """, mirror.url, tmp_path / "hf")
    source = big_root / REPO
    assert result["sha"] == result["sha_by_rev"] == mirror.revision(REPO).commit
    assert "automatic-speech-recognition" in result["tags"]
    readme = (source / "README.md").read_bytes()
    assert result["siblings"]["README.md"] == [len(readme), git_blob_sha1(readme), None]
    ckpt = "exp/asr_train_asr_conformer_raw_en_char/valid.acc.ave_10best.pth"
    assert result["siblings"][ckpt][2] == sha256_of(source / ckpt)
    assert result["top"] == ["README.md", "data", "exp", "meta.yaml"]
    assert result["sub"] == ["exp/asr_stats_raw_en_char/train", "exp/asr_stats_raw_en_char/train/feats_stats.npz"]
    assert result["listed"] == [REPO]
    assert result["card"]["language"] == "en" and result["card"]["license"] == "cc-by-4.0"
    assert result["searched"] == [REPO]
    assert result["others"] == []


def test_client_errors_map_to_hub_exceptions(mirror: MirrorServer, tmp_path: Path):
    result = run_client(f"""
        from huggingface_hub import hf_hub_download, HfApi
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError
        out = {{}}
        for name, call in [
            ("repo", lambda: HfApi().model_info("espzoo-test/missing")),
            ("revision", lambda: HfApi().model_info({REPO!r}, revision="v9")),
            ("entry", lambda: hf_hub_download({REPO!r}, "nope.txt")),
        ]:
            try:
                call()
                out[name] = None
            except Exception as exc:
                out[name] = type(exc).__name__
        result = out
    """, mirror.url, tmp_path / "hf")
    assert result == {"repo": "RepositoryNotFoundError", "revision": "RevisionNotFoundError",
                      "entry": "RemoteEntryNotFoundError"}
    status, headers, _ = request(f"{mirror.url}/{REPO}/resolve/main/nope.txt", "HEAD")
    assert status == 404 and headers["x-error-code"] == "EntryNotFound"
    assert headers["x-repo-commit"] == mirror.revision(REPO).commit


def test_resolve_headers_ranges_and_lfs_redirect(mirror: MirrorServer, big_root: Path):
    source = big_root / REPO
    readme = (source / "README.md").read_bytes()
    commit = mirror.revision(REPO).commit
    status, headers, body = request(f"{mirror.url}/{REPO}/resolve/main/README.md", "HEAD")
    assert (status, body) == (200, b"")
    assert headers["etag"] == f'"{git_blob_sha1(readme)}"' and headers["x-repo-commit"] == commit
    assert int(headers["content-length"]) == len(readme)

    status, headers, body = request(f"{mirror.url}/{REPO}/resolve/{commit}/README.md", headers={"Range": "bytes=4-9"})
    assert (status, body, headers["content-range"]) == (206, readme[4:10], f"bytes 4-9/{len(readme)}")
    status, _, body = request(f"{mirror.url}/{REPO}/resolve/main/README.md", headers={"Range": "bytes=-5"})
    assert (status, body) == (206, readme[-5:])
    status, headers, _ = request(f"{mirror.url}/{REPO}/resolve/main/README.md",
                                 headers={"Range": f"bytes={len(readme)}-"})
    assert status == 416

    ckpt = source / "exp/asr_train_asr_conformer_raw_en_char/valid.acc.ave_10best.pth"
    digest = sha256_of(ckpt)
    status, headers, _ = request(f"{mirror.url}/{REPO}/resolve/main/{ckpt.relative_to(source).as_posix()}", "HEAD")
    assert status == 302 and headers["x-linked-etag"] == f'"{digest}"'
    assert int(headers["x-linked-size"]) == ckpt.stat().st_size and headers["x-repo-commit"] == commit
    location = headers["location"]
    assert urllib.parse.urlsplit(location).port != urllib.parse.urlsplit(mirror.url).port  # another origin
    # The redirect names the host the client asked for (a mirror bound to 0.0.0.0 is reached by its name).
    _, named, _ = request(f"{mirror.url}/{REPO}/resolve/main/{ckpt.relative_to(source).as_posix()}", "HEAD",
                          headers={"Host": f"mirror-host:{urllib.parse.urlsplit(mirror.url).port}"})
    assert named["location"].startswith(f"http://mirror-host:{urllib.parse.urlsplit(location).port}/lfs/")
    size = ckpt.stat().st_size
    status, headers, body = request(location, headers={"Range": f"bytes={size - 1000}-"})
    assert status == 206 and body == ckpt.read_bytes()[-1000:]


def test_commit_id_is_a_stable_hash_of_the_content(big_root: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(big_root, copy)
    with MirrorServer(big_root) as a, MirrorServer(copy) as b:
        first = a.revision(REPO).commit
        assert b.revision(REPO).commit == first  # same files, same id (paths and mtimes differ)
        (copy / REPO / "README.md").write_text("changed\n")
        assert b.revision(REPO).commit != first
        status, headers, _ = request(f"{b.url}/api/models/{REPO}/revision/{first}")
        assert status == 404 and headers["x-error-code"] == "RevisionNotFound"


def test_injected_500s_cut_connections_and_stats(mirror: MirrorServer, big_root: Path, tmp_path: Path):
    mirror.faults = Faults(drop_after=2_000_000)
    ckpt = "exp/asr_train_asr_conformer_raw_en_char/valid.acc.ave_10best.pth"
    result = run_client(f"""
        from huggingface_hub import hf_hub_download
        result = hf_hub_download({REPO!r}, {ckpt!r})
    """, mirror.url, tmp_path / "hf")
    assert sha256_of(Path(result)) == sha256_of(big_root / REPO / ckpt)
    lfs_gets = [e for e in mirror.stats.log if e["path"].startswith("/lfs/")]
    assert len(lfs_gets) == 2  # cut once after 2 MB, then fetched again by the client's retry

    mirror.reset()
    mirror.faults = Faults(fail_first=2)
    status, _, _ = request(f"{mirror.url}/api/models/{REPO}")
    assert status == 500
    status, _, _ = request(f"{mirror.url}/api/models/{REPO}")
    assert status == 500
    status, _, body = request(f"{mirror.url}/api/models/{REPO}")
    assert status == 200 and json.loads(body)["id"] == REPO
    status, _, body = request(f"{mirror.url}/_espzoo/stats")
    stats = json.loads(body)
    assert stats["requests"] == 3 and [e["status"] for e in stats["log"]] == [500, 500, 200]


def test_slow_and_throttled_responses(mirror: MirrorServer):
    mirror.faults = Faults(delay=1.0)
    started = time.monotonic()
    status, _, _ = request(f"{mirror.url}/api/models/{REPO}")
    assert status == 200 and time.monotonic() - started >= 1.0
    mirror.faults = Faults(rate=200_000)
    started = time.monotonic()
    status, _, body = request(f"{mirror.url}/{REPO}/resolve/main/README.md", headers={"Range": "bytes=0-99"})
    assert status == 206 and len(body) == 100
    status, headers, _ = request(f"{mirror.url}/{REPO}/resolve/main/exp/asr_train_asr_conformer_raw_en_char/"
                                 "valid.acc.ave_10best.pth", "HEAD")
    started = time.monotonic()
    status, _, body = request(headers["location"], headers={"Range": "bytes=0-399999"})
    assert status == 206 and len(body) == 400_000
    assert time.monotonic() - started >= 1.5  # 400 kB at 200 kB/s


def test_gated_repo_needs_a_token(big_root: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(big_root / REPO, root / "espzoo-test/gated", ignore=shutil.ignore_patterns("*.pth"))
    (root / "espzoo-test/gated/.espzoo-gated").write_text("hf_secret\n")
    with MirrorServer(root) as server:
        code = """
            from huggingface_hub import HfApi
            try:
                result = [f.rfilename for f in HfApi().model_info("espzoo-test/gated").siblings]
            except Exception as exc:
                result = type(exc).__name__
        """
        assert run_client(code, server.url, tmp_path / "hf") == "GatedRepoError"
        files = run_client(code, server.url, tmp_path / "hf", HF_TOKEN="hf_secret")
        assert "README.md" in files and ".espzoo-gated" not in files


def test_serve_from_cache_and_mirror_add(mirror: MirrorServer, big_root: Path, tmp_path: Path):
    first_home = tmp_path / "first"
    snapshot = Path(run_client(f"""
        from huggingface_hub import snapshot_download
        result = snapshot_download({REPO!r})
    """, mirror.url, first_home))
    commit = snapshot.name
    # Another machine gets the same commit and bytes from a mirror of the first one's cache.
    with MirrorServer(from_cache=True, cache_dir=first_home / "hub") as cached:
        assert cached.repo_ids() == [REPO]
        result = run_client(f"""
            from huggingface_hub import snapshot_download, HfApi
            result = [snapshot_download({REPO!r}), HfApi().model_info({REPO!r}).sha]
        """, cached.url, tmp_path / "second")
    assert result[1] == commit and Path(result[0]).name == commit
    ckpt = "exp/asr_train_asr_conformer_raw_en_char/valid.acc.ave_10best.pth"
    assert sha256_of(Path(result[0]) / ckpt) == sha256_of(big_root / REPO / ckpt)
    # `mirror add` copies the cached snapshot into a folder mirror: same files, so the same content id.
    added = add_from_cache(REPO, "main", tmp_path / "folder", cache_dir=first_home / "hub")
    assert added.source_commit == commit and (added.path / ckpt).is_file()
    with MirrorServer(tmp_path / "folder") as folder:
        assert folder.revision(REPO).commit == mirror.revision(REPO).commit
        # Edited, served, then added again: the edited commit stays reachable by its id, main is the cache's again.
        (added.path / "README.md").write_text("edited by hand\n")
        edited = folder.revision(REPO).commit
        assert edited != mirror.revision(REPO).commit
        add_from_cache(REPO, "main", tmp_path / "folder", cache_dir=first_home / "hub")
        add_from_cache(REPO, "main", tmp_path / "folder", cache_dir=first_home / "hub")  # unchanged: nothing kept
        assert folder.revision(REPO).commit == mirror.revision(REPO).commit
        assert (folder.revision(REPO, edited).files["README.md"].local.read_text()) == "edited by hand\n"
        assert [p.name for p in (tmp_path / "folder" / ".espzoo-commits" / REPO).iterdir()] == [edited]


def test_cli_serve_as_a_subprocess(big_root: Path, tmp_path: Path):
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen(
        [ESPZOO, "mirror", "serve", "--root", str(big_root), "--port", "0", "--log", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_env("http://127.0.0.1:9", tmp_path),
    )
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        result = run_client("""
            from huggingface_hub import HfApi
            result = [m.id for m in HfApi().list_models(author="espzoo-test")]
        """, url, tmp_path / "hf")
        assert result == [REPO]
        assert json.loads(log.read_text().splitlines()[0])["path"] == "/api/models"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_serve_rejects_bad_arguments(tmp_path: Path):
    both = subprocess.run([ESPZOO, "mirror", "serve"], capture_output=True, text=True, timeout=60)
    assert both.returncode == 1 and "--root" in both.stderr
    missing = subprocess.run([ESPZOO, "mirror", "serve", "--root", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "is not a folder" in missing.stderr


def test_cli_mirror_add_and_serve_from_cache(mirror: MirrorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from espzoo.cli.main import app

    home = tmp_path / "hf"
    run_client(f"""
        from huggingface_hub import snapshot_download
        result = snapshot_download({REPO!r})
    """, mirror.url, home)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    runner = CliRunner()
    added = runner.invoke(app, ["mirror", "add", f"{REPO}@main", "--root", str(tmp_path / "folder"), "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["files"] and (tmp_path / "folder" / REPO / "README.md").is_file()
    missing = runner.invoke(app, ["mirror", "add", "espzoo-test/elsewhere", "--root", str(tmp_path / "folder")])
    assert missing.exit_code == 1 and "espzoo pull espzoo-test/elsewhere --all" in missing.output

    proc = subprocess.Popen([ESPZOO, "mirror", "serve", "--from-cache", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=client_env("http://127.0.0.1:9", home))
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        result = run_client(f"""
            from huggingface_hub import HfApi
            api = HfApi()
            result = [[m.id for m in api.list_models()], api.model_info({REPO!r}).sha]
        """, url, tmp_path / "other")
        assert result[0] == [REPO] and result[1] == mirror.revision(REPO).commit
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------
# A server other machines use: links out of the root, gated LFS bytes, test hooks, idle connections


def test_links_leading_outside_the_root_are_never_served_or_listed(tmp_path: Path):
    secret = tmp_path / "private"
    (secret / "org" / "elsewhere").mkdir(parents=True)
    (secret / "id_rsa").write_text("PRIVATE KEY\n")
    (secret / "org" / "elsewhere" / "README.md").write_text("outside\n")
    root = tmp_path / "root"
    repo = root / "espzoo-test" / "linky"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("---\nlanguage: en\n---\n")
    (repo / "key.txt").symlink_to(secret / "id_rsa")  # a file link leading out
    (repo / "home").symlink_to(secret)  # a folder link leading out
    (repo / "same.md").symlink_to(repo / "README.md")  # a link inside the root stays served
    (repo / "loop").symlink_to(repo)  # a loop must not hang the walk
    (root / "espzoo-test" / "outside").symlink_to(secret / "org" / "elsewhere")  # a whole repo folder leading out
    (root / "espzoo-test" / "linky@v1").symlink_to(secret / "org" / "elsewhere")  # a revision folder leading out
    with MirrorServer(root) as server:
        status, _, body = request(f"{server.url}/api/models/espzoo-test/linky/tree/main?recursive=true")
        assert status == 200
        assert sorted(e["path"] for e in json.loads(body) if e["type"] == "file") == ["README.md", "same.md"]
        for path in ("key.txt", "home/id_rsa", "loop/README.md"):
            status, _, body = request(f"{server.url}/espzoo-test/linky/resolve/main/{path}")
            assert status == 404 and b"PRIVATE" not in body, path
        status, _, body = request(f"{server.url}/espzoo-test/linky/resolve/main/same.md")
        assert status == 200 and body.startswith(b"---")
        status, _, body = request(f"{server.url}/api/models")
        assert [m["id"] for m in json.loads(body)] == ["espzoo-test/linky"]
        assert request(f"{server.url}/api/models/espzoo-test/outside")[0] == 404
        assert request(f"{server.url}/api/models/espzoo-test/linky/revision/v1")[0] == 404
        # A file replaced by a link leading out after it was listed is not sent either.
        server.revision("espzoo-test/linky")
        (repo / "README.md").unlink()
        (repo / "README.md").symlink_to(secret / "id_rsa")
        status, _, body = request(f"{server.url}/espzoo-test/linky/resolve/main/same.md")
        assert status == 404 and b"PRIVATE" not in body


def test_gated_lfs_bytes_need_a_signed_link_and_stats_are_private(big_root: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(big_root / REPO, root / "espzoo-test/gated")
    (root / "espzoo-test/gated/.espzoo-gated").write_text("hf_secret\n")
    ckpt = "exp/asr_train_asr_conformer_raw_en_char/valid.acc.ave_10best.pth"
    digest = sha256_of(root / "espzoo-test/gated" / ckpt)
    with MirrorServer(root) as server:
        lfs = server.lfs_url
        assert request(f"{server.url}/espzoo-test/gated/resolve/main/{ckpt}", "HEAD")[0] == 401
        # Knowing the sha256 (it is public on the Hub) is not enough: the LFS origin wants a link it signed.
        for query in ("", "?expires=9999999999&sig=" + "0" * 64, "?expires=1&sig=x"):
            status, _, body = request(f"{lfs}/lfs/{digest}{query}")
            assert status == 403 and len(body) < 1000, query
        status, headers, _ = request(f"{server.url}/espzoo-test/gated/resolve/main/{ckpt}", "HEAD",
                                     headers={"Authorization": "Bearer hf_secret"})
        assert status == 302 and "sig=" in headers["location"] and "expires=" in headers["location"]
        status, _, body = request(headers["location"], headers={"Range": "bytes=0-99"})
        assert status == 206 and body == (root / "espzoo-test/gated" / ckpt).read_bytes()[:100]
        tampered = headers["location"].replace(digest, sha256_of(root / "espzoo-test/gated/README.md"))
        assert request(tampered)[0] == 403
        # Who fetched what is nobody else's business: no stats route on a server built without test hooks.
        assert request(f"{server.url}/_espzoo/stats")[0] == 404
        # The real client, with the token, follows the signed link.
        result = run_client(f"""
            from huggingface_hub import hf_hub_download
            result = hf_hub_download("espzoo-test/gated", {ckpt!r})
        """, server.url, tmp_path / "hf", HF_TOKEN="hf_secret")
        assert sha256_of(Path(result)) == digest
    with MirrorServer(root, link_ttl=-1) as expired:  # a link past its expiry is refused
        _, headers, _ = request(f"{expired.url}/espzoo-test/gated/resolve/main/{ckpt}", "HEAD",
                                headers={"Authorization": "Bearer hf_secret"})
        assert request(headers["location"])[0] == 403


def post(url: str, body: bytes) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("POST", parts.path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_test_hooks_exist_only_when_the_tests_ask(big_root: Path):
    with MirrorServer(big_root) as server:  # as `espzoo mirror serve` builds it
        assert post(f"{server.url}/_espzoo/faults", b'{"fail_first": 100}')[0] == 405
        assert post(f"{server.url}/_espzoo/reset", b"")[0] == 405
        assert request(f"{server.url}/_espzoo/stats")[0] == 404
        server.faults = Faults(fail_first=100)  # no effect without test hooks
        assert request(f"{server.url}/api/models/{REPO}")[0] == 200
    with pytest.raises(ValueError, match="test_hooks=True"):
        MirrorServer(big_root, faults=Faults(fail_first=1))
    with MirrorServer(big_root, test_hooks=True) as hooked:
        # A bad body is a 400 with a reason, not a dropped connection.
        for body in (b"not json", b"[1, 2]", b'{"nope": 1}', b'{"delay": "slow"}', b'{"fail_first": true}'):
            status, answer = post(f"{hooked.url}/_espzoo/faults", body)
            assert status == 400 and b"bad request body" in answer, body
        assert post(f"{hooked.url}/_espzoo/faults", b'{"fail_first": 1}')[0] == 200
        assert request(f"{hooked.url}/api/models/{REPO}")[0] == 500
        assert json.loads(request(f"{hooked.url}/_espzoo/stats")[2])["requests"] == 1


def test_idle_connections_time_out_and_workers_are_bounded(big_root: Path):
    import socket
    import threading

    with MirrorServer(big_root, idle_timeout=1.0, max_workers=4) as server:
        port = urllib.parse.urlsplit(server.url).port
        before = threading.active_count()
        half_sent = []
        for _ in range(20):  # requests that never finish their headers (a slow-loris client)
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(b"GET /api/models HTTP/1.1\r\nHost: x\r\n")
            half_sent.append(sock)
        time.sleep(0.5)
        assert threading.active_count() - before <= 4
        # Each is closed by the server after the idle timeout, and a real request is served after them.
        status, _, body = request(f"{server.url}/api/models/{REPO}")
        assert status == 200 and json.loads(body)["id"] == REPO
        for sock in half_sent:
            assert sock.recv(1024) == b""  # closed by the server, without an answer
            sock.close()
        assert threading.active_count() - before <= 4


def test_cli_serve_has_no_test_hooks(big_root: Path, tmp_path: Path):
    refused = subprocess.run([ESPZOO, "mirror", "serve", "--root", str(big_root), "--fail-first", "3"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--fail-first" in refused.stderr
    proc = subprocess.Popen([ESPZOO, "mirror", "serve", "--root", str(big_root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=client_env("http://127.0.0.1:9", tmp_path))
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert post(f"{url}/_espzoo/faults", b'{"fail_first": 100}')[0] == 405
        assert request(f"{url}/_espzoo/stats")[0] == 404
        assert request(f"{url}/api/models/{REPO}")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
