"""What the mirror serves: a folder of repos (ROOT/<org>/<name>/) or the HF cache, as repo files and
revisions with the hashes the Hub would give them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from espzoo.hub.hf import file_id, repo_folder
from espzoo.repo import read_front_matter
from espzoo.utils.fs import public_mode

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


_CHUNK = 1024 * 1024


DATASETS = "datasets"  # ROOT/datasets/<org>/<name>/ holds dataset repos, as the Hub's URLs do


KEPT = ".espzoo-commits"  # ROOT/.espzoo-commits/<org>/<name>/<commit>/: commits kept after their branch moved on


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


HEX40 = re.compile(r"[0-9a-f]{40}")


HEX64 = re.compile(r"[0-9a-f]{64}")


def _link(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (no copy of a big checkpoint); a copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
