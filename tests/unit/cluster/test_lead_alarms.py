"""A farm node that loses the lead and gains it again runs the alarm clock again (issue 18)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import create_engine

from ivr.scheduler import AlarmClock


async def test_the_alarm_clock_fires_again_after_a_shutdown_and_a_new_start(tmp_path: Path) -> None:
    clock = AlarmClock(create_engine(f"sqlite:///{tmp_path / 'alarms.db'}"))
    fired: list[int] = []

    async def deliver(message_id: int) -> None:
        fired.append(message_id)
    clock.start({"deliver": deliver})
    clock.shutdown()  # the lead is lost (APScheduler finishes its shutdown on the loop)
    await clock.stopped()
    clock.start({"deliver": deliver})  # ... and gained again
    try:
        clock.wake_at("deliver", 7, dt.datetime.now(dt.timezone.utc) + dt.timedelta(milliseconds=200))
        for _ in range(100):
            if fired:
                break
            await asyncio.sleep(0.05)
        assert fired == [7]
    finally:
        clock.shutdown()
