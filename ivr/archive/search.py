"""Finding past police messages: search and listing by BIN, zone, time, urgency, status.

The query language (``parse_query``, also in ``binfoon archive search --help`` and the README):

* words separated by blanks, all required (AND); case and accents do not matter ("één" = "een");
* a word also finds its other forms: "inbraak" finds "inbraken", "woning" finds "woningen",
  "cambriolage" finds "cambriolages" (Snowball stems; the message's language, nl/fr/de, is its BIN's,
  a transcript's the one it was transcribed in; the query word is stemmed in all three);
* ``word*`` finds words beginning with ``word`` (at least ``MIN_PREFIX`` letters: ``inbr*``), never
  a piece from the middle of a word;
* nothing else is an operator: quotes, ``OR``, ``NOT``, ``-``, ``NEAR(`` and ``:`` are words or
  separators like any other punctuation (no OR, no phrases, no negation).

Transcripts are sealed at rest (``storage.sealed``) and found through their blind index (HMAC tokens
of their words, stems and prefixes: no word is compared in plaintext in the database); typed message
texts through the same terms in plain rows (``storage.message_terms``), so SQLite and PostgreSQL find
the same messages. The index narrows; each candidate's text is then checked word by word
(``storage.wordforms.word_matches``) and its snippet made from it. Rows not indexed the current way
(transcripts stored before sealing or before word forms, until the service indexes them at start) are
read and checked directly. These functions run inside the caller's transaction; auditing a search is
the caller's job (``ivr.archive.store.Archive.search``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Engine, and_, exists, or_, select, text
from sqlalchemy.orm import Session

from ivr.archive.access import ArchiveError
from ivr.domain.vocabulary import MessageStatus, Urgency
from storage.db import session_scope
from storage.message_terms import indexed as message_indexed
from storage.message_terms import message_terms, reindex_messages
from storage.models import Bin, Message, PoliceZone, Recording, Transcript, TranscriptTerm, as_utc
from storage.recordings import RecordingStore
from storage.sealed import (
    TEXT_PREFIX,
    SealError,
    TranscriptContent,
    index_transcript,
    is_sealed_text,
    open_transcript,
    seal_transcript,
    terms_tokens,
    version_token,
)
from storage.wordforms import MIN_PREFIX, QueryWord, fold_words, query_terms, text_matches, word_matches

log = logging.getLogger(__name__)

#: Words shown in a snippet.
SNIPPET_WORDS = 12


class QueryError(ArchiveError):
    """A search that cannot be run as written (the message says why and what to write instead)."""


@dataclass(frozen=True)
class Query:
    """A parsed search: every word required, each a folded word or a prefix (``word*``)."""

    words: tuple[QueryWord, ...]


@dataclass(frozen=True)
class ArchiveEntry:
    """One message as the archive shows it (``snippet``: where the words were found, for a search)."""

    message_id: int
    bin_number: int
    bin_name: str
    zone_code: str
    created_at: dt.datetime
    urgency: Urgency
    status: MessageStatus
    snippet: str | None = None


def parse_query(words: Sequence[str]) -> Query:
    """The query written as ``words`` (each may hold several, split at blanks): each piece folded into
    its words (punctuation separates); a piece ending in ``*`` makes its last word a prefix.
    ``QueryError`` for a prefix shorter than ``MIN_PREFIX`` or a query without any word."""
    found: list[QueryWord] = []
    for raw in words:
        for piece in raw.split():
            folded = fold_words(piece)
            if not folded:
                continue
            found += [QueryWord(w) for w in folded[:-1]]
            prefix = piece.endswith("*")
            if prefix and len(folded[-1]) < MIN_PREFIX:
                raise QueryError(f"{piece}: a prefix search needs at least {MIN_PREFIX} letters before "
                                 f"the * (e.g. inbr*); shorter ones would match almost everything")
            found.append(QueryWord(folded[-1], prefix))
    if not found:
        raise QueryError("give at least one word to search for")
    return Query(tuple(dict.fromkeys(found)))


def search_words(words: Sequence[str]) -> list[str]:
    """The words worth searching for: split on blanks, kept only if they hold a letter or digit;
    ``QueryError`` if they do not make a query (``parse_query``). Empty if there is no word at all."""
    kept = [w for raw in words for w in raw.split() if any(ch.isalnum() for ch in w)]
    if kept:
        parse_query(kept)
    return kept


def hits(s: Session, wanted: Sequence[str] | Query, key: Callable[[], bytes]) -> dict[int, str]:
    """Message id -> the first snippet where every word of ``wanted`` was found (``key``: the
    recordings' key, which seals transcripts and keys their index)."""
    query = wanted if isinstance(wanted, Query) else parse_query(wanted)
    snippets: dict[int, str] = {}
    for message_id, snippet_text in transcript_hits(s, query, key) + _typed_hits(s, query):
        snippets.setdefault(message_id, snippet_text)
    return snippets


def transcript_hits(s: Session, wanted: Sequence[str] | Query,
                    key: Callable[[], bytes]) -> list[tuple[int, str]]:
    """(message id, snippet) of every transcript holding every word of ``wanted``: those indexed the
    current way by their tokens (for each word one of its terms' tokens), the others (plaintext, or
    indexed before word forms) by reading them; every candidate is checked on its opened text."""
    query = wanted if isinstance(wanted, Query) else parse_query(wanted)
    secret = key()
    every_word = and_(*(Transcript.id.in_(
        select(TranscriptTerm.transcript_id)
        .where(TranscriptTerm.token.in_(sorted(terms_tokens(secret, query_terms(w)))))) for w in query.words))
    current = exists().where(TranscriptTerm.transcript_id == Transcript.id,
                             TranscriptTerm.token == version_token(secret))
    found: list[tuple[int, str]] = []
    for message_id, recording_id, stored, words, language in s.execute(
            select(Recording.message_id, Transcript.recording_id, Transcript.text, Transcript.words,
                   Transcript.language)
            .join(Recording, Recording.id == Transcript.recording_id)
            .where(or_(and_(every_word, current), ~current, Transcript.text.not_like(f"{TEXT_PREFIX}%")))
            .order_by(Transcript.id)):
        try:
            opened = open_transcript(key, recording_id, stored, words)
        except SealError as exc:  # altered, or swapped from another row: not shown, said
            log.error("message %d: its transcript does not open: %s", message_id, exc)
            continue
        if text_matches(query.words, opened.text, language):
            found.append((int(message_id), snippet(opened.text, query, language)))
    return found


def snippet(text: str, query: Query, language: object = None, width: int = SNIPPET_WORDS) -> str:
    """Up to ``width`` words of ``text`` around the first word found, each found word in [brackets]
    (found as itself, by its stem or by a prefix; punctuation around it stays outside)."""
    words = text.split()

    def mark(word: str) -> str:
        if not any(word_matches(q, w, language) for w in fold_words(word) for q in query.words):
            return word
        # The letters and digits inside the word's punctuation ("℡" has none, only once folded: all of it).
        inner = [i for i, ch in enumerate(word) if ch.isalnum()] or [0, len(word) - 1]
        return f"{word[:inner[0]]}[{word[inner[0]:inner[-1] + 1]}]{word[inner[-1] + 1:]}"

    marked = [mark(w) for w in words]
    first = next((i for i, (m, w) in enumerate(zip(marked, words)) if m != w), 0)
    start = max(0, min(first - width // 3, len(words) - width))
    shown = " ".join(marked[start:start + width])
    return ("…" if start > 0 else "") + shown + ("…" if start + width < len(words) else "")


def seal_plain_transcripts(engine: Engine, store: RecordingStore, *, reindex: bool = True) -> int:
    """Seal every transcript still stored in plaintext (from before sealing existed) and index its
    words; how many. Run by the service at start; one transaction per row, each row checked again
    in it (another process may have sealed it meanwhile). On SQLite the freed plaintext is
    overwritten (``secure_delete``) and the write-ahead log emptied afterwards; on PostgreSQL the
    table is rewritten (``VACUUM FULL``) so no dead row version keeps the text. Sealed transcripts
    without current tokens (a downgrade below 0009 dropped them, or they were indexed before word
    forms or by another stemmer release) are indexed again, and so are typed texts without terms,
    unless ``reindex`` is false (the service does that in the background: ``reindex_search``)."""
    key = store.key()  # an unusable key file stops the start here, before anything is changed
    if reindex:
        reindex_search(engine, store)
    with session_scope(engine) as s:
        ids = list(s.scalars(select(Transcript.id).where(Transcript.text.not_like(f"{TEXT_PREFIX}%"))
                             .order_by(Transcript.id)))
    sealed = 0
    for transcript_id in ids:
        with session_scope(engine) as s:
            sqlite = s.get_bind().dialect.name == "sqlite"
            if sqlite:
                s.execute(text("PRAGMA secure_delete=ON"))
            row = s.get(Transcript, transcript_id)
            if row is None or is_sealed_text(row.text):
                continue
            content = TranscriptContent(row.text or "", list(row.words or []))
            row.text = seal_transcript(key, row.recording_id, content)
            row.words = []
            index_transcript(s, key, transcript_id, content.text, row.language)
            sealed += 1
    if sealed:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":  # old pages with the plaintext leave the log
                connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            else:  # the old row versions (dead tuples) are rewritten away, not left for autovacuum
                connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                    text("VACUUM FULL transcripts"))
        log.info("sealed %d plaintext transcript(s) at rest", sealed)
    return sealed


def reindex_search(engine: Engine, store: RecordingStore, stop: threading.Event | None = None) -> int:
    """Index again every sealed transcript without the current version token (no tokens, tokens of
    words only, or another stemmer's), and every typed text without current terms; how many rows.
    One transaction per transcript, so a long first pass keeps what it did if it is stopped; ``stop``
    set ends it after the current row (the service runs it in the background: search reads rows
    without current terms directly meanwhile)."""
    key = store.key()
    with session_scope(engine) as s:
        current = exists().where(TranscriptTerm.transcript_id == Transcript.id,
                                 TranscriptTerm.token == version_token(key))
        stale = list(s.scalars(select(Transcript.id).where(Transcript.text.like(f"{TEXT_PREFIX}%"), ~current)
                               .order_by(Transcript.id)))
    done = 0
    for transcript_id in stale:
        if stop is not None and stop.is_set():
            return done
        with session_scope(engine) as s:
            row = s.get(Transcript, transcript_id)
            if row is None:  # purged meanwhile
                continue
            try:
                content = open_transcript(store.key, row.recording_id, row.text, row.words)
            except SealError as exc:  # another installation's key, or altered: left as it is, said
                log.error("transcript %d not indexed: %s", transcript_id, exc)
                continue
            index_transcript(s, key, transcript_id, content.text, row.language)
            done += 1
    with session_scope(engine) as s:
        done += reindex_messages(s.connection())
    if done:
        log.info("search index: %d transcript(s) and typed text(s) indexed with word forms", done)
    return done


def _typed_hits(s: Session, query: Query) -> list[tuple[int, str]]:
    """(message id, snippet) of every typed message text holding every word: by its terms
    (``storage.message_terms``), or read directly while it has none; checked on the text itself."""
    every_word = and_(*(Message.id.in_(select(message_terms.c.message_id)
                                       .where(message_terms.c.term.in_(sorted(query_terms(w)))))
                        for w in query.words))
    current = message_indexed(Message.id)
    found: list[tuple[int, str]] = []
    for message_id, typed, language in s.execute(
            select(Message.id, Message.text, Bin.language).join(Bin, Bin.id == Message.bin_id)
            .where(Message.text.is_not(None), or_(and_(every_word, current), ~current))
            .order_by(Message.id)):
        if text_matches(query.words, typed, language):
            found.append((int(message_id), snippet(typed, query, language)))
    return found


def filters(bin: int | None = None, zone: str | None = None, since: dt.datetime | None = None,
            until: dt.datetime | None = None, urgency: Urgency | None = None,
            status: MessageStatus | None = None) -> list[ColumnElement[bool]]:
    """The conditions of a listing: BIN number, zone code, creation time (``since`` <= t < ``until``),
    urgency, status (``None``: any)."""
    where: list[ColumnElement[bool]] = []
    if bin is not None:
        where.append(Bin.number == bin)
    if zone is not None:
        where.append(PoliceZone.code == zone)
    if since is not None:
        where.append(Message.created_at >= as_utc(since))
    if until is not None:
        where.append(Message.created_at < as_utc(until))
    if urgency is not None:
        where.append(Message.urgency == urgency)
    if status is not None:
        where.append(Message.status == status)
    return where


def entries(s: Session, where: Sequence[ColumnElement[bool]], limit: int | None) -> list[ArchiveEntry]:
    """The messages matching ``where``, newest first, at most ``limit``."""
    query = (select(Message.id, Bin.number, Bin.name, PoliceZone.code, Message.created_at,
                    Message.urgency, Message.status)
             .join(Bin, Bin.id == Message.bin_id).join(PoliceZone, PoliceZone.id == Bin.zone_id)
             .where(*where)
             .order_by(Message.created_at.desc(), Message.id.desc()))
    if limit is not None:
        query = query.limit(limit)
    return [ArchiveEntry(mid, number, name, code, created, urgency, status)
            for mid, number, name, code, created, urgency, status in s.execute(query)]
