"""`espzoo catalog refresh`: list an author's models on the Hub and merge their card data into the user catalog.

    from espzoo.hub.refresh import refresh_catalog
    refresh_catalog("espnet", configs=True)   # -> RefreshResult(path, listed, added, updated, total)

Beside catalog.py (which stays free of huggingface_hub, for a fast `espzoo search`); the Hub is reached through
hub's session, the repo facts through espzoo.repo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import espzoo.repo as rules
from espzoo.errors import BundleError
from espzoo.hub.session import Session, _yaml
from espzoo.tasks import ASR
from espzoo.utils.fs import write_text


@dataclass(frozen=True)
class RefreshResult:
    path: Path
    listed: int
    added: int
    updated: int
    total: int

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


TASK_TAGS = {"automatic-speech-recognition": ASR.family, "text-to-speech": "tts", "audio-to-audio": "enh",
             "translation": "st", "audio-classification": "cls"}


def refresh_catalog(
    author: str = "espnet", *, endpoint: str | None = None, token: str | bool | None = None,
    path: str | Path | None = None, configs: bool = False,
) -> RefreshResult:
    """List `author`'s models on the Hub with their card data and merge them over the shipped catalog
    into the user catalog (atomic write). Hub facts win for license/task; card languages are added
    as ISO 639-3 without shrinking a list; recipes, results, sizes and language evidence stay (catalog.merge_entries).
    With `configs`, each model's meta.yaml and training config are read too (two small downloads per model, kept in
    the HF cache) for the architecture, tokens and sample rate."""
    import yaml

    from espzoo.catalog.catalog import Catalog
    from espzoo.catalog.entries import entry_from_dict, shipped_catalog_path, user_catalog_path
    from espzoo.catalog.rows import merge_entries

    session = Session(f"{author}/catalog", None, endpoint, token, retries=3, backoff=0.5)
    models = session.call(lambda: list(session.api.list_models(author=author, cardData=True)),
                          f"list the models of {author}", None)
    updates = [hub_entry(m, session.endpoint) for m in models]
    if configs:
        for model, update in zip(models, updates, strict=True):
            update.update({k: v for k, v in config_facts(session, model.id, model.sha).items() if k not in update})
    base_catalog = Catalog.load(shipped_catalog_path())
    base = [{k: v for k, v in e.to_dict().items() if v not in (None, [], {})} for e in base_catalog.entries]
    merged, added, updated = merge_entries(base, updates)
    for i, item in enumerate(merged):  # never write a catalog `espzoo search` would reject
        entry_from_dict(item, f"refreshed entry {i + 1}")
    target = Path(path) if path else user_catalog_path()
    header = (f"# The user catalog: the shipped entries merged with {author}'s models listed by {session.endpoint}.\n"
              "# Written by `espzoo catalog refresh`; delete it to go back to the shipped catalog.\n")
    write_text(target, header + yaml.safe_dump({"entries": merged}, sort_keys=False, allow_unicode=True))
    return RefreshResult(target, len(models), added, updated, len(merged))


def config_facts(session: Session, repo_id: str, commit: str | None) -> dict[str, Any]:
    """Architecture, tokens, sample rate and task from a model's meta.yaml and training config; {} when absent."""
    repo = Session(repo_id, session.cache_dir, session.endpoint, session.token, 1, 0.2, session.timeout)
    try:
        commit = commit or repo.resolve(None)
        meta = _yaml(repo.read(commit, "meta.yaml", offline=False))
    except Exception:  # noqa: BLE001 - no meta.yaml (or it cannot be read): the card's facts stand alone
        return {}
    try:
        named = rules.meta_files(meta)
    except BundleError:  # not an ESPnet meta.yaml: the card's facts stand alone
        return {}
    task, config_path = named.task, named.config
    if config_path is None:
        return {"task": task} if task else {}
    try:
        cfg = _yaml(repo.read(commit, config_path, offline=False))
    except Exception:  # noqa: BLE001 - as above
        cfg = None
    if not isinstance(cfg, dict):
        return {"task": task}
    arch = {k: str(cfg[k]) for k in ("encoder", "decoder") if isinstance(cfg.get(k), str)}
    frontend = cfg.get("frontend")
    if isinstance(frontend, str) and frontend != "default":
        upstream = ((cfg.get("frontend_conf") or {}).get("frontend_conf") or {}).get("upstream")
        arch["frontend"] = str(upstream or frontend)
    tokens: dict[str, Any] = {}
    if isinstance(cfg.get("token_type"), str):
        tokens["type"] = cfg["token_type"]
    if isinstance(cfg.get("token_list"), list):
        tokens["size"] = len(cfg["token_list"])
    facts = {"task": task, "architecture": arch, "tokens": tokens,
             "sample_rate": rules.config_sample_rate(cfg, default=None)}
    return {k: v for k, v in facts.items() if v not in (None, {}, [])}


def hub_entry(model: Any, endpoint: str) -> dict[str, Any]:
    """A catalog mapping from a list_models ModelInfo (card data and tags; empty facts left out)."""
    card = model.card_data.to_dict() if getattr(model, "card_data", None) is not None else {}
    tags = [str(t) for t in (model.tags or [])] + [str(t) for t in card.get("tags") or []]
    task = next((TASK_TAGS[t] for t in [model.pipeline_tag or "", *tags] if t in TASK_TAGS), None)
    languages = card.get("language") or []
    languages = [languages] if isinstance(languages, str) else [str(x) for x in languages]
    datasets = card.get("datasets") or []
    datasets = [datasets] if isinstance(datasets, str) else datasets
    entry = {
        "repo_id": model.id,
        "task": task,
        "languages": languages,
        "corpus": str(datasets[0]) if datasets else None,
        "license": str(card["license"]) if card.get("license") else None,
        "source": f"{endpoint}/{model.id}" + (f" @ {model.sha}" if getattr(model, "sha", None) else ""),
        "status": "hub",
    }
    return {k: v for k, v in entry.items() if v not in (None, [], {})}
