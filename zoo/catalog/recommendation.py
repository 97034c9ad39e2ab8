"""Which model to start from for a language: a ranked short list out of the catalog, each with its reason and the
exact `espzoo finetune` command.

Three tiers:
1. models trained on the language, by their reported error;
2. multilingual models that cover it (OWSM, OWSM-CTC, FLEURS, ...), noting their size and the language token;
3. when no multilingual model covers it: the multilingual models that can take it as a new language token (the S2T
   fine-tune adds `<xxx>`), and, when nothing was trained on it at all, models of a language of the same family or
   script, saying plainly that the language was never seen.
Torch-free, like the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from espzoo.catalog.catalog import Catalog
from espzoo.catalog.entries import CatalogEntry, size_label
from espzoo.catalog.languages import SPECIAL_CODES, Language, Languages, owsm_token, table, token_holds
from espzoo.errors import CatalogError, LanguageError
from espzoo.tasks import ASR, S2T

TIERS = {1: "trained on {lang}", 2: "multilingual, covers {lang}", 3: "never saw {lang}: worth trying"}
# What a task asks of a model: speech recognition is what ASR and S2T (OWSM-style) models both do.
TASK_MODELS = {ASR.family: {ASR.family, S2T.family}, "st": {"st", S2T.family}}


@dataclass(frozen=True)
class RecommendOptions:
    lang: str
    task: str = ASR.family
    max_params: int | None = None
    per_tier: int = 5


@dataclass(frozen=True)
class Recommendation:
    tier: int
    entry: CatalogEntry
    reason: str
    command: str
    error: dict[str, Any] | None = None  # the reported result ranking it: test_set, metric, value

    def to_json(self, rank: int, language: Language) -> dict[str, Any]:
        e = self.entry
        return {
            "rank": rank, "tier": self.tier, "tier_name": TIERS[self.tier].format(lang=language.name),
            "repo_id": e.repo_id, "task": e.task, "params": e.params, "vocab_size": e.vocab_size,
            "lang_count": len(e.languages), "error": self.error, "reason": self.reason, "command": self.command,
        }


@dataclass(frozen=True)
class Advice:
    language: Language
    task: str
    max_params: int | None
    seen: bool  # some catalog model was trained on the language or covers it
    note: str
    items: list[Recommendation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "language": {"code": self.language.code, "alpha2": self.language.alpha2, "name": self.language.name,
                         "owsm_token": owsm_token(self.language)},
            "task": self.task, "max_params": self.max_params, "seen": self.seen, "note": self.note,
            "recommendations": [item.to_json(i + 1, self.language) for i, item in enumerate(self.items)],
        }


def recommend(catalog: Catalog, options: RecommendOptions) -> Advice:
    """The ranked short list for `options.lang` (resolved as `--lang` everywhere; LanguageError otherwise)."""
    languages = table()
    lang = languages.resolve(options.lang)
    if lang.code in SPECIAL_CODES:
        raise LanguageError(f"'{options.lang}' ({lang.name}) is no single language; give the language of your "
                            "speech (an ISO 639-3 code, a 639-1 code or a name).")
    if options.per_tier < 1:
        raise CatalogError(f"--limit {options.per_tier} would list nothing; give 1 or more.")
    tasks = TASK_MODELS.get(options.task, {options.task})
    pool = [e for e in catalog.entries if e.task in tasks and _fits(e, options.max_params)]
    codes = languages.match_codes(lang)
    trained = [e for e in pool if not codes.isdisjoint(e.languages) and not e.multilingual]
    covering = [e for e in pool if not codes.isdisjoint(e.languages) and e.multilingual]
    items = [_trained(e, _listed_as(e, lang, codes, languages)) for e in sorted(trained, key=_by_error)]
    items = items[: options.per_tier]
    items += [_covering(e, _listed_as(e, lang, codes, languages), lang)
              for e in _distinct(sorted(covering, key=_by_size_and_data))][: options.per_tier]
    notes = []
    learners = [e for e in pool if e.task == S2T.family and e.language_token == "iso639-3"]
    if not covering:
        items += [_learner(e, lang) for e in _distinct(sorted(learners, key=_by_size_and_data))][: options.per_tier]
        notes.append(f"no multilingual model in the catalog covers {lang}" + (
            f"; the S2T models listed can learn it as the language token {owsm_token(lang)}" if learners else ""))
    if not trained and not covering:
        # The S2T models (and their mirrors) were offered above, as learners of a new token.
        listed = {e.name.lower() for e in learners} | {item.entry.name.lower() for item in items}
        related, why = _related([e for e in pool if e.name.lower() not in listed], lang, languages)
        items += related[: options.per_tier]
        notes.insert(0, f"{lang} was never seen by any catalog model")
        if why:
            notes.append(why)
    if not items:
        limit = f" of at most {size_label(options.max_params)} parameters" if options.max_params else ""
        raise CatalogError(f"no {options.task} model{limit} in the catalog covers {lang} or can learn it; "
                           "raise --max-params or try another --task.")
    note = "; ".join(notes) + "." if notes else f"{len(trained) + len(covering)} catalog models know {lang}."
    return Advice(lang, options.task, options.max_params, bool(trained or covering), note, items)


# --- ranking -------------------------------------------------------------------------------------------------


def _listed_as(entry: CatalogEntry, lang: Language, codes: frozenset[str], languages: Languages) -> Language:
    """The language as the entry lists it (Quechua for a query of Ayacucho Quechua), to say what it was trained on."""
    if lang.code in entry.languages:
        return lang
    code = next((c for c in entry.languages if c in codes and c in languages), None)
    return languages.get(code) if code else lang


def _fits(entry: CatalogEntry, max_params: int | None) -> bool:
    """Only the models known to be bigger are left out: most monolingual cards state no size."""
    return max_params is None or entry.params is None or entry.params <= max_params


def _best_error(entry: CatalogEntry) -> dict[str, Any] | None:
    """The lowest reported WER (else CER) and its test set."""
    for metric in ("wer", "cer"):
        results = [r for r in entry.results if r.metric == metric]
        if results:
            best = min(results, key=lambda r: r.value)
            return {"test_set": best.test_set, "metric": metric, "value": best.value}
    return None


def _by_error(entry: CatalogEntry) -> tuple[Any, ...]:
    err = _best_error(entry)
    return (err is None, err["value"] if err else 0.0, entry.task != ASR.family, entry.params or 0,
            entry.repo_id.lower())


def _by_size_and_data(entry: CatalogEntry) -> tuple[Any, ...]:
    """More training audio first (the newest families), then the smaller model (cheaper to fine-tune)."""
    return (-(entry.train_hours or 0), entry.params if entry.params is not None else 10**13, entry.repo_id.lower())


def _distinct(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    """One of each model: pyf98/owsm_v3 mirrors espnet/owsm_v3."""
    seen: set[str] = set()
    out = []
    for entry in sorted(entries, key=lambda e: e.owner != "espnet"):
        if entry.name.lower() not in seen:
            seen.add(entry.name.lower())
            out.append(entry)
    order = {id(e): i for i, e in enumerate(entries)}
    return sorted(out, key=lambda e: order[id(e)])


def _related(pool: list[CatalogEntry], lang: Language, languages: Languages) -> tuple[list[Recommendation], str]:
    """Models of a language of the same family, then of the same script, for a language no model knows."""
    family, scripts = languages.family(lang), set(languages.scripts(lang))
    if not family and not scripts:
        return [], "its family and script are not in the language table, so no related-language model is suggested"
    scored = []
    for entry in pool:
        kin = [languages.get(c) for c in entry.languages if c in languages]
        same_family = [k for k in kin if family and languages.family(k) == family]
        same_script = [k for k in kin if scripts & set(languages.scripts(k))]
        if same_family or same_script:
            scored.append((0 if same_family else 1, -len(same_family or same_script), _by_error(entry), entry,
                           same_family, same_script))
    scored.sort(key=lambda s: s[:3])
    out = [_kin(e, lang, fam, scr, family, scripts) for *_, e, fam, scr in scored]
    return out, ""


# --- reasons and commands ------------------------------------------------------------------------------------


def finetune_command(entry: CatalogEntry, lang: Language, *, new_vocab: bool = False) -> str:
    """The `espzoo finetune` line to start from `entry`: S2T models take `--lang` (ISO 639-3; the language token is
    chosen from it), an ASR model of another language a vocabulary learned from the user's transcripts."""
    cmd = f"espzoo finetune {entry.repo_id} --train data/train --valid data/dev --out exp/{lang.code}_{entry.name}"
    if entry.task == S2T.family:
        cmd += f" --lang {lang.code}"
    elif new_vocab:
        cmd += " --vocab bpe:500"
    return cmd


def _size(entry: CatalogEntry) -> str:
    parts = [f"{size_label(entry.params)} params" if entry.params else "size unknown"]
    if entry.vocab_size:
        parts.append(f"vocabulary {entry.vocab_size}")
    return ", ".join(parts)


def _token(entry: CatalogEntry, lang: Language) -> str:
    if entry.language_token == "iso639-3":
        return f"language token {owsm_token(lang)}"
    if entry.language_token == "whisper" and lang.alpha2:
        return f"language token <{lang.alpha2}>"
    if entry.language_token == "fleurs":
        return "transcripts carry a FLEURS language tag ([xx_yy])"
    return ""


def _trained(entry: CatalogEntry, lang: Language) -> Recommendation:
    err = _best_error(entry)
    said = f"{err['metric'].upper()} {err['value']:g} on {err['test_set']}" if err else "no reported error"
    corpus = f" ({entry.corpus})" if entry.corpus else ""
    reason = f"trained on {lang.name}{corpus}; {said}; {_size(entry)}"
    return Recommendation(1, entry, reason, finetune_command(entry, lang), err)


def _covering(entry: CatalogEntry, lang: Language, asked: Language) -> Recommendation:
    hours = f", {entry.train_hours // 1000}k h of audio" if entry.train_hours else ""
    token = _token(entry, lang)
    reason = (f"covers {lang.name} among its {len(entry.languages)} languages"
              f"{' (' + token + ')' if token else ''}; {_size(entry)}{hours}")
    if entry.lang_evidence in ("family_shared", "inferred_same_data", "recipe_data_partial"):
        reason += f"; language list {entry.lang_evidence.replace('_', ' ')}"
    return Recommendation(2, entry, reason, finetune_command(entry, asked), _best_error(entry))


def _learner(entry: CatalogEntry, lang: Language) -> Recommendation:
    hours = f", {entry.train_hours // 1000}k h of audio" if entry.train_hours else ""
    token = owsm_token(lang)
    holder = token_holds(token)
    if holder.code != lang.code:  # Maasai: OWSM's <mas> already holds Malay speech
        what = f"its token {token} exists but holds {holder.name} speech, which fine-tuning retrains for {lang.name}"
    else:
        what = f"fine-tuning adds the new language token {token} to its {len(entry.languages)} languages"
    reason = f"never saw {lang.name}: {what}; {_size(entry)}{hours}"
    return Recommendation(3, entry, reason, finetune_command(entry, lang), None)


def _kin(entry: CatalogEntry, lang: Language, fam: list[Language], scr: list[Language], family: str,
         scripts: set[str]) -> Recommendation:
    kin = fam or scr
    names = ", ".join(k.name for k in kin[:3]) + (f" and {len(kin) - 3} more" if len(kin) > 3 else "")
    why = f"same family ({family})" if fam else f"same script ({'/'.join(sorted(scripts))})"
    reason = f"never saw {lang.name}; {why}: trained on {names}; {_size(entry)}"
    return Recommendation(3, entry, reason, finetune_command(entry, lang, new_vocab=entry.task != S2T.family),
                          _best_error(entry))

