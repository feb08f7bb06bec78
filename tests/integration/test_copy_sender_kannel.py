"""The copy engine against the real Kannel (bearerbox, smsbox, fakesmsc): copies written before they are
sent arrive once with their text and numbers, Kannel's delivery reports come back signed to the callback
listener and are stored per copy, and members' replies "1" and "STOP" are honoured."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.copies.callbacks import KannelCallbacks, callback_app
from ivr.copies.email import MailOrigin
from ivr.copies.kannel import dlr_signer, mo_token
from ivr.copies.sender import Composer, CopySender, SenderLimits
from ivr.domain.vocabulary import Channel, CopyStatus
from ivr.lab.kannel import KannelLab
from storage.db import session_scope
from storage.models import Confirmation, Person
from tests.integration.conftest import until
from tests.unit.copies.campaigns import campaign, copies, copy_desk, member, number_of
from tests.world import World

pytestmark = pytest.mark.integration

KEY = secrets.token_bytes(32)
CALLBACK = "+3250000000"


async def test_sms_copies_through_kannel_with_reports_and_replies(world: World, tmp_path: Path) -> None:
    text_only = member(world, channels="sms")
    by_default = member(world)  # urgent: a call and an SMS
    sent = await campaign(world, tmp_path, text="Verdachte wagen in de Kerkstraat, nummerplaat 1-ABC-123.")
    desk = copy_desk(world)
    confirmed: list[int] = []
    listener = KannelCallbacks(callback_app(desk, KEY, on_confirmed=lambda: confirmed.append(1),
                                            clock=world.desk.clock), 0)
    base = await listener.start()
    lab = KannelLab(base, mo_token(KEY))
    await asyncio.to_thread(lab.start)
    sender = CopySender(desk, Composer(CALLBACK, CALLBACK, MailOrigin("bin@example.be"), KEY),
                        sms=lab.gateway(dlr_signer(KEY)), limits=SenderLimits(poll_s=0.1), clock=world.desk.clock)
    try:
        await sender.start()
        arrived = await asyncio.to_thread(lab.wait_for, 2, 60.0)
        numbers = [number_of(world, text_only), number_of(world, by_default)]
        assert sorted(m.receiver for m in arrived) == sorted(numbers)
        for sms in arrived:
            assert "Verdachte wagen in de Kerkstraat" in sms.text and CALLBACK in sms.text and "Kerkwijk" in sms.text
        # Kannel's delivery reports reach the listener and move each copy on (the fake SMSC reports them).
        await until(lambda: {c.status for c in copies(world).values()} == {CopyStatus.DELIVERED}, 60.0,
                    "every copy reported delivered")
        assert all(c.detail == "dlr 1 delivered" and c.delivered_at for c in copies(world).values())
        # A member answers "1": their campaign is confirmed (the dialer stops); another sends STOP.
        await asyncio.to_thread(lab.send_mo, number_of(world, by_default), CALLBACK, "1")
        await asyncio.to_thread(lab.send_mo, number_of(world, text_only), CALLBACK, "STOP")

        def replies_taken() -> bool:
            with session_scope(world.engine) as s:
                confirmations = s.scalars(select(Confirmation.person_id)).all()
                stopped = s.get_one(Person, text_only).sms_opt_out_at is not None
            return confirmations == [by_default] and stopped

        await until(replies_taken, 60.0, "the replies taken")
        assert confirmed
        await asyncio.sleep(0.5)
        assert len(lab.messages) == 2  # each copy once
    finally:
        await sender.stop()
        await asyncio.to_thread(lab.stop)
        await listener.stop()
    assert set(copies(world, sent.campaign_id)) == {(text_only, Channel.SMS), (by_default, Channel.SMS)}
