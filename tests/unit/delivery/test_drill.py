"""Drills (ivr/delivery/drill.py): started and scheduled by whom, delivered as what, reported how.

Real SQLite and espeak-ng; no Asterisk (the slow twin is tests/integration/test_drill.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ivr.chain.steps import DRILL, Chain
from ivr.delivery.drill import (
    DrillError,
    DrillRefused,
    add_months,
    cancel_drill_schedule,
    drill_schedules,
    fire_scheduled_drill,
    latest_drills,
    next_drill_at,
    reach_report,
    schedule_drill,
    start_drill,
)
from ivr.delivery.member_call import MemberEnd, MemberRules, member_call
from ivr.delivery.member_callback import CallbackEnd, member_callback
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import AttemptOutcome, AttemptStatus, MessageStatus, Role, Urgency
from storage.db import session_scope
from storage.models import (
    AuditEntry,
    CallAttempt,
    Campaign,
    Confirmation,
    DrillSchedule,
    Message,
    Person,
    ReviewDecision,
)
from tests.conftest import Clock, PersonFactory
from tests.fakes import FakeCall
from tests.unit.delivery.sent import delivery_desk
from tests.world import OTHER_ZONE_BIN, World

OPERATOR = Actor.operator("cli:test")
UTC = dt.timezone.utc


def _actor(person_id: int) -> Actor:
    return Actor(f"web:person:{person_id}", person_id, False)


def _drill(world: World, clock: Clock, actor: Actor = OPERATOR, bin_number: int = 12, text: str | None = None) -> int:
    return start_drill(world.engine, world.desk.store, bin_number, actor, text=text, clock=clock)


def _done(world: World, message_id: int) -> None:
    """The drill went out (its campaign ended): another drill of the BIN may start."""
    with session_scope(world.engine) as s:
        s.get_one(Message, message_id).status = MessageStatus.DONE


def test_a_drill_is_an_approved_preventive_test_message_delivered_now(world: World, clock: Clock) -> None:
    message_id = _drill(world, clock)
    with session_scope(world.engine) as s:
        message = s.get_one(Message, message_id)
        assert (message.drill, message.status, message.urgency) == (True, MessageStatus.APPROVED, Urgency.PREVENTIVE)
        assert message.deliver_at is not None and message.deliver_at.replace(tzinfo=UTC) == clock.now
        assert message.text is not None and message.text.startswith("Testbericht BIN-foon")
        [take] = message.recordings
        assert take.take == message.submitted_take == 1 and take.duration_s > 2.0
        decision = s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).one()
        assert (decision.via, decision.person_id) == ("drill", None)
        actions = [e.action for e in s.scalars(select(AuditEntry).where(AuditEntry.subject == f"message:{message_id}"))]
    assert actions == ["recording.stored", "drill.started"]
    # The service's next step (``Chain.reconcile`` -> ``deliver``) makes its campaign, a drill's plan.
    desk = delivery_desk(world)
    started = asyncio.run(desk.start_campaign(message_id))
    assert started is not None and started.created
    [plan] = asyncio.run(desk.plans())
    assert plan.drill and not plan.urgent and plan.message_id == message_id


def test_the_drill_speaks_the_bins_language_or_the_given_text(world: World, clock: Clock) -> None:
    with session_scope(world.engine) as s:
        from ivr.domain.vocabulary import Language
        from storage.models import Bin
        s.scalars(select(Bin).where(Bin.number == 12)).one().language = Language.FR
    french = _drill(world, clock)
    _done(world, french)
    own = _drill(world, clock, text="  Proef   van het netwerk ")
    _done(world, own)
    with session_scope(world.engine) as s:
        assert s.get_one(Message, french).text.startswith("Message de test BIN-foon")  # type: ignore[union-attr]
        assert s.get_one(Message, own).text == "Proef van het netwerk"
    with pytest.raises(DrillError, match="empty"):
        _drill(world, clock, text="   ")
    with pytest.raises(DrillError, match="2001 characters"):
        _drill(world, clock, text="a" * 2001)
    with pytest.raises(DrillError, match="no BIN number 77"):
        _drill(world, clock, bin_number=77)


def test_who_may_drill_a_bin(world: World, clock: Clock, person: PersonFactory) -> None:
    coordinator = person(Role.COORDINATOR)
    other_coordinator = person(Role.COORDINATOR, bin_number=OTHER_ZONE_BIN)
    member = person(Role.MEMBER)
    officer = person(Role.POLICE_OFFICER)
    other_officer = person(Role.POLICE_OFFICER, zone_code="5416")
    admin = person(Role.ADMIN)
    gone_admin = person(Role.ADMIN, active=False)
    for allowed in (coordinator, officer, admin):
        _done(world, _drill(world, clock, _actor(allowed.id)))
    for refused in (other_coordinator, member, other_officer, gone_admin):
        with pytest.raises(DrillRefused):
            _drill(world, clock, _actor(refused.id))
    with session_scope(world.engine) as s:
        authors = [m.created_by_id for m in s.scalars(select(Message).where(Message.drill.is_(True)))]
    assert authors == [coordinator.id, officer.id, admin.id]  # nothing written for a refusal


def test_months_are_calendar_months_at_the_same_local_hour() -> None:
    winter = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)  # 10:00 in Brussels
    assert add_months(winter, 3) == dt.datetime(2027, 4, 15, 8, 0, tzinfo=UTC)  # 10:00 summer time
    assert add_months(dt.datetime(2027, 1, 31, 9, tzinfo=UTC), 1) == dt.datetime(2027, 2, 28, 9, tzinfo=UTC)
    assert add_months(dt.datetime(2027, 11, 30, 9, tzinfo=UTC), 3) == dt.datetime(2028, 2, 29, 9, tzinfo=UTC)
    # Drills missed while the service was down: the next date is the first one after now, one drill for all.
    now = dt.datetime(2027, 12, 1, tzinfo=UTC)
    assert next_drill_at(winter, 3, now) == dt.datetime(2028, 1, 15, 9, 0, tzinfo=UTC)
    assert next_drill_at(winter, 3, winter) == dt.datetime(2027, 4, 15, 8, 0, tzinfo=UTC)


def test_a_schedule_is_set_checked_listed_and_removed(world: World, clock: Clock, person: PersonFactory) -> None:
    first = clock.now + dt.timedelta(days=30)
    member = person(Role.MEMBER)
    with session_scope(world.engine) as s:
        with pytest.raises(DrillRefused):
            schedule_drill(s, 12, 3, first, _actor(member.id), now=clock.now)
        with pytest.raises(DrillError, match="in the past"):
            schedule_drill(s, 12, 3, clock.now - dt.timedelta(minutes=1), OPERATOR, now=clock.now)
        with pytest.raises(DrillError, match="1 to 24"):
            schedule_drill(s, 12, 0, first, OPERATOR, now=clock.now)
    with session_scope(world.engine) as s:
        schedule_drill(s, 12, 3, first, OPERATOR, now=clock.now)
        schedule_drill(s, 12, 6, first + dt.timedelta(days=1), OPERATOR, now=clock.now)  # replaces it
    with session_scope(world.engine) as s:
        [line] = drill_schedules(s)
        assert (line.bin_number, line.every_months, line.next_at) == (12, 6, first + dt.timedelta(days=1))
        assert cancel_drill_schedule(s, 12, OPERATOR) is True
    with session_scope(world.engine) as s:
        assert drill_schedules(s) == [] and cancel_drill_schedule(s, 12, OPERATOR) is False
        actions = [e.action for e in s.scalars(select(AuditEntry).where(AuditEntry.action.like("drill.%")))]
    assert actions == ["drill.scheduled", "drill.scheduled", "drill.unscheduled"]


def test_a_due_schedule_fires_once_and_moves_on(world: World, clock: Clock) -> None:
    first = clock.now + dt.timedelta(hours=1)
    with session_scope(world.engine) as s:
        schedule_drill(s, 12, 3, first, OPERATOR, now=clock.now)
    store = world.desk.store
    assert fire_scheduled_drill(world.engine, store, world.bin_id, clock.now) == (None, first)  # early: nothing
    # The service was down for seven months: one drill goes, and the next date is after now.
    late = first + dt.timedelta(days=210)
    message_id, next_at = fire_scheduled_drill(world.engine, store, world.bin_id, late)
    assert message_id is not None and next_at == next_drill_at(first, 3, late) and next_at > late
    assert fire_scheduled_drill(world.engine, store, world.bin_id, late) == (None, next_at)  # fired twice: one drill
    with session_scope(world.engine) as s:
        assert latest_drills(s, 12) == [message_id]
        assert s.scalars(select(DrillSchedule)).one().next_at.replace(tzinfo=UTC) == next_at
    with session_scope(world.engine) as s:
        cancel_drill_schedule(s, 12, OPERATOR)
    assert fire_scheduled_drill(world.engine, store, world.bin_id, next_at) == (None, None)  # removed: nothing


class FakeAlarms:
    """The alarm clock's surface the chain uses, in memory."""

    def __init__(self) -> None:
        self.alarms: dict[tuple[str, int], dt.datetime] = {}
        self.set_count = 0

    def wake_at(self, kind: str, key: int, at: dt.datetime) -> None:
        self.alarms[(kind, key)] = at
        self.set_count += 1

    def when(self, kind: str, key: int) -> dt.datetime | None:
        return self.alarms.get((kind, key))

    def cancel(self, kind: str, key: int) -> None:
        self.alarms.pop((kind, key), None)


async def test_the_chain_keeps_the_drill_alarms_and_delivers_a_fired_drill(world: World, clock: Clock) -> None:
    alarms = FakeAlarms()
    desk = delivery_desk(world)
    chain = Chain(world.desk, desk, None, alarms, clock=clock)  # type: ignore[arg-type]
    first = clock.now + dt.timedelta(hours=1)
    with session_scope(world.engine) as s:
        schedule_drill(s, 12, 3, first, OPERATOR, now=clock.now)  # by another process (the command line)
    await chain._reconcile_drills()
    await chain._reconcile_drills()
    assert alarms.alarms == {(DRILL, world.bin_id): first} and alarms.set_count == 1
    clock.now = first
    await chain.drill_alarm(world.bin_id)
    await asyncio.gather(*chain._tasks)
    assert alarms.alarms == {(DRILL, world.bin_id): add_months(first, 3)}
    with session_scope(world.engine) as s:
        [campaign] = s.scalars(select(Campaign)).all()
        assert campaign.message.drill and campaign.message.status is MessageStatus.DELIVERING
        cancel_drill_schedule(s, 12, OPERATOR)
    await chain._reconcile_drills()
    assert alarms.alarms == {}


def _campaign_of(world: World, message_id: int, clock: Clock) -> int:
    started = asyncio.run(delivery_desk(world).start_campaign(message_id))
    assert started is not None
    return started.campaign_id


def _attempt(s: Any, campaign_id: int, person_id: int, e164: str, no: int, outcome: AttemptOutcome,
             dial: str, rank: str = "primary", cause: int | None = None) -> None:
    from ivr.domain.vocabulary import PhoneRank
    s.add(CallAttempt(campaign_id=campaign_id, person_id=person_id, e164=e164, attempt_no=no, rank=PhoneRank(rank),
                      status=AttemptStatus.ENDED, outcome=outcome, dial_outcome=dial, hangup_cause=cause))


def test_the_reach_report_counts_who_heard_it_and_finds_wrong_numbers(world: World, clock: Clock,
                                                                     person: PersonFactory) -> None:
    confirms = person(Role.MEMBER, name="Confirms")
    second = person(Role.MEMBER, name="Second number", second_phone="+32496999001")
    no_key = person(Role.MEMBER, name="No key")
    machine = person(Role.MEMBER, name="Machine")
    busy = person(Role.MEMBER, name="Busy")
    barred = person(Role.MEMBER, name="Barred")
    message_id = _drill(world, clock)
    campaign_id = _campaign_of(world, message_id, clock)
    with session_scope(world.engine) as s:
        _attempt(s, campaign_id, confirms.id, confirms.phone, 1, AttemptOutcome.CONFIRMED, "answered")
        _attempt(s, campaign_id, second.id, second.phone, 1, AttemptOutcome.INVALID_NUMBER, "invalid_number", cause=1)
        _attempt(s, campaign_id, second.id, "+32496999001", 2, AttemptOutcome.CONFIRMED, "answered", "secondary")
        _attempt(s, campaign_id, no_key.id, no_key.phone, 1, AttemptOutcome.ANSWERED_NO_KEY, "answered")
        _attempt(s, campaign_id, machine.id, machine.phone, 1, AttemptOutcome.VOICEMAIL, "answered")
        _attempt(s, campaign_id, busy.id, busy.phone, 1, AttemptOutcome.BUSY, "busy")
        _attempt(s, campaign_id, busy.id, busy.phone, 2, AttemptOutcome.FAILED, "failed")
        _attempt(s, campaign_id, barred.id, barred.phone, 1, AttemptOutcome.INVALID_NUMBER, "barred")
        s.add(Confirmation(campaign_id=campaign_id, person_id=confirms.id, via="call"))
        s.add(Confirmation(campaign_id=campaign_id, person_id=second.id, via="call"))
    with session_scope(world.engine) as s:
        running = reach_report(s, message_id)
        s.get_one(Campaign, campaign_id).status = s.get_one(Campaign, campaign_id).status.__class__("done")
    assert running.pending == 2 and running.not_reached == 0  # busy and barred may yet be called
    with session_scope(world.engine) as s:
        report = reach_report(s, message_id)
    assert (report.bin_number, report.campaign_id, report.status) == (12, campaign_id, "done")
    assert report.counts() == {"members": 6, "reached": 4, "confirmed": 2, "not_reached": 2, "pending": 0,
                               "not_called": 0, "wrong_numbers": 2}
    states = {line.name: (line.state, line.last_outcome) for line in report.members}
    assert states["Machine"] == ("machine", "voicemail") and states["Busy"] == ("not_reached", "failed")
    wrong = {(w.name, w.rank, w.why, w.cause) for w in report.wrong_numbers}
    assert wrong == {("Second number", "primary", "invalid_number", 1), ("Barred", "primary", "barred", None)}
    assert all("*" in w.number and w.number != barred.phone for w in report.wrong_numbers)  # masked
    with session_scope(world.engine) as s, pytest.raises(LookupError):
        reach_report(s, 999)


def test_members_the_drill_does_not_call_are_no_phone_figure(world: World, clock: Clock,
                                                             person: PersonFactory) -> None:
    """A text-only member and one who opted out of calls are never called: neither pending while the
    drill runs nor "not reached" once it is done, but counted apart; one who confirmed by SMS counts."""
    called = person(Role.MEMBER, name="Called")
    deaf = person(Role.MEMBER, name="Text only")
    opted_out = person(Role.MEMBER, name="No calls")
    replied = person(Role.MEMBER, name="Replied by SMS")
    with session_scope(world.engine) as s:
        s.get_one(Person, deaf.id).channels = "sms"
        s.get_one(Person, replied.id).channels = "sms"
        s.get_one(Person, opted_out.id).calls_opt_out_at = clock.now
    message_id = _drill(world, clock)
    campaign_id = _campaign_of(world, message_id, clock)
    with session_scope(world.engine) as s:
        s.add(Confirmation(campaign_id=campaign_id, person_id=replied.id, via="sms"))
    with session_scope(world.engine) as s:
        running = reach_report(s, message_id)
    assert (running.pending, running.not_reached, running.not_called, running.reached) == (1, 0, 2, 1)
    with session_scope(world.engine) as s:
        _attempt(s, campaign_id, called.id, called.phone, 1, AttemptOutcome.NO_ANSWER, "no_answer")
        s.get_one(Campaign, campaign_id).status = s.get_one(Campaign, campaign_id).status.__class__("done")
    with session_scope(world.engine) as s:
        report = reach_report(s, message_id)
    assert report.counts() == {"members": 4, "reached": 1, "confirmed": 1, "not_reached": 1, "pending": 0,
                               "not_called": 2, "wrong_numbers": 0}
    assert {line.name: line.state for line in report.members} == {
        "Called": "not_reached", "Text only": "not_called", "No calls": "not_called", "Replied by SMS": "confirmed"}
    assert report.to_json()["counts"]["not_called"] == 2


async def test_every_prompt_of_a_drill_call_says_it_is_a_test(world: World, clock: Clock, tmp_path: Path,
                                                              person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    message_id = await asyncio.to_thread(_drill, world, clock)
    desk = delivery_desk(world)
    started = await desk.start_campaign(message_id)
    assert started is not None
    attempt_id = await desk.begin_attempt(started.campaign_id, member.id, member.phone, "primary", 1)
    assert attempt_id is not None

    call = FakeCall(["1"], tmp_path)
    end = await member_call(call, call, desk, attempt_id, "HUMAN", MemberRules(key_timeout_s=1.0))  # type: ignore[arg-type]
    assert end is MemberEnd.CONFIRMED
    assert call.said == ["member_header_drill", "member_keys_drill", "member_thanks_drill"]
    # The member who calls the line back hears the drill as a test too.
    other = person(Role.MEMBER)
    back = FakeCall(["1"], tmp_path, caller_id=other.phone)
    assert await member_callback(back, desk, 1.0) is CallbackEnd.CONFIRMED
    # (The call-back line's offer to stop BIN calls, issue 17, is about the calls, not the message.)
    assert back.said == ["member_header_drill", "member_keys_drill", "callback_calls_stop_offer",
                         "member_thanks_drill"]
