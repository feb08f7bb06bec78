"""Archive search knows word forms (issue 15 item 6): stems, prefixes, folded accents, one query language.

A word finds the message that says it in another inflection ("inbraak" -> "inbraken"), in the
message's language (nl, fr, de); ``word*`` finds words that begin so and nothing shorter than three
letters is accepted; nothing in a query is an operator. Transcripts (blind index) and typed texts
(term table) follow the same rules on SQLite and PostgreSQL; a transcript indexed before word forms
is indexed again at the service's start.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text

from ivr.archive.search import (
    Query, QueryError, parse_query, reindex_search, seal_plain_transcripts, snippet,
)
from ivr.domain.vocabulary import Language
from storage.db import session_scope
from storage.message_terms import message_terms, reindex_messages
from storage.models import Bin, Message, Recording, Transcript, TranscriptTerm
from storage.sealed import (
    TranscriptContent,
    add_transcript,
    search_terms,
    term_token,
    text_tokens,
    version_token,
)
from storage.wordforms import VERSION_TERM, QueryWord, index_terms, query_terms, text_matches
from tests.unit.archive.test_archive import NOW, Lab, make_lab
from tests.world import OTHER_ZONE_BIN

DUTCH = "Er werd ingebroken in twee woningen, drie inbraken in één nacht."
FRENCH = "Deux cambriolages signalés près de l'Église."


def found(lab: Lab, *words: str) -> list[int]:
    return sorted(e.message_id for e in lab.archive.search(list(words), "t"))


def snippet_of(lab: Lab, *words: str) -> str:
    [entry] = lab.archive.search(list(words), "t")
    assert entry.snippet is not None
    return entry.snippet


def transcribed(lab: Lab, spoken: str, language: str | None, created_at: dt.datetime = NOW) -> int:
    """A message whose take has ``spoken`` as its (sealed) transcript, told ``language``."""
    message_id = lab.message(created_at)
    with session_scope(lab.engine) as s:
        recording_id = s.scalars(select(Recording.id).where(Recording.message_id == message_id)).one()
        add_transcript(s, lab.store.key(), recording_id, TranscriptContent(spoken), confidence=0.9,
                       model="whisper-base", created_at=created_at, engine="whisper", language=language)
    return message_id


def french_bin(lab: Lab) -> None:
    with session_scope(lab.engine) as s:
        s.scalars(select(Bin).where(Bin.number == OTHER_ZONE_BIN)).one().language = Language.FR


# -- the query language (pure) -----------------------------------------------------------------------


def test_a_query_is_words_and_prefixes_and_nothing_else() -> None:
    assert parse_query(["inbraak"]) == Query((QueryWord("inbraak"),))
    assert parse_query(["Één  ÉGLISE", "inbr*"]) == Query(
        (QueryWord("een"), QueryWord("eglise"), QueryWord("inbr", prefix=True)))
    # Quotes, OR, NOT, minus, NEAR( and colons are words or separators, never operators.
    assert parse_query(['"a" OR b']).words == (QueryWord("a"), QueryWord("or"), QueryWord("b"))
    assert parse_query(["-x", "NEAR(", "NOT"]).words == (QueryWord("x"), QueryWord("near"), QueryWord("not"))
    assert parse_query(["foo:*"]).words == (QueryWord("foo", prefix=True),)
    assert parse_query(["e-mail*"]).words == (QueryWord("e"), QueryWord("mail", prefix=True))
    assert parse_query(["in*braak"]).words == (QueryWord("in"), QueryWord("braak"))  # * inside: a blank
    assert parse_query(["fiets", "FIETS"]).words == (QueryWord("fiets"),)


@pytest.mark.parametrize("bad", ["in*", "x*", "é*", "inbraak ab*"])
def test_a_prefix_shorter_than_three_letters_is_refused_by_name(bad: str) -> None:
    with pytest.raises(QueryError, match=r"needs at least 3 letters before the \*"):
        parse_query([bad])


@pytest.mark.parametrize("empty", [[], [""], ["*", "--", "()"]])
def test_a_query_without_a_word_is_refused(empty: list[str]) -> None:
    with pytest.raises(QueryError, match="at least one word"):
        parse_query(empty)


def test_index_terms_are_labelled_words_stems_and_prefixes() -> None:
    terms = index_terms("drie inbraken", "nl")
    assert {"w:inbraken", "s:nl:inbraak", "p:inb", "p:inbraken"} <= terms
    assert all(re.fullmatch(r"(w|p):[a-z]+|s:nl:[a-z]+", t) for t in terms)
    assert "p:braken" not in terms and "p:in" not in terms  # prefixes start the word, 3 letters at least
    assert "s:fr:cambriolag" in index_terms("cambriolages", "fr")
    assert not any(t.startswith("s:nl:") for t in index_terms("cambriolages", "fr"))  # its language only
    # A query word carries its stem in every language: the searcher does not say which.
    assert {"w:inbraak", "s:nl:inbraak", "s:fr:inbraak", "s:de:inbraak"} == query_terms(QueryWord("inbraak"))
    assert query_terms(QueryWord("inbr", prefix=True)) == {"p:inbr"}
    assert VERSION_TERM.startswith("v:") and VERSION_TERM not in terms


def test_matching_follows_the_texts_language() -> None:
    inbraak = [QueryWord("inbraak")]
    assert text_matches(inbraak, DUTCH, "nl") and text_matches(inbraak, DUTCH, None)  # no language: Dutch
    assert text_matches([QueryWord("woning"), QueryWord("een")], DUTCH, "nl")
    assert text_matches([QueryWord("cambriolage"), QueryWord("eglise")], FRENCH, "fr")
    assert not text_matches([QueryWord("braak", prefix=True)], DUTCH, "nl")
    marked = snippet(DUTCH, parse_query(["inbraak", "woning"]), "nl")
    assert "[woningen]," in marked and "[inbraken]" in marked and "[ingebroken]" not in marked


# -- transcripts (blind index) -------------------------------------------------------------------------


def test_a_transcript_is_found_by_other_forms_of_its_words(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    dutch = transcribed(lab, DUTCH, "nl", NOW - dt.timedelta(hours=2))
    french = transcribed(lab, FRENCH, "fr", NOW - dt.timedelta(hours=1))
    german = transcribed(lab, "Zwei Einbrüche in der Kirchstraße", "de")

    assert found(lab, "inbraak") == [dutch] and found(lab, "woning") == [dutch]
    assert found(lab, "INBRAAK", "woning", "een") == [dutch]  # all required; case and accents ignored
    assert found(lab, "cambriolage") == [french] and found(lab, "eglise", "signale") == [french]
    assert found(lab, "einbruch") == [german] and found(lab, "kirchstrasse") == [german]
    assert found(lab, "inbraak", "cambriolage") == []
    assert "[inbraken]" in snippet_of(lab, "inbraak") and "[cambriolages]" in snippet_of(lab, "cambriolage")


def test_a_prefix_finds_words_that_begin_with_it_never_their_middle(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    dutch = transcribed(lab, DUTCH, "nl", NOW - dt.timedelta(hours=1))
    french = transcribed(lab, FRENCH, "fr")

    assert found(lab, "inbr*") == [dutch] and found(lab, "inbraken*") == [dutch]
    assert found(lab, "woningen*") == [dutch] and found(lab, "cambr*", "egl*") == [french]
    assert found(lab, "braak*") == [] and found(lab, "raken*") == [] and found(lab, "inbrakens*") == []
    assert found(lab, "inbraak*") == []  # a prefix is of the word as said, not of its stem
    assert "[inbraken]" in snippet_of(lab, "inbr*")
    with pytest.raises(QueryError, match="at least 3 letters"):
        lab.archive.search(["in*"], "t")


def test_a_transcript_indexed_before_word_forms_is_indexed_again_at_start(db_url: str,
                                                                         tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    old = transcribed(lab, DUTCH, None)
    key = lab.store.key()
    with session_scope(lab.engine) as s:  # its tokens as 0009 made them: one per folded word, unlabelled
        transcript_id = s.scalars(select(Transcript.id)).one()
        s.execute(delete(TranscriptTerm))
        s.add_all(TranscriptTerm(transcript_id=transcript_id, token=term_token(key, word))
                  for word in set(search_terms(DUTCH)))

    def tokens() -> set[str]:
        with session_scope(lab.engine) as s:
            return set(s.scalars(select(TranscriptTerm.token)))

    assert version_token(key) not in tokens()
    assert found(lab, "inbraak") == [old]  # read directly meanwhile, not missed
    # The service seals at start without re-indexing (that runs in the background, stoppable).
    assert seal_plain_transcripts(lab.engine, lab.store, reindex=False) == 0
    assert version_token(key) not in tokens()
    stop = threading.Event()
    stop.set()
    assert reindex_search(lab.engine, lab.store, stop) == 0 and version_token(key) not in tokens()
    assert reindex_search(lab.engine, lab.store, threading.Event()) >= 1
    assert tokens() == text_tokens(key, DUTCH, "nl") | {version_token(key)}
    assert found(lab, "inbraak") == [old] and found(lab, "inbr*") == [old] and found(lab, "fiets") == []
    assert seal_plain_transcripts(lab.engine, lab.store) == 0  # by hand (`archive seal`): nothing left


# -- typed message texts (term table) ---------------------------------------------------------------


def test_a_typed_text_is_found_by_word_forms_and_prefixes(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    french_bin(lab)
    dutch = lab.message(NOW - dt.timedelta(hours=1), typed=DUTCH)
    french = lab.message(NOW, typed=FRENCH, bin_number=OTHER_ZONE_BIN)

    assert found(lab, "inbraak") == [dutch] and found(lab, "woning", "een") == [dutch]
    assert found(lab, "cambriolage") == [french] and found(lab, "eglise") == [french]
    assert found(lab, "inbr*") == [dutch] and found(lab, "cambr*") == [french]
    assert found(lab, "braak*") == [] and found(lab, "inbraak", "cambriolage") == []
    assert "[inbraken]" in snippet_of(lab, "inbraak") and "[woningen]," in snippet_of(lab, "woning")
    with pytest.raises(QueryError, match="at least 3 letters"):
        lab.archive.search(["in*"], "t")


@pytest.mark.parametrize("query, hits", [
    (['"drie" OR nergens'], False),  # OR is a word like any other: required, and absent
    (["inbraak", "-woning"], True),  # no negation: "-woning" is the word woning
    (["NEAR(inbraak"], False),  # "near" is a word, and absent
    (["woning:*"], True),  # the colon separates; the * makes a prefix
    (["'; DROP TABLE messages; --"], False),
    (["inbraken\")--", "%_\\"], True),
    (["in*braak"], False),  # "in" and "braak": no word "braak" in the text
])
def test_no_query_is_an_operator_in_any_database(db_url: str, tmp_path: Path, query: list[str],
                                                 hits: bool) -> None:
    lab = make_lab(db_url, tmp_path)
    typed = lab.message(NOW - dt.timedelta(hours=1), typed=DUTCH)
    spoken = transcribed(lab, DUTCH, "nl")
    assert found(lab, *query) == ([typed, spoken] if hits else [])
    with session_scope(lab.engine) as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 2


def test_the_terms_follow_the_text_and_the_bins_language(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    mid = lab.message(NOW, typed="Twee inbraken", bin_number=OTHER_ZONE_BIN)

    def terms() -> set[str]:
        with session_scope(lab.engine) as s:
            return set(s.scalars(select(message_terms.c.term).where(message_terms.c.message_id == mid)))

    assert terms() == index_terms("Twee inbraken", "nl") | {VERSION_TERM}
    french_bin(lab)
    assert terms() == index_terms("Twee inbraken", "fr") | {VERSION_TERM}
    with session_scope(lab.engine) as s:
        s.get_one(Message, mid).text = "Deux cambriolages"
    assert found(lab, "cambriolage") == [mid] and found(lab, "inbraken") == []
    with session_scope(lab.engine) as s:
        s.get_one(Message, mid).text = None
    assert terms() == set() and found(lab, "cambriolage") == []


def test_a_text_written_behind_the_orms_back_is_read_then_indexed(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    mid = lab.message(NOW)
    with session_scope(lab.engine) as s:  # no Python ran: no terms
        s.execute(text("UPDATE messages SET text = :t WHERE id = :id"), {"t": DUTCH, "id": mid})
        assert s.scalar(select(func.count()).select_from(message_terms)) == 0
    assert found(lab, "inbraak") == [mid]
    with session_scope(lab.engine) as s:
        assert reindex_messages(s.connection()) == 1
        assert reindex_messages(s.connection()) == 0
        assert set(s.scalars(select(message_terms.c.term))) == index_terms(DUTCH, "nl") | {VERSION_TERM}
    assert found(lab, "inbraak") == [mid] and found(lab, "woning*") == [mid]
