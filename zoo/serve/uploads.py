"""Uploads to the mirror: LFS objects received, commits (ndjson) applied to a repo folder, branches
moved, commits kept after their branch moved on, and what is left unreferenced collected.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espzoo.errors import MirrorError
from espzoo.serve.http import MAX_BODY, _body_chunks, _body_lines, _Handler, _origin, _read_body, _read_json_body
from espzoo.serve.sources import DATASETS, GATED_MARKER, HEX64, HIDDEN, PRIVATE, FolderSource, Revision, _link, is_lfs
from espzoo.utils.fs import public_mode, replace_dir

if TYPE_CHECKING:
    from espzoo.serve.server import MirrorServer


UPLOAD_STORE = ".espzoo-lfs"  # ROOT/.espzoo-lfs/<sha256>: LFS objects received, until a commit takes them


class Uploads:
    """The write side of a `--root` mirror, as the Hub answers huggingface_hub's upload calls:

    POST /api/repos/create                            {"name", "organization"} -> ROOT/<org>/<name>/ (409 if it exists)
    POST /api/models/<repo>/branch/<branch>           from main or {"startingPoint"} -> ROOT/<org>/<name>@<branch>/
    POST /api/validate-yaml                           the card's front matter (no warnings)
    POST /api/models/<repo>/preupload/<rev>           which files go by LFS (the mirror's own rule, is_lfs), their oid
    POST /<repo>.git/info/lfs/objects/batch           where to PUT each LFS object not yet held (a signed link)
    PUT  /lfs-upload/<sha256>?size&expires&sig        the object's bytes, checked against its sha256 and size
    POST /api/models/<repo>/commit/<rev>              ndjson: header, file (base64), lfsFile, deletedFile/Folder

    A private repo (`create_repo(private=True)`) is served only to the server's current upload token (its marker
    holds no token); to anyone else it does not exist (404, as for a missing repo).
    A commit builds the new folder beside the branch's (unchanged files hard-linked) and swaps it in, under one lock:
    the branch then serves the new files under a new commit id (a hash of the content, as for any folder repo).
    The commit replaced and the new one are both kept (FolderSource.keep), so either resolves by its id for good.
    A commit that fails (a bad line, an object never uploaded, a body cut short) changes nothing anyone sees.
    Received objects no commit links (never committed once their link expired) and partial uploads no connection
    is still writing are deleted when the server starts and after each commit.
    Every route but the PUT (authorized by its signed link, as the Hub's storage links are) needs the server's token
    as a Bearer token; without a token configured, uploads are refused."""

    def __init__(self, mirror: MirrorServer, token: str | None):
        self.mirror = mirror
        self.token = token
        self.source: FolderSource = mirror.source  # type: ignore[assignment]
        self.root: Path = self.source.root
        self.store = self.root / UPLOAD_STORE
        self._lock = threading.Lock()
        self._collect()

    def handle(self, handler: _Handler, method: str) -> None:
        pieces = [urllib.parse.unquote(p) for p in urllib.parse.urlsplit(handler.path).path.split("/")[1:]]
        if method == "PUT":
            if len(pieces) == 2 and pieces[0] == "lfs-upload" and HEX64.fullmatch(pieces[1]):
                return self._receive(handler, pieces[1])
            raise MirrorError(404, None, f"unknown upload route /{'/'.join(pieces)}")
        self._authorize(handler.token())
        if pieces[:3] == ["api", "repos", "create"]:
            return self._create_repo(handler)
        if pieces[:1] == ["api"] and pieces[1:2] == ["validate-yaml"]:
            _read_body(handler, MAX_BODY)
            return handler._send_json({"errors": [], "warnings": []}, head=False)
        if len(pieces) == 6 and pieces[1].endswith(".git") and pieces[2:] == ["info", "lfs", "objects", "batch"]:
            return self._batch(handler, f"{pieces[0]}/{pieces[1][:-4]}")
        if pieces[:2] == ["api", "models"] and len(pieces) >= 6:
            repo_id, action, rev = "/".join(pieces[2:4]), pieces[4], "/".join(pieces[5:])
            if action == "preupload":
                return self._preupload(handler, repo_id, rev)
            if action == "commit":
                return self._commit(handler, repo_id, rev)
            if action == "branch":
                return self._branch(handler, repo_id, rev)
        raise MirrorError(404, None, f"unknown upload route /{'/'.join(pieces)}")

    def _authorize(self, token: str | None) -> None:
        if self.token is None:
            raise MirrorError(403, None, "this mirror takes no uploads; start it with --token (or HF_TOKEN) to "
                                         "accept them")
        if not token or not hmac.compare_digest(token.encode(), self.token.encode()):
            raise MirrorError(401, None, "Invalid credentials in Authorization header")

    # -- repos and branches --------------------------------------------------------------------

    def _create_repo(self, handler: _Handler) -> None:
        body = _read_json_body(handler)
        kind = body.get("type") or "model"
        if kind != "model":
            raise MirrorError(400, None, f"this mirror takes model repos, not {kind} repos")
        org, name = str(body.get("organization") or ""), str(body.get("name") or "")
        folder = self._repo_folder(org, name)
        answer = {"url": f"{_origin(handler)}/{org}/{name}", "name": f"{org}/{name}"}
        if folder.exists():  # the client's exist_ok takes the 409, then reads the url from it (as from the Hub's)
            message = f"You already created this model repo: {org}/{name}"
            return handler._send_json({**answer, "error": message}, head=False, status=409,
                                      headers={"X-Error-Message": message})
        folder.mkdir(parents=True)
        if body.get("visibility") == "private" or body.get("private") is True:
            (folder / GATED_MARKER).write_text(PRIVATE + "\n")  # readable with the server's upload token only
        handler._send_json(answer, head=False)

    def _branch(self, handler: _Handler, repo_id: str, branch: str) -> None:
        body = _read_json_body(handler)
        main = self._folder(repo_id, "main")
        dest = self._folder(repo_id, branch)
        if dest.exists():
            raise MirrorError(409, None, f"Branch {branch} already exists")
        start = self.mirror.revision(repo_id, body.get("startingPoint") or "main", handler.token())
        with self._lock:
            self.source.keep(start)
            tmp = Path(tempfile.mkdtemp(prefix=f".{main.name}.", dir=main.parent))
            public_mode(tmp, directory=True)  # mkdtemp makes 0700: other readers of ROOT keep access
            try:
                for file in start.files.values():
                    _link(file.local, tmp / file.path)
                tmp.rename(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        handler._send_json({}, head=False)

    def _repo_folder(self, org: str, name: str) -> Path:
        if not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", part) for part in (org, name)) or \
                ".." in org + name:
            raise MirrorError(400, None, f"{org[:100]}/{name[:100]} is not a valid repo id (ORG/NAME: letters, digits, "
                                         ". _ -, at most 96 each)")
        if org == DATASETS:  # ROOT/datasets/ holds the dataset repos: a model org of that name would write there
            raise MirrorError(400, None, f"{org}/{name}: '{DATASETS}' is not a model org name on this mirror (it holds "
                                         "the dataset repos); choose another")
        return self.root / org / name

    def _folder(self, repo_id: str, rev: str) -> Path:
        """The folder of branch `rev` of repo_id (main: ROOT/<org>/<name>, else ROOT/<org>/<name>@<rev>)."""
        org, _, name = repo_id.partition("/")
        folder = self._repo_folder(org, name)
        if not folder.is_dir():
            raise MirrorError(404, "RepoNotFound", f"Repository {repo_id} not found")
        if rev == "main":
            return folder
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", rev):
            raise MirrorError(400, None, f"branch {rev!r}: this mirror's branch names are letters, digits, . _ -")
        return folder.with_name(f"{name}@{rev}")

    # -- LFS objects ---------------------------------------------------------------------------

    def _preupload(self, handler: _Handler, repo_id: str, rev: str) -> None:
        body = _read_json_body(handler)
        current = self._current(repo_id, rev, handler.token())
        answer = []
        for entry in body.get("files") or []:
            path, size = str(entry.get("path")), int(entry.get("size") or 0)
            lfs = is_lfs(path, size, self.mirror.source.lfs_threshold)  # type: ignore[union-attr]
            held = current.files.get(path) if current else None
            oid = (held.sha256 if lfs else None if held and held.sha256 else held.blob_id) if held else None
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        handler._send_json({"files": answer, "commitOid": current.commit if current else None}, head=False)

    def _batch(self, handler: _Handler, repo_id: str) -> None:
        body = _read_json_body(handler)
        self._folder(repo_id, "main")  # 404 for a repo that does not exist
        if body.get("operation") != "upload":
            raise MirrorError(400, None, "this route takes LFS uploads only (downloads go through resolve)")
        objects = []
        for obj in body.get("objects") or []:
            oid, size = str(obj.get("oid")), obj.get("size")
            if not HEX64.fullmatch(oid) or not isinstance(size, int) or size < 0:
                raise MirrorError(400, None, "each LFS object needs a sha256 oid and a size")
            entry: dict[str, Any] = {"oid": oid, "size": size}
            held = self.store / oid
            if held.is_file() and held.stat().st_size == size:  # held: no action, the client skips it
                if held.stat().st_nlink == 1:  # in no commit yet: _collect spares it a link's lifetime from now on,
                    os.utime(held)  # so the commit about to name it finds it (a linked one is never collected)
            else:
                query = self._sign(oid, size)
                entry["actions"] = {"upload": {"href": f"{_origin(handler)}/lfs-upload/{oid}?{query}"}}
            objects.append(entry)
        handler._send_json({"transfer": "basic", "objects": objects}, head=False)

    def _sign(self, oid: str, size: int) -> str:
        expires = str(int(time.time() + self.mirror.link_ttl))
        sig = self.mirror._signature(f"upload:{oid}:{size}", expires)
        return urllib.parse.urlencode({"size": size, "expires": expires, "sig": sig})

    def _receive(self, handler: _Handler, oid: str) -> None:
        """PUT /lfs-upload/<oid>: the bytes, streamed to a temporary file, kept only if sha256 and size match."""
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(handler.path).query))
        size = query.get("size", "")
        if not size.isdigit() or not self.mirror._link_valid(f"upload:{oid}:{size}", query.get("expires", ""),
                                                             query.get("sig", "")):
            raise MirrorError(403, None, "this upload link is invalid or has expired; ask the batch route again")
        self.store.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{oid}.", suffix=".incomplete", dir=self.store)
        tmp = Path(tmp_name)
        try:
            digest, written = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                for chunk in _body_chunks(handler, int(size)):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
            if written != int(size) or digest.hexdigest() != oid:
                raise MirrorError(400, None, f"the upload of {oid} has {written} bytes or another sha256; resend it")
            public_mode(tmp)  # mkstemp makes 0600: the object becomes a served file
            tmp.replace(self.store / oid)
        finally:
            tmp.unlink(missing_ok=True)
        handler._send_json({}, head=False)

    def _collect(self) -> None:
        """Delete from the store what no commit can reach: an object only the store links (st_nlink 1: no branch
        or kept commit holds it) once an upload link to it would have expired, and a partial upload that no
        connection has written to for twice the idle timeout (a server killed mid-PUT leaves one)."""
        if not self.store.is_dir():
            return
        now = time.time()
        for entry in self.store.iterdir():
            try:
                stat = entry.stat()
            except OSError:
                continue
            if entry.name.endswith(".incomplete"):
                stale = now - stat.st_mtime > 2 * self.mirror.idle_timeout
            else:
                stale = stat.st_nlink == 1 and now - stat.st_mtime > self.mirror.link_ttl
            if stale:
                entry.unlink(missing_ok=True)

    # -- commits -------------------------------------------------------------------------------

    def _current(self, repo_id: str, rev: str, token: str | None) -> Revision | None:
        self._folder(repo_id, "main")
        try:
            return self.mirror.revision(repo_id, rev, token)
        except MirrorError:
            return None

    def _commit(self, handler: _Handler, repo_id: str, rev: str) -> None:
        dest = self._folder(repo_id, rev)
        if not dest.is_dir():
            raise MirrorError(404, "RevisionNotFound", f"Invalid rev id: {rev} (create the branch first)")
        with self._lock:
            current = self.mirror.revision(repo_id, rev, handler.token())
            self.source.keep(current)  # a pull pinned to the commit being replaced still finds it
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            public_mode(tmp, directory=True)  # mkdtemp makes 0700: other readers of ROOT keep access
            try:
                for file in current.files.values():
                    _link(file.local, tmp / file.path)
                if (dest / GATED_MARKER).is_file():
                    shutil.copyfile(dest / GATED_MARKER, tmp / GATED_MARKER)
                summary = self._apply(handler, tmp, current)
                replace_dir(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            made = self.mirror.revision(repo_id, rev, handler.token())
            self.source.keep(made)
            self._collect()
            commit = made.commit
        handler._send_json({"commitUrl": f"{_origin(handler)}/{repo_id}/commit/{commit}", "commitOid": commit,
                            "commitMessage": summary, "pullRequestUrl": None}, head=False)

    def _apply(self, handler: _Handler, tmp: Path, current: Revision) -> str:
        """Carry out the commit's ndjson lines in `tmp` (a copy of the branch); return its summary."""
        summary = ""
        for line in _body_lines(handler):
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (ValueError, KeyError, TypeError) as exc:
                raise MirrorError(400, None, f"a commit line is not a {{key, value}} JSON object ({exc})") from exc
            if key == "header":
                parent = value.get("parentCommit")
                if parent and parent != current.commit:
                    raise MirrorError(412, None, f"the branch is at {current.commit}, not the parent {parent}")
                summary = str(value.get("summary") or "")
                continue
            target = _inside_repo(tmp, str(value.get("path") or ""))
            if key in ("file", "lfsFile"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)  # a hard link shared with the old folder: replace, never write into
            if key == "file":
                if value.get("encoding") != "base64":
                    raise MirrorError(400, None, "regular files must be sent base64-encoded")
                import base64

                target.write_bytes(base64.b64decode(value.get("content") or ""))
            elif key == "lfsFile":
                oid = str(value.get("oid"))
                if not HEX64.fullmatch(oid) or not (self.store / oid).is_file():
                    raise MirrorError(400, None, f"LFS object {oid} of {value.get('path')} was not uploaded first")
                _link(self.store / oid, target)
            elif key == "deletedFile":
                target.unlink(missing_ok=True)
            elif key == "deletedFolder":
                shutil.rmtree(target, ignore_errors=True)
            else:
                raise MirrorError(400, None, f"unknown commit operation {key!r}")
        return summary


def _inside_repo(folder: Path, path: str) -> Path:
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") or p in HIDDEN for p in parts):
        raise MirrorError(400, None, f"{path!r} is not a path inside a repo")
    if parts[-1].endswith(".incomplete"):  # never served (a partial download's name): a 200 would lose the file
        raise MirrorError(400, None, f"{path!r}: this mirror does not serve files named *.incomplete (partial "
                                     "downloads); rename it")
    return folder.joinpath(*parts)


