"""The copy sender against a real SQLite database and fake gateways that record, fail or refuse (and once
against the lab's real SMTP relay): what goes, once, and how it resumes after a crash."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from ivr.copies.email import MailOrigin
from ivr.copies.gateways import EmailCopy, SendFailed, SendRefused, SendUncertain, SmsCopy
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


Step = Exception | str | float


async def _act(step: Step | None) -> None:
    if step == "hang":
        await asyncio.Event().wait()
    if isinstance(step, float):
        await asyncio.sleep(step)  # a slow answer
    if isinstance(step, Exception):
        raise step


class FakeSms:
    """An SMS gateway that records every hand-over; ``script`` says what the next ones do (an exception
    to raise, ``"hang"``: never answer, seconds: answer that much later)."""

    def __init__(self, *script: Step) -> None:
        self.script = list(script)
        self.sent: list[SmsCopy] = []

    async def send(self, sms: SmsCopy) -> str:
        self.sent.append(sms)
        await _act(self.script.pop(0) if self.script else None)
        return "0: Accepted for delivery"


class FakeMailer:
    """A relay that records every hand-over (see ``FakeSms``)."""

    def __init__(self, *script: Step) -> None:
        self.script = list(script)
        self.sent: list[EmailCopy] = []

    async def send(self, mail: EmailCopy) -> str:
        self.sent.append(mail)
        for _name, path in mail.attachments:
            assert path.read_bytes()[:4] == b"RIFF"  # the recording is there while it is handed over
        await _act(self.script.pop(0) if self.script else None)
        return "250 2.0.0 Ok: queued as ABC123"


def sender(world: World, *, sms: object = None, mailer: object = None, limits: SenderLimits = FAST,
           **rules: object) -> CopySender:
    composer = Composer(CALLBACK, CALLBACK, MailOrigin("BIN Gent <bin@gent.example.be>"), KEY)
    return CopySender(copy_desk(world, **rules), composer, sms=sms, mailer=mailer,  # type: ignore[arg-type]
                      limits=limits, clock=world.desk.clock)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0,
                tick: Callable[[], object] | None = None) -> None:
    """Wait for ``condition``; ``tick`` is called between looks (the fake clock moving on)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        if tick is not None:
            tick()
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


async def test_a_passing_failure_is_tried_again_until_it_goes(world: World, tmp_path: Path, clock: Clock) -> None:
    someone = member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms(SendFailed("smsbox 503: busy"), RuntimeError("a bug of ours"))
    running = sender(world, sms=sms)
    await running.start()
    try:
        await until(lambda: statuses(world) == {(someone, Channel.SMS): CopyStatus.SENT}, "the SMS sent",
                    tick=lambda: clock.advance(seconds=20))  # the pauses between tries pass
    finally:
        await running.stop()
    [row] = copies(world).values()
    assert len(sms.sent) == 3 and row.tries == 3 and {s.copy_id for s in sms.sent} == {row.id}


async def test_passing_failures_end_after_copy_max_tries(world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms(*[SendFailed("smsbox: connection refused")] * 5)
    running = sender(world, sms=sms, max_tries=3)
    await running.start()
    try:
        await until(lambda: set(statuses(world).values()) == {CopyStatus.FAILED}, "the SMS failed",
                    tick=lambda: clock.advance(seconds=20))
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


async def test_an_sms_that_never_reached_kannel_goes_again_at_once(
        world: World, tmp_path: Path, clock: Clock) -> None:
    """A process died while its SMS waited for their pace token: no delivery report can come for
    them, so they are not held for the grace."""
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan({Channel.SMS})
    [claimed] = await desk.claim(5)  # then the process died, before Kannel had it
    sms = FakeSms()
    running = sender(world, sms=sms)
    await running.start()
    try:
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "the SMS sent without the grace")
    finally:
        await running.stop()
    assert [s.copy_id for s in sms.sent] == [claimed.copy_id]


async def test_stop_starts_no_hand_over_for_an_sms_waiting_for_its_pace(world: World, tmp_path: Path) -> None:
    for _ in range(2):
        member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms()
    # One SMS every 5 s: the second waits for its token when the stop comes (whose grace is longer).
    running = sender(world, sms=sms, limits=SenderLimits(sms_per_s=0.2, concurrency=4, poll_s=0.05,
                                                         stop_grace_s=30.0))
    await running.start()
    await until(lambda: CopyStatus.SENT in statuses(world).values(), "the first SMS")
    await running.stop()
    assert len(sms.sent) == 1
    waiting = [row for row in copies(world).values() if row.status is CopyStatus.SENDING]
    assert [row.sending_at for row in waiting] == [None]  # never handed over: it goes at once at the next start


# -- an answer not stored, an uncertain hand-over, others' orphans ------------------------------------
def _storing_sent_fails(running: CopySender, times: int) -> list[str]:
    """Make the desk's ``sent`` fail (the database away) ``times`` times; returns the copies it was called for."""
    real = running.desk.sent
    calls: list[str] = []

    async def flaky(copy_id: str, answer: str, **kwargs: object) -> bool:
        calls.append(copy_id)
        if len(calls) <= times:
            raise OperationalError("UPDATE text_copies", {}, Exception("database is locked"))
        return await real(copy_id, answer, **kwargs)  # type: ignore[arg-type]

    running.desk.sent = flaky  # type: ignore[method-assign]
    return calls


async def test_a_copy_the_gateway_took_is_not_sent_again_when_storing_it_failed_once(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms+email", email="lid@example.be")
    await campaign(world, tmp_path, text="Let op.")
    sms, mail = FakeSms(), FakeMailer()
    running = sender(world, sms=sms, mailer=mail)
    calls = _storing_sent_fails(running, 1)
    await running.start()
    try:
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "both stored as sent")
        for _ in range(5):  # any retry's pause passes: nothing goes a second time
            clock.advance(minutes=15)
            await passes(running)
    finally:
        await running.stop()
    assert len(sms.sent) == 1 and len(mail.sent) == 1 and len(calls) == 3
    assert all(row.tries == 1 for row in copies(world).values())
    assert running.handed == {"sms.sent": 1, "email.sent": 1}


async def test_a_copy_whose_sending_cannot_be_stored_stays_sending_and_is_settled_later(
        world: World, tmp_path: Path, clock: Clock) -> None:
    """Storing "sent" never works: the copy is left SENDING (not failed, so not sent again at once); a
    later look for orphans takes it, and without a delivery report the SMS goes again, same id."""
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms()
    limits = SenderLimits(sms_per_s=1000.0, concurrency=4, poll_s=0.05, stop_grace_s=0.5, orphan_check_s=0.1)
    running = sender(world, sms=sms, limits=limits)
    calls = _storing_sent_fails(running, 4)
    await running.start()
    try:
        await until(lambda: running.handed == {"sms.unrecorded": 1}, "the answer given up on")
        clock.advance(minutes=1)
        await passes(running, 5)
        assert statuses(world) == {(p, c): CopyStatus.SENDING for p, c in statuses(world)} and len(sms.sent) == 1
        clock.advance(seconds=limits.orphan_after_s)  # now it is an orphan: it waits for a delivery report
        await until(lambda: bool(running._orphans), "the copy taken as an orphan")
        clock.advance(seconds=limits.sms_resume_grace_s)
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "the SMS sent again")
    finally:
        await running.stop()
    assert [s.copy_id for s in sms.sent] == [calls[0]] * 2
    [row] = copies(world).values()
    assert row.tries == 2


async def test_an_uncertain_sms_waits_for_kannels_report_and_is_not_counted_as_failed(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms(SendUncertain("smsbox 127.0.0.1:13013: no answer after the request was sent"))
    running = sender(world, sms=sms)
    await running.start()
    try:
        await until(lambda: running.handed == {"sms.uncertain": 1}, "the uncertain hand-over")
        await passes(running)
        [row] = copies(world).values()
        assert (row.status, row.tries, row.detail) == (CopyStatus.SENDING, 1, None)  # no failure stored
        assert await running.desk.delivery_report(row.id, 8, clock.now) is CopyStatus.SENT  # smsbox had it
        clock.advance(seconds=FAST.sms_resume_grace_s)
        await until(lambda: not running._orphans, "the grace over")
        await passes(running)
    finally:
        await running.stop()
    assert len(sms.sent) == 1 and statuses(world) == {(row.person_id, Channel.SMS): CopyStatus.SENT}


async def test_an_uncertain_sms_without_a_report_goes_again_after_the_grace(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms(SendUncertain("smsbox: no answer after the request was sent"))
    running = sender(world, sms=sms)
    await running.start()
    try:
        await until(lambda: running.handed == {"sms.uncertain": 1}, "the uncertain hand-over")
        clock.advance(seconds=FAST.sms_resume_grace_s / 2)
        await passes(running)
        assert len(sms.sent) == 1  # not before the grace is over
        clock.advance(seconds=FAST.sms_resume_grace_s / 2)
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "the SMS sent again")
    finally:
        await running.stop()
    [row] = copies(world).values()
    assert [s.copy_id for s in sms.sent] == [row.id] * 2 and row.tries == 2


async def test_an_uncertain_email_goes_again_with_the_same_message_id(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="email", email="lid@example.be")
    await campaign(world, tmp_path, text="Let op.")
    mail = FakeMailer(SendUncertain("relay: timed out after DATA"))
    running = sender(world, mailer=mail)
    await running.start()
    try:
        await until(lambda: running.handed == {"email.uncertain": 1}, "the uncertain hand-over")
        await passes(running)
        assert len(mail.sent) == 1 and set(statuses(world).values()) == {CopyStatus.SENDING}
        clock.advance(seconds=FAST.email_resume_s)
        await until(lambda: set(statuses(world).values()) == {CopyStatus.SENT}, "the e-mail sent again")
    finally:
        await running.stop()
    assert len(mail.sent) == 2 and mail.sent[0].message_id == mail.sent[1].message_id


async def test_a_copy_another_process_left_sending_is_taken_but_not_one_being_handed_over_here(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="email", email="een@example.be")
    sent = await campaign(world, tmp_path, text="Let op.")
    mail = FakeMailer("hang")  # ours hangs (a relay that takes its time)
    limits = SenderLimits(sms_per_s=1000.0, concurrency=4, poll_s=0.05, stop_grace_s=0.1, orphan_check_s=0.1)
    running = sender(world, mailer=mail, limits=limits)
    await running.start()
    try:
        await until(lambda: len(mail.sent) == 1, "our hand-over")
        ours = mail.sent[0].copy_id
        # Meanwhile another process took a copy (of a member who joined since) and never stored its answer.
        someone = member(world, channels="email", email="twee@example.be")
        with session_scope(world.engine) as s:
            theirs = TextCopy(campaign_id=sent.campaign_id, person_id=someone, channel=Channel.EMAIL,
                              reason=CopyReason.TEXT_ONLY, address="twee@example.be", status=CopyStatus.SENDING,
                              created_at=clock.now, sending_at=clock.now, tries=1)
            s.add(theirs)
            s.flush()
            their_id = theirs.id
        await passes(running, 5)
        assert len(mail.sent) == 1  # theirs is not old enough to be anybody's lost hand-over
        clock.advance(seconds=limits.orphan_after_s + 1)
        await until(lambda: len(mail.sent) == 2, "the other process's copy sent")
        await until(lambda: copies(world)[(someone, Channel.EMAIL)].status is CopyStatus.SENT, "stored")
        await passes(running, 5)
    finally:
        await running.stop()
    assert [m.copy_id for m in mail.sent] == [ours, their_id]  # ours, still in progress, not taken


# -- planning and claiming, stopping ----------------------------------------------------------------
async def test_a_slow_plan_does_not_hold_up_sending(world: World, tmp_path: Path) -> None:
    for _ in range(10):
        member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms()
    running = sender(world, sms=sms, limits=SenderLimits(sms_per_s=1000.0, concurrency=2, poll_s=0.05,
                                                         stop_grace_s=0.5))
    real_plan = running.desk.plan
    stuck = asyncio.Event()
    plans = 0

    async def plan(channels: object) -> dt.datetime | None:
        nonlocal plans
        plans += 1
        if plans > 1:
            await stuck.wait()  # every plan after the first hangs (a database busy elsewhere)
        return await real_plan(channels)  # type: ignore[arg-type]

    running.desk.plan = plan  # type: ignore[method-assign]
    await running.start()
    try:
        await until(lambda: len(sms.sent) == 10, "every SMS, two at a time, while the plan hangs")
    finally:
        stuck.set()
        await running.stop()
    assert set(statuses(world).values()) == {CopyStatus.SENT}


async def test_the_loop_does_not_spin_while_a_plan_runs_past_the_time_it_said(
        world: World, tmp_path: Path, clock: Clock) -> None:
    running = sender(world, sms=FakeSms(), limits=SenderLimits(poll_s=5.0, orphan_check_s=600.0))
    stuck = asyncio.Event()
    started = asyncio.Event()
    plans = 0

    async def plan(channels: object) -> dt.datetime | None:
        nonlocal plans
        plans += 1
        if plans == 1:
            return clock.now + dt.timedelta(seconds=1)  # a copy falls due in a second
        started.set()
        await stuck.wait()  # the next plan takes long (a database busy elsewhere)
        return None

    running.desk.plan = plan  # type: ignore[method-assign]
    await running.start()
    try:
        await until(lambda: running._due is not None, "the first plan")
        clock.advance(seconds=2)
        running._wake.set()
        await asyncio.wait_for(started.wait(), 30)
        before = running.passes
        await asyncio.sleep(0.5)
        assert running.passes - before <= 3  # asleep until poll_s, not every 10 ms
    finally:
        stuck.set()
        await running.stop()


def test_the_stop_grace_leaves_the_rest_of_the_service_time_to_stop() -> None:
    """systemd's TimeoutStopSec=30 is shared with the calls, the web console and the database."""
    assert SenderLimits().stop_grace_s <= 10.0


async def test_stop_waits_for_a_hand_over_in_progress_and_stores_its_answer(world: World, tmp_path: Path) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    sms = FakeSms(6.0)  # smsbox answers 6 s after the request (longer than a short grace)
    running = sender(world, sms=sms, limits=SenderLimits(sms_per_s=1000.0, concurrency=4, poll_s=0.05))
    await running.start()
    await until(lambda: len(sms.sent) == 1, "the hand-over")
    await running.stop()
    [row] = copies(world).values()
    assert row.status is CopyStatus.SENT and running.handed == {"sms.sent": 1}


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
    # The gateways' blocking I/O runs in the copies' own threads, one per hand-over at once.
    assert both.executor is not None and both.sms.executor is both.executor  # type: ignore[union-attr]
    assert both.mailer.executor is both.executor  # type: ignore[union-attr]


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A relay that takes connections and never says a word (a firewall that drops, a hung relay)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()  # the connections waiting in its queue are reset: the hand-overs end


async def test_a_relay_that_never_answers_does_not_hold_the_databases_threads(
        world: World, tmp_path: Path, blackhole: int) -> None:
    """The gateways' blocking I/O has threads of its own: with every hand-over stuck on a silent relay,
    the loop's default executor (every database transaction) still serves."""
    from concurrent.futures import ThreadPoolExecutor

    from ivr.config import Settings
    from ivr.copies.build import build_copies

    for n in range(6):
        member(world, channels="email", email=f"lid{n}@example.be")
    await campaign(world, tmp_path, text="Let op.")
    loop = asyncio.get_running_loop()
    database_threads = ThreadPoolExecutor(max_workers=3, thread_name_prefix="test-default")
    loop.set_default_executor(database_threads)
    running = build_copies(Settings(data_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=blackhole,
                                    smtp_security="none"), world.engine, world.desk.store, world.desk.clock,
                           limits=SenderLimits(concurrency=4, poll_s=0.05, stop_grace_s=0.1))
    assert running is not None
    try:
        await running.start()
        await until(lambda: sum(t.name.startswith("binfoon-copies") for t in threading.enumerate()) == 4,
                    "four hand-overs stuck on the relay")
        # The database's threads are free: a transaction goes through at once.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), timeout=10) == "free"
        assert await asyncio.wait_for(running.desk.orphans(), timeout=10)
    finally:
        await running.stop()
