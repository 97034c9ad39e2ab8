"""Get models from the Hub (or a mirror) by revision, and manage the local cache.

    espzoo pull espnet/bn_openslr53                  # what a fine-tune needs, at main; prints commit and path
    espzoo pull espnet/bn_openslr53@v1.0 --all       # a tag, every file
    espzoo pull espnet/bn_openslr53 --lock espzoo.lock   # pin: the first pull records the commit, later ones use it
    espzoo pull espnet/bn_openslr53 --json           # {"repo_id", "commit", "path", "files"}
    espzoo verify espnet/bn_openslr53 --fix          # re-hash cached files, re-download corrupted ones
    espzoo ls                                        # cached ESPnet models: repo, commit, size, last used
    espzoo rm espnet/bn_openslr53@<commit>
    espzoo catalog refresh --author espnet           # rebuild the user catalog from the Hub's model cards
    espzoo catalog refresh --configs                 # ... and read each model's config (architecture, tokens)

HF_ENDPOINT (a mirror: `espzoo mirror serve`), HF_HOME, HF_TOKEN and HF_HUB_OFFLINE=1 are honoured.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from espzoo.cli._options import JsonOpt, RepoArg
from espzoo.cli._output import fail, info, print_json, print_table

AllOpt = Annotated[bool, typer.Option("--all", help="Every file of the repo, not only what a fine-tune needs.")]
LockOpt = Annotated[
    Path | None, typer.Option("--lock", help="Lock file (espzoo.lock): use the commit it pins, record the one pulled.")
]
FixOpt = Annotated[bool, typer.Option("--fix", help="Download corrupted or missing files again.")]


NoLmOpt = Annotated[bool, typer.Option("--no-lm", help="Leave out the language model meta.yaml names.")]


def pull(repo: RepoArg, all: AllOpt = False, lock: LockOpt = None, no_lm: NoLmOpt = False,
         json: JsonOpt = False) -> None:
    """Download a model by revision into the HF cache. Example: espzoo pull espnet/bn_openslr53@main"""
    from espzoo.hub.download import pull as hub_pull
    from espzoo.hub.session import select_files_without_lm

    with download_bars(enabled=False if json else None) as progress:
        snap = hub_pull(repo, all_files=all, lock_file=lock, progress=progress,
                        notify=lambda note: info(f"note: {note}"), select=select_files_without_lm if no_lm else None)
    if json:
        print_json(snap.to_json())
        return
    # Plain lines, not a table: the path must survive a narrow terminal whole, to be copied.
    where = " (offline, from the cache)" if snap.offline else ""
    typer.echo(f"repo:   {snap.repo_id}{where}\ncommit: {snap.commit}\npath:   {snap.path}\nfiles:  {len(snap.files)}")
    if lock:
        info(f"recorded {snap.repo_id} -> {snap.commit} in {lock}")


def verify(repo: RepoArg, fix: FixOpt = False, json: JsonOpt = False) -> None:
    """Re-hash a cached model's files against the Hub's ids. Example: espzoo verify espnet/bn_openslr53 --fix"""
    from espzoo.hub.cache import verify as hub_verify

    report = hub_verify(repo, fix=fix)
    if json:
        print_json(report.to_json())
    else:
        rows = [{"file": c.path, "state": "ok" if c.actual == c.expected else ("fixed" if c.fixed else
                 ("missing" if c.actual is None else "CORRUPTED")), "expected": c.expected[:16]}
                for c in report.checks]
        print_table(rows, ["file", "state", "expected"], title=f"{report.repo_id}@{report.commit[:12]}",
                    optional=["expected"])
    if not report.ok:
        hint = "" if fix else "; run `espzoo verify " + repo + " --fix` to download them again"
        fail(f"{len(report.bad)} of {len(report.checks)} cached files do not match the Hub's hashes{hint}.")


def ls(json: JsonOpt = False) -> None:
    """List the ESPnet models in the HF cache. Example: espzoo ls --json"""
    from espzoo.hub.cache import list_cached

    rows = list_cached()
    if json:
        print_json([r.to_json() for r in rows])
        return
    if not rows:
        info("no ESPnet model is cached yet; `espzoo pull REPO` fetches one.")
        return
    print_table(
        [{"repo": r.repo_id, "commit": r.commit[:12], "refs": r.refs, "size": f"{r.size / 1e6:.1f} MB",
          "files": r.files, "last used": dt.datetime.fromtimestamp(r.last_used).strftime("%Y-%m-%d %H:%M")}
         for r in rows],
        ["repo", "commit", "refs", "size", "files", "last used"],
    )


def rm(repo: RepoArg, json: JsonOpt = False) -> None:
    """Delete a cached model (one revision with @REV). Example: espzoo rm espnet/bn_openslr53@main"""
    from espzoo.hub.cache import remove

    commits, freed = remove(repo)
    if json:
        print_json({"repo": repo, "commits": commits, "freed_bytes": freed})
    else:
        info(f"removed {len(commits)} revision(s) of {repo}, freed {freed / 1e6:.1f} MB")


catalog_app = typer.Typer(help="Maintain the model catalog.", no_args_is_help=True)


@catalog_app.command()
def refresh(
    author: Annotated[str, typer.Option("--author", help="Whose models to list on the Hub.")] = "espnet",
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Hub or mirror URL (default HF_ENDPOINT).")] = None,
    configs: Annotated[
        bool, typer.Option("--configs", help="Also read each model's meta.yaml and config (architecture, tokens).")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Rebuild the user catalog from the Hub's model cards. Example: espzoo catalog refresh --author espnet"""
    from espzoo.hub.refresh import refresh_catalog

    result = refresh_catalog(author, endpoint=endpoint, configs=configs)
    if json:
        print_json(result.to_json())
    else:
        info(f"listed {result.listed} models of {author}: {result.added} new, {result.updated} updated; "
             f"{result.total} entries written to {result.path}")


@contextlib.contextmanager
def download_bars(*, enabled: bool | None = None) -> Iterator[Callable[[int, str, float, float | None], None] | None]:
    """A progress callback for hub.pull that draws with rich on stderr: one row for the files, one for the bytes.
    `enabled` None: only on a terminal, and not when HF_HUB_DISABLE_PROGRESS_BARS is set; False: None (nothing)."""
    if enabled is None:
        disabled = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() in ("1", "TRUE", "YES", "ON")
        enabled = sys.stderr.isatty() and not disabled
    if not enabled:
        yield None
        return
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
    tasks: dict[int, Any] = {}

    def update(bar: int, unit: str, done: float, total: float | None) -> None:
        if bar not in tasks:
            tasks[bar] = bars.add_task("downloading" if unit == "B" else "files", total=total, unit=unit)
        bars.update(tasks[bar], completed=done, total=total)

    with bars:
        try:
            yield update
        except BaseException:  # failing: cli/main's error line alone, no last frame of the bars
            bars.console.quiet = True
            raise


def register(app: typer.Typer) -> None:
    for command in (pull, verify, ls, rm):
        app.command()(command)
    app.add_typer(catalog_app, name="catalog")
