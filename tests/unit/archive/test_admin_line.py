"""The admin line against the fake call and a real database (SQLite): PIN, access, replay with counts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.archive.admin_line import ReplayEnd, ReplayRules, admin_replay
from ivr.telephony.call import Recorded
from ivr.police_line.store import Officer
from ivr.archive.replay import ReplayDesk
from storage.audit import verify_chain
from storage.db import session_scope
from storage.models import (
    AuditEntry, Campaign, Confirmation, Message, Person, PhoneNumber, PinAttempt, PoliceZone, RoleAssignment,
)
from ivr.domain.vocabulary import CampaignStatus, Language, MessageStatus, PhoneRank, Role, Urgency
from storage.pins import hash_pin
from tests.conftest import SHARED_DIR
from tests.fakes import FakeCall
from tests.world import OFFICER_PHONE, OFFICER_PIN, OTHER_ZONE_BIN, World, build_world
from storage.recordings import open_recording

NEWER_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "01.wav"
OLDER_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
RULES = ReplayRules(key_timeout_s=1.0)
ADMIN_PHONE, ADMIN_PIN = "+3292999001", "8642"
COORDINATOR_PIN = "1357"
OTHER_POLICE_PHONE, OTHER_POLICE_PIN = "+3292999002", "2468"


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now


class AuditingCall(FakeCall):
    """A fake call that notes, for every recording played, how many replays the audit log held then."""

    def __init__(self, world: World, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.world = world
        self.audited_before_play: list[int] = []

    async def play_audio(self, wav: Path) -> str | None:
        self.audited_before_play.append(len(_audit(self.world, "recording.played")))
        return await super().play_audio(wav)


def _person(name: str, phone: str, role: Role, pin: str | None = None, **scope: int | None) -> Person:
    person = Person(name=name, language=Language.NL, pin_hash=hash_pin(pin) if pin else None)
    person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=phone))
    person.roles.append(RoleAssignment(role=role, **scope))
    return person


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(tmp_path: Path, clock: Clock) -> World:
    """The flow tests' world plus an admin, an officer of the other zone, a PIN for the first
    coordinator, and four members of BIN 12."""
    world = build_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store", clock=clock)
    with session_scope(world.engine) as s:
        other_id = s.scalars(select(PoliceZone.id).where(PoliceZone.code == "5416")).one()
        s.add_all([
            _person("Beheerder", ADMIN_PHONE, Role.ADMIN, ADMIN_PIN),
            _person("Inspecteur Elders", OTHER_POLICE_PHONE, Role.POLICE_OFFICER, OTHER_POLICE_PIN,
                    zone_id=other_id),
            *[_person(f"Lid {i}", f"+3291100{i:03d}", Role.MEMBER, bin_id=world.bin_id) for i in range(1, 5)],
        ])
        s.get_one(Person, world.coordinators[0][0]).pin_hash = hash_pin(COORDINATOR_PIN)
    return world


def _desk(world: World, clock: Clock) -> ReplayDesk:
    return ReplayDesk(world.engine, world.desk.store, pin_policy=world.desk.pin_policy, clock=clock)


async def _message(world: World, clip: Path, tmp_path: Path, at: dt.datetime, urgency: Urgency,
                   *, sent: bool = True, confirmed: int | None = None) -> int:
    """A message of BIN 12 recorded from ``clip`` at ``at``; sent (status done) or left a draft;
    with a campaign in which ``confirmed`` of the members confirmed (``None``: no campaign)."""
    desk = world.desk
    message_id = await desk.create_draft(Officer(world.officer_id, "P", "nl", None), world.bin_id, urgency)
    spool = tmp_path / f"spool-{message_id}.wav"
    spool.write_bytes(clip.read_bytes())
    await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    if not sent:
        return message_id
    with session_scope(world.engine) as s:
        message = s.get_one(Message, message_id)
        message.status, message.submitted_take, message.submitted_at = MessageStatus.DONE, 1, at
        if confirmed is not None:
            campaign = Campaign(message_id=message_id, status=CampaignStatus.DONE, created_at=at)
            s.add(campaign)
            s.flush()
            members = s.scalars(select(Person.id).join(RoleAssignment).where(
                RoleAssignment.role == Role.MEMBER).order_by(Person.id)).all()
            s.add_all([Confirmation(campaign_id=campaign.id, person_id=pid, confirmed_at=at, via="call")
                       for pid in members[:confirmed]])
    return message_id


def _audit(world: World, action: str) -> list[AuditEntry]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def _stored(world: World, message_id: int) -> Path:
    """The plaintext copy the store hands out for the message's recording (the stored file is sealed)."""
    with session_scope(world.engine) as s:
        recording = s.get_one(Message, message_id).recordings[0]
        return open_recording(Path(recording.path), recording.sha256)


async def _run(world: World, clock: Clock, script: list[object], tmp_path: Path,
               caller: str = ADMIN_PHONE) -> tuple[ReplayEnd | None, AuditingCall]:
    call = AuditingCall(world, script, tmp_path, caller_id=caller)
    try:
        end: ReplayEnd | None = await admin_replay(call, _desk(world, clock), RULES)
    except Exception as exc:  # a hang-up mid-way propagates as CallHungUp, like on a real call
        if type(exc).__name__ != "CallHungUp":
            raise
        end = None
    return end, call


async def test_admin_hears_the_latest_messages_newest_first_with_counts(world: World, clock: Clock,
                                                                        tmp_path: Path) -> None:
    utc = dt.timezone.utc
    older = await _message(world, OLDER_CLIP, tmp_path, dt.datetime(2026, 11, 20, 7, 5, tzinfo=utc),
                           Urgency.PREVENTIVE)
    newer = await _message(world, NEWER_CLIP, tmp_path, dt.datetime(2026, 11, 27, 13, 32, tzinfo=utc),
                           Urgency.URGENT, confirmed=3)
    # A draft, newer still: never offered.
    await _message(world, NEWER_CLIP, tmp_path, clock.now, Urgency.URGENT, sent=False)

    # PIN, BIN 12, "1 right"; newest; 2 older; 3 back to the newest; 1 again; * stop.
    end, call = await _run(world, clock, [ADMIN_PIN, "12", "1", "2", "3", "1", "*"], tmp_path)

    assert end is ReplayEnd.DONE and call.hung_up
    assert call.said[:4] == ["admin_enter_pin", "police_enter_bin", "police_bin_chosen", "police_bin_confirm"]
    assert call.values[2] == {"number": 12, "name": "Kerkwijk"}
    said = dict(zip(call.said, call.values))
    assert said["admin_message_count"] == {"count": 2, "name": "Kerkwijk"}
    headers = [v for p, v in zip(call.said, call.values) if p == "admin_message_header"]
    # 13:32 UTC is 14:32 in Brussels; the urgency and month words are in the caller's language.
    assert headers[0] == {"position": 1, "total": 2, "urgency": "Dringend", "day": 27, "month": "november",
                          "hour": 14, "minute": 32}
    assert headers[1] == {"position": 2, "total": 2, "urgency": "Preventief", "day": 20, "month": "november",
                          "hour": 8, "minute": 5}
    assert len(headers) == 4
    # "3 van de 4 leden hebben bevestigd" for the delivered message; the other was never delivered.
    assert [v for p, v in zip(call.said, call.values) if p == "report_counts"] == [
        {"confirmed": 3, "members": 4}] * 3
    assert call.said.count("admin_not_delivered") == 1
    assert call.said[-1] == "member_goodbye"
    # The original recordings, in the order asked for.
    assert call.played == [_stored(world, m) for m in (newer, older, newer, newer)]
    assert call.played[0].read_bytes() == NEWER_CLIP.read_bytes()
    # Every replay was audited, and committed before its audio played.
    played = _audit(world, "recording.played")
    assert [e.subject for e in played] == [f"message:{m}" for m in (newer, older, newer, newer)]
    assert all(e.actor == f"person:{_admin_id(world)}" and e.details["via"] == "admin_line" for e in played)
    assert call.audited_before_play == [1, 2, 3, 4]
    assert _audit(world, "admin_line.pin_ok") and not _audit(world, "recording.play_refused")
    with session_scope(world.engine) as s:
        assert verify_chain(s) == []


def _admin_id(world: World) -> int:
    with session_scope(world.engine) as s:
        return s.scalars(select(Person.id).where(Person.name == "Beheerder")).one()


async def test_the_ends_of_the_list_are_told(world: World, clock: Clock, tmp_path: Path) -> None:
    await _message(world, NEWER_CLIP, tmp_path, clock.now, Urgency.URGENT, confirmed=0)
    end, call = await _run(world, clock, [ADMIN_PIN, "12", "1", "3", "2", None, None, None], tmp_path)
    assert end is ReplayEnd.DONE
    assert "admin_no_newer" in call.said and "admin_no_older" in call.said
    assert len(call.played) == 1  # the end of the list does not replay the message


async def test_three_wrong_pins_lock_the_caller_on_both_pin_lines(world: World, clock: Clock,
                                                                  tmp_path: Path) -> None:
    await _message(world, NEWER_CLIP, tmp_path, clock.now, Urgency.URGENT, confirmed=1)
    end, call = await _run(world, clock, ["1111", "2222", "3333"], tmp_path)
    assert end is ReplayEnd.LOCKED
    assert call.said == ["admin_enter_pin", "police_pin_wrong", "admin_enter_pin", "police_pin_wrong",
                         "admin_enter_pin", "police_locked"]
    # Locked: the right PIN from the same caller ID is not even asked for.
    end, call = await _run(world, clock, [ADMIN_PIN], tmp_path)
    assert end is ReplayEnd.LOCKED and call.said == ["police_locked"] and call.played == []
    # One lockout for both PIN lines: the police line refuses this caller ID too.
    assert await world.desk.lock_for(ADMIN_PHONE) is not None
    with session_scope(world.engine) as s:
        outcomes = [a.outcome.value for a in s.scalars(select(PinAttempt).order_by(PinAttempt.id))]
        assert verify_chain(s) == []
    assert outcomes == ["wrong", "wrong", "wrong"]
    assert len(_audit(world, "admin_line.pin_wrong")) == 3 and len(_audit(world, "admin_line.locked")) == 1
    assert len(_audit(world, "admin_line.call_refused_locked")) == 1
    assert _audit(world, "recording.played") == []
    # After 15 minutes the right PIN works again.
    clock.now += dt.timedelta(minutes=15, seconds=1)
    end, call = await _run(world, clock, [ADMIN_PIN, "12", "1", "*"], tmp_path)
    assert end is ReplayEnd.DONE and len(call.played) == 1


async def test_a_coordinator_is_refused_and_the_refusal_audited(world: World, clock: Clock,
                                                                tmp_path: Path) -> None:
    await _message(world, NEWER_CLIP, tmp_path, clock.now, Urgency.URGENT, confirmed=1)
    coordinator_id, phone = world.coordinators[0]
    end, call = await _run(world, clock, [COORDINATOR_PIN, "12", "1"], tmp_path, caller=phone)
    assert end is ReplayEnd.REFUSED
    assert call.said == ["admin_enter_pin", "admin_not_allowed"] and call.hung_up and call.played == []
    [refused] = _audit(world, "recording.play_refused")
    assert refused.actor == f"person:{coordinator_id}" and refused.subject == "admin_line"
    assert "only admins and the police" in refused.details["reason"]
    assert _audit(world, "recording.played") == []


async def test_police_of_another_zone_are_refused_that_bin_and_the_refusal_audited(world: World, clock: Clock,
                                                                                   tmp_path: Path) -> None:
    await _message(world, NEWER_CLIP, tmp_path, clock.now, Urgency.URGENT, confirmed=1)
    end, call = await _run(world, clock, [OTHER_POLICE_PIN, "12", None, None], tmp_path,
                           caller=OTHER_POLICE_PHONE)
    assert end is ReplayEnd.REFUSED
    assert "admin_bin_refused" in call.said and "police_bin_chosen" not in call.said
    assert "admin_message_count" not in call.said and call.played == []  # nothing about BIN 12 is told
    [refused] = _audit(world, "recording.play_refused")
    assert refused.subject == "bin:12" and refused.details["via"] == "admin_line"
    assert _audit(world, "recording.played") == []
    # Their own zone's BIN they may replay (it has no messages).
    end, call = await _run(world, clock, [OTHER_POLICE_PIN, str(OTHER_ZONE_BIN), "1"], tmp_path,
                           caller=OTHER_POLICE_PHONE)
    assert end is ReplayEnd.NO_MESSAGES and call.said[-1] == "admin_no_messages"


async def test_the_police_of_the_bins_zone_may_replay(world: World, clock: Clock, tmp_path: Path) -> None:
    message_id = await _message(world, NEWER_CLIP, tmp_path, clock.now, Urgency.URGENT, confirmed=2)
    end, call = await _run(world, clock, [OFFICER_PIN, "12", "1", "*"], tmp_path, caller=OFFICER_PHONE)
    assert end is ReplayEnd.DONE and call.played == [_stored(world, message_id)]
    [played] = _audit(world, "recording.played")
    assert played.actor == f"person:{world.officer_id}"


async def test_a_drill_is_never_read_out_as_a_real_message(world: World, clock: Clock, tmp_path: Path) -> None:
    import asyncio

    from ivr.delivery.drill import start_drill
    from ivr.domain.actor import Actor

    real = await _message(world, OLDER_CLIP, tmp_path, clock.now - dt.timedelta(days=1), Urgency.PREVENTIVE)
    drill = await asyncio.to_thread(start_drill, world.engine, world.desk.store, 12, Actor.operator("cli:test"),
                                    clock=clock)
    assert drill != real
    # The drill is newer, sent (approved, its take submitted) and its recording kept: only drill=True sets it apart.
    assert [e.message_id for e in await _desk(world, clock).latest(world.bin_id, 5)] == [real]
