"""`mirror add`: copy a cached model into a mirror folder as a repo.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from espzoo.hub.hf import hub_cache_dir as hf_hub_cache
from espzoo.serve.sources import DATASETS, CacheSource, FolderSource
from espzoo.utils.fs import public_mode, replace_dir


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
