"""Pull ESPnet models from the Hub by revision into the standard HF cache; work offline; verify; list; remove.

    from espzoo.hub import pull
    snap = pull("espnet/bn_openslr53", "main")     # resolves main to a commit, downloads what a fine-tune needs
    snap.commit, snap.path, snap.files
    pull("espnet/bn_openslr53", snap.commit)       # cached commit: no request at all

Everything goes through huggingface_hub (HF_ENDPOINT, HF_HOME/HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE are honoured,
and `hf cache` sees what espzoo downloads). The revision is resolved to a commit first and files are fetched by
commit, so a pinned pull of a cached commit makes zero requests. Only the files an ASR fine-tune needs are fetched
(README.md, meta.yaml, the training config, the checkpoint meta.yaml names or the best one found, the token list and
bpe model, the normalization stats) unless all_files=True. Failures become a `HubError` whose message is one
sentence naming the problem and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from espzoo import repo as rules
from espzoo._fs import write_text
from espzoo.errors import (
    BundleError,
    HubError,  # noqa: F401 (re-exported)
)

HEX40 = re.compile(r"[0-9a-f]{40}")
HEX64 = re.compile(r"[0-9a-f]{64}")
API_TIMEOUT = 30.0  # seconds for each API call (model info, tree listing)
# huggingface_hub reads a download in 10 MiB pieces, each copied into one buffer before it is written: on loopback
# that runs at a third of curl's speed (bench/pull.py), and a connection cut before 10 MiB restarts from byte 0.
# Pieces the size of a socket read match curl and let a cut download resume from where it stopped.
DOWNLOAD_CHUNK = 64 * 1024
LOCK_HEADER = "# espzoo.lock: the exact commit of each model, written by `espzoo pull --lock`. Commit it.\n"
T = TypeVar("T")


class RepoNotFound(HubError):
    pass


class RevisionNotFound(HubError):
    pass


class GatedRepo(HubError):
    pass


class NotCached(HubError):
    pass


class HubUnavailable(HubError):
    pass


class DiskFull(HubError):
    pass


class NotAsrModel(HubError):
    pass


@dataclass(frozen=True)
class Snapshot:
    """A pulled revision: `path` is the snapshot folder in the HF cache, `files` the repo paths present there."""

    repo_id: str
    commit: str
    path: Path
    files: list[str]
    revision: str | None = None  # what was asked for (branch, tag, commit), None = main
    offline: bool = False  # answered from the cache without asking the Hub
    notes: tuple[str, ...] = ()  # things the user should know (offline fallback, cleaned partial downloads)

    def to_json(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "commit": self.commit, "path": str(self.path), "files": self.files}


def parse_repo_ref(ref: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev'); 'org/name' -> ('org/name', None)."""
    repo_id, sep, revision = ref.strip().partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or (sep and not revision):
        raise HubError(f"{ref!r} is not a repo reference; write it as ORG/NAME or ORG/NAME@REVISION.")
    return repo_id, revision or None


# ---------------------------------------------------------------------------------------------
# Settings, read when used (huggingface_hub reads its own once, at import: a notebook or test that sets
# HF_ENDPOINT/HF_HOME/HF_HUB_OFFLINE later still gets what it asked for here)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_cache_dir() -> Path:
    from espzoo.mirror import hf_hub_cache

    return hf_hub_cache()


def hub_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    return constants.is_offline_mode()


# ---------------------------------------------------------------------------------------------
# Pull


def pull(
    repo_id: str,
    revision: str | None = None,
    *,
    all_files: bool = False,
    lock_file: str | Path | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = API_TIMEOUT,
    progress: bool | None = None,
    notify: Callable[[str], None] | None = None,
) -> Snapshot:
    """Download `repo_id` at `revision` (branch, tag or commit; default main, or the commit in `lock_file`)
    into the HF cache and return the snapshot. Offline (HF_HUB_OFFLINE=1 or the Hub unreachable) a cached
    snapshot is used, with a note. `lock_file` records repo -> commit (created or updated). Notes (offline
    fallback, resumed downloads) are in `Snapshot.notes` and passed to `notify` (default: a logging warning)."""
    try:
        return _pull(repo_id, revision, all_files=all_files, lock_file=lock_file, cache_dir=cache_dir,
                     endpoint=endpoint, token=token, retries=retries, backoff=backoff, timeout=timeout,
                     progress=progress, notify=notify)
    except OSError as exc:  # the cache's disk, not the Hub (DiskFull already says which)
        raise HubError(f"cannot write to the cache ({exc.strerror or exc}); check HF_HOME points at a writable "
                       "disk.") from exc


def _pull(repo_id: str, revision: str | None, *, all_files: bool, lock_file: str | Path | None,
          cache_dir: str | Path | None, endpoint: str | None, token: str | bool | None, retries: int,
          backoff: float, timeout: float, progress: bool | None, notify: Callable[[str], None] | None) -> Snapshot:
    repo_id, at = parse_repo_ref(repo_id)
    revision = revision or at
    if revision is None and lock_file is not None:
        revision = read_lock(lock_file).get(repo_id, {}).get("commit")
    session = _Session(repo_id, cache_dir, endpoint, token, retries, backoff, timeout)
    offline = hub_offline()
    notes: list[str] = []
    commit: str | None = None
    if offline:
        notes.append("HF_HUB_OFFLINE is set; using the cached copy")
    else:
        try:
            commit = session.resolve(revision)
        except _Unreachable as exc:
            offline = True
            notes.append(f"the Hub at {session.endpoint} cannot be reached ({exc.reason}); using the cached copy")
        else:  # not known to be offline: finish what a killed pull left half-downloaded
            notes += recover_stale_downloads(repo_id, cache_dir=session.cache_dir, endpoint=session.endpoint,
                                             token=token)
    if not offline:
        assert commit is not None
        try:
            wanted = _fetch(session, commit, all_files, progress)
        except _Unreachable as exc:  # a pinned commit asks nothing until here: the Hub may be gone
            offline = True
            notes.append(f"the Hub at {session.endpoint} cannot be reached ({exc.reason}); using the cached copy")
        else:
            if revision != commit:  # a branch or tag (None = main): offline use resolves it through refs/
                _write_ref(session.storage, revision or "main", commit)
    if offline:
        commit = session.cached_commit(revision)
        wanted = _cached_files(session, commit, all_files)
    assert commit is not None
    snapshot_dir = session.storage / "snapshots" / commit
    snap = Snapshot(repo_id, commit, snapshot_dir, wanted, revision, offline, tuple(notes))
    for note in notes:  # callers that do not read snap.notes (finetune, plan) still tell the user
        (notify or _log_note)(note)
    if lock_file is not None:
        update_lock(lock_file, snap)
    return snap


def _fetch(session: _Session, commit: str, all_files: bool, progress: bool | None) -> list[str]:
    """Download what is wanted at `commit` (nothing when it is all cached); returns the repo paths."""
    listing = session.listing(commit, offline=False)
    wanted = sorted(listing) if all_files else select_files(listing, lambda path: session.read(commit, path, False))
    session.download(commit, wanted, progress)
    return wanted


def _cached_files(session: _Session, commit: str, all_files: bool) -> list[str]:
    """What is wanted at `commit`, all of it from the cache, else NotCached."""
    listing = session.listing(commit, offline=True)
    wanted = sorted(listing) if all_files else select_files(listing, lambda path: session.read(commit, path, True))
    snapshot_dir = session.storage / "snapshots" / commit
    missing = [f for f in wanted if not (snapshot_dir / f).exists()]
    if missing:
        raise NotCached(
            f"{session.repo_id}@{commit[:12]} is only partly cached ({len(missing)} files missing, e.g. {missing[0]}) "
            "and the Hub cannot be reached; pull it once with network access."
        )
    return wanted


def _log_note(note: str) -> None:
    import logging

    logging.getLogger("espzoo.hub").warning("note: %s", note)


def select_files(listing: Iterable[str], read: Callable[[str], str | None]) -> list[str]:
    """The repo files an ASR fine-tune needs. `read(path)` returns a small file's text (meta.yaml, the config).

    The same rules as `bundle.open_bundle` (espzoo.repo), applied to the Hub's listing: meta.yaml names the config
    and checkpoint; without it the training config is found by its place (a config.yaml beside a checkpoint, not
    a language model's) and the checkpoint by rules.best_checkpoint. Raises NotAsrModel when there is none."""
    files = list(listing)
    present = set(files)
    wanted = {f for f in ("README.md", "meta.yaml") if f in present}
    config = checkpoint = None
    if "meta.yaml" in present:
        try:
            named = rules.meta_files(_yaml(read("meta.yaml")))
        except BundleError:  # a damaged meta.yaml: found by content below; opening the folder reports it
            named = None
        if named is not None and named.task is None and named.kinds:
            raise NotAsrModel(f"meta.yaml names no ASR model (it has {', '.join(named.kinds)} files); pick an ASR "
                              "model from `espzoo search --task asr`.")
        if named is not None:
            config = rules.locate(named.config, present) if named.config else None
            checkpoint = rules.locate(named.checkpoint, present) if named.checkpoint else None
    if config is None:
        config = find_training_config(files)
    cfg = _yaml(read(config)) if config is not None else None
    cfg = cfg if isinstance(cfg, dict) else {}
    if checkpoint is None and config is not None:
        checkpoint = rules.best_checkpoint(files, str(PurePosixPath(config).parent), rules.config_criteria(cfg))
    if config is None or checkpoint is None:
        what = "training config" if config is None else "checkpoint (.pth)"
        raise NotAsrModel(f"the repo holds no ESPnet ASR {what}, so it is not an ESPnet ASR model; "
                          "pick one from `espzoo search --task asr` or pass --all to fetch it anyway.")
    wanted |= {config, checkpoint}
    # What bundle.open_bundle will use (found the same way), then every token list and bpe model to be safe.
    needs_stats, stats_value = rules.stats_reference(cfg)
    bpe_fallback = rules.BPE_NAME if cfg.get("token_type") == "bpe" else None
    referenced = [rules.locate(cfg.get("token_list"), present, rules.TOKENS_NAME)
                  if not isinstance(cfg.get("token_list"), list) else None,
                  rules.locate(cfg.get("bpemodel"), present, bpe_fallback),
                  rules.locate(cfg.get("non_linguistic_symbols"), present),
                  rules.locate(stats_value, present, rules.STATS_NAME) if needs_stats else None]
    wanted |= {path for path in referenced if path is not None}
    for path in files:
        name = PurePosixPath(path).name
        if rules.is_language_model(path):
            continue
        if "token_list" in path or name in (rules.TOKENS_NAME, rules.BPE_NAME) or fnmatch.fnmatch(name, "*bpe*.model"):
            wanted.add(path)
    return sorted(wanted)


def find_training_config(files: Iterable[str]) -> str | None:
    """The training config of a listing without meta.yaml, by place: rules.choose_config over its config.yaml files."""
    files = list(files)
    with_checkpoint = rules.checkpoint_dirs(files)
    return rules.choose_config((f, str(PurePosixPath(f).parent) in with_checkpoint, False)
                              for f in files if PurePosixPath(f).name == rules.CONFIG_NAME)


def best_checkpoint(paths: list[str]) -> str | None:
    """rules.best_checkpoint (kept here for callers of the old name)."""
    return rules.best_checkpoint(paths)


def _yaml(text: str | None) -> Any:
    import yaml

    if not text:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


# ---------------------------------------------------------------------------------------------
# One repo's conversation with the Hub


class _Unreachable(HubError):
    """The Hub could not be reached at all (refused, DNS, offline mode): the cache may answer instead."""

    def __init__(self, endpoint: str, reason: str):
        super().__init__(f"cannot reach the Hub at {endpoint} ({reason}); check the network or HF_ENDPOINT, "
                         "or pull while online once so the cache can answer.")
        self.reason = reason


class _Session:
    def __init__(self, repo_id: str, cache_dir: str | Path | None, endpoint: str | None, token: Any,
                 retries: int, backoff: float, timeout: float = API_TIMEOUT):
        from huggingface_hub import HfApi

        _ensure_client_timeout()
        _ensure_small_chunks()
        self.repo_id = repo_id
        self.cache_dir = Path(cache_dir or hub_cache_dir())
        self.storage = self.cache_dir / ("models--" + repo_id.replace("/", "--"))
        self.endpoint = (endpoint or hub_endpoint()).rstrip("/")
        self.token = token
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.api = HfApi(endpoint=self.endpoint, token=token)

    # -- resolving -----------------------------------------------------------------------------

    def resolve(self, revision: str | None) -> str:
        """The commit `revision` names (a 40-hex commit is taken as is: no request)."""
        if revision and HEX40.fullmatch(revision):
            return revision
        info = self.call(lambda: self.api.model_info(self.repo_id, revision=revision, timeout=self.timeout),
                         f"resolve {self.repo_id}@{revision or 'main'}", revision)
        if not info.sha:
            raise HubError(f"the Hub at {self.endpoint} gave no commit for {self.repo_id}; check HF_ENDPOINT.")
        return info.sha

    def cached_commit(self, revision: str | None, why: str = "the Hub cannot be reached") -> str:
        if revision and HEX40.fullmatch(revision):
            if (self.storage / "snapshots" / revision).is_dir():
                return revision
        else:
            ref = self.storage / "refs" / (revision or "main")
            if ref.is_file():
                commit = ref.read_text().strip()
                if (self.storage / "snapshots" / commit).is_dir():
                    return commit
        at = f"@{revision}" if revision else ""
        raise NotCached(f"{self.repo_id}{at} is not in the cache at {self.cache_dir} and {why}; connect (or unset "
                        "HF_HUB_OFFLINE) and `espzoo pull` it once, or set HF_HOME to a cache that has it.")

    def listing(self, commit: str, *, offline: bool) -> dict[str, Any]:
        """Repo path -> tree entry (size, blob_id, lfs_sha256) at `commit`: the cached tree, else one API call."""
        from huggingface_hub._tree_cache import TreeCacheEntry, read_tree_cache, write_tree_cache
        from huggingface_hub.hf_api import RepoFile

        cached = read_tree_cache(str(self.storage), commit)
        if cached is not None:
            return cached
        snapshot = self.storage / "snapshots" / commit
        if offline:
            return {p.relative_to(snapshot).as_posix(): None for p in snapshot.rglob("*") if not p.is_dir()}
        tree = self.call(
            lambda: list(self.api.list_repo_tree(self.repo_id, recursive=True, revision=commit)),
            f"list the files of {self.repo_id}@{commit[:12]}", commit,
        )
        entries = {
            f.path: TreeCacheEntry(size=f.size, blob_id=f.blob_id, lfs_sha256=f.lfs.sha256 if f.lfs else None,
                                   lfs_size=f.lfs.size if f.lfs else None, xet_hash=getattr(f, "xet_hash", None))
            for f in tree if isinstance(f, RepoFile)
        }
        # snapshot_download reads the same cache: it lists nothing again, and a later pinned pull asks nothing.
        write_tree_cache(str(self.storage), commit, entries)
        return entries

    def read(self, commit: str, path: str, offline: bool) -> str | None:
        """A small file's text at `commit`, downloaded into the cache if needed."""
        local = self.storage / "snapshots" / commit / path
        if not local.exists():
            if offline:
                return None
            from huggingface_hub import hf_hub_download

            self.call(lambda: hf_hub_download(self.repo_id, path, revision=commit, cache_dir=self.cache_dir,
                                              endpoint=self.endpoint, token=self.token, etag_timeout=self.timeout,
                                              tqdm_class=_silent_tqdm()),
                      f"download {path}", commit)
        try:
            return local.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def download(self, commit: str, files: list[str], progress: bool | None) -> None:
        from huggingface_hub import snapshot_download

        snapshot = self.storage / "snapshots" / commit
        if all((snapshot / f).exists() for f in files):
            return  # every file cached: nothing to ask (snapshot_download would not ask either, but this is explicit)
        patterns = [glob.escape(f) for f in files]
        with _progress_bars(progress) as tqdm_class:
            self.call(lambda: snapshot_download(self.repo_id, revision=commit, cache_dir=self.cache_dir,
                                                allow_patterns=patterns, endpoint=self.endpoint, token=self.token,
                                                tqdm_class=tqdm_class, etag_timeout=self.timeout),
                      f"download {len(files)} files of {self.repo_id}@{commit[:12]}", commit)

    # -- errors and retries --------------------------------------------------------------------

    def call(self, fn: Callable[[], T], what: str, revision: str | None) -> T:
        """Run one client call; retry 5xx/timeouts with backoff; turn failures into one-sentence HubErrors."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised when unknown
                kind = _classify(exc)
                if kind == "transient" and attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                    attempt += 1
                    continue
                raise self._error(exc, kind, what, revision, attempt) from exc

    def _error(self, exc: Exception, kind: str, what: str, revision: str | None, attempts: int) -> Exception:
        repo = self.repo_id
        if kind == "repo":
            return RepoNotFound(f"{repo} does not exist on {self.endpoint}{_suggestion(repo)}")
        if kind == "revision":
            return RevisionNotFound(f"{repo} has no revision {revision!r}; use a branch, tag or commit the repo has "
                                    "(e.g. main).")
        if kind == "gated":
            return GatedRepo(f"{repo} is gated or private and no valid token was sent; accept its terms on the Hub, "
                             "then set HF_TOKEN=hf_... (or run `hf auth login`) and pull again.")
        if kind == "disk":
            return DiskFull(f"no room to write {repo} into {self.cache_dir} ({_reason(exc)}); free space, raise the "
                            "quota or file-size limit, or point HF_HOME at a larger disk.")
        if kind == "unreachable":
            return _Unreachable(self.endpoint, _reason(exc))
        if kind == "transient":
            return HubUnavailable(f"the Hub at {self.endpoint} kept failing to {what} ({_reason(exc)}, "
                                  f"{attempts + 1} tries); try again later or point HF_ENDPOINT at a mirror.")
        return exc


def _classify(exc: BaseException) -> str:
    """repo / revision / gated / disk / unreachable / transient / other, looking through the exception chain."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

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
        if isinstance(err, (httpx2.TimeoutException, httpx2.RemoteProtocolError, httpx2.ReadError)):
            return "transient"
    for err in chain:
        if isinstance(err, (OfflineModeIsEnabled, httpx2.ConnectError, ConnectionRefusedError)):
            return "unreachable"
    return "other"


def _reason(exc: BaseException) -> str:
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


def _suggestion(repo_id: str) -> str:
    try:
        from espzoo.catalog import Catalog

        close = Catalog.load().suggest(repo_id)
    except Exception:  # noqa: BLE001 - a broken catalog must not hide the real error
        close = []
    if close:
        return f"; did you mean {', '.join(close)}?"
    return "; check the id with `espzoo search`."


def _ensure_client_timeout() -> None:
    """huggingface_hub's shared HTTP client has no timeout for API calls (tree listings can hang forever):
    give it one, unless the application installed its own client factory."""
    from huggingface_hub.utils import _http

    if getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) is not getattr(_http, "default_client_factory", None):
        return
    import httpx2

    def factory() -> httpx2.Client:
        return httpx2.Client(event_hooks={"request": [_http.hf_request_event_hook]}, follow_redirects=True,
                             timeout=httpx2.Timeout(API_TIMEOUT, connect=10.0))

    _http.set_client_factory(factory)


def _silent_tqdm() -> type:
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Silent(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


@contextlib.contextmanager
def _progress_bars(progress: bool | None) -> Iterator[type]:
    """A tqdm class for snapshot_download that draws with rich: one row for the files, one for the bytes.
    progress None: only on a terminal, and not when HF_HUB_DISABLE_PROGRESS_BARS is set."""
    import sys

    if progress is None:
        disabled = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() in ("1", "TRUE", "YES", "ON")
        progress = sys.stderr.isatty() and not disabled
    if not progress:
        yield _silent_tqdm()
        return
    from huggingface_hub.utils import tqdm as hf_tqdm
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Amount(ProgressColumn):
        def render(self, task: Any) -> Text:
            if task.fields.get("unit") == "B":
                speed = f"  {task.speed / 1e6:.0f} MB/s" if task.speed else ""
                return Text(f"{task.completed / 1e6:.1f}/{(task.total or 0) / 1e6:.1f} MB{speed}")
            return Text(f"{int(task.completed)}/{int(task.total or 0)} files")

    bars = Progress(TextColumn("{task.description}"), BarColumn(), Amount(), TimeRemainingColumn(),
                    console=Console(stderr=True))

    class RichBar(hf_tqdm):  # type: ignore[misc, valid-type]
        """tqdm's interface, rich's drawing: tqdm itself is disabled and every update goes to the rich task."""

        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            desc = str(kwargs.get("desc") or "")
            super().__init__(*args, **kwargs)
            self._done = kwargs.get("initial") or 0
            self._bytes = kwargs.get("unit") == "B"
            # For plain HTTP the "reconstructing" bar repeats the bytes bar: hide it.
            visible = not desc.startswith("Reconstructing")
            label = "downloading" if self._bytes else "files"
            self._task = bars.add_task(label, total=self.total or None, completed=self._done, visible=visible,
                                       unit="B" if self._bytes else "")

        def __iter__(self) -> Iterator[Any]:
            for item in self.iterable:
                yield item
                self.update(1)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += n or 0
            bars.update(self._task, completed=self._done, total=self.total or None)
            return None

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            bars.update(self._task, total=self.total or None)

        def close(self) -> None:
            bars.update(self._task, completed=self._done, total=self.total or None)

    with bars:
        yield RichBar


def _ensure_small_chunks() -> None:
    from huggingface_hub import constants

    if constants.DOWNLOAD_CHUNK_SIZE > DOWNLOAD_CHUNK:
        constants.DOWNLOAD_CHUNK_SIZE = DOWNLOAD_CHUNK


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    ref = storage / "refs" / revision
    try:
        if ref.is_file() and ref.read_text() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(commit)
        tmp.replace(ref)
    except OSError:
        pass  # a ref only speeds up offline use; the snapshot itself is complete


def recover_stale_downloads(
    repo_id: str, *, cache_dir: str | Path | None = None, endpoint: str | None = None, token: Any = None,
    resume: bool = True,
) -> list[str]:
    """Deal with `blobs/*.incomplete` files a killed process left behind. huggingface_hub names them per process, so
    no later download resumes them and nothing removes them. A file is stale when nobody holds its download lock;
    with `resume` its missing bytes are fetched (Range) and the blob kept if its hash matches the Hub's id,
    otherwise (or when nothing says which file it was) it is removed. Returns notes for the user."""
    from filelock import FileLock, Timeout

    cache = Path(cache_dir or hub_cache_dir())
    folder = "models--" + repo_id.replace("/", "--")
    blobs = cache / folder / "blobs"
    if not blobs.is_dir():
        return []
    resumed, removed, kept_bytes, removed_bytes = 0, 0, 0, 0
    for partial in blobs.glob("*.incomplete"):
        etag = partial.name.split(".", 1)[0]
        lock_path = cache / ".locks" / folder / f"{etag}.lock"
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(lock_path), timeout=0):
                if not partial.exists():
                    continue
                size = partial.stat().st_size
                blob = blobs / etag
                outcome = "drop" if blob.exists() or not resume else _resume_partial(
                    cache / folder, repo_id, partial, etag, endpoint, token)
                if outcome == "resumed":
                    resumed += 1
                    kept_bytes += size
                elif outcome == "drop":
                    partial.unlink(missing_ok=True)
                    removed += 1
                    removed_bytes += size
        except Timeout:
            continue  # another process is downloading it right now
        except OSError:
            continue
    notes = []
    if resumed:
        notes.append(f"resumed {resumed} download{'s' if resumed > 1 else ''} an interrupted pull of {repo_id} left "
                     f"behind ({kept_bytes / 1e6:.1f} MB were already there)")
    if removed:
        notes.append(f"removed {removed} partial download{'s' if removed > 1 else ''} ({removed_bytes / 1e6:.1f} MB) "
                     f"left by an interrupted pull of {repo_id}; those files are downloaded again")
    return notes


def _resume_partial(storage: Path, repo_id: str, partial: Path, etag: str, endpoint: str | None, token: Any) -> str:
    """Fetch the rest of `partial` and move it into place as blobs/<etag>: "resumed"; "drop" when it cannot be
    finished (unknown file, wrong hash); "keep" when the Hub cannot be reached (a later pull resumes it)."""
    from huggingface_hub._tree_cache import read_tree_cache
    from huggingface_hub.file_download import hf_hub_url, http_get
    from huggingface_hub.utils import build_hf_headers

    found = None
    for tree_file in sorted((storage / "trees").glob("*.json")):
        tree = read_tree_cache(str(storage), tree_file.stem) or {}
        found = next(((tree_file.stem, path, entry) for path, entry in tree.items()
                      if etag in (entry.lfs_sha256, entry.blob_id)), None)
        if found:
            break
    if found is None:
        return "drop"  # pulled without espzoo: which file it was is unknown
    commit, path, entry = found
    lfs = entry.lfs_sha256 == etag
    url = hf_hub_url(repo_id, path, revision=commit, endpoint=endpoint or hub_endpoint())
    try:
        size = partial.stat().st_size
        if size > entry.size:
            return "drop"
        if size < entry.size:
            with open(partial, "ab") as f:
                http_get(url, f, resume_size=size, headers=build_hf_headers(token=token), expected_size=entry.size,
                         displayed_filename=PurePosixPath(path).name)
        if file_id(partial, lfs=lfs) != etag:
            return "drop"
        os.chmod(partial, 0o644)
        partial.replace(storage / "blobs" / etag)
        return "resumed"
    except Exception as exc:  # noqa: BLE001 - any other failure: drop the partial file, a full download follows
        return "keep" if _classify(exc) == "unreachable" else "drop"


# ---------------------------------------------------------------------------------------------
# Lock file


def read_lock(path: str | Path) -> dict[str, dict[str, Any]]:
    """repo_id -> {commit, revision, files} from an espzoo.lock; {} when the file does not exist."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise HubError(f"{path} is not a valid lock file ({exc.__class__.__name__}); fix or delete it.") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise HubError(f"{path} has no 'models' mapping; it is not an espzoo lock file, delete it or pass another.")
    return {str(k): v for k, v in models.items() if isinstance(v, dict)}


def update_lock(path: str | Path, snapshot: Snapshot) -> Path:
    """Record snapshot.repo_id -> commit in the lock file (atomic write; other entries kept)."""
    import yaml

    path = Path(path)
    models = read_lock(path)
    revision = snapshot.revision or "main"
    if revision == snapshot.commit:  # pulled through the lock's pin: keep the name it was pinned from
        revision = models.get(snapshot.repo_id, {}).get("revision") or revision
    models[snapshot.repo_id] = {"commit": snapshot.commit, "revision": revision, "files": list(snapshot.files)}
    text = LOCK_HEADER + yaml.safe_dump({"version": 1, "models": dict(sorted(models.items()))}, sort_keys=False)
    return write_text(path, text)


# ---------------------------------------------------------------------------------------------
# Verify


@dataclass(frozen=True)
class FileCheck:
    path: str
    expected: str  # sha256 (LFS) or git blob sha1, as the Hub lists it
    actual: str | None  # None: the file is missing
    fixed: bool = False

    @property
    def ok(self) -> bool:
        return self.actual == self.expected or self.fixed


@dataclass(frozen=True)
class VerifyReport:
    repo_id: str
    commit: str
    checks: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def bad(self) -> list[FileCheck]:
        return [c for c in self.checks if c.actual != c.expected]

    def to_json(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "commit": self.commit, "ok": self.ok,
                "files": [asdict(c) | {"ok": c.ok} for c in self.checks]}


def verify(
    repo_id: str,
    revision: str | None = None,
    *,
    fix: bool = False,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> VerifyReport:
    """Re-hash every cached file of repo_id@revision against the ids the Hub gave at pull time (the cached tree
    listing, else the blob's own name, which is its etag: works offline). With fix, corrupted or missing files are
    deleted and downloaded again."""
    repo_id, at = parse_repo_ref(repo_id)
    revision = revision or at
    session = _Session(repo_id, cache_dir, endpoint, token, retries=3, backoff=0.5)
    commit = session.cached_commit(revision, "verify only checks cached files")
    snapshot = session.storage / "snapshots" / commit
    from huggingface_hub._tree_cache import read_tree_cache

    tree = read_tree_cache(str(session.storage), commit) or {}
    checks = []
    for local in sorted(p for p in snapshot.rglob("*") if p.is_symlink() or p.is_file()):
        rel = local.relative_to(snapshot).as_posix()
        expected, lfs = _expected_id(tree.get(rel), local)
        actual = file_id(local, lfs=lfs) if local.exists() else None
        fixed = False
        if actual != expected and fix:
            _drop_cached_file(local)
            session.read(commit, rel, offline=False)  # downloads it again (one HEAD + one GET)
            fixed = file_id(local, lfs=lfs) == expected
        checks.append(FileCheck(rel, expected, actual, fixed))
    return VerifyReport(repo_id, commit, checks)


def _expected_id(entry: Any, local: Path) -> tuple[str, bool]:
    if entry is not None:
        return (entry.lfs_sha256, True) if entry.lfs_sha256 else (entry.blob_id, False)
    name = Path(os.readlink(local)).name if local.is_symlink() else ""
    return name, bool(HEX64.fullmatch(name))


def file_id(path: Path, *, lfs: bool) -> str:
    """sha256 of the content (LFS files), else its git blob sha1 (the Hub's etag for regular files)."""
    size = path.stat().st_size
    digest = hashlib.sha256() if lfs else hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _drop_cached_file(link: Path) -> None:
    """Remove a snapshot file and the blob it points to (other snapshots' links to it get the new blob)."""
    if link.is_symlink():
        blob = link.resolve()
        link.unlink()
        blob.unlink(missing_ok=True)
    else:
        link.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# ls / rm


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    commit: str
    refs: list[str]
    size: int
    files: int
    last_used: float
    path: Path

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def list_cached(cache_dir: str | Path | None = None, *, espnet_only: bool = True) -> list[CachedModel]:
    """Every cached revision of every (ESPnet) model in the HF cache, most recently used first."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir or hub_cache_dir())
    except CacheNotFound:
        return []
    rows = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            names = [f.file_path.relative_to(rev.snapshot_path).as_posix() for f in rev.files]
            if espnet_only and not _looks_espnet(names, rev.snapshot_path):
                continue
            used = max((f.blob_last_accessed for f in rev.files), default=rev.last_modified)
            rows.append(CachedModel(repo.repo_id, rev.commit_hash, sorted(rev.refs), rev.size_on_disk,
                                    len(rev.files), used, rev.snapshot_path))
    return sorted(rows, key=lambda r: -r.last_used)


def _looks_espnet(names: list[str], snapshot: Path) -> bool:
    if "meta.yaml" in names or any(n.startswith("exp/") for n in names):
        return True
    if "README.md" in names:
        from espzoo.mirror import read_front_matter

        card = read_front_matter(snapshot / "README.md")
        tags = card.get("tags") if isinstance(card.get("tags"), list) else []
        return "espnet" in tags or card.get("library_name") == "espnet"
    return False


def remove(repo_id: str, revision: str | None = None, *, cache_dir: str | Path | None = None) -> tuple[list[str], int]:
    """Delete repo_id@revision (every revision when None) from the HF cache; returns (commits removed, bytes freed)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    repo_id, at = parse_repo_ref(repo_id)
    revision = revision or at
    try:
        info = scan_cache_dir(cache_dir or hub_cache_dir())
    except CacheNotFound:
        info = None
    repo = next((r for r in info.repos if r.repo_id == repo_id and r.repo_type == "model"), None) if info else None
    if repo is None:
        raise NotCached(f"{repo_id} is not in the cache; `espzoo ls` lists what is.")
    commits = [r.commit_hash for r in repo.revisions
               if revision is None or r.commit_hash.startswith(revision) or revision in r.refs]
    if not commits:
        raise NotCached(f"{repo_id} has no cached revision {revision!r}; `espzoo ls` lists the cached ones.")
    strategy = info.delete_revisions(*commits)  # type: ignore[union-attr]
    freed = strategy.expected_freed_size
    strategy.execute()
    if revision is None:  # the repo folder goes too (refs, trees, .no_exist), as `hf cache rm` does
        import shutil

        shutil.rmtree(repo.repo_path, ignore_errors=True)
    return commits, freed


# ---------------------------------------------------------------------------------------------
# Catalog refresh


@dataclass(frozen=True)
class RefreshResult:
    path: Path
    listed: int
    added: int
    updated: int
    total: int

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


TASK_TAGS = {"automatic-speech-recognition": "asr", "text-to-speech": "tts", "audio-to-audio": "enh",
             "translation": "st", "audio-classification": "cls"}


def refresh_catalog(
    author: str = "espnet", *, endpoint: str | None = None, token: str | bool | None = None,
    path: str | Path | None = None, configs: bool = False,
) -> RefreshResult:
    """List `author`'s models on the Hub with their card data and merge them over the shipped catalog
    into the user catalog (atomic write). Hub facts win for languages/license/task; recipes and results stay.
    With `configs`, each model's meta.yaml and training config are read too (two small downloads per model, kept in
    the HF cache) for the architecture, tokens and sample rate."""
    import yaml
    from espzoo.catalog import Catalog, entry_from_dict, merge_entries, shipped_catalog_path, user_catalog_path

    session = _Session(f"{author}/catalog", None, endpoint, token, retries=3, backoff=0.5)
    models = session.call(lambda: list(session.api.list_models(author=author, cardData=True)),
                          f"list the models of {author}", None)
    updates = [hub_entry(m, session.endpoint) for m in models]
    if configs:
        for model, update in zip(models, updates, strict=True):
            update.update({k: v for k, v in config_facts(session, model.id, model.sha).items() if k not in update})
    base_catalog = Catalog.load(shipped_catalog_path())
    base = [{k: v for k, v in e.to_dict().items() if v not in (None, [], {})} for e in base_catalog.entries]
    merged, added, updated = merge_entries(base, updates)
    for i, item in enumerate(merged):  # never write a catalog `espzoo search` would reject
        entry_from_dict(item, f"refreshed entry {i + 1}")
    target = Path(path) if path else user_catalog_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# The user catalog: the shipped entries merged with {author}'s models listed by {session.endpoint}.\n"
              "# Written by `espzoo catalog refresh`; delete it to go back to the shipped catalog.\n")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(header + yaml.safe_dump({"entries": merged}, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(target)
    return RefreshResult(target, len(models), added, updated, len(merged))


def config_facts(session: _Session, repo_id: str, commit: str | None) -> dict[str, Any]:
    """Architecture, tokens, sample rate and task from a model's meta.yaml and training config; {} when absent."""
    repo = _Session(repo_id, session.cache_dir, session.endpoint, session.token, 1, 0.2, session.timeout)
    try:
        commit = commit or repo.resolve(None)
        meta = _yaml(repo.read(commit, "meta.yaml", offline=False))
    except Exception:  # noqa: BLE001 - no meta.yaml (or it cannot be read): the card's facts stand alone
        return {}
    try:
        named = rules.meta_files(meta)
    except BundleError:  # not an ESPnet meta.yaml: the card's facts stand alone
        return {}
    task, config_path = named.task, named.config
    if config_path is None:
        return {"task": task} if task else {}
    try:
        cfg = _yaml(repo.read(commit, config_path, offline=False))
    except Exception:  # noqa: BLE001 - as above
        cfg = None
    if not isinstance(cfg, dict):
        return {"task": task}
    arch = {k: str(cfg[k]) for k in ("encoder", "decoder") if isinstance(cfg.get(k), str)}
    frontend = cfg.get("frontend")
    if isinstance(frontend, str) and frontend != "default":
        upstream = ((cfg.get("frontend_conf") or {}).get("frontend_conf") or {}).get("upstream")
        arch["frontend"] = str(upstream or frontend)
    tokens: dict[str, Any] = {}
    if isinstance(cfg.get("token_type"), str):
        tokens["type"] = cfg["token_type"]
    if isinstance(cfg.get("token_list"), list):
        tokens["size"] = len(cfg["token_list"])
    facts = {"task": task, "architecture": arch, "tokens": tokens,
             "sample_rate": rules.config_sample_rate(cfg, default=None)}
    return {k: v for k, v in facts.items() if v not in (None, {}, [])}


def hub_entry(model: Any, endpoint: str) -> dict[str, Any]:
    """A catalog mapping from a list_models ModelInfo (card data and tags; empty facts left out)."""
    card = model.card_data.to_dict() if getattr(model, "card_data", None) is not None else {}
    tags = [str(t) for t in (model.tags or [])] + [str(t) for t in card.get("tags") or []]
    task = next((TASK_TAGS[t] for t in [model.pipeline_tag or "", *tags] if t in TASK_TAGS), None)
    languages = card.get("language") or []
    languages = [languages] if isinstance(languages, str) else [str(x) for x in languages]
    datasets = card.get("datasets") or []
    datasets = [datasets] if isinstance(datasets, str) else datasets
    entry = {
        "repo_id": model.id,
        "task": task,
        "languages": languages,
        "corpus": str(datasets[0]) if datasets else None,
        "license": str(card["license"]) if card.get("license") else None,
        "source": f"{endpoint}/{model.id}" + (f" @ {model.sha}" if getattr(model, "sha", None) else ""),
        "status": "hub",
    }
    return {k: v for k, v in entry.items() if v not in (None, [], {})}
