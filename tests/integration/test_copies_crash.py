"""Issue 17's crash safety: the service (`binfoon serve`, its own process) is SIGKILLed while SMS and
e-mail copies are going out, and started again. Each member gets each copy once.

Counted at the far ends: the SMS the fake SMSC received per number, the e-mails the relay accepted per
address. An SMS left "sending" by the kill is not sent again when Kannel's delivery report says it
went (Kannel retries that report until the restarted service takes it). An e-mail left "sending" is
sent again with the same Message-ID: SMTP has no idempotent hand-over, so a kill between the relay's
"250" and our commit gives that member the same message twice; a mailbox shows it once (one
Message-ID), and the test reports how often the relay saw a repeat.

The kill is placed, not hoped for: the service is frozen (SIGSTOP) at random moments until it is
frozen with an SMS in Kannel's hands that our rows still call "sending", and killed there.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.domain.vocabulary import Channel, CopyStatus
from ivr.lab.copies_lab import CopiesLab
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import member_cases, seed_members
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import Message, Person, PhoneNumber, TextCopy
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import serve_process, start_binfoon, stop_process, submit_recorded
from tests.integration.conftest import until

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
MEMBERS = 40
FINAL = (CopyStatus.DELIVERED, CopyStatus.SENT, CopyStatus.FAILED, CopyStatus.BOUNCED, CopyStatus.CANCELLED)


async def test_sigkill_while_copies_go_out_each_member_gets_each_copy_once(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    engine = binfoon.world.engine
    data_dir = binfoon.settings.data_dir
    people = seed_members(engine, 12, member_cases(MEMBERS, 10.0), prefix="+32471")
    with session_scope(engine) as s:
        for i, person_id in enumerate(sorted(people), start=1):
            person = s.get_one(Person, person_id)
            person.channels, person.email = "text", f"lid{i}@mail.lab.invalid"
        numbers = {p.person_id: p.e164 for p in s.scalars(select(PhoneNumber).where(
            PhoneNumber.person_id.in_(list(people)), PhoneNumber.rank == "primary"))}
    await binfoon.app.stop()
    await lab.app.stop()  # free the FastAGI port for the service's own process
    texts = CopiesLab(data_dir)
    await asyncio.to_thread(texts.start)
    env = {key.removeprefix("BINFOON_").lower(): value for key, value in texts.environment().items()}
    log = tmp_path / "serve.log"

    def handed_over() -> int:
        with session_scope(engine) as s:
            return s.scalar(select(func.count()).select_from(TextCopy).where(
                TextCopy.status.in_((CopyStatus.SENT, CopyStatus.DELIVERED)))) or 0

    def statuses() -> Counter[str]:
        with session_scope(engine) as s:
            return Counter(f"{c.channel.value}:{c.status.value}" for c in s.scalars(select(TextCopy)))

    def in_kannels_hands() -> set[str]:
        """SMS copies still "sending" in our rows whose number the SMSC already received: the service
        handed them over but had not stored that yet."""
        with session_scope(engine) as s:
            sending = {c.address for c in s.scalars(select(TextCopy).where(
                TextCopy.channel == Channel.SMS, TextCopy.status == CopyStatus.SENDING))}
        return sending & {m.receiver for m in texts.kannel.messages}

    first = serve_process(lab, binfoon.settings.resolved_database_url, data_dir, log, **env)
    caught: set[str] = set()
    try:
        message_id = await submit_recorded(binfoon, CLIP, chain=False)
        with session_scope(engine) as s:
            s.get_one(Message, message_id).text = "Oefening: rookontwikkeling gemeld in de Molenstraat."
        await until(lambda: handed_over() >= 2, 180, "the first copies handed over", poll_s=0.02)
        # Freeze the service at random moments while copies go out, until it is frozen after handing an
        # SMS to Kannel and before storing that (Kannel, not frozen, delivers it meanwhile): the kill
        # then lands in the one window where sending the SMS again would send it twice.
        rng = random.Random(17)
        for _ in range(400):
            first.send_signal(signal.SIGSTOP)
            await asyncio.sleep(0.4)
            caught = await asyncio.to_thread(in_kannels_hands)
            if caught or handed_over() >= 2 * MEMBERS - 4:
                break
            first.send_signal(signal.SIGCONT)
            await asyncio.sleep(rng.uniform(0.0, 0.08))
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = statuses()
    finally:
        if first.poll() is None:
            first.kill()
    try:
        assert caught, f"the kill never landed between an SMS's hand-over and its record: {at_kill}"
        second = serve_process(lab, binfoon.settings.resolved_database_url, data_dir, log, **env)
        try:
            def done() -> bool:
                now = statuses()
                return sum(now.values()) == 2 * MEMBERS and all(
                    k.split(":")[1] in ("delivered", "sent", "failed", "bounced", "cancelled") for k in now) \
                    and now.get("sms:delivered", 0) == MEMBERS
            await until(done, 240, "every copy handed over and every SMS reported delivered", poll_s=0.2)
            await asyncio.sleep(2)  # anything sent twice would arrive meanwhile
        finally:
            stop_process(second)
        received = Counter(m.receiver for m in texts.kannel.messages)
        mails = texts.smtp.messages
        per_address = Counter(a for m in mails for a in m.rcpt_tos)
        message_ids = {a: {m.message["Message-ID"] for m in mails if a in m.rcpt_tos} for a in per_address}
        repeats = sum(n - 1 for n in per_address.values())
        print(f"\nat the kill: {dict(at_kill)} ({len(caught)} SMS already at the SMSC but not yet recorded); after the restart: {dict(statuses())}; SMS received "
              f"{sum(received.values())} for {len(received)} numbers; e-mails accepted {len(mails)} for "
              f"{len(per_address)} addresses ({repeats} repeated with the same Message-ID)")
        assert received == Counter(numbers.values()), "each member's SMS arrived exactly once"
        assert len(per_address) == MEMBERS and all(len(ids) == 1 for ids in message_ids.values()), \
            "each member's e-mail is one message (one Message-ID)"
        # Only an e-mail that was in the relay's hands at the kill can have been handed over twice.
        assert repeats <= at_kill.get("email:sending", 0), f"{repeats} e-mails handed over twice"
        with session_scope(engine) as s:
            assert {(c.person_id, c.channel) for c in s.scalars(select(TextCopy))} == \
                {(p, ch) for p in people for ch in (Channel.SMS, Channel.EMAIL)}
    finally:
        await asyncio.to_thread(texts.stop)
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-5:]
            print("serve.log tail:", *tail, sep="\n  ")
