"""Coordinator review decisions: pure functions of the message, the zone's policy and the clock.

- who is called, and in which waves (sequential: one coordinator a wave; parallel: all at once);
- what "forward later" means for the keys typed (minutes, or a time of day as HHMM);
- what happens when a whole round ended without a decision (urgent escalates, preventive waits).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Sequence, TypeVar

T = TypeVar("T")

#: Longest "forward later" delay typed as minutes (a day).
MAX_DELAY_MIN = 24 * 60


def waves(people: Sequence[T], parallel: bool) -> list[list[T]]:
    """The calls of one review round: each wave is dialled together, waves one after another."""
    if not people:
        return []
    return [list(people)] if parallel else [[p] for p in people]


def parse_later(digits: str, now_local: dt.datetime) -> dt.datetime | None:
    """When "forward later" delivers, from the keys typed; ``None`` if they mean no valid time.

    1 to 3 digits are minutes from now (1..1440); 4 digits are a time of day HHMM, today if it is
    still to come, else tomorrow. ``now_local`` is timezone-aware local time; so is the result.
    """
    if not digits.isdigit() or not 1 <= len(digits) <= 4:
        return None
    if len(digits) <= 3:
        minutes = int(digits)
        if not 1 <= minutes <= MAX_DELAY_MIN:
            return None
        return now_local + dt.timedelta(minutes=minutes)
    hour, minute = int(digits[:2]), int(digits[2:])
    if hour > 23 or minute > 59:
        return None
    day = now_local.date()
    # Wall-clock time in the zone (a DST change is handled by the tzinfo on the result).
    at = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=now_local.tzinfo)
    if at <= now_local:
        at = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(hour, minute), tzinfo=now_local.tzinfo)
    return at


class NextStep(enum.Enum):
    """What to do after a review round in which nobody decided."""

    CALL_APPROVERS = "call_approvers"
    AUTO_FORWARD = "auto_forward"
    WAIT = "wait"


@dataclass(frozen=True)
class RoundResult:
    """What the finished round tells the policy."""

    urgent: bool
    escalation: str        # the zone's Escalation value: auto_forward, police_approver or wait
    approvers_called: bool  # the round just finished was the approvers' round
    have_approvers: bool


def after_undecided_round(result: RoundResult) -> NextStep:
    """Urgent messages escalate as the zone says; preventive ones (and spent escalations) wait."""
    if not result.urgent:
        return NextStep.WAIT
    if result.escalation == "auto_forward":
        return NextStep.AUTO_FORWARD
    if result.escalation == "police_approver" and result.have_approvers and not result.approvers_called:
        return NextStep.CALL_APPROVERS
    if result.escalation == "police_approver" and not result.have_approvers:
        # No approver to call: an urgent alert must not sit unheard.
        return NextStep.AUTO_FORWARD
    return NextStep.WAIT
