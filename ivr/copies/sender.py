"""The copy sender: writes the SMS and e-mail copies that are due, then hands each to its gateway once.

The plan is rebuilt from the database (``CopyDesk.plan``) at least every ``poll_s``, in a task of its
own; every pass, independently of it, claims what the free hand-over slots can take (``CopyDesk.claim``:
QUEUED -> SENDING, committed before the hand-over), composes each copy (``ivr.copies.sms_text``,
``ivr.copies.email``) and hands it to Kannel or the SMTP relay, a few at a time and SMS at a steady
pace, then stores the answer. The loop sleeps until the earliest of: the next copy due (a ladder's
delay, a retry's pause: the plan says when), an orphan's wait, ``poll_s``. The database is the truth;
this loop only acts on it, and never dies of one pass's failure. The gateways' blocking I/O runs in
the copies' own threads (``build_copies``), never in those the database transactions share.

Once a gateway took a copy it is never "failed": storing SENT is tried again a few times, and if
that still does not work the copy stays SENDING and is settled as an orphan (below).

A copy SENDING whose hand-over's outcome is unknown is an orphan: maybe handed over, maybe not.
Orphans are left by a crash (found at start), by a gateway that cannot say (``SendUncertain``: the
request went, no answer came), by an answer that could not be stored, or by another process (every
``orphan_check_s``, copies SENDING for longer than ``orphan_after_s`` that no hand-over of ours holds).
- an e-mail is sent again with the same Message-ID (``<copy id@domain>``): at once after a crash,
  ``email_resume_s`` after an uncertain hand-over. SMTP has no idempotency key, and the window is
  between the relay's "250 queued" and our commit; the same Message-ID lets the member's mail
  program show the rare second one as the same message;
- an SMS waits ``sms_resume_grace_s`` first: Kannel calls its delivery report (again, after a
  restart: ``http-request-retry``), and a report (8: the SMSC has it, 1: delivered) proves the
  hand-over happened, so it is not sent again; only when none came is it sent again, same copy id.
  One whose ``sending_at`` is empty never reached Kannel (it waited for its pace token: the stamp
  comes just before the hand-over, ``CopyDesk.handing``): it goes again at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from ivr.copies.email import EmailContent, MailOrigin, compose_email
from ivr.copies.gateways import EmailCopy, Mailer, SendFailed, SendRefused, SendUncertain, SmsCopy, SmsGateway
from ivr.copies.sms_text import SmsContent, compose_sms
from ivr.copies.store import CopyDesk, CopyJob, Orphan
from ivr.copies.tokens import unsubscribe_token
from ivr.domain.channels import mask_email
from ivr.domain.pace import TokenBucket
from ivr.domain.phone import mask
from ivr.domain.vocabulary import Channel, CopyStatus
from storage.models import utcnow

log = logging.getLogger(__name__)

#: Pauses between the tries to store "sent" once the gateway took a copy (a conditional UPDATE: safe
#: to repeat); after the last the copy stays SENDING and is settled as an orphan.
SENT_RETRY_PAUSES_S = (0.2, 1.0, 3.0)


@dataclass(frozen=True)
class SenderLimits:
    """How fast and how many at once copies go, and how long they wait."""

    #: SMS handed to Kannel a second at most (the operator's SMPP account has its own cap; Kannel
    #: queues the rest, but a steady pace keeps its queue, and our answers, short).
    sms_per_s: float = 10.0
    #: Copies being handed over at once (SMS and e-mail together).
    concurrency: int = 8
    #: A copy of a message with neither typed text nor a transcript yet waits this long after it was
    #: queued for the transcript, then goes without it.
    text_wait_s: float = 120.0
    #: An orphan SMS (a crash, an uncertain hand-over) waits this long for Kannel's delivery report.
    sms_resume_grace_s: float = 60.0
    #: An e-mail whose hand-over was uncertain is sent again (same Message-ID) this long after.
    email_resume_s: float = 30.0
    #: The plan is read again at least this often (copies that fall due, other processes' work).
    poll_s: float = 2.0
    #: How long ``stop`` waits for hand-overs in progress to end and their answers to be stored: a
    #: hand-over in a worker thread cannot be called back, so one cut short may have gone (it stays
    #: SENDING and is settled at the next start). About the gateways' timeout, within the service's
    #: stop budget (systemd's ``TimeoutStopSec=30``, which the service's other parts share).
    stop_grace_s: float = 10.0
    #: Copies left SENDING by others are looked for this often ...
    orphan_check_s: float = 30.0
    #: ... and taken when SENDING this long: longer than any hand-over takes (the gateways' timeouts
    #: per socket operation, a few operations each, with a margin).
    orphan_after_s: float = 300.0


@dataclass(frozen=True)
class Composer:
    """What goes into every copy besides its message: the call-back number, the SMS sender, where
    e-mail comes from, and the key that signs unsubscribe links."""

    #: The BIN line members call back on (``caller_id_number``).
    callback_number: str
    #: The SMS sender (``sms_sender``, else the call-back number).
    sms_sender: str
    mail_origin: MailOrigin | None = None
    #: The copies key (``ivr.copies.tokens``): unsubscribe links.
    key: bytes | None = None

    def sms(self, job: CopyJob) -> tuple[SmsCopy, int]:
        """The SMS of ``job`` and how many SMS it is (``ValueError``: it cannot be composed)."""
        text = compose_sms(SmsContent(job.language, job.bin_name, job.urgency, job.drill, self.callback_number,
                                      job.text, job.transcript))
        return SmsCopy(job.copy_id, job.address, self.sms_sender, text.text, text.unicode), text.segments

    def email(self, job: CopyJob, now: dt.datetime) -> EmailCopy:
        """The e-mail of ``job`` (``ValueError``: it cannot be composed)."""
        if self.mail_origin is None or self.key is None:
            raise ValueError("e-mail copies need email_from and the copies key")
        content = EmailContent(job.copy_id, job.address, job.language, job.bin_number, job.bin_name, job.urgency,
                               job.drill, job.message_id, self.callback_number, job.text, job.transcript,
                               job.recording)
        return compose_email(content, self.mail_origin, unsubscribe_token(self.key, job.person_id), now)


class Listener(Protocol):
    """Kannel's callback listener (``ivr.copies.callbacks``), started before and stopped after the loop."""

    async def start(self) -> str: ...

    async def stop(self) -> None: ...


class CopySender:
    """Sends the written copies until stopped."""

    def __init__(self, desk: CopyDesk, composer: Composer, *, sms: SmsGateway | None = None,
                 mailer: Mailer | None = None, limits: SenderLimits = SenderLimits(),
                 clock: Callable[[], dt.datetime] = utcnow, executor: Executor | None = None) -> None:
        """``executor``: the threads the gateways' blocking I/O runs in (``build_copies`` makes them),
        shut down by ``stop``."""
        self.desk = desk
        self.composer = composer
        self.sms = sms
        self.mailer = mailer
        self.limits = limits
        self.clock = clock
        self.executor = executor
        #: Kannel's delivery reports and members' replies (``ivr.copies.callbacks``), when SMS is on.
        self.callbacks: Listener | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._plan_task: asyncio.Task[None] | None = None
        self._sending: dict[str, asyncio.Task[None]] = {}
        #: Orphans (copies SENDING whose hand-over's outcome is unknown) -> when (the clock's time)
        #: they may be sent again.
        self._orphans: dict[str, dt.datetime] = {}
        self._pace = TokenBucket(limits.sms_per_s, 1.0, time.monotonic())
        self._pace_lock = asyncio.Lock()
        #: When the last plan ended (monotonic), and the next copy it said falls due (the clock's time).
        self._planned_at = float("-inf")
        self._due: dt.datetime | None = None
        self._replan = True
        #: Set by ``stop``: an SMS still waiting for its pace token is not handed over.
        self._stopping = False
        self._orphans_checked_at = time.monotonic()
        #: Copies handed over by this process, by channel and result, and passes made (monitoring, tests).
        self.handed: dict[str, int] = {}
        self.passes = 0

    @property
    def channels_on(self) -> frozenset[Channel]:
        """The channels that have a gateway: only these get copies."""
        return frozenset(c for c, on in ((Channel.SMS, self.sms), (Channel.EMAIL, self.mailer)) if on is not None)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for Kannel's callbacks, take in the copies a previous process left SENDING, then send."""
        self._stopping = False
        if self.callbacks is not None:
            where = await self.callbacks.start()
            log.info("Kannel's delivery reports and replies are taken on %s", where)
        taken = await self._adopt(await self.desk.orphans())
        if taken:
            log.warning("%d copies were being handed over when the service stopped: e-mails go again now, "
                        "SMS after %.0f s unless Kannel reports them", taken, self.limits.sms_resume_grace_s)
        self._orphans_checked_at = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="copy-sender")

    async def stop(self) -> None:
        """Stop sending: no new hand-over starts; those in progress get ``stop_grace_s`` to end and store
        their answer (a copy that went is recorded SENT); one cut short stays SENDING and is settled
        at the next start (an SMS still waiting for its pace token never starts: it goes at once then).
        Then the gateways' threads are let go."""
        self._stopping = True
        for task in (self._task, self._plan_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._plan_task = None
        pending = list(self._sending.values())
        if pending:
            _done, late = await asyncio.wait(pending, timeout=self.limits.stop_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if late:
                log.warning("%d copies still being handed over at stop: left SENDING, settled at the next start",
                            len(late))
        if self.callbacks is not None:
            await self.callbacks.stop()
        if self.executor is not None:
            # A thread still blocked in a gateway ends at its socket timeout; nothing waits for it.
            self.executor.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        """Something changed (a campaign started, a transcript came): plan again now."""
        self._replan = True
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                wait_s = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("copy sender pass failed; trying again in a second")
                wait_s = 1.0
            self.passes += 1
            try:
                async with asyncio.timeout(max(0.01, wait_s)):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def _pass(self) -> float:
        """Start a plan when one is due (at most every ``poll_s`` unless woken, or when a copy it said
        falls due), look for others' orphans now and then, and claim what the free hand-over slots can
        take, starting each; returns how long to sleep when nothing wakes the loop."""
        channels = self.channels_on
        if not channels:
            return self.limits.poll_s
        now = self.clock()
        now_mono = time.monotonic()
        if self._plan_task is None and (self._replan or now_mono - self._planned_at >= self.limits.poll_s
                                        or (self._due is not None and self._due <= now)):
            self._replan = False
            self._due = None  # this plan says anew; until it ends the loop does not spin on a past one
            self._plan_task = asyncio.get_running_loop().create_task(self._plan(channels), name="copy-plan")
        if now_mono - self._orphans_checked_at >= self.limits.orphan_check_s:
            self._orphans_checked_at = now_mono
            older_than = now - dt.timedelta(seconds=self.limits.orphan_after_s)
            taken = await self._adopt(await self.desk.orphans(older_than=older_than))
            if taken:
                log.warning("%d copies SENDING for over %.0f s without an answer stored: settled as orphans",
                            taken, self.limits.orphan_after_s)
        wait_s = self.limits.poll_s
        if self._due is not None:
            wait_s = min(wait_s, max(0.0, (self._due - now).total_seconds()))
        free = self.limits.concurrency - len(self._sending)
        if free <= 0:
            return wait_s  # a hand-over that ends wakes the loop
        ready = [cid for cid, at in self._orphans.items() if at <= now][:free]
        for copy_id in ready:
            del self._orphans[copy_id]
        if self._orphans:
            wait_s = min(wait_s, max(0.0, (min(self._orphans.values()) - now).total_seconds()))
        try:
            jobs = await self.desk.claim(free, channels=channels, orphans=ready, text_wait_s=self.limits.text_wait_s)
        except Exception:
            self._orphans.update((cid, now) for cid in ready)  # still to settle, at the next pass
            raise
        for job in jobs:
            task = asyncio.get_running_loop().create_task(self._hand_over(job), name=f"copy-{job.copy_id}")
            self._sending[job.copy_id] = task
        return wait_s

    async def _plan(self, channels: frozenset[Channel]) -> None:
        """Write the copies due now (``CopyDesk.plan``) and keep when the next one falls due; the loop
        is woken when it is done (to claim what it wrote)."""
        try:
            due = await self.desk.plan(channels)
        except Exception:
            log.exception("planning the copies failed; planned again in %.0f s", self.limits.poll_s)
            due = None
        finally:
            # Counted from its end: a plan slower than ``poll_s`` does not run back to back.
            self._planned_at = time.monotonic()
            self._plan_task = None
            self._wake.set()
        # One due now was written, or is a retry the claims take: only a later one is waited for.
        self._due = due if due is not None and due > self.clock() else None

    async def _adopt(self, orphans: list[Orphan]) -> int:
        """Take ``orphans`` in (copies SENDING whose hand-over's outcome is unknown): each is sent again
        once its wait is over (an SMS's grace for a delivery report, an e-mail at once). Those a
        hand-over of ours holds, those already waiting and those whose gateway is off are left."""
        now = self.clock()
        taken = 0
        for orphan in orphans:
            if orphan.channel not in self.channels_on or orphan.copy_id in self._sending \
                    or orphan.copy_id in self._orphans:
                continue  # a gateway that is off: it stays SENDING until the gateway is on again
            # An SMS never stamped as handed over never reached Kannel: no report can come for it.
            handed = orphan.sending_at is not None
            wait = self.limits.sms_resume_grace_s if orphan.channel is Channel.SMS and handed else 0.0
            self._orphans[orphan.copy_id] = now + dt.timedelta(seconds=wait)
            taken += 1
        return taken

    # -- one copy -------------------------------------------------------------------------------
    async def _hand_over(self, job: CopyJob) -> None:
        """Compose ``job``, hand it to its gateway once, store the answer (the copy is SENDING already)."""
        try:
            if job.channel is Channel.SMS:
                await self._send_sms(job)
            else:
                await self._send_email(job)
        except asyncio.CancelledError:
            raise  # stopping: the copy stays SENDING and is resumed at the next start
        except Exception:
            # Before the gateway took it (after, ``_accepted`` never raises): not handed over.
            log.exception("copy %s: hand-over failed on our side; tried again later", job.copy_id)
            try:
                await self._record(job, "failed",
                                   self.desk.failed(job.copy_id, "internal error (see the service log)"))
            except Exception:
                log.exception("copy %s: its failure could not be stored either; it stays SENDING and is "
                              "settled as an orphan", job.copy_id)
        finally:
            self._sending.pop(job.copy_id, None)
            self._wake.set()

    async def _send_sms(self, job: CopyJob) -> None:
        assert self.sms is not None
        try:
            sms, segments = self.composer.sms(job)
        except ValueError as exc:
            await self._record(job, "refused", self.desk.failed(job.copy_id, f"not composed: {exc}", final=True))
            return
        if not await self._sms_turn():
            log.info("SMS copy %s not handed over: stopping (it goes at the next start)", job.copy_id)
            return
        if not await self.desk.handing(job.copy_id):
            log.info("SMS copy %s settled meanwhile: not handed over", job.copy_id)
            return
        try:
            answer = await self.sms.send(sms)
        except SendRefused as exc:
            await self._record(job, "refused", self.desk.failed(job.copy_id, str(exc), final=True))
            return
        except SendFailed as exc:
            await self._record(job, "failed", self.desk.failed(job.copy_id, str(exc)))
            return
        except SendUncertain as exc:
            self._uncertain(job, str(exc))
            return
        await self._accepted(job, lambda: self.desk.sent(job.copy_id, answer, segments=segments))
        log.info("SMS copy %s to %s handed to Kannel (%d SMS%s)", job.copy_id, mask(job.address), segments,
                 ", resumed" if job.resumed else "")

    async def _send_email(self, job: CopyJob) -> None:
        assert self.mailer is not None
        try:
            mail = self.composer.email(job, self.clock())
        except ValueError as exc:
            await self._record(job, "refused", self.desk.failed(job.copy_id, f"not composed: {exc}", final=True))
            return
        try:
            answer = await self.mailer.send(mail)
        except SendRefused as exc:
            await self._record(job, "bounced", self.desk.bounced(job.copy_id, str(exc)))
            return
        except SendFailed as exc:
            await self._record(job, "failed", self.desk.failed(job.copy_id, str(exc)))
            return
        except SendUncertain as exc:
            self._uncertain(job, str(exc))
            return
        await self._accepted(job, lambda: self.desk.sent(job.copy_id, answer, provider_ref=mail.message_id))
        log.info("e-mail copy %s to %s accepted by the relay%s", job.copy_id, mask_email(job.address),
                 ", resumed" if job.resumed else "")

    async def _accepted(self, job: CopyJob, store: Callable[[], Awaitable[object]]) -> None:
        """The gateway took the copy: store SENT (``store``: the desk's step, a conditional UPDATE, so
        tried again a few times). Never "failed" from here on: that would send it a second time. When
        storing never works the copy stays SENDING, settled as an orphan (``orphan_after_s``)."""
        for pause in (0.0, *SENT_RETRY_PAUSES_S):
            await asyncio.sleep(pause)
            try:
                await self._record(job, "sent", store())
                return
            except Exception:
                log.warning("copy %s went, but storing it failed; tried again", job.copy_id, exc_info=True)
        key = f"{job.channel.value}.unrecorded"
        self.handed[key] = self.handed.get(key, 0) + 1
        log.error("copy %s (%s) went, but storing that failed %d times: it stays SENDING and is settled as "
                  "an orphan", job.copy_id, job.channel.value, 1 + len(SENT_RETRY_PAUSES_S))

    def _uncertain(self, job: CopyJob, detail: str) -> None:
        """The gateway may or may not have taken the copy: it stays SENDING (no failure counted) and is
        settled as an orphan: an SMS waits for Kannel's delivery report, an e-mail goes again."""
        wait = self.limits.sms_resume_grace_s if job.channel is Channel.SMS else self.limits.email_resume_s
        self._orphans[job.copy_id] = self.clock() + dt.timedelta(seconds=wait)
        key = f"{job.channel.value}.uncertain"
        self.handed[key] = self.handed.get(key, 0) + 1
        log.warning("copy %s (%s): %s; it stays SENDING and is settled in %.0f s", job.copy_id,
                    job.channel.value, detail, wait)

    async def _record(self, job: CopyJob, result: str, stored: Awaitable[object]) -> None:
        """Store the hand-over's result (``stored``: the desk's step); count it."""
        outcome = await stored
        key = f"{job.channel.value}.{result}"
        self.handed[key] = self.handed.get(key, 0) + 1
        if result == "failed" and outcome is CopyStatus.QUEUED:
            log.warning("copy %s (%s) not handed over, tried again later", job.copy_id, job.channel.value)
        elif result in ("failed", "refused", "bounced"):
            log.warning("copy %s (%s) %s for good", job.copy_id, job.channel.value, result)

    async def _sms_turn(self) -> bool:
        """Wait for the SMS pace's next token (SMS leave one after the other, in claim order); ``False``
        when the sender is stopping (no hand-over starts then)."""
        async with self._pace_lock:
            while not self._stopping and not self._pace.take(time.monotonic()):
                await asyncio.sleep(self._pace.wait_s(time.monotonic()))
            return not self._stopping
