"""The audit log is append-only and hash-chained: changes and deletions are detected."""

from sqlalchemy import delete, select, update

from storage import audit
from storage.db import open_database, session_scope
from storage.models import AuditEntry


def _three_entries(url: str):  # type: ignore[no-untyped-def]
    engine = open_database(url)
    with session_scope(engine) as s:
        for i in range(3):
            audit.record(s, "cli:root", "bin.add", f"bin:{i}", name=f"BIN {i}")
    return engine


def test_intact_chain(db_url: str) -> None:
    engine = _three_entries(db_url)
    with session_scope(engine) as s:
        assert audit.verify_chain(s) == []
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert entries[1].prev_hash == entries[0].hash


def test_changed_row_is_detected(db_url: str) -> None:
    engine = _three_entries(db_url)
    with session_scope(engine) as s:
        s.execute(update(AuditEntry).where(AuditEntry.subject == "bin:1").values(actor="someone-else"))
    with session_scope(engine) as s:
        assert any("content changed" in p for p in audit.verify_chain(s))


def test_deleted_row_is_detected(db_url: str) -> None:
    engine = _three_entries(db_url)
    with session_scope(engine) as s:
        s.execute(delete(AuditEntry).where(AuditEntry.subject == "bin:1"))
    with session_scope(engine) as s:
        assert any("does not follow" in p for p in audit.verify_chain(s))
