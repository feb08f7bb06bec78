"""The PIN and caller-ID gates against the real Asterisk and dialplan (issue 14 items 2 and 3,
RELIABILITY D2): scripted callers with DTMF over the lab's carrier.

- D2: wrong PINs from several caller IDs that all lead to one officer's account lock the account
  at the fifth, whatever number comes next, and an admin alert is written before the caller hears
  "locked";
- the BIN call-back line: a member over the per-caller limit hears exactly what an unknown number
  hears (the same prompt, whole, and not the message), and the limit is read from the database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.lab.network import CallerScript, HangUp, Listen, Press
from ivr.lab.phone_lab import PhoneLab
from ivr.media.compare import hear_file
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import AuditEntry, Campaign, Message, Person, PhoneNumber, PinAttempt, RoleAssignment
from ivr.domain.vocabulary import CampaignStatus, Language, MessageStatus, PhoneRank, Role
from tests.integration import binfoon as app_on_lab
from tests.integration.binfoon import officer_script, start_binfoon
from tests.unit.delivery.sent import CLIP, sent_message
from tests.world import OFFICER_PHONE, build_world

pytestmark = pytest.mark.integration

#: The officer's second number (a person has at most two): another caller ID leading to the account.
OFFICER_SECOND_PHONE = "+32475000002"
BIN_LINE = "+3250000000"  # the call-back line: the number every member call presents
MEMBER_PHONE = "+3291100001"


def _wrong(times: int) -> CallerScript:
    """A caller who types a wrong 6-digit PIN ``times`` times, listening to each answer."""
    steps: list[object] = []
    for _ in range(times):
        steps += [Listen(), Press("000000#")]
    return CallerScript.of(*steps, Listen(), Listen(timeout_s=5))  # type: ignore[arg-type]


async def test_d2_wrong_pins_from_several_caller_ids_lock_the_account_and_alert_an_admin(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    try:
        with session_scope(binfoon.world.engine) as s:
            s.add(PhoneNumber(person_id=binfoon.world.officer_id, rank=PhoneRank.SECONDARY, e164=OFFICER_SECOND_PHONE))
        # Three wrong from the first number (that number locks), two from the second: the account's fifth.
        first = await (await lab.call_in(OFFICER_PHONE, _wrong(3))).wait(60)
        second = await (await lab.call_in(OFFICER_SECOND_PHONE, _wrong(3))).wait(60)
        assert first.hung_up_by == second.hung_up_by == "callee"  # "locked", then BINfoon hung up
        # The account is locked: the right PIN from the second number is not even asked for.
        again = await (await lab.call_in(OFFICER_SECOND_PHONE, officer_script(CLIP))).wait(60)
        assert again.hung_up_by == "callee"
        ends = [f.end for f in await binfoon.timeline.wait_for_flows("police_intake", 3)]
        assert ends == ["locked", "locked", "locked"]
        with session_scope(binfoon.world.engine) as s:
            outcomes = [(a.caller_id, a.outcome.value) for a in s.scalars(select(PinAttempt).order_by(PinAttempt.id))]
            entries = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
            assert s.scalars(select(Message)).all() == []
        assert outcomes == [(OFFICER_PHONE, "wrong")] * 3 + [(OFFICER_SECOND_PHONE, "wrong")] * 2
        [alert] = [e for e in entries if e.action == "security.alert"]
        assert alert.details["kind"] == "pin_account_locked" and alert.subject == f"person:{binfoon.world.officer_id}"
        assert OFFICER_SECOND_PHONE not in str(alert.details) and "000000" not in str(alert.details)
        # Written with the fifth failure, before the caller was told "locked" (no waiting for a sweep).
        locked = [e.id for e in entries if e.action == "police.locked"]
        assert len(locked) == 2 and locked[0] < alert.id < locked[1]
    finally:
        await binfoon.app.stop()


async def test_a_limited_member_on_the_call_back_line_sounds_like_an_unknown_number(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    config = app_on_lab.test_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'binfoon.db'}")
    world = build_world(config.database_url, config.data_dir / "recordings")
    with session_scope(world.engine) as s:
        member = Person(name="Lid", language=Language.NL)
        member.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=MEMBER_PHONE))
        member.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=world.bin_id))
        s.add(member)
    sent = await sent_message(world, tmp_path)
    with session_scope(world.engine) as s:  # delivered already: the service has nothing to dial
        s.get_one(Campaign, sent.campaign_id).status = CampaignStatus.DONE
        s.get_one(Message, sent.message_id).status = MessageStatus.DONE
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=world, line_caller_max_calls=2)
    try:
        listens = CallerScript.of(Listen(), HangUp())
        for _ in range(2):  # within the limit: the member hears the message
            await (await lab.call_in(MEMBER_PHONE, listens, BIN_LINE)).wait(60)
        await binfoon.timeline.wait_for_flows("member_callback", 2)
        # Over the limit (counted in the database, not in memory), and a stranger: the same answer.
        script = CallerScript.of(Listen(), Listen(timeout_s=5))
        limited = await (await lab.call_in(MEMBER_PHONE, script, BIN_LINE)).wait(60)
        stranger = await (await lab.call_in("+32470999888", script, BIN_LINE)).wait(60)
        ends = [f.end for f in await binfoon.timeline.wait_for_flows("member_callback", 4)]
        assert ends[2:] == ["limited", "unknown_caller"]
        neutral = await renderer.wav("callback_no_message", "nl")
        for call in (limited, stranger):
            heard = await asyncio.to_thread(call.heard_audio)
            assert call.hung_up_by == "callee"
            assert hear_file(neutral, heard).whole            # "no message for your neighbourhood" ...
            assert hear_file(CLIP, heard).lag_s is None        # ... and nothing of the recording
        with session_scope(world.engine) as s:
            played = s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.played")).all()
            refused = s.scalars(select(AuditEntry).where(AuditEntry.action == "callback.call_limited")).all()
        assert len(played) == 2 and len(refused) == 1
    finally:
        await binfoon.app.stop()
