"""An HF-compatible HTTP endpoint over a folder of repos or the local HF cache.

Point `HF_ENDPOINT=http://host:port` at it and the real huggingface_hub client downloads from it
(`hf_hub_download`, `snapshot_download`, `model_info`, `list_repo_tree`, `list_models`): an air-gapped
cluster gets the models its users pulled once, and the tests get a Hub on 127.0.0.1.

    server = MirrorServer(root="mirror/")          # mirror/<org>/<name>/ holds a repo's files
    url = server.start()                           # serves in a thread; http://127.0.0.1:PORT
    ...
    server.stop()

What the client needs from each route (tests/test_mirror.py drives the real client through each), in short:
resolve answers HEAD/GET with `X-Repo-Commit`, `ETag` (git blob sha1) and `Content-Length`, honours
`Range`; files the Hub would keep in LFS answer with a 302 to a second origin plus `X-Linked-Etag` (sha256) and
`X-Linked-Size`; errors carry `X-Error-Code` so the client raises its own exception types.

Dataset repos (`repo_type="dataset"`: /api/datasets/... and /datasets/<org>/<name>/resolve/...) are served the same
way from ROOT/datasets/<org>/<name>/ (the Hub reserves the name `datasets`, so no model org can hold it) or, from the
cache, its datasets--<org>--<name> folders.

A folder repo's branch `main` is ROOT/<org>/<name>/ and each ROOT/<org>/<name>@<ref>/ beside it adds a tag or
branch; a commit id is a hash of the files' paths and contents: the same files give the same id, any change gives
a new one. Every commit an upload makes, and the one it replaces, is kept (hard links, so only changed files take
space) in ROOT/.espzoo-commits/<org>/<name>/<commit>/: a user who pinned an older commit still resolves it after
a push, while the branch moves to the newest. `--from-cache` serves every cached
revision with the cache's refs as branches. Built with `test_hooks=True` (by the tests, never by `espzoo mirror
serve`), `Faults` injects failures (500s, a connection cut mid-body, slow or throttled bodies) and `GET
/_espzoo/stats` shows the requests served.

Served to other machines, it holds: nothing outside the root is served or listed (links leading out are
ignored); LFS files are reached only through signed links that expire (so a gated repo's bytes need the token
that resolved them); idle connections time out and at most `max_workers` connections are served at once.
Standard library only (and espzoo's stdlib-only _hf/repo rules): nothing here imports torch, espnet or
huggingface_hub.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from glob import escape as glob_escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from espzoo._fs import public_mode, replace_dir
from espzoo._hf import file_id, repo_folder
from espzoo._hf import hub_cache_dir as hf_hub_cache
from espzoo.errors import MirrorError  # noqa: F401 (re-exported)
from espzoo.repo import read_front_matter

# Files the Hub stores in LFS whatever their size (a subset of the Hub's default .gitattributes),
# and the size above which any file is LFS. LFS files are answered with a redirect to the second origin.
LFS_PATTERNS = (
    "*.pth", "*.pt", "*.bin", "*.ckpt", "*.safetensors", "*.onnx", "*.npz", "*.npy", "*.h5", "*.pkl",
    "*.pickle", "*.model", "*.zip", "*.tar", "*.tar.*", "*.tgz", "*.gz", "*.xz", "*.zst", "*.7z", "*.flac",
    "*.wav", "*.mp3", "*.parquet", "*.arrow", "*tfevents*",
)
LFS_THRESHOLD = 10 * 1024 * 1024
# Marker files a mirror folder may hold; never served as repo files.
GATED_MARKER = ".espzoo-gated"
# What a private repo's marker holds: no token (a readable copy of it would be a credential, and a restart with a new
# --token would lock its owner out); the server's current upload token reads it.
PRIVATE = "private: readable with the mirror's upload token"
HIDDEN = {".git", GATED_MARKER}
HEX40 = re.compile(r"[0-9a-f]{40}")
HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024
LOG_LIMIT = 10_000
IDLE_TIMEOUT_S = 60.0  # an idle or half-sent connection is closed after this long
MAX_WORKERS = 64  # connections served at once, per port
LINK_TTL_S = 3600.0  # how long a signed LFS link stays valid (the Hub's CDN links last about an hour)
MAX_BODY = 64 * 1024
DATASETS = "datasets"  # ROOT/datasets/<org>/<name>/ holds dataset repos, as the Hub's URLs do
KEPT = ".espzoo-commits"  # ROOT/.espzoo-commits/<org>/<name>/<commit>/: commits kept after their branch moved on


# ---------------------------------------------------------------------------------------------
# What is served: repos, revisions, files


@dataclass(frozen=True)
class RepoFile:
    """One file of one revision: where its bytes are and the ids the Hub gives it."""

    path: str  # inside the repo, with '/'
    local: Path
    size: int
    blob_id: str  # git blob sha1 (of the LFS pointer for LFS files), as the Hub's `blobId`/`oid`
    sha256: str | None = None  # set for LFS files

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id

    def lfs_pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()


@dataclass(frozen=True)
class Revision:
    repo_id: str
    commit: str
    files: dict[str, RepoFile]
    last_modified: float
    gated: str | None = None  # the token a gated repo wants ("" = any token, PRIVATE = the upload token)

    def card_data(self) -> dict[str, Any]:
        readme = self.files.get("README.md")
        return read_front_matter(readme.local) if readme else {}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hash_file(path: Path, *, lfs: bool) -> tuple[str, str | None]:
    """(git blob sha1, None) for a regular file; (sha1 of its LFS pointer, sha256) for an LFS file."""
    digest = file_id(path, lfs=lfs)
    if not lfs:
        return digest, None
    sha256, size = digest, path.stat().st_size
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    return git_blob_sha1(pointer), sha256


def is_lfs(path: str, size: int, threshold: int = LFS_THRESHOLD) -> bool:
    name = path.rsplit("/", 1)[-1]
    return size > threshold or any(fnmatch.fnmatch(name, pattern) for pattern in LFS_PATTERNS)


def folder_commit(files: dict[str, RepoFile]) -> str:
    """A folder repo's commit id: a hash of its sorted (path, content id) pairs."""
    digest = hashlib.sha1(b"espzoo-folder-v1\n")
    for path in sorted(files):
        digest.update(f"{path}\0{files[path].etag}\n".encode())
    return digest.hexdigest()


class FolderSource:
    """Repos as plain folders: ROOT/<org>/<name>/ holds one repo's files (a hub clone without .git) as branch main;
    a sibling ROOT/<org>/<name>@<ref>/ adds the tag or branch <ref> (an older release kept beside main)."""

    def __init__(self, root: str | Path, lfs_threshold: int = LFS_THRESHOLD, exclude: tuple[str, ...] = ()):
        self.root = Path(root)
        self.real_root = self.root.resolve()
        self.lfs_threshold = lfs_threshold
        self.exclude = exclude  # top-level folders that are not orgs (ROOT/datasets beside the model orgs)
        self._hashes: dict[tuple[int, int, int, int], tuple[str, str | None]] = {}
        self._lock = threading.Lock()

    def repo_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            f"{org.name}/{repo.name}"
            for org in self.root.iterdir() if org.is_dir() and not org.name.startswith(".")
            and org.name not in self.exclude
            for repo in org.iterdir()
            if repo.is_dir() and not repo.name.startswith(".") and "@" not in repo.name and self._inside(repo)
        )

    def _inside(self, path: Path) -> bool:
        return _within(path, self.real_root)

    def revisions(self, repo_id: str) -> dict[str, Revision]:
        """Ref name -> revision: main from the repo folder, <ref> from each <name>@<ref> folder."""
        folder = self._folder(repo_id)
        if folder is None:
            return {}
        gated = _gate(folder)
        revisions = {"main": self._revision(repo_id, folder, gated)}
        for other in sorted(folder.parent.glob(f"{glob_escape(folder.name)}@*")):
            ref = other.name.split("@", 1)[1]
            if other.is_dir() and ref and ref != "main" and self._inside(other):
                revisions[ref] = self._revision(repo_id, other, gated)
        return revisions

    def kept(self, repo_id: str, commit: str) -> Revision | None:
        """The kept commit `commit` of repo_id (see `keep`), or None. A kept file changed in place since (through
        a hard link shared with a branch folder edited by hand) changes the content's id: that commit is then
        not found rather than served with other bytes."""
        folder = self._folder(repo_id)
        snapshot = self._kept_folder(repo_id, commit)
        if folder is None or snapshot is None or not snapshot.is_dir():
            return None
        revision = self._revision(repo_id, snapshot, _gate(folder))  # a private repo's old commits stay private
        return revision if revision.commit == commit else None

    def keep(self, revision: Revision) -> None:
        """Keep `revision`'s files under its commit id (hard links, written once), so that the commit still
        resolves after its branch has moved on: pulls pinned by commit keep working."""
        dest = self._kept_folder(revision.repo_id, revision.commit)
        if dest is None or dest.is_dir() or not revision.files:  # an empty repo has nothing to pin
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{revision.commit}.", dir=dest.parent))
        public_mode(tmp, directory=True)  # mkdtemp makes 0700: other readers of ROOT keep access
        try:
            for file in revision.files.values():
                _link(file.local, tmp / file.path)
            try:
                tmp.rename(dest)
            except OSError:
                if not dest.is_dir():  # else kept meanwhile by another process (`mirror add` beside a server)
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _kept_folder(self, repo_id: str, commit: str) -> Path | None:
        org, _, name = repo_id.partition("/")
        return self.root / KEPT / org / name / commit if HEX40.fullmatch(commit) else None

    def _revision(self, repo_id: str, folder: Path, gated: str | None) -> Revision:
        files: dict[str, RepoFile] = {}
        newest = 0.0
        for local in sorted(_walk(folder, self.real_root)):
            rel = local.relative_to(folder).as_posix()
            stat = local.stat()
            newest = max(newest, stat.st_mtime)
            files[rel] = self._file(rel, local, stat)
        return Revision(repo_id, folder_commit(files), files, newest or folder.stat().st_mtime, gated)

    def _folder(self, repo_id: str) -> Path | None:
        parts = repo_id.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") or p.startswith(".") or "@" in p for p in parts):
            return None
        if parts[0] in self.exclude:
            return None
        folder = self.root / parts[0] / parts[1]
        return folder if folder.is_dir() and self._inside(folder) else None

    def _file(self, rel: str, local: Path, stat: os.stat_result) -> RepoFile:
        lfs = is_lfs(rel, stat.st_size, self.lfs_threshold)
        # Keyed by the inode, not the path: a kept commit's hard links are not hashed again.
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        # Hash each file once per content (hashing a big checkpoint takes seconds); the lock keeps
        # concurrent first requests from hashing the same repo several times.
        with self._lock:
            ids = self._hashes.get(key)
            if ids is None or (ids[1] is not None) != lfs:
                ids = self._hashes[key] = hash_file(local, lfs=lfs)
        return RepoFile(rel, local, stat.st_size, ids[0], ids[1])


def _gate(folder: Path) -> str | None:
    """The token a gated repo's folder wants ("" = any), or None when it is public."""
    gate = folder / GATED_MARKER
    return gate.read_text().strip() if gate.is_file() else None


def _walk(folder: Path, root: Path) -> Iterator[Path]:
    """The files under `folder`, following links only while their real path stays inside `root` (a link that
    leads out of the served tree would publish any file the server can read)."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = os.path.realpath(dirpath)
        kept = []
        for d in dirnames:
            real = os.path.realpath(os.path.join(dirpath, d))
            loop = here == real or here.startswith(real + os.sep)  # a link to this folder or one above it
            if d not in HIDDEN and not loop and _within(Path(real), root):
                kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            path = Path(dirpath) / name
            if name not in HIDDEN and not name.endswith(".incomplete") and _within(path, root):
                yield path


def _within(path: Path, root: Path) -> bool:
    """Whether `path`'s real path (links followed) is `root` (already real) or inside it."""
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root).rstrip(os.sep) + os.sep)


class CacheSource:
    """Every cached revision of every model in an HF cache (HF_HUB_CACHE); refs become branches.

    The cache names each blob by its etag (sha256 for LFS files, git sha1 otherwise), so no file is re-hashed."""

    def __init__(self, cache_dir: str | Path, repo_type: str = "model"):
        self.cache_dir = Path(cache_dir)
        self.real_root = self.cache_dir.resolve()
        self.repo_type = repo_type

    def repo_ids(self) -> list[str]:
        if not self.cache_dir.is_dir():
            return []
        ids = []
        for folder in self.cache_dir.glob(f"{self.repo_type}s--*"):
            parts = folder.name.split("--")
            if len(parts) == 3 and (folder / "snapshots").is_dir() and _within(folder, self.real_root):
                ids.append(f"{parts[1]}/{parts[2]}")
        return sorted(ids)

    def revisions(self, repo_id: str) -> dict[str, Revision]:
        folder = self.cache_dir / repo_folder(repo_id, self.repo_type)
        snapshots = folder / "snapshots"
        if "/" not in repo_id or not snapshots.is_dir() or not _within(folder, self.real_root):
            return {}
        by_commit = {
            snap.name: self._revision(repo_id, snap) for snap in snapshots.iterdir() if HEX40.fullmatch(snap.name)
        }
        revisions: dict[str, Revision] = {}
        refs = folder / "refs"
        if refs.is_dir():
            for ref in refs.rglob("*"):
                if ref.is_file():
                    commit = ref.read_text().strip()
                    if commit in by_commit:
                        revisions[ref.relative_to(refs).as_posix()] = by_commit[commit]
        if "main" not in revisions and by_commit:  # no ref (pulled by commit only): newest snapshot stands in
            revisions["main"] = max(by_commit.values(), key=lambda r: r.last_modified)
        for commit, revision in by_commit.items():
            revisions.setdefault(commit, revision)
        return revisions

    def _revision(self, repo_id: str, snapshot: Path) -> Revision:
        files: dict[str, RepoFile] = {}
        for local in _walk(snapshot, self.real_root):
            rel = local.relative_to(snapshot).as_posix()
            try:
                blob = local.resolve(strict=True)
                size = blob.stat().st_size
            except OSError:
                continue  # a dangling link: the blob was deleted
            if HEX64.fullmatch(blob.name):
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{blob.name}\nsize {size}\n"
                files[rel] = RepoFile(rel, blob, size, git_blob_sha1(pointer.encode()), blob.name)
            elif HEX40.fullmatch(blob.name):
                files[rel] = RepoFile(rel, blob, size, blob.name)
            else:  # not a symlinked cache (e.g. Windows copies): hash it
                blob_id, sha256 = hash_file(blob, lfs=is_lfs(rel, size))
                files[rel] = RepoFile(rel, blob, size, blob_id, sha256)
        return Revision(repo_id, snapshot.name, files, snapshot.stat().st_mtime)

    def kept(self, repo_id: str, commit: str) -> Revision | None:
        """None: every cached commit is already one of `revisions`."""
        return None


# ---------------------------------------------------------------------------------------------
# Fault injection and request counting (for tests)


@dataclass
class Faults:
    """Failures to inject. `fail_first`: answer the first K requests with `fail_status`;
    `drop_after`: cut the connection after N body bytes, the first time each file is sent;
    `delay`: seconds to wait before answering; `rate`: bytes per second a body is sent at;
    `ignore_range`: answer every GET with the whole file (200), as a server without Range support does."""

    fail_first: int = 0
    fail_status: int = 500
    drop_after: int | None = None
    delay: float = 0.0
    rate: int | None = None
    ignore_range: int = 0

    @classmethod
    def from_json(cls, body: bytes) -> Faults:
        """The body of POST /_espzoo/faults: a JSON object of these fields; ValueError for anything else."""
        data = json.loads(body or b"{}")  # JSONDecodeError is a ValueError
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        faults = cls()
        for key, value in data.items():
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown fault {key!r}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{key} must be a number")
            setattr(faults, key, value)
        return faults

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """'fail_first=2,drop_after=1000000,delay=0.5,rate=5000000' (the ESPZOO_MIRROR_FAULTS form)."""
        faults = cls()
        for item in filter(None, (p.strip() for p in (text or "").split(","))):
            key, _, value = item.partition("=")
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown mirror fault {key!r}; use fail_first, fail_status, drop_after, delay, rate, "
                                 "ignore_range.")
            setattr(faults, key, float(value) if key == "delay" else int(float(value)))
        return faults


_NO_FAULTS = Faults()


@dataclass
class Stats:
    """Requests served (the /_espzoo/ control routes are not counted)."""

    requests: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, entry: dict[str, Any]) -> int:
        with self._lock:
            self.requests += 1
            self.log.append(entry)
            if len(self.log) > LOG_LIMIT:  # a long-running mirror keeps the recent requests only
                del self.log[: len(self.log) - LOG_LIMIT]
            return self.requests

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.log.clear()

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "log": list(self.log)}


# ---------------------------------------------------------------------------------------------
# The server


class MirrorServer:
    """Serve `root` (a folder of ORG/NAME repos) or, with from_cache, the HF cache, on host:port.

    LFS files are served by a second server on `lfs_port` (the client needs the redirect to leave the origin).
    `start()` runs both in daemon threads and returns the URL; `serve_forever()` blocks (the CLI)."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        from_cache: bool = False,
        cache_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        lfs_port: int = 0,
        lfs_threshold: int = LFS_THRESHOLD,
        faults: Faults | None = None,
        log_file: str | Path | None = None,
        verbose: bool = False,
        test_hooks: bool = False,
        idle_timeout: float = IDLE_TIMEOUT_S,
        max_workers: int = MAX_WORKERS,
        link_ttl: float = LINK_TTL_S,
        token: str | None = None,
    ):
        if (root is None) == (not from_cache):
            raise ValueError("serve either a folder (root) or the HF cache (from_cache=True), not both or neither.")
        if from_cache:
            self.source: FolderSource | CacheSource = CacheSource(cache_dir or hf_hub_cache())
            self.dataset_source: FolderSource | CacheSource = CacheSource(cache_dir or hf_hub_cache(), "dataset")
        else:
            if not Path(root).is_dir():  # type: ignore[arg-type]
                raise FileNotFoundError(f"mirror root {root} is not a folder; create it or pass --from-cache.")
            self.source = FolderSource(root, lfs_threshold, exclude=(DATASETS,))  # type: ignore[arg-type]
            self.dataset_source = FolderSource(Path(root) / DATASETS, lfs_threshold)  # type: ignore[arg-type]
        if faults is not None and not test_hooks:
            raise ValueError("faults are a test hook: build the server with test_hooks=True.")
        # Test hooks (injected faults, the /_espzoo/ stats and control routes) exist only on servers the tests
        # build; `espzoo mirror serve` never has them, so no client can switch failures on or read others' paths.
        self.test_hooks = test_hooks
        self.faults = faults or Faults()
        self.stats = Stats()
        self.idle_timeout = idle_timeout
        self.link_ttl = link_ttl
        # Signs the LFS redirect URLs; a new key per server, so links die with the process (and after link_ttl).
        self._link_key = secrets.token_bytes(32)
        self.verbose = verbose
        self.log_file = Path(log_file) if log_file else None
        self._dropped: set[str] = set()
        self._fault_lock = threading.Lock()
        self._blobs: dict[str, RepoFile] = {}  # sha256 -> file, for the LFS origin
        # Uploads (HfApi.create_repo/upload_folder) go into a --root folder; each needs `token` (none: all refused).
        self.uploads = Uploads(self, token) if isinstance(self.source, FolderSource) else None
        self._http = _Server((host, port), _ApiHandler, self, max_workers)
        self._lfs = _Server((host, lfs_port), _LfsHandler, self, max_workers)
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return _url(self._http)

    @property
    def lfs_url(self) -> str:
        return _url(self._lfs)

    def start(self) -> str:
        for server in (self._http, self._lfs):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.url

    def serve_forever(self) -> None:
        thread = threading.Thread(target=self._lfs.serve_forever, daemon=True)
        thread.start()
        self._threads.append(thread)
        try:
            self._http.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        for server in (self._http, self._lfs):
            server.closing = True
        for server in (self._http, self._lfs):
            if self._threads:  # shutdown() waits for serve_forever, which never ran otherwise
                server.shutdown()
            server.server_close()
        self._threads.clear()

    def __enter__(self) -> MirrorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lookups -------------------------------------------------------------------------------

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        return self._source(repo_type).repo_ids()

    def _source(self, repo_type: str) -> FolderSource | CacheSource:
        return self.dataset_source if repo_type == "dataset" else self.source

    def revision(self, repo_id: str, rev: str | None = None, token: str | None = None,
                 repo_type: str = "model") -> Revision:
        revisions = self._source(repo_type).revisions(repo_id)
        if not revisions:
            raise MirrorError(404, "RepoNotFound", f"Repository {repo_id} not found")
        main = revisions.get("main") or next(iter(revisions.values()))
        if main.gated == PRIVATE and not self._may_read(main.gated, token):
            # As the Hub answers: a private repo the caller may not read is not there (its existence is not told).
            raise MirrorError(404, "RepoNotFound", f"Repository {repo_id} not found")
        if main.gated is not None and not self._may_read(main.gated, token):
            raise MirrorError(401, "GatedRepo", f"Access to model {repo_id} is restricted; pass a token")
        rev = rev or "main"
        found = revisions.get(rev) or next((r for r in revisions.values() if r.commit == rev), None)
        found = found or self._source(repo_type).kept(repo_id, rev)  # a commit its branch has moved on from
        if found is None:
            raise MirrorError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        for file in found.files.values():
            if file.sha256:
                self._blobs[file.sha256] = file
        return found

    def _may_read(self, gate: str, token: str | None) -> bool:
        """Whether `token` opens a repo gated by `gate` (see Revision.gated)."""
        want = (self.uploads.token if self.uploads is not None else None) if gate == PRIVATE else gate
        if not token or (gate == PRIVATE and not want):
            return False
        return not want or hmac.compare_digest(token.encode(), want.encode())

    def blob(self, sha256: str, query: dict[str, str]) -> RepoFile:
        """The LFS file a signed link names; 403 for a link this server did not sign or that has expired."""
        if not self._link_valid(sha256, query.get("expires", ""), query.get("sig", "")):
            raise MirrorError(403, None, "this download link is invalid or has expired; resolve the file again")
        file = self._blobs.get(sha256)
        if file is None or not file.local.is_file():
            raise MirrorError(404, "EntryNotFound", f"No LFS object {sha256}")
        return file

    def sign_link(self, sha256: str) -> str:
        """`expires=..&sig=..` for /lfs/<sha256>: only a client that resolved the file (with a token, for a gated
        repo) learns it, as the Hub's CDN links are signed and expire."""
        expires = str(int(time.time() + self.link_ttl))
        return urllib.parse.urlencode({"expires": expires, "sig": self._signature(sha256, expires)})

    def _signature(self, sha256: str, expires: str) -> str:
        return hmac.new(self._link_key, f"{sha256}:{expires}".encode(), hashlib.sha256).hexdigest()

    def _link_valid(self, sha256: str, expires: str, sig: str) -> bool:
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(self._signature(sha256, expires), sig)

    # -- faults --------------------------------------------------------------------------------

    @property
    def active_faults(self) -> Faults:
        """The faults in force: none unless the server was built with test_hooks."""
        return self.faults if self.test_hooks else _NO_FAULTS

    def should_fail(self, count: int) -> bool:
        return count <= self.active_faults.fail_first

    def drop_point(self, etag: str) -> int | None:
        """How many bytes to send before cutting the connection, the first time this file is sent."""
        with self._fault_lock:
            if self.active_faults.drop_after is None or etag in self._dropped:
                return None
            self._dropped.add(etag)
            return self.active_faults.drop_after

    def reset(self) -> None:
        self.stats.reset()
        with self._fault_lock:
            self._dropped.clear()

    def record(self, entry: dict[str, Any]) -> int:
        count = self.stats.add(entry)
        if self.log_file is not None:
            with self._fault_lock, open(self.log_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        return count


def _url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, mirror: MirrorServer, max_workers: int):
        self.mirror = mirror
        # At most max_workers connections are served at once; more wait in the listen queue (a thread per
        # connection without a bound let 400 half-sent requests grow the server to 422 threads).
        self._slots = threading.BoundedSemaphore(max_workers)
        super().__init__(address, handler)

    closing = False  # set by MirrorServer.stop: a connection waiting for a worker is then dropped

    def process_request(self, request: Any, client_address: Any) -> None:
        while not self._slots.acquire(timeout=0.2):
            if self.closing:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line per connection dropped on an error (socketserver prints a traceback for each: a client that
        sends half a request and leaves is no bug of the server's)."""
        import sys

        self.log_dropped(client_address, sys.exc_info()[1])

    @staticmethod
    def log_dropped(client_address: Any, exc: BaseException | None) -> None:
        import sys

        host = client_address[0] if isinstance(client_address, tuple) else client_address
        said = str(exc).splitlines()[0][:200] if exc is not None and str(exc) else "no reason given"
        sys.stderr.write(f"espzoo mirror: dropped the connection from {host}: {type(exc).__name__}: {said}\n")

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server: _Server
    _entry: dict[str, Any] | None = None

    def setup(self) -> None:
        # An idle keep-alive connection or a half-sent request is dropped after idle_timeout, freeing its worker.
        self.timeout = self.server.mirror.idle_timeout
        super().setup()

    @property
    def mirror(self) -> MirrorServer:
        return self.server.mirror

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.mirror.verbose:
            super().log_message(format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        entry = getattr(self, "_entry", None)
        if entry is not None:
            entry["status"] = code  # the logged entry learns how it was answered
        super().send_response(code, message)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        self._entry = None
        parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
        if parts[:1] != ["_espzoo"]:
            return self._upload("POST")
        if not self.mirror.test_hooks:
            self.close_connection = True  # the body is not read: do not parse it as the next request
            return self._send_error(MirrorError(405, None, "the mirror is read-only"), head=False)
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError(f"a control body holds at most {MAX_BODY} bytes")
            body = self.rfile.read(length) if length else b""
            if parts[1:] == ["reset"]:
                self.mirror.reset()
            elif parts[1:] == ["faults"]:
                self.mirror.faults = Faults.from_json(body)
            else:
                raise MirrorError(404, None, "unknown control route")
        except MirrorError as exc:
            return self._send_error(exc, head=False)
        except ValueError as exc:
            return self._send_error(MirrorError(400, None, f"bad request body: {exc}"), head=False)
        self._send_json({"ok": True}, head=False)

    def do_PUT(self) -> None:
        self._upload("PUT")

    def _upload(self, method: str) -> None:
        """A write (POST/PUT): the API origin's upload routes (espzoo.mirror's Uploads), refused anywhere else."""
        self._entry = {"method": method, "path": urllib.parse.urlsplit(self.path).path, "query": "", "range": None}
        self.mirror.record(self._entry)
        try:
            if self.mirror.uploads is None or not isinstance(self, _ApiHandler):
                raise MirrorError(405, None, "the mirror is read-only (`espzoo mirror serve --root DIR` takes uploads)")
            self.mirror.uploads.handle(self, method)
        except MirrorError as exc:
            self.close_connection = True  # the body may be unread: do not parse it as the next request
            self._send_error(exc, head=False)
        except (ConnectionError, TimeoutError) as exc:  # the client left or stalled: nobody to answer
            self.close_connection = True
            self.server.log_dropped(self.client_address, exc)
        except (OSError, ValueError) as exc:  # what the disk refused (a name too long, a file over a folder, NUL)
            self.close_connection = True
            self._send_error(_storage_error(exc), head=False)

    def _dispatch(self, head: bool) -> None:
        split = urllib.parse.urlsplit(self.path)
        self._entry = None
        if split.path.startswith("/_espzoo/") and self.mirror.test_hooks:
            if split.path == "/_espzoo/stats":
                return self._send_json(self.mirror.stats.to_json(), head=head)
            return self._send_error(MirrorError(404, None, "unknown control route"), head=head)
        self._entry = {
            "method": self.command, "path": split.path, "query": split.query, "range": self.headers.get("Range"),
        }
        try:
            count = self.mirror.record(self._entry)
            faults = self.mirror.active_faults
            if faults.delay:
                time.sleep(faults.delay)
            if self.mirror.should_fail(count):
                raise MirrorError(faults.fail_status, None, f"injected failure {count} of {faults.fail_first}")
            # Split the raw path first, unquote each piece after: a revision arrives as refs%2Fpr%2F1.
            pieces = [urllib.parse.unquote(p) for p in split.path.split("/")[1:]]
            query = dict(urllib.parse.parse_qsl(split.query))
            self.route(pieces, query, head)
        except MirrorError as exc:
            self._send_error(exc, head=head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def route(self, pieces: list[str], query: dict[str, str], head: bool) -> None:
        raise NotImplementedError

    def token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None

    # -- responses -----------------------------------------------------------------------------

    def _send_json(self, data: Any, *, head: bool, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_error(self, exc: MirrorError, *, head: bool) -> None:
        headers = {"X-Error-Message": exc.message}
        if exc.code:
            headers["X-Error-Code"] = exc.code
        if exc.commit:
            headers["X-Repo-Commit"] = exc.commit
        self._send_json({"error": exc.message}, head=head, status=exc.status, headers=headers)

    def _send_file(self, file: RepoFile, *, head: bool, headers: dict[str, str]) -> None:
        """The file's bytes (or the Range asked for) with Content-Length, honouring the injected faults."""
        if not _within(file.local, self.mirror.source.real_root):  # replaced by a link leading out since listed
            raise MirrorError(404, "EntryNotFound", f"{file.path} is not served")
        start, end = 0, file.size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted and not self.mirror.active_faults.ignore_range:
            parsed = _parse_range(wanted, file.size)
            if parsed is None:
                raise MirrorError(416, None, f"range {wanted} is outside 0-{file.size - 1}")
            start, end = parsed
            status = 206
        length = max(end - start + 1, 0)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{file.size}")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head or length == 0:
            return
        drop = self.mirror.drop_point(file.etag)
        rate = self.mirror.active_faults.rate
        with open(file.local, "rb") as f:
            if drop is None and not rate:
                self.wfile.flush()
                self.connection.sendfile(f, start, length)  # zero-copy: the bench compares with curl
                return
            f.seek(start)
            left = length if drop is None else min(length, drop)
            began = time.monotonic()
            sent = 0
            while left > 0:
                chunk = f.read(min(left, 64 * 1024))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                left -= len(chunk)
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        if drop is not None and drop < length:
            # Cut the connection mid-body, as a flaky network would.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """'bytes=a-b' / 'bytes=a-' / 'bytes=-n' -> (start, end) inclusive; None when unsatisfiable."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or not (m.group(1) or m.group(2)):
        return None
    if not m.group(1):  # suffix range: the last n bytes
        n = int(m.group(2))
        return (max(size - n, 0), size - 1) if n > 0 and size > 0 else None
    start = int(m.group(1))
    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, end


class _ApiHandler(_Handler):
    """The Hub's API and resolve routes."""

    def route(self, pieces: list[str], query: dict[str, str], head: bool) -> None:
        if pieces[:2] == ["api", "agent-harnesses"]:
            return self._send_json({"standardEnvVars": [], "harnesses": {}}, head=head)
        if pieces[:2] in (["api", "models"], ["api", DATASETS]):
            kind = "dataset" if pieces[1] == DATASETS else "model"
            rest = pieces[2:]
            if not rest or rest == [""]:
                return self._send_json(self._list(query, kind), head=head)
            if len(rest) < 2:
                raise MirrorError(404, "RepoNotFound", f"Repository {'/'.join(rest)} not found")
            repo_id, rest = "/".join(rest[:2]), rest[2:]
            if not rest:
                return self._send_json(self._info(repo_id, None, query, kind), head=head)
            if rest[0] == "revision" and len(rest) >= 2:
                return self._send_json(self._info(repo_id, "/".join(rest[1:]), query, kind), head=head)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._send_json(self._tree(repo_id, rest[1], "/".join(rest[2:]), query, kind), head=head)
            if rest[0] in ("xet-write-token", "xet-read-token"):  # an upload by hf_xet: say what works instead
                raise MirrorError(501, None, "this mirror takes LFS uploads, not Xet: set HF_HUB_DISABLE_XET=1 "
                                             "(espzoo push does so itself)")
            raise MirrorError(404, None, f"unknown API route {'/'.join(pieces)}")
        if pieces[:1] == [DATASETS] and len(pieces) >= 6 and pieces[3] == "resolve":  # a dataset repo's file
            return self._resolve("/".join(pieces[1:3]), pieces[4], "/".join(pieces[5:]), head, "dataset")
        if pieces[:1] == ["models"]:  # /models/org/name/resolve/... is the long form of /org/name/resolve/...
            pieces = pieces[1:]
        if len(pieces) >= 5 and pieces[2] == "resolve":
            return self._resolve("/".join(pieces[:2]), pieces[3], "/".join(pieces[4:]), head)
        raise MirrorError(404, None, f"unknown route /{'/'.join(pieces)}")

    def _resolve(self, repo_id: str, rev: str, path: str, head: bool, repo_type: str = "model") -> None:
        revision = self.mirror.revision(repo_id, rev, self.token(), repo_type)
        file = revision.files.get(path)
        if file is None:
            raise MirrorError(404, "EntryNotFound", f"{path} does not exist at {rev}", commit=revision.commit)
        headers = {"X-Repo-Commit": revision.commit, "ETag": f'"{file.blob_id}"'}
        if file.sha256:
            location = f"{self._lfs_origin()}/lfs/{file.sha256}?{self.mirror.sign_link(file.sha256)}"
            headers |= {"Location": location, "X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(file.size)}
            self.send_response(302)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(file, head=head, headers=headers)

    def _lfs_origin(self) -> str:
        """The LFS server as this client reaches us: the host it asked for (a mirror bound to 0.0.0.0 serves
        clients that know it as mirror-host:8080), on the LFS port."""
        lfs_port = self.mirror.lfs_url.rsplit(":", 1)[1]
        host = (self.headers.get("Host") or "").strip()
        if host.startswith("["):  # IPv6 literal: [::1]:8080
            host = host[: host.find("]") + 1]
        else:
            host = host.rsplit(":", 1)[0]
        return f"http://{host}:{lfs_port}" if host else self.mirror.lfs_url

    def _info(self, repo_id: str, rev: str | None, query: dict[str, str], repo_type: str = "model") -> dict[str, Any]:
        revision = self.mirror.revision(repo_id, rev, self.token(), repo_type)
        blobs = query.get("blobs", "").lower() == "true"
        return model_json(revision, siblings=True, blobs=blobs)

    def _tree(self, repo_id: str, rev: str, prefix: str, query: dict[str, str],
              repo_type: str = "model") -> list[dict[str, Any]]:
        revision = self.mirror.revision(repo_id, rev, self.token(), repo_type)
        recursive = query.get("recursive", "").lower() == "true"
        prefix = prefix.strip("/")
        if prefix and prefix not in revision.files and not any(p.startswith(prefix + "/") for p in revision.files):
            raise MirrorError(404, "EntryNotFound", f"{prefix} does not exist at {rev}", commit=revision.commit)
        entries: dict[str, dict[str, Any]] = {}
        for path, file in sorted(revision.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rel = path[len(prefix) + 1:] if prefix else path
            dirs = rel.split("/")[:-1]
            for depth in range(1, len(dirs) + 1):
                if not recursive and depth > 1:
                    break
                sub = "/".join(([prefix] if prefix else []) + dirs[:depth])
                oid = hashlib.sha1(f"{revision.commit}:{sub}".encode()).hexdigest()
                entries.setdefault(sub, {"type": "directory", "oid": oid, "path": sub})
            if recursive or not dirs:
                entries[path] = file_json(file)
        return list(entries.values())

    def _list(self, query: dict[str, str], repo_type: str = "model") -> list[dict[str, Any]]:
        author = (query.get("author") or "").lower()
        search = (query.get("search") or "").lower()
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
        full = any(query.get(k, "").lower() == "true" for k in ("cardData", "full"))
        models = []
        for repo_id in self.mirror.repo_ids(repo_type):
            if author and repo_id.split("/")[0].lower() != author:
                continue
            if search and search not in repo_id.lower():
                continue
            try:
                revision = self.mirror.revision(repo_id, None, self.token(), repo_type)
            except MirrorError:
                continue  # gated without a token: listed by the Hub, but we keep it simple
            models.append(model_json(revision, siblings=full, blobs=False, card=True))
            if limit and len(models) >= limit:
                break
        return models


class _LfsHandler(_Handler):
    """The second origin: /lfs/<sha256> serves an LFS file's bytes."""

    def route(self, pieces: list[str], query: dict[str, str], head: bool) -> None:
        if len(pieces) == 2 and pieces[0] == "lfs" and HEX64.fullmatch(pieces[1]):
            file = self.mirror.blob(pieces[1], query)
            return self._send_file(file, head=head, headers={"ETag": f'"{file.sha256}"'})
        raise MirrorError(404, None, f"unknown route /{'/'.join(pieces)}")


def file_json(file: RepoFile) -> dict[str, Any]:
    """A tree entry, as /api/models/{repo}/tree answers it."""
    entry: dict[str, Any] = {"type": "file", "oid": file.blob_id, "size": file.size, "path": file.path}
    if file.sha256:
        entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": len(file.lfs_pointer())}
    return entry


def model_json(revision: Revision, *, siblings: bool, blobs: bool, card: bool = True) -> dict[str, Any]:
    """The model info document (GET /api/models/{repo}[/revision/{rev}])."""
    card_data = revision.card_data() if card else {}
    tags = card_data.get("tags") if isinstance(card_data.get("tags"), list) else []
    tags = [str(t) for t in tags]
    languages = card_data.get("language")
    tags += [str(lang) for lang in (languages if isinstance(languages, list) else [languages] if languages else [])]
    modified = _dt.datetime.fromtimestamp(revision.last_modified, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    info: dict[str, Any] = {
        "_id": revision.commit[:24],
        "id": revision.repo_id,
        "modelId": revision.repo_id,
        "author": revision.repo_id.split("/")[0],
        "sha": revision.commit,
        "lastModified": modified,
        "createdAt": modified,
        "private": False,
        "gated": "manual" if revision.gated is not None else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": tags,
        "library_name": card_data.get("library_name") or ("espnet" if "espnet" in tags else None),
        "pipeline_tag": card_data.get("pipeline_tag")
        or next((t for t in tags if t in ("automatic-speech-recognition", "text-to-speech")), None),
    }
    if card_data:
        info["cardData"] = json.loads(json.dumps(card_data, default=str))
    if siblings:
        info["siblings"] = [_sibling(f, blobs) for f in sorted(revision.files.values(), key=lambda f: f.path)]
        info["usedStorage"] = sum(f.size for f in revision.files.values())
    return info


def _sibling(file: RepoFile, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": file.path}
    sibling: dict[str, Any] = {"rfilename": file.path, "size": file.size, "blobId": file.blob_id}
    if file.sha256:
        sibling["lfs"] = {"sha256": file.sha256, "size": file.size, "pointerSize": len(file.lfs_pointer())}
    return sibling


# ---------------------------------------------------------------------------------------------
# Uploads: what huggingface_hub's HfApi.create_repo / create_branch / upload_folder send


UPLOAD_STORE = ".espzoo-lfs"  # ROOT/.espzoo-lfs/<sha256>: LFS objects received, until a commit takes them
MAX_LINE = 64 * 1024 * 1024  # one ndjson line of a commit (a regular file, base64) holds at most this much


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


def _storage_error(exc: OSError | ValueError) -> MirrorError:
    """What an upload the file system refused is answered: one sentence, 507 for a full disk, else 400."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return MirrorError(507, None, "the mirror's disk is full; free space on the server and upload again")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return MirrorError(400, None, f"the mirror cannot store this upload ({reason}); use shorter file names without "
                                  "control characters, and no file where the repo has a folder")


def _origin(handler: _Handler) -> str:
    """This API server as the client reaches it (its Host header), for the links it is handed."""
    host = (handler.headers.get("Host") or "").strip()
    return f"http://{host}" if host else handler.mirror.url


def _inside_repo(folder: Path, path: str) -> Path:
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") or p in HIDDEN for p in parts):
        raise MirrorError(400, None, f"{path!r} is not a path inside a repo")
    if parts[-1].endswith(".incomplete"):  # never served (a partial download's name): a 200 would lose the file
        raise MirrorError(400, None, f"{path!r}: this mirror does not serve files named *.incomplete (partial "
                                     "downloads); rename it")
    return folder.joinpath(*parts)


def _link(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (no copy of a big checkpoint); a copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _body_chunks(handler: _Handler, limit: int) -> Iterator[bytes]:
    """The request body (Content-Length or chunked), in pieces; a body longer than `limit` is refused."""
    sent = 0
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        while True:
            size_line = handler.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip() or b"x", 16)
            except ValueError as exc:
                raise MirrorError(400, None, "a malformed chunked body") from exc
            if size == 0:
                while handler.rfile.readline(1024).strip():  # trailers, then the blank line
                    pass
                return
            sent += size
            if sent > limit:
                raise MirrorError(413, None, f"the body is longer than the {limit} bytes announced")
            left = size
            while left:
                chunk = handler.rfile.read(min(left, _CHUNK))
                if not chunk:
                    raise MirrorError(400, None, "the body ended early")
                left -= len(chunk)
                yield chunk
            handler.rfile.readline(16)  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    if length > limit:
        raise MirrorError(413, None, f"the body is longer than the {limit} bytes allowed")
    while sent < length:
        chunk = handler.rfile.read(min(length - sent, _CHUNK))
        if not chunk:
            raise MirrorError(400, None, "the body ended early")
        sent += len(chunk)
        yield chunk


def _read_body(handler: _Handler, limit: int) -> bytes:
    return b"".join(_body_chunks(handler, limit))


def _read_json_body(handler: _Handler) -> dict[str, Any]:
    try:
        data = json.loads(_read_body(handler, MAX_BODY) or b"{}")
    except ValueError as exc:
        raise MirrorError(400, None, f"the body is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise MirrorError(400, None, "the body is not a JSON object")
    return data


def _body_lines(handler: _Handler) -> Iterator[bytes]:
    """The ndjson lines of a commit body, each at most MAX_LINE bytes, without reading the whole body at once."""
    pending = b""
    for chunk in _body_chunks(handler, 1 << 40):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > MAX_LINE:
            raise MirrorError(413, None, f"a commit line is longer than {MAX_LINE} bytes")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


# ---------------------------------------------------------------------------------------------
# `espzoo mirror add`: copy a cached repo into a mirror folder


@dataclass(frozen=True)
class AddedRepo:
    repo_id: str
    source_commit: str
    path: Path
    files: list[str]
    size: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def add_from_cache(
    repo_id: str, revision: str | None, root: str | Path, *, cache_dir: str | Path | None = None,
    repo_type: str = "model",
) -> AddedRepo:
    """Copy the cached snapshot of repo_id@revision (default main) into ROOT/<org>/<name>/ (a dataset repo into
    ROOT/datasets/<org>/<name>/), atomically; other content it replaces is kept under its commit id, as a push's."""
    source = CacheSource(cache_dir or hf_hub_cache(), repo_type)
    revisions = source.revisions(repo_id)
    if not revisions:
        how = f"`espzoo pull {repo_id} --all`" if repo_type == "model" else f"a split once (hf:{repo_id}:SPLIT)"
        raise FileNotFoundError(f"{repo_id} is not in the HF cache at {source.cache_dir}; pull {how} first.")
    found = revisions.get(revision or "main") or next((r for r in revisions.values() if r.commit == revision), None)
    if found is None:
        raise FileNotFoundError(
            f"revision {revision} of {repo_id} is not cached; run `espzoo pull {repo_id}@{revision} --all` first."
        )
    org, name = repo_id.split("/")
    dest = Path(root) / (DATASETS if repo_type == "dataset" else "") / org / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    folders = FolderSource(dest.parent.parent, exclude=() if repo_type == "dataset" else (DATASETS,))
    served = folders.revisions(repo_id).get("main")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    public_mode(tmp, directory=True)  # mkdtemp makes 0700: other readers of ROOT keep access
    try:
        for path, file in found.files.items():
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file.local, target)
        if served is not None and folders._revision(repo_id, tmp, None).commit != served.commit:
            folders.keep(served)  # a pull pinned to the commit served until now still resolves
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return AddedRepo(repo_id, found.commit, dest, sorted(found.files), sum(f.size for f in found.files.values()))
