"""The lab's timeline: what the running application did and when (monotonic seconds).

The application's optional observer (``ivr.app.Observer``): tests, the demo and the benchmarks
read it; the product never needs it. Its memory is bounded: it keeps the latest ``limit`` events
of each kind, so it may follow a long-running service too.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from ivr.review.store import Decided
from ivr.telephony.outbound import CallKind

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class FlowEnded:
    """A finished conversation: which flow, on which call, how it ended, and when (monotonic)."""

    flow: str
    channel_id: str
    end: str
    at: float


class BoundedMap(Generic[K, V]):
    """A mapping that keeps only its ``limit`` newest keys."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()

    def setdefault(self, key: K, value: V) -> V:
        """The value at ``key``, set to ``value`` if there was none (the oldest key may be forgotten)."""
        if key not in self._items:
            self._items[key] = value
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return self._items[key]

    def get(self, key: K) -> V | None:
        """The value at ``key``, if it is still remembered."""
        return self._items.get(key)

    def values(self) -> list[V]:
        """Every remembered value, oldest first."""
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)


class Timeline:
    """Records the chain's steps, every outbound call and every conversation's end."""

    def __init__(self, limit: int = 10_000, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._now = monotonic
        #: Monotonic time each message was submitted by the application.
        self.submitted_at: BoundedMap[int, float] = BoundedMap(limit)
        #: Monotonic time a decision on each message was stored (approval, for "forward" decisions).
        self.decided_at: BoundedMap[int, float] = BoundedMap(limit)
        #: Monotonic time each message's campaign was created.
        self.campaign_created_at: BoundedMap[int, float] = BoundedMap(limit)
        #: Monotonic time each outbound call was handed to Asterisk, by call id.
        self.dial_started: BoundedMap[str, float] = BoundedMap(limit)
        #: How many calls of each kind were handed to Asterisk.
        self.dialled: dict[CallKind, int] = {kind: 0 for kind in CallKind}
        #: When the first member call was handed to Asterisk.
        self.first_member_dial_at: float | None = None
        #: Monotonic times member calls ended, oldest first.
        self.member_call_ends: deque[float] = deque(maxlen=limit)
        #: Finished conversations, oldest first.
        self.flow_ends: deque[FlowEnded] = deque(maxlen=limit)
        self._changed = asyncio.Condition()
        self._notifying: set[asyncio.Task[None]] = set()

    # -- the application's observer ------------------------------------------------------------
    def submitted(self, message_id: int) -> None:
        self.submitted_at.setdefault(message_id, self._now())

    def decided(self, decided: Decided) -> None:
        self.decided_at.setdefault(decided.message_id, self._now())

    def campaign_created(self, message_id: int, campaign_id: int) -> None:
        self.campaign_created_at.setdefault(campaign_id, self._now())

    def call_dialling(self, kind: CallKind, call_id: str) -> None:
        now = self._now()
        self.dialled[kind] += 1
        self.dial_started.setdefault(call_id, now)
        if kind is CallKind.MEMBER and self.first_member_dial_at is None:
            self.first_member_dial_at = now

    def call_ended(self, kind: CallKind, call_id: str) -> None:
        if kind is CallKind.MEMBER:
            self.member_call_ends.append(self._now())

    def flow_ended(self, flow: str, call_id: str, end: str) -> None:
        self.flow_ends.append(FlowEnded(flow, call_id, end, self._now()))
        task = asyncio.get_running_loop().create_task(self._notify())
        self._notifying.add(task)  # referenced until done: a bare task may be collected before it runs
        task.add_done_callback(self._notifying.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- reading it ------------------------------------------------------------------------------
    async def wait_for_flows(self, flow: str, count: int = 1, timeout_s: float = 60.0) -> list[FlowEnded]:
        """Wait until ``count`` conversations of ``flow`` have ended; returns them."""
        def ended() -> list[FlowEnded]:
            return [f for f in self.flow_ends if f.flow == flow]

        async def wait() -> list[FlowEnded]:
            async with self._changed:
                await self._changed.wait_for(lambda: len(ended()) >= count)
            return ended()
        async with asyncio.timeout(timeout_s):
            return await wait()
