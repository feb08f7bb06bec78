"""Review rounds against a fake dialer, the real review conversation on a fake call, and a real database.

Who is called, in what order, how many times, and what the zone's policy does when nobody decides:
counted, not assumed (each number's dial count, each decision handed on to the chain once).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Mapping

import pytest
from sqlalchemy import select

from ivr.police_line.store import Officer
from ivr.review.flow import ReviewRules, coordinator_review
from ivr.review.rounds import REVIEW_CONTEXT, REVIEW_RETRY, ReviewDispatcher
from ivr.scheduler import AlarmClock
from ivr.telephony.call import Recorded
from ivr.telephony.dialer import Dialled
from ivr.telephony.outbound import OutboundCalls
from ivr.telephony.outcomes import DialOutcome
from ivr.domain.vocabulary import (
    AttemptStatus, Decision, Escalation, MessageStatus, ReviewMode, Role, Urgency,
)
from storage.db import session_scope
from storage.models import Message, ReviewCall, ReviewDecision
from tests.conftest import SHARED_DIR, Clock
from tests.fakes import FakeCall
from tests.steps import StepLog
from tests.world import World, build_world

SPEECH = SHARED_DIR / "audio" / "espeak-nl" / "01.wav"
RULES = ReviewRules(key_timeout_s=0.1)


class FakeDialer:
    """Each number answers and presses keys (the real review flow runs on a fake call), or does not
    answer; records every dial, counts concurrency."""

    ready = True

    def __init__(self, world: World, after: StepLog, tmp_path: Path, keys: Mapping[str, list[object]],
                 ring_s: float = 0.02, ring_until: int | None = None) -> None:
        self.world = world
        self.after = after
        self.tmp_path = tmp_path
        self.keys = keys
        self.ring_s = ring_s
        # A call rings until this many ring at once (at most ring_s): concurrency is then shown by the
        # code under test, not by a short sleep that a loaded machine outlasts.
        self.ring_until = ring_until
        self._all_ringing = asyncio.Event()
        self.calls: OutboundCalls | None = None
        self.dialled: list[str] = []
        self.active = 0
        self.peak = 0
        self.ends: list[str] = []

    async def dial(self, call_id: str, number: str, *, context: str, variables: Mapping[str, str],
                   ring_timeout_s: float, exten: str = "s") -> Dialled:
        assert context == REVIEW_CONTEXT and variables == {"BINFOON_REVIEW": call_id}
        self.dialled.append(number)
        self.active += 1
        self.peak = max(self.peak, self.active)
        if self.ring_until is not None and self.active >= self.ring_until:
            self._all_ringing.set()
        try:
            if self.ring_until is None:
                await asyncio.sleep(self.ring_s)
            else:
                try:
                    await asyncio.wait_for(self._all_ringing.wait(), self.ring_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.active -= 1
        if number not in self.keys:
            return Dialled(DialOutcome.NO_ANSWER)
        asyncio.ensure_future(self._conversation(call_id, self.keys[number]))
        return Dialled(DialOutcome.ANSWERED)

    async def _conversation(self, call_id: str, script: list[object]) -> None:
        # What the AGI route does: the flow takes the call, runs, and its end ends the call.
        assert self.calls is not None
        self.calls.flow_started(call_id)
        end = "hung_up"
        try:
            call = FakeCall(script, self.tmp_path, caller_id="")
            end = (await coordinator_review(call, self.world.reviews, call_id, RULES, self.after)).value
        except Exception as exc:
            if type(exc).__name__ != "CallHungUp":
                raise
        finally:
            self.ends.append(end)
            self.calls.flow_ended(call_id, end)


async def _submitted(world: World, tmp_path: Path, urgency: Urgency) -> int:
    desk = world.desk
    message_id = await desk.create_draft(Officer(world.officer_id, "P", "nl", None), world.bin_id, urgency)
    spool = tmp_path / f"spool-{message_id}.wav"
    spool.write_bytes(SPEECH.read_bytes())
    await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    await desk.submit(message_id, 1, "test")
    return message_id


async def _round(world: World, tmp_path: Path, clock: Clock, keys: Mapping[str, list[object]],
                 urgency: Urgency = Urgency.URGENT, max_channels: int = 10, **ringing: float
                 ) -> tuple[int, FakeDialer, StepLog, AlarmClock, ReviewDispatcher]:
    after = StepLog()
    dialer = FakeDialer(world, after, tmp_path, keys, **ringing)  # type: ignore[arg-type]
    calls = OutboundCalls(dialer, max_channels=max_channels, max_cps=1000)  # type: ignore[arg-type]
    dialer.calls = calls
    alarms = AlarmClock(world.engine)
    rounds = ReviewDispatcher(world.reviews, calls, alarms, after, ring_timeout_s=1.0, retry_after_s=900.0,
                              clock=clock)
    message_id = await _submitted(world, tmp_path, urgency)
    await rounds.run_round(message_id)
    assert calls.busy == 0  # every review call ended and freed its channel
    return message_id, dialer, after, alarms, rounds


def _world(tmp_path: Path, clock: Clock, **kwargs: object) -> World:
    return build_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store", clock=clock, **kwargs)  # type: ignore[arg-type]


def _calls(world: World, message_id: int) -> list[ReviewCall]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(ReviewCall).where(ReviewCall.message_id == message_id)
                              .order_by(ReviewCall.dialled_at, ReviewCall.id)))


async def test_sequential_round_calls_in_order_and_stops_at_the_first_decision(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=3)
    first, second, third = (phone for _, phone in world.coordinators)
    message_id, dialer, after, _, _ = await _round(world, tmp_path, clock, {second: ["1"], third: ["9"]})
    assert dialer.dialled == [first, second]      # the third is never called
    assert dialer.peak == 1                       # one at a time
    assert [d.decision for d in after.decisions] == [Decision.FORWARD_NOW]
    calls = _calls(world, message_id)  # the fake clock stands still: the dial order is the dialer's
    assert {(c.e164, c.dial_outcome, c.status) for c in calls} == {
        (first, "no_answer", AttemptStatus.ENDED), (second, "answered", AttemptStatus.ENDED)}
    assert all(c.ended_at is not None for c in calls)


async def test_parallel_round_calls_everyone_at_once_and_one_decision_wins(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=3, mode=ReviewMode.PARALLEL)
    phones = [phone for _, phone in world.coordinators]
    message_id, dialer, after, _, _ = await _round(world, tmp_path, clock, {phone: ["1"] for phone in phones},
                                                   ring_s=5.0, ring_until=3)
    assert sorted(dialer.dialled) == sorted(phones) and dialer.peak == 3
    assert len(after.decisions) == 1              # one decision stored and handed on
    assert sorted(dialer.ends).count("forward_now") == 1
    with session_scope(world.engine) as s:
        assert len(s.scalars(select(ReviewDecision)).all()) == 1
        assert s.get_one(Message, message_id).status is MessageStatus.APPROVED


async def test_the_channel_limit_holds_review_calls_too(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=3, mode=ReviewMode.PARALLEL)
    # Rings 0.5 s unless all three ring at once: a broken limit shows as peak 3 at once.
    _, dialer, _, _, _ = await _round(world, tmp_path, clock, {}, max_channels=2, ring_s=0.5, ring_until=3)
    assert len(dialer.dialled) == 3 and dialer.peak == 2


async def test_nobody_decides_an_urgent_message_is_forwarded_by_the_zone(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=2)
    message_id, dialer, after, _, _ = await _round(world, tmp_path, clock, {})
    assert len(dialer.dialled) == 2
    [decided] = after.decisions
    assert decided.decision is Decision.FORWARD_NOW and decided.deliver_at == clock.now
    with session_scope(world.engine) as s:
        decision = s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).one()
        assert decision.via == "escalation" and decision.person_id is None


async def test_nobody_decides_the_police_approvers_are_called_next(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=1, approvers=2, escalation=Escalation.POLICE_APPROVER)
    [(_, coordinator)] = world.coordinators
    approver_1, approver_2 = (phone for _, phone in world.approvers)
    message_id, dialer, after, _, _ = await _round(world, tmp_path, clock, {approver_2: ["9"]})
    assert dialer.dialled == [coordinator, approver_1, approver_2]
    assert [d.decision for d in after.decisions] == [Decision.REJECT]
    assert sorted((c.e164, c.role.value) for c in _calls(world, message_id)) == sorted([
        (coordinator, Role.COORDINATOR.value), (approver_1, Role.POLICE_APPROVER.value),
        (approver_2, Role.POLICE_APPROVER.value)])


async def test_nobody_decides_a_preventive_message_waits_for_its_alarm(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=2)
    message_id, dialer, after, alarms, rounds = await _round(world, tmp_path, clock, {}, urgency=Urgency.PREVENTIVE)
    # The alarm clock runs on real time and the test's clock is in the past: the alarm is overdue and
    # fires at once. It only records here, so it cannot start rounds beside the one this test runs (under
    # load it once did: rounds {1, 2, 3, 4}).
    fired: list[int] = []

    async def record(fired_for: int) -> None:
        fired.append(fired_for)
    alarms.start({REVIEW_RETRY: record})
    try:
        assert len(dialer.dialled) == 2 and after.decisions == []
        at = alarms.when(REVIEW_RETRY, message_id)
        assert at is not None and (at - clock.now).total_seconds() == pytest.approx(900.0)
        with session_scope(world.engine) as s:
            assert s.get_one(Message, message_id).status is MessageStatus.WITH_COORDINATORS
        # The next round is round 2, and a decided message is not called about again.
        await rounds.run_round(message_id)
        assert {c.round for c in _calls(world, message_id)} == {1, 2}
    finally:
        alarms.shutdown()


async def test_a_round_never_runs_twice_at_once_for_one_message(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=1)
    after = StepLog()
    [(_, phone)] = world.coordinators
    dialer = FakeDialer(world, after, tmp_path, {phone: ["1"]}, ring_s=0.2)
    calls = OutboundCalls(dialer, max_channels=5, max_cps=1000)  # type: ignore[arg-type]
    dialer.calls = calls
    rounds = ReviewDispatcher(world.reviews, calls, AlarmClock(world.engine), after, ring_timeout_s=1.0,
                              retry_after_s=900.0, clock=clock)
    message_id = await _submitted(world, tmp_path, Urgency.URGENT)
    rounds.start(message_id)
    rounds.start(message_id)  # the sweep finds it again while the round runs
    assert rounds.busy_with(message_id)
    await asyncio.gather(*rounds._rounds.values())
    assert dialer.dialled == [phone] and len(after.decisions) == 1
