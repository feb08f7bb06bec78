"""A node of a farm at run time (issue 18): it heart-beats, takes over nodes that stopped, keeps its
share of the carrier's limits, and starts or stops the farm's single duties as it gains or loses the lead.

The database decides everything (``ivr.cluster.lease``); this loop only applies what it says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ivr.cluster.budget import Budget, node_budget
from ivr.cluster.lease import Fenced, NodeLease

log = logging.getLogger(__name__)


class FarmNode:
    """Runs a node's lease. The application gives it what to do when things change."""

    def __init__(self, lease: NodeLease, *, total_channels: int, total_cps: float,
                 live_calls: Callable[[], int], set_budget: Callable[[Budget], None],
                 gained_lead: Callable[[], Awaitable[None]], lost_lead: Callable[[], Awaitable[None]],
                 took_over: Callable[[], None], fenced: Callable[[], Awaitable[None]]) -> None:
        self.lease = lease
        self.total_channels = total_channels
        self.total_cps = total_cps
        self._live_calls = live_calls
        self._set_budget = set_budget
        self._gained_lead = gained_lead
        self._lost_lead = lost_lead
        self._took_over = took_over
        self._fenced = fenced
        self._task: asyncio.Task[None] | None = None
        self._leading = False
        self.budget = Budget(0, 0.0)
        #: Heartbeats, and those that failed (the database away): for monitoring and the bench.
        self.beats = 0
        self.beat_failures = 0

    async def join(self) -> None:
        """Join the farm under a new epoch (the node's own open calls are then its to recover)."""
        self._set_budget(Budget(0, 0.0))  # nothing dialled until the others have seen this node
        await asyncio.to_thread(self.lease.join)

    async def run(self) -> None:
        """Apply a first heartbeat (it may make this node the leader), then keep beating."""
        await self._beat()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="farm-heartbeat")

    async def stop(self) -> None:
        """Stop beating and leave the farm (the lead is given up at once)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._leading:
            self._leading = False
            await self._lost_lead()
        try:
            await asyncio.to_thread(self.lease.leave)
        except Exception:
            log.exception("could not leave the farm cleanly; the others take over after the lease")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease.heartbeat_s)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.beat_failures += 1
                log.exception("heartbeat failed (the lease runs out if this goes on)")
                if not self.lease.valid():
                    self._set_budget(Budget(0, 0.0))

    async def _beat(self) -> None:
        try:
            beat = await asyncio.to_thread(self.lease.beat, self._live_calls())
        except Fenced as exc:
            log.error("%s: dialling stops, the node joins again under a new epoch", exc)
            self._set_budget(Budget(0, 0.0))
            if self._leading:
                self._leading = False
                await self._lost_lead()
            await asyncio.to_thread(self.lease.join)
            await self._fenced()
            return
        self.beats += 1
        self.budget = node_budget(self.total_channels, self.total_cps, self.lease.node_id or 0, beat.peers,
                                  settled=self.lease.settled(), held_elsewhere=beat.held_elsewhere)
        self._set_budget(self.budget)
        if beat.leader and not self._leading:
            self._leading = True
            await self._gained_lead()
        elif not beat.leader and self._leading:
            self._leading = False
            await self._lost_lead()
        taken = await asyncio.to_thread(self.lease.take_over_expired)
        if any(t.attempts for t in taken) or taken:
            self._took_over()
