"""One output helper for every command: a rich table for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import typer


def print_json(data: Any) -> None:
    """Write `data` as JSON to stdout (no colour, no wrapping: it is for programs)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def print_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    optional: Sequence[str] = (),
) -> None:
    """Render rows as a rich table; `columns` are keys of each row, `headers` optional labels.

    The first column names the row (a repo id, a tensor) and is never cut. In a terminal too narrow for the
    whole table, the `optional` columns are dropped, in the order given, before anything is squeezed."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = list(rows)
    shown = list(columns)

    def build() -> Table:
        table = Table(title=title, show_lines=False)
        for i, col in enumerate(shown):
            table.add_column((headers or {}).get(col, col), no_wrap=i == 0)
        for i in range(len(rows)):
            table.add_row(*(cells[col][i] for col in shown))
        return table

    cells = {col: [_cell(row.get(col)) for row in rows] for col in columns}

    def natural_width() -> int:  # one line per cell, 3 characters of padding and border per column
        return 1 + sum(3 + max([len((headers or {}).get(c, c)), *map(len, cells[c])]) for c in shown)

    for col in optional:
        if natural_width() <= console.width:
            break
        if col in shown:
            shown.remove(col)
    console.print(build())


def print_lines(lines: Iterable[str]) -> None:
    """Lines of text for people, with rich markup ([bold]; escape other text with `markup_escape`). Lines are not
    broken by us (soft wrap): a printed command stays one line to copy."""
    from rich.console import Console

    console = Console()
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def markup_escape(text: str) -> str:
    """`text` shown as is by print_lines (a '[xx_yy]' is not taken for a style)."""
    from rich.markup import escape

    return escape(text)


def print_fields(fields: Mapping[str, Any], *, title: str | None = None) -> None:
    """Render one record as a two-column key/value table."""
    print_table(({"field": k, "value": v} for k, v in fields.items()), ["field", "value"], title=title)


def info(message: str) -> None:
    """A note for people, on stderr so that `--json` output stays parseable."""
    from rich.console import Console

    Console(stderr=True).print(message)


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear sentence on stderr and a non-zero exit."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items() if v not in (None, "", [], {}))
    return str(value)
