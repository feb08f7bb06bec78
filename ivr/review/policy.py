"""Coordinator review decisions: pure functions of the message, the zone's policy and the clock.

- who is called, and in which waves (sequential: one coordinator a wave; parallel: all at once);
- what "forward later" means for the keys typed (minutes, or a time of day as HHMM);
- what happens when a whole round ended without a decision (urgent escalates, preventive waits);
- where a message goes without review (one-level BINs, the second approver: ``ivr.domain.routing``);
- when a waiting message is reviewed again: never in quiet hours for a preventive message, and not
  after the zone's last round (then the police are told, and the message stays waiting);
- "told" means an escalation call was answered: a call nobody answered is made again after
  ``retry_after_s`` (a preventive message's never in quiet hours, like its rounds);
- a second approver is looked for in rounds too; the author is told after the first round without one.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Sequence, TypeVar

from ivr.domain.routing import Route, route_of_submitted, without_review

__all__ = [
    "MAX_DELAY_MIN", "APPROVAL_RETRY_S", "Route", "route_of_submitted", "without_review", "waves", "parse_later",
    "NextStep", "RoundResult", "after_undecided_round", "QuietHours", "Waiting", "WaitStep", "at_round_start",
    "after_waiting_round", "ApprovalStep", "after_approval_round", "tell_again_at",
]

T = TypeVar("T")

#: A second approver is looked for again this often at most (an urgent message: not the review's 15 minutes).
APPROVAL_RETRY_S = 300.0

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


@dataclass(frozen=True)
class QuietHours:
    """The zone's night, local time ``[start, end)``, crossing midnight or not: no coordinator is rung
    then for a preventive message."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> "QuietHours":
        """``"21:00-08:00"`` (the setting ``quiet_hours``); ``ValueError`` with the reason."""
        try:
            start, end = (dt.time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f"{text!r} is not a time window like 21:00-08:00") from None
        if start == end:
            raise ValueError(f"{text!r} is an empty window")
        return cls(start, end)

    def contains(self, local: dt.time) -> bool:
        """True when the local time of day ``local`` is inside the quiet hours."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def first_call_at(self, at: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
        """``at`` (aware) if it is outside the quiet hours, else the end of those quiet hours (UTC).

        The end is a wall-clock time in ``tz`` on the right day, so a DST change in the night moves
        it with the clocks (07:00 stays 07:00 local; the UTC instant differs by the hour)."""
        local = at.astimezone(tz)
        if not self.contains(local.time().replace(tzinfo=None)):
            return at
        day = local.date()
        if self.start > self.end and local.time().replace(tzinfo=None) >= self.start:
            day += dt.timedelta(days=1)  # in the evening part: the night ends tomorrow morning
        end = dt.datetime.combine(day, self.end, tzinfo=tz)
        return end.astimezone(dt.timezone.utc)


@dataclass(frozen=True)
class Waiting:
    """A message waiting for its coordinators' review, as the next round sees it."""

    urgent: bool
    #: Review rounds already dialled for it (each a round of calls to its coordinators).
    rounds_done: int
    #: ``police_zones.review_max_rounds`` or the setting ``review_max_rounds``.
    max_rounds: int
    #: The police were told that nobody reviewed it (an escalation call about it was answered).
    police_told: bool


class WaitStep(enum.Enum):
    """What a waiting message needs now."""

    CALL = "call"              # a review round now
    WAIT = "wait"              # its alarm, at the time given
    TELL_POLICE = "tell_police"  # the rounds are spent: the author (or the zone's police) is told
    NOTHING = "nothing"        # spent and told: it waits for a coordinator's decision on the web


def _spent(w: Waiting, now: dt.datetime, quiet: QuietHours, tz: dt.tzinfo) -> tuple[WaitStep, dt.datetime] | None:
    if w.rounds_done < max(1, w.max_rounds):
        return None
    if w.police_told:
        return WaitStep.NOTHING, now
    # Telling the police is a call too: about a preventive message, never in the night.
    at = now if w.urgent else quiet.first_call_at(now, tz)
    return (WaitStep.TELL_POLICE, now) if at <= now else (WaitStep.WAIT, at)


def at_round_start(w: Waiting, now: dt.datetime, quiet: QuietHours, tz: dt.tzinfo) -> tuple[WaitStep, dt.datetime]:
    """Before a review round (first or again): call now, or wait for the end of the night (preventive
    only: an urgent message rings whenever), or the rounds are spent (the police are told, not in the
    night either for a preventive message)."""
    spent = _spent(w, now, quiet, tz)
    if spent is not None:
        return spent
    at = now if w.urgent else quiet.first_call_at(now, tz)
    return (WaitStep.CALL, now) if at <= now else (WaitStep.WAIT, at)


def after_waiting_round(w: Waiting, now: dt.datetime, retry_after_s: float, quiet: QuietHours,
                        tz: dt.tzinfo) -> tuple[WaitStep, dt.datetime]:
    """A round ended without a decision and the message waits (``w.rounds_done`` counts that round):
    the next round after ``retry_after_s``, moved out of the night for a preventive message; or, after
    the last round, the police are told (a preventive message's: at the end of the night)."""
    spent = _spent(w, now, quiet, tz)
    if spent is not None:
        return spent
    at = now + dt.timedelta(seconds=retry_after_s)
    if not w.urgent:
        at = quiet.first_call_at(at, tz)
    return WaitStep.WAIT, at


@dataclass(frozen=True)
class ApprovalStep:
    """What follows a round in which no second police officer approved (or rejected) the message."""

    tell_author: bool            # the author has not yet heard (an answered call) that nobody approved
    retry_at: dt.datetime | None  # the next approval round; ``None``: no more (the message stays waiting)


def after_approval_round(rounds_done: int, max_rounds: int, author_told: bool, now: dt.datetime,
                         retry_after_s: float) -> ApprovalStep:
    """Safe and simple: an urgent message without review never goes out unapproved. The author is told
    after the first round without a second approver (they can find a colleague at once); rounds go on
    every ``APPROVAL_RETRY_S`` (at most ``retry_after_s``), day and night (it is urgent), up to the
    zone's maximum of rounds; then it stays waiting (a police approver may still approve it later)."""
    retry: dt.datetime | None = None
    if rounds_done < max(1, max_rounds):
        retry = now + dt.timedelta(seconds=min(APPROVAL_RETRY_S, retry_after_s))
    return ApprovalStep(tell_author=not author_told, retry_at=retry)


def tell_again_at(urgent: bool, now: dt.datetime, retry_after_s: float, quiet: QuietHours,
                  tz: dt.tzinfo) -> dt.datetime:
    """Nobody answered the call telling the police (nobody reviewed, or nobody approved): it is made
    again after ``retry_after_s``, about a preventive message not before the night ends."""
    at = now + dt.timedelta(seconds=retry_after_s)
    return at if urgent else quiet.first_call_at(at, tz)
