"""One drill at a time (ivr/delivery/drill.py): a double click, the web and the command line, or a
schedule firing in two processes never send a BIN two drills; the audit says whose words were spoken.

Real espeak-ng; the races run on SQLite and on the private PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import ivr.delivery.drill as drill_module
from ivr.delivery.drill import DrillError, fire_scheduled_drill, next_drill_at, schedule_drill, start_drill
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import MessageStatus
from storage.db import session_scope
from storage.models import AuditEntry, DrillSchedule, Message
from tests.conftest import Clock
from tests.world import OTHER_ZONE_BIN, World, build_world

OPERATOR = Actor.operator("cli:test")


def _drills(world: World) -> list[int]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(Message.id).where(Message.drill.is_(True)).order_by(Message.id)))


def _audited(world: World, action: str) -> list[AuditEntry]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def _status(world: World, message_id: int, status: MessageStatus) -> None:
    with session_scope(world.engine) as s:
        s.get_one(Message, message_id).status = status


def test_the_audit_says_whether_the_drills_words_were_given(world: World, clock: Clock) -> None:
    catalogue = start_drill(world.engine, world.desk.store, 12, OPERATOR, clock=clock)
    _status(world, catalogue, MessageStatus.DONE)
    custom = start_drill(world.engine, world.desk.store, 12, OPERATOR, text="Proef van het netwerk", clock=clock)
    started = {e.subject: e.details["text"] for e in _audited(world, "drill.started")}
    assert started == {f"message:{catalogue}": "catalogue", f"message:{custom}": "custom"}


def test_a_second_drill_of_a_bin_is_refused_while_the_first_goes_out(world: World, clock: Clock) -> None:
    first = start_drill(world.engine, world.desk.store, 12, OPERATOR, clock=clock)
    for status in (MessageStatus.APPROVED, MessageStatus.DELIVERING):
        _status(world, first, status)
        with pytest.raises(DrillError, match=rf"BIN 12 has a drill still going out \(drill message {first}\)"):
            start_drill(world.engine, world.desk.store, 12, OPERATOR, clock=clock)
    assert _drills(world) == [first] and len(_audited(world, "drill.started")) == 1  # nothing written
    # Another BIN is not held up; and once the first drill is done, the BIN may be drilled again.
    other = start_drill(world.engine, world.desk.store, OTHER_ZONE_BIN, OPERATOR, clock=clock)
    _status(world, first, MessageStatus.DONE)
    again = start_drill(world.engine, world.desk.store, 12, OPERATOR, clock=clock)
    assert _drills(world) == [first, other, again]


def test_a_scheduled_drill_due_while_one_goes_out_is_skipped_and_its_date_moves_on(world: World,
                                                                                  clock: Clock) -> None:
    due = clock.now + dt.timedelta(hours=1)
    with session_scope(world.engine) as s:
        schedule_drill(s, 12, 3, due, OPERATOR, now=clock.now)
    running = start_drill(world.engine, world.desk.store, 12, OPERATOR, clock=clock)
    message_id, next_at = fire_scheduled_drill(world.engine, world.desk.store, world.bin_id, due)
    assert message_id is None and next_at == next_drill_at(due, 3, due)
    assert _drills(world) == [running]
    with session_scope(world.engine) as s:
        stored = s.scalars(select(DrillSchedule.next_at)).one()
        assert (stored if stored.tzinfo else stored.replace(tzinfo=dt.UTC)) == next_at
    [skipped] = _audited(world, "drill.schedule_skipped")
    assert skipped.details["running"] == running and skipped.subject == "bin:12"


@pytest.fixture
def both_world(db_url: str, tmp_path: Path, clock: Clock) -> World:
    """The usual world, on SQLite and on PostgreSQL."""
    return build_world(db_url, tmp_path / "store", clock=clock)


def test_a_schedule_fired_by_two_processes_at_once_makes_one_drill(both_world: World, clock: Clock,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    world = both_world
    due = clock.now + dt.timedelta(hours=1)
    with session_scope(world.engine) as s:
        schedule_drill(s, 12, 3, due, OPERATOR, now=clock.now)
    # The first process has read the schedule (due) and is about to move it; the second process fires
    # then, start to end, in its own thread and transaction: both found it due.
    other: dict[str, Any] = {}
    real_next = drill_module.next_drill_at

    def racing_next(*args: Any, **kwargs: Any) -> dt.datetime:
        if not other:
            other["started"] = True
            thread = threading.Thread(target=lambda: other.update(result=fire_scheduled_drill(
                world.engine, world.desk.store, world.bin_id, due)))
            thread.start()
            thread.join()
        return real_next(*args, **kwargs)

    monkeypatch.setattr(drill_module, "next_drill_at", racing_next)
    first = fire_scheduled_drill(world.engine, world.desk.store, world.bin_id, due)
    won_id, next_at = other["result"]
    assert won_id is not None and next_at == real_next(due, 3, due)
    assert first == (None, next_at)  # the loser saw the date moved: no drill, no second move
    assert _drills(world) == [won_id]
    assert len(_audited(world, "drill.schedule_fired")) == 1 and _audited(world, "drill.schedule_skipped") == []
    with session_scope(world.engine) as s:
        assert s.scalar(select(func.count(DrillSchedule.id))) == 1
        stored = s.scalars(select(DrillSchedule.next_at)).one()
        assert (stored if stored.tzinfo else stored.replace(tzinfo=dt.UTC)) == next_at


def test_starting_a_drill_locks_its_bin_until_it_commits_on_postgresql(request: pytest.FixtureRequest,
                                                                       tmp_path: Path, clock: Clock) -> None:
    from sqlalchemy.exc import OperationalError

    from ivr.delivery.drill import create_drill
    from storage.models import Bin
    from tests.conftest import SHARED_DIR
    from tests.pg import _create_database

    world = build_world(_create_database(request.getfixturevalue("postgres_server")), tmp_path / "store",
                        clock=clock)
    audio = tmp_path / "drill.wav"
    audio.write_bytes((SHARED_DIR / "audio" / "espeak-nl" / "02.wav").read_bytes())
    with session_scope(world.engine) as s:
        create_drill(s, world.desk.store, world.bin_id, "Testbericht", audio, "cli:test", None, clock.now,
                     custom=True)
        # A second start (a double click) checks for a running drill only once this one is committed.
        with world.engine.connect() as other, pytest.raises(OperationalError, match="could not obtain lock"):
            other.execute(select(Bin.id).where(Bin.id == world.bin_id).with_for_update(nowait=True, key_share=True))
    with pytest.raises(DrillError, match="still going out"):
        start_drill(world.engine, world.desk.store, 12, OPERATOR, clock=clock)
