"""The report line's replay: "toets 1" plays the BIN's latest message, as the members got it, audited
before it plays (fake call, real database: no Asterisk)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.delivery.lines_store import ReplayRefused
from ivr.delivery.report_line import MAX_REPLAYS, ReportEnd, ReportHeard, coordinator_report
from ivr.directory.pin_gate import PinRules
from ivr.domain.vocabulary import Role, Urgency
from ivr.police_line.store import Officer
from storage.db import session_scope
from storage.models import AuditEntry, Message, Person, Recording
from storage.pins import hash_pin
from tests.conftest import PersonFactory
from tests.fakes import FakeCall, WhilePlaying
from tests.unit.delivery.sent import OTHER_CLIP, Sent, delivery_desk, sent_message
from tests.world import World


def _played_rows(world: World, action: str = "recording.played") -> list[AuditEntry]:
    with session_scope(world.engine) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))
        s.expunge_all()
        return rows


def _sent_take(world: World, message_id: int) -> Recording:
    with session_scope(world.engine) as s:
        message = s.get_one(Message, message_id)
        take = next(r for r in message.recordings if r.take == message.submitted_take)
        s.expunge(take)
        return take


class _AuditWatchingCall(FakeCall):
    """A fake call that notes, as each recording starts to play, how many plays the audit holds."""

    def __init__(self, world: World, script: list[str | None], work_dir: Path, caller_id: str) -> None:
        super().__init__(script, work_dir, caller_id=caller_id)
        self.world = world
        self.audited_when_played: list[int] = []

    async def play_audio(self, wav: Path) -> str | None:
        self.audited_when_played.append(len(_played_rows(self.world)))
        return await super().play_audio(wav)


async def test_toets_1_plays_the_original_recording_of_the_latest_message(world: World, tmp_path: Path,
                                                                        person: PersonFactory) -> None:
    person(Role.MEMBER)
    first = await sent_message(world, tmp_path)
    latest = await sent_message(world, tmp_path, OTHER_CLIP)
    coordinator_id, phone = world.coordinators[0]
    call = FakeCall(["1", None], tmp_path, caller_id=phone)
    heard = await coordinator_report(call, delivery_desk(world))
    assert heard == ReportHeard(ReportEnd.TOLD, confirmed=0, members=1)
    assert call.said == ["report_counts", "report_replay_offer", "member_header_urgent", "report_replay_offer",
                         "member_goodbye"]
    # The submitted take of the latest message, byte for byte (not the first message, not a render).
    assert len(call.played) == 1
    played = hashlib.sha256(call.played[0].read_bytes()).hexdigest()
    assert played == _sent_take(world, latest.message_id).sha256 != _sent_take(world, first.message_id).sha256
    rows = _played_rows(world)
    assert [(r.actor, r.subject) for r in rows] == [(f"person:{coordinator_id}", f"message:{latest.message_id}")]
    assert rows[0].details["via"] == "report line (caller ID, unverified)" and rows[0].details["to"] == "phone"


async def test_the_play_is_audited_before_it_starts_every_time(world: World, tmp_path: Path,
                                                              person: PersonFactory) -> None:
    person(Role.MEMBER)
    await sent_message(world, tmp_path)
    call = _AuditWatchingCall(world, ["1", "1", None], tmp_path, world.coordinators[0][1])
    await coordinator_report(call, delivery_desk(world))
    assert call.audited_when_played == [1, 2]  # each play's row was committed before it played
    assert len(call.played) == 2 and call.played[0] == call.played[1]
    assert call.said.count("report_replay_offer") == 3 and call.said[-1] == "member_goodbye"


async def test_the_replays_of_one_call_are_bounded(world: World, tmp_path: Path, person: PersonFactory) -> None:
    person(Role.MEMBER)
    await sent_message(world, tmp_path)
    call = FakeCall(["1"] * MAX_REPLAYS, tmp_path, caller_id=world.coordinators[0][1])
    assert (await coordinator_report(call, delivery_desk(world))).end is ReportEnd.TOLD
    # After the last play the offer is not made again: the call goes on to its goodbye.
    assert len(call.played) == MAX_REPLAYS and call.said.count("report_replay_offer") == MAX_REPLAYS
    assert call.said[-1] == "member_goodbye" and call.hung_up
    assert len(_played_rows(world)) == MAX_REPLAYS


async def test_a_key_during_the_recording_stops_it_and_the_offer_comes_back(world: World, tmp_path: Path,
                                                                           person: PersonFactory) -> None:
    person(Role.MEMBER)
    await sent_message(world, tmp_path)
    call = FakeCall(["1", WhilePlaying("5"), "1", None], tmp_path, caller_id=world.coordinators[0][1])
    await coordinator_report(call, delivery_desk(world))
    assert len(call.played) == 2 and call.said[-1] == "member_goodbye"


@pytest.mark.parametrize("urgency, drill, header", [
    (Urgency.URGENT, False, "member_header_urgent"),
    (Urgency.PREVENTIVE, False, "member_header_preventive"),
    (Urgency.PREVENTIVE, True, "member_header_drill"),  # nobody takes a test for a real alert
    (Urgency.URGENT, True, "member_header_drill"),
])
async def test_the_recording_is_announced_as_the_members_heard_it(world: World, tmp_path: Path,
                                                                  person: PersonFactory, urgency: Urgency,
                                                                  drill: bool, header: str) -> None:
    person(Role.MEMBER)
    sent = await sent_message(world, tmp_path, urgency=urgency)
    with session_scope(world.engine) as s:
        s.get_one(Message, sent.message_id).drill = drill
    call = FakeCall(["1", None], tmp_path, caller_id=world.coordinators[0][1])
    await coordinator_report(call, delivery_desk(world))
    assert ("say", header) in call.timeline
    at = call.timeline.index(("say", header))
    assert call.timeline[at + 1] == ("play", call.played[0])  # the header right before the recording


async def test_no_replay_without_the_key(world: World, tmp_path: Path, person: PersonFactory) -> None:
    person(Role.MEMBER)
    await sent_message(world, tmp_path)
    call = FakeCall(["2"], tmp_path, caller_id=world.coordinators[0][1])
    await coordinator_report(call, delivery_desk(world))
    assert call.played == [] and _played_rows(world) == []
    assert call.said == ["report_counts", "report_replay_offer", "member_goodbye"]


async def test_a_hang_up_after_the_counts_ends_the_call_as_told(world: World, tmp_path: Path,
                                                                person: PersonFactory) -> None:
    person(Role.MEMBER)
    await sent_message(world, tmp_path)
    call = FakeCall([], tmp_path, caller_id=world.coordinators[0][1])  # hangs up at the offer
    heard = await coordinator_report(call, delivery_desk(world))
    assert heard == ReportHeard(ReportEnd.TOLD, confirmed=0, members=1) and heard.value == "0/1"
    assert call.said == ["report_counts", "report_replay_offer"] and call.played == []


async def test_strangers_and_others_never_reach_the_recording(world: World, tmp_path: Path,
                                                               person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    await sent_message(world, tmp_path)
    elsewhere = person(Role.COORDINATOR, bin_number=99)
    retired = person(Role.COORDINATOR, active=False)
    for caller in (member.phone, "+32470999888", "", retired.phone, elsewhere.phone):
        call = FakeCall(["1", "1"], tmp_path, caller_id=caller)
        heard = await coordinator_report(call, delivery_desk(world))
        assert heard.end in (ReportEnd.UNKNOWN_CALLER, ReportEnd.NO_CAMPAIGN), caller
        assert call.said == ["report_no_campaign"] and call.played == [], caller
    assert _played_rows(world) == []


async def _refused(world: World, sent: Sent, person_id: int) -> None:
    with pytest.raises(ReplayRefused):
        await delivery_desk(world).replay_for_coordinator(person_id, sent.message_id)


async def test_the_desk_gives_the_recording_only_to_an_active_coordinator_of_the_bin(
        world: World, tmp_path: Path, person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    sent = await sent_message(world, tmp_path)
    elsewhere = person(Role.COORDINATOR, bin_number=99)
    retired = person(Role.COORDINATOR, active=False)
    approver = person(Role.POLICE_APPROVER)
    for refused in (member.id, elsewhere.id, retired.id, approver.id, 999_999):
        await _refused(world, sent, refused)
    # A message that never went out (a draft: no campaign) is refused to its own coordinators too.
    coordinator_id = world.coordinators[0][0]
    draft = await world.desk.create_draft(Officer(world.officer_id, "Peeters", "nl", None), world.bin_id,
                                          Urgency.URGENT)
    await _refused(world, Sent(draft, 0), coordinator_id)
    assert _played_rows(world) == []
    refusals = _played_rows(world, "recording.play_refused")
    assert [r.actor for r in refusals] == [f"person:{p}" for p in (member.id, elsewhere.id, retired.id,
                                                                     approver.id, 999_999, coordinator_id)]
    assert refusals[-1].details["reason"] == "not sent"
    assert refusals[0].details["reason"] == "not a coordinator of the message's BIN"
    # And the coordinator of the BIN gets it, audited.
    path = await delivery_desk(world).replay_for_coordinator(coordinator_id, sent.message_id)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == _sent_take(world, sent.message_id).sha256
    assert [r.actor for r in _played_rows(world)] == [f"person:{coordinator_id}"]


async def test_a_coordinator_removed_during_the_call_hears_no_recording(world: World, tmp_path: Path,
                                                                         person: PersonFactory) -> None:
    person(Role.MEMBER)
    await sent_message(world, tmp_path)
    coordinator_id, phone = world.coordinators[0]

    class Removed(FakeCall):
        async def ask(self, prompt_id: str, timeout_s: float, **values: object) -> str | None:
            if prompt_id == "report_replay_offer":  # the admin deactivates them while the counts are said
                with session_scope(world.engine) as s:
                    s.get_one(Person, coordinator_id).active = False
            return await super().ask(prompt_id, timeout_s, **values)

    call = Removed(["1"], tmp_path, caller_id=phone)
    await coordinator_report(call, delivery_desk(world))
    assert call.played == [] and call.said[-2:] == ["report_replay_unavailable", "member_goodbye"]
    assert _played_rows(world) == [] and len(_played_rows(world, "recording.play_refused")) == 1


async def test_a_missing_recording_is_said_raises_an_alert_and_the_stop_is_still_offered(
        world: World, tmp_path: Path, person: PersonFactory) -> None:
    person(Role.MEMBER)
    sent = await sent_message(world, tmp_path)
    coordinator_id, phone = world.coordinators[0]
    with session_scope(world.engine) as s:
        s.get_one(Person, coordinator_id).pin_hash = hash_pin("2468")
    Path(_sent_take(world, sent.message_id).path).unlink()
    call = FakeCall(["1", None], tmp_path, caller_id=phone)
    heard = await coordinator_report(call, delivery_desk(world), pins=PinRules())
    assert heard.end is ReportEnd.TOLD and not heard.stopped and call.played == []
    assert call.said == ["report_counts", "report_replay_offer", "report_replay_unavailable", "report_stop_offer",
                         "member_goodbye"]
    assert _played_rows(world) == []  # nothing was played: no play in the audit
    alerts = _played_rows(world, "security.alert")
    assert [(a.subject, a.details["kind"]) for a in alerts] == [(f"message:{sent.message_id}", "recording_refused")]


async def test_replay_then_stop(world: World, tmp_path: Path, person: PersonFactory) -> None:
    person(Role.MEMBER)
    await sent_message(world, tmp_path)
    coordinator_id, phone = world.coordinators[0]
    with session_scope(world.engine) as s:
        s.get_one(Person, coordinator_id).pin_hash = hash_pin("2468")
    call = FakeCall(["1", None, "9", "1", "2468"], tmp_path, caller_id=phone)
    heard = await coordinator_report(call, delivery_desk(world), pins=PinRules())
    assert heard.stopped and len(call.played) == 1
    assert call.said[-3:] == ["report_stop_pin", "report_stopped", "member_goodbye"]
