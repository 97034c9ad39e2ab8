"""Error rates on hand-computed cases; decoding, evaluation and transcription with a real tiny ESPnet model."""

from __future__ import annotations

import math

import pytest
from espzoo.evaluate import Score, align, chars, error_rates, words

# ---------------------------------------------------------------------------------------------------------
# Metrics: every expected count below was worked out by hand.


def test_identical_is_zero() -> None:
    rates = error_rates(["the cat sat"], ["the cat sat"])
    assert rates.wer == Score(0, 0, 0, 3)
    assert rates.cer == Score(0, 0, 0, 11)  # 9 letters + 2 <space>
    assert rates.wer.rate == 0.0


def test_insertion_only() -> None:
    rates = error_rates(["the cat sat"], ["the cat sat down"])
    assert rates.wer == Score(0, 0, 1, 3)
    assert rates.wer.rate == pytest.approx(1 / 3)
    # characters: "<space>down" appended = 5 insertions over 11
    assert rates.cer == Score(0, 0, 5, 11)


def test_deletion_only() -> None:
    rates = error_rates(["a b c d"], ["a d"])
    assert rates.wer == Score(0, 2, 0, 4)
    assert rates.wer.rate == 0.5
    assert rates.cer == Score(0, 4, 0, 7)  # "b<space>c<space>" gone


def test_substitution_and_mixed() -> None:
    # kitten -> sitting: k->s, e->i, +g
    assert align(list("kitten"), list("sitting")) == Score(2, 0, 1, 6)
    rates = error_rates(["the quick brown fox"], ["a quick brown fox jumps"])
    assert rates.wer == Score(1, 0, 1, 4)
    assert rates.wer.rate == 0.5


def test_empty_hypothesis_is_all_deletions() -> None:
    rates = error_rates(["hello world"], [""])
    assert rates.wer == Score(0, 2, 0, 2)
    assert rates.wer.rate == 1.0
    assert rates.cer == Score(0, 11, 0, 11)


def test_empty_reference() -> None:
    rates = error_rates([""], ["noise"])
    assert rates.wer == Score(0, 0, 1, 0)
    assert math.isinf(rates.wer.rate)
    assert rates.wer.to_dict()["rate"] is None  # JSON has no infinity
    assert error_rates([""], [""]).wer.rate == 0.0


def test_corpus_rate_sums_counts_not_rates() -> None:
    # utterance rates 1/1 and 0/9 average to 0.5; the corpus rate is 1/10
    rates = error_rates(["a", "b c d e f g h i j"], ["x", "b c d e f g h i j"])
    assert rates.wer == Score(1, 0, 0, 10)
    assert rates.wer.rate == pytest.approx(0.1)
    assert [w for w, _ in rates.per_utterance] == [Score(1, 0, 0, 1), Score(0, 0, 0, 9)]


def test_unicode_and_accents() -> None:
    assert chars("niño") == ["n", "i", "ñ", "o"]
    # the same word with a combining tilde (n + U+0303) is the same word
    assert error_rates(["el niño"], ["el nin\u0303o"]).wer.rate == 0.0
    # an accent dropped is one substituted character and one substituted word
    rates = error_rates(["canción"], ["cancion"])
    assert rates.cer == Score(1, 0, 0, 7)
    assert rates.wer == Score(1, 0, 0, 1)
    assert error_rates(["日本語"], ["日本"]).cer == Score(0, 1, 0, 3)


def test_whitespace_is_normalized_and_spaces_count_in_cer() -> None:
    assert words("  a \t b\n") == ["a", "b"]
    assert chars(" a  b ") == ["a", "<space>", "b"]
    # a missing space between words: one deletion in CER, as ESPnet's char scoring counts it
    rates = error_rates(["ice cream"], ["icecream"])
    assert rates.cer == Score(0, 1, 0, 9)
    assert rates.wer == Score(1, 1, 0, 2)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        error_rates(["a", "b"], ["a"])
