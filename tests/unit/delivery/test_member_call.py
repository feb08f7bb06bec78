"""BINFOON 2, the member call, against the fake call and a real database (SQLite): no Asterisk.

The slow twins are tests/integration/test_binfoon2.py (forty scripted households) and
test_member_dialplan.py (the answering machine, the dialplan's fallback)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.delivery.member_call import MemberEnd, MemberRules, member_call
from ivr.delivery.store import DeliveryDesk
from ivr.telephony.call import CallHungUp
from storage.db import session_scope
from storage.models import AuditEntry, CallAttempt, Confirmation
from ivr.domain.vocabulary import Role, Urgency
from tests.conftest import Clock, PersonFactory, Someone
from tests.fakes import HANG_UP, FakeCall, WhilePlaying
from tests.unit.delivery.sent import CLIP, Sent, delivery_desk, sent_message
from tests.world import World

RULES = MemberRules(key_timeout_s=1.0, reminders=2, machine_tail_s=1.0)
URGENT = "member_header_urgent"


@dataclass(frozen=True)
class Member:
    """One answered member call: the member, their attempt, the message's campaign, the desk."""

    world: World
    desk: DeliveryDesk
    someone: Someone
    attempt_id: str
    sent: Sent

    def confirmations(self) -> list[Confirmation]:
        with session_scope(self.world.engine) as s:
            return list(s.scalars(select(Confirmation).order_by(Confirmation.id)))

    def attempt(self) -> CallAttempt:
        with session_scope(self.world.engine) as s:
            return s.get_one(CallAttempt, self.attempt_id)


class CountingCall(FakeCall):
    """A fake call that notes, whenever the system speaks, how many confirmations were stored then."""

    def __init__(self, member: Member, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.member = member
        self.stored_when_said: dict[str, int] = {}

    async def say(self, prompt_id: str, **values: object) -> str | None:
        self.stored_when_said[prompt_id] = len(self.member.confirmations())
        return await super().say(prompt_id, **values)


async def _answered(world: World, tmp_path: Path, person: PersonFactory,
                    urgency: Urgency = Urgency.URGENT, language: str = "nl") -> Member:
    """A member of BIN 12, a sent message and the first call attempt to the member, dialled."""
    someone = person(Role.MEMBER, language=language)
    person(Role.MEMBER)  # another household of the BIN: never touched by this call
    sent = await sent_message(world, tmp_path, urgency=urgency)
    desk = delivery_desk(world)
    attempt_id = await desk.begin_attempt(sent.campaign_id, someone.id, someone.phone, "primary", 1)
    assert attempt_id is not None
    return Member(world, desk, someone, attempt_id, sent)


@pytest.fixture
async def member(world: World, tmp_path: Path, person: PersonFactory) -> Member:
    """An urgent message's call to a Dutch-speaking member, answered."""
    return await _answered(world, tmp_path, person)


def _utc(at: dt.datetime | None) -> dt.datetime | None:
    """A stored time as aware UTC (SQLite hands back naive datetimes)."""
    return at if at is None or at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


async def _call(member: Member, tmp_path: Path, script: list[object], amd_status: str = "HUMAN",
                rules: MemberRules = RULES) -> tuple[MemberEnd, CountingCall]:
    call = CountingCall(member, script, tmp_path, caller_id="")
    end = await member_call(call, call, member.desk, member.attempt_id, amd_status, rules)
    return end, call


async def test_1_confirms_and_it_is_stored_before_thank_you(member: Member, tmp_path: Path,
                                                            clock: Clock) -> None:
    sent = member.sent
    answered = clock.advance(seconds=20)  # the member picks up 20 s after the attempt was written
    end, call = await _call(member, tmp_path, ["1"])
    assert end is MemberEnd.CONFIRMED and end.value == "confirmed"
    assert call.said == [URGENT, "member_keys", "member_thanks"]
    assert [p.read_bytes() for p in call.played] == [CLIP.read_bytes()]  # the police's own recording
    # Durable first: Asterisk's mark, then our row, then "thank you"; the dialplan is told it is handled.
    kinds = [kind for kind, _ in call.timeline]
    assert kinds == ["say", "play", "say", "mark_confirmed", "mark_done", "say", "hangup"]
    assert call.timeline[3] == ("mark_confirmed", member.attempt_id)
    assert call.stored_when_said == {URGENT: 0, "member_keys": 0, "member_thanks": 1}
    [confirmation] = member.confirmations()
    assert (confirmation.person_id, confirmation.campaign_id) == (member.someone.id, sent.campaign_id)
    assert (confirmation.attempt_id, confirmation.via) == (member.attempt_id, "call")
    # Stamped by the desk's clock (the fake one): answered and confirmed in the same instant here.
    assert [_utc(member.attempt().answered_at), _utc(confirmation.confirmed_at)] == [answered, answered]
    assert _utc(member.attempt().dialled_at) == answered - dt.timedelta(seconds=20)


async def test_2_replays_from_the_start_then_1_confirms(member: Member, tmp_path: Path) -> None:
    end, call = await _call(member, tmp_path, ["2", "1"])
    assert end is MemberEnd.CONFIRMED
    assert call.said == [URGENT, "member_keys", "member_keys", "member_thanks"]
    assert len(call.played) == 2 and call.played[0] == call.played[1]
    assert len(member.confirmations()) == 1


async def test_no_key_reminds_then_says_goodbye_without_confirming(member: Member, tmp_path: Path) -> None:
    # reminders=2: the keys are asked three times; a fourth ask would find the script spent (a hang-up).
    end, call = await _call(member, tmp_path, [None, None, None])
    assert end is MemberEnd.NO_KEY and end.value == "answered_no_key"
    assert call.said == [URGENT, "member_keys", "member_keys", "member_keys", "member_goodbye"]
    assert len(call.played) == 1
    assert ("mark_done", "") in call.timeline and not any(k == "mark_confirmed" for k, _ in call.timeline)
    assert member.confirmations() == []


async def test_without_reminders_the_keys_are_asked_once(member: Member, tmp_path: Path) -> None:
    end, call = await _call(member, tmp_path, [None], rules=MemberRules(key_timeout_s=1.0, reminders=0))
    assert end is MemberEnd.NO_KEY and call.said.count("member_keys") == 1


async def test_an_answering_machine_gets_header_and_recording_and_no_key_prompt(
        member: Member, tmp_path: Path) -> None:
    end, call = await _call(member, tmp_path, [], amd_status="MACHINE")
    assert end is MemberEnd.VOICEMAIL and end.value == "voicemail"
    assert call.said == [URGENT]  # no "press 1": nobody is there to press it
    assert [p.read_bytes() for p in call.played] == [CLIP.read_bytes()]
    # Handled (no fallback replay), then silence so the machine records the message to its end.
    assert call.timeline[2:] == [("mark_done", ""), ("pause", RULES.machine_tail_s), ("hangup", "")]
    assert member.confirmations() == []
    assert member.attempt().amd_status == "MACHINE"


async def test_a_machine_that_stops_recording_first_still_got_the_message(
        member: Member, tmp_path: Path) -> None:
    end, call = await _call(member, tmp_path, [HANG_UP], amd_status="MACHINE")  # hangs up in the tail
    assert end is MemberEnd.VOICEMAIL
    assert ("hangup", "") not in call.timeline and len(call.played) == 1


async def test_1_during_the_recording_confirms_at_once(member: Member, tmp_path: Path) -> None:
    end, call = await _call(member, tmp_path, [WhilePlaying("1")])
    assert end is MemberEnd.CONFIRMED
    assert call.said == [URGENT, "member_thanks"] and len(call.played) == 1
    assert call.stored_when_said["member_thanks"] == 1


async def test_2_during_the_recording_replays_it(member: Member, tmp_path: Path) -> None:
    end, call = await _call(member, tmp_path, [WhilePlaying("2"), WhilePlaying("1")])
    assert end is MemberEnd.CONFIRMED
    assert call.said == [URGENT, "member_thanks"] and len(call.played) == 2


async def test_another_key_during_the_recording_does_not_count(member: Member, tmp_path: Path) -> None:
    end, call = await _call(member, tmp_path, [WhilePlaying("5"), "1"])
    assert end is MemberEnd.CONFIRMED
    assert call.said == [URGENT, "member_keys", "member_thanks"] and len(call.played) == 1


@pytest.mark.parametrize("script, said", [
    ([WhilePlaying(HANG_UP)], [URGENT]),            # during the recording
    ([HANG_UP], [URGENT, "member_keys"]),           # at the key prompt
    (["2", HANG_UP], [URGENT, "member_keys", "member_keys"]),  # at the prompt after the replay
])
async def test_a_hang_up_mid_way_stores_nothing(member: Member, tmp_path: Path, script: list[object],
                                                said: list[str]) -> None:
    call = CountingCall(member, script, tmp_path, caller_id="")
    with pytest.raises(CallHungUp):
        await member_call(call, call, member.desk, member.attempt_id, "HUMAN", RULES)
    assert call.said == said
    assert member.confirmations() == []
    # Nothing marked either: Asterisk's durable record holds no confirmation.
    assert not any(kind in ("mark_confirmed", "mark_done") for kind, _ in call.timeline)


async def test_preventive_header_in_the_members_language(world: World, tmp_path: Path,
                                                          person: PersonFactory) -> None:
    member = await _answered(world, tmp_path, person, urgency=Urgency.PREVENTIVE, language="fr")
    end, call = await _call(member, tmp_path, ["1"])
    assert end is MemberEnd.CONFIRMED
    assert call.said[0] == "member_header_preventive" and call.language == "fr"


async def test_the_hearing_is_audited_and_a_confirmed_member_is_not_dialled_again(
        member: Member, tmp_path: Path) -> None:
    await _call(member, tmp_path, ["1"])
    # A retry planned before the confirmation is not even written, let alone dialled.
    someone, campaign_id = member.someone, member.sent.campaign_id
    assert await member.desk.begin_attempt(campaign_id, someone.id, someone.phone, "primary", 2) is None
    with session_scope(member.world.engine) as s:
        played = s.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "recording.played"))
    assert played == 1 and len(member.confirmations()) == 1
