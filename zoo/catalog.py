"""The catalog of ESPnet models on the Hub: entries, validation, facets and ranked search.

The shipped `catalog.yaml` is built from data/espnet_hub_repos.tsv by scripts/build_catalog.py;
`espzoo catalog refresh` writes a user catalog under $ESPZOO_HOME that takes precedence.
Nothing here imports torch or espnet: `espzoo search` must stay fast.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from espzoo.languages import Languages

from espzoo.errors import CatalogError  # noqa: F401 (re-exported)
from espzoo.home import espzoo_home
from espzoo.repo import parse_sample_rate  # noqa: F401 (the one reader of rates: 44k is 44100 everywhere)

CATALOG_FILE = "catalog.yaml"
# A model listing more languages than this covers them among many ("multilingual"); up to this many (one language,
# a code-switching pair) it was trained on each.
FEW_LANGUAGES = 3

# How an architecture tag from the source table is classified.
ENCODERS = {
    "conformer", "e_branchformer", "transformer", "branchformer", "rnn", "multiconvformer",
    "mfa_conformer", "contextual_block_conformer", "contextual_block_transformer",
}
FRONTENDS = {"wavlm", "hubert", "wav2vec2", "xlsr", "mms", "beats", "xeus", "avhubert", "whisper"}
DECODERS = {"transducer": "transducer", "s4_decoder": "s4", "ctc": "none (CTC only)"}


@dataclass(frozen=True)
class Result:
    test_set: str
    metric: str  # "wer" or "cer", in percent
    value: float


@dataclass(frozen=True)
class CatalogEntry:
    """What the catalog knows about one hub repo holding an ESPnet model."""

    repo_id: str
    task: str
    languages: list[str] = field(default_factory=list)
    corpus: str | None = None
    recipe: str | None = None
    architecture: dict[str, Any] = field(default_factory=dict)  # encoder, decoder, frontend, tags
    tokens: dict[str, Any] = field(default_factory=dict)  # type, size
    sample_rate: int | None = None
    results: list[Result] = field(default_factory=list)
    license: str | None = None
    source: str | None = None  # where the facts come from (file:line at a commit, or a URL)
    status: str | None = None  # linked_at_head, hf_page_seen, historic_link, ..., hub
    confidence: str | None = None
    train_config: str | None = None
    notes: str | None = None
    params: int | None = None  # parameter count, where a card, paper or recipe says it
    family: str | None = None  # the model family (owsm_v3.1, fleurs_asr, ...) for multilingual models
    train_hours: int | None = None  # hours of training audio, where known
    lang_evidence: str | None = None  # how the languages were found (hf_card, corpus_inferred, demo_list, ...)
    language_token: str | None = None  # how a prompt names the language: iso639-3 (<spa>), whisper (<es>), fleurs

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[-1]

    @property
    def owner(self) -> str:
        return self.repo_id.split("/", 1)[0]

    def best(self, metric: str) -> float | None:
        """The lowest reported value of `metric` over the test sets (a rough ranking aid)."""
        values = [r.value for r in self.results if r.metric == metric]
        return min(values) if values else None

    @property
    def multilingual(self) -> bool:
        return len(self.languages) > FEW_LANGUAGES

    @property
    def vocab_size(self) -> int | None:
        size = self.tokens.get("size")
        return size if isinstance(size, int) else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The short form `espzoo search` shows (`--json`: the full language list and sizes as numbers)."""
        return {
            "repo_id": self.repo_id,
            "task": self.task,
            "languages": self.languages,
            "lang_count": len([c for c in self.languages if c != "mul"]),
            "corpus": self.corpus,
            "architecture": self.architecture.get("encoder"),
            "tokens": tokens_label(self.tokens),
            "params": self.params,
            "vocab_size": self.vocab_size,
            "wer": self.best("wer"),
            "cer": self.best("cer"),
        }


def tokens_label(tokens: Mapping[str, Any]) -> str | None:
    if not tokens.get("type"):
        return None
    return f"{tokens['type']}{tokens.get('size') or ''}"


def languages_label(codes: list[str], shown: int = FEW_LANGUAGES) -> str:
    """'spa' or 'eng, ben' for a few languages; '150 langs' for a multilingual model."""
    return ", ".join(codes) if len(codes) <= shown else f"{len(codes)} langs"


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmbgt]?)\s*", re.IGNORECASE)
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_size(text: str, what: str = "--max-params") -> int:
    """'400M' -> 400_000_000; '1.5B', '102k', '367000000' too. CatalogError names the option otherwise."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise CatalogError(f"{what} {text!r} is not a size; write e.g. 400M, 1.5B or 400000000.")
    return round(float(m.group(1)) * _SCALE[m.group(2).lower()])


def size_label(n: int | None) -> str | None:
    """367000000 -> '367M', 1020000000 -> '1.02B' (three significant digits, as the papers write them)."""
    if n is None:
        return None
    for scale, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


# ---------------------------------------------------------------------------------------------
# Schema: loading and validating entries


def entry_from_dict(data: Any, where: str) -> CatalogEntry:
    """Validate one mapping from a catalog file; `where` names it in errors ("entry 12")."""
    if not isinstance(data, Mapping):
        raise CatalogError(f"{where}: an entry must be a mapping of fields, got {type(data).__name__}.")
    repo_id = data.get("repo_id")
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise CatalogError(f"{where}: field 'repo_id' must be 'owner/name', got {repo_id!r}.")
    where = f"{where} ({repo_id})"

    def check(name: str, kinds: tuple[type, ...], default: Any) -> Any:
        value = data.get(name, default)
        if value is None:
            return default
        if not isinstance(value, kinds) or isinstance(value, bool):
            wanted = " or ".join(k.__name__ for k in kinds)
            raise CatalogError(f"{where}: field '{name}' must be {wanted}, got {value!r}.")
        return value

    unknown = set(data) - {f for f in CatalogEntry.__dataclass_fields__}
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}.")
    task = check("task", (str,), None)
    if not task:
        raise CatalogError(f"{where}: field 'task' is required (asr, s2t, tts, ...).")
    languages = check("languages", (list,), [])
    if not all(isinstance(code, str) and code for code in languages):
        raise CatalogError(f"{where}: field 'languages' must be a list of language codes, got {languages!r}.")
    results = []
    for i, res in enumerate(check("results", (list,), [])):
        if not isinstance(res, Mapping) or not {"test_set", "metric", "value"} <= set(res):
            raise CatalogError(f"{where}: field 'results' item {i} needs test_set, metric and value.")
        value = res["value"]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise CatalogError(f"{where}: field 'results' item {i} has a non-numeric value {value!r}.")
        results.append(Result(str(res["test_set"]), str(res["metric"]), float(value)))
    return CatalogEntry(
        repo_id=repo_id,
        task=task,
        languages=list(languages),
        corpus=check("corpus", (str,), None),
        recipe=check("recipe", (str,), None),
        architecture=dict(check("architecture", (dict,), {})),
        tokens=dict(check("tokens", (dict,), {})),
        sample_rate=check("sample_rate", (int,), None),
        results=results,
        license=check("license", (str,), None),
        source=check("source", (str,), None),
        status=check("status", (str,), None),
        confidence=check("confidence", (str,), None),
        train_config=check("train_config", (str,), None),
        notes=check("notes", (str,), None),
        params=check("params", (int,), None),
        family=check("family", (str,), None),
        train_hours=check("train_hours", (int,), None),
        lang_evidence=check("lang_evidence", (str,), None),
        language_token=check("language_token", (str,), None),
    )


def shipped_catalog_path() -> Path:
    """The catalog inside the package (a checkout links it to the repo's catalog.yaml). Package data lies
    beside this module in a checkout and in a wheel alike; importlib.resources would cost 13 ms a start."""
    return Path(__file__).resolve().parent / CATALOG_FILE


def user_catalog_path() -> Path:
    return espzoo_home() / CATALOG_FILE


def _read_entries(path: Path) -> list[dict[str, Any]]:
    """Parse a catalog file, through a JSON cache beside the user catalog (YAML parsing dominates
    `espzoo search`'s time; the cache is keyed by the file's size and mtime)."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    cache = espzoo_home() / "cache" / "catalog.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["entries"]
    except (OSError, ValueError, AttributeError):
        pass
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path} is not valid YAML ({exc}); fix it or delete it.") from None
    entries = data.get("entries") if isinstance(data, Mapping) else data
    if not isinstance(entries, list):
        raise CatalogError(f"{path} must hold a list of entries under 'entries'.")
    try:  # best effort: a read-only home only costs speed
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "entries": entries}))
        tmp.replace(cache)
    except OSError:
        pass
    return entries


# ---------------------------------------------------------------------------------------------
# Search


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
            bonus = (0.2 if entry.task == "asr" else 0) + (0.1 if entry.results else 0)
            hits.append(Hit(entry, score + bonus, why))
        hits.sort(key=lambda h: (-h.score, h.entry.repo_id.lower()))
        return hits if limit <= 0 else hits[:limit]


def language_match(lang: str) -> Callable[[CatalogEntry], bool]:
    """A predicate: does an entry list the language `lang` means (under any of its codes)? 'mul' matches the
    multilingual entries. Raises LanguageError (one sentence, closest matches) for what is no language."""
    from espzoo.languages import table

    languages = table()
    language = languages.resolve(lang)
    if language.code == "mul":
        return lambda entry: "mul" in entry.languages or len(entry.languages) > 1
    codes = languages.match_codes(language)
    return lambda entry: not codes.isdisjoint(entry.languages)


def _query_languages(query: str) -> dict[str, frozenset[str]]:
    """For each word of a free-text query that names a language (code, name, or a typo of a name of 5+ letters):
    the codes entries list it under. Resolved once per query, not per entry."""
    from espzoo.languages import LanguageError, fold, table

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
    from espzoo.languages import fold

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


# ---------------------------------------------------------------------------------------------
# Building entries from the source table (scripts/build_catalog.py) and merging a refresh


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
    from espzoo.languages import table

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
    from espzoo.languages import TOKEN_HOLDS

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
    out: dict[str, Any] = dict(entry or {"repo_id": repo_id, "task": "asr" if family in ("fleurs_asr", "ml_superb")
                                         else "s2t", "status": "s2t_table"})
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
