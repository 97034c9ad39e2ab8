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
as parallel byte ranges (espzoo.hub.fetch) into the blob huggingface_hub would write, under its lock; the rest, and
any file of a server that ignores Range, through huggingface_hub itself. Failures become a `HubError` whose message
is one sentence naming the problem and the fix. Progress is reported to a callback (the CLI draws it); verify, ls, rm,
lock files and stale-download repair are in espzoo.hub.cache, catalog refresh in espzoo.hub.refresh. A dataset repo
(`repo_type="dataset"`, data.hfdata) is pulled the same way: parallel ranges for its large files, and what a killed
pull left half-downloaded resumed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from espzoo.errors import (
    HubError,
    NotCachedError,
    UnreachableError,
)
from espzoo.hub import hf as _hf
from espzoo.hub.cache import (
    read_lock,
    recover_stale_downloads,
    repo_lock,
    update_lock,
)
from espzoo.hub.session import API_TIMEOUT, Session, Snapshot, _log_note, _write_ref, parse_repo_ref


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
    `repo_type="dataset"` pulls a dataset repo, `select(listing, read)` choosing its files (espzoo.data.hfdata)."""
    try:
        return _pull(repo_id, revision, all_files=all_files, lock_file=lock_file, cache_dir=cache_dir,
                     endpoint=endpoint, token=token, retries=retries, backoff=backoff, timeout=timeout,
                     progress=progress, notify=notify, repo_type=repo_type, select=select)
    except OSError as exc:  # the cache's disk, not the Hub (HubDiskFullError already says which)
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
    session = Session(repo_id, cache_dir, endpoint, token, retries, backoff, timeout, repo_type, select)
    with repo_lock(session.cache_dir, repo_id, repo_type):  # an `espzoo rm` of it waits until this pull is done
        return _pull_locked(session, repo_id, revision, all_files=all_files, lock_file=lock_file, token=token,
                            progress=progress, notify=notify, repo_type=repo_type)


def _pull_locked(session: Session, repo_id: str, revision: str | None, *, all_files: bool,
                 lock_file: str | Path | None, token: str | bool | None, progress: Any,
                 notify: Callable[[str], None] | None, repo_type: str) -> Snapshot:
    offline = _hf.hub_offline()
    notes: list[str] = []
    commit: str | None = None
    if offline:
        notes.append("HF_HUB_OFFLINE is set; using the cached copy")
    else:
        try:
            commit = session.resolve(revision)
        except UnreachableError as exc:
            offline = True
            notes.append(f"the Hub at {session.endpoint} cannot be reached ({exc.reason}); using the cached copy")
        else:  # not known to be offline: finish what a killed pull left half-downloaded
            notes += recover_stale_downloads(repo_id, cache_dir=session.cache_dir, endpoint=session.endpoint,
                                             token=token, repo_type=repo_type)
    if not offline:
        assert commit is not None
        try:
            wanted = _fetch(session, commit, all_files, progress)
        except UnreachableError as exc:  # a pinned commit asks nothing until here: the Hub may be gone
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


def _fetch(session: Session, commit: str, all_files: bool, progress: Any) -> list[str]:
    """Download what is wanted at `commit` (nothing when it is all cached); returns the repo paths."""
    listing = session.listing(commit, offline=False)
    wanted = sorted(listing) if all_files else session.choose(listing, lambda path: session.read(commit, path, False))
    session.download(commit, wanted, progress)
    return wanted


def _cached_files(session: Session, commit: str, all_files: bool) -> list[str]:
    """What is wanted at `commit`, all of it from the cache, else NotCachedError."""
    listing = session.listing(commit, offline=True)
    wanted = sorted(listing) if all_files else session.choose(listing, lambda path: session.read(commit, path, True))
    snapshot_dir = session.storage / "snapshots" / commit
    missing = [f for f in wanted if not (snapshot_dir / f).exists()]
    if missing:
        raise NotCachedError(
            f"{session.repo_id}@{commit[:12]} is only partly cached ({len(missing)} files missing, e.g. {missing[0]}) "
            "and the Hub cannot be reached; pull it once with network access."
        )
    return wanted
