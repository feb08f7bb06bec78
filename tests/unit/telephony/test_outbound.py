"""The one outbound-call life cycle: channels, pace, and an end that resolves exactly once."""

from __future__ import annotations

import asyncio
from typing import Mapping

import pytest

from ivr.telephony.dialer import Dialled
from ivr.telephony.outbound import CallEnd, CallKind, OutboundCalls
from ivr.telephony.outcomes import DialOutcome


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Dialer:
    """Answers every call at once; records what was dialled."""

    ready = True

    def __init__(self) -> None:
        self.dialled: list[tuple[str, str, str]] = []

    async def dial(self, call_id: str, number: str, *, context: str, variables: Mapping[str, str],
                   ring_timeout_s: float, exten: str = "s") -> Dialled:
        self.dialled.append((call_id, context, exten))
        return Dialled(DialOutcome.ANSWERED)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, CallKind, str]] = []

    def call_dialling(self, kind: CallKind, call_id: str) -> None:
        self.events.append(("dialling", kind, call_id))

    def call_ended(self, kind: CallKind, call_id: str) -> None:
        self.events.append(("ended", kind, call_id))


async def test_the_flows_end_ends_the_call_once_even_if_the_hang_up_comes_too() -> None:
    calls = OutboundCalls(Dialer(), max_channels=2, max_cps=100)
    calls.hold("a", CallKind.MEMBER)
    await calls.dial("a", "+32", context="c", variables={}, ring_timeout_s=1)
    calls.flow_started("a")
    calls.hung_up("a")                    # the channel goes while the flow still stores its key
    assert not calls._calls["a"].ended.done()
    calls.flow_ended("a", "confirmed")
    calls.flow_ended("a", "answered_no_key")  # a second signal changes nothing
    assert await calls.ended("a", 1) == CallEnd("confirmed")
    calls.release("a")
    assert calls.busy == 0


async def test_a_hang_up_ends_a_call_no_flow_took() -> None:
    calls = OutboundCalls(Dialer(), max_channels=2, max_cps=100)
    calls.hold("a", CallKind.REVIEW)
    calls.hung_up("a")
    assert await calls.ended("a", 1) == CallEnd(None)


async def test_a_call_nobody_ends_times_out() -> None:
    calls = OutboundCalls(Dialer(), max_channels=2, max_cps=100)
    calls.hold("a", CallKind.MEMBER)
    assert await calls.ended("a", 0.05) == CallEnd(None, timed_out=True)


async def test_held_calls_and_orphans_count_against_the_channels() -> None:
    clock = Clock()
    calls = OutboundCalls(Dialer(), max_channels=3, max_cps=100, monotonic=clock)
    calls.adopt_orphans(["old-1", "old-2"], grace_s=20)
    assert calls.busy == 2 and calls.has_channel()
    calls.hold("a", CallKind.MEMBER)
    assert calls.busy == 3 and not calls.has_channel()
    assert calls.hung_up("old-1") is True      # an orphan's hang-up frees its channel
    assert calls.hung_up("a") is False
    assert calls.busy == 2
    clock.t += 21                               # the grace of the other orphan ends
    assert calls.busy == 1
    assert calls.peak == 3


async def test_a_test_call_waits_for_a_free_channel_and_the_pace() -> None:
    clock = Clock()
    calls = OutboundCalls(Dialer(), max_channels=1, max_cps=1, monotonic=clock)
    assert calls.take_token()                   # a member call took the second's token ...
    calls.hold("member", CallKind.MEMBER)       # ... and the only channel
    waiting = asyncio.ensure_future(calls.acquire("test", CallKind.TEST))
    await asyncio.sleep(0.05)
    assert not waiting.done() and not calls.has_channel()  # who waits goes before new member calls
    calls.release("member")
    await asyncio.sleep(0.05)
    assert not waiting.done()                   # a channel, but no token yet
    clock.t += 1.0
    await asyncio.wait_for(waiting, 2)
    assert calls.busy == 1 and "test" in calls._calls


async def test_a_review_call_borrows_its_token_and_the_next_member_call_waits_longer() -> None:
    clock = Clock()
    calls = OutboundCalls(Dialer(), max_channels=5, max_cps=2, monotonic=clock)
    assert calls.take_token()
    await asyncio.wait_for(calls.acquire("review", CallKind.REVIEW), 1)  # no token left: borrowed
    assert not calls.take_token()
    assert calls.token_wait_s() == pytest.approx(1.0)  # two tokens' time at 2 a second


async def test_the_observer_hears_every_call_start_and_end() -> None:
    recorder = Recorder()
    dialer = Dialer()
    calls = OutboundCalls(dialer, max_channels=2, max_cps=100, observer=recorder)
    calls.hold("t", CallKind.TEST)
    await calls.dial("t", "+32", context="binfoon-member", exten="voicemail", variables={}, ring_timeout_s=1)
    calls.release("t")
    assert dialer.dialled == [("t", "binfoon-member", "voicemail")]
    assert recorder.events == [("dialling", CallKind.TEST, "t"), ("ended", CallKind.TEST, "t")]


async def test_a_call_waiting_for_the_pace_does_not_take_a_channel_taken_meanwhile() -> None:
    # Seen in review: the channel was checked, the pace was waited for, and the channel was held
    # without looking again, so a review call that came in between made two calls on one channel.
    clock = Clock()
    calls = OutboundCalls(Dialer(), max_channels=1, max_cps=1, monotonic=clock)
    assert calls.take_token()
    test_call = asyncio.ensure_future(calls.acquire("test", CallKind.TEST))
    await asyncio.sleep(0.01)                     # waiting for a token, the channel free
    await asyncio.wait_for(calls.acquire("review", CallKind.REVIEW), 1)
    clock.t += 2.0                                # tokens come (the review's debt repaid), the channel is gone
    await asyncio.sleep(1.1)
    assert not test_call.done() and calls.busy == 1
    calls.release("review")
    clock.t += 2.0                                # the review call's borrowed token is repaid
    await asyncio.wait_for(test_call, 3)
    assert calls.busy == 1 and calls.peak == 1


async def test_a_reserved_channel_is_not_given_to_a_review_call_while_the_attempt_is_written() -> None:
    calls = OutboundCalls(Dialer(), max_channels=1, max_cps=100)
    reservation = calls.reserve()                 # the dialer writes the attempt row now
    review = asyncio.ensure_future(calls.acquire("review", CallKind.REVIEW))
    await asyncio.sleep(0.01)
    assert not review.done()
    calls.claim(reservation, "attempt-1", CallKind.MEMBER)
    calls.release("attempt-1")
    await asyncio.wait_for(review, 2)
    assert calls.peak == 1


async def test_an_unused_reservation_is_no_call_for_the_observer() -> None:
    recorder = Recorder()
    calls = OutboundCalls(Dialer(), max_channels=1, max_cps=100, observer=recorder)
    freed: list[int] = []
    calls.on_free = lambda: freed.append(1)
    calls.release(calls.reserve())                # the member confirmed meanwhile: no call placed
    assert recorder.events == [] and calls.busy == 0 and freed == [1]


async def test_the_end_of_a_call_is_known_to_its_owner_while_it_stops() -> None:
    calls = OutboundCalls(Dialer(), max_channels=1, max_cps=100)
    calls.hold("a", CallKind.MEMBER)
    assert calls.known_end("a") is None
    calls.flow_started("a")
    calls.flow_ended("a", "voicemail")
    assert calls.known_end("a") == CallEnd("voicemail")
