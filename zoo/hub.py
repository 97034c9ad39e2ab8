"""Pull ESPnet models from the Hub by revision into the standard HF cache, and work offline from it.

    from espzoo.hub import pull
    snap = pull("espnet/bn_openslr53", "main")     # resolves main to a commit, downloads what a fine-tune needs
    snap.commit, snap.path, snap.files
    pull("espnet/bn_openslr53", snap.commit)       # cached commit: no request at all

Everything goes through huggingface_hub (HF_ENDPOINT, HF_HOME/HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE are honoured,
and `hf cache` sees what espzoo downloads). The revision is resolved to a commit first and files are fetched by
commit, so a pinned pull of a cached commit makes zero requests. Only the files an ASR fine-tune needs are fetched
(README.md, meta.yaml, the training config, the checkpoint meta.yaml names or the best one found, the token list and
bpe model, the normalization stats) unless all_files=True. LFS files of PARALLEL_MIN bytes or more are fetched
as parallel byte ranges (espzoo.fetch) into the blob huggingface_hub would write, under its lock; the rest, and
any file of a server that ignores Range, through huggingface_hub itself. Failures become a `HubError` whose message
is one sentence naming the problem and the fix. Progress is reported to a callback (the CLI draws it); verify, ls, rm,
lock files and stale-download repair are in espzoo.cache, catalog refresh in espzoo.catalog_refresh. A dataset repo
(`repo_type="dataset"`, espzoo.hfdata) is pulled the same way: parallel ranges for its large files, and what a killed
pull left half-downloaded resumed.
"""

from __future__ import annotations

import fnmatch
import glob
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from espzoo import _hf
from espzoo import repo as rules
from espzoo._fs import write_text
from espzoo.cache import (  # noqa: F401 (verify, list_cached, remove, file_id, NotCached: re-exported, their old home)
    NotCached,
    file_id,
    list_cached,
    read_lock,
    recover_stale_downloads,
    remove,
    repo_lock,
    update_lock,
    verify,
)
from espzoo.errors import (
    BundleError,
    HubError,  # noqa: F401 (re-exported)
)

HEX40 = re.compile(r"[0-9a-f]{40}")
API_TIMEOUT = 30.0  # seconds for each API call (model info, tree listing)
# huggingface_hub reads a download in 10 MiB pieces, each copied into one buffer before it is written: on loopback
# that runs at a third of curl's speed (bench/pull.py), and a connection cut before 10 MiB restarts from byte 0.
# Pieces the size of a socket read match curl and let a cut download resume from where it stopped.
DOWNLOAD_CHUNK = 64 * 1024
# LFS files this large are fetched as parallel byte ranges (espzoo.fetch, as hf_transfer did); smaller ones, and any
# file of a server that ignores Range, through huggingface_hub.
PARALLEL_MIN = 64 * 1024 * 1024
T = TypeVar("T")


class RepoNotFound(HubError):
    pass


class RevisionNotFound(HubError):
    pass


class GatedRepo(HubError):
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


hub_endpoint = _hf.hub_endpoint
hub_cache_dir = _hf.hub_cache_dir
hub_offline = _hf.hub_offline


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
    progress: _hf.ProgressFn | bool | None = None,
    notify: Callable[[str], None] | None = None,
    repo_type: str = "model",
    select: Callable[[list[str], Callable[[str], str | None]], list[str]] | None = None,
) -> Snapshot:
    """Download `repo_id` at `revision` (branch, tag or commit; default main, or the commit in `lock_file`)
    into the HF cache and return the snapshot. Offline (HF_HUB_OFFLINE=1 or the Hub unreachable) a cached
    snapshot is used, with a note. `lock_file` records repo -> commit (created or updated). Notes (offline
    fallback, resumed downloads) are in `Snapshot.notes` and passed to `notify` (default: a logging warning).
    `progress(bar, unit, done, total)` hears every update of the download (a bool or None: nothing).
    `repo_type="dataset"` pulls a dataset repo, `select(listing, read)` choosing its files (espzoo.hfdata)."""
    try:
        return _pull(repo_id, revision, all_files=all_files, lock_file=lock_file, cache_dir=cache_dir,
                     endpoint=endpoint, token=token, retries=retries, backoff=backoff, timeout=timeout,
                     progress=progress, notify=notify, repo_type=repo_type, select=select)
    except OSError as exc:  # the cache's disk, not the Hub (DiskFull already says which)
        raise HubError(f"cannot write to the cache ({exc.strerror or exc}); check HF_HOME points at a writable "
                       "disk.") from exc


def _pull(repo_id: str, revision: str | None, *, all_files: bool, lock_file: str | Path | None,
          cache_dir: str | Path | None, endpoint: str | None, token: str | bool | None, retries: int,
          backoff: float, timeout: float, progress: Any, notify: Callable[[str], None] | None,
          repo_type: str = "model", select: Any = None) -> Snapshot:
    repo_id, at = parse_repo_ref(repo_id)
    revision = revision or at
    if revision is None and lock_file is not None:
        revision = read_lock(lock_file).get(repo_id, {}).get("commit")
    session = _Session(repo_id, cache_dir, endpoint, token, retries, backoff, timeout, repo_type, select)
    with repo_lock(session.cache_dir, repo_id, repo_type):  # an `espzoo rm` of it waits until this pull is done
        return _pull_locked(session, repo_id, revision, all_files=all_files, lock_file=lock_file, token=token,
                            progress=progress, notify=notify, repo_type=repo_type)


def _pull_locked(session: _Session, repo_id: str, revision: str | None, *, all_files: bool,
                 lock_file: str | Path | None, token: str | bool | None, progress: Any,
                 notify: Callable[[str], None] | None, repo_type: str) -> Snapshot:
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
                                             token=token, repo_type=repo_type)
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


def _fetch(session: _Session, commit: str, all_files: bool, progress: Any) -> list[str]:
    """Download what is wanted at `commit` (nothing when it is all cached); returns the repo paths."""
    listing = session.listing(commit, offline=False)
    wanted = sorted(listing) if all_files else session.choose(listing, lambda path: session.read(commit, path, False))
    session.download(commit, wanted, progress)
    return wanted


def _cached_files(session: _Session, commit: str, all_files: bool) -> list[str]:
    """What is wanted at `commit`, all of it from the cache, else NotCached."""
    listing = session.listing(commit, offline=True)
    wanted = sorted(listing) if all_files else session.choose(listing, lambda path: session.read(commit, path, True))
    snapshot_dir = session.storage / "snapshots" / commit
    missing = [f for f in wanted if not (snapshot_dir / f).exists()]
    if missing:
        raise NotCached(
            f"{session.repo_id}@{commit[:12]} is only partly cached ({len(missing)} files missing, e.g. {missing[0]}) "
            "and the Hub cannot be reached; pull it once with network access."
        )
    return wanted


_T = TypeVar("_T")


def interruptible(call: Callable[[], _T]) -> _T:
    """`call()`, run in a helper thread while this (main) thread waits in short joins, so that Ctrl-C is raised
    here at once. snapshot_download downloads in a thread pool whose exit waits for every file in flight: a Ctrl-C
    in its thread would wait for them (124 s for one file at 300 KB/s). The files left half-written resume on the
    next pull; the CLI ends without waiting for the pool (espzoo.cli.main)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return call()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread as it is
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="espzoo-download", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _log_note(note: str) -> None:
    import logging

    logging.getLogger("espzoo.hub").warning("note: %s", note)


def select_files_without_lm(listing: Iterable[str], read: Callable[[str], str | None]) -> list[str]:
    """select_files without the language model meta.yaml names (`pull --no-lm`)."""
    return select_files(listing, read, lm=False)


def select_files(listing: Iterable[str], read: Callable[[str], str | None], *, lm: bool = True) -> list[str]:
    """The repo files an ASR fine-tune needs. `read(path)` returns a small file's text (meta.yaml, the config).

    The same rules as `bundle.open_bundle` (espzoo.repo), applied to the Hub's listing: meta.yaml names the config
    and checkpoint; without it the training config is found by its place (a config.yaml beside a checkpoint, not
    a language model's) and the checkpoint by rules.best_checkpoint. Raises NotAsrModel when there is none."""
    files = list(listing)
    present = set(files)
    # adapter_*: an adapter-only export (espzoo.lora), applied to the base model its config names
    wanted = {f for f in ("README.md", "meta.yaml", rules.ADAPTER_NAME, rules.ADAPTER_CONFIG_NAME) if f in present}
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
    # espzoo's export keeps its fine-tuning record beside the config (an S2T model's decoding prompt is in it).
    record = str(PurePosixPath(config).parent / "espzoo" / "provenance.json")
    wanted |= {record} & present
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
    if lm:  # espzoo.lm hook: the LM meta.yaml names (lm_file, lm_train_config), decoded with by default
        from espzoo.lm import repo_lm_files

        wanted |= set(repo_lm_files(files, read))
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
                 retries: int, backoff: float, timeout: float = API_TIMEOUT, repo_type: str = "model",
                 select: Any = None):
        from huggingface_hub import HfApi

        _hf.ensure_client_timeout(API_TIMEOUT)
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.select = select  # (listing, read) -> the files wanted; None: an ASR model's (select_files)
        self.cache_dir = Path(cache_dir or hub_cache_dir())
        self.storage = self.cache_dir / _hf.repo_folder(repo_id, repo_type)
        self.endpoint = (endpoint or hub_endpoint()).rstrip("/")
        self.token = token
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.api = HfApi(endpoint=self.endpoint, token=token)

    def choose(self, listing: dict[str, Any], read: Callable[[str], str | None]) -> list[str]:
        return sorted((self.select or select_files)(list(listing), read))

    # -- resolving -----------------------------------------------------------------------------

    def resolve(self, revision: str | None) -> str:
        """The commit `revision` names (a 40-hex commit is taken as is: no request)."""
        if revision and HEX40.fullmatch(revision):
            return revision
        info = self.call(lambda: self.api.repo_info(self.repo_id, revision=revision, repo_type=self.repo_type,
                                                    timeout=self.timeout),
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
        from huggingface_hub.hf_api import RepoFile

        cached = _hf.read_tree(self.storage, commit)
        if cached is not None:
            return cached
        snapshot = self.storage / "snapshots" / commit
        if offline:
            return {p.relative_to(snapshot).as_posix(): None for p in snapshot.rglob("*") if not p.is_dir()}
        tree = self.call(
            lambda: list(self.api.list_repo_tree(self.repo_id, recursive=True, revision=commit,
                                                 repo_type=self.repo_type)),
            f"list the files of {self.repo_id}@{commit[:12]}", commit,
        )
        # snapshot_download reads the same cache: it lists nothing again, and a later pinned pull asks nothing.
        return _hf.write_tree(self.storage, commit, [f for f in tree if isinstance(f, RepoFile)])

    def read(self, commit: str, path: str, offline: bool) -> str | None:
        """A small file's text at `commit`, downloaded into the cache if needed."""
        local = self.storage / "snapshots" / commit / path
        if not local.exists():
            if offline:
                return None
            from huggingface_hub import hf_hub_download

            with _hf.download_chunk_size(DOWNLOAD_CHUNK):
                self.call(lambda: hf_hub_download(self.repo_id, path, revision=commit, cache_dir=self.cache_dir,
                                                  repo_type=self.repo_type,
                                                  endpoint=self.endpoint, token=self.token, etag_timeout=self.timeout,
                                                  tqdm_class=_hf.tqdm_class(None)),
                          f"download {path}", commit)
        try:
            return local.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def download(self, commit: str, files: list[str], progress: Any) -> None:
        from huggingface_hub import snapshot_download

        snapshot = self.storage / "snapshots" / commit
        if all((snapshot / f).exists() for f in files):
            return  # every file cached: nothing to ask (snapshot_download would not ask either, but this is explicit)
        tqdm_class = _hf.tqdm_class(progress if callable(progress) else None)
        for path, entry in self._large_files(commit, files):
            self.call(lambda path=path, entry=entry: self._fetch_parallel(commit, path, entry, tqdm_class),
                      f"download {path}", commit)
        patterns = [glob.escape(f) for f in files]
        with _hf.download_chunk_size(DOWNLOAD_CHUNK):
            self.call(lambda: interruptible(lambda: snapshot_download(
                self.repo_id, revision=commit, cache_dir=self.cache_dir, repo_type=self.repo_type,
                allow_patterns=patterns, endpoint=self.endpoint, token=self.token, tqdm_class=tqdm_class,
                etag_timeout=self.timeout)), f"download {len(files)} files of {self.repo_id}@{commit[:12]}", commit)

    def _large_files(self, commit: str, files: list[str]) -> list[tuple[str, Any]]:
        """(path, tree entry) of the files to fetch in parallel parts: large LFS files not yet cached. Xet-backed ones
        stay with huggingface_hub (hf_xet fetches in parallel itself), as does any file reached through a proxy."""

        from espzoo import fetch

        listing = _hf.read_tree(self.storage, commit) or {}
        snapshot = self.storage / "snapshots" / commit
        found = []
        for path in files:
            entry = listing.get(path)
            if (entry is None or not entry.lfs_sha256 or entry.size < PARALLEL_MIN or entry.xet_hash
                    or (snapshot / path).exists() or (self.storage / "blobs" / entry.lfs_sha256).exists()
                    or fetch.uses_proxy(self._url(commit, path))):
                continue
            found.append((path, entry))
        return found

    def _url(self, commit: str, path: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, path, revision=commit, endpoint=self.endpoint, repo_type=self.repo_type)

    def _fetch_parallel(self, commit: str, path: str, entry: Any, tqdm_class: type) -> None:
        """Fetch one large LFS file into blobs/<sha256> in parallel parts, under huggingface_hub's own lock for that
        blob (a concurrent pull waits, then finds it). snapshot_download then links it into the snapshot as it links
        any cached blob. A partial another process left is resumed and then checked against its sha256 (as
        espzoo.cache does); a server that ignores Range leaves the file to snapshot_download."""
        from filelock import FileLock
        from huggingface_hub.utils import build_hf_headers

        from espzoo import fetch

        sha256 = entry.lfs_sha256
        blob = self.storage / "blobs" / sha256
        lock = _hf.lock_path(self.cache_dir, self.repo_id, sha256, self.repo_type)
        lock.parent.mkdir(parents=True, exist_ok=True)
        blob.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock)):
            if blob.exists():
                return
            partial = fetch.partial_path(blob)
            left_by_another = fetch.is_resumable(partial)
            bar = tqdm_class(total=entry.size, unit="B", unit_scale=True, desc=PurePosixPath(path).name,
                             initial=fetch.written(partial, entry.size))
            url = self._url(commit, path)
            try:
                done = fetch.fetch(url, partial, entry.size, headers=build_hf_headers(token=self.token),
                                   timeout=self.timeout, retries=self.retries,
                                   backoff=self.backoff, on_bytes=bar.update)
            finally:
                bar.close()
            if not done:
                return
            if left_by_another and _hf.file_id(partial, lfs=True) != sha256:
                fetch.discard(partial)
                raise HubError(f"the resumed download of {path} does not match its sha256; pull again to fetch it "
                               "afresh.")
            partial.replace(blob)

    # -- errors and retries --------------------------------------------------------------------

    def call(self, fn: Callable[[], T], what: str, revision: str | None) -> T:
        """Run one client call; retry 5xx/timeouts with backoff; turn failures into one-sentence HubErrors."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised when unknown
                kind = _hf.classify(exc)
                if kind == "transient" and attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                    attempt += 1
                    continue
                raise self._error(exc, kind, what, revision, attempt) from exc

    def _error(self, exc: Exception, kind: str, what: str, revision: str | None, attempts: int) -> Exception:
        repo = self.repo_id
        if kind == "repo":
            hint = _suggestion(repo) if self.repo_type == "model" else "; check the dataset's ORG/NAME."
            return RepoNotFound(f"{repo} does not exist on {self.endpoint}{hint}")
        if kind == "revision":
            return RevisionNotFound(f"{repo} has no revision {revision!r}; use a branch, tag or commit the repo has "
                                    "(e.g. main).")
        if kind == "gated":
            return GatedRepo(f"{repo} is gated or private and no valid token was sent; accept its terms on the Hub, "
                             "then set HF_TOKEN=hf_... (or run `hf auth login`) and pull again.")
        if kind == "disk":
            return DiskFull(f"no room to write {repo} into {self.cache_dir} ({_hf.reason(exc)}); free space, raise the "
                            "quota or file-size limit, or point HF_HOME at a larger disk.")
        if kind == "unreachable":
            return _Unreachable(self.endpoint, _hf.reason(exc))
        if kind == "transient":
            return HubUnavailable(f"the Hub at {self.endpoint} kept failing to {what} ({_hf.reason(exc)}, "
                                  f"{attempts + 1} tries); try again later or point HF_ENDPOINT at a mirror.")
        return exc


def _suggestion(repo_id: str) -> str:
    try:
        from espzoo.catalog import Catalog

        close = Catalog.load().suggest(repo_id)
    except Exception:  # noqa: BLE001 - a broken catalog must not hide the real error
        close = []
    if close:
        return f"; did you mean {', '.join(close)}?"
    return "; check the id with `espzoo search`."


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    ref = storage / "refs" / revision
    try:
        if ref.is_file() and ref.read_text() == commit:
            return
        write_text(ref, commit)
    except OSError:
        pass  # a ref only speeds up offline use; the snapshot itself is complete


