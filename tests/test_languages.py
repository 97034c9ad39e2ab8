"""One language resolver for every --lang: ISO 639-3 codes, 639-1 codes, names, aliases, typos; OWSM's tokens."""

from __future__ import annotations

import pytest

from espzoo.catalog.languages import Language, Languages, owsm_token, resolve, table, token_holds
from espzoo.errors import CatalogError, LanguageError

SPANISH = Language("spa", "es", "Spanish")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        # codes: ISO 639-3, 639-1, 639-2/B, BCP 47 tags, OWSM tokens
        ("spa", "spa"), ("es", "spa"), ("ES", "spa"), ("es-MX", "spa"), ("zh-TW", "zho"), ("fre", "fra"),
        ("ger", "deu"), ("top", "top"), ("<spa>", "spa"), ("tok", "tok"),
        # names, in any case and with or without accents; aliases and endonyms
        ("Spanish", "spa"), ("spanish", "spa"), ("  Spanish ", "spa"), ("español", "spa"), ("espanol", "spa"),
        ("castilian", "spa"), ("bangla", "ben"), ("farsi", "fas"), ("totonac", "top"), ("mandarin", "cmn"),
        ("Malay", "msa"), ("swahili", "swa"), ("Swahili (individual language)", "swh"), ("odia", "ory"),
        ("Western Frisian", "fry"), ("日本語", "jpn"),
        # typos
        ("spansh", "spa"), ("espaol", "spa"), ("bengli", "ben"), ("englsh", "eng"), ("totonak", "top"),
        # OWSM's mislabelled tokens name the language they hold
        ("<mas>", "msa"), ("<lga>", "lug"), ("<frr>", "fry"), ("<dgd>", "dyu"),
        # ... while the bare codes keep their ISO meaning
        ("mas", "mas"), ("frr", "frr"),
    ],
)
def test_resolution_table(query: str, code: str) -> None:
    assert resolve(query).code == code


def test_a_language_is_code_alpha2_and_name() -> None:
    assert resolve("es") == SPANISH and resolve("spanish") is resolve("spa")
    top = resolve("top")
    assert top.alpha2 is None and "Totonac" in top.name and str(top) == f"{top.name} (top)"


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("xx", "'xx' is not an ISO 639 language code"),  # not a code, with the closest codes
        ("qqq", "'qqq' is not an ISO 639 language code"),
        ("xyzzyq", "no language is called 'xyzzyq'"),
        ("nahuatl", "'nahuatl' names"),  # many languages share the word: asks for the code
        ("", "no language given"),
    ],
)
def test_what_is_no_language_is_one_sentence(query: str, says: str) -> None:
    with pytest.raises(LanguageError) as err:
        resolve(query)
    message = str(err.value)
    assert says in message and message.count("\n") == 0 and message.endswith(".")
    assert isinstance(err.value, CatalogError)  # the CLI maps catalog errors to one line


def test_errors_name_the_closest_matches() -> None:
    with pytest.raises(LanguageError, match=r"Closest: xh \(Xhosa\)"):
        resolve("xx")
    with pytest.raises(LanguageError, match="Central Huasteca Nahuatl \\(nch\\)"):
        resolve("nahuatl")
    with pytest.raises(LanguageError, match="closest: .*Swedish"):
        resolve("swedshiish")  # too far from any name to be taken for it, close enough to be suggested


def test_owsm_tokens_honour_the_mislabelled_ones() -> None:
    assert owsm_token(SPANISH) == "<spa>"
    assert owsm_token(resolve("ms")) == owsm_token(resolve("zsm")) == "<mas>"  # FLEURS Malay is under <mas>
    assert owsm_token(resolve("fy")) == "<frr>" and owsm_token(resolve("dyu")) == "<dgd>"
    assert owsm_token(resolve("lg")) == "<lug>"  # Luganda has its own token too (FLEURS); <lga> holds Common Voice
    assert owsm_token(resolve("top")) == "<top>"  # a new token for a language OWSM never saw
    assert token_holds("<mas>").code == "msa" and token_holds("<lga>").code == "lug"
    assert token_holds("<spa>") == SPANISH and token_holds("mas").code == "msa"


@pytest.mark.parametrize(
    ("query", "codes"),
    [
        ("ne", {"nep", "npi"}), ("swh", {"swa", "swh"}), ("or", {"ori", "ory"}), ("zh", {"zho", "cmn"}),
        ("ms", {"msa", "zsm"}), ("quy", {"que", "quy"}), ("spa", {"spa"}),
    ],
)
def test_one_language_under_two_codes(query: str, codes: set[str]) -> None:
    """OWSM has two tokens for some languages (nep/npi, swa/swh, ori/ory, zho/cmn); a macrolanguage and its usual
    member are one language for a search. The 639-1 forms ride along for user catalogs written before 639-3."""
    found = table().match_codes(resolve(query))
    assert codes <= found and all(c in table() or len(c) == 2 for c in found)
    assert not ({"mas"} & found)  # Maasai is never Malay


def test_family_and_script_where_known() -> None:
    languages = table()
    assert languages.family(SPANISH) == "Romance" and "Latn" in languages.scripts(SPANISH)
    assert languages.scripts(resolve("ben")) == ("Beng",)
    assert languages.family(resolve("top")) == "" and languages.scripts(resolve("top")) == ()


def test_every_iso_639_3_code_is_known() -> None:
    assert len(table().codes()) > 7800  # not only the catalog's languages: any language a user may bring


def test_a_table_is_plain_rows() -> None:
    small = Languages(["spa\tes\t\t1\t\tSpanish\tRomance\tLatn\tspanish;castilian"])
    assert small.resolve("castilian") == SPANISH and small.resolve("Spanihs") == SPANISH
    with pytest.raises(LanguageError):
        small.resolve("fr")
