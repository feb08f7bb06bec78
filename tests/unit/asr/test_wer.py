"""Word error rate: a pure function, checked against hand-counted edits."""

from __future__ import annotations

import pytest

from ivr.asr.wer import corpus_word_error_rate, normalise_words, word_error_rate, word_errors


def test_identical_texts_have_no_errors_whatever_the_case_and_punctuation() -> None:
    assert word_error_rate("Sluit uw ramen en deuren.", "sluit uw ramen, en deuren") == 0.0


def test_one_substitution_one_deletion_one_insertion_are_three_errors() -> None:
    ref = "er stond een vrouw op een ladder"            # 7 words
    hyp = "er stond de vrouw op ladder nu"               # een->de, "een" deleted, "nu" inserted
    assert word_errors(normalise_words(ref), normalise_words(hyp)) == 3
    assert word_error_rate(ref, hyp) == pytest.approx(3 / 7)


def test_an_empty_hypothesis_deletes_every_word_and_insertions_can_exceed_one() -> None:
    assert word_error_rate("bel honderd één", "") == 1.0
    assert word_error_rate("ja", "nee nee nee") == 3.0


def test_accents_are_kept_because_een_and_één_are_different_words() -> None:
    assert normalise_words("Bel honderd ÉÉN!") == ["bel", "honderd", "één"]
    assert word_error_rate("honderd één", "honderd een") == 0.5


def test_corpus_wer_weights_by_reference_words_not_by_sentence() -> None:
    pairs = [("a b c d", "a b c d"), ("e f", "x f")]     # 1 error over 6 words, not mean(0, 0.5)
    assert corpus_word_error_rate(pairs) == pytest.approx(1 / 6)


def test_a_reference_without_words_is_refused() -> None:
    with pytest.raises(ValueError, match="undefined"):
        word_error_rate(" ... ", "iets")
