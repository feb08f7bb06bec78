"""BINFOON 2 decisions: who to dial next, on which number, when; pure functions of data and a clock.

Rules (RELIABILITY B4-B6):
- a member who confirmed is never dialled again;
- busy / no answer / rejected / congestion / failed: retried on the same number by the urgency's
  policy (count, delay, back-off), then the second number;
- an invalid number goes to the second number at once;
- answered but hung up before confirming: retried by its own policy, on the same number;
- left on an answering machine: done (the message was delivered whole);
- a call cut by a crash (interrupted) is dialled again at once and costs no retry;
- a number shared with other members of the campaign has one history: their calls on it count as
  this member's tries of it (retries are not spent twice, a machine that has the message is not
  called again), and while one of them is up the member waits (B4);
- every member ends in exactly one final outcome from a closed set;
- a re-notify starts a new round of the campaign: only that round's attempts count for retries
  (attempt numbers keep counting up over the rounds).
Quiet hours, personal windows and holiday pauses only ever delay preventive messages.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ivr.domain.vocabulary import AttemptOutcome as O

if TYPE_CHECKING:
    from ivr.config import Settings

#: Dial outcomes after which the same number is tried again (policy permitting).
TRANSIENT = frozenset({O.BUSY, O.NO_ANSWER, O.REJECTED, O.CONGESTION, O.FAILED})
#: Final outcomes a member can end in.
FINAL = frozenset(O) - {O.INTERRUPTED}
#: Outcomes after which nothing more is tried (the message is on a machine, or the campaign is over).
CLOSED = frozenset({O.VOICEMAIL, O.CANCELLED, O.EXPIRED})
#: Outcomes that are no try of a line (a crash cut the call, or the campaign ended before it).
NOT_A_TRY = frozenset({O.INTERRUPTED, O.CANCELLED, O.EXPIRED})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a member is called again."""

    retries: int = 1
    retry_after_s: float = 300.0
    backoff: float = 1.0
    no_key_retries: int = 1
    no_key_retry_after_s: float = 300.0


@dataclass(frozen=True)
class AttemptView:
    """One call attempt as the policy sees it (``outcome`` ``None``: still in flight).

    ``outcome`` is an ``AttemptOutcome``; its stored string compares equal to it (a ``StrEnum``),
    so either may be given.
    """

    attempt_no: int
    rank: str
    outcome: O | str | None
    ended_at: dt.datetime | None


@dataclass(frozen=True)
class MemberView:
    """A member of a campaign: their numbers in dialling order and the attempts so far."""

    person_id: int
    numbers: tuple[tuple[str, str], ...]
    attempts: tuple[AttemptView, ...] = ()
    confirmed: bool = False
    #: Other members' attempts on this member's numbers in the same campaign, as (e164, attempt).
    shared: tuple[tuple[str, AttemptView], ...] = ()
    #: The highest attempt number of earlier rounds (a re-notify starts a new round): ``attempts`` hold
    #: only this round's, but numbers keep counting up (one row per campaign, member and number).
    earlier_attempt_no: int = 0


class Verdict(enum.Enum):
    """What to do with a member now."""

    DIAL = "dial"            # dial ``e164`` as attempt ``attempt_no`` at ``at`` (now or later)
    IN_FLIGHT = "in_flight"  # a call is going on
    DONE = "done"            # nothing more: ``final`` says how it ended


@dataclass(frozen=True)
class Next:
    """The decision for one member."""

    verdict: Verdict
    rank: str = ""
    e164: str = ""
    attempt_no: int = 0
    at: dt.datetime | None = None
    #: The final outcome (an ``AttemptOutcome``'s value) when ``verdict`` is DONE.
    final: str = ""


def next_step(member: MemberView, policy: RetryPolicy, now: dt.datetime) -> Next:
    """What to do with ``member`` at ``now``."""
    if member.confirmed:
        return Next(Verdict.DONE, final=O.CONFIRMED.value)
    attempts = sorted(member.attempts, key=lambda a: a.attempt_no)
    if any(a.outcome is None for a in attempts):
        return Next(Verdict.IN_FLIGHT)
    next_no = max([a.attempt_no for a in attempts] + [member.earlier_attempt_no]) + 1
    if attempts and attempts[-1].outcome in CLOSED:
        return Next(Verdict.DONE, final=str(attempts[-1].outcome))
    if not member.numbers:
        return Next(Verdict.DONE, final=O.INVALID_NUMBER.value)
    numbers = dict(member.numbers)
    if attempts and attempts[-1].outcome == O.INTERRUPTED and attempts[-1].rank in numbers:
        rank = attempts[-1].rank
        return Next(Verdict.DIAL, rank, numbers[rank], next_no, now)
    seen: list[AttemptView] = []
    for rank, e164 in member.numbers:
        theirs = [a for number, a in member.shared if number == e164]
        if any(a.outcome is None for a in theirs):
            return Next(Verdict.IN_FLIGHT)  # the line is in use by a call for a member sharing it
        # A confirmation on a shared line confirms this member too (the desk stores it): here it
        # can only be one this member was not part of, so it counts as heard, not as confirmed.
        theirs = [AttemptView(a.attempt_no, rank, O.ANSWERED_NO_KEY if a.outcome == O.CONFIRMED
                              else a.outcome, a.ended_at) for a in theirs if a.outcome not in NOT_A_TRY]
        tries = sorted([a for a in attempts if a.rank == rank and a.outcome != O.INTERRUPTED] + theirs,
                       key=_in_time)
        seen.extend(tries)
        if not tries:
            return Next(Verdict.DIAL, rank, e164, next_no, now)
        last = tries[-1]
        if last.outcome == O.VOICEMAIL:
            # The household's machine has it (a sharer's call).
            return Next(Verdict.DONE, final=O.VOICEMAIL.value)
        if last.outcome == O.INVALID_NUMBER:
            continue
        if last.outcome == O.ANSWERED_NO_KEY:
            no_keys = sum(1 for a in tries if a.outcome == O.ANSWERED_NO_KEY)
            if no_keys <= policy.no_key_retries:
                return Next(Verdict.DIAL, rank, e164, next_no, _after(last, policy.no_key_retry_after_s, now))
            return Next(Verdict.DONE, final=O.ANSWERED_NO_KEY.value)
        failures = sum(1 for a in tries if a.outcome in TRANSIENT)
        if failures <= policy.retries:
            delay = policy.retry_after_s * policy.backoff ** max(0, failures - 1)
            return Next(Verdict.DIAL, rank, e164, next_no, _after(last, delay, now))
    if member.shared and seen:
        return Next(Verdict.DONE, final=str(sorted(seen, key=_in_time)[-1].outcome))
    final = next((a.outcome for a in reversed(attempts) if a.outcome != O.INTERRUPTED), O.FAILED)
    return Next(Verdict.DONE, final=str(final))


_LONG_AGO = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def _in_time(attempt: AttemptView) -> tuple[dt.datetime, int]:
    """Attempts on one line in the order they ended (a member's own attempt numbers break ties)."""
    return (attempt.ended_at or _LONG_AGO, attempt.attempt_no)


def _after(last: AttemptView, delay_s: float, now: dt.datetime) -> dt.datetime:
    base = last.ended_at or now
    return base + dt.timedelta(seconds=delay_s)


# -- quiet hours --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A daily local window [start, end) as times of day; it may cross midnight."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> "Window":
        """``"08:00-21:00"``; raises ``ValueError`` with the reason."""
        try:
            start, end = (dt.time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f"{text!r} is not a time window like 08:00-21:00") from None
        if start == end:
            raise ValueError(f"{text!r} is an empty window")
        return cls(start, end)

    def contains(self, t: dt.time) -> bool:
        """True when the time of day ``t`` is inside the window."""
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


def next_allowed(now_local: dt.datetime, windows: list[Window], pause: tuple[dt.date, dt.date] | None = None,
                 step_min: int = 1) -> dt.datetime:
    """The first local time at or after ``now_local`` inside every window and outside the pause."""
    t = now_local
    for _ in range(3 * 24 * 60 // step_min + 1 + (0 if pause is None else (pause[1] - pause[0]).days * 1440)):
        in_pause = pause is not None and pause[0] <= t.date() <= pause[1]
        if in_pause:
            assert pause is not None
            t = dt.datetime.combine(pause[1] + dt.timedelta(days=1), dt.time(0), tzinfo=t.tzinfo)
            continue
        if all(w.contains(t.timetz().replace(tzinfo=None)) for w in windows):
            return t
        # Jump to the next minute boundary, then walk minute by minute (windows are minute-precise).
        t = (t + dt.timedelta(minutes=step_min)).replace(second=0, microsecond=0)
    raise ValueError("the windows never overlap: no time is allowed")


# -- the trunk: is it down? --------------------------------------------------------------------
#: Dial outcomes that show the trunk carried the call to a phone (or the network knew the number).
REACHED = frozenset({"answered", "busy", "no_answer", "invalid_number"})
#: Dial outcomes a carrier that is down answers to every call (503 Service Unavailable, no circuit).
TRUNK_TROUBLE = frozenset({"congestion"})
#: Registration states (Asterisk's ``Registry`` event) in which the trunk carries no call.
REGISTRATION_DOWN = frozenset({"rejected", "unregistered", "failed"})


@dataclass(frozen=True)
class TrunkRules:
    """When the trunk counts as down, and how soon a probe call tries it again."""

    #: This many calls in a row failing with congestion / 503, none reaching a phone: the trunk is down.
    congestion_streak: int = 5
    #: The first probe after a pause, then doubled up to ``probe_max_s``.
    probe_after_s: float = 5.0
    probe_max_s: float = 60.0


@dataclass(frozen=True)
class TrunkWatch:
    """What the dialer knows of the trunk (pure state; ``observe_dial``/``observe_registration`` move it).

    Up: ``down_since`` is ``None``; ``streak`` holds the attempts failing with congestion in a row.
    Down: nothing is dialled but one probe call at ``probe_at``; ``reason`` says why (shown to people).
    """

    streak: tuple[str, ...] = ()
    down_since: dt.datetime | None = None
    reason: str = ""
    #: The registration is refused: only a ``Registered`` event (or a probe that reaches a phone) ends it.
    unregistered: bool = False
    probe_at: dt.datetime | None = None
    probe_s: float = 0.0
    #: The probe call in flight (its attempt id), if any.
    probing: str | None = None

    @property
    def down(self) -> bool:
        """True while the trunk is down (the campaigns are paused)."""
        return self.down_since is not None


@dataclass(frozen=True)
class DialVerdict:
    """What to do after a dialled call's outcome: the new watch, whether this attempt costs the member a
    try, and earlier attempts that must be given back (the streak that showed the trunk was down)."""

    watch: TrunkWatch
    charge: bool
    uncharge: tuple[str, ...] = ()


def _down(watch: TrunkWatch, reason: str, rules: TrunkRules, now: dt.datetime, *,
          unregistered: bool = False) -> TrunkWatch:
    probe_s = rules.probe_after_s if not watch.down else min(rules.probe_max_s, max(watch.probe_s, 1.0) * 2)
    return TrunkWatch(streak=(), down_since=watch.down_since or now, reason=reason,
                      unregistered=unregistered or watch.unregistered,
                      probe_at=now + dt.timedelta(seconds=probe_s), probe_s=probe_s, probing=None)


def observe_dial(watch: TrunkWatch, attempt_id: str, dial_outcome: str, rules: TrunkRules,
                 now: dt.datetime) -> DialVerdict:
    """A member call's dialling ended with ``dial_outcome``: is the trunk down or up again, and does this
    call count against the member?

    A call that reached a phone ends a pause (the trunk is back) and any streak. Congestion counts
    towards the streak; at ``congestion_streak`` in a row the trunk is down and the whole streak is
    given back to its members. While down, a failing call (the probe, or a call that was already
    ringing out) costs nobody a try. Other outcomes (``failed`` without a cause) decide nothing."""
    if dial_outcome in REACHED:
        if watch.down:
            return DialVerdict(TrunkWatch(), charge=True)
        return DialVerdict(replace(watch, streak=()), charge=True)
    probing = None if watch.probing == attempt_id else watch.probing
    if watch.down:
        if watch.probing == attempt_id:
            # The probe failed too: still down, the next probe later.
            return DialVerdict(_down(watch, watch.reason, rules, now), charge=False)
        return DialVerdict(replace(watch, probing=probing), charge=False)
    if dial_outcome in TRUNK_TROUBLE:
        streak = watch.streak + (attempt_id,)
        if len(streak) >= rules.congestion_streak:
            reason = f"carrier refuses every call: {len(streak)} calls in a row congestion/503"
            return DialVerdict(_down(watch, reason, rules, now), charge=False, uncharge=streak[:-1])
        return DialVerdict(replace(watch, streak=streak), charge=True)
    return DialVerdict(watch, charge=True)


def observe_registration(watch: TrunkWatch, status: str, rules: TrunkRules, now: dt.datetime) -> TrunkWatch:
    """The trunk's registration changed: refused or lost is down; registered ends a pause it caused."""
    state = status.strip().lower()
    if state in REGISTRATION_DOWN:
        return _down(watch, f"trunk registration {state}", rules, now, unregistered=True) \
            if not watch.down else replace(watch, unregistered=True, reason=f"trunk registration {state}")
    if state == "registered" and watch.down:
        return TrunkWatch()
    return watch


def may_dial(watch: TrunkWatch, now: dt.datetime) -> bool:
    """True if a member call may be placed now: the trunk is up, or a probe is due and none is out."""
    if not watch.down:
        return True
    return watch.probing is None and watch.probe_at is not None and now >= watch.probe_at


def probe_started(watch: TrunkWatch, attempt_id: str) -> TrunkWatch:
    """The call ``attempt_id`` is the probe of a down trunk (placed because ``may_dial`` allowed it)."""
    return replace(watch, probing=attempt_id) if watch.down else watch


def member_prompts(urgent: bool, drill: bool) -> dict[str, str]:
    """The prompts a member call plays around the recording (dialplan variable -> prompt id): a drill's
    every prompt says it is a test, so nobody takes it for a real alert."""
    if drill:
        return {"BINFOON_HEADER": "member_header_drill", "BINFOON_KEYS": "member_keys_drill",
                "BINFOON_THANKS": "member_thanks_drill"}
    return {"BINFOON_HEADER": "member_header_urgent" if urgent else "member_header_preventive",
            "BINFOON_KEYS": "member_keys", "BINFOON_THANKS": "member_thanks"}


def retry_policies(settings: "Settings") -> dict[bool, RetryPolicy]:
    """The retry policies by urgency (``True``: urgent) from the settings."""
    return {urgent: RetryPolicy(
        settings.urgent_retries if urgent else settings.preventive_retries,
        settings.urgent_retry_after_s if urgent else settings.preventive_retry_after_s,
        settings.retry_backoff, settings.no_key_retries, settings.no_key_retry_after_s) for urgent in (True, False)}
