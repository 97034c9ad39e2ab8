"""A catalog entry and the labels shown for it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from espzoo.errors import CatalogError
from espzoo.utils.home import PACKAGE_ROOT, espzoo_home

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
    return PACKAGE_ROOT / CATALOG_FILE


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
    from espzoo.utils.yaml_io import YAMLError, load_yaml
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
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
