"""Word and character error rates as ESPnet scores them.

Error rates follow ESPnet's scoring (egs2/TEMPLATE/asr1/asr.sh + sclite): a minimum-edit-distance alignment
of reference and hypothesis tokens, rate = (substitutions + deletions + insertions) / reference tokens,
summed over the corpus before dividing (not an average of per-utterance rates). Words are whitespace-split.
Characters are what `espnet2.bin.tokenize_text --token_type char` makes of the text: every character,
with the space between words kept as a `<space>` token, so a missing space counts as an error, as in
ESPnet's CER tables. Runs of whitespace are collapsed and the ends stripped first, on both sides, and
both are put in Unicode NFC, so that an accent typed as one code point or as a combining mark compares
equal (the one place we differ from sclite, which compares bytes).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from espzoo.errors import EvaluateError

if TYPE_CHECKING:

    pass
from pathlib import Path

SPACE = "<space>"


@dataclass(frozen=True)
class Score:
    """Alignment counts of a hypothesis against a reference (one utterance or a whole corpus)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0  # N: reference tokens (words or characters)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def correct(self) -> int:
        return self.reference_length - self.substitutions - self.deletions

    @property
    def rate(self) -> float:
        """(S + D + I) / N. An empty reference scores 0.0 against an empty hypothesis and
        infinity against anything else (sclite reports such a case as 100% + insertions; there is no N)."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else math.inf
        return self.errors / self.reference_length

    def __add__(self, other: Score) -> Score:
        return Score(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )

    def to_dict(self) -> dict[str, float | int | None]:
        rate = self.rate
        return {
            "rate": None if math.isinf(rate) else rate,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "reference_length": self.reference_length,
        }


@dataclass(frozen=True)
class ErrorRates:
    """Word and character scores of a set of hypotheses, plus one pair per utterance."""

    wer: Score
    cer: Score
    per_utterance: list[tuple[Score, Score]] = field(default_factory=list)  # (word, char) per pair

    def to_dict(self) -> dict[str, object]:
        return {"wer": self.wer.to_dict(), "cer": self.cer.to_dict()}


def words(text: str) -> list[str]:
    """Word tokens: whitespace-separated, in Unicode NFC (so "é" typed either way is one letter)."""
    return unicodedata.normalize("NFC", text).split()


def chars(text: str) -> list[str]:
    """Character tokens as ESPnet's char tokenizer writes them: spaces between words become `<space>`."""
    tokens: list[str] = []
    for k, word in enumerate(words(text)):
        if k:
            tokens.append(SPACE)
        tokens.extend(word)
    return tokens


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> Score:
    """Levenshtein alignment counts (S, D, I) with unit costs.

    Among alignments with the fewest errors, the backtrace prefers a match or substitution, then a
    deletion, then an insertion, so that counts are deterministic (sclite's tie-breaking differs only
    in which of equally cheap paths it reports; the total, and so the rate, is the same).
    """
    counts = {"S": 0, "D": 0, "I": 0, "=": 0}
    for op, _, _ in _backtrace(reference, hypothesis):
        counts[op] += 1
    return Score(counts["S"], counts["D"], counts["I"], len(reference))


def alignment(reference: Sequence[str], hypothesis: Sequence[str]) -> list[tuple[str, str | None, str | None]]:
    """The aligned pairs behind `align`'s counts, in order: ("=", ref, hyp) a match, ("S", ref, hyp) a
    substitution, ("D", ref, None) a deletion, ("I", None, hyp) an insertion."""
    return list(reversed(list(_backtrace(reference, hypothesis))))


def _backtrace(reference: Sequence[str], hypothesis: Sequence[str]) -> Iterator[tuple[str, str | None, str | None]]:
    """The operations of a minimum-edit alignment, last first (see `align` for the tie-breaking)."""
    import editdistance

    n, m = len(reference), len(hypothesis)
    # The distance, from C; every cell of an optimal path has |i - j| <= it (each step off the diagonal costs
    # one), so only that band of the table is filled: O(n * distance) instead of O(n * m), same counts.
    band = editdistance.eval(list(reference), list(hypothesis))
    unreachable = n + m + 1
    # cost[i][j]: edits to turn reference[:i] into hypothesis[:j] (within the band)
    cost = [[j if j <= band else unreachable for j in range(m + 1)]]
    for i in range(1, n + 1):
        row = [unreachable] * (m + 1)
        if i <= band:
            row[0] = i
        prev = cost[i - 1]
        ref_token = reference[i - 1]
        for j in range(max(1, i - band), min(m, i + band) + 1):
            diagonal = prev[j - 1] + (ref_token != hypothesis[j - 1])
            row[j] = min(diagonal, prev[j] + 1, row[j - 1] + 1)
        cost.append(row)

    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            yield ("S" if reference[i - 1] != hypothesis[j - 1] else "="), reference[i - 1], hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            yield "D", reference[i - 1], None
            i -= 1
        else:
            yield "I", None, hypothesis[j - 1]
            j -= 1


def error_rates(
    references: Sequence[str], hypotheses: Sequence[str], normalize: Callable[[str], str] | None = None
) -> ErrorRates:
    """Corpus WER and CER of `hypotheses` against `references` (paired by position); with `normalize`
    (espzoo.decode.scores.text_normalizer), of both sides normalized alike."""
    if len(references) != len(hypotheses):
        raise EvaluateError(
            f"got {len(references)} references but {len(hypotheses)} hypotheses; "
            "pass one hypothesis per reference."
        )
    if normalize is not None:
        references = [normalize(ref) for ref in references]
        hypotheses = [normalize(hyp) for hyp in hypotheses]
    pairs = [
        (align(words(ref), words(hyp)), align(chars(ref), chars(hyp)))
        for ref, hyp in zip(references, hypotheses, strict=True)
    ]
    wer = sum((w for w, _ in pairs), Score())
    cer = sum((c for _, c in pairs), Score())
    return ErrorRates(wer=wer, cer=cer, per_utterance=pairs)


def _is_data_set(path: Path) -> bool:
    from espzoo.data.hfdata import is_hf_source

    return path.is_dir() or path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json") or is_hf_source(path)
