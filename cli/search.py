"""Find models in the catalog.

    espzoo search bengali                       # by language name, code (bn) or a typo (bengli)
    espzoo search librispeech --task asr --arch conformer
    espzoo search --lang ja --tokens char --json
    espzoo search --lang spa --max-params 400M      # Spanish models (multilingual ones too) that fit a small GPU
    espzoo info espnet/bn_openslr53             # everything known about one entry

Nothing here imports torch or espnet: these commands answer in a fraction of a second.
"""

from __future__ import annotations

from typing import Annotated

import typer

from espzoo.catalog.catalog import Catalog
from espzoo.catalog.entries import CatalogEntry, languages_label, parse_size, size_label
from espzoo.cli._options import JsonOpt, LimitOpt, MaxParamsOpt
from espzoo.cli._output import fail, print_fields, print_json, print_table

TaskOpt = Annotated[str | None, typer.Option("--task", "-t", help="Only this task: asr, s2t, tts, ...")]
LangOpt = Annotated[
    str | None,
    typer.Option("--lang", "-l", help="Only models for this language (multilingual ones too): ben, bn, bengali."),
]
CorpusOpt = Annotated[str | None, typer.Option("--corpus", help="Only models trained on this corpus.")]
ArchOpt = Annotated[str | None, typer.Option("--arch", help="Only this architecture (conformer, wavlm, ...).")]
TokensOpt = Annotated[str | None, typer.Option("--tokens", help="Only this token type or size (char, bpe5000).")]


def search(
    query: Annotated[str, typer.Argument(help="Words to look for: a repo id, language, corpus, ...")] = "",
    task: TaskOpt = None,
    lang: LangOpt = None,
    corpus: CorpusOpt = None,
    arch: ArchOpt = None,
    tokens: TokensOpt = None,
    max_params: MaxParamsOpt = None,
    limit: LimitOpt = 20,
    json: JsonOpt = False,
) -> None:
    """Search the catalog of ESPnet hub models. Example: espzoo search bengali --task asr"""
    catalog = _load()
    size = parse_size(max_params) if max_params else None
    hits = catalog.search(query, task=task, lang=lang, corpus=corpus, arch=arch, tokens=tokens,
                          max_params=size, limit=limit)
    rows = [hit.entry.summary() for hit in hits]
    if json:
        print_json(rows)
        return
    if not rows:
        if lang:
            from espzoo.catalog.languages import resolve

            fail(f"no catalog entry for {resolve(lang)} matches {query!r} with these filters; "
                 f"`espzoo recommend --lang {resolve(lang).code}` lists the models that can learn it.")
        fail(f"no catalog entry matches {query!r} with these filters; try fewer filters or `espzoo search`.")
    for row in rows:  # people read a count for a multilingual model and sizes as 367M
        row["languages"] = languages_label(row["languages"])
        row["params"] = size_label(row["params"])
    title = f"{len(rows)} of {len(catalog)} models"
    print_table(rows, ["repo_id", "task", "languages", "params", "corpus", "architecture", "tokens", "wer", "cer"],
                title=title, optional=["architecture", "tokens", "corpus", "wer", "params"])


def info(
    repo_id: Annotated[str, typer.Argument(help="A repo id from `espzoo search`.")],
    json: JsonOpt = False,
) -> None:
    """Show what the catalog (and, once pulled, the model itself) says. Example: espzoo info espnet/bn_openslr53"""
    catalog = _load()
    name, _, revision = repo_id.partition("@")
    entry = catalog.get(name)
    pulled = _pulled_bundle(name, revision or None)
    if entry is None and pulled is None:
        close = catalog.suggest(name)
        hint = f" Did you mean {', '.join(close)}?" if close else " Try `espzoo search`."
        fail(f"{repo_id} is neither in the catalog nor pulled.{hint}")
    if json:
        print_json({**(entry.to_dict() if entry else {"repo_id": name}), "pulled": pulled})
        return
    if entry is not None:
        print_fields(_display(entry), title=entry.repo_id)
    if pulled is not None:
        print_fields({k: v for k, v in pulled.items() if v is not None}, title=f"{name} as pulled")


def _load() -> Catalog:
    return Catalog.load()


def _pulled_bundle(repo_id: str, revision: str | None) -> dict[str, object] | None:
    """The bundle view of the newest cached revision (or the one asked for); None when not pulled.
    Reads the HF cache only: no request, no torch."""
    from espzoo.errors import BundleError
    from espzoo.hub.cache import list_cached
    from espzoo.hub.hf import hub_cache_dir, repo_folder
    from espzoo.models.bundle import open_bundle
    from espzoo.tasks import task_of

    # One listdir answers "not pulled" (the common case); scanning the whole cache is only for repos it holds.
    folder = repo_folder(repo_id).lower()
    cache = hub_cache_dir()
    if not cache.is_dir() or not any(p.name.lower() == folder for p in cache.iterdir()):
        return None
    for cached in list_cached():
        if cached.repo_id.lower() != repo_id.lower():
            continue
        if revision and not (cached.commit.startswith(revision) or revision in cached.refs):
            continue
        try:
            bundle = open_bundle(cached.path)
        except BundleError as err:
            return {"commit": cached.commit, "path": str(cached.path), "error": str(err)}
        facts = {"commit": cached.commit, "refs": cached.refs, "path": str(cached.path),
                 "checkpoint": str(bundle.checkpoint.relative_to(bundle.root)), **bundle.architecture()}
        from espzoo.models.lm import lm_summary

        facts["language_model"] = lm_summary(cached.path)
        if task_of(bundle.config).prompted:  # OWSM: languages and tasks from the token list (torch-free)
            from espzoo.models.s2t import describe

            facts.update(espnet_task=task_of(bundle.config).name, **describe(bundle.token_list))
        return facts
    return None


def _display(entry: CatalogEntry) -> dict[str, object]:
    fields = entry.to_dict()
    fields["results"] = [f"{r['test_set']} {r['metric'].upper()} {r['value']}" for r in fields["results"]]
    if entry.multilingual:
        fields["languages"] = f"{len(entry.languages)}: {' '.join(entry.languages)}"
    if entry.params:
        fields["params"] = f"{size_label(entry.params)} ({entry.params:,})"
    if entry.vocab_size:
        fields["vocab_size"] = entry.vocab_size
    return {k: v for k, v in fields.items() if v not in (None, [], {})}


def register(app: typer.Typer) -> None:
    app.command()(search)
    app.command()(info)
