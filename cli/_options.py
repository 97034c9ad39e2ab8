"""Options shared by several commands, declared once (as huggingface_hub's CLI does) and reused."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
RepoArg = Annotated[str, typer.Argument(help="A hub repo id, optionally pinned: ORG/NAME[@REVISION].")]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", help="Show at most N results (0 = all).")]
