"""Scores people can trust: normalized error rates, bootstrap confidence intervals, paired comparisons.

    from espzoo.decode.scores import text_normalizer, bootstrap_ci, paired_difference

    normalize = text_normalizer("basic")          # whisper-normalizer's BasicTextNormalizer, marks kept
    normalize("¿La puerta está abierta?")         # "la puerta está abierta"
    bootstrap_ci(errors, lengths)                 # (lo, hi): 95% percentile interval of the corpus rate
    paired_difference(errors_a, errors_b, lengths)  # (b - a, (lo, hi)) over the same resampled units

Normalization is Whisper's, as packaged by whisper-normalizer (OpenAI's code, kept up to date there): the basic
normalizer for every language, the English one (numbers, spellings, contractions, fillers) for English. Whatever
it does, the result is then put in Unicode NFKC and its spaces collapsed, so the rule always holds: lower case,
punctuation (including ¿¡«») and symbols removed, NFKC, single spaces. The basic normalizer runs with
`preserve_marks=True`: its default replaces combining marks with spaces, which splits every word of Bengali,
Hindi or Tamil apart (its own documentation says so).

Confidence intervals are percentile bootstrap intervals of the corpus rate (sum of errors / sum of reference
tokens) over resampled utterances, or over resampled speakers when a data set names them (utterances of one
speaker are not independent). Seeded: the same data gives the same interval.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata

from espzoo.errors import EmptyReferenceError, NormalizerError

NORMALIZERS = ("auto", "basic", "english", "none")
RESAMPLES = 1000
SEED = 0


@dataclass(frozen=True)
class TextNormalizer:
    """A callable str -> str with the name a result records (package, version, class)."""

    name: str
    function: Callable[[str], str]

    def __call__(self, text: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", self.function(text)).lower().split())


def text_normalizer(kind: str = "basic", language: str | None = None) -> TextNormalizer | None:
    """The normalizer `kind` names: "basic", "english", "none" (None) or "auto" (English for English, `language`
    being an ISO code or name, else basic)."""
    if kind not in NORMALIZERS:
        raise NormalizerError(f"normalizer {kind!r} is unknown; use one of {', '.join(NORMALIZERS)}.")
    if kind == "none":
        return None
    if kind == "auto":
        kind = "english" if is_english(language) else "basic"
    try:
        version = metadata.version("whisper-normalizer")
        if kind == "english":
            from whisper_normalizer.english import EnglishTextNormalizer

            return TextNormalizer(f"whisper-normalizer {version} EnglishTextNormalizer", EnglishTextNormalizer())
        from whisper_normalizer.basic import BasicTextNormalizer

        return TextNormalizer(f"whisper-normalizer {version} BasicTextNormalizer(preserve_marks=True)",
                              BasicTextNormalizer(preserve_marks=True))
    except (ImportError, metadata.PackageNotFoundError) as error:
        raise NormalizerError(
            "the whisper-normalizer package is not installed; reinstall espzoo (pip install -e .) or pass "
            "--normalizer none."
        ) from error


def is_english(language: str | None) -> bool:
    if not language:
        return False
    from espzoo.catalog.languages import resolve
    from espzoo.errors import LanguageError

    try:
        return resolve(str(language).strip("<>")).code == "eng"
    except LanguageError:
        return False


def empty_after_normalizing(ids: Sequence[str], references: Sequence[str], normalize: TextNormalizer) -> None:
    """Raise EmptyReferenceError naming the utterances whose non-empty reference normalizes to nothing."""
    empty = [utt for utt, ref in zip(ids, references, strict=True) if ref.strip() and not normalize(ref)]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise EmptyReferenceError(
            f"{len(empty)} reference(s) have no words left once normalized by {normalize.name} ({shown}); fix or "
            "remove those transcripts, or score without normalizing (--normalizer none)."
        )


# ---------------------------------------------------------------------------------------------------------
# Bootstrap


def _grouped(errors: Sequence[int], lengths: Sequence[int], groups: Sequence[str] | None) -> tuple[list, list]:
    if groups is None:
        return list(errors), list(lengths)
    order: dict[str, int] = {}
    e: list[int] = []
    n: list[int] = []
    for group, err, length in zip(groups, errors, lengths, strict=True):
        k = order.setdefault(group, len(order))
        if k == len(e):
            e.append(0)
            n.append(0)
        e[k] += err
        n[k] += length
    return e, n


def _resampled_rates(columns: list[tuple[list[int], list[int]]], resamples: int, seed: int) -> list:
    """For each (errors, lengths) column over the same units: the corpus rate of each of `resamples` draws
    (units drawn with replacement, the same draws for every column: a paired bootstrap)."""
    import numpy as np

    units = len(columns[0][0])
    rng = np.random.default_rng(seed)
    arrays = [(np.asarray(e, dtype=np.float64), np.asarray(n, dtype=np.float64)) for e, n in columns]
    out: list[list] = [[] for _ in columns]
    chunk = max(1, 2_000_000 // max(units, 1))  # draws at a time: keeps the index matrix small
    done = 0
    while done < resamples:
        rows = min(chunk, resamples - done)
        draws = rng.integers(0, units, size=(rows, units))
        for k, (e, n) in enumerate(arrays):
            total = n[draws].sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[k].append(np.where(total > 0, e[draws].sum(axis=1) / total, np.nan))
        done += rows
    return [np.concatenate(parts) for parts in out]


def bootstrap_ci(
    errors: Sequence[int], lengths: Sequence[int], groups: Sequence[str] | None = None, *,
    resamples: int = RESAMPLES, seed: int = SEED,
) -> tuple[float, float] | None:
    """The 95% percentile bootstrap interval of sum(errors) / sum(lengths), resampling units (utterances, or the
    `groups` they belong to); None with no reference tokens at all."""
    import numpy as np

    e, n = _grouped(errors, lengths, groups)
    if not e or sum(n) == 0:
        return None
    (rates,) = _resampled_rates([(e, n)], resamples, seed)
    lo, hi = np.nanpercentile(rates, [2.5, 97.5])
    return float(lo), float(hi)


def paired_difference(
    errors_a: Sequence[int], errors_b: Sequence[int], lengths_a: Sequence[int], lengths_b: Sequence[int] | None = None,
    groups: Sequence[str] | None = None, *, resamples: int = RESAMPLES, seed: int = SEED,
) -> tuple[float, tuple[float, float]] | None:
    """rate(b) - rate(a) on the same units, and its 95% paired bootstrap interval (the same draws for both)."""
    import numpy as np

    lengths_b = lengths_a if lengths_b is None else lengths_b
    ea, na = _grouped(errors_a, lengths_a, groups)
    eb, nb = _grouped(errors_b, lengths_b, groups)
    if not ea or sum(na) == 0 or sum(nb) == 0:
        return None
    rates_a, rates_b = _resampled_rates([(ea, na), (eb, nb)], resamples, seed)
    lo, hi = np.nanpercentile(rates_b - rates_a, [2.5, 97.5])
    return sum(eb) / sum(nb) - sum(ea) / sum(na), (float(lo), float(hi))


def real_speakers(speakers: Sequence[str | None], ids: Sequence[str]) -> bool:
    """Whether the speakers are worth resampling by: named for every utterance, and not one per utterance
    (a Kaldi dir without utt2spk, or a manifest without a speaker column, gets each utterance as its speaker)."""
    if not speakers or any(s is None for s in speakers):
        return False
    return len(set(speakers)) < len(speakers) and any(s != i for s, i in zip(speakers, ids, strict=True))
