"""The chain's steps: what follows what, decided here and nowhere else.

    a take is kept         -> its transcript is made (worker processes)
    a message is submitted -> its review round starts
    a decision is stored   -> delivery starts when due (now, or at its persistent alarm)
    delivery is due        -> the campaign is created (exactly once) and the dialer woken
    a BIN's drill is due   -> its schedule moves on and the drill is made (one transaction), then delivered

Rules:
- the stores (``MessageDesk``, ``ReviewDesk``, ``DeliveryDesk``) return what happened; their
  callers (the flows, the review rounds, the web console) hand it to the step here;
- each step is idempotent: a review round runs once at a time per message, a delivery once at a
  time per message, and the database lets one campaign exist per message;
- ``reconcile`` is crash recovery and work from other processes (the command line), read from
  the database alone: it never consults what this process remembers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Callable, Coroutine, Protocol

from ivr.asr.desk import TranscriptionDesk
from ivr.scheduler import AlarmClock
from ivr.delivery.dialer import CampaignRunner
from ivr.delivery.drill import BRUSSELS, DRILL_ALARM, fire_scheduled_drill, schedule_times
from ivr.delivery.store import DeliveryDesk
from ivr.domain.schedule import due
from ivr.police_line.store import MessageDesk
from ivr.review.rounds import REVIEW_RETRY, ReviewDispatcher
from ivr.review.store import Decided
from storage.models import utcnow
from ivr.domain.vocabulary import Decision, MessageStatus

log = logging.getLogger(__name__)

#: The persistent alarm that delivers a "later" message.
DELIVER = "deliver"
#: The persistent alarm of a BIN's scheduled drill (keyed by the BIN's id).
DRILL = DRILL_ALARM
#: A scheduled drill that could not be made (espeak-ng, the database) is tried again this much later.
DRILL_RETRY_S = 300


class ChainObserver(Protocol):
    """Who wants to know when the chain moves (benchmarks, the lab's timeline); decides nothing."""

    def submitted(self, message_id: int) -> None:
        """``message_id`` was submitted by this process."""

    def decided(self, decided: Decided) -> None:
        """A decision on a message was stored by this process."""

    def campaign_created(self, message_id: int, campaign_id: int) -> None:
        """The message's campaign was created."""


class Chain:
    """The steps between the police line, the review and the delivery."""

    def __init__(self, messages: MessageDesk, delivery: DeliveryDesk, transcripts: TranscriptionDesk,
                 alarms: AlarmClock, *, clock: Callable[[], dt.datetime] = utcnow,
                 observer: ChainObserver | None = None) -> None:
        self.messages = messages
        self.delivery = delivery
        self.transcripts = transcripts
        self.alarms = alarms
        self.clock = clock
        self.observer = observer
        #: Set by the composition root (the rounds need the chain for their own decisions).
        self.reviews: ReviewDispatcher | None = None
        self.dialer: CampaignRunner | None = None
        #: The zone's local time: a drill "every 3 months at 10:00" keeps its local hour (set from the settings).
        self.tz: dt.tzinfo = BRUSSELS
        self._delivering: dict[int, asyncio.Task[None]] = {}
        #: BIN id -> the drill alarm this process set (a hint: the schedules' table is the truth).
        self._drill_alarms: dict[int, dt.datetime] = {}
        #: BIN ids whose due drill failed and waits for its retry alarm (not re-armed at its past due time).
        self._drill_retrying: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: In a farm: whether this node leads (runs reviews and alarms). A node that does not only
        #: stores; the leader's reconciliation (every second) takes the message on from the database.
        self.leads: Callable[[], bool] = lambda: True

    # -- the steps ------------------------------------------------------------------------------
    def take_kept(self, message_id: int, recording_id: int | None) -> None:
        """A take was stored (sent or not): it is transcribed now, the calls go on meanwhile."""
        if recording_id is not None:
            self._spawn(self._transcribe(recording_id), f"transcribe-{recording_id}")

    def submitted(self, message_id: int) -> None:
        """A message was submitted: its review starts."""
        if self.observer is not None:
            self.observer.submitted(message_id)
        if self.leads():
            self._require_reviews().start(message_id)

    def written_submitted(self, message_id: int) -> None:
        """A typed message was submitted with its spoken take: the take is transcribed, the review starts."""
        if not self.leads():
            self.submitted(message_id)  # the leader transcribes it too (reconcile), and reviews it
            return
        self._spawn(self._transcribe_submitted(message_id), f"transcribe-written-{message_id}")
        self.submitted(message_id)

    def decided(self, decided: Decided) -> None:
        """A decision was stored: delivery now if due, else its alarm; a rejection ends the chain."""
        if self.observer is not None:
            self.observer.decided(decided)
        if decided.decision is Decision.REJECT:
            return
        if due(decided.deliver_at, self.clock()):
            self.deliver_soon(decided.message_id)  # any node: the campaign's row is made once
        elif self.leads():
            self.alarms.wake_at(DELIVER, decided.message_id, decided.deliver_at)  # type: ignore[arg-type]

    def deliver_soon(self, message_id: int) -> None:
        """Start delivering ``message_id`` unless this process already is."""
        if message_id in self._delivering:
            return
        task = self._delivering[message_id] = self._spawn(self.deliver(message_id), f"deliver-{message_id}")
        task.add_done_callback(lambda _: self._delivering.pop(message_id, None))

    async def deliver(self, message_id: int) -> None:
        """Hand a due, approved message to delivery: its campaign (created once), then the dialer."""
        started = await self.delivery.start_campaign(message_id)
        if started is None:
            return
        if self.dialer is not None:
            self.dialer.wake()
        if started.created:
            log.info("message %d: delivery starts (campaign %d)", message_id, started.campaign_id)
            if self.observer is not None:
                self.observer.campaign_created(message_id, started.campaign_id)

    async def transcribe_backlog(self) -> None:
        """Transcribe every recording that has no transcript yet (a model installed since, a failure)."""
        try:
            await self.transcripts.transcribe_pending()
        except Exception:
            log.exception("transcription of the backlog failed; the recordings are kept and tried again later")

    # -- recovery -------------------------------------------------------------------------------
    async def reconcile(self, at_start: bool = False) -> None:
        """Act on every message the database says needs it (idempotent)."""
        reviews = self._require_reviews()
        now = self.clock()
        for message_id, status, deliver_at in await self.messages.unfinished():
            if status is MessageStatus.RECORDED:
                if not reviews.busy_with(message_id):
                    # Submitted by another process (the command line): its take needs a transcript too
                    # (a no-op for a take transcribed already).
                    self._spawn(self._transcribe_submitted(message_id), f"transcribe-submitted-{message_id}")
                    reviews.start(message_id)
            elif status in (MessageStatus.WITH_COORDINATORS, MessageStatus.AWAITING_APPROVAL) and at_start:
                # A round cut short by a crash starts again, unless the message waits for its alarm.
                if self.alarms.when(REVIEW_RETRY, message_id) is None:
                    reviews.start(message_id)
            elif status is MessageStatus.APPROVED:
                if due(deliver_at, now):
                    self.deliver_soon(message_id)
                elif self.alarms.when(DELIVER, message_id) is None:
                    self.alarms.wake_at(DELIVER, message_id, deliver_at)  # type: ignore[arg-type]
        if at_start:
            # One-level notices a stop cut off (the decision committed, not every call placed): placed now.
            await reviews.resume_notices(now - dt.timedelta(days=1))
        await self._reconcile_drills()

    async def _reconcile_drills(self) -> None:
        """Every drill schedule has its alarm at its ``next_at`` (set by the command line or the web
        console, moved by a drill that went); a removed schedule's alarm goes."""
        wanted = await self.delivery.tx(schedule_times)
        for bin_id, at in wanted.items():
            if self._drill_alarms.get(bin_id) == at:
                continue
            if bin_id in self._drill_retrying and at <= self.clock():
                continue
            self._drill_retrying.discard(bin_id)
            if self.alarms.when(DRILL, bin_id) != at:  # a stored alarm at the right time is kept (a restart)
                self.alarms.wake_at(DRILL, bin_id, at)
            self._drill_alarms[bin_id] = at
        for bin_id in [b for b in self._drill_alarms if b not in wanted]:
            self.alarms.cancel(DRILL, bin_id)
            del self._drill_alarms[bin_id]

    async def alarm(self, message_id: int) -> None:
        """The persistent "deliver later" alarm fired."""
        self.deliver_soon(message_id)

    async def drill_alarm(self, bin_id: int) -> None:
        """A BIN's drill alarm fired: if its schedule is due, the schedule moves on and the drill is made
        (one transaction: persisted before anything is dialled), then delivered; the alarm is set again."""
        try:
            message_id, next_at = await asyncio.to_thread(
                fire_scheduled_drill, self.delivery.engine, self.delivery.store, bin_id, self.clock(), self.tz)
        except Exception:
            # Nothing was written (one transaction): the schedule is still due; try again in a while.
            log.exception("BIN id %d: the scheduled drill could not be made; tried again in %d s",
                          bin_id, DRILL_RETRY_S)
            self._drill_retrying.add(bin_id)
            self.alarms.wake_at(DRILL, bin_id, self.clock() + dt.timedelta(seconds=DRILL_RETRY_S))
            return
        self._drill_retrying.discard(bin_id)
        if next_at is not None:
            self.alarms.wake_at(DRILL, bin_id, next_at)
            self._drill_alarms[bin_id] = next_at
        if message_id is not None:
            log.info("BIN id %d: scheduled drill, message %d; the next at %s", bin_id, message_id, next_at)
            self.deliver_soon(message_id)

    async def stop(self) -> None:
        """Cancel the steps under way (their state is in the database; start-up resumes them)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- helpers --------------------------------------------------------------------------------
    def _require_reviews(self) -> ReviewDispatcher:
        if self.reviews is None:
            raise RuntimeError("the chain has no review rounds wired")
        return self.reviews

    async def _transcribe_submitted(self, message_id: int) -> None:
        recording_id = await self.messages.submitted_recording(message_id)
        if recording_id is not None:
            await self._transcribe(recording_id)

    async def _transcribe(self, recording_id: int) -> None:
        try:
            await self.transcripts.transcribe_recording(recording_id)
        except Exception:
            log.exception("transcription of recording %d failed; it is kept and tried again later", recording_id)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._logged(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _logged(coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; the reconciliation tries it again", name)
