"""The composition root: wires AMI, FastAGI, storage, the alarm clock, the chain and the call flows.

Nothing here decides anything: the flows converse, the stores store, the chain says what follows
what (``ivr.chain.steps``), every outbound call lives one life cycle (``ivr.telephony.outbound``),
the alarm clock wakes. Start-up reconciles with the database (the truth), so a crash or a restart
resumes where it stopped: submitted messages go to review, approved ones that are due are
delivered, future ones get their alarm back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, Protocol

from sqlalchemy import Engine

from ivr.archive.admin_line import ReplayRules, admin_replay
from ivr.archive.at_rest import MediaCopies, seal_legacy
from ivr.archive.replay import ReplayDesk
from ivr.archive.retention import RetentionSweep
from ivr.archive.search import reindex_search, seal_plain_transcripts
from ivr.archive.store import Archive
from ivr.asr.desk import TranscriptionDesk
from ivr.asterisk.instance import AmiCredentials, AsteriskInstance
from ivr.asterisk.officers import ReloadError, endpoint_of_channel
from ivr.scheduler import AlarmClock
from ivr.chain.steps import DELIVER, DRILL, Chain, ChainObserver
from ivr.cluster.lease import NodeLease
from ivr.cluster.node import FarmNode
from ivr.config import Settings
from ivr.copies.build import build_copies
from ivr.delivery.dialer import CampaignRunner, DialerLimits
from ivr.delivery.policy import retry_policies
from ivr.delivery.member_call import MemberRules, member_call, member_call_start
from ivr.delivery.line_limits import LineLimits
from ivr.delivery.member_callback import member_callback
from ivr.delivery.policy import TrunkRules, Window
from ivr.delivery.report_line import coordinator_report
from ivr.delivery.store import DeliveryDesk
from ivr.directory.pin_gate import rules_from_settings
from ivr.directory.sip_accounts import publish_officers
from ivr.domain.pin import PinPolicy
from ivr.media.voice import PromptRenderer, Voice
from ivr.police_line.flow import IntakeRules, police_intake
from ivr.police_line.store import MessageDesk
from ivr.review.flow import ReviewRules, coordinator_review, review_call_start
from ivr.review.rounds import REVIEW_RETRY, ReviewDispatcher, RoundRules
from ivr.review.store import ReviewDesk
from ivr.telephony.agi import AgiCall, AgiServer, CallHungUp
from ivr.telephony.ami import AmiGateway, AmiUnavailable
from ivr.telephony.cel import cel_csv_path, read_confirmations
from ivr.telephony.channel import AsteriskCall
from ivr.telephony.dialer import AmiDialer
from ivr.telephony.events import AmiEvent, ChannelHungUp, TrunkRegistration, UserEventReceived
from ivr.telephony.outbound import CallObserver, OutboundCalls
from ivr.telephony.security import SipGuard, ban_rules
from storage import audit as audit_log
from storage.models import utcnow
from storage.recordings import RecordingStore

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[1]


class Observer(ChainObserver, CallObserver, Protocol):
    """Who follows the running application (the lab's timeline, benchmarks, the demo): the chain's
    steps, every outbound call, and every conversation's end. It decides nothing."""

    def flow_ended(self, flow: str, call_id: str, end: str) -> None:
        """A conversation of ``flow`` on ``call_id`` ended with ``end``."""


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
    #: The service verifies the whole audit chain this often (before it anchors the head).
    AUDIT_VERIFY_EVERY_S = 86400.0
    TRANSCRIBE_EVERY_S = 300.0
    #: The AGI routes, each a conversation.
    ROUTES = ("police_intake", "coordinator_review", "member_call", "member_callback", "coordinator_report",
              "admin_replay", "officer_intake")

    def __init__(self, settings: Settings, engine: Engine, ami: AmiGateway, agi: AgiServer, media: MediaPaths,
                 *, dial_template: str | None = None, renderer: PromptRenderer | None = None,
                 clock: Callable[[], dt.datetime] = utcnow, observer: Observer | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.ami = ami
        self.agi = agi
        self.media = media
        self.clock = clock
        self.observer = observer
        self._own_renderer = renderer is None
        self.renderer = renderer or PromptRenderer(PROJECT_DIR / "prompts" / "rendered")
        self.voice = Voice(self.renderer, media.sounds_dir, media.inner_path, media.owner)
        recordings = RecordingStore(settings.data_dir / "recordings")
        # The stores: one per feature, each step one transaction.
        self.desk = MessageDesk(engine, recordings,
                                pin_policy=PinPolicy(settings.pin_max_failures, settings.pin_lock_s,
                                                     settings.pin_lock_s),
                                pin_rules=rules_from_settings(settings),  # per account and line; the pepper
                                clock=clock)
        self.review_desk = ReviewDesk(engine, recordings, clock=clock)
        self.delivery = DeliveryDesk(engine, recordings, clock=clock, copy_channels=(
            settings.copy_channels_urgent, settings.copy_channels_preventive))
        #: The admin line: the police line's PIN policy, the same recording store.
        self.replays = ReplayDesk(engine, recordings, pin_policy=self.desk.pin_policy, clock=clock,
                                  pin_rules=self.desk.pin_rules)
        #: Offline transcripts of every recording, made in worker processes (never on this loop).
        self.transcripts = TranscriptionDesk.from_settings(engine, settings)
        self.alarms = AlarmClock(engine)
        # Every outbound call (review, member, test) on the trunk's channels and pace.
        self.dialer = AmiDialer(ami, dial_template or settings.dial_template, settings.caller_id_number,
                                settings.caller_id_name, settings.destinations)
        self.calls = OutboundCalls(self.dialer, max_channels=settings.max_channels, max_cps=settings.max_cps,
                                   observer=observer)
        # What follows what: police line -> review -> delivery.
        self.chain = Chain(self.desk, self.delivery, self.transcripts, self.alarms, clock=clock, observer=observer)
        self.reviews = ReviewDispatcher(self.review_desk, self.calls, self.alarms, self.chain,
                                        ring_timeout_s=settings.review_ring_timeout_s,
                                        retry_after_s=settings.review_retry_after_s, clock=clock,
                                        rules=RoundRules.from_settings(settings))
        quiet_start, quiet_end = settings.quiet_hours.split("-")
        self.campaigns = CampaignRunner(
            self.delivery, self.calls, self.voice,
            DialerLimits(ring_timeout_s=settings.member_ring_timeout_s,
                         allowed_hours=Window.parse(f"{quiet_end}-{quiet_start}"), tz=settings.tz,
                         trunk=TrunkRules(settings.outage_congestion_streak, settings.outage_probe_after_s,
                                          settings.outage_probe_max_s)),
            retry_policies(settings),
            clock)
        #: SMS and e-mail copies of every campaign's message, and the contact ladder (issue 17): ``None``
        #: when neither Kannel nor an SMTP relay is configured. A member's SMS "1" wakes the dialer.
        self._build_copies = lambda: build_copies(settings, engine, recordings, clock, on_confirmed=self.campaigns.wake)
        self.copies = self._build_copies()
        self.chain.reviews = self.reviews
        self.chain.tz = settings.tz  # a scheduled drill keeps its local hour
        self.chain.dialer = self.campaigns
        self.calls.on_free = self.campaigns.wake  # a freed channel (any kind of call) is dialled at once
        self.member_rules = MemberRules(max(settings.key_timeout_s, 6.0), settings.member_reminders)
        self.intake_rules = IntakeRules(settings.key_timeout_s, settings.record_max_s, settings.record_silence_s)
        self.review_rules = ReviewRules(settings.key_timeout_s, settings.tz)
        self.replay_rules = ReplayRules(settings.key_timeout_s, settings.tz)
        #: Recordings and transcripts past ``retention_days`` are purged at start and once a day.
        self.retention = RetentionSweep(Archive(engine, recordings, operator="service",
                                                copies=MediaCopies((media.sounds_dir,), self.renderer.cache_dir)),
                                        settings.retention_days, clock, sounds_dirs=(media.sounds_dir,))
        # The audit chain's key and anchors files (issue 14 item 8); its head is anchored every
        # ``audit_anchor_every_s`` when it moved (the last anchored head, and when).
        audit_log.configure(engine.url, settings.data_dir, settings.audit_key_file, settings.audit_anchor_file)
        self._audit_anchored: tuple[float, tuple[int, str] | None] = (time.monotonic(), None)
        #: When the whole chain was last verified (``None``: not yet; the first anchoring round does).
        self._audit_verified: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reindex_stop = threading.Event()
        self._reindexed = threading.Event()
        self._reindexed.set()  # nothing running until start
        self._poller: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        #: The Asterisk run directory (and its group) that gets the officers' SIP accounts, if any.
        self.officers_at: tuple[Path, int | None] | None = None
        #: Failed SIP authentications -> bans of their address (RELIABILITY A10), and the AMI
        #: credentials of its own security-event session; set on an instance with bans on.
        self.sip_guard: SipGuard | None = None
        self.security_ami: AmiCredentials | None = None
        #: A farm node's lease, heartbeat and share of the carrier's limits (issue 18); ``None``: one node,
        #: which runs every duty itself.
        self.farm: FarmNode | None = None
        self._leading = False
        if settings.cluster_node:
            self._join_farm(settings)

    def _join_farm(self, settings: Settings) -> None:
        lease = NodeLease(self.engine, settings.cluster_node, lease_s=settings.cluster_lease_s,
                          heartbeat_s=settings.cluster_heartbeat_s, hold_s=settings.cluster_takeover_hold_s)
        self.farm = FarmNode(lease, total_channels=settings.max_channels, total_cps=settings.max_cps,
                             live_calls=lambda: self.calls.busy,
                             set_budget=lambda budget: self.calls.set_limits(budget.channels, budget.cps),
                             gained_lead=self._lead, lost_lead=self._unlead, took_over=self.campaigns.wake,
                             fenced=self._fenced)
        self.chain.leads = lease.leads
        self.delivery.claim = lambda: lease.claim
        self.campaigns.lease_valid = lease.valid

    @classmethod
    def on_instance(cls, settings: Settings, engine: Engine, instance: AsteriskInstance, ami: AmiGateway,
                    agi: AgiServer, **kwargs: object) -> "BinfoonApp":
        """The application for a private Asterisk instance (its spool holds prompts and recordings)."""
        runtime = instance.runtime
        owner = runtime.asterisk_user() if runtime.root is not None else None
        media = MediaPaths(instance.spool_dir / "binfoon-sounds", instance.spool_dir / "binfoon-recordings",
                           runtime.inner_path, owner, cel_csv_path(instance))
        app = cls(settings, engine, ami, agi, media, **kwargs)  # type: ignore[arg-type]
        app.officers_at = (instance.run_dir, owner[1] if owner else None)
        # Only the instance's dialplan knows this secret: no other local process can run a flow (issue 14 item 4).
        agi.require_secret(instance.agi_secret)
        if settings.sip_ban_max_failures > 0:
            # Unprivileged (production) the guard only writes the ban list; root's path unit reloads it.
            app.sip_guard = SipGuard(engine, instance.run_dir, owner[1] if owner else None, ban_rules(settings),
                                     reload=os.geteuid() == 0, clock=app.clock)
            app.security_ami = instance.ami
        return app

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Serve the flows, start the alarm clock, and resume whatever the database says is pending."""
        freeze_startup_objects()
        self._prepare_record_dir()
        # Recordings stored before sealing existed are sealed now (C1); an unusable key file stops the start.
        await asyncio.to_thread(seal_legacy, self.engine, self.desk.store)
        # So are transcripts stored in plaintext before (search reads those directly until then).
        # (Their search index is brought up to date in the background, once the flows are served.)
        await asyncio.to_thread(seal_plain_transcripts, self.engine, self.desk.store, reindex=False)
        routes: dict[str, Callable[[AgiCall], Awaitable[None]]] = {
            "police_intake": self._police_route, "coordinator_review": self._review_route,
            "member_call": self._member_route, "member_callback": self._callback_route,
            "coordinator_report": self._report_route, "admin_replay": self._admin_route,
            "officer_intake": self._officer_route}
        if not self.agi.requires_secret:  # never serve the flows to any local process (issue 14 item 4)
            raise RuntimeError("the FastAGI server has no secret: build the application with BinfoonApp.on_instance")
        for name, route in routes.items():
            self.agi.add_route(name, route)
        await self._publish_officers()
        if self.sip_guard is not None:
            await self.sip_guard.start(self.security_ami)
        self._unsubscribe = self.ami.subscribe(self._on_event)
        # Confirmations Asterisk recorded while we were down count before anything is dialled again.
        await self.ingest_cel()
        # A refusal Asterisk met before we subscribed sent its Registry event to nobody (and a refused
        # secret is final: no later event): ask for the trunk's state before the dialer's first pass.
        try:
            status = (await self.ami.outbound_registrations()).get("trunk")
        except (AmiUnavailable, TimeoutError):  # AMI away: the Registry events will tell
            status = None
        if status:
            self.campaigns.trunk_registration(status)
        if self.farm is not None:
            await self.farm.join()
            self.campaigns.node_id = self.farm.lease.node_id
        await self.campaigns.start()
        if self.farm is None:
            await self._lead()
        else:
            await self.farm.run()  # its first heartbeat may make this node the leader (``_lead``)
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="binfoon-poll")
        # The backlog (recordings kept while no model was installed) is done in the background.
        self._spawn(self._transcripts_start())
        # So is re-indexing for search (after an upgrade of the index or of the stemmer: every
        # transcript once, ~16 ms each): the lines answer meanwhile, and search reads rows without
        # current terms directly until then.
        self._reindexed.clear()
        self._spawn(self._reindex_search())

    async def _lead(self) -> None:
        """Take on the duties one process runs for everybody: alarms, reviews, copies, reconciliation."""
        if self._leading:
            return
        self._leading = True
        await self.alarms.stopped()  # a lead lost a moment ago: its shutdown finishes first
        self.alarms.start({DELIVER: self.chain.alarm, REVIEW_RETRY: self.reviews.wake, DRILL: self.chain.drill_alarm})
        if self.copies is not None:
            # After the dialer: a copy's plan reads the calls it made (the ladder).
            await self.copies.start()
        await self.chain.reconcile(at_start=True)

    async def _unlead(self) -> None:
        """Another node leads now (this one was paused past its lease, or stops): its alarms and copies
        stop here; review calls already up end on their own."""
        if not self._leading:
            return
        self._leading = False
        self.alarms.shutdown()
        if self.copies is not None:
            await self.copies.stop()
            if self.farm is not None:  # a stopped sender is not started again: a fresh one, should the lead return
                self.copies = self._build_copies()

    async def _fenced(self) -> None:
        """This node was fenced (its lease ran out) and joined again under a new epoch: dial on. Its calls still
        up are its own: the others close them only after ``cluster_takeover_hold_s``."""
        if self.farm is not None:
            self.campaigns.node_id = self.farm.lease.node_id
        self.campaigns.wake()

    def _leads(self) -> bool:
        return self.farm is None or self.farm.lease.leads()

    async def _reindex_search(self) -> None:
        self._reindex_stop.clear()
        try:
            await asyncio.to_thread(reindex_search, self.engine, self.desk.store, self._reindex_stop)
        except Exception:  # search still reads unindexed rows directly; the next start tries again
            log.exception("re-indexing the archive for search failed")
        finally:
            self._reindexed.set()

    async def stop(self) -> None:
        """Stop acting (calls in progress end with the AGI server); state stays in the database."""
        # The re-indexing thread ends after its current row (a thread is not cancelled with its task).
        self._reindex_stop.set()
        await asyncio.to_thread(self._reindexed.wait, 30.0)
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        # No alarm may start a round or a delivery while the rest stops (stored alarms stay).
        self.alarms.shutdown()
        await self.reviews.stop()
        await self.campaigns.stop()
        if self.farm is not None:
            await self.farm.stop()  # gives up the lead (``_unlead``) and leaves the farm
        await self._unlead()
        await self.chain.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transcripts.aclose()
        if self.sip_guard is not None:
            await self.sip_guard.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for route in self.ROUTES:
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

    async def _publish_officers(self) -> None:
        # The officers' SIP accounts as the database has them now (a change made while we were down counts).
        if self.officers_at is None:
            return
        run_dir, group = self.officers_at
        # Unprivileged (production), the service writes the file only: its group-readable include is the
        # service's, while Asterisk's control socket is not; systemd's binfoon-officers.path has root reload it.
        try:
            await asyncio.to_thread(publish_officers, self.engine, run_dir, group, reload=os.geteuid() == 0)
        except (OSError, ReloadError) as exc:
            log.error("officers' SIP accounts not published to Asterisk: %s", exc)

    # -- work the database asks for ---------------------------------------------------------------
    async def _poll(self) -> None:
        last_transcribe = time.monotonic()
        while True:
            await asyncio.sleep(self.POLL_S)
            try:
                await self.ingest_cel()  # every node: its own Asterisk's record
                if self._leads():
                    await self.chain.reconcile()
            except Exception:
                log.exception("reconciliation failed; trying again")
            if not self._leads():
                continue  # the farm's single duties run on its leader
            # A model installed while we run is picked up, and failed recordings are tried again.
            if time.monotonic() - last_transcribe >= self.TRANSCRIBE_EVERY_S:
                last_transcribe = time.monotonic()
                self._spawn(self.chain.transcribe_backlog())
            if self.retention.due():
                self._spawn(self.retention.run())
            if time.monotonic() - self._audit_anchored[0] >= self.settings.audit_anchor_every_s:
                self._audit_anchored = (time.monotonic(), self._audit_anchored[1])
                self._spawn(self.anchor_audit())

    async def anchor_audit(self) -> None:
        """Anchor the audit chain's head outside the database (when it moved since the last anchor).

        On the first round and once a day the whole chain is verified first: a broken chain is never
        anchored (an anchor would vouch for it), and admins get a ``security.alert`` and a WARNING."""
        unless = self._audit_anchored[1]
        verify = self._audit_verified is None or time.monotonic() - self._audit_verified >= self.AUDIT_VERIFY_EVERY_S

        def work() -> tuple[audit_log.ChainCheck | None, audit_log.Anchor | None]:
            if verify:
                result = self.delivery.run(audit_log.check)
                if not result.intact:
                    self.delivery.run(lambda s: audit_log.record(
                        s, "system", "security.alert", "audit_log", kind="audit_chain_broken",
                        problem=str(result.first), problems=len(result.problems)))
                    return result, None
            return None, self.delivery.run(lambda s: audit_log.anchor(s, unless))

        try:
            broken, anchored = await asyncio.to_thread(work)
        except Exception:
            log.exception("audit chain not anchored; trying again later")
            return
        if verify:
            self._audit_verified = time.monotonic()
        if broken is not None:
            log.warning("audit log BROKEN (%d problem(s)), not anchored: %s; see `binfoon audit verify --all`",
                        len(broken.problems), broken.first)
        if anchored is not None:
            self._audit_anchored = (self._audit_anchored[0], (anchored.row_id, anchored.row_hash))

    async def _transcripts_start(self) -> None:
        try:
            await self.transcripts.start()
        except Exception:
            log.exception("transcription (start) failed; the recordings are kept and tried again later")

    async def ingest_cel(self) -> int:
        """Take in the confirmations Asterisk wrote durably (CEL) since the last checkpoint."""
        path = self.media.cel_csv
        if path is None:
            return 0
        name = f"cel:{path}"
        if len(name) > 100:
            # The checkpoint's key is VARCHAR(100), which PostgreSQL enforces (SQLite does not): a
            # long instance path is named by its digest, or the service could not start on PostgreSQL.
            name = f"cel:sha256:{hashlib.sha256(str(path).encode()).hexdigest()}"
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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- calls ------------------------------------------------------------------------------------
    def _call(self, agi: AgiCall) -> AsteriskCall:
        return AsteriskCall(agi, self.voice, self.media.record_dir, self.media.inner_path)

    async def _police_route(self, agi: AgiCall, sip_account: str | None = None) -> None:
        end = "hung_up"
        call = self._call(agi)
        try:
            end = (await police_intake(call, self.desk, self.intake_rules, self.chain,
                                       sip_account=sip_account)).value
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
            self._ended("police_intake", agi.unique_id, end)

    async def _officer_route(self, agi: AgiCall) -> None:
        # From an officer's SIP endpoint (``binfoon-officer``): Asterisk names the channel after the
        # endpoint it authenticated, so that name, never a caller ID, says whose account this is.
        account = endpoint_of_channel(agi.channel)
        if account is None:
            log.warning("officer line reached from a non-SIP channel %s: refused", agi.channel)
            await agi.hangup()
            return
        await self._police_route(agi, sip_account=account)

    async def _review_route(self, agi: AgiCall) -> None:
        review_call_id = review_call_start(agi.args, agi.unique_id)
        if review_call_id is None:
            await self._refuse_foreign_channel(agi, "coordinator_review")
            return
        end = "hung_up"
        self.calls.flow_started(review_call_id)
        try:
            end = (await coordinator_review(self._call(agi), self.review_desk, review_call_id, self.review_rules,
                                            self.chain)).value
        except CallHungUp:
            pass
        finally:
            self.calls.flow_ended(review_call_id, end)
            self._ended("coordinator_review", review_call_id, end)

    async def _member_route(self, agi: AgiCall) -> None:
        start = member_call_start(agi.args, agi.unique_id)
        if start is None:
            await self._refuse_foreign_channel(agi, "member_call")
            return
        attempt_id, amd_status = start.attempt_id, start.amd_status
        end = "hung_up"
        call = self._call(agi)
        self.calls.flow_started(attempt_id)
        try:
            end = (await member_call(call, call, self.delivery, attempt_id, amd_status, self.member_rules)).value
        except CallHungUp:
            pass
        finally:
            # The dialer stores the attempt's outcome from this end (``ivr.delivery.outcome``).
            self.calls.flow_ended(attempt_id, end)
            self._ended("member_call", attempt_id, end)

    async def _callback_route(self, agi: AgiCall) -> None:
        end: object = "hung_up"
        try:
            end = await member_callback(self._call(agi), self.delivery, self.member_rules.key_timeout_s,
                                        LineLimits.from_settings(self.settings))
        except CallHungUp:
            pass
        finally:
            self._ended("member_callback", agi.unique_id, _value(end))

    async def _report_route(self, agi: AgiCall) -> None:
        end: object = "hung_up"
        try:
            end = await coordinator_report(self._call(agi), self.delivery, LineLimits.from_settings(self.settings),
                                           pins=self.desk.pin_rules)
        except CallHungUp:
            pass
        finally:
            self._ended("coordinator_report", agi.unique_id, _value(end))

    async def _admin_route(self, agi: AgiCall) -> None:
        end = "hung_up"
        try:
            end = (await admin_replay(self._call(agi), self.replays, self.replay_rules)).value
        except CallHungUp:
            pass
        finally:
            self._ended("admin_replay", agi.unique_id, end)

    async def _refuse_foreign_channel(self, agi: AgiCall, flow: str) -> None:
        """An outbound call's flow asked for on a channel we did not originate for that call (a leaked
        id): hung up before anything is played or stored (so the dialplan's own fallback does not
        play it either), and the admins told. The ids are the request's own: cut short, never a number."""
        claimed = (agi.args[0] if agi.args else "")[:64]
        unique_id = agi.unique_id[:64]
        log.warning("SECURITY: %s refused: channel %r is not the one originated for call %r", flow, unique_id, claimed)
        await agi.hangup()
        await self.delivery.tx(lambda s: audit_log.record(s, "system", "security.alert", f"call:{claimed}",
                                                          kind="agi-foreign-channel", flow=flow, unique_id=unique_id))

    def _ended(self, flow: str, call_id: str, end: str) -> None:
        log.info("%s on %s ended: %s", flow, call_id, end)
        if self.observer is not None:
            self.observer.flow_ended(flow, call_id, end)

    async def _confirmed_by_asterisk(self, attempt_id: str) -> None:
        if await self.delivery.confirm(attempt_id, via="cel"):
            self.campaigns.wake()

    def _on_event(self, event: AmiEvent) -> None:
        # A confirmation the dialplan took on its own (the flow did not run): store it at once.
        if isinstance(event, UserEventReceived) and event.name == "BinfoonConfirm":
            attempt_id = event.fields.get("Attempt", "")
            if attempt_id:
                self._spawn(self._confirmed_by_asterisk(attempt_id))
        # The trunk's registration refused or lost pauses delivery; registered again resumes it.
        if isinstance(event, TrunkRegistration):
            self.campaigns.trunk_registration(event.status)
        # A channel that hung up before (or without) reaching its flow ends the wait for it too.
        if isinstance(event, ChannelHungUp):
            if self.calls.hung_up(event.channel_id):
                self.campaigns.wake()  # a channel a previous process left up is free now


def _value(end: object) -> str:
    """A flow's end as it is logged: its ``value`` (an enum's, a typed result's), or the text itself."""
    return str(getattr(end, "value", end))
