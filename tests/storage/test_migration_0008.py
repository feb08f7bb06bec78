"""Migration 0008: PIN attempts name their line (older rows stay the police line's and keep counting),
calls to the caller-ID lines get their table; the downgrade gives the old schema back."""

from __future__ import annotations

import datetime as dt

from alembic import command
from sqlalchemy import inspect, text

from ivr.directory.pin_gate import PinRules, lock_in_force
from storage.db import _alembic_config, make_engine, session_scope

AT = "2026-12-06 11:00:00+00:00"


def test_older_wrong_pins_still_lock_after_the_upgrade(db_url: str) -> None:
    config = _alembic_config(db_url)
    command.upgrade(config, "0007")
    engine = make_engine(db_url)
    try:
        with engine.begin() as c:
            for minute in range(3):  # three wrong PINs typed before the upgrade
                c.execute(text("INSERT INTO pin_attempts (at, caller_id, person_id, outcome) "
                               "VALUES (:at, '+32475000001', NULL, 'wrong')"),
                          {"at": AT.replace("11:00", f"11:0{minute}")})
        command.upgrade(config, "head")
        assert "line_calls" in inspect(engine).get_table_names()
        with engine.connect() as c:
            assert c.execute(text("SELECT DISTINCT line FROM pin_attempts")).all() == [(None,)]
        now = dt.datetime(2026, 12, 6, 11, 5, tzinfo=dt.timezone.utc)
        with session_scope(engine) as s:
            assert lock_in_force(s, PinRules(), "+32475000001", None, now, line="police") is not None
        command.downgrade(config, "0007")
        assert "line_calls" not in inspect(engine).get_table_names()
        assert "line" not in {col["name"] for col in inspect(engine).get_columns("pin_attempts")}
    finally:
        engine.dispose()
