"""Searching the audit log (issue 16 item 6): each filter narrows, prefixes end with '*', text is
found in details, times bound it, pages go back by id; searching never changes the chain."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from storage import audit
from storage.db import open_database, session_scope
from storage.models import AuditEntry


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    engine = open_database(db_url)
    with session_scope(engine) as s:
        audit.record(s, "cli:root", "zone.add", "zone:5415", name="Gent")
        audit.record(s, "web:person:7", "person.deactivated", "person:12")
        audit.record(s, "web:person:7", "person.role_added", "person:12", role="coordinator", bin=12)
        audit.record(s, "system", "security.alert", "line:police", kind="pin_line_limit")
        audit.record(s, "web:person:70", "person.edited", "person:120", name=["Jan", "Jan 100%_"])
    return engine


def _find(engine, **query: object) -> list[str]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        return [f"{e.actor} {e.action} {e.subject}" for e in audit.search(s, audit.AuditQuery(**query))]


def test_each_filter_narrows_and_newest_come_first(engine) -> None:  # type: ignore[no-untyped-def]
    assert _find(engine, actor="web:person:7") == ["web:person:7 person.role_added person:12",
                                                   "web:person:7 person.deactivated person:12"]
    assert _find(engine, action="person.*") == ["web:person:70 person.edited person:120",
                                                "web:person:7 person.role_added person:12",
                                                "web:person:7 person.deactivated person:12"]
    assert _find(engine, action="person") == []  # exact unless it ends with '*'
    assert _find(engine, subject="person:12", action="person.deactivated") == [
        "web:person:7 person.deactivated person:12"]
    assert _find(engine, text="PIN_LINE") == ["system security.alert line:police"]  # details, any case
    assert _find(engine, text="gent") == ["cli:root zone.add zone:5415"]
    assert _find(engine, text="100%_") == ["web:person:70 person.edited person:120"]  # no LIKE wildcards
    assert _find(engine, text="%") == ["web:person:70 person.edited person:120"]
    assert _find(engine, actor="web:person:7*", limit=1) == ["web:person:70 person.edited person:120"]


def test_times_bound_the_search_and_pages_go_back_by_id(engine) -> None:  # type: ignore[no-untyped-def]
    base = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    with session_scope(engine) as s:
        ids = sorted(e.id for e in s.query(AuditEntry))
        for i, entry_id in enumerate(ids):
            # Raw times for the test only (the chain is not checked here).
            s.execute(update(AuditEntry).where(AuditEntry.id == entry_id).values(at=base + dt.timedelta(days=i)))
    assert len(_find(engine, since=base + dt.timedelta(days=1), until=base + dt.timedelta(days=3))) == 2
    assert len(_find(engine, since=base + dt.timedelta(days=4))) == 1
    with session_scope(engine) as s:
        first = audit.search(s, audit.AuditQuery(limit=2))
        second = audit.search(s, audit.AuditQuery(limit=2, before_id=first[-1].id))
    assert [e.id for e in first + second] == sorted(ids, reverse=True)[:4]
    with session_scope(engine) as s, pytest.raises(ValueError):
        audit.search(s, audit.AuditQuery(limit=0))


def test_a_search_reads_only_and_says_what_it_asked(engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        before = audit.check(s).head_hash
        audit.search(s, audit.AuditQuery(text="x", actor="a*"))
    with session_scope(engine) as s:
        result = audit.check(s)
    assert result.intact and result.head_hash == before
    query = audit.AuditQuery(actor="cli:root", since=dt.datetime(2026, 3, 1, tzinfo=dt.UTC), before_id=9)
    assert query.filters() == {"actor": "cli:root", "since": "2026-03-01T00:00:00+00:00", "before_id": 9}
    with session_scope(engine) as s:
        [entry] = audit.search(s, audit.AuditQuery(action="zone.add"))
        assert audit.as_dict(entry)["details"] == {"name": "Gent"}


def test_accented_words_are_found_in_details_in_any_case_on_both_databases(engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        audit.record(s, "cli:root", "person.added", "person:130", name="Émile Dupré", street='Rue "Haute" 5')
        audit.record(s, "cli:root", "person.added", "person:131", name="Hélène")
    emile = ["cli:root person.added person:130"]
    # The details keep "é" as the JSON escape \u00e9: the needle is matched in that form too.
    for needle in ("Dupré", "dupré", "DUPRÉ", "Émile", "émile", "ÉMILE", "Émile DUPRé", 'rue "haute"'):
        assert _find(engine, text=needle) == emile, needle
    assert _find(engine, text="hélène") == ["cli:root person.added person:131"]
    assert _find(engine, text="Dupre") == []  # an accent is not a wildcard


def test_a_prefix_heeds_case_alike_on_both_databases(engine) -> None:  # type: ignore[no-untyped-def]
    # LIKE ignores case on SQLite and heeds it on PostgreSQL: a prefix must not depend on the database.
    assert _find(engine, action="Person.*") == []
    assert _find(engine, actor="WEB:person:7*") == []
    assert _find(engine, subject="person:12*") == ["web:person:70 person.edited person:120",
                                                   "web:person:7 person.role_added person:12",
                                                   "web:person:7 person.deactivated person:12"]
    assert _find(engine, subject="person:1_*") == []  # '_' is no wildcard
    assert len(_find(engine, actor="*")) == 5
