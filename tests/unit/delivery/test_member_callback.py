"""A member calls the BIN line back, against the fake call and a real database (SQLite): no Asterisk.

The slow twin is tests/integration/test_binfoon2.py::test_call_back_and_report_lines."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from ivr.delivery.member_callback import CallbackEnd, member_callback
from storage.db import session_scope
from storage.models import AuditEntry, Confirmation
from ivr.domain.vocabulary import Role, Urgency
from tests.conftest import PersonFactory
from tests.fakes import FakeCall, WhilePlaying
from tests.unit.delivery.sent import CLIP, OTHER_CLIP, delivery_desk, sent_message
from tests.world import World

KEY_TIMEOUT_S = 1.0


def _confirmations(world: World) -> list[Confirmation]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(Confirmation).order_by(Confirmation.id)))


class CountingCall(FakeCall):
    """A fake call that notes, whenever the system speaks, how many confirmations were stored then."""

    def __init__(self, world: World, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.world = world
        self.stored_when_said: dict[str, int] = {}

    async def say(self, prompt_id: str, **values: object) -> str | None:
        self.stored_when_said[prompt_id] = len(_confirmations(self.world))
        return await super().say(prompt_id, **values)


async def _call_back(world: World, tmp_path: Path, caller: str,
                     script: list[object]) -> tuple[CallbackEnd, CountingCall]:
    call = CountingCall(world, script, tmp_path, caller_id=caller)
    return await member_callback(call, delivery_desk(world), KEY_TIMEOUT_S), call


async def test_a_member_hears_the_latest_message_and_confirms(world: World, tmp_path: Path,
                                                              person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    await sent_message(world, tmp_path, CLIP, Urgency.PREVENTIVE)
    latest = await sent_message(world, tmp_path, OTHER_CLIP)  # the newer message is the one heard
    end, call = await _call_back(world, tmp_path, member.phone, ["1"])
    assert end is CallbackEnd.CONFIRMED and end.value == "confirmed"
    assert call.said == ["member_header_urgent", "member_keys", "member_thanks"]
    assert [p.read_bytes() for p in call.played] == [OTHER_CLIP.read_bytes()]
    assert call.stored_when_said["member_thanks"] == 1 and call.hung_up  # stored before "thank you"
    [confirmation] = _confirmations(world)
    assert (confirmation.person_id, confirmation.campaign_id) == (member.id, latest.campaign_id)
    assert (confirmation.via, confirmation.attempt_id) == ("callback-unverified", None)
    with session_scope(world.engine) as s:
        heard = s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.played")).all()
    assert [(e.actor, e.subject) for e in heard] == [(f"caller:{member.id}", f"message:{latest.message_id}")]


async def test_a_member_may_confirm_during_the_recording_or_after_a_replay(
        world: World, tmp_path: Path, person: PersonFactory) -> None:
    first, second = person(Role.MEMBER), person(Role.MEMBER)
    await sent_message(world, tmp_path)
    end, call = await _call_back(world, tmp_path, first.phone, [WhilePlaying("1")])
    assert end is CallbackEnd.CONFIRMED and call.said == ["member_header_urgent", "member_thanks"]
    end, call = await _call_back(world, tmp_path, second.phone, ["2", "1"])
    assert end is CallbackEnd.CONFIRMED and len(call.played) == 2
    assert call.said == ["member_header_urgent", "member_keys", "member_keys", "member_thanks"]
    assert sorted(c.person_id for c in _confirmations(world)) == [first.id, second.id]


async def test_no_key_means_heard_and_nothing_stored(world: World, tmp_path: Path,
                                                     person: PersonFactory) -> None:
    member = person(Role.MEMBER, language="de")
    await sent_message(world, tmp_path)
    end, call = await _call_back(world, tmp_path, member.phone, [None])
    assert end is CallbackEnd.HEARD and end.value == "heard"
    assert call.said == ["member_header_urgent", "member_keys", "member_goodbye"] and call.language == "de"
    assert _confirmations(world) == []


async def test_a_second_confirmation_is_thanked_but_not_stored_twice(
        world: World, tmp_path: Path, person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    await sent_message(world, tmp_path)
    await _call_back(world, tmp_path, member.phone, ["1"])
    end, call = await _call_back(world, tmp_path, member.phone, ["1"])
    assert end is CallbackEnd.CONFIRMED and call.said[-1] == "member_thanks"
    assert len(_confirmations(world)) == 1


async def test_an_unknown_number_hears_nothing_of_the_message(world: World, tmp_path: Path,
                                                              person: PersonFactory) -> None:
    person(Role.MEMBER)
    await sent_message(world, tmp_path)
    coordinator_phone = world.coordinators[0][1]
    # A stranger, a hidden number, and a coordinator (not a member) calling the members' line.
    for caller in ("+32470999888", "", coordinator_phone):
        end, call = await _call_back(world, tmp_path, caller, ["1"])
        assert end is CallbackEnd.UNKNOWN_CALLER and end.value == "unknown_caller"
        assert call.said == ["callback_no_message"] and call.played == [] and call.hung_up
    assert _confirmations(world) == []
    with session_scope(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "recording.played")) == 0


async def test_without_a_message_the_member_is_told_so(world: World, tmp_path: Path,
                                                       person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    elsewhere = person(Role.MEMBER, bin_number=99)
    await sent_message(world, tmp_path)  # a message for BIN 12, none for BIN 99
    end, call = await _call_back(world, tmp_path, elsewhere.phone, ["1"])
    assert end is CallbackEnd.NO_MESSAGE and end.value == "no_message"
    assert call.said == ["callback_no_message"] and call.played == [] and call.hung_up
    assert _confirmations(world) == []
    end, _ = await _call_back(world, tmp_path, member.phone, [None])
    assert end is CallbackEnd.HEARD  # the control: BIN 12's member does hear it
