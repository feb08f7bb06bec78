"""Word error rate: (substitutions + deletions + insertions) / reference words. Pure functions.

Texts are compared as words after ``normalise_words``: lower case, punctuation removed, accents
kept ("één" and "een" are different words in Dutch writing).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[\w']+", re.UNICODE)


def normalise_words(text: str) -> list[str]:
    """The words of ``text`` in lower case, without punctuation (apostrophes inside words stay)."""
    text = unicodedata.normalize("NFC", text).lower()
    return [w.strip("'") for w in _WORD.findall(text) if w.strip("'")]


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """The word-level Levenshtein distance (substitutions + deletions + insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_word in enumerate(hypothesis, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion
                current[j - 1] + 1,  # insertion
                previous[j - 1] + (ref_word != hyp_word),  # substitution or match
            )
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of one hypothesis against one reference text; the reference must have words."""
    return corpus_word_error_rate([(reference, hypothesis)])


def corpus_word_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """WER over several (reference, hypothesis) pairs: total errors / total reference words."""
    errors = words = 0
    for reference, hypothesis in pairs:
        ref = normalise_words(reference)
        errors += word_errors(ref, normalise_words(hypothesis))
        words += len(ref)
    if words == 0:
        raise ValueError("the reference has no words: the word error rate is undefined")
    return errors / words
