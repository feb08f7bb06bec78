"""The copy sender against a real SQLite database and fake gateways that record, fail or refuse (and once
against the lab's real SMTP relay): what goes, once, and how it resumes after a crash."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.copies.email import MailOrigin
from ivr.copies.gateways import EmailCopy, SendFailed, SendRefused, SmsCopy
from ivr.copies.sender import Composer, CopySender, SenderLimits
from ivr.domain.channels import LadderRules
from ivr.domain.vocabulary import AttemptOutcome, Channel, CopyReason, CopyStatus
from ivr.lab.smtp import SmtpLab
from storage.db import session_scope
from storage.models import TextCopy
from tests.conftest import Clock
from tests.unit.copies.campaigns import call, campaign, copies, copy_desk, member, number_of, transcribe
from tests.world import World

CALLBACK = "+3250123456"
KEY = secrets.token_bytes(32)
FAST = SenderLimits(sms_per_s=1000.0, concurrency=4, poll_s=0.05, stop_grace_s=0.5)


class FakeSms:
    """An SMS gateway that records every hand-over; ``script`` says what the next ones do (an exception
    to raise, or ``"hang"``: never answer)."""

    def __init__(self, *script: Exception | str) -> None:
        self.script = list(script)
        self.sent: list[SmsCopy] = []

    async def send(self, sms: SmsCopy) -> str:
        self.sent.append(sms)
        step = self.script.pop(0) if self.script else None
        if step == "hang":
            await asyncio.Event().wait()
        if isinstance(step, Exception):
            raise step
        return "0: Accepted for delivery"


class FakeMailer:
    """A relay that records every hand-over (see ``FakeSms``)."""

    def __init__(self, *script: Exception | str) -> None:
        self.script = list(script)
        self.sent: list[EmailCopy] = []

    async def send(self, mail: EmailCopy) -> str:
        self.sent.append(mail)
        for _name, path in mail.attachments:
            assert path.read_bytes()[:4] == b"RIFF"  # the recording is there while it is handed over
        step = self.script.pop(0) if self.script else None
        if step == "hang":
            await asyncio.Event().wait()
        if isinstance(step, Exception):
            raise step
        return "250 2.0.0 Ok: queued as ABC123"


def sender(world: World, *, sms: object = None, mailer: object = None, limits: SenderLimits = FAST,
           **rules: object) -> CopySender:
    composer = Composer(CALLBACK, CALLBACK, MailOrigin("BIN Gent <bin@gent.example.be>"), KEY)
    return CopySender(copy_desk(world, **rules), composer, sms=sms, mailer=mailer,  # type: ignore[arg-type]
                      limits=limits, clock=world.desk.clock)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        await asyncio.sleep(0.02)


def statuses(world: World) -> dict[tuple[int, Channel], CopyStatus]:
    return {key: row.status for key, row in copies(world).items()}


async def passes(running: CopySender, count: int = 3) -> None:
    """Let the loop make ``count`` more passes."""
    start = running.passes
    await until(lambda: running.passes >= start + count, f"{count} passes")


async def test_each_copy_goes_once_with_the_message_bin_and_call_back_number(world: World, tmp_path: Path) -> None:
    text_only = member(world, channels="sms+email", email="doof@example.be", language="fr")
    by_default = member(world)  # urgent: voice + SMS
    member(world, channels="voice")
    sent = await campaign(world, tmp_path, text="Verdachte wagen in de Kerkstraat.")
    sms, mail = FakeSms(), FakeMailer()
    running = sender(world, sms=sms, mailer=mail)
    await running.start()
    try:
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "every copy sent")
        await passes(running)
    finally:
        await running.stop()
    assert sorted(s.to for s in sms.sent) == sorted([number_of(world, text_only), number_of(world, by_default)])
    assert len(statuses(world)) == 3 and len(mail.sent) == 1
    for one in sms.sent:
        assert "Kerkwijk" in one.text and CALLBACK in one.text and "Verdachte wagen" in one.text
        assert one.sender == CALLBACK
    [email] = mail.sent
    rows = copies(world, sent.campaign_id)
    assert email.to == "doof@example.be"
    assert email.message_id == f"<{rows[(text_only, Channel.EMAIL)].id}@gent.example.be>"
    assert email.headers["List-Unsubscribe"].startswith("<mailto:") and email.attachments
    assert rows[(text_only, Channel.EMAIL)].provider_ref == email.message_id
    assert rows[(by_default, Channel.SMS)].segments == 1
    assert running.handed == {"sms.sent": 2, "email.sent": 1}


async def test_a_passing_failure_is_tried_again_until_it_goes(world: World, tmp_path: Path) -> None:
    someone = member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms(SendFailed("smsbox 503: busy"), RuntimeError("a bug of ours"))
    running = sender(world, sms=sms)
    await running.start()
    try:
        await until(lambda: statuses(world) == {(someone, Channel.SMS): CopyStatus.SENT}, "the SMS sent")
    finally:
        await running.stop()
    [row] = copies(world).values()
    assert len(sms.sent) == 3 and row.tries == 3 and {s.copy_id for s in sms.sent} == {row.id}


async def test_passing_failures_end_after_copy_max_tries(world: World, tmp_path: Path) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms(*[SendFailed("smsbox: connection refused")] * 5)
    running = sender(world, sms=sms, max_tries=3)
    await running.start()
    try:
        await until(lambda: set(statuses(world).values()) == {CopyStatus.FAILED}, "the SMS failed")
        await passes(running)
    finally:
        await running.stop()
    assert len(sms.sent) == 3
    [row] = copies(world).values()
    assert row.detail == "smsbox: connection refused"


async def test_a_refusal_is_not_tried_again_and_an_email_refusal_is_a_bounce(world: World, tmp_path: Path) -> None:
    someone = member(world, channels="sms+email", email="weg@example.be")
    await campaign(world, tmp_path, text="Let op.")
    sms, mail = FakeSms(SendRefused("smsbox 403: Not routable")), FakeMailer(SendRefused("550 5.1.1 unknown"))
    running = sender(world, sms=sms, mailer=mail)
    await running.start()
    try:
        await until(lambda: statuses(world) == {(someone, Channel.SMS): CopyStatus.FAILED,
                                                (someone, Channel.EMAIL): CopyStatus.BOUNCED}, "refused")
        await passes(running)
    finally:
        await running.stop()
    assert len(sms.sent) == 1 and len(mail.sent) == 1


async def test_an_sms_waits_for_the_transcript_and_carries_it(world: World, tmp_path: Path) -> None:
    someone = member(world, channels="sms")
    spoken = await campaign(world, tmp_path)
    sms = FakeSms()
    running = sender(world, sms=sms)
    await running.start()
    try:
        await passes(running)
        assert sms.sent == [] and statuses(world) == {(someone, Channel.SMS): CopyStatus.QUEUED}
        transcribe(world, spoken.message_id, "inbraak in de schoolstraat")
        running.wake()
        await until(lambda: len(sms.sent) == 1, "the SMS")
    finally:
        await running.stop()
    assert "inbraak in de schoolstraat" in sms.sent[0].text


async def test_an_sms_without_a_transcript_goes_after_the_wait(world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path)
    sms = FakeSms()
    running = sender(world, sms=sms)
    await running.start()
    try:
        await passes(running)
        assert sms.sent == []
        clock.advance(seconds=FAST.text_wait_s)
        await until(lambda: len(sms.sent) == 1, "the SMS")
    finally:
        await running.stop()
    assert CALLBACK in sms.sent[0].text


async def test_the_ladder_sms_goes_to_the_unconfirmed_member_after_the_delay(
        world: World, tmp_path: Path, clock: Clock) -> None:
    missed = member(world, channels="voice")
    sent = await campaign(world, tmp_path, text="Let op.")
    call(world, sent.campaign_id, missed, AttemptOutcome.NO_ANSWER, clock.now)
    sms = FakeSms()
    running = sender(world, sms=sms, ladder=LadderRules(True, 900.0))
    await running.start()
    try:
        await passes(running)
        assert sms.sent == []
        clock.advance(seconds=900)
        running.wake()
        await until(lambda: len(sms.sent) == 1, "the ladder's SMS")
    finally:
        await running.stop()
    [row] = copies(world).values()
    assert row.reason is CopyReason.LADDER and sms.sent[0].to == number_of(world, missed)


# -- resume after a crash ---------------------------------------------------------------------------
async def _left_sending(world: World, channel: str, **gateways: object) -> TextCopy:
    """A copy handed over by a process that then stopped without the answer (it hangs until cut)."""
    running = sender(world, limits=SenderLimits(concurrency=4, poll_s=0.05, stop_grace_s=0.1), **gateways)
    [gateway] = gateways.values()
    await running.start()
    await until(lambda: bool(gateway.sent), "a hand-over")  # type: ignore[attr-defined]
    await running.stop()  # the hand-over is cut: the copy stays SENDING
    [row] = [r for r in copies(world).values() if r.channel == channel]
    assert row.status is CopyStatus.SENDING and row.tries == 1
    return row


async def test_an_email_left_sending_is_sent_again_once_with_the_same_message_id(
        world: World, tmp_path: Path) -> None:
    member(world, channels="email", email="lid@example.be")
    await campaign(world, tmp_path, text="Let op.")
    first = FakeMailer("hang")
    row = await _left_sending(world, "email", mailer=first)
    again = FakeMailer()
    running = sender(world, mailer=again)
    await running.start()
    try:
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "the e-mail sent")
        await passes(running)
    finally:
        await running.stop()
    assert len(again.sent) == 1
    assert again.sent[0].message_id == first.sent[0].message_id == f"<{row.id}@gent.example.be>"
    [after] = copies(world).values()
    assert after.tries == 2


async def test_an_sms_left_sending_is_not_sent_again_when_kannel_reports_it(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    row = await _left_sending(world, "sms", sms=FakeSms("hang"))
    sms = FakeSms()
    running = sender(world, sms=sms)
    await running.start()
    try:
        await passes(running)
        assert sms.sent == []  # waiting for Kannel's report
        # Kannel calls the report URL again now that we are back: the SMSC has it.
        assert await running.desk.delivery_report(row.id, 8, clock.now) is CopyStatus.SENT
        clock.advance(seconds=FAST.sms_resume_grace_s)
        await until(lambda: not running._orphans, "the grace over")
        await passes(running)
    finally:
        await running.stop()
    assert sms.sent == [] and statuses(world) == {(row.person_id, Channel.SMS): CopyStatus.SENT}


async def test_an_sms_left_sending_is_sent_again_after_the_grace_without_a_report(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    row = await _left_sending(world, "sms", sms=FakeSms("hang"))
    sms = FakeSms()
    running = sender(world, sms=sms)
    await running.start()
    try:
        await passes(running)
        assert sms.sent == []
        clock.advance(seconds=FAST.sms_resume_grace_s)
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "the SMS sent again")
        await passes(running)
    finally:
        await running.stop()
    assert [s.copy_id for s in sms.sent] == [row.id]
    [after] = copies(world).values()
    assert after.tries == 2


# -- the real relay ---------------------------------------------------------------------------------
@pytest.fixture
def relay() -> Iterator[SmtpLab]:
    lab = SmtpLab(security="starttls").start()
    try:
        yield lab
    finally:
        lab.stop()


async def test_an_email_copy_reaches_a_real_relay_with_its_recording(world: World, tmp_path: Path,
                                                                      relay: SmtpLab) -> None:
    member(world, channels="email", email="lid@example.be")
    await campaign(world, tmp_path, text="Verdachte wagen in de Kerkstraat.")
    running = sender(world, mailer=relay.mailer())
    await running.start()
    try:
        [received] = await asyncio.to_thread(relay.wait_for, 1)
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "the e-mail stored as sent")
    finally:
        await running.stop()
    [row] = copies(world).values()
    message = received.message
    assert received.tls and message["Message-ID"] == f"<{row.id}@gent.example.be>"
    assert "Verdachte wagen" in message.get_body(("plain",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "audio/wav" and attachment.get_content()[:4] == b"RIFF"
    assert received.queue_id in (row.detail or "")


def test_only_channels_with_a_gateway_are_on(world: World) -> None:
    assert sender(world).channels_on == frozenset()
    assert sender(world, sms=FakeSms()).channels_on == {Channel.SMS}
    assert sender(world, mailer=FakeMailer()).channels_on == {Channel.EMAIL}


async def test_rows_are_the_truth_after_stop(world: World, tmp_path: Path) -> None:
    """Nothing is held in memory: every copy's state is in its row."""
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    running = sender(world, sms=FakeSms())
    await running.start()
    try:
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "sent")
    finally:
        await running.stop()
    with session_scope(world.engine) as s:
        [row] = s.scalars(select(TextCopy)).all()
    assert row.sent_at is not None and row.sending_at is not None and row.detail == "0: Accepted for delivery"
    assert dt.timedelta(0) <= row.sent_at - row.sending_at


# -- the composition --------------------------------------------------------------------------------
def test_build_copies_turns_on_the_configured_channels(world: World, tmp_path: Path) -> None:
    from ivr.config import Settings
    from ivr.copies.build import build_copies

    store = world.desk.store
    assert build_copies(Settings(data_dir=tmp_path), world.engine, store) is None
    mail_only = build_copies(Settings(data_dir=tmp_path, smtp_host="127.0.0.1", smtp_security="none"),
                             world.engine, store)
    assert mail_only is not None and mail_only.channels_on == {Channel.EMAIL} and mail_only.callbacks is None
    password = tmp_path / "sms.password"
    password.write_text("s3cret-for-kannel\n")
    password.chmod(0o600)
    both = build_copies(Settings(data_dir=tmp_path, smtp_host="127.0.0.1", smtp_security="none",
                                 sms_sendsms_url="http://127.0.0.1:13013/cgi-bin/sendsms",
                                 sms_password_file=str(password), sms_callback_port=0), world.engine, store)
    assert both is not None and both.channels_on == {Channel.SMS, Channel.EMAIL}
    assert both.callbacks is None  # port 0: no callbacks (delivery reports and replies are off)
    sms = build_copies(Settings(data_dir=tmp_path, sms_sendsms_url="http://127.0.0.1:13013/cgi-bin/sendsms",
                                sms_password_file=str(password)), world.engine, store)
    assert sms is not None and sms.callbacks is not None and (tmp_path / "copies.key").stat().st_mode & 0o077 == 0
