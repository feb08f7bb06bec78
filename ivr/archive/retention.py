"""Retention runs by itself: the service purges what is past its time once a day, and at start.

Rules: the purge itself is ``ivr.archive.store.Archive.purge_expired`` (the same code and audit as
``binfoon archive purge``); this module only decides *when* and keeps the work off the event loop
(file deletion and SQL run in a thread). Nothing is persisted: a purge is idempotent, so running it
again after a restart costs a query and removes nothing twice. Given Asterisk's sounds directories,
the sweep also removes, every ``unpublish_every_s``, the published audio no message in flight needs
any more (``ivr.archive.at_rest.unpublish_stale``: a campaign and its reviews over, or a purge made
by the command line), and typed police texts older versions rendered into the shared prompt cache.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ivr.archive.at_rest import remove_shared_text_renders, unpublish_stale
from ivr.archive.store import Archive, PurgeReport

log = logging.getLogger(__name__)

#: Who the audit log names for purges made by the running service.
ACTOR = "service:retention"


class RetentionSweep:
    """Runs ``Archive.purge_expired`` when due: never run yet, or ``every_s`` after the last run started."""

    def __init__(self, archive: Archive, retention_days: int, clock: Callable[[], dt.datetime], *,
                 every_s: float = 86400.0, monotonic: Callable[[], float] = time.monotonic,
                 sounds_dirs: Sequence[Path] = (), unpublish_every_s: float = 60.0) -> None:
        """``sounds_dirs``: where Asterisk's copies of police audio are published (unpublished when stale)."""
        self.archive = archive
        self.sounds_dirs = tuple(sounds_dirs)
        self.unpublish_every_s = unpublish_every_s
        self._last_unpublish: float | None = None
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
        return not self._running and (self._purge_due() or self._unpublish_due())

    def _purge_due(self) -> bool:
        if self.retention_days <= 0:
            return False
        return self._last is None or self.monotonic() - self._last >= self.every_s

    def _unpublish_due(self) -> bool:
        if not self.sounds_dirs:
            return False
        return self._last_unpublish is None or self.monotonic() - self._last_unpublish >= self.unpublish_every_s

    async def run(self) -> None:
        """What is due: a purge (see ``last_report``), then the stale published audio, each in a worker
        thread; errors are logged, not raised. Called when nothing is due, it purges."""
        purge = self._purge_due() or not self._unpublish_due()
        unpublish = self._unpublish_due()
        self._running = True
        try:
            if purge:
                await self._purge()
            if unpublish:
                self._last_unpublish = self.monotonic()
                try:
                    removed = await asyncio.to_thread(unpublish_stale, self.archive.engine, self.sounds_dirs)
                    removed += await asyncio.to_thread(remove_shared_text_renders, self.archive.copies.cache_dir)
                except Exception:
                    log.exception("removing stale published audio failed; tried again in %.0f s",
                                  self.unpublish_every_s)
                else:
                    if removed:
                        log.info("removed %d copies of police audio no message in flight needs", removed)
        finally:
            self._running = False

    async def _purge(self) -> None:
        self._last = self.monotonic()
        self.last_report = None
        try:
            report = await asyncio.to_thread(self.archive.purge_expired, self.clock(), self.retention_days,
                                             ACTOR)
        except Exception:
            log.exception("retention purge failed; it is tried again in %.0f s", self.every_s)
            return
        self.last_report = report
        if report.purged or report.problems:
            log.info("retention: purged %d recordings, %d transcripts, %d texts (%d problems)",
                     report.count("recording"), report.count("transcript"), report.count("text"),
                     len(report.problems))
