"""The mirror's HTTP server: a threading server per port, its limits, its stats, start and stop.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from espzoo.errors import MirrorError
from espzoo.hub.hf import hub_cache_dir as hf_hub_cache
from espzoo.serve.faults import _NO_FAULTS, Faults
from espzoo.serve.handlers import _ApiHandler, _LfsHandler
from espzoo.serve.sources import DATASETS, LFS_THRESHOLD, PRIVATE, CacheSource, FolderSource, RepoFile, Revision
from espzoo.serve.uploads import Uploads

LOG_LIMIT = 10_000


IDLE_TIMEOUT_S = 60.0  # an idle or half-sent connection is closed after this long


MAX_WORKERS = 64  # connections served at once, per port


LINK_TTL_S = 3600.0  # how long a signed LFS link stays valid (the Hub's CDN links last about an hour)


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
