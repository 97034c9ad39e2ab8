"""The mirror's request handlers: the Hub's API routes (model info, tree, resolve, commits, LFS batch)
and the signed LFS links, answered as HUB_PROTOCOL.md says.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from typing import Any

from espzoo.errors import MirrorError
from espzoo.serve.http import _Handler
from espzoo.serve.sources import DATASETS, HEX64, RepoFile, Revision


class _ApiHandler(_Handler):
    """The Hub's API and resolve routes."""

    takes_uploads = True

    def route(self, pieces: list[str], query: dict[str, str], head: bool) -> None:
        if pieces[:2] == ["api", "agent-harnesses"]:
            return self._send_json({"standardEnvVars": [], "harnesses": {}}, head=head)
        if pieces[:2] in (["api", "models"], ["api", DATASETS]):
            kind = "dataset" if pieces[1] == DATASETS else "model"
            rest = pieces[2:]
            if not rest or rest == [""]:
                return self._send_json(self._list(query, kind), head=head)
            if len(rest) < 2:
                raise MirrorError(404, "RepoNotFound", f"Repository {'/'.join(rest)} not found")
            repo_id, rest = "/".join(rest[:2]), rest[2:]
            if not rest:
                return self._send_json(self._info(repo_id, None, query, kind), head=head)
            if rest[0] == "revision" and len(rest) >= 2:
                return self._send_json(self._info(repo_id, "/".join(rest[1:]), query, kind), head=head)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._send_json(self._tree(repo_id, rest[1], "/".join(rest[2:]), query, kind), head=head)
            if rest[0] in ("xet-write-token", "xet-read-token"):  # an upload by hf_xet: say what works instead
                raise MirrorError(501, None, "this mirror takes LFS uploads, not Xet: set HF_HUB_DISABLE_XET=1 "
                                             "(espzoo push does so itself)")
            raise MirrorError(404, None, f"unknown API route {'/'.join(pieces)}")
        if pieces[:1] == [DATASETS] and len(pieces) >= 6 and pieces[3] == "resolve":  # a dataset repo's file
            return self._resolve("/".join(pieces[1:3]), pieces[4], "/".join(pieces[5:]), head, "dataset")
        if pieces[:1] == ["models"]:  # /models/org/name/resolve/... is the long form of /org/name/resolve/...
            pieces = pieces[1:]
        if len(pieces) >= 5 and pieces[2] == "resolve":
            return self._resolve("/".join(pieces[:2]), pieces[3], "/".join(pieces[4:]), head)
        raise MirrorError(404, None, f"unknown route /{'/'.join(pieces)}")

    def _resolve(self, repo_id: str, rev: str, path: str, head: bool, repo_type: str = "model") -> None:
        revision = self.mirror.revision(repo_id, rev, self.token(), repo_type)
        file = revision.files.get(path)
        if file is None:
            raise MirrorError(404, "EntryNotFound", f"{path} does not exist at {rev}", commit=revision.commit)
        headers = {"X-Repo-Commit": revision.commit, "ETag": f'"{file.blob_id}"'}
        if file.sha256:
            location = f"{self._lfs_origin()}/lfs/{file.sha256}?{self.mirror.sign_link(file.sha256)}"
            headers |= {"Location": location, "X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(file.size)}
            self.send_response(302)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(file, head=head, headers=headers)

    def _lfs_origin(self) -> str:
        """The LFS server as this client reaches us: the host it asked for (a mirror bound to 0.0.0.0 serves
        clients that know it as mirror-host:8080), on the LFS port."""
        lfs_port = self.mirror.lfs_url.rsplit(":", 1)[1]
        host = (self.headers.get("Host") or "").strip()
        if host.startswith("["):  # IPv6 literal: [::1]:8080
            host = host[: host.find("]") + 1]
        else:
            host = host.rsplit(":", 1)[0]
        return f"http://{host}:{lfs_port}" if host else self.mirror.lfs_url

    def _info(self, repo_id: str, rev: str | None, query: dict[str, str], repo_type: str = "model") -> dict[str, Any]:
        revision = self.mirror.revision(repo_id, rev, self.token(), repo_type)
        blobs = query.get("blobs", "").lower() == "true"
        return model_json(revision, siblings=True, blobs=blobs)

    def _tree(self, repo_id: str, rev: str, prefix: str, query: dict[str, str],
              repo_type: str = "model") -> list[dict[str, Any]]:
        revision = self.mirror.revision(repo_id, rev, self.token(), repo_type)
        recursive = query.get("recursive", "").lower() == "true"
        prefix = prefix.strip("/")
        if prefix and prefix not in revision.files and not any(p.startswith(prefix + "/") for p in revision.files):
            raise MirrorError(404, "EntryNotFound", f"{prefix} does not exist at {rev}", commit=revision.commit)
        entries: dict[str, dict[str, Any]] = {}
        for path, file in sorted(revision.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rel = path[len(prefix) + 1:] if prefix else path
            dirs = rel.split("/")[:-1]
            for depth in range(1, len(dirs) + 1):
                if not recursive and depth > 1:
                    break
                sub = "/".join(([prefix] if prefix else []) + dirs[:depth])
                oid = hashlib.sha1(f"{revision.commit}:{sub}".encode()).hexdigest()
                entries.setdefault(sub, {"type": "directory", "oid": oid, "path": sub})
            if recursive or not dirs:
                entries[path] = file_json(file)
        return list(entries.values())

    def _list(self, query: dict[str, str], repo_type: str = "model") -> list[dict[str, Any]]:
        author = (query.get("author") or "").lower()
        search = (query.get("search") or "").lower()
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
        full = any(query.get(k, "").lower() == "true" for k in ("cardData", "full"))
        models = []
        for repo_id in self.mirror.repo_ids(repo_type):
            if author and repo_id.split("/")[0].lower() != author:
                continue
            if search and search not in repo_id.lower():
                continue
            try:
                revision = self.mirror.revision(repo_id, None, self.token(), repo_type)
            except MirrorError:
                continue  # gated without a token: listed by the Hub, but we keep it simple
            models.append(model_json(revision, siblings=full, blobs=False, card=True))
            if limit and len(models) >= limit:
                break
        return models


class _LfsHandler(_Handler):
    """The second origin: /lfs/<sha256> serves an LFS file's bytes."""

    def route(self, pieces: list[str], query: dict[str, str], head: bool) -> None:
        if len(pieces) == 2 and pieces[0] == "lfs" and HEX64.fullmatch(pieces[1]):
            file = self.mirror.blob(pieces[1], query)
            return self._send_file(file, head=head, headers={"ETag": f'"{file.sha256}"'})
        raise MirrorError(404, None, f"unknown route /{'/'.join(pieces)}")


def file_json(file: RepoFile) -> dict[str, Any]:
    """A tree entry, as /api/models/{repo}/tree answers it."""
    entry: dict[str, Any] = {"type": "file", "oid": file.blob_id, "size": file.size, "path": file.path}
    if file.sha256:
        entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": len(file.lfs_pointer())}
    return entry


def model_json(revision: Revision, *, siblings: bool, blobs: bool, card: bool = True) -> dict[str, Any]:
    """The model info document (GET /api/models/{repo}[/revision/{rev}])."""
    card_data = revision.card_data() if card else {}
    tags = card_data.get("tags") if isinstance(card_data.get("tags"), list) else []
    tags = [str(t) for t in tags]
    languages = card_data.get("language")
    tags += [str(lang) for lang in (languages if isinstance(languages, list) else [languages] if languages else [])]
    modified = _dt.datetime.fromtimestamp(revision.last_modified, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    info: dict[str, Any] = {
        "_id": revision.commit[:24],
        "id": revision.repo_id,
        "modelId": revision.repo_id,
        "author": revision.repo_id.split("/")[0],
        "sha": revision.commit,
        "lastModified": modified,
        "createdAt": modified,
        "private": False,
        "gated": "manual" if revision.gated is not None else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": tags,
        "library_name": card_data.get("library_name") or ("espnet" if "espnet" in tags else None),
        "pipeline_tag": card_data.get("pipeline_tag")
        or next((t for t in tags if t in ("automatic-speech-recognition", "text-to-speech")), None),
    }
    if card_data:
        info["cardData"] = json.loads(json.dumps(card_data, default=str))
    if siblings:
        info["siblings"] = [_sibling(f, blobs) for f in sorted(revision.files.values(), key=lambda f: f.path)]
        info["usedStorage"] = sum(f.size for f in revision.files.values())
    return info


def _sibling(file: RepoFile, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": file.path}
    sibling: dict[str, Any] = {"rfilename": file.path, "size": file.size, "blobId": file.blob_id}
    if file.sha256:
        sibling["lfs"] = {"sha256": file.sha256, "size": file.size, "pointerSize": len(file.lfs_pointer())}
    return sibling


