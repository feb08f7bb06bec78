"""Scheduled drills on the real persistent alarm clock (APScheduler, jobs in SQLite): the alarm fires,
the drill goes, the schedule moves on; after a restart the alarm is back, and drills missed while the
service was down make one drill."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import select, update

from ivr.chain.steps import DRILL, Chain
from ivr.delivery.drill import add_months, schedule_drill
from ivr.delivery.store import DeliveryDesk
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import MessageStatus
from ivr.scheduler import AlarmClock
from storage.db import session_scope
from storage.models import Campaign, DrillSchedule, Message, utcnow
from tests.world import World

OPERATOR = Actor.operator("cli:test")


def _drills(world: World) -> list[int]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(Message.id).where(Message.drill.is_(True)).order_by(Message.id)))


def _next_at(world: World) -> dt.datetime:
    with session_scope(world.engine) as s:
        return s.scalars(select(DrillSchedule.next_at)).one().replace(tzinfo=dt.timezone.utc)


async def _until(check: object, count: int, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(await asyncio.to_thread(check)) < count:  # type: ignore[arg-type]
        assert asyncio.get_running_loop().time() < deadline, f"fewer than {count} drills after {timeout_s} s"
        await asyncio.sleep(0.1)


def _service(world: World) -> tuple[Chain, AlarmClock]:
    """The chain's drill step on a real alarm clock, on the real clock (as ``BinfoonApp`` wires it)."""
    alarms = AlarmClock(world.engine)
    chain = Chain(world.desk, DeliveryDesk(world.engine, world.desk.store), None, alarms)  # type: ignore[arg-type]
    alarms.start({DRILL: chain.drill_alarm})
    return chain, alarms


async def _stop(chain: Chain, alarms: AlarmClock) -> None:
    await asyncio.gather(*list(chain._tasks))
    alarms.shutdown()
    await chain.stop()


async def test_the_alarm_fires_the_drill_and_a_restart_catches_up_once(world: World, tmp_path: Path) -> None:
    chain, alarms = _service(world)
    try:
        first = utcnow().replace(microsecond=0) + dt.timedelta(seconds=2)
        with session_scope(world.engine) as s:
            schedule_drill(s, 12, 3, first, OPERATOR)  # the command line: the service finds it by reconciling
        await chain._reconcile_drills()
        assert alarms.when(DRILL, world.bin_id) == first
        await _until(lambda: _drills(world), 1)
        assert _next_at(world) == add_months(first, 3)
        await asyncio.gather(*list(chain._tasks))
        assert alarms.when(DRILL, world.bin_id) == add_months(first, 3)  # armed again for the next one
        with session_scope(world.engine) as s:
            [campaign] = s.scalars(select(Campaign)).all()  # delivered: the dialer's work from here
            assert campaign.message_id == _drills(world)[0]
    finally:
        await _stop(chain, alarms)

    # Down for seven months: two quarterly drills were missed.
    missed = utcnow().replace(microsecond=0) - dt.timedelta(days=210)
    with session_scope(world.engine) as s:
        s.execute(update(DrillSchedule).values(next_at=missed))
        # The first drill went out long ago (a drill still going out would hold the next one back).
        s.execute(update(Message).values(status=MessageStatus.DONE))
    chain, alarms = _service(world)
    try:
        assert alarms.when(DRILL, world.bin_id) == add_months(first, 3)  # the stored alarm survived the restart
        await chain._reconcile_drills()  # start-up (``Chain.reconcile(at_start=True)``)
        await _until(lambda: _drills(world), 2)
        await asyncio.gather(*list(chain._tasks))
        assert len(_drills(world)) == 2  # one drill for both missed dates
        assert _next_at(world) > utcnow() and alarms.when(DRILL, world.bin_id) == _next_at(world)
    finally:
        await _stop(chain, alarms)
