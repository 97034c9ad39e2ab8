"""Upload a model to the Hub (or an espzoo mirror) in one commit: an experiment dir is exported first.

    from espzoo.publish.upload import PushOptions, push
    pushed = push("exp/bn_ft", PushOptions(repo_id="me/bn_ft"))          # export to a temporary folder, upload it
    pushed = push("hub_repo/", PushOptions(repo_id="me/bn_ft", revision="v2", private=True))
    print(pushed.commit_url)

Only huggingface_hub's public HfApi is used: `create_repo` (exist_ok), `create_branch` when a revision other than
main is asked for (from main, when it does not exist yet), then `upload_folder`: one commit holding every file of
the folder; the server's preupload answer sends the checkpoint (and any large file) through LFS. To an endpoint
other than the Hub itself (e.g. `espzoo mirror serve --root DIR --token T`) the files go by plain LFS, since
Xet storage is the Hub's own. The token is HF_TOKEN or the saved login unless `token` is given.
"""

from __future__ import annotations

import tempfile
import urllib.parse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from espzoo.errors import PushError
from espzoo.hub import hf as _hf
from espzoo.publish.hub_layout import ExportOptions, check_weights_only, export

API_TIMEOUT = 60.0  # seconds without progress on one request (a whole upload may take longer)
HUB_HOSTS = ("huggingface.co", "hf.co")


@dataclass(frozen=True)
class PushOptions:
    repo_id: str  # ORG/NAME
    private: bool = False  # for a repo this push creates (an existing repo keeps its visibility)
    revision: str | None = None  # a branch; None: main
    message: str | None = None  # the commit message; None: one naming what was pushed
    token: str | None = None  # None: HF_TOKEN or the saved login
    endpoint: str | None = None  # None: HF_ENDPOINT, else the Hub
    export: ExportOptions = field(default_factory=ExportOptions)  # card fields, when given an experiment dir


@dataclass(frozen=True)
class Pushed:
    repo_id: str
    revision: str
    commit: str
    commit_url: str
    files: list[str]
    exported: bool  # True when `source` was an experiment dir, exported first

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def source_kind(source: Path) -> str:
    """"experiment" (espzoo finetune's OUT) or "repo" (espzoo export's folder); PushError for anything else."""
    if (source / "config.yaml").is_file() and (source / "model.pth").is_file():
        return "experiment"
    if (source / "meta.yaml").is_file() and (source / "README.md").is_file():
        return "repo"
    raise PushError(f"{source} is neither an experiment dir (config.yaml + model.pth) nor an exported repo folder "
                    "(meta.yaml + README.md); pass espzoo finetune's --out or espzoo export's --out.")


def push(source: str | Path, options: PushOptions) -> Pushed:
    """Upload `source` (experiment dir or exported folder) to options.repo_id in one commit."""
    source = Path(source)
    _check_repo_id(options.repo_id)
    if source_kind(source) == "repo":
        for checkpoint in sorted(source.rglob("*.pth")):  # as export checks OUT/model.pth
            check_weights_only(checkpoint)
        return _upload(source, options, exported=False)
    with tempfile.TemporaryDirectory(prefix="espzoo-push-") as tmp:
        card = replace(options.export, repo_id=options.repo_id)  # the card's snippets name where it now lives
        folder = export(source, Path(tmp) / options.repo_id.split("/")[1], card)
        return _upload(folder, options, exported=True)


def _check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or "@" in repo_id:
        raise PushError(f"{repo_id!r} is not a repo id; write it as ORG/NAME (the branch goes in --revision).")


def _upload(folder: Path, options: PushOptions, *, exported: bool) -> Pushed:
    from huggingface_hub import HfApi

    _hf.ensure_client_timeout(API_TIMEOUT)
    endpoint = (options.endpoint or _hf.hub_endpoint()).rstrip("/")
    api = HfApi(endpoint=endpoint, token=options.token)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    revision = options.revision or "main"
    message = options.message or f"espzoo push: {folder.name} ({len(files)} files)"
    try:
        with _hf.lfs_uploads(not is_hub(endpoint)):
            api.create_repo(options.repo_id, private=options.private, exist_ok=True)
            if revision != "main":
                api.create_branch(options.repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(repo_id=options.repo_id, folder_path=folder, revision=revision,
                                       commit_message=message)
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised when unknown
        raise _error(exc, endpoint, options) from exc
    return Pushed(options.repo_id, revision, commit.oid, commit.commit_url, files, exported)


def is_hub(endpoint: str) -> bool:
    """Whether `endpoint` is the Hugging Face Hub itself (which stores uploads with Xet), not a mirror."""
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    return any(host == h or host.endswith("." + h) for h in HUB_HOSTS)


def _error(exc: Exception, endpoint: str, options: PushOptions) -> Exception:
    """One sentence for a failed upload; an unexpected exception is returned as is (a bug, reported as one)."""
    from huggingface_hub.errors import HfHubHTTPError

    repo = options.repo_id
    http = next((e for e in _chain(exc) if isinstance(e, HfHubHTTPError) and e.response is not None), None)
    status = http.response.status_code if http is not None else None
    said = (http.server_message or "").strip().splitlines()[0] if http is not None and http.server_message else ""
    said = f": {said}" if said else ""
    if status == 401:
        from huggingface_hub import get_token

        what = "the token" if options.token or get_token() else "the upload (no token was sent)"
        return PushError(f"{endpoint} refused {what} (HTTP 401{said}); set HF_TOKEN (or --token) to a token "
                         f"with write access to {repo.split('/')[0]}, or run `hf auth login`.")
    if status == 403:
        return PushError(f"{endpoint} refused the upload to {repo} (HTTP 403{said}); check that the token may "
                         "write there.")
    kind = _hf.classify(exc)
    if kind == "revision":
        return PushError(f"{repo} has no branch {options.revision!r} on {endpoint}{said}; check --revision.")
    if kind == "repo":
        return PushError(f"{repo} does not exist on {endpoint} and could not be created{said}; check the name and "
                         "the token's rights.")
    if kind == "unreachable":
        return PushError(f"cannot reach {endpoint} ({_hf.reason(exc)}); check the network or HF_ENDPOINT.")
    if kind in ("transient", "disk") or status is not None:
        return PushError(f"the upload of {repo} to {endpoint} failed ({_hf.reason(exc)}{said}); try again.")
    if isinstance(exc, ValueError):  # huggingface_hub's own checks (e.g. the card's metadata)
        return PushError(f"huggingface_hub refused the upload of {repo}: {str(exc).splitlines()[0]}")
    return exc


def _chain(exc: BaseException) -> list[BaseException]:
    seen, chain, node = set(), [], exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        chain.append(node)
        node = node.__cause__ or node.__context__
    return chain
