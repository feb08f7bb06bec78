"""Searching the audit log (``binfoon audit search``, the web's audit view): reading only, the chain
is ``storage.audit``'s. ``storage.audit`` hands these names on (``audit.search``), as its callers use them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, cast, func, literal, or_, select
from sqlalchemy.orm import Session

from storage.models import AuditEntry, as_utc

#: The most entries one search returns (a page; ``before_id`` reads on).
SEARCH_MAX = 1000


@dataclass(frozen=True)
class AuditQuery:
    """Which entries to find: each given field must match (``None``: any).

    ``actor``, ``action`` and ``subject`` match exactly, or as a prefix when they end with ``*``
    (``person.*``), case heeded on every database; ``text`` is found, case-insensitively, in the
    actor, action, subject or details (accented words too, though details store them escaped);
    ``since`` (inclusive) and ``until`` (exclusive) bound the time; ``before_id`` pages back from an
    entry (newest first)."""

    actor: str | None = None
    action: str | None = None
    subject: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    text: str | None = None
    before_id: int | None = None
    limit: int = 100

    def filters(self) -> dict[str, Any]:
        """The filters given, as plain values (what an ``audit.searched`` row records)."""
        out: dict[str, Any] = {}
        for name in ("actor", "action", "subject", "text"):
            value = getattr(self, name)
            if value:
                out[name] = value
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = as_utc(value).isoformat()
        if self.before_id is not None:
            out["before_id"] = self.before_id
        return out


def _matches(column: Any, wanted: str) -> Any:
    if wanted.endswith("*"):
        # Not LIKE: it ignores case on SQLite and heeds it on PostgreSQL. A prefix heeds case on both,
        # as the exact match does.
        prefix = wanted[:-1]
        return func.substr(column, 1, len(prefix)) == prefix
    return column == wanted


#: The escape character of the text search's LIKE patterns (a backslash would clash with JSON's escapes).
_LIKE_ESCAPE = "/"


def _contains(column: Any, needle: str) -> Any:
    """``column`` holds ``needle``, case folded by the database on both sides (``lower()``: SQLite folds
    ASCII letters only, PostgreSQL every letter), with ``%`` and ``_`` taken literally."""
    escaped = needle.replace(_LIKE_ESCAPE, 2 * _LIKE_ESCAPE).replace("%", _LIKE_ESCAPE + "%") \
        .replace("_", _LIKE_ESCAPE + "_")
    return func.lower(column).like(func.lower(literal(f"%{escaped}%", String)), escape=_LIKE_ESCAPE)


def _text_matches(text_wanted: str) -> Any:
    """``text_wanted`` in the actor, action, subject or details of an entry.

    The needle is tried as typed, in lower and in upper case (SQLite's ``lower()`` leaves "É" as it
    is: "ÉMILE" folds to "Émile" there, to "émile" on PostgreSQL, so every case of an accented word
    is found on both); in the details also as their stored JSON writes it ("è" is ``\u00e8``)."""
    forms = list(dict.fromkeys((text_wanted, text_wanted.lower(), text_wanted.upper())))
    in_json = list(dict.fromkeys(forms + [json.dumps(form)[1:-1] for form in forms]))
    details = cast(AuditEntry.details, String)
    return or_(*(_contains(column, form) for column in (AuditEntry.actor, AuditEntry.action, AuditEntry.subject)
                 for form in forms), *(_contains(details, form) for form in in_json))


def search(session: Session, query: AuditQuery) -> list[AuditEntry]:
    """The entries ``query`` matches, newest first, at most ``query.limit`` (capped at ``SEARCH_MAX``).

    Reading only: the caller audits the search (``audit.searched``) in its own transaction."""
    if query.limit < 1:
        raise ValueError("a search returns at least 1 entry")
    statement = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(min(query.limit, SEARCH_MAX))
    if query.actor:
        statement = statement.where(_matches(AuditEntry.actor, query.actor))
    if query.action:
        statement = statement.where(_matches(AuditEntry.action, query.action))
    if query.subject:
        statement = statement.where(_matches(AuditEntry.subject, query.subject))
    if query.since is not None:
        statement = statement.where(AuditEntry.at >= as_utc(query.since))
    if query.until is not None:
        statement = statement.where(AuditEntry.at < as_utc(query.until))
    if query.before_id is not None:
        statement = statement.where(AuditEntry.id < query.before_id)
    if query.text:
        statement = statement.where(_text_matches(query.text))
    return list(session.scalars(statement))


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    """One entry as plain values (``--json``)."""
    return {"id": entry.id, "at": as_utc(entry.at).isoformat(), "actor": entry.actor, "action": entry.action,
            "subject": entry.subject, "details": entry.details, "hash": entry.hash}
