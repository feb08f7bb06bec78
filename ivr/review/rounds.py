"""Review rounds: call a message's coordinators until one decides, else apply the zone's policy.

Rules:
- each call (review, notice, approval, escalation) is written before it is dialled (its id is the
  Originate ChannelId), and placed through the one outbound-call life cycle
  (``ivr.telephony.outbound``): it counts against the trunk's channels and ends exactly once;
- sequential zones call one coordinator after another in priority order, parallel zones all at
  once; a round stops at the first decision;
- a one-level BIN skips the review: the system decides (``via="one_level"``), delivery starts, then
  each coordinator gets ONE notice call (never retried: it asks for nothing, and the message is on
  their report line and in their log); a preventive message's notices wait for the end of the night;
  a notice not yet placed when the process stopped is placed at the next start (``resume_notices``);
- an urgent message that goes out without any review (one-level, or auto-forward) waits for a second
  police officer when the zone says so: approval rounds (the zone's approvers, then its officers,
  never the author); after the first round without an answer the author is told (until they answer);
  rounds go on every few minutes up to the zone's maximum; it is never sent unapproved;
- a round without a decision: urgent messages escalate as the zone says (auto-forward, or the
  police approvers), others wait and are reviewed again after ``retry_after_s`` (a persistent
  alarm, so a restart does not forget them); a preventive message is never rung about in quiet
  hours; after the zone's maximum of rounds the police are told (the author, else the zone's
  approvers, else its officers; audited once), and the message stays waiting for a coordinator's
  decision (the web console) or a cancellation;
- "told" is an answered escalation call: when nobody answers (or the process stops first) the call
  is made again after ``retry_after_s``, about a preventive message never in quiet hours;
- what to do is decided by ``ivr.review.policy`` from the database's state and the clock, so an
  alarm, a restart or the start-up sweep all resume where the message stands;
- one round at a time per message, in this process;
- a decision made here (the zone's policy) goes on like a coordinator's: to ``AfterDecision``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import zoneinfo
from dataclasses import dataclass, field
from typing import Callable

from ivr.config import Settings
from ivr.scheduler import AlarmClock
from ivr.review.policy import (
    NextStep, QuietHours, Route, RoundResult, Waiting, WaitStep, after_approval_round, after_undecided_round,
    after_waiting_round, at_round_start, route_of_submitted, tell_again_at, waves, without_review,
)
from ivr.review.store import (
    APPROVAL, ESCALATION, NOBODY_APPROVED, NOBODY_REVIEWED, NOTICE, ONE_LEVEL, REVIEW, AfterDecision, Contact,
    ReviewDesk, ReviewPlan,
)
from ivr.telephony.outbound import CallKind, OutboundCalls, answered
from ivr.domain.vocabulary import Decision, MessageStatus, Role

log = logging.getLogger(__name__)

#: The dialplan context an answered review call runs (it hands the call to ``coordinator_review``).
REVIEW_CONTEXT = "binfoon-review"
REVIEW_RETRY = "review"


@dataclass(frozen=True)
class RoundRules:
    """The settings the rounds obey: the night (local time) and how many rounds a waiting message gets."""

    quiet_hours: QuietHours = field(default_factory=lambda: QuietHours.parse("21:00-08:00"))
    tz: dt.tzinfo = zoneinfo.ZoneInfo("Europe/Brussels")
    #: ``review_max_rounds`` (a zone's ``police_zones.review_max_rounds`` wins).
    max_rounds: int = 6

    @classmethod
    def from_settings(cls, settings: Settings) -> RoundRules:
        """The rules from ``quiet_hours``, ``tz`` and ``review_max_rounds`` (validated at start-up)."""
        return cls(QuietHours.parse(settings.quiet_hours), settings.tz, settings.review_max_rounds)


class ReviewDispatcher:
    """Runs review rounds for submitted messages."""

    #: The longest a review conversation may take before the round stops waiting for it.
    MAX_CALL_S = 900.0
    #: A round that failed (the database, the PBX) is tried again after this (or ``retry_after_s``).
    FAILED_ROUND_RETRY_S = 60.0

    def __init__(self, desk: ReviewDesk, calls: OutboundCalls, alarms: AlarmClock, after: AfterDecision, *,
                 ring_timeout_s: float, retry_after_s: float, clock: Callable[[], dt.datetime],
                 rules: RoundRules | None = None) -> None:
        self.desk = desk
        self.calls = calls
        self.alarms = alarms
        self.after = after
        self.ring_timeout_s = ring_timeout_s
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.rules = rules or RoundRules()
        self._rounds: dict[int, asyncio.Task[None]] = {}

    def busy_with(self, message_id: int) -> bool:
        """True while a round for ``message_id`` runs."""
        task = self._rounds.get(message_id)
        return task is not None and not task.done()

    def start(self, message_id: int) -> None:
        """Start a review round for ``message_id`` unless one is running."""
        if self.busy_with(message_id):
            return
        task = asyncio.get_running_loop().create_task(self._guarded(message_id), name=f"review-{message_id}")
        self._rounds[message_id] = task

    async def wake(self, message_id: int) -> None:
        """The alarm of a waiting message: review it again."""
        self.start(message_id)

    async def resume_notices(self, since: dt.datetime) -> list[int]:
        """At start-up: the one-level messages decided since ``since`` whose coordinators are still owed
        a notice (the process stopped between the decision and the calls) get them now, the missing
        ones only (a preventive message's: at the end of the night). Returns those messages."""
        owed = await self.desk.pending_notices(since)
        for message_id in owed:
            log.info("message %d: notices not placed before the stop are placed now", message_id)
            self.start(message_id)
        return owed

    async def stop(self) -> None:
        """Cancel running rounds (their calls are in the database; start-up resumes them)."""
        for task in self._rounds.values():
            task.cancel()
        await asyncio.gather(*self._rounds.values(), return_exceptions=True)
        self._rounds.clear()

    async def _guarded(self, message_id: int) -> None:
        try:
            await self.run_round(message_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not at once (a round that fails after calling people must not call them every second):
            # at its retry alarm, within a minute.
            retry_s = min(self.retry_after_s, self.FAILED_ROUND_RETRY_S)
            log.exception("review of message %d failed; it is tried again in %.0f s", message_id, retry_s)
            try:
                self.alarms.wake_at(REVIEW_RETRY, message_id, self.clock() + dt.timedelta(seconds=retry_s))
            except Exception:
                log.exception("no retry alarm for message %d; the next start reviews it again", message_id)

    async def run_round(self, message_id: int) -> None:
        """What the message needs now: its review round (then the policy if nobody decided), its
        second approval, its notices, or its alarm."""
        plan = await self.desk.review_plan(message_id)
        self.alarms.cancel(REVIEW_RETRY, message_id)
        if plan.status is MessageStatus.AWAITING_APPROVAL:
            await self._approval_round(plan)
            return
        if plan.decided:
            await self._notices(plan)
            return
        if plan.status not in (MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS):
            return
        route = route_of_submitted(plan.one_level, plan.urgent, plan.second_approver)
        if route is not Route.REVIEW:
            await self._without_review(plan, route, ONE_LEVEL)
            return
        step, at = at_round_start(self._waiting(plan, plan.review_rounds), self.clock(), self.rules.quiet_hours,
                                  self.rules.tz)
        await self.desk.to_coordinators(message_id)
        if await self._waiting_step(plan, step, at, plan.review_rounds):
            return
        if await self._call_round(plan, plan.coordinators):
            return
        approvers_called = False
        while True:
            step_after = after_undecided_round(RoundResult(
                urgent=plan.urgent, escalation=plan.escalation.value, approvers_called=approvers_called,
                have_approvers=bool(plan.approvers)))
            log.info("message %d: nobody decided; next step %s", message_id, step_after.value)
            if step_after is NextStep.CALL_APPROVERS:
                approvers_called = True
                if await self._call_round(plan, plan.approvers):
                    return
                continue
            if step_after is NextStep.AUTO_FORWARD:
                await self._without_review(plan, without_review(plan.urgent, plan.second_approver), "escalation")
                return
            step, at = after_waiting_round(self._waiting(plan, plan.review_rounds + 1), self.clock(),
                                           self.retry_after_s, self.rules.quiet_hours, self.rules.tz)
            await self._waiting_step(plan, step, at, plan.review_rounds + 1)
            return

    def _waiting(self, plan: ReviewPlan, rounds_done: int) -> Waiting:
        return Waiting(urgent=plan.urgent, rounds_done=rounds_done,
                       max_rounds=plan.zone_max_rounds or self.rules.max_rounds, police_told=plan.police_told)

    async def _waiting_step(self, plan: ReviewPlan, step: WaitStep, at: dt.datetime, rounds: int) -> bool:
        """Act on a waiting message's step (``rounds`` dialled so far); False means: call the round now."""
        if step is WaitStep.CALL:
            return False
        if step is WaitStep.WAIT:
            log.info("message %d: next review round at %s", plan.message_id, at.isoformat(timespec="seconds"))
            self.alarms.wake_at(REVIEW_RETRY, plan.message_id, at)
        elif step is WaitStep.TELL_POLICE:
            log.warning("message %d: nobody reviewed it after %d rounds; the police are told", plan.message_id, rounds)
            await self.desk.police_told(plan.message_id, NOBODY_REVIEWED, rounds, plan.police_to_tell)
            if not await self._tell_police(plan):
                self._tell_again(plan)
        return True

    def _tell_again(self, plan: ReviewPlan) -> None:
        """Nobody answered the call telling the police: its alarm (the call is made again then)."""
        at = tell_again_at(plan.urgent, self.clock(), self.retry_after_s, self.rules.quiet_hours, self.rules.tz)
        log.warning("message %d: nobody answered the police's call; tried again at %s", plan.message_id,
                    at.isoformat(timespec="seconds"))
        self.alarms.wake_at(REVIEW_RETRY, plan.message_id, at)

    async def _without_review(self, plan: ReviewPlan, route: Route, via: str) -> None:
        """Straight to the members (the system's decision, then the notices), or wait for a second officer."""
        if route is Route.SECOND_APPROVAL:
            if await self.desk.await_approval(plan.message_id, via):
                await self._approval_round(await self.desk.review_plan(plan.message_id))
            return
        decided = await self.desk.decide(plan.message_id, Decision.FORWARD_NOW, person_id=None,
                                         review_call_id=None, via=via)
        if decided is None:
            return
        self.after.decided(decided)
        if plan.one_level:
            await self._notices(await self.desk.review_plan(plan.message_id))

    async def _notices(self, plan: ReviewPlan) -> None:
        """One notice call to each coordinator not told yet (preventive: not before the night ends)."""
        due = plan.notices_due
        if not due:
            return
        now = self.clock()
        at = now if plan.urgent else self.rules.quiet_hours.first_call_at(now, self.rules.tz)
        if at > now:
            self.alarms.wake_at(REVIEW_RETRY, plan.message_id, at)
            return
        # All at once: they ask for nothing, and each is one call, never retried.
        await asyncio.gather(*(self._call(plan, contact, NOTICE, plan.next_round) for contact in due))

    async def _approval_round(self, plan: ReviewPlan) -> None:
        """Call for a second police officer; nobody approved: tell the author (until somebody answers),
        try again later."""
        if plan.status is not MessageStatus.AWAITING_APPROVAL:
            return
        max_rounds = plan.zone_max_rounds or self.rules.max_rounds
        if plan.second_approvers and plan.approval_rounds < max(1, max_rounds):
            # The zone's police approvers first, then its officers (each group in the zone's review mode).
            approvers = tuple(c for c in plan.second_approvers if c.role is Role.POLICE_APPROVER)
            officers = tuple(c for c in plan.second_approvers if c.role is not Role.POLICE_APPROVER)
            for wave in waves(approvers, plan.parallel) + waves(officers, plan.parallel):
                await asyncio.gather(*(self._call(plan, c, APPROVAL, plan.next_round) for c in wave))
                after = await self.desk.review_plan(plan.message_id)
                if after.status is not MessageStatus.AWAITING_APPROVAL:
                    await self._notices(after)  # approved: the one-level BIN's coordinators are told
                    return
            rounds_done = plan.approval_rounds + 1
        else:
            rounds_done = max_rounds  # nobody to call (or no rounds left): no more rounds
        step = after_approval_round(rounds_done, max_rounds, plan.author_told_unapproved, self.clock(),
                                    self.retry_after_s)
        log.warning("message %d: no second police officer approved it (%d rounds)", plan.message_id, rounds_done)
        if step.tell_author:
            await self.desk.police_told(plan.message_id, NOBODY_APPROVED, rounds_done, plan.police_to_tell)
            if not await self._tell_police(await self.desk.review_plan(plan.message_id)) and step.retry_at is None:
                self._tell_again(plan)  # no approval round left to tell them at: the call alone again
        if step.retry_at is not None:
            self.alarms.wake_at(REVIEW_RETRY, plan.message_id, step.retry_at)

    async def _tell_police(self, plan: ReviewPlan) -> bool:
        """Call the police to tell (the author first): one after another until one answers; False if
        nobody did (they were not told)."""
        for contact in plan.police_to_tell:
            if await self._call(plan, contact, ESCALATION, plan.next_round):
                return True
        return False

    async def _call_round(self, plan: ReviewPlan, people: tuple[Contact, ...]) -> bool:
        for wave in waves(people, plan.parallel):
            # Night fell during a sequential preventive round: nobody more is rung until morning.
            if not plan.urgent and self.rules.quiet_hours.first_call_at(self.clock(), self.rules.tz) > self.clock():
                return False
            await asyncio.gather(*(self._call(plan, contact, REVIEW, plan.next_round) for contact in wave))
            if (await self.desk.review_plan(plan.message_id)).decided:
                return True
        return False

    async def _call(self, plan: ReviewPlan, contact: Contact, purpose: str = REVIEW, round_no: int = 0) -> bool:
        """One call through the outbound life cycle, written first; True if it was answered."""
        call_id = await self.desk.new_review_call(plan.message_id, contact, round_no or plan.next_round, purpose)
        await self.calls.acquire(call_id, CallKind.REVIEW)
        try:
            dialled = await self.calls.dial(call_id, contact.e164, context=REVIEW_CONTEXT,
                                            variables={"BINFOON_REVIEW": call_id},
                                            ring_timeout_s=self.ring_timeout_s)
            await self.desk.review_call_dialled(call_id, dialled.outcome.value, dialled.cause)
            if answered(dialled):
                await self.calls.ended(call_id, self.MAX_CALL_S)
                await self.desk.review_call_ended(call_id)
                return True
            return False
        finally:
            self.calls.release(call_id)
