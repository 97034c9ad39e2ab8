"""One pull's conversation with the Hub: a revision resolved to a commit, the file listing, files
fetched into the HF cache (large LFS files as parallel ranges), errors as one sentence.
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

from espzoo import repo as rules
from espzoo.errors import (
    BundleError,
    GatedRepoError,
    HubDiskFullError,
    HubError,
    HubUnavailableError,
    NotAsrModelError,
    NotCachedError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UnreachableError,
)
from espzoo.hub import hf as _hf
from espzoo.utils.fs import write_text
from espzoo.utils.yaml_io import load_yaml

HEX40 = re.compile(r"[0-9a-f]{40}")


API_TIMEOUT = 30.0  # seconds for each API call (model info, tree listing)


# huggingface_hub reads a download in 10 MiB pieces, each copied into one buffer before it is written: on loopback
# that runs at a third of curl's speed (bench/pull.py), and a connection cut before 10 MiB restarts from byte 0.
# Pieces the size of a socket read match curl and let a cut download resume from where it stopped.
DOWNLOAD_CHUNK = 64 * 1024


# LFS files this large are fetched as parallel byte ranges (espzoo.hub.fetch, as hf_transfer did); smaller ones, and any
# file of a server that ignores Range, through huggingface_hub.
PARALLEL_MIN = 64 * 1024 * 1024


T = TypeVar("T")


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
    a language model's) and the checkpoint by rules.best_checkpoint. Raises NotAsrModelError when there is none."""
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
            raise NotAsrModelError(f"meta.yaml names no ASR model (it has {', '.join(named.kinds)} files); pick an ASR "
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
        raise NotAsrModelError(f"the repo holds no ESPnet ASR {what}, so it is not an ESPnet ASR model; "
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
    if lm:  # LM hook: the LM meta.yaml names (lm_file, lm_train_config), decoded with by default
        from espzoo.repo import repo_lm_files

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
        return load_yaml(text)
    except yaml.YAMLError:
        return None


class Session:
    def __init__(self, repo_id: str, cache_dir: str | Path | None, endpoint: str | None, token: Any,
                 retries: int, backoff: float, timeout: float = API_TIMEOUT, repo_type: str = "model",
                 select: Any = None):
        from huggingface_hub import HfApi

        _hf.ensure_client_timeout(API_TIMEOUT)
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.select = select  # (listing, read) -> the files wanted; None: an ASR model's (select_files)
        self.cache_dir = Path(cache_dir or _hf.hub_cache_dir())
        self.storage = self.cache_dir / _hf.repo_folder(repo_id, repo_type)
        self.endpoint = (endpoint or _hf.hub_endpoint()).rstrip("/")
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
        raise NotCachedError(f"{self.repo_id}{at} is not in the cache at {self.cache_dir} and {why}; connect (or unset "
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

        from espzoo.hub import fetch

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
        espzoo.hub.cache does); a server that ignores Range leaves the file to snapshot_download."""
        from filelock import FileLock
        from huggingface_hub.utils import build_hf_headers

        from espzoo.hub import fetch

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
            return RepoNotFoundError(f"{repo} does not exist on {self.endpoint}{hint}")
        if kind == "revision":
            return RevisionNotFoundError(f"{repo} has no revision {revision!r}; use a branch, tag or commit the repo "
                                         "has (e.g. main).")
        if kind == "gated":
            return GatedRepoError(f"{repo} is gated or private and no valid token was sent; accept its terms on the "
                                  "Hub, then set HF_TOKEN=hf_... (or run `hf auth login`) and pull again.")
        if kind == "disk":
            return HubDiskFullError(f"no room to write {repo} into {self.cache_dir} ({_hf.reason(exc)}); free space, "
                                    "raise the quota or file-size limit, or point HF_HOME at a larger disk.")
        if kind == "unreachable":
            return UnreachableError(self.endpoint, _hf.reason(exc))
        if kind == "transient":
            return HubUnavailableError(f"the Hub at {self.endpoint} kept failing to {what} ({_hf.reason(exc)}, "
                                  f"{attempts + 1} tries); try again later or point HF_ENDPOINT at a mirror.")
        return exc


def _suggestion(repo_id: str) -> str:
    try:
        from espzoo.catalog.catalog import Catalog

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


