"""Which model to start from for your language.

    espzoo recommend --lang es                       # Spanish: models trained on it, then multilingual ones
    espzoo recommend --lang top --max-params 400M    # Totonac, on a small GPU: what can learn it
    espzoo recommend --lang bengali --json

Nothing here imports torch or espnet: the answer comes from the catalog in a fraction of a second.
"""

from __future__ import annotations

from typing import Annotated

import typer

from espzoo.catalog.catalog import Catalog
from espzoo.catalog.entries import parse_size
from espzoo.cli._options import JsonOpt, MaxParamsOpt
from espzoo.cli._output import markup_escape, print_json, print_lines
from espzoo.tasks import ASR

LangArg = Annotated[
    str, typer.Option("--lang", "-l", help="Your language: ISO 639-3 (spa), 639-1 (es) or a name (Spanish).")
]
TaskOpt = Annotated[
    str, typer.Option("--task", "-t", help="What the model must do: asr (ASR and S2T models), st, tts, ...")
]
PerTierOpt = Annotated[int, typer.Option("--limit", "-n", help="At most N models per tier.")]


def recommend(
    lang: LangArg = ...,  # type: ignore[assignment]
    task: TaskOpt = ASR.family,
    max_params: MaxParamsOpt = None,
    limit: PerTierOpt = 5,
    json: JsonOpt = False,
) -> None:
    """The model to start from for a language, ranked, with the command to run. Example: espzoo recommend --lang es"""
    from espzoo.catalog.recommendation import TIERS, RecommendOptions
    from espzoo.catalog.recommendation import recommend as advise

    options = RecommendOptions(lang, task, parse_size(max_params) if max_params else None, limit)
    advice = advise(Catalog.load(), options)
    if json:
        print_json(advice.to_json())
        return
    lang = advice.language
    lines = [f"[bold]Where to start for {markup_escape(str(lang))}[/bold]: {markup_escape(advice.note)}"]
    tier = 0
    for rank, item in enumerate(advice.items, 1):
        if item.tier != tier:
            tier = item.tier
            heading = TIERS[tier].format(lang=lang.name)
            lines.append(f"\n[bold]{markup_escape(heading[0].upper() + heading[1:])}[/bold]")
        lines.append(f"{rank:2}. [cyan]{item.entry.repo_id}[/cyan]: {markup_escape(item.reason)}")
        lines.append(f"    {markup_escape(item.command)}")
    print_lines(lines)


def register(app: typer.Typer) -> None:
    app.command()(recommend)
