"""Care of the local HF cache: verify (re-hash against the Hub's ids), ls, rm, stale-download repair, lock files.

    from espzoo.hub.cache import verify, list_cached, remove, read_lock
    verify("espnet/bn_openslr53", fix=True).ok     # re-hash every cached file; re-download the bad ones
    list_cached()                                   # every cached ESPnet revision, most recently used first
    remove("espnet/bn_openslr53@<commit>")          # (commits removed, bytes freed)

Everything reads the standard HF cache (`hf cache` sees the same); the cache's private layout (tree cache,
`.incomplete` names, lock paths) is reached through espzoo.hub.hf. Failures are HubErrors.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from espzoo.errors import HubError
from espzoo.hub import fetch
from espzoo.hub import hf as _hf
from espzoo.utils.fs import write_text
from espzoo.utils.yaml_io import load_yaml

if TYPE_CHECKING:
    from espzoo.hub.session import Snapshot
from espzoo.errors import NotCachedError

LOCK_HEADER = "# espzoo.lock: the exact commit of each model, written by `espzoo pull --lock`. Commit it.\n"
HEX64 = re.compile(r"[0-9a-f]{64}")
file_id = _hf.file_id  # the Hub's id of a file (sha256 for LFS, else git blob sha1)


# ---------------------------------------------------------------------------------------------
# Lock file


def read_lock(path: str | Path) -> dict[str, dict[str, Any]]:
    """repo_id -> {commit, revision, files} from an espzoo.lock; {} when the file does not exist."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
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
    from espzoo.hub.session import Session, parse_repo_ref  # verify re-downloads through pull's session

    repo_id, at = parse_repo_ref(repo_id)
    revision = revision or at
    session = Session(repo_id, cache_dir, endpoint, token, retries=3, backoff=0.5)
    commit = session.cached_commit(revision, "verify only checks cached files")
    snapshot = session.storage / "snapshots" / commit
    tree = _hf.read_tree(session.storage, commit) or {}
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
        info = scan_cache_dir(cache_dir or _hf.hub_cache_dir())
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
        from espzoo.repo import read_front_matter

        card = read_front_matter(snapshot / "README.md")
        tags = card.get("tags") if isinstance(card.get("tags"), list) else []
        return "espnet" in tags or card.get("library_name") == "espnet"
    return False


REPO_LOCK = "espzoo-repo.lock"  # in huggingface_hub's .locks/<repo folder>/: pulls hold it shared, rm exclusive


@contextlib.contextmanager
def repo_lock(cache_dir: str | Path, repo_id: str, repo_type: str = "model", *, remove: bool = False) -> Iterator[None]:
    """Coordinate pulls and rm of one repo in the cache: a pull holds the repo's lock shared for its whole run (pulls
    of it go on side by side); rm takes it exclusive, and is refused in one sentence while a pull holds it (a pull
    whose files vanish under it would blame the disk). A cache this user cannot write to is read without a lock."""
    import fcntl

    path = Path(cache_dir) / ".locks" / _hf.repo_folder(repo_id, repo_type) / REPO_LOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        if remove:
            raise
        yield
        return
    try:
        if remove:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HubError(f"{repo_id} is being pulled by another espzoo process; run espzoo rm again when "
                               "that pull is done.") from None
        else:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while an rm of the repo runs, then pulls afresh
        yield
    finally:
        os.close(fd)


def remove(repo_id: str, revision: str | None = None, *, cache_dir: str | Path | None = None) -> tuple[list[str], int]:
    """Delete repo_id@revision (every revision when None) from the HF cache; returns (commits removed, bytes freed).
    Refused while a pull of the repo runs (repo_lock)."""
    from espzoo.hub.session import parse_repo_ref

    repo_id, at = parse_repo_ref(repo_id)
    with repo_lock(cache_dir or _hf.hub_cache_dir(), repo_id, remove=True):
        return _remove(repo_id, revision or at, cache_dir)


def _remove(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> tuple[list[str], int]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir or _hf.hub_cache_dir())
    except CacheNotFound:
        info = None
    repo = next((r for r in info.repos if r.repo_id == repo_id and r.repo_type == "model"), None) if info else None
    if repo is None:
        raise NotCachedError(f"{repo_id} is not in the cache; `espzoo ls` lists what is.")
    commits = [r.commit_hash for r in repo.revisions
               if revision is None or r.commit_hash.startswith(revision) or revision in r.refs]
    if not commits:
        raise NotCachedError(f"{repo_id} has no cached revision {revision!r}; `espzoo ls` lists the cached ones.")
    strategy = info.delete_revisions(*commits)  # type: ignore[union-attr]
    freed = strategy.expected_freed_size
    strategy.execute()
    if revision is None:  # the repo folder goes too (refs, trees, .no_exist), as `hf cache rm` does
        import shutil

        shutil.rmtree(repo.repo_path, ignore_errors=True)
    return commits, freed


# ---------------------------------------------------------------------------------------------
# Stale downloads


def recover_stale_downloads(
    repo_id: str, *, cache_dir: str | Path | None = None, endpoint: str | None = None, token: Any = None,
    resume: bool = True, repo_type: str = "model",
) -> list[str]:
    """Deal with `blobs/*.incomplete` files a killed process left behind. huggingface_hub names them per process, so
    no later download resumes them and nothing removes them. A file is stale when nobody holds its download lock;
    with `resume` its missing bytes are fetched (Range) and the blob kept if its hash matches the Hub's id,
    otherwise (or when nothing says which file it was) it is removed. Returns notes for the user. A dataset repo's
    (`repo_type="dataset"`) the same way."""
    from filelock import FileLock, Timeout

    cache = Path(cache_dir or _hf.hub_cache_dir())
    blobs = cache / _hf.repo_folder(repo_id, repo_type) / "blobs"
    if not blobs.is_dir():
        return []
    resumed, removed, kept_bytes, removed_bytes = 0, 0, 0, 0
    for partial in blobs.glob("*" + _hf.INCOMPLETE_SUFFIX):
        etag = _hf.incomplete_etag(partial)
        lock_path = _hf.lock_path(cache, repo_id, etag, repo_type)
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(lock_path), timeout=0):
                if not partial.exists():
                    continue
                size = partial.stat().st_size
                blob = blobs / etag
                outcome = "drop" if blob.exists() or not resume else _resume_partial(
                    blobs.parent, repo_id, partial, etag, endpoint, token, repo_type)
                if outcome == "resumed":
                    resumed += 1
                    kept_bytes += size
                elif outcome == "drop":
                    fetch.discard(partial)
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


def _resume_partial(storage: Path, repo_id: str, partial: Path, etag: str, endpoint: str | None, token: Any,
                    repo_type: str = "model") -> str:
    """Fetch the rest of `partial` and move it into place as blobs/<etag>: "resumed"; "drop" when it cannot be
    finished (unknown file, wrong hash); "keep" when the Hub cannot be reached (a later pull resumes it)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    found = None
    for tree_commit, tree in _hf.cached_trees(storage):
        found = next(((tree_commit, path, entry) for path, entry in tree.items()
                      if etag in (entry.lfs_sha256, entry.blob_id)), None)
        if found:
            break
    if found is None:
        return "drop"  # pulled without espzoo: which file it was is unknown
    commit, path, entry = found
    lfs = entry.lfs_sha256 == etag
    url = hf_hub_url(repo_id, path, revision=commit, endpoint=endpoint or _hf.hub_endpoint(), repo_type=repo_type)
    try:
        size = partial.stat().st_size
        if size > entry.size:
            return "drop"
        if fetch.is_resumable(partial):  # a parallel download: its parts go on from where each stopped
            if not fetch.fetch(url, partial, entry.size, headers=build_hf_headers(token=token)):
                return "drop"
        elif size < entry.size:
            with open(partial, "ab") as f:
                _hf.http_get(url, f, resume_size=size, headers=build_hf_headers(token=token), expected_size=entry.size,
                         displayed_filename=PurePosixPath(path).name)
        if file_id(partial, lfs=lfs) != etag:
            return "drop"
        os.chmod(partial, 0o644)
        partial.replace(storage / "blobs" / etag)
        return "resumed"
    except Exception as exc:  # noqa: BLE001 - any other failure: drop the partial file, a full download follows
        return "keep" if _hf.classify(exc) == "unreachable" else "drop"


