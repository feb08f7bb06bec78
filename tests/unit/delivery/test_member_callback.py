"""A member calls the BIN line back, against the fake call and a real database (SQLite): no Asterisk.

The slow twin is tests/integration/test_binfoon2.py::test_call_back_and_report_lines."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from ivr.delivery.member_callback import CallbackEnd, member_callback
from ivr.delivery.store import DeliveryDesk
from ivr.telephony.call import CallHungUp
from storage.db import session_scope
from storage.models import AuditEntry, Base, Confirmation, Message, Person
from ivr.domain.vocabulary import Role, Urgency
from tests.conftest import PersonFactory
from tests.fakes import HANG_UP, FakeCall, WhilePlaying
from tests.unit.delivery.sent import CLIP, OTHER_CLIP, delivery_desk, sent_message
from tests.world import OTHER_ZONE_BIN, World

KEY_TIMEOUT_S = 1.0
#: After "press 1 to confirm, 2 to hear it again": the key that stops BIN calls (issue 17).
OFFER_STOP = "callback_calls_stop_offer"
OFFER_BACK = "callback_calls_back_offer"
NOW = dt.datetime(2026, 12, 7, 19, 30, tzinfo=dt.timezone.utc)


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
    assert call.said == ["member_header_urgent", "member_keys", OFFER_STOP, "member_thanks"]
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
    assert call.said == ["member_header_urgent", "member_keys", OFFER_STOP, "member_keys", OFFER_STOP,
                         "member_thanks"]
    assert sorted(c.person_id for c in _confirmations(world)) == [first.id, second.id]


async def test_no_key_means_heard_and_nothing_stored(world: World, tmp_path: Path,
                                                     person: PersonFactory) -> None:
    member = person(Role.MEMBER, language="de")
    await sent_message(world, tmp_path)
    end, call = await _call_back(world, tmp_path, member.phone, [None])
    assert end is CallbackEnd.HEARD and end.value == "heard"
    assert call.said == ["member_header_urgent", "member_keys", OFFER_STOP, "member_goodbye"]
    assert call.language == "de"
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


# -- opting out of BIN calls on the call-back line, and back in (issue 17) -------------------------
def dump(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (to show that nothing was written)."""
    with engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(select(t)).all()), key=repr)
                for t in Base.metadata.sorted_tables}


def _opted_out_at(world: World, person_id: int) -> object:
    with session_scope(world.engine) as s:
        return s.get_one(Person, person_id).calls_opt_out_at


def _opt_audit(world: World) -> list[tuple[str, str, str]]:
    with session_scope(world.engine) as s:
        return [(e.action, e.actor, e.subject) for e in s.scalars(select(AuditEntry).where(
            AuditEntry.action.in_(["member.calls_opt_out", "member.calls_opt_in"])).order_by(AuditEntry.id))]


class OptOutCall(CountingCall):
    """Notes, whenever the system speaks, whether the caller was opted out of calls at that moment."""

    def __init__(self, world: World, person_id: int, *args: object, **kwargs: object) -> None:
        super().__init__(world, *args, **kwargs)
        self.person_id = person_id
        self.opted_out_when_said: dict[str, bool] = {}

    async def say(self, prompt_id: str, **values: object) -> str | None:
        self.opted_out_when_said[prompt_id] = _opted_out_at(self.world, self.person_id) is not None
        return await super().say(prompt_id, **values)


async def _opt_call(world: World, tmp_path: Path, member_id: int, phone: str,
                    script: list[object]) -> tuple[CallbackEnd, OptOutCall]:
    call = OptOutCall(world, member_id, script, tmp_path, caller_id=phone)
    desk = DeliveryDesk(world.engine, world.desk.store, clock=lambda: NOW)
    return await member_callback(call, desk, KEY_TIMEOUT_S), call


async def test_a_member_stops_bin_calls_after_confirming_twice(world: World, tmp_path: Path,
                                                               person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    await sent_message(world, tmp_path)
    end, call = await _opt_call(world, tmp_path, member.id, member.phone, ["9", "1", "1"])
    assert end is CallbackEnd.OPTED_OUT and end.value == "opted_out" and call.hung_up
    assert call.said == ["member_header_urgent", "member_keys", OFFER_STOP, "callback_calls_stop_confirm",
                         "callback_calls_stop_sure", "callback_calls_stopped"]
    # Written before it is said; nothing else happened (the message is not confirmed by a 9).
    assert call.opted_out_when_said == {"member_header_urgent": False, "member_keys": False, OFFER_STOP: False,
                                        "callback_calls_stop_confirm": False, "callback_calls_stop_sure": False,
                                        "callback_calls_stopped": True}
    assert _opted_out_at(world, member.id) == NOW
    assert _opt_audit(world) == [("member.calls_opt_out", "member (call-back line)", f"person:{member.id}")]
    assert _confirmations(world) == []


@pytest.mark.parametrize("answers", [["1", "2"], ["1", None], ["2"], [None], ["1", "9"], ["3"], ["1", HANG_UP]],
                         ids=["yes-no", "yes-silence", "no", "silence", "yes-nine", "other key", "yes-hang-up"])
async def test_one_yes_alone_changes_nothing(world: World, tmp_path: Path, person: PersonFactory,
                                             answers: list[object]) -> None:
    member = person(Role.MEMBER)
    await sent_message(world, tmp_path)
    before = dump(world.engine)
    call = OptOutCall(world, member.id, ["9", *answers], tmp_path, caller_id=member.phone)
    try:
        end: CallbackEnd | None = await member_callback(call, delivery_desk(world), KEY_TIMEOUT_S)
    except CallHungUp:
        end = None
    assert _opted_out_at(world, member.id) is None and _opt_audit(world) == []
    if answers[-1] is HANG_UP:
        assert end is None and "callback_calls_unchanged" not in call.said
    else:
        # Nothing was changed, the menu comes back; the script is spent, so the member hangs up there.
        assert end is None and call.said[-3:] == ["callback_calls_unchanged", "member_keys", OFFER_STOP]
    after = dump(world.engine)
    # Only the line's own bookkeeping moved: the call was counted and the recording audited as played.
    assert {t: rows for t, rows in after.items() if t not in ("line_calls", "audit_log")} == \
        {t: rows for t, rows in before.items() if t not in ("line_calls", "audit_log")}


async def test_after_no_the_member_may_still_confirm_the_message(world: World, tmp_path: Path,
                                                                 person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    await sent_message(world, tmp_path)
    end, call = await _opt_call(world, tmp_path, member.id, member.phone, ["9", "1", "2", "1"])
    assert end is CallbackEnd.CONFIRMED
    assert call.said[-4:] == ["callback_calls_unchanged", "member_keys", OFFER_STOP, "member_thanks"]
    assert _opted_out_at(world, member.id) is None and len(_confirmations(world)) == 1


async def test_an_opted_out_member_is_offered_calls_again_and_comes_back_in(
        world: World, tmp_path: Path, person: PersonFactory) -> None:
    member = person(Role.MEMBER, language="fr")
    await sent_message(world, tmp_path)
    await _opt_call(world, tmp_path, member.id, member.phone, [WhilePlaying("9"), "1", "1"])
    assert _opted_out_at(world, member.id) == NOW
    # The next call-back offers the way back; one yes is not enough there either.
    end, call = await _opt_call(world, tmp_path, member.id, member.phone, ["9", "1", None, None])
    assert end is CallbackEnd.HEARD and _opted_out_at(world, member.id) == NOW
    assert call.said[1:4] == ["member_keys", OFFER_BACK, "callback_calls_back_confirm"] and call.language == "fr"
    end, call = await _opt_call(world, tmp_path, member.id, member.phone, ["9", "1", "1"])
    assert end is CallbackEnd.OPTED_IN and end.value == "opted_in"
    assert call.said == ["member_header_urgent", "member_keys", OFFER_BACK, "callback_calls_back_confirm",
                         "callback_calls_back_sure", "callback_calls_back_done"]
    assert call.opted_out_when_said["callback_calls_back_sure"] is True
    assert call.opted_out_when_said["callback_calls_back_done"] is False  # written before it is said
    assert _opted_out_at(world, member.id) is None
    assert _opt_audit(world) == [("member.calls_opt_out", "member (call-back line)", f"person:{member.id}"),
                                 ("member.calls_opt_in", "member (call-back line)", f"person:{member.id}")]
    with session_scope(world.engine) as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.action.like("member.calls_opt_%"))).all()
    assert [r.details["via"] for r in rows] == ["callback (caller ID, unverified)"] * 2


async def test_a_drill_offers_the_same_choice(world: World, tmp_path: Path, person: PersonFactory) -> None:
    """The key prompts of a drill say it is a test; the calls offer follows them all the same."""
    member = person(Role.MEMBER)
    sent = await sent_message(world, tmp_path)
    with session_scope(world.engine) as s:
        s.get_one(Message, sent.message_id).drill = True
    end, call = await _opt_call(world, tmp_path, member.id, member.phone, [None])
    assert end is CallbackEnd.HEARD
    assert call.said == ["member_header_drill", "member_keys_drill", OFFER_STOP, "member_goodbye"]


async def test_the_opt_out_is_for_every_member_whose_number_it_is(world: World, tmp_path: Path,
                                                                  person: PersonFactory) -> None:
    """The caller ID is all the line knows: a number two households share (a member of another BIN, a
    housemate) stops the calls of both, and offers the way back only once both opted out."""
    shared = "+32496777001"
    first = person(Role.MEMBER, phone=shared)
    other_bin = person(Role.MEMBER, phone=shared, bin_number=OTHER_ZONE_BIN)
    with session_scope(world.engine) as s:
        s.get_one(Person, other_bin.id).calls_opt_out_at = NOW - dt.timedelta(days=3)
    await sent_message(world, tmp_path)
    # One of them still gets calls: what is offered is to stop them (not "to be called again").
    end, call = await _opt_call(world, tmp_path, first.id, shared, ["9", "1", "1"])
    assert end is CallbackEnd.OPTED_OUT and call.said[2] == OFFER_STOP
    assert _opted_out_at(world, first.id) == NOW
    assert _opted_out_at(world, other_bin.id) == NOW - dt.timedelta(days=3)  # kept its own moment
    assert _opt_audit(world) == [("member.calls_opt_out", "member (call-back line)", f"person:{first.id}")]
    end, call = await _opt_call(world, tmp_path, first.id, shared, ["9", "1", "1"])
    assert end is CallbackEnd.OPTED_IN and call.said[2] == OFFER_BACK
    assert _opted_out_at(world, first.id) is None and _opted_out_at(world, other_bin.id) is None
    assert _opt_audit(world)[1:] == [("member.calls_opt_in", "member (call-back line)", f"person:{p}")
                                     for p in sorted([first.id, other_bin.id])]


async def test_a_text_only_member_is_not_offered_the_calls_key(world: World, tmp_path: Path,
                                                               person: PersonFactory) -> None:
    """Text only: no call to stop, none to come back; a 9 is no menu key then. A called household on
    the same number is still offered it, and only its calls stop."""
    deaf = person(Role.MEMBER, phone="+32496777002")
    with session_scope(world.engine) as s:
        s.get_one(Person, deaf.id).channels = "sms"
    await sent_message(world, tmp_path)
    before = dump(world.engine)
    end, call = await _opt_call(world, tmp_path, deaf.id, deaf.phone, [WhilePlaying("9"), "9"])
    assert end is CallbackEnd.HEARD  # a 9 is any other key: the menu once, then goodbye
    assert call.said == ["member_header_urgent", "member_keys", "member_goodbye"]
    assert OFFER_STOP not in call.said and OFFER_BACK not in call.said
    after = dump(world.engine)
    assert {t: rows for t, rows in after.items() if t not in ("line_calls", "audit_log")} == \
        {t: rows for t, rows in before.items() if t not in ("line_calls", "audit_log")}
    housemate = person(Role.MEMBER, phone=deaf.phone, bin_number=OTHER_ZONE_BIN)
    end, call = await _opt_call(world, tmp_path, housemate.id, deaf.phone, ["9", "1", "1"])
    assert end is CallbackEnd.OPTED_OUT and call.said[2] == OFFER_STOP
    assert _opted_out_at(world, housemate.id) == NOW and _opted_out_at(world, deaf.id) is None
