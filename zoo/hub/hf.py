"""The boundary to huggingface_hub's internals: every private or undocumented name espzoo relies on is reached here,
and only here, so that an upgrade that moves one fails in tests/test_hf_boundary.py at once, not in a user's pull.

What espzoo needs beyond huggingface_hub's public API (all as of huggingface_hub 2.x, whose HTTP stack is httpx2):
- the tree cache (`huggingface_hub._tree_cache`): the listing snapshot_download keeps per commit, read and written
  so a pinned pull asks nothing and `verify` knows each file's id offline;
- the HTTP client factory (`huggingface_hub.utils._http`): its default client has no timeout for API calls;
- `file_download.http_get`: resumes a partial download with a Range request;
- `constants.DOWNLOAD_CHUNK_SIZE`: the read size of downloads, set only around espzoo's own calls;
- `constants.HF_HUB_DISABLE_XET`: read at import; `espzoo push` to a server without Xet (a mirror) turns it on;
- the cache's names: `models--org--name` folders, `.locks/<folder>/<etag>.lock`, `blobs/<etag>.<id>.incomplete`;
- httpx2's exception classes, to tell a timeout from a refused connection.

The cache-location and folder-name rules are plain functions (no import of huggingface_hub: the mirror server and
`espzoo search` use them and must stay light); the test checks they agree with huggingface_hub's own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HF_MAJOR = 2  # the huggingface_hub major version the names below belong to (pyproject pins >=2.4,<3)
INCOMPLETE_SUFFIX = ".incomplete"

# (module, name) of every private or undocumented name used below; tests import each one.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("huggingface_hub._tree_cache", "TreeCacheEntry"),
    ("huggingface_hub._tree_cache", "read_tree_cache"),
    ("huggingface_hub._tree_cache", "write_tree_cache"),
    ("huggingface_hub.utils._http", "_GLOBAL_CLIENT_FACTORY"),
    ("huggingface_hub.utils._http", "default_client_factory"),
    ("huggingface_hub.utils._http", "hf_request_event_hook"),
    ("huggingface_hub.utils._http", "set_client_factory"),
    ("huggingface_hub.file_download", "http_get"),
    ("huggingface_hub.file_download", "repo_folder_name"),
    ("huggingface_hub.constants", "DOWNLOAD_CHUNK_SIZE"),
    ("huggingface_hub.constants", "HF_HUB_CACHE"),
    ("huggingface_hub.constants", "HF_HUB_DISABLE_XET"),
    ("httpx2", "Client"),
    ("httpx2", "Timeout"),
    ("httpx2", "TimeoutException"),
    ("httpx2", "RemoteProtocolError"),
    ("httpx2", "ReadError"),
    ("httpx2", "ConnectError"),
)


# ------------------------------------------------------------------------------------ the cache's layout


def hub_cache_dir() -> Path:
    """HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub (huggingface_hub's rule, read now: it reads its
    own once, at import, and a notebook or test that sets HF_HOME later still gets what it asked for)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def repo_folder(repo_id: str, repo_type: str = "model") -> str:
    """The cache folder of a repo: `models--org--name` (file_download.repo_folder_name's rule)."""
    return "--".join([f"{repo_type}s", *repo_id.split("/")])


def lock_path(cache_dir: Path, repo_id: str, etag: str, repo_type: str = "model") -> Path:
    """The lock huggingface_hub holds while it downloads blob `etag` (file_download.hf_hub_download)."""
    return cache_dir / ".locks" / repo_folder(repo_id, repo_type) / f"{etag}.lock"


def incomplete_etag(partial: Path) -> str:
    """The etag a `blobs/<etag>.<uuid8>.incomplete` (or older `<etag>.incomplete`) partial download is for."""
    return partial.name.split(".", 1)[0]


# ------------------------------------------------------------------------------------ private names, reached here


@contextlib.contextmanager
def lfs_uploads(enabled: bool = True) -> Iterator[None]:
    """Uploads inside go by plain LFS, not Xet (a server that only speaks LFS, as espzoo's mirror). huggingface_hub
    reads HF_HUB_DISABLE_XET once, at import; its upload path asks `constants.HF_HUB_DISABLE_XET` at each call."""
    from huggingface_hub import constants

    before = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = before or enabled
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = before


def read_tree(storage: Path, commit: str) -> dict[str, Any] | None:
    """The cached listing (path -> TreeCacheEntry) of `commit` in a repo's cache folder, None when absent."""
    from huggingface_hub._tree_cache import read_tree_cache

    return read_tree_cache(str(storage), commit)


def write_tree(storage: Path, commit: str, files: Any) -> dict[str, Any]:
    """Cache the listing of `commit` from list_repo_tree's RepoFile objects (snapshot_download reads it too)."""
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

    entries = {
        f.path: TreeCacheEntry(size=f.size, blob_id=f.blob_id, lfs_sha256=f.lfs.sha256 if f.lfs else None,
                               lfs_size=f.lfs.size if f.lfs else None, xet_hash=getattr(f, "xet_hash", None))
        for f in files
    }
    write_tree_cache(str(storage), commit, entries)
    return entries


def http_get(url: str, file: Any, *, resume_size: int, headers: dict[str, str], expected_size: int,
             displayed_filename: str) -> None:
    """Append the bytes of `url` from `resume_size` on to `file` (huggingface_hub's own resumable GET)."""
    from huggingface_hub.file_download import http_get as hf_http_get

    hf_http_get(url, file, resume_size=resume_size, headers=headers, expected_size=expected_size,
                displayed_filename=displayed_filename)


def ensure_client_timeout(timeout: float, connect: float = 10.0) -> None:
    """huggingface_hub's shared HTTP client has no timeout for API calls (tree listings can hang forever): give it
    one, unless the application installed its own client factory."""
    from huggingface_hub.utils import _http

    if getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) is not getattr(_http, "default_client_factory", None):
        return
    import httpx2

    def factory() -> httpx2.Client:
        return httpx2.Client(event_hooks={"request": [_http.hf_request_event_hook]}, follow_redirects=True,
                             timeout=httpx2.Timeout(timeout, connect=connect))

    _http.set_client_factory(factory)


_chunk_lock = threading.Lock()
_chunk_depth = 0
_chunk_saved: int | None = None


@contextlib.contextmanager
def download_chunk_size(size: int) -> Iterator[None]:
    """Downloads inside the block read `size`-byte pieces (only ever smaller than the default); the process-wide
    constant is restored when the last such block ends, so other Hugging Face downloads keep theirs."""
    from huggingface_hub import constants

    global _chunk_depth, _chunk_saved
    with _chunk_lock:
        if _chunk_depth == 0:
            _chunk_saved = constants.DOWNLOAD_CHUNK_SIZE
            constants.DOWNLOAD_CHUNK_SIZE = min(size, _chunk_saved)
        _chunk_depth += 1
    try:
        yield
    finally:
        with _chunk_lock:
            _chunk_depth -= 1
            if _chunk_depth == 0 and _chunk_saved is not None:
                constants.DOWNLOAD_CHUNK_SIZE = _chunk_saved


def transient_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of the HTTP stack worth a retry (a timeout, a connection cut mid-answer); the stdlib's too, which
    espzoo.hub.fetch's parallel parts raise."""
    import http.client

    import httpx2

    return (httpx2.TimeoutException, httpx2.RemoteProtocolError, httpx2.ReadError, TimeoutError, ConnectionResetError,
            ConnectionAbortedError, BrokenPipeError, http.client.HTTPException)


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean nothing answered at all (the cache may answer instead)."""
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    return (OfflineModeIsEnabled, httpx2.ConnectError, ConnectionRefusedError)


# ------------------------------------------------------------------------------------ settings, read when used


def hub_endpoint() -> str:
    """HF_ENDPOINT as set now (huggingface_hub read its own at import), else its default."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now, else huggingface_hub's own reading of it."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    return constants.is_offline_mode()


# ------------------------------------------------------------------------------------ the Hub's file ids


def file_id(path: Path, *, lfs: bool) -> str:
    """The id the Hub lists for a file: sha256 of the content (LFS files), else its git blob sha1."""
    import hashlib

    size = path.stat().st_size
    digest = hashlib.sha256() if lfs else hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ errors


def classify(exc: BaseException) -> str:
    """repo / revision / gated / disk / unreachable / transient / other, looking through the exception chain."""
    import errno

    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    seen: set[int] = set()
    chain: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        chain.append(node)
        node = node.__cause__ or node.__context__
    for err in chain:
        if isinstance(err, GatedRepoError):
            return "gated"
        if isinstance(err, RevisionNotFoundError):
            return "revision"
        if isinstance(err, RepositoryNotFoundError):
            return "repo"
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return "disk"
    for err in chain:
        if isinstance(err, HfHubHTTPError) and err.response is not None:
            status = err.response.status_code
            if status >= 500 or status in (408, 429):
                return "transient"
            if status in (401, 403):
                return "gated"
        if isinstance(err, transient_errors()):
            return "transient"
    for err in chain:
        if isinstance(err, unreachable_errors()):
            return "unreachable"
    return "other"


def reason(exc: BaseException) -> str:
    """A short reason for a failure: the HTTP status, else the innermost exception's first line."""
    from huggingface_hub.errors import HfHubHTTPError

    node: BaseException | None = exc
    while node is not None:
        if isinstance(node, HfHubHTTPError) and node.response is not None:
            return f"HTTP {node.response.status_code}"
        if node.__cause__ is None and node.__context__ is None:
            break
        node = node.__cause__ or node.__context__
    text = str(node or exc).splitlines()[0] if str(node or exc) else type(node or exc).__name__
    return text[:120]


# ------------------------------------------------------------------------------------ progress, as callbacks

# on_progress(bar, unit, done, total): `bar` numbers each bar of one download, `unit` is "B" or "files".
ProgressFn = Callable[[int, str, float, "float | None"], None]


def tqdm_class(on_progress: ProgressFn | None = None) -> type:
    """A tqdm class for snapshot_download/hf_hub_download that draws nothing and reports each update to
    `on_progress` (the CLI draws; the library never prints)."""
    import itertools

    from huggingface_hub.utils import tqdm as hf_tqdm

    numbers = itertools.count()

    class Reporting(hf_tqdm):  # type: ignore[misc, valid-type]
        """tqdm's interface, none of its drawing: each update goes to on_progress."""

        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            desc = str(kwargs.get("desc") or "")
            super().__init__(*args, **kwargs)
            self._bar = next(numbers)
            self._done = kwargs.get("initial") or 0
            self._unit = "B" if kwargs.get("unit") == "B" else "files"
            # For plain HTTP the "reconstructing" bar repeats the bytes bar: report nothing for it.
            self._quiet = on_progress is None or desc.startswith("Reconstructing")
            self._report()

        def _report(self) -> None:
            if not self._quiet:
                on_progress(self._bar, self._unit, self._done, self.total or None)  # type: ignore[misc]

        def __iter__(self) -> Iterator[Any]:
            for item in self.iterable:
                yield item
                self.update(1)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += n or 0
            self._report()
            return None

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            self._report()

        def close(self) -> None:
            self._report()

    return Reporting


def cached_trees(storage: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(commit, listing) of every tree cached in a repo's cache folder (stored as trees/<commit>.json)."""
    for tree_file in sorted((storage / "trees").glob("*.json")):
        yield tree_file.stem, read_tree(storage, tree_file.stem) or {}
