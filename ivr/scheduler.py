"""The alarm clock: APScheduler with its jobs in the database, so they survive a restart.

It sits below the features (the review's retry alarm, the chain's delivery alarm use it). Its
module path is part of every stored job (``ivr.scheduler:fire``): keep it, or migrate the jobs.

Rules: the scheduler only wakes the application; the database stays the truth (a job that fires
for a message no longer due does nothing, and start-up reconciles messages with jobs). Jobs name
a *kind* and an id (a message's; a BIN's for the ``drill`` kind, whose schedule is its own row); the
running application registers what each kind does. An alarm missed while the application was down
fires once at start (``coalesce``), however many times it would have fired.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Awaitable, Callable

from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

log = logging.getLogger(__name__)

Handler = Callable[[int], Awaitable[None]]
#: What each kind of alarm does in this process (set by the running application).
_handlers: dict[str, Handler] = {}


async def fire(kind: str, message_id: int) -> None:
    """The job function APScheduler stores by reference: hand the alarm to the application."""
    handler = _handlers.get(kind)
    if handler is None:
        log.error("alarm %s for id %d fired, but nothing handles it in this process", kind, message_id)
        return
    await handler(message_id)


class AlarmClock:
    """Persistent alarms ("deliver message 12 at 21:30") on the application's database."""

    TABLE = "apscheduler_jobs"

    def __init__(self, engine: Engine) -> None:
        self._scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=self.TABLE)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=dt.timezone.utc,
        )

    def start(self, handlers: dict[str, Handler]) -> None:
        """Start firing (alarms missed while the app was down fire at once)."""
        _handlers.clear()
        _handlers.update(handlers)
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop firing; stored alarms stay for the next start."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        _handlers.clear()

    async def stopped(self, timeout_s: float = 5.0) -> None:
        """Wait until a shutdown has finished (APScheduler 3.11 finishes it on the event loop): a farm
        node that lost the lead and gains it again starts its alarms anew."""
        for _ in range(int(timeout_s / 0.05)):
            if not self._scheduler.running:
                return
            await asyncio.sleep(0.05)

    @staticmethod
    def job_id(kind: str, message_id: int) -> str:
        """The one alarm of a kind for a message."""
        return f"{kind}-{message_id}"

    def wake_at(self, kind: str, message_id: int, at: dt.datetime) -> None:
        """Set (or move) the alarm of ``kind`` for ``message_id``."""
        self._scheduler.add_job(fire, "date", run_date=at, args=[kind, message_id],
                                id=self.job_id(kind, message_id), replace_existing=True)
        log.info("alarm %s for id %d at %s", kind, message_id, at.isoformat())

    def when(self, kind: str, message_id: int) -> dt.datetime | None:
        """When the alarm will fire, or ``None`` if there is none."""
        job = self._scheduler.get_job(self.job_id(kind, message_id))
        return job.next_run_time if job is not None else None

    def cancel(self, kind: str, message_id: int) -> None:
        """Remove an alarm (no error if there is none)."""
        try:
            self._scheduler.remove_job(self.job_id(kind, message_id))
        except JobLookupError:
            pass
