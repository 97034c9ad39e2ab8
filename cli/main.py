"""The `espzoo` app: registers each command group's module; nothing here imports torch or espnet.

    espzoo --help
    espzoo --version
"""

from __future__ import annotations

from typing import Annotated

import typer
from espzoo import __version__
from espzoo.cli import evaluate, export, finetune, hub, mirror, plan, recommend, search

app = typer.Typer(
    name="espzoo",
    help="Fine-tune ESPnet's pretrained speech models from the Hugging Face Hub on your own data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each command group registers itself; adding a group is one line here.
for module in (recommend, search, hub, plan, finetune, evaluate, export, mirror):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"espzoo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Fine-tune ESPnet's pretrained speech models from the Hugging Face Hub on your own data."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
