"""The composition root: wires AMI, FastAGI, storage, the alarm clock and the call flows.

Nothing here decides anything: the flows converse, the desk stores, the dispatcher runs review
rounds, the alarm clock wakes. Start-up reconciles with the database (the truth), so a crash or a
restart resumes where it stopped: submitted messages go to review, approved ones that are due are
delivered, future ones get their alarm back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine

from sqlalchemy import Engine

from ivr.archive.store import Archive
from ivr.asterisk.instance import AsteriskInstance
from ivr.config import Settings
from ivr.domain.pin import PinPolicy
from ivr.delivery.dialer import CampaignRunner, DialerLimits, retry_policies
from ivr.delivery.store import DeliveryDesk
from ivr.delivery.policy import Window
from ivr.review.flow import ReviewRules, coordinator_review
from ivr.archive.admin_line import ReplayRules, admin_replay
from ivr.delivery.report_line import coordinator_report
from ivr.delivery.member_call import MemberRules, member_call
from ivr.delivery.member_callback import member_callback
from ivr.police_line.flow import IntakeRules, police_intake
from ivr.media.voice import PromptRenderer, Voice
from ivr.police_line.store import MessageDesk
from ivr.archive.replay import ReplayDesk
from ivr.archive.retention import RetentionSweep
from ivr.review.rounds import REVIEW_RETRY, ReviewDispatcher
from ivr.chain.alarms import AlarmClock
from ivr.asr.desk import TranscriptionDesk
from ivr.telephony.agi import AgiCall, AgiServer, CallHungUp
from ivr.telephony.ami import AmiGateway
from ivr.telephony.channel import AsteriskCall
from ivr.telephony.dialer import AmiDialer
from ivr.telephony.cel import cel_csv_path, read_confirmations
from ivr.telephony.events import AmiEvent, ChannelHungUp, UserEventReceived
from storage.models import AttemptOutcome, MessageStatus, utcnow
from storage.recordings import RecordingStore

log = logging.getLogger(__name__)

DELIVER = "deliver"
PROJECT_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FlowEnded:
    """A finished conversation: which flow, on which channel, how it ended, and when (monotonic)."""

    flow: str
    channel_id: str
    end: str
    at: float


@dataclass(frozen=True)
class MediaPaths:
    """Where Asterisk reads prompts and writes recordings, and how it names those paths."""

    sounds_dir: Path
    record_dir: Path
    inner_path: Callable[[Path], str]
    owner: tuple[int, int] | None
    #: Asterisk's durable record of confirmations (CEL CSV); ``None`` when there is none to read.
    cel_csv: Path | None = None


def freeze_startup_objects() -> None:
    """Take what is loaded by now (modules, classes, settings: alive as long as the process) out of
    the garbage collector's sight, so a full collection walks only objects made since.

    Why: a full collection holds the GIL and so stops the event loop; over everything loaded it
    took 100-150 ms here in the middle of a campaign (tests/integration/test_transcription_load.py),
    more than the 100 ms a call may wait and longer than Asterisk waits for a slow AMI reader.
    """
    gc.collect()  # what is garbage now is collected first, not kept for ever
    gc.freeze()


class BinfoonApp:
    """The running application on one Asterisk."""

    #: How often the database is checked for work given by other processes (the command line).
    POLL_S = 1.0
    TRANSCRIBE_EVERY_S = 300.0

    def __init__(self, settings: Settings, engine: Engine, ami: AmiGateway, agi: AgiServer, media: MediaPaths,
                 *, dial_template: str | None = None, renderer: PromptRenderer | None = None,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = settings
        self.engine = engine
        self.ami = ami
        self.agi = agi
        self.media = media
        self.clock = clock
        self._own_renderer = renderer is None
        self.renderer = renderer or PromptRenderer(PROJECT_DIR / "prompts" / "rendered")
        self.voice = Voice(self.renderer, media.sounds_dir, media.inner_path, media.owner)
        self.desk = MessageDesk(engine, RecordingStore(settings.data_dir / "recordings"),
                                pin_policy=PinPolicy(settings.pin_max_failures, settings.pin_lock_s,
                                                     settings.pin_lock_s),
                                clock=clock)
        self.alarms = AlarmClock(engine)
        self.dialer = AmiDialer(ami, dial_template or settings.dial_template, settings.caller_id_number,
                                settings.caller_id_name)
        self.reviews = ReviewDispatcher(self.desk, self.dialer, self.alarms,
                                        ring_timeout_s=settings.review_ring_timeout_s,
                                        retry_after_s=settings.review_retry_after_s, clock=clock)
        self.delivery = DeliveryDesk(engine, self.desk.store, clock=clock)
        quiet_start, quiet_end = settings.quiet_hours.split("-")
        self.campaigns = CampaignRunner(
            self.delivery, self.dialer, self.voice,
            DialerLimits(max_channels=settings.max_channels, max_cps=settings.max_cps,
                         ring_timeout_s=settings.member_ring_timeout_s,
                         allowed_hours=Window.parse(f"{quiet_end}-{quiet_start}"), tz=settings.tz),
            retry_policies(settings),
            clock)
        self.member_rules = MemberRules(max(settings.key_timeout_s, 6.0), settings.member_reminders)
        self.intake_rules = IntakeRules(settings.key_timeout_s, settings.record_max_s, settings.record_silence_s)
        self.review_rules = ReviewRules(settings.key_timeout_s, settings.tz)
        #: The admin line: the police line's PIN policy, the same recording store.
        self.replays = ReplayDesk(engine, self.desk.store, pin_policy=self.desk.pin_policy, clock=clock)
        self.replay_rules = ReplayRules(settings.key_timeout_s, settings.tz)
        #: Offline transcripts of every recording, made in worker processes (never on this loop).
        self.transcripts = TranscriptionDesk.from_settings(engine, settings)
        #: Recordings and transcripts past ``retention_days`` are purged at start and once a day.
        self.retention = RetentionSweep(Archive(engine, self.desk.store, operator="service"),
                                        settings.retention_days, clock)
        self.desk.on_take_stored = self._take_stored
        self.desk.on_submitted = self._submitted
        self.desk.on_approved = self._approved
        #: Called when a message's campaign was created (tests and the demo follow it).
        self.on_campaign: Callable[[int, int], None] = lambda message_id, campaign_id: None
        #: Monotonic time each campaign was created (benchmarks: approval to first ring).
        self.campaign_created_at: dict[int, float] = {}
        #: Finished conversations, oldest first (logs, tests, the demo and benchmarks read them).
        self.flow_ends: list[FlowEnded] = []
        #: Monotonic time each message was submitted.
        self.submitted_at: dict[int, float] = {}
        self._seen_from_elsewhere: set[int] = set()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @classmethod
    def on_instance(cls, settings: Settings, engine: Engine, instance: AsteriskInstance, ami: AmiGateway,
                    agi: AgiServer, **kwargs: object) -> "BinfoonApp":
        """The application for a private Asterisk instance (its spool holds prompts and recordings)."""
        runtime = instance.runtime
        owner = runtime.asterisk_user() if runtime.root is not None else None
        media = MediaPaths(instance.spool_dir / "binfoon-sounds", instance.spool_dir / "binfoon-recordings",
                           runtime.inner_path, owner, cel_csv_path(instance))
        return cls(settings, engine, ami, agi, media, **kwargs)  # type: ignore[arg-type]

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Serve the flows, start the alarm clock, and resume whatever the database says is pending."""
        freeze_startup_objects()
        self._prepare_record_dir()
        self.agi.add_route("police_intake", self._police_route)
        self.agi.add_route("coordinator_review", self._review_route)
        self.agi.add_route("member_call", self._member_route)
        self.agi.add_route("member_callback", self._callback_route)
        self.agi.add_route("coordinator_report", self._report_route)
        self.agi.add_route("admin_replay", self._admin_route)
        self._unsubscribe = self.ami.subscribe(self._on_event)
        self.alarms.start({DELIVER: self.deliver, REVIEW_RETRY: self.reviews.wake})
        # Confirmations Asterisk recorded while we were down count before anything is dialled again.
        await self.ingest_cel()
        await self.campaigns.start()
        await self.reconcile(at_start=True)
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="binfoon-poll")
        # The backlog (recordings kept while no model was installed) is done in the background.
        self._spawn(self._transcribe("start"))

    async def stop(self) -> None:
        """Stop acting (calls in progress end with the AGI server); state stays in the database."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await self.reviews.stop()
        await self.campaigns.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transcripts.aclose()
        self.alarms.shutdown()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for route in ("police_intake", "coordinator_review", "member_call", "member_callback", "coordinator_report",
                      "admin_replay"):
            self.agi.remove_route(route)
        if self._own_renderer:
            self.renderer.close()

    def _prepare_record_dir(self) -> None:
        # Asterisk (an unprivileged user) writes the officers' recordings here; only we read them.
        path = self.media.record_dir
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o770)
        if self.media.owner is not None and os.geteuid() == 0:
            os.chown(path, *self.media.owner)

    # -- work the database asks for ---------------------------------------------------------------
    async def reconcile(self, at_start: bool = False) -> None:
        """Act on every message the database says needs it (idempotent)."""
        now = self.clock()
        for message_id, status, deliver_at in await self.desk.unfinished():
            if status is MessageStatus.RECORDED:
                if message_id not in self.submitted_at and message_id not in self._seen_from_elsewhere:
                    # Stored by another process (the command line): its take needs a transcript too.
                    self._seen_from_elsewhere.add(message_id)
                    self._spawn(self._transcribe("submitted elsewhere"))
                self.reviews.start(message_id)
            elif status is MessageStatus.WITH_COORDINATORS and at_start:
                # A round cut short by a crash starts again, unless the message waits for its alarm.
                if self.alarms.when(REVIEW_RETRY, message_id) is None:
                    self.reviews.start(message_id)
            elif status is MessageStatus.APPROVED:
                if deliver_at is None or deliver_at <= now:
                    self._spawn(self.deliver(message_id))
                elif self.alarms.when(DELIVER, message_id) is None:
                    self.alarms.wake_at(DELIVER, message_id, deliver_at)

    async def _poll(self) -> None:
        last_transcribe = time.monotonic()
        while True:
            await asyncio.sleep(self.POLL_S)
            try:
                await self.ingest_cel()
                await self.reconcile()
            except Exception:
                log.exception("reconciliation failed; trying again")
            # A model installed while we run is picked up, and failed recordings are tried again.
            if time.monotonic() - last_transcribe >= self.TRANSCRIBE_EVERY_S:
                last_transcribe = time.monotonic()
                self._spawn(self._transcribe("poll"))
            if self.retention.due():
                self._spawn(self.retention.run())

    async def _transcribe(self, why: str, recording_id: int | None = None) -> None:
        try:
            if recording_id is not None:
                await self.transcripts.transcribe_recording(recording_id)
            elif why == "start":
                await self.transcripts.start()
            else:
                await self.transcripts.transcribe_pending()
        except Exception:
            log.exception("transcription (%s) failed; the recordings are kept and tried again later", why)

    async def ingest_cel(self) -> int:
        """Take in the confirmations Asterisk wrote durably (CEL) since the last checkpoint."""
        path = self.media.cel_csv
        if path is None:
            return 0
        name = f"cel:{path}"
        offset = int(await self.delivery.checkpoint(name) or 0)
        found, new_offset = await asyncio.to_thread(read_confirmations, path, offset)
        taken = 0
        for confirmation in found:
            if await self.delivery.confirm(confirmation.attempt_id, via="cel", at=confirmation.at):
                taken += 1
        if new_offset != offset:
            await self.delivery.set_checkpoint(name, str(new_offset))
        if taken:
            log.info("%d confirmation(s) taken in from Asterisk's durable record", taken)
            self.campaigns.wake()
        return taken

    def _take_stored(self, message_id: int, recording_id: int) -> None:
        # Transcribed as soon as it is saved (sent or not): the pool's processes do the work, calls go on.
        self._spawn(self._transcribe("take stored", recording_id))

    def _submitted(self, message_id: int) -> None:
        self.submitted_at[message_id] = time.monotonic()
        self.reviews.start(message_id)

    def _approved(self, message_id: int, deliver_at: dt.datetime) -> None:
        if deliver_at <= self.clock() + dt.timedelta(seconds=1):
            self._spawn(self.deliver(message_id))
        else:
            self.alarms.wake_at(DELIVER, message_id, deliver_at)

    async def deliver(self, message_id: int) -> None:
        """Hand a due, approved message to delivery (its campaign)."""
        campaign_id = await self.desk.start_delivery(message_id)
        if campaign_id is not None:
            log.info("message %d: delivery starts (campaign %d)", message_id, campaign_id)
            self.campaign_created_at.setdefault(campaign_id, time.monotonic())
            self.campaigns.wake()
            self.on_campaign(message_id, campaign_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- calls ------------------------------------------------------------------------------------
    def _call(self, agi: AgiCall) -> AsteriskCall:
        return AsteriskCall(agi, self.voice, self.media.record_dir, self.media.inner_path)

    async def _police_route(self, agi: AgiCall) -> None:
        end = "hung_up"
        call = self._call(agi)
        try:
            end = (await police_intake(call, self.desk, self.intake_rules)).value
        except CallHungUp:
            pass
        except Exception:
            # Whatever was stored stays stored; the officer is told to try again, never left in silence.
            end = "error"
            log.exception("police line failed on %s", agi.channel)
            try:
                await call.say("try_again_later")
                await call.hangup()
            except Exception:
                pass
        finally:
            await self._ended("police_intake", agi.unique_id, end)

    async def _review_route(self, agi: AgiCall) -> None:
        review_call_id = agi.args[0] if agi.args else agi.unique_id
        end = "hung_up"
        try:
            end = (await coordinator_review(self._call(agi), self.desk, review_call_id, self.review_rules)).value
        except CallHungUp:
            pass
        finally:
            self.reviews.call_finished(review_call_id)
            await self._ended("coordinator_review", review_call_id, end)

    async def _ended(self, flow: str, channel_id: str, end: str) -> None:
        log.info("%s on %s ended: %s", flow, channel_id, end)
        async with self._changed:
            self.flow_ends.append(FlowEnded(flow, channel_id, end, time.monotonic()))
            self._changed.notify_all()

    async def wait_for_flows(self, flow: str, count: int = 1, timeout_s: float = 60.0) -> list[FlowEnded]:
        """Wait until ``count`` conversations of ``flow`` have ended; returns them."""
        def ended() -> list[FlowEnded]:
            return [f for f in self.flow_ends if f.flow == flow]

        async def wait() -> list[FlowEnded]:
            async with self._changed:
                await self._changed.wait_for(lambda: len(ended()) >= count)
            return ended()
        async with asyncio.timeout(timeout_s):
            return await wait()

    async def _member_route(self, agi: AgiCall) -> None:
        args = agi.args
        attempt_id = args[0] if args else agi.unique_id
        amd_status = args[1] if len(args) > 1 else ""
        end = "hung_up"
        call = self._call(agi)
        self.campaigns.flow_started(attempt_id)
        try:
            end = (await member_call(call, call, self.delivery, attempt_id, amd_status, self.member_rules)).value
        except CallHungUp:
            pass
        finally:
            outcome = {"confirmed": AttemptOutcome.CONFIRMED, "voicemail": AttemptOutcome.VOICEMAIL}.get(
                end, AttemptOutcome.ANSWERED_NO_KEY)
            await self.delivery.attempt_ended(attempt_id, outcome)
            self.campaigns.call_finished(attempt_id)
            await self._ended("member_call", attempt_id, end)

    async def _confirmed_by_asterisk(self, attempt_id: str) -> None:
        if await self.delivery.confirm(attempt_id, via="cel"):
            self.campaigns.wake()

    async def _callback_route(self, agi: AgiCall) -> None:
        end = "hung_up"
        try:
            end = await member_callback(self._call(agi), self.delivery, self.member_rules.key_timeout_s)
        except CallHungUp:
            pass
        finally:
            await self._ended("member_callback", agi.unique_id, end)

    async def _report_route(self, agi: AgiCall) -> None:
        end = "hung_up"
        try:
            end = await coordinator_report(self._call(agi), self.delivery)
        except CallHungUp:
            pass
        finally:
            await self._ended("coordinator_report", agi.unique_id, end)

    async def _admin_route(self, agi: AgiCall) -> None:
        end = "hung_up"
        try:
            end = (await admin_replay(self._call(agi), self.replays, self.replay_rules)).value
        except CallHungUp:
            pass
        finally:
            await self._ended("admin_replay", agi.unique_id, end)

    def _on_event(self, event: AmiEvent) -> None:
        # A confirmation the dialplan took on its own (the flow did not run): store it at once.
        if isinstance(event, UserEventReceived) and event.name == "BinfoonConfirm":
            attempt_id = event.fields.get("Attempt", "")
            if attempt_id:
                self._spawn(self._confirmed_by_asterisk(attempt_id))
        # A channel that hung up before (or without) reaching its flow ends the wait for it too.
        if isinstance(event, ChannelHungUp):
            self.reviews.call_finished(event.channel_id)
            self.campaigns.channel_ended(event.channel_id)
