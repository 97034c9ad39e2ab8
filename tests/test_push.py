"""`espzoo push`: the real huggingface_hub client uploads to espzoo's mirror on 127.0.0.1 (create_repo, preupload,
LFS batch + PUT, commit), and `espzoo pull` brings the same bytes back; without the server's token nothing lands."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from _hubtools import ESPZOO, client_env, run_client, run_espzoo
from _tiny_out import build_tiny_out

from espzoo.errors import MirrorError
from espzoo.publish.hub_layout import ExportOptions, export
from espzoo.serve.server import MirrorServer

TOKEN = "hf_espzoo_test_write_token"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny experiment dir (OUT) and its `espzoo export` folder."""
    root = tmp_path_factory.mktemp("push")
    out = build_tiny_out(root / "out")
    return out, export(out, root / "repo", ExportOptions(repo_id="me/tiny"))


@pytest.fixture()
def mirror(tmp_path: Path):
    """A --root mirror that takes uploads sent with TOKEN."""
    (tmp_path / "mirror").mkdir()
    with MirrorServer(tmp_path / "mirror", token=TOKEN) as server:
        yield server


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _push(args: list[str], url: str, home: Path, token: str | None = TOKEN, **env: str):
    extra = {"HF_TOKEN": token} if token else {}
    return run_espzoo(["push", *args], url, home, timeout=180, **extra, **env)


def _pull(repo: str, url: str, home: Path) -> Path:
    proc = run_espzoo(["pull", repo, "--all", "--json"], url, home, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return Path(json.loads(proc.stdout)["path"])


def test_push_then_pull_is_byte_identical(exported, mirror: MirrorServer, tmp_path: Path) -> None:
    _, folder = exported
    proc = _push([str(folder), "me/tiny", "--json"], mirror.url, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    pushed = json.loads(proc.stdout)
    assert pushed["commit_url"] == f"{mirror.url}/me/tiny/commit/{pushed['commit']}"
    assert pushed["revision"] == "main" and not pushed["exported"]

    revision = mirror.revision("me/tiny")
    assert revision.commit == pushed["commit"]
    checkpoint = next(path for path in revision.files if path.endswith(".pth"))
    assert revision.files[checkpoint].sha256  # stored and served as LFS
    requests = [(e["method"], e["path"]) for e in mirror.stats.to_json()["log"]]
    assert ("POST", "/api/models/me/tiny/preupload/main") in requests
    assert ("POST", "/me/tiny.git/info/lfs/objects/batch") in requests
    assert any(m == "PUT" and p.startswith("/lfs-upload/") for m, p in requests)
    assert requests.count(("POST", "/api/models/me/tiny/commit/main")) == 1  # one commit with the whole folder

    pulled = _pull("me/tiny", mirror.url, tmp_path / "home2")
    assert pulled.name == pushed["commit"]
    assert _files(pulled) == _files(folder)


def test_push_of_an_experiment_exports_it_first(exported, mirror: MirrorServer, tmp_path: Path) -> None:
    out, _ = exported
    # hf_xet installed and not disabled (as for a user): to a mirror, espzoo push still uploads by LFS.
    proc = _push([str(out), "me/tiny_ft"], mirror.url, tmp_path / "home", HF_HUB_DISABLE_XET="0")
    assert proc.returncode == 0, proc.stderr
    commit = mirror.revision("me/tiny_ft").commit
    assert proc.stdout.strip() == f"{mirror.url}/me/tiny_ft/commit/{commit}"  # the commit URL, alone on stdout
    pulled = _pull("me/tiny_ft", mirror.url, tmp_path / "home2")
    card = (pulled / "README.md").read_text()
    assert "espzoo pull me/tiny_ft" in card  # the card names where the model now lives
    assert "pretrained model: `espzoo-test/tiny_char` at commit `" + "0" * 40 in card  # provenance: repo and commit
    assert (pulled / "meta.yaml").is_file() and any(pulled.glob("exp/*/valid.acc.ave.pth"))


def test_revision_creates_a_branch_and_leaves_main(exported, mirror: MirrorServer, tmp_path: Path) -> None:
    _, folder = exported
    assert _push([str(folder), "me/tiny"], mirror.url, tmp_path / "home").returncode == 0
    main = mirror.revision("me/tiny").commit
    again = _push([str(folder), "me/tiny", "--json"], mirror.url, tmp_path / "home")  # nothing changed: no new commit
    assert again.returncode == 0 and json.loads(again.stdout)["commit"] == main, again.stderr
    changed = tmp_path / "v2"
    shutil.copytree(folder, changed)
    (changed / "README.md").write_text((folder / "README.md").read_text() + "\nSecond release.\n")
    proc = _push([str(changed), "me/tiny", "--revision", "v2", "-m", "second release", "--json"], mirror.url,
                 tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    v2 = json.loads(proc.stdout)["commit"]
    assert v2 != main and mirror.revision("me/tiny", "v2").commit == v2
    assert mirror.revision("me/tiny").commit == main  # main untouched
    pulled = _pull("me/tiny@v2", mirror.url, tmp_path / "home2")
    assert _files(pulled) == _files(changed)


def test_a_private_repo_is_served_only_with_the_token(exported, mirror: MirrorServer, tmp_path: Path) -> None:
    """Served to the server's upload token only; to anyone else it is not there at all (the answer a missing repo
    gets: its existence is not told); its marker holds no token, and after a restart with a new --token the new
    token reads it and the old one does not (issue 27: 5, 11)."""
    from espzoo.serve.sources import GATED_MARKER

    _, folder = exported
    assert _push([str(folder), "me/secret", "--private"], mirror.url, tmp_path / "home").returncode == 0
    for token in (None, "hf_wrong"):
        with pytest.raises(MirrorError) as refused:
            mirror.revision("me/secret", token=token)
        with pytest.raises(MirrorError) as missing:
            mirror.revision("me/nothing", token=token)
        assert (refused.value.status, refused.value.code) == (missing.value.status, missing.value.code) == (
            404, "RepoNotFound")
        assert refused.value.message.replace("secret", "X") == missing.value.message.replace("nothing", "X")
    assert set(mirror.revision("me/secret", token=TOKEN).files) == set(_files(folder))
    marker = (mirror.source.root / "me" / "secret" / GATED_MARKER).read_text()
    assert TOKEN not in marker

    # What the real client sees without the token: the same error for the private repo as for a missing one.
    said = run_client("""
        from huggingface_hub import HfApi
        result = {}
        for repo in ("me/secret", "me/nothing"):
            try:
                HfApi().model_info(repo)
                result[repo] = "served"
            except Exception as err:
                result[repo] = type(err).__name__
    """, mirror.url, tmp_path / "hf")
    assert said == {"me/secret": "RepositoryNotFoundError", "me/nothing": "RepositoryNotFoundError"}

    with MirrorServer(mirror.source.root, token="hf_new_token") as restarted:
        assert set(restarted.revision("me/secret", token="hf_new_token").files) == set(_files(folder))
        with pytest.raises(MirrorError):
            restarted.revision("me/secret", token=TOKEN)


@pytest.mark.parametrize(("server_token", "client_token", "said"), [
    (None, TOKEN, "HTTP 403"),  # a mirror started without --token takes no uploads
    (TOKEN, "hf_wrong", "HTTP 401"),
    (TOKEN, None, "HTTP 401"),
])
def test_uploads_without_the_servers_token_are_refused(exported, tmp_path: Path, server_token, client_token,
                                                       said) -> None:
    _, folder = exported
    (tmp_path / "mirror").mkdir()
    with MirrorServer(tmp_path / "mirror", token=server_token) as server:
        proc = _push([str(folder), "me/tiny"], server.url, tmp_path / "home", token=client_token)
        assert not list((tmp_path / "mirror").iterdir())  # nothing written, not even the repo folder
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_push_of_a_folder_that_is_no_model(mirror: MirrorServer, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _push([str(tmp_path / "empty"), "me/tiny"], mirror.url, tmp_path / "home")
    assert proc.returncode != 0 and "neither an experiment dir" in proc.stderr
    proc = _push([str(tmp_path / "empty"), "tiny"], mirror.url, tmp_path / "home")
    assert proc.returncode != 0 and "ORG/NAME" in proc.stderr


def test_cli_mirror_takes_uploads_with_hf_token_on_the_server_side(exported, tmp_path: Path) -> None:
    """`espzoo mirror serve --root DIR` with HF_TOKEN set: the token it checks, as `--token` would give it."""
    _, folder = exported
    root = tmp_path / "mirror"
    root.mkdir()
    server = subprocess.Popen([ESPZOO, "mirror", "serve", "--root", str(root), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True,
                              env=client_env("http://127.0.0.1:9", tmp_path / "server", HF_TOKEN=TOKEN))
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        assert _push([str(folder), "me/tiny", "--token", "hf_wrong"], url, tmp_path / "home").returncode != 0
        proc = _push([str(folder), "me/tiny", "--token", TOKEN], url, tmp_path / "home", token=None)
        assert proc.returncode == 0, proc.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert _files(root / "me" / "tiny") == _files(folder)


def test_lfs_uploads_are_checked_and_need_a_signed_link(mirror: MirrorServer, tmp_path: Path) -> None:
    """The PUT of an LFS object: a link the batch route did not sign is refused; bytes that do not match the
    announced sha256 are dropped; matching bytes are kept, and the batch then asks for nothing."""
    import hashlib
    import http.client
    import urllib.parse

    def call(method: str, url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, bytes]:
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.netloc, timeout=30)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()

    assert call("POST", f"{mirror.url}/api/repos/create", json.dumps({"organization": "me", "name": "x"}).encode())[0] \
        == 200
    data = b"espzoo" * 1000
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "objects": [{"oid": oid, "size": len(data)}], "hash_algo": "sha256"}
    status, body = call("POST", f"{mirror.url}/me/x.git/info/lfs/objects/batch", json.dumps(batch).encode())
    assert status == 200
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    assert call("PUT", href.replace("sig=", "sig=0"), data, token=None)[0] == 403
    assert call("PUT", href, data[:-1] + b"X", token=None)[0] == 400
    assert not list((tmp_path / "mirror" / ".espzoo-lfs").glob("*"))  # nothing kept, no partial file left
    assert call("PUT", href, data, token=None)[0] == 200
    status, body = call("POST", f"{mirror.url}/me/x.git/info/lfs/objects/batch", json.dumps(batch).encode())
    assert "actions" not in json.loads(body)["objects"][0]  # held: the client skips the upload
    assert call("POST", f"{mirror.url}/me/x.git/info/lfs/objects/batch", json.dumps(batch).encode(), "bad")[0] == 401


def test_an_older_commit_still_resolves_after_a_push(exported, mirror: MirrorServer, tmp_path: Path) -> None:
    """Two pushes to main: main serves the second, and both commits resolve by id (revision, tree, resolve,
    LFS) with the bytes each push sent; `espzoo pull ORG/NAME@<first sha>` works after the second push."""
    import os

    _, folder = exported
    first = _push([str(folder), "me/tiny", "--json"], mirror.url, tmp_path / "home")
    assert first.returncode == 0, first.stderr
    sha1 = json.loads(first.stdout)["commit"]
    changed = tmp_path / "v2"
    shutil.copytree(folder, changed)
    checkpoint = next(changed.glob("exp/*/valid.acc.ave.pth"))
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0retrained")  # an LFS file changes, the config does not
    (changed / "README.md").write_text((folder / "README.md").read_text() + "\nRetrained.\n")
    second = _push([str(changed), "me/tiny", "--json"], mirror.url, tmp_path / "home")
    assert second.returncode == 0, second.stderr
    sha2 = json.loads(second.stdout)["commit"]
    assert sha2 != sha1 and mirror.revision("me/tiny").commit == sha2  # the branch points at the newest

    old = _pull(f"me/tiny@{sha1}", mirror.url, tmp_path / "home_old")  # a fresh cache: every file from the mirror
    assert old.name == sha1 and _files(old) == _files(folder)
    new = _pull(f"me/tiny@{sha2}", mirror.url, tmp_path / "home_new")
    assert new.name == sha2 and _files(new) == _files(changed)
    assert _files(_pull("me/tiny", mirror.url, tmp_path / "home_main")) == _files(changed)

    # Storage grows by the changed files only: a file both pushes hold is one inode in both kept commits.
    kept = tmp_path / "mirror" / ".espzoo-commits" / "me" / "tiny"
    assert sorted(p.name for p in kept.iterdir()) == sorted([sha1, sha2])
    same = next(p.relative_to(folder) for p in folder.rglob("config.yaml"))
    assert os.stat(kept / sha1 / same).st_ino == os.stat(kept / sha2 / same).st_ino
    rel = checkpoint.relative_to(changed)
    assert os.stat(kept / sha1 / rel).st_ino != os.stat(kept / sha2 / rel).st_ino

    # A kept file edited in place (a hard link shared with a hand-edited branch folder) is not served wrong.
    with open(kept / sha1 / "README.md", "ab") as f:
        f.write(b"edited in place")
    with pytest.raises(MirrorError) as gone:
        mirror.revision("me/tiny", sha1)
    assert gone.value.status == 404


def _raw(url: str, method: str, path: str, body: bytes, *, length: int | None = None) -> tuple[int, bytes]:
    """One request by hand; a `length` above len(body) announces more than is sent, then stops writing."""
    import socket
    import urllib.parse

    netloc = urllib.parse.urlsplit(url).netloc
    host, port = netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n")
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)  # the body stops here
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_a_failed_commit_changes_nothing_and_orphans_are_collected(exported, mirror: MirrorServer,
                                                                    tmp_path: Path) -> None:
    """A commit naming an object never uploaded, or cut short mid-body, leaves the branch, its kept commits and
    the folder as they were; an LFS object received but never committed is deleted once its link has expired
    (and a partial upload no connection writes any more), while the objects commits hold stay."""
    import hashlib
    import os
    import time

    _, folder = exported
    assert _push([str(folder), "me/tiny"], mirror.url, tmp_path / "home").returncode == 0
    root = tmp_path / "mirror"
    before = mirror.revision("me/tiny").commit
    listing = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))

    header = json.dumps({"key": "header", "value": {"summary": "bad", "parentCommit": before}})
    ghost = json.dumps({"key": "lfsFile", "value": {"path": "x.pth", "algo": "sha256", "oid": "a" * 64, "size": 3}})
    status, answer = _raw(mirror.url, "POST", "/api/models/me/tiny/commit/main", f"{header}\n{ghost}\n".encode())
    assert status == 400 and b"was not uploaded first" in answer
    line = json.dumps({"key": "file", "value": {"path": "new.txt", "encoding": "base64", "content": "aGk="}})
    body = f"{header}\n{line}\n".encode()
    status, answer = _raw(mirror.url, "POST", "/api/models/me/tiny/commit/main", body, length=len(body) + 100)
    assert status == 400 and b"ended early" in answer
    assert mirror.revision("me/tiny").commit == before
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == listing  # no temp folder left

    store = root / ".espzoo-lfs"
    orphan = b"never committed" * 100
    oid = hashlib.sha256(orphan).hexdigest()
    batch = {"operation": "upload", "objects": [{"oid": oid, "size": len(orphan)}]}
    status, answer = _raw(mirror.url, "POST", "/me/tiny.git/info/lfs/objects/batch", json.dumps(batch).encode())
    href = json.loads(answer.split(b"\r\n\r\n", 1)[1])["objects"][0]["actions"]["upload"]["href"]
    assert _raw(mirror.url, "PUT", href.split(mirror.url, 1)[1], orphan)[0] == 200
    partial = store / f".{oid}.dead.incomplete"
    partial.write_bytes(b"half")
    past = time.time() - mirror.link_ttl - 10
    for path in (store / oid, partial, *store.iterdir()):
        os.utime(path, (past, past))
    held = {p.name for p in store.iterdir() if not p.name.endswith(".incomplete") and p.name != oid}
    assert held and all((store / name).stat().st_nlink > 1 for name in held)  # linked by the commit

    changed = tmp_path / "v2"
    shutil.copytree(folder, changed)
    (changed / "README.md").write_text("changed\n")
    assert _push([str(changed), "me/tiny"], mirror.url, tmp_path / "home").returncode == 0
    assert {p.name for p in store.iterdir()} == held  # the orphan and the partial upload are gone
    assert _files(_pull(f"me/tiny@{before}", mirror.url, tmp_path / "home2")) == _files(folder)


class _RunsCode:
    """A pickle that runs a shell command when it is loaded (as a hostile model.pth would)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_code_running_pickle_is_neither_exported_nor_pushed(exported, mirror: MirrorServer, tmp_path: Path) -> None:
    """OUT/model.pth (or an exported folder's .pth) whose pickle asks for a Python callable: export and push refuse
    it in one sentence naming the file, before anything is written or uploaded, and the code never runs."""
    import torch

    out, folder = exported
    marker = tmp_path / "ran"
    evil = tmp_path / "evil"
    shutil.copytree(out, evil)
    state = torch.load(out / "model.pth", weights_only=True)
    torch.save({**state, "x": _RunsCode(marker)}, evil / "model.pth")
    evil_repo = tmp_path / "evil_repo"
    shutil.copytree(folder, evil_repo)
    (model,) = evil_repo.glob("exp/*/valid.acc.ave.pth")
    shutil.copyfile(evil / "model.pth", model)

    runs = {
        "export": (run_espzoo(["export", str(evil), "--out", str(tmp_path / "dest")], mirror.url, tmp_path / "home"),
                   evil / "model.pth"),
        "push OUT": (_push([str(evil), "me/evil"], mirror.url, tmp_path / "home"), evil / "model.pth"),
        "push folder": (_push([str(evil_repo), "me/evil"], mirror.url, tmp_path / "home"), model),
    }
    for what, (done, path) in runs.items():
        lines = done.stderr.strip().splitlines()
        assert done.returncode not in (0, None) and "Traceback" not in done.stderr, (what, done.stderr)
        assert lines == [f"error: {path} is not a weights-only checkpoint: its pickle asks for Python objects "
                         f"(posix.system) and would run code wherever it is loaded, so it is not published; train "
                         "the model again with espzoo finetune."], (what, done.stderr)
    assert not marker.exists()
    assert not (tmp_path / "dest").exists() and not list(tmp_path.glob(".dest.*"))
    with pytest.raises(MirrorError):
        mirror.revision("me/evil")


def _post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, str]:
    """A POST as the client sends it: (status, X-Error-Message)."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, ""
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("X-Error-Message") or ""


def _commit_body(*files: tuple[str, bytes]) -> bytes:
    import base64

    lines = [{"key": "header", "value": {"summary": "hostile"}}]
    lines += [{"key": "file", "value": {"path": p, "content": base64.b64encode(d).decode(), "encoding": "base64"}}
              for p, d in files]
    return "\n".join(json.dumps(line) for line in lines).encode()


def test_uploads_the_disk_refuses_are_answered_in_one_sentence(mirror: MirrorServer, tmp_path: Path,
                                                               capfd: pytest.CaptureFixture) -> None:
    """Names over 255 bytes, a NUL, a file over a folder, a 300-character repo name, `x.incomplete` (which the mirror
    never serves), a model org named `datasets`: 400 with a sentence, never a dropped connection; nothing lands;
    a client that sends half a request and stalls costs one log line, not a traceback (issue 27: 7, 13)."""
    import socket

    create = f"{mirror.url}/api/repos/create"
    assert _post(create, json.dumps({"name": "r", "organization": "me"}).encode())[0] == 200
    commit = f"{mirror.url}/api/models/me/r/commit/main"
    first = mirror.revision("me/r", token=TOKEN).commit
    cases = {
        "a name over 255 bytes": _commit_body(("a" * 300, b"x")),
        "a NUL": _commit_body(("x\x00y", b"x")),
        "a file over a folder": _commit_body(("a", b"x"), ("a/b", b"y")),
        "x.incomplete": _commit_body(("weights.incomplete", b"x")),
    }
    for what, body in cases.items():
        status, said = _post(commit, body)
        assert status == 400 and said.endswith(("rename it", "no file where the repo has a folder")), (what, said)
    assert mirror.revision("me/r", token=TOKEN).commit == first  # nothing landed
    for org, name in (("me", "n" * 300), ("datasets", "evil")):
        status, said = _post(create, json.dumps({"name": name, "organization": org}).encode())
        assert status == 400 and "choose another" in said or "not a valid repo id" in said, said
    assert not (mirror.source.root / "datasets").exists()

    capfd.readouterr()
    stalled, err = [], ""
    with MirrorServer(mirror.source.root, token=TOKEN, idle_timeout=0.3) as quick:
        host, port = quick.url.removeprefix("http://").split(":")
        for _ in range(3):
            client = socket.create_connection((host, int(port)))
            client.sendall(f"POST /api/models/me/r/commit/main HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
                           "\r\nContent-Length: 100000\r\n\r\n{\"key\": ".encode())
            stalled.append(client)
        deadline = time.monotonic() + 20
        while err.count("dropped the connection") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
            err += capfd.readouterr().err
        for client in stalled:
            client.close()
        time.sleep(0.5)
    err += capfd.readouterr().err
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == ["espzoo mirror: dropped the connection from 127.0.0.1: TimeoutError: timed "
                                        "out"] * 3, err


def test_a_commit_leaves_the_modes_a_plain_mkdir_and_open_give(exported, mirror: MirrorServer, tmp_path: Path) -> None:
    """After a push the repo's folders, its kept commits and its LFS objects have the umask's modes (0755/0644
    under umask 022), not mkdtemp's 0700 and mkstemp's 0600: other local readers of the mirror keep access
    (issue 27: 12)."""
    import os
    import stat

    _, folder = exported
    old = os.umask(0o022)
    try:
        assert _push([str(folder), "me/modes"], mirror.url, tmp_path / "home").returncode == 0
        changed = tmp_path / "changed"
        shutil.copytree(folder, changed)
        (changed / "README.md").write_text("changed\n")
        assert _push([str(changed), "me/modes"], mirror.url, tmp_path / "home").returncode == 0
    finally:
        os.umask(old)
    root = mirror.source.root
    paths = [p for p in root.rglob("*") if "modes" in p.as_posix() or ".espzoo-lfs" in p.as_posix()]
    assert any(p.suffix == ".pth" for p in paths) and any(".espzoo-commits" in p.as_posix() for p in paths)
    wrong = {p.relative_to(root).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths
             if stat.S_IMODE(p.stat().st_mode) != (0o755 if p.is_dir() else 0o644)}
    assert not wrong, wrong
