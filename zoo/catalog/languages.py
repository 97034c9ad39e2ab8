"""Languages as ISO 639-3: one resolver for every `--lang` (codes, 639-1 codes, names, aliases, typos) and the
language tokens of OWSM-style models.

    >>> resolve("es"), resolve("Spanish"), resolve("espanol"), resolve("spansh")   # all Language('spa', 'es', ...)
    >>> owsm_token(resolve("ms"))                                                   # '<mas>': OWSM's Malay token

The table (languages.tsv beside this module) is built by scripts/build_catalog.py from data/iso639-3.tsv (every
ISO 639-3 code, with Wiktionary's families, scripts and other names), data/language_aliases.tsv, data/iso639.tsv and
data/macrolanguages.tsv. Nothing here imports torch or espnet, and the table is read on first use only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from espzoo.errors import CatalogError, LanguageError
from espzoo.utils.home import PACKAGE_ROOT

TABLE_FILE = "languages.tsv"
# The shipped table's columns; `keys` holds the folded names that mean this language (collisions already settled
# by `name_keys` at build time, so a start-up reads the table without folding 20,000 names).
TABLE_COLUMNS = ("code", "alpha2", "alpha2b", "major", "same_as", "name", "family", "scripts", "keys")

# OWSM v3+ language tokens that hold another language's speech than their ISO code names (data-prep mappings in
# ESPnet's OWSM recipes: prepare_fleurs.py:141 files FLEURS Malay under <mas>; cv-iso-693-3.txt files Common Voice
# Luganda under <lga>, Western Frisian under <frr>, Dyula under <dgd>). Token code -> the language it holds.
TOKEN_HOLDS = {"mas": "msa", "lga": "lug", "frr": "fry", "dgd": "dyu"}
# The token OWSM v3+ uses for a language whose own code is not its token (the inverse of TOKEN_HOLDS; Luganda keeps
# <lug>, which holds FLEURS Luganda, and Standard Malay shares Malay's token).
TOKEN_FOR = {"msa": "mas", "zsm": "mas", "fry": "frr", "dyu": "dgd"}
# ISO 639-3 codes that name no single language: a model "for" them says nothing about any one language.
SPECIAL_CODES = {"mul", "und", "mis", "zxx"}


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-3
    alpha2: str | None  # ISO 639-1, where one exists
    name: str  # the ISO 639-3 reference name

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


def fold(text: str) -> str:
    """Lower case without accents or extra spaces: 'Español ' -> 'espanol'."""
    decomposed = unicodedata.normalize("NFKD", text.strip().casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def _plain_name(name: str) -> str:
    """'Swahili (macrolanguage)' -> 'Swahili'; 'Basa (Cameroon)' stays (the parenthesis tells languages apart)."""
    return re.sub(r"\s*\((macrolanguage|individual language)\)$", "", name)


def name_keys(rows: list[dict[str, str]]) -> dict[str, list[str]]:
    """For each code, the folded names that resolve to it. ISO names first, then aliases and other names; a name two
    languages share goes to the one with a 639-1 code (the one people mean), else to the first by code. `rows` carry
    code, alpha2, name and `names` (';'-separated other names and aliases)."""
    ranked: dict[str, tuple[int, int, str]] = {}
    for row in rows:
        code, alpha2 = row["code"], row["alpha2"]
        keys = [(0, row["name"]), (1, _plain_name(row["name"]))] + [(2, n) for n in row["names"].split(";") if n]
        for prio, name in keys:
            key = fold(name)
            rank = (prio, 0 if alpha2 else 1, code)
            if key and ";" not in key and "\t" not in key and (key not in ranked or rank < ranked[key]):
                ranked[key] = rank
    out: dict[str, list[str]] = {row["code"]: [] for row in rows}
    for key, (_, _, code) in ranked.items():
        out[code].append(key)
    return out


class Languages:
    """A language table with lookups by code, name and typo. `lines` are its TSV rows (TABLE_COLUMNS, no header).

    A row is split only when asked for: a start-up that resolves a code touches a handful of the 7,900 rows."""

    def __init__(self, lines: Iterable[str]):
        self._lines: dict[str, str] = {}
        self._split: dict[str, list[str]] = {}
        self._alpha2: dict[str, str] = {}
        self._alpha2b: dict[str, str] = {}
        for line in lines:
            code, _, rest = line.partition("\t")
            self._lines[code] = line
            if not rest.startswith("\t\t"):  # a 639-1 or 639-2/B code: few rows have one
                alpha2, alpha2b = rest.split("\t", 2)[:2]
                if alpha2:
                    self._alpha2[alpha2] = code
                if alpha2b:
                    self._alpha2b[alpha2b] = code
        self._languages: dict[str, Language] = {}
        self._names: dict[str, str] | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> Languages:
        path = path or PACKAGE_ROOT / TABLE_FILE
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CatalogError(f"the language table {path} cannot be read ({exc}); reinstall espzoo.") from None
        return cls(line for line in lines[1:] if line)

    def _row(self, code: str) -> list[str]:
        row = self._split.get(code)
        if row is None:
            row = self._split[code] = self._lines[code].split("\t")
        return row

    # --- lookups --------------------------------------------------------------------------------

    def __contains__(self, code: str) -> bool:
        return code in self._lines

    def get(self, code: str) -> Language:
        lang = self._languages.get(code)
        if lang is None:
            row = self._row(code)
            lang = self._languages[code] = Language(row[0], row[1] or None, row[5])
        return lang

    def codes(self) -> list[str]:
        return list(self._lines)

    def _major(self, code: str) -> bool:
        return self._row(code)[3] == "1"

    def names_index(self) -> dict[str, str]:
        """Folded name -> code (see name_keys)."""
        if self._names is None:
            rows = (self._row(code) for code in self._lines)
            self._names = {key: row[0] for row in rows for key in row[8].split(";") if key}
        return self._names

    def lookup(self, query: str) -> Language | None:
        """The language `query` names exactly (code, 639-1/639-2B code, name or alias, OWSM token); None if none."""
        q = fold(query)
        if q.startswith("<") and q.endswith(">"):  # an OWSM token: the language it holds
            q = TOKEN_HOLDS.get(q[1:-1], q[1:-1])
        if re.fullmatch(r"[a-z]{2,3}([-_][a-z0-9]{2,8})+", q):  # a BCP 47 tag (es-MX, zh-TW): its language
            q = re.split(r"[-_]", q)[0]
        if len(q) == 3 and q in self._lines:
            return self.get(q)
        code = self._alpha2.get(q) if len(q) == 2 else self._alpha2b.get(q) if len(q) == 3 else None
        code = code or self.names_index().get(q)
        return self.get(code) if code else None

    def resolve(self, query: str) -> Language:
        """The language `query` means, tolerating small typos; LanguageError names the closest matches."""
        found = self.lookup(query)
        if found is not None:
            return found
        q = fold(query).strip("<>")
        if not q:
            raise LanguageError("no language given; name one by ISO 639-3 code (spa), 639-1 code (es) or name "
                                "(Spanish).")
        if re.fullmatch(r"[a-z]{2,3}", q):
            close = self._close_codes(q)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise LanguageError(f"'{query.strip()}' is not an ISO 639 language code.{hint} Give an ISO 639-3 code "
                                "(spa), a 639-1 code (es) or an English name (Spanish).")
        several = self._word_matches(q)
        if len(several) > 1:
            shown = ", ".join(str(lang) for lang in several[:6])
            more = f" and {len(several) - 6} more" if len(several) > 6 else ""
            raise LanguageError(f"'{query.strip()}' names {len(several)} languages: {shown}{more}; give the "
                                "ISO 639-3 code of yours.")
        if len(several) == 1:
            return several[0]
        typo = self._typo(q)
        if typo is not None:
            return typo
        close = self._close_names(q)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise LanguageError(f"no language is called '{query.strip()}'{hint}. Give an ISO 639-3 code (spa), "
                            "a 639-1 code (es) or an English name (Spanish).")

    # --- facts ----------------------------------------------------------------------------------

    def match_codes(self, lang: Language) -> frozenset[str]:
        """The codes under which catalog entries may list `lang`: its own, the codes of the same language (nep/npi,
        swa/swh, ori/ory, zho/cmn, msa/zsm, ...) and the 639-1 forms of these (user catalogs written before 639-3)."""
        codes = {lang.code, *self._row(lang.code)[4].split()} if lang.code in self._lines else {lang.code}
        codes |= {self._row(c)[1] or c for c in codes if c in self._lines}
        return frozenset(codes)

    def scripts(self, lang: Language) -> tuple[str, ...]:
        """ISO 15924 scripts the language is written in (Wiktionary's list), () when unknown."""
        return tuple(self._row(lang.code)[7].split()) if lang.code in self._lines else ()

    def family(self, lang: Language) -> str:
        """The language's (sub)family as Wiktionary names it ('Romance', 'Indo-Aryan'); '' when unknown."""
        return self._row(lang.code)[6] if lang.code in self._lines else ""

    # --- closest matches ------------------------------------------------------------------------

    def _major_names(self) -> dict[str, str]:
        return {k: c for k, c in self.names_index().items() if self._major(c)}

    def _typo(self, q: str) -> Language | None:
        """The one language a misspelt name clearly means ('bengli' -> Bengali), else None."""
        import difflib

        if len(q) < 4:
            return None
        for names in (self._major_names(), self.names_index()):
            scored = sorted(((difflib.SequenceMatcher(None, q, k).ratio(), c) for k in
                             difflib.get_close_matches(q, list(names), n=5, cutoff=0.84)
                             for c in [names[k]]), reverse=True)
            if scored:
                best, code = scored[0]
                rivals = [r for r, c in scored[1:] if c != code]
                if not rivals or best - rivals[0] >= 0.05:
                    return self.get(code)
                return None
        return None

    def _word_matches(self, q: str) -> list[Language]:
        """Languages whose ISO name contains `q` as a word ('nahuatl' -> Central Nahuatl, ...)."""
        pattern = re.compile(rf"\b{re.escape(q)}\b")
        found = [self.get(code) for code in self._lines if pattern.search(fold(self._row(code)[5]))]
        return sorted(found, key=lambda lang: (lang.alpha2 is None, not self._major(lang.code), lang.code))

    def _close_names(self, q: str) -> list[str]:
        import difflib

        out: list[str] = []
        for names in (self._major_names(), self.names_index()):
            for key in difflib.get_close_matches(q, list(names), n=6, cutoff=0.6):
                label = str(self.get(names[key]))
                if label not in out:
                    out.append(label)
            if out:
                break
        return out[:3]

    def _close_codes(self, q: str) -> list[str]:
        import difflib

        pool = (list(self._alpha2) if len(q) == 2 else
                [c for c in self._lines if self._major(c) and c not in SPECIAL_CODES])
        out = []
        for code in difflib.get_close_matches(q, pool, n=3, cutoff=0.5):
            lang = self.get(self._alpha2.get(code, code))
            out.append(f"{code} ({lang.name})")
        return out


@lru_cache(maxsize=1)
def table() -> Languages:
    """The shipped language table, read once."""
    return Languages.load()


def resolve(query: str) -> Language:
    """The ISO 639-3 language `query` means: a 639-3 or 639-1 code, an English name or alias, an OWSM token
    (`<mas>` is Malay) or a small typo of a name. Raises LanguageError with the closest matches."""
    return table().resolve(query)


def owsm_token(lang: Language) -> str:
    """The language token of OWSM v3+ style models for `lang`: '<spa>'; '<mas>' for Malay (OWSM's mislabelled
    tokens, see TOKEN_HOLDS). For Maasai (mas) itself this is '<mas>' as well, which in OWSM holds Malay speech:
    callers that add a new language token should check `token_holds`."""
    return f"<{TOKEN_FOR.get(lang.code, lang.code)}>"


def token_holds(token: str) -> Language:
    """The language whose speech an OWSM v3+ token holds: '<mas>' -> Malay, '<spa>' -> Spanish."""
    return table().get(TOKEN_HOLDS.get(token.strip("<>"), token.strip("<>")))
