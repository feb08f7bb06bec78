"""Stop, cancel, retract, re-notify (``ivr.delivery.control``) over a real database and the fake dialer."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.archive.store import Archive
from ivr.delivery.control import (
    ControlError, cancel_message, may_control, renotify, retraction_text, stop_campaign, submit_retraction,
)
from ivr.delivery.report import campaign_report
from ivr.delivery.policy import RetryPolicy
from ivr.delivery.members import received, recipients
from ivr.delivery.store import DeliveryDesk
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import (
    AttemptOutcome, CampaignStatus, Decision, Language, MessageKind, MessageStatus, Role,
)
from ivr.web.pages.control import control_flags
from storage.db import session_scope
from storage.models import AuditEntry, CallAttempt, Campaign, Confirmation, Message, Person, RoleAssignment
from tests.unit.delivery.test_campaign_runner import CLIP, FakeDialer, _add_members, _approved, _runner, _until_done
from tests.world import World, build_world

OPERATOR = Actor.operator("cli:test")
POLICY = {True: RetryPolicy(retries=1, retry_after_s=0.2, no_key_retries=1, no_key_retry_after_s=0.2),
          False: RetryPolicy(retries=1, retry_after_s=0.2, no_key_retries=1, no_key_retry_after_s=0.2)}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store")


def _person(world: World, role: Role, *, bin_id: int | None = None, zone_id: int | None = None) -> int:
    with session_scope(world.engine) as s:
        person = Person(name=f"{role.value}", language=Language.NL)
        person.roles.append(RoleAssignment(role=role, bin_id=bin_id, zone_id=zone_id))
        s.add(person)
        s.flush()
        return person.id


def _campaign_of(world: World, message_id: int) -> int:
    with session_scope(world.engine) as s:
        return s.scalars(select(Campaign.id).where(Campaign.message_id == message_id)).one()


def _stop(world: World, campaign_id: int, actor: Actor = OPERATOR):  # type: ignore[no-untyped-def]
    with session_scope(world.engine) as s:
        return stop_campaign(s, campaign_id, actor, _now())


async def test_who_may_stop(world: World, tmp_path: Path) -> None:
    _add_members(world, 1)
    message_id = await _approved(world, tmp_path)
    other_bin_coordinator = _person(world, Role.COORDINATOR, bin_id=world.bin_id + 1)
    member = _person(world, Role.MEMBER, bin_id=world.bin_id)
    other_zone_admin = _person(world, Role.ADMIN, zone_id=world.zone_id + 1)
    allowed = {"author": world.officer_id, "coordinator": world.coordinators[0][0],
               "admin": _person(world, Role.ADMIN), "zone admin": _person(world, Role.ADMIN, zone_id=world.zone_id)}
    with session_scope(world.engine) as s:
        assert may_control(s, OPERATOR, message_id)
        for who, pid in allowed.items():
            assert may_control(s, Actor(f"web:person:{pid}", pid), message_id), who
        for pid in (other_bin_coordinator, member, other_zone_admin, 9999):
            assert not may_control(s, Actor(f"web:person:{pid}", pid, admin=True), message_id), pid
        with pytest.raises(ControlError, match="no message"):
            may_control(s, OPERATOR, 4242)
    campaign_id = _campaign_of(world, message_id)
    with pytest.raises(ControlError, match="refused"):
        _stop(world, campaign_id, Actor(f"web:person:{member}", member))
    with session_scope(world.engine) as s:  # the refusal outlived the caller's rollback; nothing changed
        assert s.scalar(select(AuditEntry.action).where(AuditEntry.action == "campaign.stop.refused")) is not None
        assert s.get_one(Campaign, campaign_id).status is CampaignStatus.RUNNING or \
            s.get_one(Campaign, campaign_id).status is CampaignStatus.SCHEDULED


async def test_a_stop_lets_no_call_start_and_calls_up_finish(world: World, tmp_path: Path) -> None:
    members = _add_members(world, 12)
    dialer = FakeDialer(world.desk, {}, call_s=0.3)  # type: ignore[arg-type]
    runner = _runner(world, dialer, max_channels=3, max_cps=20.0)
    message_id = await _approved(world, tmp_path)
    campaign_id = _campaign_of(world, message_id)
    await runner.start()
    try:
        while len(dialer.dialled) < 4:
            await asyncio.sleep(0.01)
        result = _stop(world, campaign_id, Actor(f"web:person:{world.officer_id}", world.officer_id))
        with session_scope(world.engine) as s:  # the stop is committed: every attempt there will be
            written_at_stop = set(s.scalars(select(CallAttempt.id)))
        # The calls up finish (their outcome is stored), and nothing else is dialled.
        while True:
            with session_scope(world.engine) as s:
                open_ = s.scalars(select(CallAttempt).where(CallAttempt.outcome.is_(None))).all()
            if not open_:
                break
            await asyncio.sleep(0.05)
        runner.wake()
        await asyncio.sleep(0.3)
    finally:
        await runner.stop()
    # Every call dialled belongs to an attempt written before the stop (one may be dialled just after it).
    assert len(dialer.dialled) == len(written_at_stop)
    with session_scope(world.engine) as s:
        campaign = s.get_one(Campaign, campaign_id)
        attempts = s.scalars(select(CallAttempt)).all()
        assert campaign.status is CampaignStatus.CANCELLED and campaign.stopped_by == f"web:person:{world.officer_id}"
        assert s.get_one(Message, message_id).status is MessageStatus.CANCELLED
        assert {a.id for a in attempts} == written_at_stop  # no attempt was written after the stop
        assert s.scalar(select(AuditEntry.action).where(AuditEntry.action == "campaign.stopped")) is not None
    assert result.members == 12 and result.never_called == 12 - len({a.person_id for a in attempts})
    report = campaign_report(world.engine, campaign_id, POLICY, _now())
    assert report.status == "stopped" and report.stopped_by == f"web:person:{world.officer_id}"
    states = {line.person_id: line.state for line in report.members}
    assert set(states) == set(members)
    called = {a.person_id for a in attempts}
    assert {p for p, st in states.items() if st == "not_called"} == set(members) - called
    assert all(states[p] in ("confirmed", "in_call_at_stop") for p in called), states
    # A second stop says why not; begin_attempt refuses the stopped campaign.
    with pytest.raises(ControlError, match="stopped: nothing to stop"):
        _stop(world, campaign_id)
    desk = DeliveryDesk(world.engine, world.desk.store)
    assert await desk.begin_attempt(campaign_id, members[-1], "+3294000011", "primary", 1) is None


async def test_a_later_message_cancelled_is_never_delivered(world: World, tmp_path: Path) -> None:
    _add_members(world, 2)
    desk = world.desk
    from ivr.police_line.store import Officer
    from ivr.telephony.call import Recorded

    message_id = await desk.create_draft(Officer(world.officer_id, "P", "nl", None), world.bin_id,
                                         __import__("ivr.domain.vocabulary").domain.vocabulary.Urgency.PREVENTIVE)
    spool = tmp_path / "later.wav"
    spool.write_bytes(CLIP.read_bytes())
    await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    await desk.submit(message_id, 1, "test")
    assert await world.reviews.decide(message_id, Decision.FORWARD_LATER, person_id=None, review_call_id=None,
                                      deliver_at=_now() + dt.timedelta(hours=2))
    coordinator = world.coordinators[0][0]
    with session_scope(world.engine) as s:
        cancel_message(s, message_id, Actor(f"phone:person:{coordinator}", coordinator), _now())
    with session_scope(world.engine) as s:
        assert s.get_one(Message, message_id).status is MessageStatus.CANCELLED
    # Its persistent alarm fires (at its time): nothing starts.
    later = DeliveryDesk(world.engine, desk.store, clock=lambda: _now() + dt.timedelta(hours=3))
    assert await later.start_campaign(message_id) is None
    with session_scope(world.engine) as s:
        assert s.scalars(select(Campaign)).all() == []
        with pytest.raises(ControlError, match="no longer be cancelled"):
            cancel_message(s, message_id, OPERATOR, _now())
    delivering = await _approved(world, tmp_path)
    with session_scope(world.engine) as s, pytest.raises(ControlError, match="stop its campaign instead"):
        cancel_message(s, delivering, OPERATOR, _now())


async def test_renotify_calls_the_unconfirmed_again_in_a_new_round(world: World, tmp_path: Path) -> None:
    members = _add_members(world, 3)
    dialer = FakeDialer(world.desk, {"+3294000001": "no_answer", "+3294000002": "no_key"})  # type: ignore[arg-type]
    runner = _runner(world, dialer, control_poll_s=0.05)
    message_id = await _approved(world, tmp_path)
    campaign_id = _campaign_of(world, message_id)
    await runner.start()
    try:
        await _until_done(world)
        first_round = len(dialer.dialled)
        assert first_round == 5  # 1 confirmed; 2 + 2 tries for the others
        with session_scope(world.engine) as s:
            assert s.get_one(Message, message_id).status is MessageStatus.DONE
            again = renotify(s, campaign_id, Actor(f"web:person:{world.officer_id}", world.officer_id), _now())
        assert again.round == 2 and again.members == 2
        # The running dialer sees it without being woken (another process did it), long before the
        # 30 s it would otherwise sleep.
        deadline = time.monotonic() + 10
        while len(dialer.dialled) < first_round + 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await _until_done(world)
    finally:
        await runner.stop()
    assert sorted(n for _, n in dialer.dialled[first_round:]) == ["+3294000001"] * 2 + ["+3294000002"] * 2
    with session_scope(world.engine) as s:
        rows = s.scalars(select(CallAttempt).where(CallAttempt.round == 2)).all()
        assert {(a.person_id, a.attempt_no) for a in rows} == {(members[1], 3), (members[1], 4),
                                                               (members[2], 3), (members[2], 4)}
        assert s.get_one(Message, message_id).status is MessageStatus.DONE
        assert s.get_one(Campaign, campaign_id).round == 2
    with session_scope(world.engine) as s:
        s.add(Confirmation(campaign_id=campaign_id, person_id=members[1], via="call"))
        s.add(Confirmation(campaign_id=campaign_id, person_id=members[2], via="call"))
    with session_scope(world.engine) as s, pytest.raises(ControlError, match="nobody to call again"):
        renotify(s, campaign_id, OPERATOR, _now())


async def test_renotify_resumes_a_stopped_campaign(world: World, tmp_path: Path) -> None:
    members = _add_members(world, 2)
    message_id = await _approved(world, tmp_path)
    campaign_id = _campaign_of(world, message_id)
    _stop(world, campaign_id)
    with session_scope(world.engine) as s:
        assert renotify(s, campaign_id, OPERATOR, _now()).members == 2
    with session_scope(world.engine) as s:
        assert s.get_one(Campaign, campaign_id).status is CampaignStatus.RUNNING
        assert s.get_one(Message, message_id).status is MessageStatus.DELIVERING
    desk = DeliveryDesk(world.engine, world.desk.store)
    assert await desk.begin_attempt(campaign_id, members[0], "+3294000000", "primary", 1) is not None


async def test_a_retraction_goes_at_once_to_exactly_those_who_received_the_first(
        world: World, tmp_path: Path) -> None:
    members = _add_members(world, 6)
    # The first campaign was stopped half-way: 0 confirmed, 1 on a machine, 2 answered without a key,
    # 3 no answer, 4 in a call at the stop (then answered), 5 never called.
    message_id = await _approved(world, tmp_path)
    campaign_id = _campaign_of(world, message_id)
    desk = DeliveryDesk(world.engine, world.desk.store)
    outcomes = {0: "answered", 1: "answered", 2: "answered", 3: "no_answer", 4: None}
    attempts = {}
    for i, dial in outcomes.items():
        attempt = await desk.begin_attempt(campaign_id, members[i], f"+3294{i:06d}", "primary", 1)
        assert attempt is not None
        attempts[i] = attempt
        if dial is not None:
            await desk.attempt_dialled(attempt, dial, None)
    await desk.confirm(attempts[0])
    await desk.attempt_ended(attempts[0], "confirmed")
    with session_scope(world.engine) as s:
        s.get_one(CallAttempt, attempts[1]).outcome = AttemptOutcome.VOICEMAIL
    await desk.attempt_ended(attempts[2], "answered_no_key")
    _stop(world, campaign_id)
    await desk.attempt_dialled(attempts[4], "answered", None)  # the call up at the stop finishes
    await desk.attempt_ended(attempts[4], "answered_no_key")
    with session_scope(world.engine) as s:
        heard = received(s, campaign_id)
    assert heard == {members[0], members[1], members[2], members[4]}

    coordinator = world.coordinators[0][0]
    with pytest.raises(ControlError, match="not both"):
        submit_retraction(world.engine, world.desk.store, message_id, OPERATOR, text="x", audio=tmp_path / "a.wav")
    retraction = submit_retraction(world.engine, world.desk.store, message_id,
                                   Actor(f"web:person:{coordinator}", coordinator))
    with session_scope(world.engine) as s:
        message = s.get_one(Message, retraction)
        assert message.kind is MessageKind.CANCELLATION and message.follow_up_of_id == message_id
        assert message.status is MessageStatus.APPROVED and message.created_by_id == coordinator
        assert message.text == retraction_text("nl") and message.text.startswith("Vergeet het vorige bericht")
        assert set(recipients(s, message)) == heard
    with pytest.raises(ControlError, match="retracted already"):
        submit_retraction(world.engine, world.desk.store, message_id, OPERATOR, text="nogmaals")
    started = await desk.start_campaign(retraction)  # no review: due at once
    assert started is not None
    report = campaign_report(world.engine, started.campaign_id, POLICY, _now())
    assert {line.person_id for line in report.members} == heard
    # The archive's CAP: a Cancel that references the first message.
    out = tmp_path / "cap"
    out.mkdir()
    export = Archive(world.engine, world.desk.store).export(retraction, f"person:{world.officer_id}", out,
                                                            dt.timezone.utc)
    xml = export.cap_file.read_text(encoding="utf-8")
    assert export.msg_type == "Cancel" and f"binfoon.pz5415,BINFOON-5415-{message_id}," in xml.split("<references>")[1]


async def test_a_retraction_stops_a_running_first_campaign(world: World, tmp_path: Path) -> None:
    _add_members(world, 2)
    message_id = await _approved(world, tmp_path)
    campaign_id = _campaign_of(world, message_id)
    bogus = tmp_path / "not-audio.wav"
    bogus.write_text("hello")
    with pytest.raises(ControlError, match="not an audio file"):
        submit_retraction(world.engine, world.desk.store, message_id, OPERATOR, audio=bogus)
    with session_scope(world.engine) as s:  # nothing was written, the first campaign still runs
        assert s.get_one(Campaign, campaign_id).status is not CampaignStatus.CANCELLED
        assert s.scalars(select(Message).where(Message.kind == MessageKind.CANCELLATION)).all() == []
    retraction = submit_retraction(world.engine, world.desk.store, message_id, OPERATOR, audio=CLIP)
    with session_scope(world.engine) as s:
        assert s.get_one(Campaign, campaign_id).status is CampaignStatus.CANCELLED
        message = s.get_one(Message, retraction)
        assert message.text is None and message.recordings[0].duration_s > 1.0
    with pytest.raises(ControlError, match="refused"):
        submit_retraction(world.engine, world.desk.store, message_id, Actor("web:person:9999", 9999))


def test_a_typed_retraction_has_the_typed_messages_limit() -> None:
    from ivr.delivery.control import MAX_TEXT_CHARS
    from ivr.police_line.written import MAX_TEXT_CHARS as MESSAGE_LIMIT

    assert MAX_TEXT_CHARS == MESSAGE_LIMIT


def test_the_prepared_retraction_exists_in_every_language() -> None:
    assert {lang: bool(retraction_text(lang)) for lang in ("nl", "fr", "de")} == {"nl": True, "fr": True, "de": True}


async def test_a_stop_during_the_plan_pass_is_not_lost(world: World, tmp_path: Path) -> None:
    """The dialer's plan reads a SCHEDULED campaign; a stop commits CANCELLED meanwhile; the plan must
    not make it RUNNING again (it did: the plan overwrote the status by id)."""
    import threading

    _add_members(world, 2)
    message_id = await _approved(world, tmp_path)
    campaign_id = _campaign_of(world, message_id)
    stopped = threading.Event()

    def stopper() -> None:
        with session_scope(world.engine) as other:  # as submit_retraction: stop, then more work
            stop_campaign(other, campaign_id, OPERATOR, _now())
            other.flush()
            stopped.set()
            time.sleep(0.5)  # the plan's write waits for this transaction (SQLite's write lock)

    original = DeliveryDesk._plan

    def plan_read_first(self: DeliveryDesk, s, campaign):  # type: ignore[no-untyped-def]
        s.scalars(select(Campaign).where(Campaign.id == campaign_id)).all()  # read while SCHEDULED
        thread.start()
        assert stopped.wait(10)
        return original(self, s, campaign)

    thread = threading.Thread(target=stopper)
    desk = DeliveryDesk(world.engine, world.desk.store, clock=world.desk.clock)
    desk._plan = plan_read_first.__get__(desk)  # type: ignore[method-assign]
    plans = await desk.plans()
    thread.join()
    assert [p.campaign_id for p in plans] == []
    with session_scope(world.engine) as s:
        campaign = s.get_one(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.CANCELLED and campaign.started_at is None
        assert s.get_one(Message, message_id).status is MessageStatus.CANCELLED


async def test_a_retracted_message_is_not_renotified(world: World, tmp_path: Path) -> None:
    _add_members(world, 3)
    message_id = await _approved(world, tmp_path)
    campaign_id = _campaign_of(world, message_id)
    await DeliveryDesk(world.engine, world.desk.store).plans()  # the campaign runs
    with session_scope(world.engine) as s:
        flags = control_flags(s, _viewer(world), s.get_one(Message, message_id))
        assert flags["renotify"] and flags["retract"]
    retraction = submit_retraction(world.engine, world.desk.store, message_id, OPERATOR, audio=CLIP)
    retracted = f"retracted \\(message {retraction}\\)"
    with pytest.raises(ControlError, match=retracted), session_scope(world.engine) as s:
        renotify(s, campaign_id, OPERATOR, _now())
    with session_scope(world.engine) as s:
        assert s.get_one(Campaign, campaign_id).status is CampaignStatus.CANCELLED and \
            s.get_one(Campaign, campaign_id).round == 1
        flags = control_flags(s, _viewer(world), s.get_one(Message, message_id))
        assert not flags["renotify"] and not flags["retract"]
        s.get_one(Message, retraction).status = MessageStatus.CANCELLED  # a retraction that no longer stands
    with session_scope(world.engine) as s:
        assert renotify(s, campaign_id, OPERATOR, _now()).round == 2


def _viewer(world: World):  # type: ignore[no-untyped-def]
    """The message's author on the web (who may control it)."""
    from ivr.directory.accounts import Viewer
    from ivr.domain.vocabulary import WebRole
    return Viewer(account_id=1, person_id=world.officer_id, name="P", username="p", role=WebRole.POLICE,
                  language="nl", epoch=0, zone_ids=None, bin_ids=None)


async def test_a_retraction_waits_for_a_first_call_still_up(world: World, tmp_path: Path) -> None:
    """A call of the first message up at its stop may make one more recipient: the retraction's campaign
    does not finish before that call has its outcome, and then calls that member too."""
    members = _add_members(world, 3)
    message_id = await _approved(world, tmp_path)
    campaign_id = _campaign_of(world, message_id)
    desk = DeliveryDesk(world.engine, world.desk.store)
    first = await desk.begin_attempt(campaign_id, members[0], "+3294000000", "primary", 1)
    up = await desk.begin_attempt(campaign_id, members[1], "+3294000001", "primary", 1)
    assert first is not None and up is not None
    await desk.attempt_dialled(first, "answered", None)
    await desk.attempt_ended(first, "answered_no_key")
    retraction = submit_retraction(world.engine, world.desk.store, message_id, OPERATOR, audio=CLIP)
    started = await desk.start_campaign(retraction)
    assert started is not None
    [plan] = await desk.plans()
    assert [m.view.person_id for m in plan.members] == [members[0]]
    await desk.finish(started.campaign_id, {members[0]: "confirmed"}, 1)
    with session_scope(world.engine) as s:  # not done: member 1's call of the first message is still up
        assert s.get_one(Campaign, started.campaign_id).status is CampaignStatus.RUNNING
    await desk.attempt_dialled(up, "answered", None)
    await desk.attempt_ended(up, "answered_no_key")
    [plan] = await desk.plans()
    assert [m.view.person_id for m in plan.members] == [members[0], members[1]]
    await desk.finish(started.campaign_id, {members[0]: "confirmed", members[1]: "confirmed"}, 1)
    with session_scope(world.engine) as s:
        assert s.get_one(Campaign, started.campaign_id).status is CampaignStatus.DONE
