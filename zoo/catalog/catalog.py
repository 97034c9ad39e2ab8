"""The catalog of ESPnet models on the Hub: entries, validation, facets and ranked search.

The shipped `catalog.yaml` is built from data/espnet_hub_repos.tsv by scripts/build_catalog.py;
`espzoo catalog refresh` writes a user catalog under $ESPZOO_HOME that takes precedence.
Nothing here imports torch or espnet: `espzoo search` must stay fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from espzoo.catalog.entries import (
    CatalogEntry,
    _read_entries,
    entry_from_dict,
    shipped_catalog_path,
    tokens_label,
    user_catalog_path,
)
from espzoo.errors import CatalogError
from espzoo.tasks import ASR


@dataclass(frozen=True)
class Hit:
    entry: CatalogEntry
    score: float
    why: str


class Catalog:
    """All entries of one catalog file, with search and lookup."""

    def __init__(self, entries: Iterable[CatalogEntry], path: Path | None = None):
        self.entries = list(entries)
        self.path = path
        self._by_id = {e.repo_id.lower(): e for e in self.entries}

    @classmethod
    def load(cls, path: str | Path | None = None) -> Catalog:
        """The user catalog when present, else the shipped one; or the file given."""
        if path is None:
            user = user_catalog_path()
            path = user if user.is_file() else shipped_catalog_path()
        path = Path(path)
        if not path.is_file():
            raise CatalogError(f"catalog file {path} does not exist; reinstall espzoo or pass an existing file.")
        raw = _read_entries(path)
        entries = [entry_from_dict(item, f"{path.name}: entry {i + 1}") for i, item in enumerate(raw)]
        seen: set[str] = set()
        for entry in entries:
            if entry.repo_id.lower() in seen:
                raise CatalogError(f"{path.name}: entry {entry.repo_id} appears twice; keep one.")
            seen.add(entry.repo_id.lower())
        return cls(entries, path)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, repo_id: str) -> CatalogEntry | None:
        return self._by_id.get(repo_id.lower())

    def suggest(self, repo_id: str, n: int = 3) -> list[str]:
        """Ids close to `repo_id` (by whole id, then by name alone)."""
        import difflib

        ids = [e.repo_id for e in self.entries]
        lowered = {i.lower(): i for i in ids}
        close = difflib.get_close_matches(repo_id.lower(), list(lowered), n=n, cutoff=0.6)
        if len(close) < n:
            names = {i.split("/", 1)[-1].lower(): i.lower() for i in ids}
            name = repo_id.split("/", 1)[-1].lower()
            for match in difflib.get_close_matches(name, list(names), n=n, cutoff=0.6):
                if names[match] not in close:
                    close.append(names[match])
        return [lowered[c] for c in close[:n]]

    def facets(self) -> dict[str, dict[str, int]]:
        """How many entries per task, language, corpus, encoder and token type."""
        counts: dict[str, dict[str, int]] = {k: {} for k in ("task", "language", "corpus", "arch", "tokens")}

        def bump(facet: str, value: str | None) -> None:
            if value:
                counts[facet][value] = counts[facet].get(value, 0) + 1

        for e in self.entries:
            bump("task", e.task)
            for lang in e.languages:
                bump("language", lang)
            bump("corpus", e.corpus)
            bump("arch", e.architecture.get("encoder"))
            bump("tokens", e.tokens.get("type"))
        return {k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in counts.items()}

    def search(
        self,
        query: str = "",
        *,
        task: str | None = None,
        lang: str | None = None,
        corpus: str | None = None,
        arch: str | None = None,
        tokens: str | None = None,
        max_params: int | None = None,
        limit: int = 20,
    ) -> list[Hit]:
        """Entries passing every facet filter, ranked by how well they match `query`:
        the exact id first, then name matches, then metadata matches; close spellings count too.
        `lang` is resolved once (a code, a name or a typo; LanguageError otherwise) and matches every entry that
        lists the language, multilingual ones included; `max_params` drops the models known to be bigger."""
        wanted = language_match(lang) if lang else None
        words = _query_languages(query) if query.strip() else {}
        hits = []
        for entry in self.entries:
            if wanted is not None and not wanted(entry):
                continue
            if max_params is not None and entry.params is not None and entry.params > max_params:
                continue
            if not _passes(entry, task=task, corpus=corpus, arch=arch, tokens=tokens):
                continue
            if query.strip():
                score, why = _score(entry, query, words)
                if score <= 0:
                    continue
            else:
                score, why = 1.0, "filter"
            # Prefer ASR models with reported results among equals: they are what users fine-tune.
            bonus = (0.2 if entry.task == ASR.family else 0) + (0.1 if entry.results else 0)
            hits.append(Hit(entry, score + bonus, why))
        hits.sort(key=lambda h: (-h.score, h.entry.repo_id.lower()))
        return hits if limit <= 0 else hits[:limit]


def language_match(lang: str) -> Callable[[CatalogEntry], bool]:
    """A predicate: does an entry list the language `lang` means (under any of its codes)? 'mul' matches the
    multilingual entries. Raises LanguageError (one sentence, closest matches) for what is no language."""
    from espzoo.catalog.languages import table

    languages = table()
    language = languages.resolve(lang)
    if language.code == "mul":
        return lambda entry: "mul" in entry.languages or len(entry.languages) > 1
    codes = languages.match_codes(language)
    return lambda entry: not codes.isdisjoint(entry.languages)


def _query_languages(query: str) -> dict[str, frozenset[str]]:
    """For each word of a free-text query that names a language (code, name, or a typo of a name of 5+ letters):
    the codes entries list it under. Resolved once per query, not per entry."""
    from espzoo.catalog.languages import fold, table
    from espzoo.errors import LanguageError

    languages = table()
    found: dict[str, frozenset[str]] = {}
    for word in dict.fromkeys(_WORD.findall(fold(query))):  # 'español' -> 'espanol', a word the table knows
        lang = languages.lookup(word)
        if lang is None and len(word) >= 5:
            try:
                lang = languages.resolve(word)
            except LanguageError:
                lang = None
        if lang is not None:
            found[word] = languages.match_codes(lang)
    return found


def _passes(entry: CatalogEntry, **facets: str | None) -> bool:
    if facets["task"] and entry.task.lower() != facets["task"].lower():
        return False
    if facets["corpus"] and facets["corpus"].lower() not in (entry.corpus or "").lower():
        return False
    if facets["arch"]:
        wanted = facets["arch"].lower()
        tags = {str(v).lower() for v in entry.architecture.values() if isinstance(v, str)}
        tags |= {str(t).lower() for t in entry.architecture.get("tags", [])}
        if wanted not in tags:
            return False
    if facets["tokens"]:
        wanted = facets["tokens"].lower()
        label = (tokens_label(entry.tokens) or "").lower()
        if wanted not in (label, str(entry.tokens.get("type", "")).lower()):
            return False
    return True


_WORD = re.compile(r"[a-z0-9]+")


def _metadata_words(entry: CatalogEntry) -> set[str]:
    words: set[str] = {entry.task.lower(), *(code.lower() for code in entry.languages)}
    for text in (entry.corpus, entry.recipe, entry.train_config, entry.family, tokens_label(entry.tokens)):
        words.update(_WORD.findall((text or "").lower()))
    words.update(str(v).lower() for v in entry.architecture.values() if isinstance(v, str))
    words.update(str(t).lower() for t in entry.architecture.get("tags", []))
    return words


def _fold(text: str) -> str:
    from espzoo.catalog.languages import fold

    return fold(text)


def _score(entry: CatalogEntry, query: str, languages: Mapping[str, frozenset[str]]) -> tuple[float, str]:
    """Rank one entry against a query: exact id 1000, exact name 500, name substring 200+,
    each query word in the metadata 100 (a language by its code or name counts; 70 for a multilingual model),
    close spellings 60.
    `languages` holds the codes of the query words that name a language (see _query_languages)."""
    q = query.strip().lower()
    rid, name = entry.repo_id.lower(), entry.name.lower()
    if q == rid:
        return 1000.0, "exact id"
    if q == name:
        return 500.0, "exact name"
    score, why = 0.0, []
    if q in rid:
        score += 200 + 100 * len(q) / len(rid)
        why.append("name")
    meta = _metadata_words(entry)
    name_words = set(_WORD.findall(rid))
    for word in _WORD.findall(_fold(q)):
        if word in meta:
            score += 100
            why.append(word)
        elif not languages.get(word, frozenset()).isdisjoint(entry.languages):
            # A model for this language outranks one that covers it among many.
            score += 70 if entry.multilingual else 100
            why.append(word)
        elif word in name_words or (len(word) >= 3 and word in rid):
            score += 80
            why.append(word)
        elif len(word) >= 4:
            import difflib

            close = difflib.get_close_matches(word, meta | name_words, n=1, cutoff=0.8)
            if close:
                score += 60
                why.append(f"{word}~{close[0]}")
    return score, ", ".join(why)
