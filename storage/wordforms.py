"""Word forms for search: folded words, their Snowball stems and prefixes, and what a query word matches.

One vocabulary serves both indexes: the blind index of sealed transcripts (each term HMAC'd,
``storage.sealed``) and the term table of typed message texts (``storage.message_terms``). Every
term carries a label, so a term of one kind can never equal a term of another:

* ``w:<word>``          the word, folded: lower case, accents removed ("Één" -> "een");
* ``s:<lang>:<stem>``   its Snowball stem in the text's language (nl, fr, de), taken of the folded
  word, so a query typed with or without accents stems alike ("inbraken" -> ``s:nl:inbraak``);
* ``p:<prefix>``        each prefix of ``MIN_PREFIX`` .. ``MAX_PREFIX`` characters (``inbr*``);
* ``v:<version>``       one per indexed text (``VERSION_TERM``): which scheme and stemmer made its
  terms; a text without it is indexed again (a new stemmer release may cut words differently).

A text is stemmed in its own language only; a query word is stemmed in all three (the searcher does
not say which language the message is in), and matches a text's word when it is that word, has the
same stem in the text's language, or (``word*``) begins it. The index narrows; ``word_matches``
decides, on the opened text (long words are indexed by their first ``MAX_TERM``/``MAX_PREFIX``
characters only). Pure functions; no database here.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from typing import Any

import snowballstemmer  # type: ignore[import-untyped]

#: The languages of the chain and their Snowball algorithms ("dutch": Snowball 3's Dutch stemmer).
STEMMERS = {"nl": "dutch", "fr": "french", "de": "german"}
#: A text whose language is not known (transcripts from before languages were recorded) is Dutch.
DEFAULT_LANGUAGE = "nl"
#: The shortest prefix searched for: shorter ones match too much of the archive to mean anything.
MIN_PREFIX = 3
#: Prefixes indexed per word: up to this many characters; longer query prefixes are looked up by
#: their first ``MAX_PREFIX`` characters and checked on the text.
MAX_PREFIX = 16
#: Words and stems are indexed by at most this many characters (a pasted URL stays one short term).
MAX_TERM = 64
#: Bumped when the terms of a text change meaning; with the stemmer's release, it marks indexed texts.
INDEX_SCHEME = 2
#: The stemmer's major release only: a patch release does not change its algorithms, and every
#: change of this term re-indexes the whole archive once at the next start.
VERSION_TERM = f"v:{INDEX_SCHEME}+snowball-{version('snowballstemmer').split('.')[0]}"

_WORD = re.compile(r"[^\W_]+")
_local = threading.local()  # a Snowball stemmer keeps state while it works: one per thread


@dataclass(frozen=True)
class QueryWord:
    """One word of a search: folded (``fold_words``); ``prefix``: it was written ``word*``."""

    text: str
    prefix: bool = False


def fold_words(text: str) -> list[str]:
    """The words of ``text`` as search compares them: lower case, accents folded ("Église" -> "eglise"),
    split at everything that is not a letter or a digit."""
    decomposed = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return _WORD.findall(folded)


def language_code(language: object) -> str:
    """A text's language as a code ("nl"): ``None`` (not recorded) is Dutch; an enum gives its value."""
    if language is None:
        return DEFAULT_LANGUAGE
    return str(getattr(language, "value", language))


@lru_cache(maxsize=65536)
def stem(word: str, language: str) -> str | None:
    """The Snowball stem of a folded word in ``language`` (nl, fr, de); ``None`` for another language."""
    algorithm = STEMMERS.get(language)
    if algorithm is None:
        return None
    stemmers: dict[str, Any] = _local.__dict__.setdefault("stemmers", {})
    stemmer = stemmers.get(algorithm)
    if stemmer is None:
        stemmer = stemmers[algorithm] = snowballstemmer.stemmer(algorithm)
    return str(stemmer.stemWord(word))


def word_terms(word: str, language: object) -> set[str]:
    """The index terms of one folded word of a text in ``language``: word, stem, prefixes."""
    code = language_code(language)
    terms = {"w:" + word[:MAX_TERM]}
    stemmed = stem(word, code)
    if stemmed:
        terms.add(f"s:{code}:{stemmed[:MAX_TERM]}")
    terms.update("p:" + word[:n] for n in range(MIN_PREFIX, min(len(word), MAX_PREFIX) + 1))
    return terms


def index_terms(text: str, language: object) -> set[str]:
    """The index terms of every distinct word of ``text`` (``VERSION_TERM`` is the indexer's to add)."""
    return {term for word in set(fold_words(text)) for term in word_terms(word, language)}


def query_terms(word: QueryWord) -> set[str]:
    """The terms any one of which lets a text match ``word``: its word and its stem in every language,
    or, for ``word*``, its prefix."""
    if word.prefix:
        return {"p:" + word.text[:MAX_PREFIX]}
    terms = {"w:" + word.text[:MAX_TERM]}
    for code in STEMMERS:
        stemmed = stem(word.text, code)
        if stemmed:
            terms.add(f"s:{code}:{stemmed[:MAX_TERM]}")
    return terms


def word_matches(query: QueryWord, word: str, language: object) -> bool:
    """Whether a folded word of a text in ``language`` is what ``query`` asks for."""
    if query.prefix:
        return word.startswith(query.text)
    if word == query.text:
        return True
    code = language_code(language)
    stemmed = stem(word, code)
    return stemmed is not None and stemmed == stem(query.text, code)


def text_matches(query: Iterable[QueryWord], text: str, language: object) -> bool:
    """Whether ``text`` holds every word of ``query`` (in some form)."""
    words = set(fold_words(text))
    return all(any(word_matches(q, w, language) for w in words) for q in query)
