"""Retention runs by itself: the service purges what is past its time once a day, and at start.

Rules: the purge itself is ``ivr.archive.store.Archive.purge_expired`` (the same code and audit as
``binfoon archive purge``); this module only decides *when* and keeps the work off the event loop
(file deletion and SQL run in a thread). Nothing is persisted: a purge is idempotent, so running it
again after a restart costs a query and removes nothing twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Callable

from ivr.archive.store import Archive, PurgeReport

log = logging.getLogger(__name__)

#: Who the audit log names for purges made by the running service.
ACTOR = "service:retention"


class RetentionSweep:
    """Runs ``Archive.purge_expired`` when due: never run yet, or ``every_s`` after the last run started."""

    def __init__(self, archive: Archive, retention_days: int, clock: Callable[[], dt.datetime], *,
                 every_s: float = 86400.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.archive = archive
        self.retention_days = retention_days
        self.clock = clock
        self.every_s = every_s
        self.monotonic = monotonic
        self._last: float | None = None
        self._running = False
        #: What the last sweep did (``None`` before the first, or when it failed).
        self.last_report: PurgeReport | None = None

    def due(self) -> bool:
        """True when a sweep should start now (never while one is running)."""
        if self._running or self.retention_days <= 0:
            return False
        return self._last is None or self.monotonic() - self._last >= self.every_s

    async def run(self) -> None:
        """One purge in a worker thread (see ``last_report``); errors are logged, not raised."""
        self._last = self.monotonic()
        self._running = True
        self.last_report = None
        try:
            report = await asyncio.to_thread(self.archive.purge_expired, self.clock(), self.retention_days,
                                             ACTOR)
        except Exception:
            log.exception("retention purge failed; it is tried again in %.0f s", self.every_s)
            return
        finally:
            self._running = False
        self.last_report = report
        if report.purged or report.problems:
            log.info("retention: purged %d recordings, %d transcripts, %d texts (%d problems)",
                     report.count("recording"), report.count("transcript"), report.count("text"),
                     len(report.problems))
