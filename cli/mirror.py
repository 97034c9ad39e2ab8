"""Serve models to machines without internet: an HF-compatible endpoint over a folder or the HF cache.

    espzoo mirror serve --root /data/mirror --port 8080     # /data/mirror/<org>/<name>/ holds each repo
    espzoo mirror serve --from-cache --host 0.0.0.0          # every revision this machine has pulled
    HF_ENDPOINT=http://mirror-host:8080 espzoo pull espnet/bn_openslr53
    espzoo mirror add espnet/bn_openslr53@main --root /data/mirror   # copy a cached repo into a mirror folder

Nothing outside --root is served, large files go through signed links that expire, and idle connections time
out. With `--token T` (or HF_TOKEN) a --root mirror also takes uploads sent with that token (`espzoo push`,
`hf upload`): each commit becomes the branch's new revision; without a token every upload is refused.
`--log FILE` appends one JSON line per request. (Fault injection is a test hook of the Python API only.)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from espzoo.cli._options import JsonOpt, RepoArg
from espzoo.cli._output import fail, info, print_fields, print_json

app = typer.Typer(help="Serve hub repos over HTTP to machines without internet (HF_ENDPOINT).", no_args_is_help=True)

RootOpt = Annotated[Path | None, typer.Option("--root", help="Folder holding <org>/<name>/ repo folders.")]


@app.command()
def serve(
    root: RootOpt = None,
    from_cache: Annotated[bool, typer.Option("--from-cache", help="Serve every revision in the HF cache.")] = False,
    host: Annotated[str, typer.Option("--host", help="Address to bind (0.0.0.0 serves the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port for the API (0 = any free port).")] = 8080,
    lfs_port: Annotated[int, typer.Option("--lfs-port", help="Port for large (LFS) files (0 = any free port).")] = 0,
    lfs_threshold: Annotated[int, typer.Option("--lfs-threshold", help="Files above this many bytes are LFS.")] = (
        10 * 1024 * 1024
    ),
    log: Annotated[Path | None, typer.Option("--log", help="Append one JSON line per request to this file.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every request.")] = False,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="HF_TOKEN", show_default=False,
        help="Accept uploads (espzoo push, hf upload) that send this token; without one, uploads are refused.",
    )] = None,
) -> None:
    """Serve repos to huggingface_hub clients. Example: espzoo mirror serve --root /data/mirror --port 8080"""
    from espzoo.serve.server import MirrorServer

    if (root is None) == (not from_cache):
        fail("pass either --root DIR (a folder of <org>/<name>/ repos) or --from-cache, not both or neither.")
    try:
        server = MirrorServer(
            root, from_cache=from_cache, host=host, port=port, lfs_port=lfs_port, lfs_threshold=lfs_threshold,
            log_file=log, verbose=verbose, token=token if root is not None else None,
        )
    except FileNotFoundError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or stop what holds it.")
    repos = server.repo_ids()
    where = "the HF cache" if from_cache else str(root)
    # The first stdout line is the URL, flushed at once: scripts (and tests) read it to find a --port 0 server.
    sys.stdout.write(f"{server.url}\n")
    sys.stdout.flush()
    endpoint = server.url
    if host in ("0.0.0.0", "::"):  # bound to every interface: clients use this machine's name
        import socket

        endpoint = f"http://{socket.gethostname()}:{server.url.rsplit(':', 1)[1]}"
    info(f"serving {len(repos)} repos from {where} (large files on port {server.lfs_url.rsplit(':', 1)[1]}). "
         f"Use it with HF_ENDPOINT={endpoint}  (Ctrl-C stops)")
    if root is not None:
        info("uploads: accepted with the token given" if token else "uploads: refused (no --token / HF_TOKEN given)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@app.command()
def add(
    repo: RepoArg,
    root: Annotated[Path, typer.Option("--root", help="The mirror folder to copy the repo into.")],
    repo_type: Annotated[str, typer.Option("--repo-type", help="model, or dataset (into ROOT/datasets/).")] = "model",
    json: JsonOpt = False,
) -> None:
    """Copy a cached repo into a mirror folder. Example: espzoo mirror add espnet/bn_openslr53@main --root mirror/"""
    from espzoo.serve.add import add_from_cache

    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1:
        fail(f"{repo_id!r} is not a repo id; write it as ORG/NAME[@REVISION].")
    if repo_type not in ("model", "dataset"):
        fail(f"--repo-type {repo_type!r} is not one of: model, dataset.")
    try:
        added = add_from_cache(repo_id, revision or None, root, repo_type=repo_type)
    except FileNotFoundError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot copy {repo_id} into {root} ({exc.strerror}); check the folder is writable and has space.")
    if json:
        print_json(added.to_json())
    else:
        print_fields({"repo": added.repo_id, "cached commit": added.source_commit, "path": str(added.path),
                      "files": len(added.files), "bytes": added.size})


def register(root_app: typer.Typer) -> None:
    root_app.add_typer(app, name="mirror")
