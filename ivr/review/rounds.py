"""Review rounds: call a message's coordinators until one decides, else apply the zone's policy.

Rules:
- each review call is written before it is dialled (its id is the Originate ChannelId), and placed
  through the one outbound-call life cycle (``ivr.telephony.outbound``): it counts against the
  trunk's channels and ends exactly once;
- sequential zones call one coordinator after another in priority order, parallel zones all at
  once; a round stops at the first decision;
- a round without a decision: urgent messages escalate as the zone says (auto-forward, or the
  police approvers), preventive ones wait and are reviewed again after ``retry_after_s`` (a
  persistent alarm, so a restart does not forget them);
- one round at a time per message, in this process;
- a decision made here (the zone's policy) goes on like a coordinator's: to ``AfterDecision``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Callable

from ivr.scheduler import AlarmClock
from ivr.review.policy import NextStep, RoundResult, after_undecided_round, waves
from ivr.review.store import AfterDecision, Contact, ReviewDesk, ReviewPlan
from ivr.telephony.outbound import CallKind, OutboundCalls, answered
from ivr.domain.vocabulary import Decision, MessageStatus

log = logging.getLogger(__name__)

#: The dialplan context an answered review call runs (it hands the call to ``coordinator_review``).
REVIEW_CONTEXT = "binfoon-review"
REVIEW_RETRY = "review"


class ReviewDispatcher:
    """Runs review rounds for submitted messages."""

    #: The longest a review conversation may take before the round stops waiting for it.
    MAX_CALL_S = 900.0
    #: A round that failed (the database, the PBX) is tried again after this (or ``retry_after_s``).
    FAILED_ROUND_RETRY_S = 60.0

    def __init__(self, desk: ReviewDesk, calls: OutboundCalls, alarms: AlarmClock, after: AfterDecision, *,
                 ring_timeout_s: float, retry_after_s: float, clock: Callable[[], dt.datetime]) -> None:
        self.desk = desk
        self.calls = calls
        self.alarms = alarms
        self.after = after
        self.ring_timeout_s = ring_timeout_s
        self.retry_after_s = retry_after_s
        self.clock = clock
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
        """One review round, then the policy if nobody decided."""
        plan = await self.desk.review_plan(message_id)
        if plan.decided or plan.status not in (MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS):
            return
        self.alarms.cancel(REVIEW_RETRY, message_id)
        await self.desk.to_coordinators(message_id)
        if await self._call_round(plan, plan.coordinators):
            return
        approvers_called = False
        while True:
            step = after_undecided_round(RoundResult(
                urgent=plan.urgent, escalation=plan.escalation.value, approvers_called=approvers_called,
                have_approvers=bool(plan.approvers)))
            log.info("message %d: nobody decided; next step %s", message_id, step.value)
            if step is NextStep.CALL_APPROVERS:
                approvers_called = True
                if await self._call_round(plan, plan.approvers):
                    return
                continue
            if step is NextStep.AUTO_FORWARD:
                decided = await self.desk.decide(message_id, Decision.FORWARD_NOW, person_id=None,
                                                 review_call_id=None, via="escalation")
                if decided is not None:
                    self.after.decided(decided)
                return
            at = self.clock() + dt.timedelta(seconds=self.retry_after_s)
            self.alarms.wake_at(REVIEW_RETRY, message_id, at)
            return

    async def _call_round(self, plan: ReviewPlan, people: tuple[Contact, ...]) -> bool:
        for wave in waves(people, plan.parallel):
            await asyncio.gather(*(self._call(plan, contact) for contact in wave))
            if (await self.desk.review_plan(plan.message_id)).decided:
                return True
        return False

    async def _call(self, plan: ReviewPlan, contact: Contact) -> None:
        call_id = await self.desk.new_review_call(plan.message_id, contact, plan.next_round)
        await self.calls.acquire(call_id, CallKind.REVIEW)
        try:
            dialled = await self.calls.dial(call_id, contact.e164, context=REVIEW_CONTEXT,
                                            variables={"BINFOON_REVIEW": call_id},
                                            ring_timeout_s=self.ring_timeout_s)
            await self.desk.review_call_dialled(call_id, dialled.outcome.value, dialled.cause)
            if answered(dialled):
                await self.calls.ended(call_id, self.MAX_CALL_S)
                await self.desk.review_call_ended(call_id)
        finally:
            self.calls.release(call_id)
