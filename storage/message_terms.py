"""The search terms of typed message texts (migration 0011), kept in step with ``messages.text`` from Python.

Typed texts are found by the same word forms as transcripts (``storage.wordforms``: word, Snowball stem
in the BIN's language, prefixes), on SQLite and PostgreSQL alike: the terms are computed here and
stored in plain rows of ``messages_fts_terms`` (the text itself is plaintext in ``messages`` anyway).
Neither FTS5 nor PostgreSQL's ``dutch`` configuration would do: FTS5 stems no Dutch, and PostgreSQL 15
ships an older Dutch Snowball stemmer than PyPI's (``inbraak`` -> ``inbrak`` there, ``inbraak`` here)
and may lack ``unaccent``; one stemmer for both databases is the only way to the same results.

A database trigger cannot run a Python stemmer, so the ORM's writes of ``Message`` keep the terms in
step (mapper events, registered when this module is imported: ``storage.sealed`` imports it, and the
recording store, the desk and the archive import that). A message written behind the ORM's back has no
``VERSION_TERM`` row: search then reads its text directly, and ``reindex_messages`` (at the service's
start and in the migration) indexes it. A deleted message's rows go with it (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    event,
    exists,
    insert,
    inspect,
    select,
)

from storage.models import Bin, Message
from storage.wordforms import VERSION_TERM, index_terms

# Not a model of ``storage.models``: the index belongs to search, as 0004's ``messages_fts`` does
# (the name says so, and the schema test leaves ``messages_fts*`` out for that reason).
_metadata = MetaData()
message_terms = Table(
    "messages_fts_terms", _metadata,
    Column("message_id", Integer, primary_key=True),
    Column("term", String(80), primary_key=True),
)


def message_terms_of(text: str | None, language: object) -> list[str]:
    """The rows of a typed text: its terms and the version marker; none for a message without text."""
    return [] if text is None else sorted(index_terms(text, language) | {VERSION_TERM})


def index_message(connection: Connection, message_id: int, text: str | None, language: object) -> None:
    """(Re)write one message's terms, in the caller's transaction."""
    connection.execute(delete(message_terms).where(message_terms.c.message_id == message_id))
    rows = [{"message_id": message_id, "term": term} for term in message_terms_of(text, language)]
    if rows:
        connection.execute(insert(message_terms), rows)


def indexed(message_id: Any) -> Any:
    """A condition: the message's terms are there and current (its ``VERSION_TERM`` row)."""
    return exists().where(message_terms.c.message_id == message_id, message_terms.c.term == VERSION_TERM)


def reindex_messages(connection: Connection) -> int:
    """Index every typed text whose terms are missing or from another scheme or stemmer; how many."""
    rows = connection.execute(
        select(Message.id, Message.text, Bin.language).join(Bin, Bin.id == Message.bin_id)
        .where(Message.text.is_not(None), ~indexed(Message.id)).order_by(Message.id)).all()
    for message_id, text, language in rows:
        index_message(connection, message_id, text, language)
    return len(rows)


def _language_of_bin(connection: Connection, bin_id: int | None) -> object:
    return connection.scalar(select(Bin.language).where(Bin.id == bin_id)) if bin_id is not None else None


@event.listens_for(Message, "after_insert")
def _message_inserted(_mapper: Any, connection: Connection, message: Message) -> None:
    if message.text is not None:
        index_message(connection, message.id, message.text, _language_of_bin(connection, message.bin_id))


@event.listens_for(Message, "after_update")
def _message_updated(_mapper: Any, connection: Connection, message: Message) -> None:
    state = inspect(message)
    if state.attrs.text.history.has_changes() or state.attrs.bin_id.history.has_changes():
        index_message(connection, message.id, message.text, _language_of_bin(connection, message.bin_id))


@event.listens_for(Bin, "after_update")
def _bin_updated(_mapper: Any, connection: Connection, bin_: Bin) -> None:
    # A BIN's language is its messages' language: their stems follow it.
    if inspect(bin_).attrs.language.history.has_changes():
        for message_id, text in connection.execute(
                select(Message.id, Message.text).where(Message.bin_id == bin_.id, Message.text.is_not(None))):
            index_message(connection, message_id, text, bin_.language)
