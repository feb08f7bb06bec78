"""Migration 0006: when to deliver is the message's own fact; the decision's copy is dropped, not lost."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from storage.db import _alembic_config, make_engine

AT = "2027-03-01 20:30:00+00:00"


def test_a_messages_time_survives_and_a_missing_one_is_taken_from_its_decision(db_url: str) -> None:
    config = _alembic_config(db_url)
    command.upgrade(config, "0005")
    engine = make_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(text("INSERT INTO police_zones (id, code, name, review_mode, urgent_escalation) "
                           "VALUES (1, '5415', 'Gent', 'sequential', 'auto_forward')"))
            c.execute(text("INSERT INTO bins (id, number, name, zone_id, language, created_at) "
                           "VALUES (1, 12, 'Kerkwijk', 1, 'nl', :now)"), {"now": AT})
            for mid, deliver_at in ((1, AT), (2, None)):
                c.execute(text("INSERT INTO messages (id, bin_id, urgency, status, source, kind, created_at, deliver_at) "
                               "VALUES (:id, 1, 'preventive', 'approved', 'phone', 'alert', :now, :at)"),
                          {"id": mid, "now": AT, "at": deliver_at})
                c.execute(text("INSERT INTO review_decisions (message_id, decision, deliver_at, via, decided_at) "
                               "VALUES (:id, 'forward_later', :at, 'phone', :now)"), {"id": mid, "at": AT, "now": AT})
        command.upgrade(config, "head")
        assert "deliver_at" not in {col["name"] for col in inspect(engine).get_columns("review_decisions")}
        with engine.connect() as c:
            times = c.execute(text("SELECT id, deliver_at FROM messages ORDER BY id")).all()
        assert [(mid, str(at)[:19]) for mid, at in times] == [(1, AT[:19]), (2, AT[:19])]
    finally:
        engine.dispose()
