"""The campaign dialer: calls every member of approved messages, within the trunk's limits.

Each pass reads the campaigns from the database, in dialling order and only while a channel is free,
asks the pure policy (``ivr.delivery.policy``)
what each member needs, and dials what is due: urgent campaigns first, at most ``max_channels``
calls at once, at most ``max_cps`` new calls a second (and a zone's own limits on both) (the trunk's limits,
shared with review and test calls: ``ivr.telephony.outbound``), one call per phone number at a time.
The attempt is written before it is dialled; its outcome as soon as it is known, in one place
(``ivr.delivery.outcome``). A number the destination policy bars at the dialler's edge
(``ivr.telephony.dialer``) ends its attempt as ``invalid_number`` without a call, is no sign about
the trunk, and raises a ``security.alert`` for the admins. The scheduler and events only wake the dialer; the database is the truth.

An outage is never a member's failure, and a number never has two calls at once:
- a call Asterisk refused (shutting down) or that AMI never sent is no attempt against the member
  (``not_placed``, outcome ``interrupted``), and nothing is dialled for a moment;
- on start, calls a previous process left up in Asterisk (``CoreShowChannels``: their channel id is
  the attempt's id) are waited for, not dialled over; only when Asterisk cannot tell does a fixed
  grace stand in;
- a trunk that is down (registration refused, or the carrier answering congestion/503 to every call:
  ``ivr.delivery.policy.observe_dial``) pauses every campaign, gives the failed calls back to their
  members, is shown in the database (``campaign watch``, the web board) and the log, and is tried
  again with one probe call after a back-off (or a ``Registered`` event ends the pause).
"""

from __future__ import annotations

import asyncio
from collections import Counter
import datetime as dt
import logging
import time
from dataclasses import dataclass, replace
from typing import Callable

from ivr.delivery.members import Member
from ivr.delivery.outcome import NOT_PLACED, dial_record, dialled_outcome
from ivr.delivery.policy import (
    Next, RetryPolicy, TrunkRules, TrunkWatch, Verdict, Window, may_dial, next_allowed, next_step, observe_dial,
    member_prompts, observe_registration, probe_started,
)
from ivr.delivery.store import CampaignHead, CampaignPlan, DeliveryDesk, OpenCall
from ivr.domain.pace import TokenBucket
from ivr.domain.phone import mask
from ivr.domain.vocabulary import AttemptOutcome
from ivr.media.voice import Voice
from ivr.telephony.outbound import CallEnd, CallKind, OutboundCalls, answered
from ivr.telephony.outcomes import EDGE_CAP_CAUSE
from storage import audit

log = logging.getLogger(__name__)

MEMBER_CONTEXT = "binfoon-member"
#: The stored dial outcome of an attempt the destination policy refused: no channel was made, but unlike
#: ``not_placed`` it is final for that number (the report lists it, so the member's end is explained).
BARRED = "barred"


@dataclass(frozen=True)
class DialerLimits:
    """The delivery rules (the trunk's channels and pace are ``OutboundCalls``')."""

    ring_timeout_s: float = 30.0
    #: Local hours in which preventive messages may be delivered (urgent ones go at any hour).
    allowed_hours: Window = Window(dt.time(8), dt.time(21))
    tz: dt.tzinfo = dt.timezone.utc
    #: A preventive member not reached within this time after the campaign started is given up.
    preventive_expire_s: float = 3 * 24 * 3600.0
    #: Only when Asterisk cannot list its channels: a call cut by a crash is retried after this grace
    #: (it may still be up, and a durable confirmation may still come in).
    interrupted_grace_s: float = 20.0
    #: After a call left up (by a crash, or a lost AMI link) ends, its member waits this long before a
    #: new call: a key pressed on it reaches the database (AMI event, CEL poll) first.
    settle_s: float = 2.0
    #: After Asterisk refused an Originate (it is shutting down), nothing is dialled for this long,
    #: doubled at each refusal in a row up to ``refused_pause_max_s``.
    refused_pause_s: float = 1.0
    refused_pause_max_s: float = 5.0
    #: When the trunk counts as down, and how it is probed.
    trunk: TrunkRules = TrunkRules()
    #: The longest an answered member call may last before the dialer stops waiting for it.
    max_call_s: float = 600.0
    #: How long one pass may keep dialling from the plan it read (waiting for the pace's tokens)
    #: before the plan is read again.
    plan_reuse_s: float = 1.0
    #: While the dialer waits, how often it checks (one small query) whether another process (the
    #: command line, the web console) started, stopped or re-notified a campaign: then it plans at once.
    control_poll_s: float = 1.0
    #: A campaign with nothing to dial (every member in flight, done or waiting for a retry) is read
    #: again after this, or sooner (its next member's time, one of its calls here ending).
    idle_recheck_s: float = 1.0


@dataclass(frozen=True)
class DialerStats:
    """What the dialer did, for monitoring (counters only: timings are an observer's, ``CallObserver``)."""

    originates: int
    #: The most calls up at once on the trunk (``OutboundCalls.peak``).
    peak_concurrent: int


class CampaignRunner:
    """Dials campaigns until every member has a final outcome."""

    def __init__(self, desk: DeliveryDesk, calls: OutboundCalls, voice: Voice, limits: DialerLimits,
                 policies: dict[bool, RetryPolicy], clock: Callable[[], dt.datetime]) -> None:
        self.desk = desk
        self.calls = calls
        self.voice = voice
        self.limits = limits
        self.policies = policies
        self.clock = clock
        self._originates = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._calls: dict[str, asyncio.Task[None]] = {}
        #: attempt id -> (campaign, zone, number) of every member call this process has up.
        self._live: dict[str, tuple[int, int, str]] = {}
        self._sounds: dict[tuple[int, str], dict[str, str]] = {}
        #: What is known of the trunk (pure state, moved by ``ivr.delivery.policy``).
        self.trunk = TrunkWatch()
        #: Attempts given back to their members (the trunk was down), in case their own outcome is
        #: written after the give-back.
        self._given_back: set[str] = set()
        #: Asterisk refused an Originate: no call before this (monotonic) time; the current pause.
        self._refused_until = 0.0
        self._refused_s = 0.0
        #: Asterisk could not list its channels at start: interrupted calls wait a fixed grace.
        self._fallback_grace = False
        self._pause_writes: set[asyncio.Task[None]] = set()
        #: zone id -> its own pace (``police_zones.max_cps``), on top of the trunk's.
        self._zone_pace: dict[int, TokenBucket] = {}
        #: (campaign, round) of the campaigns to dial at the last pass (``DeliveryDesk.campaign_heads``).
        self._marks: frozenset[tuple[int, int]] = frozenset()
        #: campaign id -> (round, monotonic time): it had nothing to dial when last read; not read
        #: again before that time unless one of its calls here ends (a hint, never the truth).
        self._idle: dict[int, tuple[int, float]] = {}
        #: Campaigns whose members were left waiting for a channel at their last reading.
        self._waiting: set[int] = set()
        #: In a farm (``ivr.cluster``): this node's id (its own open calls are the ones it recovers), and
        #: whether its lease holds (checked again just before each Originate: a node paused past its
        #: lease dials nothing it may no longer own). ``None``: one node, no lease.
        self.node_id: int | None = None
        self.lease_valid: Callable[[], bool] | None = None

    @property
    def live_calls(self) -> int:
        """Member calls this process has up now."""
        return len(self._live)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Close what a crash left open (waiting for calls still up in Asterisk), then dial."""
        live = await self.calls.live_call_ids()
        closed, still_up = await self.desk.interrupt_in_flight(live, node_id=self.node_id)
        if live is None:
            # Asterisk cannot tell which calls are up: they hold their channels, and their members
            # wait, for a fixed grace.
            self._fallback_grace = True
            self.calls.adopt_orphans(closed, self.limits.interrupted_grace_s)
            if closed:
                log.warning("Asterisk cannot list its channels: %d interrupted call(s) wait %.0f s", len(closed),
                            self.limits.interrupted_grace_s)
        for call in still_up:
            self._adopt(call)
        if still_up:
            log.info("%d member call(s) left up by the previous process: waited for, not dialled over",
                     len(still_up))
            # A call that ended between the listing and now sent its hang-up before it was held.
            again = await self.calls.live_call_ids()
            for call in still_up:
                if again is not None and not _up(call.attempt_id, again):
                    self.calls.hung_up(call.attempt_id)
        stored = await self.desk.pause()
        if stored is not None:
            # Paused when the last process stopped: one probe call tells at once whether it is back.
            now = self.clock()
            self.trunk = TrunkWatch(down_since=now, reason=stored.reason, probe_at=now,
                                    probe_s=self.limits.trunk.probe_after_s)
            log.warning("delivery paused since the last run (%s): probing the trunk", stored.reason)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="campaign-dialer")

    def _adopt(self, call: OpenCall) -> None:
        """A call a previous process left up: it holds its channel and its number until it ends."""
        self.calls.hold(call.attempt_id, CallKind.MEMBER)
        self._live[call.attempt_id] = (call.campaign_id, call.zone_id, call.e164)
        task = asyncio.get_running_loop().create_task(self._outlive(call.attempt_id, adopted=True))
        self._calls[call.attempt_id] = task

    async def stop(self) -> None:
        """Stop dialling; calls in progress are left to Asterisk (their state is in the database)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._calls.values()):
            task.cancel()
        await asyncio.gather(*self._calls.values(), return_exceptions=True)

    @property
    def stats(self) -> DialerStats:
        """What the dialer did so far."""
        return DialerStats(self._originates, self.calls.peak)

    def wake(self) -> None:
        """Something changed (a campaign, a call's end): plan again now."""
        self._wake.set()

    def trunk_registration(self, status: str) -> None:
        """The trunk's registration changed (AMI ``Registry``): pause or resume delivery."""
        self._set_trunk(observe_registration(self.trunk, status, self.limits.trunk, self.clock()))

    def _set_trunk(self, watch: TrunkWatch) -> None:
        """Take the new trunk state; a pause that starts or ends is logged and stored (in order)."""
        old, self.trunk = self.trunk, watch
        if old.down == watch.down and old.reason == watch.reason:
            return
        if watch.down:
            log.warning("delivery PAUSED: %s (next probe call in %.0f s)", watch.reason, watch.probe_s)
        else:
            log.warning("delivery resumed: the trunk carries calls again (paused since %s: %s)",
                        old.down_since, old.reason)
            self.wake()
        previous = list(self._pause_writes)
        reason = watch.reason if watch.down else None

        async def write() -> None:
            await asyncio.gather(*previous, return_exceptions=True)  # stored in the order they happened
            await self.desk.set_pause(reason)
        task = asyncio.get_running_loop().create_task(write())
        self._pause_writes.add(task)
        task.add_done_callback(self._pause_writes.discard)

    # -- the loop -------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                wait_s = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dialer pass failed; trying again in a second")
                wait_s = 1.0
            await self._wait(max(0.01, wait_s))
            self._wake.clear()

    async def _wait(self, wait_s: float) -> None:
        """Sleep until woken, ``wait_s`` is over, or the campaigns to dial changed in the database
        (a re-notify from the web must not wait for the next due retry, up to 30 s away)."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that comes as the
            # wake fires, and stop() then waits for this loop forever (seen in CI).
            try:
                async with asyncio.timeout(min(left, self.limits.control_poll_s)):
                    await self._wake.wait()
                return
            except asyncio.TimeoutError:
                pass
            if deadline - time.monotonic() > 0 and await self._campaigns_changed():
                return

    async def _campaigns_changed(self) -> bool:
        try:
            marks = _marks(await self.desk.campaign_heads())
        except Exception:
            log.exception("cannot read the campaigns to dial; the next pass will")
            return False
        return marks != self._marks

    async def _pass(self) -> float:
        """Dial what is due; returns how long to sleep when nothing wakes the dialer."""
        if not self.calls.ready:
            return 0.5  # the PBX is away (restarting): dial nothing rather than fail everyone
        if self.lease_valid is not None and not self.lease_valid():
            return 0.5  # a farm node without a lease owns nothing: the heartbeat renews it, or it re-joins
        refused_s = self._refused_until - time.monotonic()
        if refused_s > 0:
            return refused_s  # the PBX refused a call (shutting down): nothing is dialled meanwhile
        now = self.clock()
        heads = await self.desk.campaign_heads()
        self._marks = _marks(heads)
        next_wake = 30.0
        dialling = {h.campaign_id for h in heads}
        self._waiting &= dialling  # hints about campaigns no longer dialled go (a service runs for months)
        for gone in self._idle.keys() - dialling:
            del self._idle[gone]
        for head in heads:
            # Members are read campaign by campaign, in dialling order. With the trunk full, a campaign
            # known to have members waiting for a channel is not read (it cannot have finished), nor one
            # read a moment ago with nothing to dial: a pass reads a few campaigns, not all of them.
            idle_s = self._idle_s(head.campaign_id, head.round)
            if idle_s > 0:
                next_wake = min(next_wake, idle_s)
                continue
            if head.campaign_id in self._waiting and not self.calls.has_channel():
                next_wake = min(next_wake, 1.0)
                continue
            plan = await self.desk.plan(head.campaign_id)
            self._waiting.discard(head.campaign_id)
            if plan is None:
                continue
            planned_at = time.monotonic()
            due, finished, soonest = self._decide(plan, now)
            if finished is not None:
                if not any(v[0] == plan.campaign_id for v in self._live.values()):
                    await self.desk.finish(plan.campaign_id, finished, plan.round)
                    log.info("campaign %d done: %s", plan.campaign_id, dict(Counter(finished.values())))
                continue
            if soonest is not None:
                next_wake = min(next_wake, max(0.0, (soonest - now).total_seconds()))
            if not due:
                # Nothing to dial: read again when one of its calls here ends, when its next member falls
                # due, or after ``idle_recheck_s`` (a call of another node may end meanwhile, a member
                # confirm by SMS).
                until = now + dt.timedelta(seconds=self.limits.idle_recheck_s)
                self._idle[head.campaign_id] = (plan.round, time.monotonic() + max(
                    0.0, ((until if soonest is None else min(until, soonest)) - now).total_seconds()))
                continue
            live_numbers = {v[2] for v in self._live.values()}
            zone_live = sum(1 for v in self._live.values() if v[1] == plan.zone_id)
            for member, step in due:
                if not may_dial(self.trunk, now):
                    # The trunk is down: nobody is dialled but the probe, when it is due.
                    probe_at = self.trunk.probe_at
                    return min(next_wake, 1.0 if probe_at is None else max(0.05, (probe_at - now).total_seconds()))
                if not self.calls.has_channel():
                    self._waiting.add(plan.campaign_id)
                    next_wake = min(next_wake, 1.0)
                    break
                if plan.zone_max_channels is not None and zone_live >= plan.zone_max_channels:
                    break
                if step.e164 in live_numbers:
                    continue  # one call per number at a time (members sharing a line, B4)
                zone_wait_s = self._zone_wait_s(plan)
                if zone_wait_s > 0:
                    # The zone's own pace is spent: its next call waits, other zones' campaigns go on.
                    next_wake = min(next_wake, zone_wait_s)
                    break
                if not self.calls.take_token():
                    # Wait for the pace's next token on this plan rather than plan again for every
                    # call: rebuilding the plan takes longer than a token at 50 calls/s (measured:
                    # 25-60 ms for 500 members), which held the pace to a third of max_cps. The plan
                    # may go stale meanwhile; begin_attempt refuses a member confirmed since.
                    wait_s = self.calls.token_wait_s()
                    if time.monotonic() + wait_s - planned_at > self.limits.plan_reuse_s:
                        return min(next_wake, wait_s)
                    await asyncio.sleep(wait_s)
                    if not self.calls.ready or not self.calls.take_token():
                        return min(next_wake, self.calls.token_wait_s())
                # The channel is the call's from now: a review call asking meanwhile waits for another.
                reservation = self.calls.reserve()
                try:
                    attempt_id = await self.desk.begin_attempt(plan.campaign_id, member.view.person_id, step.e164,
                                                               step.rank, step.attempt_no)
                except BaseException:
                    self.calls.release(reservation)
                    raise
                if attempt_id is None:
                    self.calls.release(reservation)
                    continue
                self.calls.claim(reservation, attempt_id, CallKind.MEMBER)
                if plan.zone_max_cps is not None:
                    self._zone_pace[plan.zone_id].take(time.monotonic())
                if self.trunk.down:
                    self.trunk = probe_started(self.trunk, attempt_id)
                    log.info("probing the trunk with member call %s", attempt_id)
                self._live[attempt_id] = (plan.campaign_id, plan.zone_id, step.e164)
                live_numbers.add(step.e164)
                zone_live += 1
                task = asyncio.get_running_loop().create_task(self._call(plan, member, step, attempt_id))
                self._calls[attempt_id] = task
        return next_wake

    def _idle_s(self, campaign_id: int, round_: int) -> float:
        """How long a campaign that had nothing to dial at its last reading stays unread (0: read it)."""
        idle = self._idle.get(campaign_id)
        if idle is None:
            return 0.0
        left = idle[1] - time.monotonic()
        if idle[0] != round_ or left <= 0:
            del self._idle[campaign_id]
            return 0.0
        return left

    def _decide(self, plan: CampaignPlan, now: dt.datetime
                ) -> tuple[list[tuple[Member, Next]], dict[int, str] | None, dt.datetime | None]:
        """Members due now, final outcomes if all are done, and when the next one falls due."""
        policy = self.policies[plan.urgent]
        due: list[tuple[Member, Next]] = []
        finals: dict[int, str] = {}
        soonest: dt.datetime | None = None
        covered: list[Member] = []
        for member in plan.members:
            if member.covered_by is not None:
                covered.append(member)
                continue
            step = next_step(member.view, policy, now)
            if step.verdict is Verdict.DONE:
                finals[member.view.person_id] = step.final
                continue
            if step.verdict is Verdict.IN_FLIGHT:
                continue
            at = step.at or now
            if not plan.urgent:
                at = self._allowed(member, at)
                if at - plan.created_at > dt.timedelta(seconds=self.limits.preventive_expire_s):
                    finals[member.view.person_id] = "expired"
                    continue
            if self._fallback_grace and any(a.outcome == "interrupted" for a in member.view.attempts[-1:]):
                ended = member.view.attempts[-1].ended_at or now
                at = max(at, ended + dt.timedelta(seconds=self.limits.interrupted_grace_s))
            if at <= now:
                due.append((member, step))
            else:
                soonest = at if soonest is None else min(soonest, at)
        for member in covered:
            if member.view.confirmed:
                finals[member.view.person_id] = "confirmed"
            elif member.covered_by in finals:
                finals[member.view.person_id] = finals[member.covered_by]  # type: ignore[index]
        everyone = len(finals) == len(plan.members)
        return due, (finals if everyone else None), soonest

    def _zone_wait_s(self, plan: CampaignPlan) -> float:
        """Seconds until the plan's zone may start another call (0: now); a changed zone pace takes effect."""
        if plan.zone_max_cps is None:
            self._zone_pace.pop(plan.zone_id, None)
            return 0.0
        bucket = self._zone_pace.get(plan.zone_id)
        if bucket is None or bucket.rate != plan.zone_max_cps:
            bucket = self._zone_pace[plan.zone_id] = TokenBucket(plan.zone_max_cps, 1.0, time.monotonic())
        return bucket.wait_s(time.monotonic())

    def _allowed(self, member: Member, at: dt.datetime) -> dt.datetime:
        windows = [self.limits.allowed_hours]
        if member.window is not None:
            try:
                windows.append(Window.parse(f"{member.window[0]}-{member.window[1]}"))
            except ValueError:
                log.warning("member %d: ignoring a bad personal window %r", member.view.person_id, member.window)
        local = next_allowed(at.astimezone(self.limits.tz), windows, member.pause)
        return local.astimezone(dt.timezone.utc)

    # -- one call -------------------------------------------------------------------------------
    async def _sounds_for(self, plan: CampaignPlan, language: str) -> dict[str, str]:
        key = (plan.campaign_id, language)
        if key not in self._sounds:
            prompts = member_prompts(plan.urgent, plan.drill)
            self._sounds[key] = {"BINFOON_SOUND": await self.voice.audio(plan.recording)}
            for variable, prompt_id in prompts.items():
                self._sounds[key][variable] = await self.voice.prompt(prompt_id, language)
        return self._sounds[key]

    async def _call(self, plan: CampaignPlan, member: Member, step: Next, attempt_id: str) -> None:
        """One member call on its held channel: dial, wait for its end, store its outcome once."""
        try:
            variables = {"BINFOON_ATTEMPT": attempt_id, **await self._sounds_for(plan, member.language)}
            if self.lease_valid is not None and not self.lease_valid(1.0):
                # The fence: this node's lease ran out since the attempt was begun (it was paused, or the
                # database was away); the attempt may be another node's now. Never dialled, no try lost.
                await self.desk.attempt_dialled(attempt_id, NOT_PLACED, None, AttemptOutcome.INTERRUPTED.value)
                log.warning("member call %s not placed: this node's lease ran out", attempt_id)
                return
            self._originates += 1
            dialled = await self.calls.dial(attempt_id, step.e164, context=MEMBER_CONTEXT, variables=variables,
                                            ring_timeout_s=self.limits.ring_timeout_s)
            if dialled.barred:
                # The destination policy refused a number stored before it (or behind its back): never
                # dialled, final for this number (the member's other number is tried), no trunk verdict.
                await self.desk.attempt_dialled(attempt_id, BARRED, None, AttemptOutcome.INVALID_NUMBER.value)
                await self._barred_alert(member.view.person_id, step.e164, dialled.barred)
                return
            if dialled.refused:
                # No channel was made, no phone called: no attempt against the member. Stored first,
                # then nothing is dialled for a moment (the PBX is going away or not ready).
                await self.desk.attempt_dialled(attempt_id, NOT_PLACED, None, AttemptOutcome.INTERRUPTED.value)
                self._hold_off()
                return
            self._refused_s = 0.0
            if dialled.lost:
                # The call may be up: its number waits until Asterisk says it is gone.
                await self._outlive(attempt_id, adopted=False)
                return
            verdict = observe_dial(self.trunk, attempt_id, dial_record(dialled), self.limits.trunk, self.clock())
            self._set_trunk(verdict.watch)
            at_cap = dialled.cause == EDGE_CAP_CAUSE and not answered(dialled)
            # Refused by the farm's edge at the carrier's cap: congestion (a streak of them pauses delivery
            # like a carrier's 503s), never the member's failure; nothing is dialled for a moment.
            outcome = dialled_outcome(dialled) if verdict.charge and not at_cap else AttemptOutcome.INTERRUPTED.value
            if at_cap:
                self._hold_off()
            await self.desk.attempt_dialled(attempt_id, dial_record(dialled), dialled.cause, outcome)
            if verdict.uncharge:
                self._given_back.update(verdict.uncharge)
                given = await self.desk.uncharge(list(verdict.uncharge))
                log.warning("%d call(s) that failed on the trunk given back to their members", given)
            elif attempt_id in self._given_back:
                await self.desk.uncharge([attempt_id])  # its outcome was written after the give-back
            if answered(dialled):
                end = await self.calls.ended(attempt_id, self.limits.max_call_s)
                await self.desk.attempt_ended(attempt_id, end.flow_end)
        except asyncio.CancelledError:
            # Stopping: a call whose conversation already ended keeps its outcome (else the restart
            # would close it as interrupted and call the member again).
            end = self.calls.known_end(attempt_id)
            if end is not None:
                await asyncio.shield(self.desk.attempt_ended(attempt_id, end.flow_end))
            raise
        except Exception:
            log.exception("member call %s failed", attempt_id)
            await self.desk.attempt_ended(attempt_id, None, failed=True)
        finally:
            if self.trunk.probing == attempt_id:
                # A probe that told nothing (refused, lost, failed on our side): the next one may go.
                self.trunk = replace(self.trunk, probing=None)
            self.calls.release(attempt_id)
            self._live.pop(attempt_id, None)
            self._calls.pop(attempt_id, None)
            self._idle.pop(plan.campaign_id, None)  # its member may be due again: read it at the next pass
            self.wake()

    def _hold_off(self) -> None:
        """Dial nothing for a moment (Asterisk refused a call, or the edge was at the carrier's cap),
        doubling the pause at each refusal in a row up to ``refused_pause_max_s``."""
        self._refused_s = min(self.limits.refused_pause_max_s, max(self.limits.refused_pause_s, 2 * self._refused_s))
        self._refused_until = time.monotonic() + self._refused_s

    async def _barred_alert(self, person_id: int, e164: str, why: str) -> None:
        """Tell the admins (a ``security.alert`` audit row, and the log) that a stored number was barred."""
        log.warning("SECURITY: member %d's number %s refused at dial time: %s", person_id, mask(e164), why)
        await self.desk.tx(lambda s: audit.record(s, "system", "security.alert", f"person:{person_id}",
                                                  kind="destination-barred", number=mask(e164), why=why))

    async def _outlive(self, attempt_id: str, *, adopted: bool) -> None:
        """A call that may still be up (left by a previous process, or its outcome lost with AMI): wait
        until Asterisk says it is gone, let a key pressed on it arrive, then close it. Runs as the
        call's own task (it holds the call's channel and number)."""
        try:
            end = await self._gone(attempt_id)
            await asyncio.sleep(self.limits.settle_s)
            outcome = await self.desk.open_call_ended(attempt_id, end.flow_end if end is not None else None)
            log.info("call %s (left up) ended: %s", attempt_id, outcome.value)
        finally:
            if adopted:  # the call's own task: nobody else releases it
                self.calls.release(attempt_id)
                live = self._live.pop(attempt_id, None)
                if live is not None:
                    self._idle.pop(live[0], None)
                self._calls.pop(attempt_id, None)
                self.wake()

    async def _gone(self, attempt_id: str) -> CallEnd | None:
        """Wait until the call is no longer up in Asterisk; its end if this process saw it."""
        deadline = time.monotonic() + self.limits.max_call_s
        while time.monotonic() < deadline:
            if not self.calls.ready:
                await asyncio.sleep(0.5)
                continue
            live = await self.calls.live_call_ids()
            if live is None:
                await asyncio.sleep(self.limits.interrupted_grace_s)  # Asterisk cannot tell
                return self.calls.known_end(attempt_id)
            if not _up(attempt_id, live):
                return self.calls.known_end(attempt_id)
            end = await self.calls.ended(attempt_id, 5.0)  # its hang-up, or its flow's end
            if not end.timed_out:
                return end
        log.warning("call %s still up after %.0f s; no longer waited for", attempt_id, self.limits.max_call_s)
        return None


def _marks(heads: list[CampaignHead]) -> frozenset[tuple[int, int]]:
    """(campaign, round) of the campaigns to dial: what changes when a campaign is started, stopped or
    re-notified."""
    return frozenset((h.campaign_id, h.round) for h in heads)


def _up(attempt_id: str, live: set[str]) -> bool:
    """True if the call's channel (or, for a Local channel, its other half) is in ``live``."""
    return attempt_id in live or f"{attempt_id}-2" in live
