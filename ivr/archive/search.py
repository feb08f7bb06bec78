"""Finding past police messages: full-text search and listing by BIN, zone, time, urgency, status.

Rules: search reads the full-text index of migration 0004 (SQLite FTS5 / PostgreSQL text search)
over every transcript and every typed message text; all given words must appear (AND), each
quoted so no word is taken as an operator. These functions run inside the caller's transaction;
auditing a search is the caller's job (``ivr.archive.store.Archive.search``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.orm import Session

from storage.models import Bin, Message, PoliceZone, as_utc
from ivr.domain.vocabulary import MessageStatus, Urgency


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


def hits(s: Session, wanted: Sequence[str]) -> dict[int, str]:
    """Message id -> the first snippet where every word of ``wanted`` was found."""
    if s.get_bind().dialect.name == "sqlite":
        found = _sqlite_hits(s, fts5_query(wanted))
    else:
        found = _postgres_hits(s, " ".join(wanted))
    snippets: dict[int, str] = {}
    for message_id, snippet in found:
        snippets.setdefault(message_id, snippet)
    return snippets


def _sqlite_hits(s: Session, query: str) -> list[tuple[int, str]]:
    rows = s.execute(text(
        "SELECT r.message_id, snippet(transcripts_fts, 0, '[', ']', '…', 12) "
        "FROM transcripts_fts JOIN transcripts t ON t.id = transcripts_fts.rowid "
        "JOIN recordings r ON r.id = t.recording_id WHERE transcripts_fts MATCH :q "
        "UNION ALL "
        "SELECT m.id, snippet(messages_fts, 0, '[', ']', '…', 12) "
        "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH :q"),
        {"q": query})
    return [(int(mid), str(snip)) for mid, snip in rows]


def _postgres_hits(s: Session, query: str) -> list[tuple[int, str]]:
    # The to_tsvector expressions are those of the GIN indexes (migration 0004), character for character.
    headline = "'StartSel=[, StopSel=], MaxWords=24, MinWords=8, MaxFragments=1, FragmentDelimiter=…'"
    rows = s.execute(text(
        "SELECT r.message_id, ts_headline('simple', t.text, plainto_tsquery('simple', :q), "
        f"{headline}) FROM transcripts t JOIN recordings r ON r.id = t.recording_id "
        "WHERE to_tsvector('simple'::regconfig, t.text) @@ plainto_tsquery('simple'::regconfig, :q) "
        "UNION ALL "
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
