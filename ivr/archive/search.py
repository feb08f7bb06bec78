"""Finding past police messages: search and listing by BIN, zone, time, urgency, status.

Rules: all given words must appear (AND). Transcripts are sealed at rest (``storage.sealed``) and
found through their blind index (migration 0009: HMAC tokens of their normalised words; a query
word becomes its token, so no word is ever compared in plaintext in the database); a snippet is
made here from the opened text of the matched rows only. Transcripts stored before sealing existed
are read directly until the service seals them at start (``seal_plain_transcripts``). Typed message
texts keep the full-text index of migration 0004 (SQLite FTS5 / PostgreSQL text search), each word
quoted so none is taken as an operator. These functions run inside the caller's transaction;
auditing a search is the caller's job (``ivr.archive.store.Archive.search``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Engine, func, select, text
from sqlalchemy.orm import Session

from storage.db import session_scope
from storage.models import Bin, Message, PoliceZone, Recording, Transcript, TranscriptTerm, as_utc
from storage.recordings import RecordingStore
from storage.sealed import (
    TEXT_PREFIX,
    SealError,
    TranscriptContent,
    is_sealed_text,
    index_transcript,
    open_transcript,
    search_terms,
    seal_transcript,
    term_token,
)
from ivr.domain.vocabulary import MessageStatus, Urgency

log = logging.getLogger(__name__)

#: Words shown in a transcript's snippet (about what the typed texts' index shows).
SNIPPET_WORDS = 12


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


def fts5_query(words: Sequence[str]) -> str:
    """``words`` as an FTS5 query: each word a quoted string, all required (no operator injection)."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def search_words(words: Sequence[str]) -> list[str]:
    """The words worth searching for: split on blanks, kept only if they hold a letter or digit."""
    return [w for raw in words for w in raw.split() if any(ch.isalnum() for ch in w)]


def hits(s: Session, wanted: Sequence[str], key: Callable[[], bytes]) -> dict[int, str]:
    """Message id -> the first snippet where every word of ``wanted`` was found (``key``: the
    recordings' key, which seals transcripts and keys their index)."""
    snippets: dict[int, str] = {}
    for message_id, snippet in transcript_hits(s, wanted, key) + _typed_hits(s, wanted):
        snippets.setdefault(message_id, snippet)
    return snippets


def transcript_hits(s: Session, wanted: Sequence[str], key: Callable[[], bytes]) -> list[tuple[int, str]]:
    """(message id, snippet) of every transcript holding every word of ``wanted``: sealed ones by
    their tokens (all required), plaintext ones not sealed yet by reading them; the snippet is made
    from the opened text of the matched rows only."""
    terms = {t for word in wanted for t in search_terms(word)}
    if not terms:
        return []
    tokens = {term_token(key(), term) for term in terms}
    matched = (select(TranscriptTerm.transcript_id).where(TranscriptTerm.token.in_(tokens))
               .group_by(TranscriptTerm.transcript_id)
               .having(func.count(TranscriptTerm.token) == len(tokens)))
    found: list[tuple[int, str]] = []
    for message_id, recording_id, stored, words in s.execute(
            select(Recording.message_id, Transcript.recording_id, Transcript.text, Transcript.words)
            .join(Recording, Recording.id == Transcript.recording_id)
            .where(Transcript.id.in_(matched), Transcript.text.like(f"{TEXT_PREFIX}%"))
            .order_by(Transcript.id)):
        try:
            opened = open_transcript(key, recording_id, stored, words)
        except SealError as exc:  # altered, or swapped from another row: not shown, said
            log.error("message %d: its transcript does not open: %s", message_id, exc)
            continue
        found.append((int(message_id), snippet(opened.text, terms)))
    for message_id, stored in s.execute(  # stored before sealing, not sealed yet (the service seals at start)
            select(Recording.message_id, Transcript.text)
            .join(Recording, Recording.id == Transcript.recording_id)
            .where(Transcript.text.not_like(f"{TEXT_PREFIX}%")).order_by(Transcript.id)):
        if terms <= set(search_terms(stored or "")):
            found.append((int(message_id), snippet(stored, terms)))
    return found


def snippet(text: str, terms: set[str], width: int = SNIPPET_WORDS) -> str:
    """Up to ``width`` words of ``text`` around the first word found, each found word in [brackets]."""
    words = text.split()
    marked = [f"[{w}]" if terms & set(search_terms(w)) else w for w in words]
    first = next((i for i, w in enumerate(marked) if w.startswith("[")), 0)
    start = max(0, min(first - width // 3, len(words) - width))
    shown = " ".join(marked[start:start + width])
    return ("…" if start > 0 else "") + shown + ("…" if start + width < len(words) else "")


def seal_plain_transcripts(engine: Engine, store: RecordingStore) -> int:
    """Seal every transcript still stored in plaintext (from before sealing existed) and index its
    words; how many. Run by the service at start; one transaction per row, each row checked again
    in it (another process may have sealed it meanwhile). On SQLite the freed plaintext is
    overwritten (``secure_delete``) and the write-ahead log emptied afterwards; on PostgreSQL the
    table is rewritten (``VACUUM FULL``) so no dead row version keeps the text. Sealed transcripts
    without tokens (a downgrade below 0009 dropped them) are indexed again."""
    key = store.key()  # an unusable key file stops the start here, before anything is changed
    _index_unindexed(engine, store)
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
            index_transcript(s, key, transcript_id, content.text)
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


def _index_unindexed(engine: Engine, store: RecordingStore) -> None:
    with session_scope(engine) as s:
        has_tokens = select(TranscriptTerm.token).where(TranscriptTerm.transcript_id == Transcript.id)
        unindexed = s.execute(
            select(Transcript.id, Transcript.recording_id, Transcript.text, Transcript.words)
            .where(Transcript.text.like(f"{TEXT_PREFIX}%"), ~has_tokens.exists())).all()
        for transcript_id, recording_id, stored, words in unindexed:
            try:
                content = open_transcript(store.key, recording_id, stored, words)
            except SealError as exc:  # another installation's key, or altered: left as it is, said
                log.error("transcript %d not indexed: %s", transcript_id, exc)
                continue
            index_transcript(s, store.key(), transcript_id, content.text)


def _typed_hits(s: Session, wanted: Sequence[str]) -> list[tuple[int, str]]:
    """(message id, snippet) of every typed message text holding every word (full-text index of 0004)."""
    if s.get_bind().dialect.name == "sqlite":
        return _sqlite_hits(s, fts5_query(wanted))
    return _postgres_hits(s, " ".join(wanted))


def _sqlite_hits(s: Session, query: str) -> list[tuple[int, str]]:
    rows = s.execute(text(
        "SELECT m.id, snippet(messages_fts, 0, '[', ']', '…', 12) "
        "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH :q"),
        {"q": query})
    return [(int(mid), str(snip)) for mid, snip in rows]


def _postgres_hits(s: Session, query: str) -> list[tuple[int, str]]:
    # The to_tsvector expression is that of the GIN index (migration 0004), character for character.
    headline = "'StartSel=[, StopSel=], MaxWords=24, MinWords=8, MaxFragments=1, FragmentDelimiter=…'"
    rows = s.execute(text(
        f"SELECT m.id, ts_headline('simple', m.text, plainto_tsquery('simple', :q), {headline}) "
        "FROM messages m "
        "WHERE to_tsvector('simple'::regconfig, coalesce(m.text, '')) "
        "@@ plainto_tsquery('simple'::regconfig, :q)"),
        {"q": query})
    return [(int(mid), str(snip)) for mid, snip in rows]


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
