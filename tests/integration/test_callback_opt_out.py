"""Opting out of BIN calls on the call-back line, and back in, against the real Asterisk and dialplan
(issue 17 item 5): a member presses 9 during the message, then 1 to both questions, and hears it
is done; the next call-back offers the way back. The fast twin is
tests/unit/delivery/test_member_callback.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.domain.vocabulary import CampaignStatus, Language, MessageStatus, PhoneRank, Role
from ivr.lab.network import CallerScript, Listen, Press, Wait
from ivr.lab.phone_lab import PhoneLab
from ivr.media.compare import hear_file
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import AuditEntry, Campaign, Message, Person, PhoneNumber, RoleAssignment
from tests.integration import binfoon as app_on_lab
from tests.integration.binfoon import start_binfoon, wav_seconds
from tests.unit.delivery.sent import CLIP, sent_message
from tests.world import build_world

pytestmark = pytest.mark.integration

BIN_LINE = "+3250000000"  # the call-back line: the number every member call presents
MEMBER_PHONE = "+3291100001"


async def test_a_member_stops_bin_calls_by_phone_and_takes_them_again(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    config = app_on_lab.test_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'binfoon.db'}")
    world = build_world(config.database_url, config.data_dir / "recordings")
    with session_scope(world.engine) as s:
        member = Person(name="Lid", language=Language.NL)
        member.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=MEMBER_PHONE))
        member.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=world.bin_id))
        s.add(member)
        s.flush()
        member_id = member.id
    sent = await sent_message(world, tmp_path)
    with session_scope(world.engine) as s:  # delivered already: the service has nothing to dial
        s.get_one(Campaign, sent.campaign_id).status = CampaignStatus.DONE
        s.get_one(Message, sent.message_id).status = MessageStatus.DONE
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=world)
    try:
        # 9 in the middle of the message, then 1 to "press 1 to confirm" and 1 to "are you sure?".
        during_message_s = wav_seconds(await renderer.wav("member_header_urgent", "nl")) + wav_seconds(CLIP) / 2
        twice_yes = CallerScript.of(Wait(during_message_s), Press("9"), Listen(), Press("1"), Listen(), Press("1"),
                                    Listen(), Listen(timeout_s=5))
        stopped = await (await lab.call_in(MEMBER_PHONE, twice_yes, BIN_LINE)).wait(90)
        ends = [f.end for f in await binfoon.timeline.wait_for_flows("member_callback", 1)]
        assert ends == ["opted_out"] and stopped.hung_up_by == "callee"
        heard = await asyncio.to_thread(stopped.heard_audio)
        for prompt in ("callback_calls_stop_confirm", "callback_calls_stop_sure", "callback_calls_stopped"):
            assert hear_file(await renderer.wav(prompt, "nl"), heard).whole, prompt
        with session_scope(world.engine) as s:
            assert s.get_one(Person, member_id).calls_opt_out_at is not None
        # The next call-back offers the way back, with the same two questions.
        back = await (await lab.call_in(MEMBER_PHONE, twice_yes, BIN_LINE)).wait(90)
        ends = [f.end for f in await binfoon.timeline.wait_for_flows("member_callback", 2)]
        assert ends == ["opted_out", "opted_in"]
        heard = await asyncio.to_thread(back.heard_audio)
        assert hear_file(await renderer.wav("callback_calls_back_done", "nl"), heard).whole
        with session_scope(world.engine) as s:
            assert s.get_one(Person, member_id).calls_opt_out_at is None
            rows = s.scalars(select(AuditEntry).where(AuditEntry.action.like("member.calls_opt_%"))
                             .order_by(AuditEntry.id)).all()
        assert [(r.action, r.actor, r.subject) for r in rows] == [
            ("member.calls_opt_out", "member (call-back line)", f"person:{member_id}"),
            ("member.calls_opt_in", "member (call-back line)", f"person:{member_id}")]
    finally:
        await binfoon.app.stop()
