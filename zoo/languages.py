"""PLACEHOLDER for lane i10's `espzoo.languages` (ISO 639-3 resolver shared with the catalog).

This minimal module exists only so that the S2T work (zoo/s2t.py) runs on this branch; it is replaced by lane
i10's full module at merge, which has exactly this API: `Language` (code ISO 639-3, alpha2, name),
`resolve(query) -> Language` (raises `LanguageError`), `owsm_token(lang) -> str`. It knows a handful of
languages only; any other 3-letter lowercase code resolves to itself (a language the table does not name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class LanguageError(ValueError):
    """A language query that names no language (the message says what to write instead)."""


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-3
    alpha2: str | None
    name: str


_KNOWN = (
    Language("eng", "en", "English"),
    Language("spa", "es", "Spanish"),
    Language("fra", "fr", "French"),
    Language("deu", "de", "German"),
    Language("por", "pt", "Portuguese"),
    Language("zsm", "ms", "Malay"),
    Language("top", None, "Papantla Totonac"),
)
# OWSM spells a few languages with another ISO 639-3 code than the individual language's (Malay -> <mas>).
_OWSM = {"zsm": "mas"}


def resolve(query: str) -> Language:
    """The language a code (639-3 or 639-1) or an English name names."""
    text = query.strip().lower().strip("<>")
    for lang in _KNOWN:
        if text in (lang.code, lang.alpha2, lang.name.lower()):
            return lang
    if re.fullmatch(r"[a-z]{3}", text):
        return Language(text, None, text)
    raise LanguageError(f"{query!r} names no language espzoo knows; give an ISO 639-3 code such as spa.")


def owsm_token(lang: Language) -> str:
    """The OWSM language token for `lang`, e.g. `<spa>`."""
    return f"<{_OWSM.get(lang.code, lang.code)}>"


__all__ = ["Language", "LanguageError", "owsm_token", "resolve"]
