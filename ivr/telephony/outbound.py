"""One life cycle for every call BINfoon places: review calls, member calls and test calls.

Rules:
- the caller writes the call's row (or audit line) before ``dial``: its id is the Originate
  ChannelId, so every event about the call matches what was persisted;
- every call counts against the trunk's channels, ours and those a previous process left up,
  from the moment it is held (before it is dialled) until it has ended;
- every call takes a token of the trunk's pace (calls per second); a review call, which an
  officer's alert waits on, borrows its token instead of waiting for one (the debt slows the
  next member calls, so the average pace still holds);
- a call ends exactly once: ``ended()`` resolves from whichever signal comes first, the flow's end
  or the channel's hang-up; once a flow has taken the call only the flow's end counts (it may still
  be storing a key as the channel goes).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

from ivr.domain.pace import TokenBucket
from ivr.telephony.dialer import Dialer, Dialled
from ivr.telephony.outcomes import DialOutcome

log = logging.getLogger(__name__)


class CallKind(enum.Enum):
    """Why a call is placed."""

    REVIEW = "review"
    MEMBER = "member"
    TEST = "test"


@dataclass(frozen=True)
class CallEnd:
    """How an answered call ended: the flow's end (``None``: no flow ran), or the wait timed out."""

    flow_end: str | None
    timed_out: bool = False


class CallObserver(Protocol):
    """Who wants to know when calls start and end (benchmarks, the lab); never decides anything."""

    def call_dialling(self, kind: CallKind, call_id: str) -> None:
        """``call_id`` is handed to the PBX now."""

    def call_ended(self, kind: CallKind, call_id: str) -> None:
        """``call_id`` is over (failed to connect, or ended after the answer)."""


@dataclass
class _Call:
    kind: CallKind
    ended: asyncio.Future[CallEnd] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    in_flow: bool = False
    dialled: bool = False


class OutboundCalls:
    """Counts, paces, dials and ends every outbound call."""

    def __init__(self, dialer: Dialer, *, max_channels: int, max_cps: float,
                 observer: CallObserver | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.dialer = dialer
        self.max_channels = max_channels
        self.observer = observer
        self._monotonic = monotonic
        # No burst: a restart never sends more than the pace allows.
        self._bucket = TokenBucket(max_cps, 1.0, monotonic())
        self._calls: dict[str, _Call] = {}
        #: Calls left up by a previous process, until their hang-up is seen or their grace ends.
        self._orphans: dict[str, float] = {}
        self._waiting = 0
        self._reserved = 0
        self._freed = asyncio.Event()
        #: Called when a channel is freed (the campaign dialer is woken: it may dial at once).
        self.on_free: Callable[[], None] | None = None
        #: The most calls up at once (ours and orphans), for monitoring and benchmarks.
        self.peak = 0

    # -- room on the trunk ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True when calls can be placed now (the PBX is connected)."""
        return self.dialer.ready

    @property
    def busy(self) -> int:
        """Calls up now: held or dialling or answered, ours and a previous process's."""
        now = self._monotonic()
        for call_id, until in list(self._orphans.items()):
            if until <= now:
                del self._orphans[call_id]
        return len(self._calls) + len(self._orphans)

    def has_channel(self) -> bool:
        """True if a call could be held now without waiting (callers who wait go first)."""
        return self.busy + self._waiting < self.max_channels

    def set_limits(self, max_channels: int, max_cps: float) -> None:
        """A farm node's share of the carrier's limits changed (``ivr.cluster.budget``). Calls up beyond a
        smaller share are not cut: no new one starts until they end. A pace of 0 stops new calls."""
        self.max_channels = max_channels
        rate = max(max_cps, 1e-3)
        if abs(rate - self._bucket.rate) > 1e-9:
            self._bucket = TokenBucket(rate, 1.0, self._monotonic())
        if max_channels > self.busy:
            self._freed.set()
            if self.on_free is not None:
                self.on_free()

    def take_token(self) -> bool:
        """Take a token of the pace if there is one."""
        return self._bucket.take(self._monotonic())

    def token_wait_s(self) -> float:
        """Seconds until the pace has a token."""
        return self._bucket.wait_s(self._monotonic())

    async def live_call_ids(self) -> set[str] | None:
        """The ids of the calls up in the PBX now (ours and a previous process's); ``None`` if it
        cannot tell."""
        return await self.dialer.live_call_ids()

    def adopt_orphans(self, call_ids: list[str], grace_s: float) -> None:
        """Calls a previous process left up count until their hang-up is seen, or for ``grace_s``."""
        until = self._monotonic() + grace_s
        for call_id in call_ids:
            self._orphans[call_id] = until

    def hold(self, call_id: str, kind: CallKind) -> None:
        """Count ``call_id`` against the channels from now (the caller checked ``has_channel`` with no
        await since, or reserved the channel)."""
        self._calls[call_id] = _Call(kind)
        self.peak = max(self.peak, self.busy)

    def reserve(self) -> str:
        """Hold a channel for a call whose id is not known yet (its row is being written); ``claim``
        gives it the call's id, ``release`` gives it back."""
        self._reserved += 1
        key = f"reserved-{self._reserved}"
        self.hold(key, CallKind.MEMBER)
        return key

    def claim(self, reservation: str, call_id: str, kind: CallKind) -> None:
        """The reserved channel is ``call_id``'s now."""
        del self._calls[reservation]
        self._calls[call_id] = _Call(kind)

    async def acquire(self, call_id: str, kind: CallKind) -> None:
        """Wait for a channel (and, but for review calls, a token of the pace), then hold it.

        The channel and the token are checked and taken with no await in between: nobody else can take
        the channel meanwhile."""
        self._waiting += 1
        try:
            while True:
                if self.busy < self.max_channels:
                    if kind is CallKind.REVIEW:
                        self._bucket.borrow(self._monotonic())
                        break
                    if self.take_token():
                        break
                    await asyncio.sleep(self.token_wait_s())
                    continue
                self._freed.clear()
                try:
                    async with asyncio.timeout(1.0):  # orphans expire without an event
                        await self._freed.wait()
                except TimeoutError:
                    pass
            self.hold(call_id, kind)
        finally:
            self._waiting -= 1

    # -- one call -----------------------------------------------------------------------------------
    async def dial(self, call_id: str, number: str, *, context: str, variables: Mapping[str, str],
                   ring_timeout_s: float, exten: str = "s") -> Dialled:
        """Dial a held call; when answered, Asterisk runs ``context,exten`` on it."""
        call = self._calls[call_id]
        call.dialled = True
        if self.observer is not None:
            self.observer.call_dialling(call.kind, call_id)
        return await self.dialer.dial(call_id, number, context=context, exten=exten, variables=variables,
                                      ring_timeout_s=ring_timeout_s)

    async def ended(self, call_id: str, timeout_s: float) -> CallEnd:
        """Wait for the answered call's end (its flow's, or the hang-up if no flow took it)."""
        call = self._calls.get(call_id)
        if call is None:
            raise KeyError(f"call {call_id} is not held")
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(call.ended)
        except TimeoutError:
            log.warning("%s call %s still up after %.0f s; no longer waited for", call.kind.value, call_id, timeout_s)
            return CallEnd(None, timed_out=True)

    def known_end(self, call_id: str) -> CallEnd | None:
        """How the call ended, if that is known already (its owner may be stopping)."""
        call = self._calls.get(call_id)
        if call is None or not call.ended.done() or call.ended.cancelled():
            return None
        return call.ended.result()

    def release(self, call_id: str) -> None:
        """The call is over for its owner (or was never placed): its channel is free."""
        call = self._calls.pop(call_id, None)
        if call is not None:
            if not call.ended.done():
                call.ended.cancel()
            if call.dialled and self.observer is not None:
                self.observer.call_ended(call.kind, call_id)
        self._freed.set()
        if self.on_free is not None:
            self.on_free()

    # -- signals from the PBX -------------------------------------------------------------------
    def flow_started(self, call_id: str) -> None:
        """A flow took the call: from now on only its end ends the call."""
        call = self._calls.get(call_id)
        if call is not None:
            call.in_flow = True

    def flow_ended(self, call_id: str, end: str) -> None:
        """The flow on ``call_id`` ended with ``end``."""
        self._end(call_id, CallEnd(end))

    def hung_up(self, channel_id: str) -> bool:
        """A channel hung up; it ends a call no flow took (the application was unreachable). Returns
        True if it freed a channel a previous process had left up."""
        call = self._calls.get(channel_id)
        if call is not None and not call.in_flow:
            self._end(channel_id, CallEnd(None))
        if self._orphans.pop(channel_id, None) is not None:
            self._freed.set()
            return True
        return False

    def _end(self, call_id: str, end: CallEnd) -> None:
        call = self._calls.get(call_id)
        if call is not None and not call.ended.done():
            call.ended.set_result(end)


def answered(dialled: Dialled) -> bool:
    """True if the call was answered (a flow runs or will run on it)."""
    return dialled.outcome is DialOutcome.ANSWERED
