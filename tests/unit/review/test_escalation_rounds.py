"""Bounded escalation of a waiting preventive message: no round in quiet hours, at most the zone's
rounds, then the police are told once (the author, else the zone's approvers), audited; it stays waiting."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.domain.vocabulary import Decision, MessageStatus, Urgency
from ivr.review.rounds import ReviewDispatcher, RoundRules
from ivr.review.policy import QuietHours
from storage.db import session_scope
from storage.models import AuditEntry, Message, PhoneNumber, PoliceZone
from tests.conftest import Clock
from tests.unit.review.test_one_level import alarm_at
from tests.unit.review.test_rounds import _calls, _round, _world
from tests.world import OFFICER_PHONE

UTC = dt.timezone.utc


def _told(world, message_id: int) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    with session_scope(world.engine) as s:
        return [a.details for a in s.scalars(select(AuditEntry).where(
            AuditEntry.subject == f"message:{message_id}", AuditEntry.action == "message.nobody_reviewed"))]


async def test_a_preventive_message_submitted_at_night_rings_nobody_until_morning(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=2)
    clock.now = dt.datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # 00:30 in Brussels
    message_id, dialer, after, alarms, _ = await _round(world, tmp_path, clock, {}, urgency=Urgency.PREVENTIVE)
    assert dialer.dialled == [] and after.decisions == []
    assert alarm_at(alarms, message_id) == dt.datetime(2026, 11, 24, 7, 0, tzinfo=UTC)  # 08:00 local
    with session_scope(world.engine) as s:  # with the coordinators: the sweep does not start it every second
        assert s.get_one(Message, message_id).status is MessageStatus.WITH_COORDINATORS


async def test_rounds_stop_at_the_zones_maximum_and_the_author_is_told_once(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=2)
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).review_max_rounds = 2
    clock.now = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    message_id, dialer, after, alarms, rounds = await _round(world, tmp_path, clock, {OFFICER_PHONE: ["1", None]},
                                                             urgency=Urgency.PREVENTIVE)
    assert len(dialer.dialled) == 2 and alarm_at(alarms, message_id) == clock.now + dt.timedelta(minutes=15)
    clock.advance(minutes=15)
    await rounds.run_round(message_id)                      # round 2, the last: the author is told
    assert dialer.dialled[2:] == [phone for _, phone in world.coordinators] + [OFFICER_PHONE]
    assert dialer.ends == ["police_told"]                   # heard it, pressed 1 to hear it again
    [details] = _told(world, message_id)
    assert details["rounds"] == 2 and details["told"] == [f"person:{world.officer_id}"]
    assert alarm_at(alarms, message_id) is None             # no third round
    await rounds.run_round(message_id)                      # a restart: nothing more
    assert len(dialer.dialled) == 5 and len(_told(world, message_id)) == 1
    purposes = [c.purpose for c in _calls(world, message_id)]
    assert purposes.count("review") == 4 and purposes.count("escalation") == 1
    with session_scope(world.engine) as s:
        assert s.get_one(Message, message_id).status is MessageStatus.WITH_COORDINATORS
    # A coordinator may still decide (the web console): the message was never given up.
    assert await world.reviews.decide(message_id, Decision.REJECT, person_id=world.coordinators[0][0],
                                      review_call_id=None, via="web") is not None


async def test_an_author_without_a_phone_the_zones_approvers_are_told(tmp_path: Path, clock: Clock) -> None:
    world = _world(tmp_path, clock, coordinators=1, approvers=2)
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).review_max_rounds = 1
        s.delete(s.scalars(select(PhoneNumber).where(PhoneNumber.e164 == OFFICER_PHONE)).one())
    clock.now = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    approver_1, approver_2 = (phone for _, phone in world.approvers)
    message_id, dialer, _, _, _ = await _round(world, tmp_path, clock, {approver_2: [None]}, urgency=Urgency.PREVENTIVE)
    assert dialer.dialled[1:] == [approver_1, approver_2]   # one after another until one answers
    [details] = _told(world, message_id)
    assert details["told"] == [f"person:{pid}" for pid, _ in world.approvers]


async def test_the_settings_maximum_applies_when_the_zone_has_none(tmp_path: Path, clock: Clock) -> None:
    from ivr.scheduler import AlarmClock
    from ivr.telephony.outbound import OutboundCalls
    from tests.steps import StepLog
    from tests.unit.review.test_rounds import FakeDialer, _submitted

    world = _world(tmp_path, clock, coordinators=1)
    clock.now = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    after = StepLog()
    dialer = FakeDialer(world, after, tmp_path, {})
    calls = OutboundCalls(dialer, max_channels=5, max_cps=1000)  # type: ignore[arg-type]
    dialer.calls = calls
    rounds = ReviewDispatcher(world.reviews, calls, AlarmClock(world.engine), after, ring_timeout_s=1.0,
                              retry_after_s=900.0, clock=clock,
                              rules=RoundRules(quiet_hours=QuietHours.parse("22:00-07:00"), max_rounds=1))
    message_id = await _submitted(world, tmp_path, Urgency.PREVENTIVE)
    await rounds.run_round(message_id)
    [(_, coordinator)] = world.coordinators
    assert dialer.dialled == [coordinator, OFFICER_PHONE]   # one round (the setting), then the author
    assert [d["rounds"] for d in _told(world, message_id)] == [1]


def test_round_rules_come_from_the_settings() -> None:
    from ivr.config import Settings

    rules = RoundRules.from_settings(Settings(quiet_hours="22:30-06:45", review_max_rounds=3))
    assert rules.quiet_hours == QuietHours(dt.time(22, 30), dt.time(6, 45)) and rules.max_rounds == 3
    assert str(rules.tz) == "Europe/Brussels"


def _one_round_zone(tmp_path: Path, clock: Clock):  # type: ignore[no-untyped-def]
    world = _world(tmp_path, clock, coordinators=1)
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).review_max_rounds = 1
    clock.now = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)   # 10:00 in Brussels
    return world


async def test_nobody_answers_the_police_the_call_is_made_again_and_audited_once(tmp_path: Path, clock: Clock) -> None:
    # Before the fix the audit row counted as "told": nobody answered, and nobody was ever called again.
    world = _one_round_zone(tmp_path, clock)
    [(_, coordinator)] = world.coordinators
    message_id, dialer, _, alarms, rounds = await _round(world, tmp_path, clock, {}, urgency=Urgency.PREVENTIVE)
    assert dialer.dialled == [coordinator, OFFICER_PHONE] and dialer.ends == []
    assert alarm_at(alarms, message_id) == clock.now + dt.timedelta(minutes=15)
    clock.advance(minutes=15)
    await rounds.run_round(message_id)                      # the alarm: the author again, no review round
    assert dialer.dialled[2:] == [OFFICER_PHONE]
    dialer.keys = {OFFICER_PHONE: [None]}
    clock.advance(minutes=15)
    await rounds.run_round(message_id)                      # answered: told
    assert dialer.dialled[3:] == [OFFICER_PHONE] and dialer.ends == ["police_told"]
    assert alarm_at(alarms, message_id) is None
    await rounds.run_round(message_id)                      # a restart: nothing more
    assert len(dialer.dialled) == 4 and len(_told(world, message_id)) == 1
    assert [c.purpose for c in _calls(world, message_id)].count("escalation") == 3


async def test_a_crash_before_the_police_call_they_are_called_at_the_restart(tmp_path: Path, clock: Clock) -> None:
    # The audit row is written, then the process stops before anybody is called.
    world = _one_round_zone(tmp_path, clock)

    from ivr.scheduler import AlarmClock
    from ivr.telephony.outbound import OutboundCalls
    from tests.steps import StepLog
    from tests.unit.review.test_rounds import FakeDialer, _submitted

    async def no_escalation(plan: object) -> bool:
        raise RuntimeError("the process stops here")

    after = StepLog()
    dialer = FakeDialer(world, after, tmp_path, {OFFICER_PHONE: [None]})
    calls = OutboundCalls(dialer, max_channels=5, max_cps=1000)  # type: ignore[arg-type]
    dialer.calls = calls
    crashing = ReviewDispatcher(world.reviews, calls, AlarmClock(world.engine), after, ring_timeout_s=1.0,
                                retry_after_s=900.0, clock=clock)
    crashing._tell_police = no_escalation  # type: ignore[method-assign]
    message_id = await _submitted(world, tmp_path, Urgency.PREVENTIVE)
    with pytest.raises(RuntimeError):
        await crashing.run_round(message_id)
    assert len(_told(world, message_id)) == 1 and dialer.dialled == [world.coordinators[0][1]]
    restarted = ReviewDispatcher(world.reviews, calls, AlarmClock(world.engine), after, ring_timeout_s=1.0,
                                 retry_after_s=900.0, clock=clock)
    await restarted.run_round(message_id)
    assert dialer.dialled[1:] == [OFFICER_PHONE] and dialer.ends == ["police_told"]
    assert len(_told(world, message_id)) == 1               # the audit row is not written twice


async def test_a_restart_at_night_tells_the_police_in_the_morning(tmp_path: Path, clock: Clock) -> None:
    # Rounds spent by day, the author did not answer; the process restarts at night. Before the fix the
    # restart rang the author at once about a preventive message.
    world = _one_round_zone(tmp_path, clock)
    message_id, dialer, _, alarms, rounds = await _round(world, tmp_path, clock, {}, urgency=Urgency.PREVENTIVE)
    assert len(dialer.dialled) == 2
    clock.now = dt.datetime(2026, 11, 23, 23, 30, tzinfo=UTC)   # 00:30 in Brussels
    await rounds.run_round(message_id)
    assert len(dialer.dialled) == 2
    assert alarm_at(alarms, message_id) == dt.datetime(2026, 11, 24, 7, 0, tzinfo=UTC)   # 08:00 local
    clock.now = dt.datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    await rounds.run_round(message_id)
    assert dialer.dialled[2:] == [OFFICER_PHONE]


async def test_nobody_answers_late_in_the_evening_the_police_call_waits_for_the_morning(
        tmp_path: Path, clock: Clock) -> None:
    world = _one_round_zone(tmp_path, clock)
    clock.now = dt.datetime(2026, 11, 23, 19, 50, tzinfo=UTC)   # 20:50 in Brussels; +15 min is night
    message_id, dialer, _, alarms, _ = await _round(world, tmp_path, clock, {}, urgency=Urgency.PREVENTIVE)
    assert len(dialer.dialled) == 2
    assert alarm_at(alarms, message_id) == dt.datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
