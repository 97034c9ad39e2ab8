"""Building entries from the catalog's sources (scripts/build_catalog.py, espzoo.hub.refresh): table
cells parsed, S2T facts overlaid, entries merged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from espzoo.catalog.languages import Languages
from espzoo.catalog.entries import DECODERS, ENCODERS, FRONTENDS, parse_size
from espzoo.errors import CatalogError
from espzoo.repo import parse_sample_rate
from espzoo.tasks import ASR, S2T


def _split(cell: str) -> list[str]:
    return [p.strip() for p in re.split(r"[;,]", cell or "") if p.strip()]


def parse_languages(cell: str) -> list[str]:
    """'en;zh' -> [en, zh]; 'en-bn' (a language pair) -> [en, bn]; 'zh-TW' stays; 'multilingual' -> [mul]."""
    codes: list[str] = []
    for part in _split(cell):
        if part == "multilingual":
            codes.append("mul")
        elif re.fullmatch(r"[a-z]{2,3}-[a-z]{2,3}", part):
            codes.extend(part.split("-"))
        else:
            codes.append(part)
    return list(dict.fromkeys(codes))


def parse_tokens(cell: str) -> dict[str, Any]:
    m = re.fullmatch(r"(bpe|unigram|char|phn|word)(\d+)?", (cell or "").strip())
    if m:
        return {"type": m.group(1), "size": int(m.group(2))} if m.group(2) else {"type": m.group(1)}
    return {"type": cell.strip()} if cell and cell.strip() else {}


def parse_architecture(cell: str) -> dict[str, Any]:
    tags = _split(cell)
    arch: dict[str, Any] = {}
    for tag in tags:
        if tag in ENCODERS and "encoder" not in arch:
            arch["encoder"] = tag
        elif tag in FRONTENDS and "frontend" not in arch:
            arch["frontend"] = tag
        elif tag in DECODERS and "decoder" not in arch:
            arch["decoder"] = DECODERS[tag]
    if tags:
        arch["tags"] = tags
    return arch


def parse_results(wer: str, cer: str) -> list[dict[str, Any]]:
    results = []
    for metric, cell in (("wer", wer), ("cer", cer)):
        for part in _split(cell):
            test_set, _, value = part.partition("=")
            try:
                results.append({"test_set": test_set.strip(), "metric": metric, "value": float(value)})
            except ValueError:
                continue
    return results


def iso_languages(codes: Iterable[str], *, strict: bool = True, languages: Languages | None = None) -> list[str]:
    """Codes as ISO 639-3 ('bn' -> 'ben', 'zh-TW' -> 'zho'); 'multilingual' and 'mul' stay 'mul'. An unknown code
    raises CatalogError when `strict` (the shipped table must be clean), else is dropped (a Hub card's free text)."""
    from espzoo.catalog.languages import table

    languages = languages or table()
    out: list[str] = []
    for code in codes:
        if code.strip().lower() in ("mul", "multilingual"):
            out.append("mul")
            continue
        lang = languages.lookup(code)
        if lang is not None:
            out.append(lang.code)
        elif strict:
            raise CatalogError(f"language {code!r} is not an ISO 639 code; fix the table or add an override.")
    codes = list(dict.fromkeys(out))
    return [c for c in codes if c != "mul"] or codes  # 'mul' only while no language is known


def infer_languages(words: Iterable[str], names: Mapping[str, str]) -> list[str]:
    """Languages named by the words of a repo name or corpus ('ftshijt_espnet2_asr_totonac_transformer' ->
    [top]) through `names` (data/language_aliases.tsv rows marked infer=yes): for rows whose table cell is empty."""
    found: list[str] = []
    for word in words:
        for part in [word.lower(), *re.split(r"[^a-z0-9]+", word.lower())]:
            if part in names and names[part] not in found:
                found.append(names[part])
    return found


def entry_from_row(
    row: Mapping[str, str], infer: Mapping[str, str] | None = None, languages: Languages | None = None
) -> dict[str, Any]:
    """One row of data/espnet_hub_repos.tsv as a catalog mapping (empty cells left out; languages as ISO 639-3).
    A row without a language gets the one its name or corpus says through `infer` (lang_evidence name_inferred)."""
    codes = iso_languages(parse_languages(row["language"]), languages=languages)
    evidence = row.get("lang_evidence") or None
    if not codes and infer:
        codes = infer_languages([row["repo_id"].split("/", 1)[-1], row.get("corpus") or ""], infer)
        evidence = "name_inferred" if codes else evidence
    entry: dict[str, Any] = {
        "repo_id": row["repo_id"],
        "task": row["task"] or "unknown",
        "languages": codes,
        "corpus": row["corpus"] or None,
        "recipe": row["recipe"] or None,
        "architecture": parse_architecture(row["arch"]),
        "tokens": parse_tokens(row["token_type"]),
        "sample_rate": parse_sample_rate(row["sample_rate"]),
        "results": parse_results(row["wer"], row["cer"]),
        "license": row.get("license") or None,
        "source": row["sources"] or None,
        "status": row["status"] or None,
        "confidence": row["confidence"] or None,
        "train_config": row["train_config"] or None,
        "notes": row["notes"] or None,
        "lang_evidence": evidence,
    }
    return {k: v for k, v in entry.items() if v not in (None, [], {})}


def parse_count(cell: str) -> int | None:
    """'889M' -> 889000000, '180k' -> 180000, '' -> None (the size columns of data/s2t_models.tsv)."""
    try:
        return parse_size(cell, "count") if cell and cell.strip() else None
    except CatalogError:
        return None


def language_token_kind(cell: str) -> str | None:
    """How a model's prompt names the language, from data/s2t_models.tsv's language_token_format."""
    if "ISO 639-3" in cell:
        return "iso639-3"
    if "Whisper" in cell:
        return "whisper"
    if "FLEURS" in cell:
        return "fleurs"
    return None


def s2t_facts(row: Mapping[str, str], languages: Languages | None = None) -> dict[str, Any]:
    """One row of data/s2t_models.tsv (multilingual models: OWSM, OWSM-CTC, POWSM, FLEURS, OWLS, ML-SUPERB) as the
    catalog fields it knows: every language (ISO 639-3; OWSM's mislabelled tokens read as the language they hold),
    size, vocabulary, family, training hours and the language-token form."""
    from espzoo.catalog.languages import TOKEN_HOLDS

    kind = language_token_kind(row.get("language_token_format", ""))
    codes = row["languages"].split()
    if kind == "iso639-3":  # <mas> holds Malay, <lga> Luganda, ...: list the language, not the token's ISO name
        codes = [TOKEN_HOLDS.get(c, c) for c in codes]
    arch = {k: v for k, v in (("encoder", row["encoder"]), ("decoder", row["decoder"]), ("layers", row["layers"]))
            if v}
    if row.get("d_model", "").isdigit():
        arch["d_model"] = int(row["d_model"])
    tokens: dict[str, Any] = {"type": row["token_type"]} if row.get("token_type") else {}
    if row.get("vocab_size", "").isdigit():
        tokens["size"] = int(row["vocab_size"])
    facts = {
        "languages": iso_languages(codes, languages=languages),
        "lang_evidence": row.get("lang_evidence") or None,
        "params": parse_count(row.get("params", "")),
        "family": row.get("family") or None,
        "train_hours": parse_count(row.get("train_hours", "")),
        "language_token": kind,
        "architecture": arch,
        "tokens": tokens,
        "sample_rate": parse_sample_rate(row.get("sample_rate", "")),
        "source": row.get("sources") or None,
        "notes": row.get("notes") or None,
    }
    return {k: v for k, v in facts.items() if v not in (None, [], {})}


def overlay_s2t(entry: Mapping[str, Any] | None, repo_id: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """A catalog mapping with the multilingual table's facts laid over the hub table's entry (or a new entry):
    its language list, size, family, hours and token form win; architecture and tokens are completed; the evidence
    of both is kept."""
    family = str(facts.get("family", ""))
    out: dict[str, Any] = dict(entry or {"repo_id": repo_id, "task": ASR.family if family in ("fleurs_asr", "ml_superb")
                                         else S2T.family, "status": "s2t_table"})
    for key in ("languages", "lang_evidence", "params", "family", "train_hours", "language_token"):
        if facts.get(key) is not None:
            out[key] = facts[key]
    for key in ("architecture", "tokens"):
        out[key] = {**facts.get(key, {}), **out.get(key, {})}
        if not out[key]:
            del out[key]
    if facts.get("sample_rate") and not out.get("sample_rate"):
        out["sample_rate"] = facts["sample_rate"]
    for key in ("source", "notes"):
        if facts.get(key):
            out[key] = f"{out[key]} | {facts[key]}" if out.get(key) else facts[key]
    return out


def merge_entries(
    base: list[dict[str, Any]], updates: Iterable[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], int, int]:
    """Overlay entries listed by the Hub (`espzoo catalog refresh`) on catalog entries.

    For a known repo the Hub's license and source replace ours; its languages (as ISO 639-3) are added to ours, never
    replace them (a card saying `multilingual` or one language must not shrink OWSM's 150); its task, corpus,
    architecture, tokens and sample rate fill gaps only; what only the shipped tables know (recipes, results, params,
    family, training hours, language evidence and token form) stays. An unknown repo is appended.
    Returns (merged entries, how many added, how many changed)."""
    merged = [dict(entry) for entry in base]
    by_id = {entry["repo_id"].lower(): entry for entry in merged}
    added = updated = 0
    for raw in updates:
        update = dict(raw)
        if update.get("languages"):
            update["languages"] = iso_languages([str(c) for c in update["languages"]], strict=False)
        current = by_id.get(str(update["repo_id"]).lower())
        if current is None:
            entry = {"task": "unknown", **{k: v for k, v in update.items() if v not in (None, [], {})}}
            merged.append(entry)
            by_id[entry["repo_id"].lower()] = entry
            added += 1
            continue
        before = dict(current)
        if update.get("languages"):
            current["languages"] = iso_languages([*current.get("languages", []), *update["languages"]], strict=False)
            if not before.get("languages") or before["languages"] == ["mul"]:
                current["lang_evidence"] = "hf_card"
        for key in ("license", "source", "status"):
            if update.get(key):
                current[key] = update[key]
        for key in ("corpus", "architecture", "tokens", "sample_rate"):
            if update.get(key) and not current.get(key):
                current[key] = update[key]
        if update.get("task") and current.get("task") in (None, "", "unknown"):
            current["task"] = update["task"]
        updated += current != before
    return merged, added, updated
