"""Decoding with ESPnet's Speech2Text, word and character error rates, transcription.

    from espzoo.evaluate import error_rates, evaluate, transcribe

    error_rates(["the cat sat"], ["the cat sat down"]).wer.rate   # 1 insertion / 3 words = 0.333...
    report = evaluate("exp/bn_ft", "data/test")                   # an experiment dir, a pulled repo or a repo id
    print(report.wer.rate, report.cer.rate, report.utterances)
    transcribe("exp/bn_ft", ["a.wav", "b.flac"])                  # one string per file

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
from collections.abc import Sequence
from dataclasses import dataclass, field

SPACE = "<space>"


# ---------------------------------------------------------------------------------------------------------
# Error rates


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
    n, m = len(reference), len(hypothesis)
    # cost[i][j]: edits to turn reference[:i] into hypothesis[:j]
    cost = [list(range(m + 1))]
    for i in range(1, n + 1):
        row = [i] + [0] * m
        prev = cost[i - 1]
        ref_token = reference[i - 1]
        for j in range(1, m + 1):
            diagonal = prev[j - 1] + (ref_token != hypothesis[j - 1])
            row[j] = min(diagonal, prev[j] + 1, row[j - 1] + 1)
        cost.append(row)

    substitutions = deletions = insertions = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            substitutions += reference[i - 1] != hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            deletions += 1
            i -= 1
        else:
            insertions += 1
            j -= 1
    return Score(substitutions, deletions, insertions, n)


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Corpus WER and CER of `hypotheses` against `references` (paired by position)."""
    if len(references) != len(hypotheses):
        raise ValueError(
            f"got {len(references)} references but {len(hypotheses)} hypotheses; "
            "pass one hypothesis per reference."
        )
    pairs = [
        (align(words(ref), words(hyp)), align(chars(ref), chars(hyp)))
        for ref, hyp in zip(references, hypotheses, strict=True)
    ]
    wer = sum((w for w, _ in pairs), Score())
    cer = sum((c for _, c in pairs), Score())
    return ErrorRates(wer=wer, cer=cer, per_utterance=pairs)
