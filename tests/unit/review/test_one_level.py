"""One-level BINs ("1 niveau"): the message goes straight to the members, each coordinator gets ONE
notice call; counted on a fake dialer with the real conversations and a real database."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import select

from ivr.review.flow import ReviewEnd
from ivr.review.rounds import REVIEW_RETRY, ReviewDispatcher
from ivr.review.store import Contact
from ivr.scheduler import AlarmClock
from ivr.domain.vocabulary import Decision, MessageStatus, Role, Urgency
from ivr.telephony.outbound import OutboundCalls
from storage.db import session_scope
from storage.models import AuditEntry, Bin, Message, ReviewCall, ReviewDecision
from tests.conftest import Clock
from tests.steps import StepLog
from tests.unit.review.test_rounds import FakeDialer, _calls, _round, _submitted, _world
from tests.world import World


def alarm_at(alarms: AlarmClock, message_id: int) -> dt.datetime | None:
    """The review alarm of ``message_id``, read from a started clock whose firing only records (the
    clock runs on real time, the test's clock is in the past: an alarm is overdue and would fire)."""
    fired: list[int] = []

    async def record(message: int) -> None:
        fired.append(message)
    alarms.start({REVIEW_RETRY: record})
    try:
        return alarms.when(REVIEW_RETRY, message_id)
    finally:
        alarms.shutdown()


def one_level(world: World) -> World:
    with session_scope(world.engine) as s:
        s.get_one(Bin, world.bin_id).one_level = True
    return world


async def test_straight_to_the_members_and_one_notice_per_coordinator(tmp_path: Path, clock: Clock) -> None:
    world = one_level(_world(tmp_path, clock, coordinators=3))
    phones = [phone for _, phone in world.coordinators]
    # The first listens to the message (1), the second hangs up after the notice, the third never answers.
    message_id, dialer, after, alarms, rounds = await _round(world, tmp_path, clock, {phones[0]: ["1"], phones[1]: [None]})
    [decided] = after.decisions
    assert decided.decision is Decision.FORWARD_NOW and decided.deliver_at == clock.now
    assert sorted(dialer.dialled) == sorted(phones)            # each coordinator rung once, no retry
    calls = _calls(world, message_id)
    assert sorted(c.purpose for c in calls) == ["notice"] * 3  # no review call at all
    assert sorted(dialer.ends) == ["notice_heard", "notice_heard"]
    with session_scope(world.engine) as s:
        decision = s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).one()
        assert (decision.via, decision.person_id) == ("one_level", None)
        assert s.get_one(Message, message_id).status is MessageStatus.APPROVED
        actions = [a.action for a in s.scalars(select(AuditEntry).where(AuditEntry.subject == f"message:{message_id}"))]
        assert "message.forward_now" in actions and "message.to_coordinators" not in actions
        # The coordinator who pressed 1 heard the recording, and that was audited.
        assert actions.count("recording.played") == 1
    # The alarm or a restart runs the round again: nobody is rung twice.
    await rounds.run_round(message_id)
    assert len(dialer.dialled) == 3 and len(after.decisions) == 1
    assert alarm_at(alarms, message_id) is None


async def test_a_preventive_one_level_message_at_night_notices_wait_for_the_morning(tmp_path: Path, clock: Clock) -> None:
    world = one_level(_world(tmp_path, clock, coordinators=2))
    clock.now = dt.datetime(2026, 11, 23, 22, 0, tzinfo=dt.timezone.utc)  # 23:00 in Brussels
    message_id, dialer, after, alarms, rounds = await _round(world, tmp_path, clock, {}, urgency=Urgency.PREVENTIVE)
    assert [d.decision for d in after.decisions] == [Decision.FORWARD_NOW]  # delivery keeps its own hours
    assert dialer.dialled == []                                              # no coordinator rung at night
    assert alarm_at(alarms, message_id) == dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.timezone.utc)
    clock.now = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.timezone.utc)     # 08:00: the alarm's round
    await rounds.run_round(message_id)
    assert sorted(dialer.dialled) == sorted(phone for _, phone in world.coordinators)
    with session_scope(world.engine) as s:
        assert s.scalar(select(ReviewCall.purpose).where(ReviewCall.message_id == message_id).distinct()) == "notice"


async def test_a_normal_bin_still_reviews(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=1)
    [(_, phone)] = world.coordinators
    message_id, dialer, after, _, _ = await _round(world, tmp_path, clock, {phone: ["1"]})
    assert [c.purpose for c in _calls(world, message_id)] == ["review"] and dialer.ends == [ReviewEnd.FORWARD_NOW.value]


async def test_notices_not_placed_before_a_crash_are_placed_at_the_restart(tmp_path: Path, clock: Clock) -> None:
    # The decision was committed (delivery started), then the process stopped before the notice calls.
    world = one_level(_world(tmp_path, clock, coordinators=2))
    (first_id, first), (_, second) = world.coordinators
    message_id = await _submitted(world, tmp_path, Urgency.URGENT)
    assert await world.reviews.decide(message_id, Decision.FORWARD_NOW, person_id=None, review_call_id=None,
                                      via="one_level") is not None
    # ... one notice was written (and perhaps dialled) before it stopped: only the other is owed.
    await world.reviews.new_review_call(message_id, Contact(first_id, first, Role.COORDINATOR), 1, "notice")
    since = clock.now - dt.timedelta(hours=1)
    assert await world.reviews.pending_notices(since) == [message_id]
    assert await world.reviews.pending_notices(clock.now + dt.timedelta(seconds=1)) == []   # decided before
    rounds, dialer = _dispatcher(world, tmp_path, clock)
    assert await rounds.resume_notices(since) == [message_id]
    await asyncio.gather(*rounds._rounds.values())
    assert dialer.dialled == [second]
    assert await world.reviews.pending_notices(since) == []
    assert await rounds.resume_notices(since) == [] and dialer.dialled == [second]      # nobody twice


async def test_no_notice_is_owed_for_a_rejected_or_reviewed_message(tmp_path: Path, clock: Clock) -> None:
    world = one_level(_world(tmp_path, clock, coordinators=1, approvers=1))
    since = clock.now - dt.timedelta(hours=1)
    rejected = await _submitted(world, tmp_path, Urgency.URGENT)
    await world.reviews.decide(rejected, Decision.REJECT, person_id=None, review_call_id=None, via="one_level")
    reviewed = await _submitted(world, tmp_path, Urgency.URGENT)   # decided on the web console, say
    await world.reviews.decide(reviewed, Decision.FORWARD_NOW, person_id=world.coordinators[0][0],
                               review_call_id=None, via="web")
    assert await world.reviews.pending_notices(since) == []
    # A normal BIN's auto-forward is no one-level message either.
    with session_scope(world.engine) as s:
        s.get_one(Bin, world.bin_id).one_level = False
    forwarded = await _submitted(world, tmp_path, Urgency.URGENT)
    await world.reviews.decide(forwarded, Decision.FORWARD_NOW, person_id=None, review_call_id=None, via="one_level")
    assert await world.reviews.pending_notices(since) == []


def _dispatcher(world: World, tmp_path: Path, clock: Clock) -> tuple[ReviewDispatcher, FakeDialer]:
    after = StepLog()
    dialer = FakeDialer(world, after, tmp_path, {})
    calls = OutboundCalls(dialer, max_channels=5, max_cps=1000)  # type: ignore[arg-type]
    dialer.calls = calls
    return ReviewDispatcher(world.reviews, calls, AlarmClock(world.engine), after, ring_timeout_s=1.0,
                            retry_after_s=900.0, clock=clock), dialer
