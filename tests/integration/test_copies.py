"""Issue 17's acceptance on the real Asterisk: a 30-member urgent campaign with mixed channel choices,
SMS through the real Kannel (its fake SMSC) and e-mail through a real SMTP relay (STARTTLS, AUTH).

Counted at the far ends, not in our own rows: the SMS the SMSC received (numbers and texts), the
e-mails the relay accepted (with the original audio attached), the calls the simulated network saw.
Kannel's delivery reports are stored per copy; a member's "1" by SMS confirms (nobody calls them
again), "STOP" opts out (the ladder then sends them nothing); the ladder sends its SMS to exactly the
called members who did not confirm and had no SMS yet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.delivery.report import campaign_report, copy_counts
from ivr.domain.vocabulary import Channel, CopyReason, CopyStatus
from ivr.lab.copies_lab import CopiesLab
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import member_cases, script_members, seed_members
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import CallAttempt, Campaign, Confirmation, Message, Person, PhoneNumber, TextCopy
from storage.recordings import open_recording
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import message_seconds, start_binfoon, submit_recorded
from tests.integration.conftest import until

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
TYPED = "Inbraak in de Kerkstraat vannacht. Sluit ramen en deuren en meld verdachte personen aan 101."
CALLBACK = "+3250000000"

#: Each member's channels by position (1-based), as a coordinator would set them: the rest chose
#: nothing (the zone's default for an urgent message: a call and an SMS).
VOICE_ONLY = range(11, 17)          # calls only: the ladder's SMS if they do not confirm
TEXT_ONLY = range(17, 22)           # deaf households: SMS and e-mail, never called
VOICE_EMAIL = range(22, 27)         # a call and an e-mail: the ladder's SMS if they do not confirm
EVERYTHING = range(27, 31)          # a call, an SMS and an e-mail
SMS_CONFIRMS = 6                    # never answers the phone, answers the SMS with "1"
SENDS_STOP = 16                     # calls only, busy every time, sends STOP before the ladder


def _channels(position: int) -> tuple[str | None, str | None]:
    email = f"huishouden{position}@mail.lab.invalid"
    if position in VOICE_ONLY:
        return "voice", None
    if position in TEXT_ONLY:
        return "text", email
    if position in VOICE_EMAIL:
        return "voice+email", email
    if position in EVERYTHING:
        return "voice+sms+email", email
    return None, None


async def test_thirty_members_mixed_channels_sms_email_replies_and_ladder(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    data_dir = tmp_path / "var"
    texts = CopiesLab(data_dir)
    await asyncio.to_thread(texts.start)
    binfoon = None
    try:
        binfoon = await start_binfoon(lab, tmp_path, renderer, max_channels=10, max_cps=10.0,
                                      member_ring_timeout_s=3.0, urgent_retry_after_s=1.0,
                                      no_key_retry_after_s=1.0, member_reminders=1, ladder_after_s=3.0,
                                      caller_id_number=CALLBACK, **texts.settings())
        engine = binfoon.world.engine
        cases = member_cases(30, await message_seconds(renderer, CLIP))
        people = seed_members(engine, 12, cases, prefix="+32470")  # mobile numbers
        script_members(lab, engine, people)
        position_of = {person_id: i for i, person_id in enumerate(sorted(people), start=1)}
        with session_scope(engine) as s:
            for person_id, position in position_of.items():
                person = s.get_one(Person, person_id)
                person.channels, person.email = _channels(position)
            numbers = {p.person_id: p.e164 for p in s.scalars(select(PhoneNumber).where(
                PhoneNumber.person_id.in_(list(people)), PhoneNumber.rank == "primary"))}
            all_numbers = {p.e164: p.person_id for p in s.scalars(select(PhoneNumber).where(
                PhoneNumber.person_id.in_(list(people))))}
        person_at = {position: person_id for person_id, position in position_of.items()}

        # The officer's message has a typed text beside the recording: the SMS and e-mails carry it.
        message_id = await submit_recorded(binfoon, CLIP, chain=False)
        with session_scope(engine) as s:
            message = s.get_one(Message, message_id)
            message.text = TYPED
            take = next(r for r in message.recordings if r.take == message.submitted_take)
            audio = open_recording(Path(take.path), take.sha256).read_bytes()
            take_id = take.id
        binfoon.app.chain.take_kept(message_id, take_id)
        binfoon.app.chain.submitted(message_id)

        def campaign_id() -> int | None:
            with session_scope(engine) as s:
                return s.scalar(select(Campaign.id).where(Campaign.message_id == message_id))

        await until(lambda: campaign_id() is not None, 60, "the campaign started")
        # The member who never answers the phone answers the SMS copy with "1".
        confirms_by_sms = person_at[SMS_CONFIRMS]
        await until(lambda: texts.kannel.to(numbers[confirms_by_sms]), 60, "the SMS copy reached the member")
        await asyncio.to_thread(texts.kannel.send_mo, numbers[confirms_by_sms], CALLBACK, "1")
        # The calls-only member sends STOP before the ladder could reach them.
        stopper = person_at[SENDS_STOP]
        await asyncio.to_thread(texts.kannel.send_mo, numbers[stopper], CALLBACK, "STOP")

        def confirmed_by_sms() -> bool:
            with session_scope(engine) as s:
                return s.scalar(select(Confirmation.via).where(Confirmation.person_id == confirms_by_sms)) == "sms"

        def stopped() -> bool:
            with session_scope(engine) as s:
                return s.get_one(Person, stopper).sms_opt_out_at is not None

        await until(confirmed_by_sms, 60, "the SMS reply 1 confirmed")
        await until(stopped, 60, "STOP taken")
        cid = campaign_id()
        assert cid is not None

        def settled() -> bool:
            with session_scope(engine) as s:
                done = s.get_one(Campaign, cid).status.value == "done"
                copies = list(s.scalars(select(TextCopy).where(TextCopy.campaign_id == cid)))
            return done and bool(copies) and all(
                c.status in (CopyStatus.DELIVERED, CopyStatus.SENT, CopyStatus.FAILED, CopyStatus.BOUNCED,
                             CopyStatus.CANCELLED) for c in copies)

        await until(settled, 300, "the campaign done and every copy handed over")

        def ladder_done() -> bool:
            report = campaign_report(engine, cid, binfoon.app.campaigns.policies, dt.datetime.now(dt.timezone.utc),
                                     binfoon.settings)
            return report.ladder_waiting == 0 and settled()
        await until(ladder_done, 120, "every ladder SMS written and handed over")

        def delivered() -> bool:
            with session_scope(engine) as s:
                return all(c.status is not CopyStatus.SENT for c in s.scalars(
                    select(TextCopy).where(TextCopy.campaign_id == cid, TextCopy.channel == Channel.SMS)))
        await until(delivered, 60, "every SMS's delivery report stored")

        with session_scope(engine) as s:
            copies = list(s.scalars(select(TextCopy).where(TextCopy.campaign_id == cid)))
            confirmed = set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == cid)))
            confirmed_at = {c.person_id: c.confirmed_at for c in s.scalars(select(Confirmation))}
        sms = {c.person_id: c for c in copies if c.channel is Channel.SMS}
        emails = {c.person_id: c for c in copies if c.channel is Channel.EMAIL}

        # -- who should have got what ------------------------------------------------------------------
        text_only = {person_at[p] for p in TEXT_ONLY}
        by_choice_sms = {person_at[p] for p in range(1, 11)} | {person_at[p] for p in EVERYTHING} | text_only
        wants_email = {person_at[p] for p in (*TEXT_ONLY, *VOICE_EMAIL, *EVERYTHING)}
        called = set(people) - text_only
        # Who confirms, as scripted (the simulator's keys), and the one who confirmed by SMS.
        scripted_confirmed = {p for p in called if people[p].expected == "confirmed"}
        assert confirmed == scripted_confirmed | {confirms_by_sms}
        # The ladder: called, not confirmed, no SMS copy of their own, not opted out of SMS.
        ladder_expected = {p for p in called - by_choice_sms - scripted_confirmed if p != stopper}
        ladder_sent = {p for p, c in sms.items() if c.reason is CopyReason.LADDER}
        print(f"\nSMS copies {len(sms)} (choice/text-only {len(sms) - len(ladder_sent)}, ladder {len(ladder_sent)}), "
              f"e-mails {len(emails)}; confirmed {len(confirmed)} of 30; ladder to {sorted(position_of[p] for p in ladder_sent)}, "
              f"expected {sorted(position_of[p] for p in ladder_expected)}; counts {copy_counts(engine, cid)}")
        assert {p for p, c in sms.items() if c.reason is not CopyReason.LADDER} == by_choice_sms
        assert ladder_sent == ladder_expected and ladder_expected, "the ladder reached exactly the unconfirmed"
        assert stopper not in sms and stopper not in confirmed
        assert set(emails) == wants_email
        assert all(c.reason is CopyReason.TEXT_ONLY for p, c in {**sms, **emails}.items() if p in text_only)

        # -- what the SMSC received: each copy once, to the member's number, with the typed text -------
        received = texts.kannel.messages
        by_number = Counter(m.receiver for m in received)
        assert by_number == Counter(numbers[p] for p in sms), "each SMS copy arrived once, at its number"
        for message in received:
            assert "Kerkwijk" in message.text and CALLBACK in message.text
            assert "Inbraak in de Kerkstraat" in message.text
        # Kannel's delivery reports are stored per copy (the fake SMSC reports each one delivered).
        assert all(c.status is CopyStatus.DELIVERED and c.delivered_at is not None for c in sms.values())

        # -- what the relay accepted: each e-mail once, over TLS after AUTH, the audio attached ---------
        mails = texts.smtp.messages
        assert Counter(a for m in mails for a in m.rcpt_tos) == Counter(c.address for c in emails.values())
        for mail in mails:
            assert mail.tls and mail.authenticated
            body = mail.message.get_body(preferencelist=("plain",))
            assert body is not None and TYPED in body.get_content()
            [attachment] = [part for part in mail.message.iter_attachments()]
            assert attachment.get_content_type() in ("audio/wav", "audio/x-wav")
            assert attachment.get_payload(decode=True) == audio  # the original recording, byte for byte
            assert mail.message["List-Unsubscribe"]
        assert all(c.status is CopyStatus.SENT for c in emails.values())

        # -- calls: text-only members were never called; the SMS confirmation stopped the calls ------------
        network = Counter(all_numbers[c.number] for c in lab.network.calls if c.number in all_numbers)
        assert not text_only & set(network), "a text-only member was called"
        # Nobody dials the member who confirmed by SMS after their "1" was stored, and the network saw
        # no call to them beyond the attempts written.
        with session_scope(engine) as s:
            theirs = list(s.scalars(select(CallAttempt).where(CallAttempt.campaign_id == cid,
                                                                CallAttempt.person_id == confirms_by_sms)))
        sms_confirmed_at = confirmed_at[confirms_by_sms]
        assert [a for a in theirs if a.dialled_at is not None and a.dialled_at > sms_confirmed_at] == []
        placed = [a for a in theirs if a.dial_outcome not in ("not_placed", "barred")]
        assert network[confirms_by_sms] == len(placed)
        report = campaign_report(engine, cid, binfoon.app.campaigns.policies, dt.datetime.now(dt.timezone.utc),
                                 binfoon.settings)
        lines = {line.person_id: line for line in report.members}
        assert len(lines) == 30
        print(f"report states {dict(Counter(line.state for line in report.members))}; "
              f"confirmed at {sorted(position_of[p] for p in confirmed_at if p in people)}")
    finally:
        if binfoon is not None:
            await binfoon.app.stop()
        await asyncio.to_thread(texts.stop)
