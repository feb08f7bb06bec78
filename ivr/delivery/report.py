"""Campaign progress and reports: who confirmed, who did not, every attempt.

The state of each member is derived from the same data and the same policy the dialer uses
(``ivr.delivery.policy.next_step``), so a report can never disagree with what the dialer does; how
each state is reported (``CATEGORY``, ``LIVE_STATES``, ``FINAL_STATES``) is ``ivr.delivery.states``' table.
A stopped campaign (status "stopped", with who and when) adds ``STOPPED_STATES``: a member still in
a call at the stop, one never called, one whose retries the stop ended; a member whose delivery
was over keeps its state.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ivr.delivery.members import Member, campaign_members
from ivr.delivery.outcome import placed
from ivr.delivery.policy import RetryPolicy, Verdict, next_step
from ivr.delivery.states import FINAL_STATES, LIVE_STATES, category
from ivr.delivery.store import delivery_pause
from ivr.domain.csvsafe import safe_cell
from ivr.domain.phone import mask
from storage import audit
from storage.db import session_scope
from storage.models import CallAttempt, Campaign, Confirmation, Person
from ivr.domain.vocabulary import AttemptOutcome, AttemptStatus, CampaignStatus

#: How ``campaign watch`` names the live states (what the issue calls them).
STATE_LABELS = {"ringing": "dialing/ringing", "waiting_retry": "waiting for retry",
                "answering_machine": "answering machine", "answered_no_key": "answered, no key",
                "no_answer": "no answer"}
#: States only a stopped campaign has (final: nothing more happens to these members).
STOPPED_STATES = ("in_call_at_stop", "not_called", "stopped")
STATE_LABELS.update({"in_call_at_stop": "in a call at the stop", "not_called": "never called (stopped)",
                     "stopped": "not reached (stopped)"})
#: Columns of the attempts CSV: one row per call placed.
ATTEMPT_COLUMNS = ["person_id", "name", "number", "attempt_no", "rank", "started", "answered", "ended", "outcome",
                   "dial_outcome", "hangup_cause", "amd"]


@dataclass(frozen=True)
class MemberLine:
    """One member in a report."""

    person_id: int
    name: str
    number: str
    state: str
    attempts: int
    confirmed_at: dt.datetime | None
    #: How the confirmation came in: ``call`` (a key on our call) or e.g. ``callback-unverified`` (the
    #: member's caller ID on the call-back line, which a spoofer can fake): a report must say which.
    confirmed_via: str = ""
    #: The member had a call up when the campaign was stopped (it finished its sentence).
    in_call_at_stop: bool = False


@dataclass(frozen=True)
class AttemptLine:
    """One call placed to a member: when, on which number, and how it ended."""

    person_id: int
    name: str
    number: str
    attempt_no: int
    rank: str
    started: dt.datetime | None
    answered: dt.datetime | None
    ended: dt.datetime | None
    #: The attempt's final outcome (empty while the call is up).
    outcome: str
    #: How dialling ended (answered, busy, no_answer, ...), and the Q.850 hang-up cause if one came.
    dial_outcome: str
    hangup_cause: int | None
    #: The answering machine detector's verdict on an answered call (HUMAN, MACHINE, NOTSURE).
    amd: str


@dataclass
class CampaignReport:
    """A campaign's progress (or final report)."""

    campaign_id: int
    message_id: int
    status: str
    members: list[MemberLine] = field(default_factory=list)
    #: Calls placed (attempts that never reached Asterisk, ``not_placed``, are no call and not counted).
    attempts: int = 0
    #: Attempts Asterisk never got (it was shutting down, AMI was away): at no member's cost.
    not_placed: int = 0
    #: Why delivery is paused now (the trunk is down), with since when; ``None`` while it runs.
    paused: str | None = None
    #: Every call placed, by member then attempt number.
    attempt_lines: list[AttemptLine] = field(default_factory=list)
    #: Calls placed to members after they had confirmed (must stay 0).
    calls_after_confirming: int = 0
    #: When and by whom the campaign was stopped (also kept after a re-notify resumed it).
    stopped_at: dt.datetime | None = None
    stopped_by: str | None = None
    #: The re-notify round (1: the first calls).
    round: int = 1
    #: Calls placed after the stop (must stay 0).
    calls_after_stop: int = 0

    def counts(self) -> dict[str, int]:
        """Members per state."""
        out = {state: 0 for state in LIVE_STATES + (STOPPED_STATES if self.status == "stopped" else ())}
        for line in self.members:
            out[line.state] = out.get(line.state, 0) + 1
        return out

    def to_csv(self) -> str:
        """One line per member (numbers masked; names escaped against formula injection)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["person_id", "name", "number", "state", "attempts", "confirmed_at", "confirmed_via"])
        for line in self.members:
            writer.writerow([line.person_id, safe_cell(line.name), line.number, line.state, line.attempts,
                             line.confirmed_at.isoformat(timespec="seconds") if line.confirmed_at else "",
                             line.confirmed_via])
        return buffer.getvalue()

    def attempts_to_csv(self) -> str:
        """One line per call attempt (numbers masked, names escaped): every attempt the report must list."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(ATTEMPT_COLUMNS)
        for a in self.attempt_lines:
            writer.writerow([a.person_id, safe_cell(a.name), a.number, a.attempt_no, a.rank, _iso(a.started),
                             _iso(a.answered), _iso(a.ended), a.outcome, a.dial_outcome,
                             "" if a.hangup_cause is None else a.hangup_cause, a.amd])
        return buffer.getvalue()


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def render_progress(campaign_id: int, status: str, counts: dict[str, int], total: int, width: int = 40,
                    paused: str | None = None) -> str:
    """The ``campaign watch`` line: a bar of members whose delivery is over, then every live state
    that has members, in ``LIVE_STATES`` order, and why delivery is paused if it is (pure: counts in,
    text out)."""
    done = sum(counts.get(state, 0) for state in FINAL_STATES + STOPPED_STATES[1:])
    filled = min(width, int(width * done / total)) if total else width
    bar = "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"
    states = "  ".join(f"{STATE_LABELS.get(state, state.replace('_', ' '))} {counts[state]}"
                       for state in LIVE_STATES + STOPPED_STATES if counts.get(state))
    pause = f"  PAUSED: {paused}" if paused else ""
    return f"campaign {campaign_id} ({status}) {bar}" + (f"  {states}" if states else "") + pause


def campaign_report(engine: Engine, campaign_id: int, policies: dict[bool, RetryPolicy],
                    now: dt.datetime) -> CampaignReport:
    """Where every member of a campaign stands."""
    with session_scope(engine) as s:
        campaign = s.get(Campaign, campaign_id)
        if campaign is None:
            raise LookupError(f"no campaign {campaign_id}")
        message = campaign.message
        members: list[Member] = campaign_members(s, campaign, message)
        attempts = s.scalars(select(CallAttempt).where(CallAttempt.campaign_id == campaign_id)).all()
        stored = s.scalars(select(Confirmation).where(Confirmation.campaign_id == campaign_id)).all()
        confirmations = {c.person_id: c.confirmed_at for c in stored}
        confirmed_via = {c.person_id: c.via for c in stored}
        names = {p.id: p.name for p in s.scalars(select(Person).where(
            Person.id.in_([m.view.person_id for m in members])))}
        not_placed = [a for a in attempts if not placed(a.dial_outcome)]
        attempts = [a for a in attempts if placed(a.dial_outcome)]
        stopped = campaign.status is CampaignStatus.CANCELLED
        report = CampaignReport(campaign_id, message.id, "stopped" if stopped else campaign.status.value,
                                attempts=len(attempts), not_placed=len(not_placed), stopped_at=campaign.stopped_at,
                                stopped_by=campaign.stopped_by, round=campaign.round or 1)
        if stopped and campaign.stopped_at is not None:
            report.calls_after_stop = sum(1 for a in attempts
                                          if a.dialled_at is not None and a.dialled_at > campaign.stopped_at)
        pause = delivery_pause(s)
        if pause is not None and campaign.status.value != "done" and not stopped:
            report.paused = f"{pause.reason} (since {pause.since:%Y-%m-%d %H:%M:%S} UTC)"
        by_person: dict[int, list[CallAttempt]] = {}
        for a in sorted(attempts, key=lambda a: (a.person_id, a.attempt_no)):
            report.attempt_lines.append(AttemptLine(
                a.person_id, names.get(a.person_id, ""), mask(a.e164), a.attempt_no, a.rank.value,
                a.dialled_at, a.answered_at, a.ended_at,
                a.outcome.value if a.outcome else "", a.dial_outcome or "", a.hangup_cause, a.amd_status or ""))
        for a in attempts:
            by_person.setdefault(a.person_id, []).append(a)
            confirmed_at = confirmations.get(a.person_id)
            if confirmed_at is not None and a.dialled_at is not None and a.dialled_at > confirmed_at:
                report.calls_after_confirming += 1
        policy = policies[message.urgency.value == "urgent"]
        finals: dict[int, str] = {}
        for member in members:
            pid = member.view.person_id
            own = sorted(by_person.get(pid, []), key=lambda a: a.attempt_no)
            state = _state(member, own, policy, now)
            if stopped:
                state = _stopped_state(state, member, own, campaign.stopped_at)
            finals[pid] = state
        for member in members:
            pid = member.view.person_id
            state = finals[pid]
            if member.covered_by is not None and state == "queued":
                state = finals.get(member.covered_by, state)
            number = member.view.numbers[0][1] if member.view.numbers else ""
            at_stop = stopped and any(_up_at(a, campaign.stopped_at) for a in by_person.get(pid, []))
            report.members.append(MemberLine(pid, names.get(pid, ""), mask(number) if number else "-", state,
                                             len(by_person.get(pid, [])), confirmations.get(pid),
                                             confirmed_via.get(pid, ""), at_stop))
    return report


def _state(member: Member, attempts: list[CallAttempt], policy: RetryPolicy, now: dt.datetime) -> str:
    if member.view.confirmed:
        return "confirmed"
    live = [a for a in attempts if a.status is not AttemptStatus.ENDED]
    if live:
        return "answered" if live[-1].status is AttemptStatus.ANSWERED else "ringing"
    step = next_step(member.view, policy, now)
    if step.verdict is Verdict.DONE:
        return category(step.final)
    return "waiting_retry" if attempts else "queued"


def _up_at(attempt: CallAttempt, when: dt.datetime | None) -> bool:
    """Was the attempt's call up at ``when``?"""
    if when is None or attempt.dialled_at is None or attempt.dialled_at > when:
        return False
    return attempt.ended_at is None or attempt.ended_at > when


def _stopped_state(state: str, member: Member, attempts: list[CallAttempt], stopped_at: dt.datetime | None) -> str:
    """A member's state in a stopped campaign: a call up, nobody called, or retries cut short by the stop."""
    if state in ("answered", "ringing"):
        return "in_call_at_stop"
    if state not in ("waiting_retry", "queued"):
        return state  # over before the stop, or a call up at the stop that ended since
    placed_ = [a for a in attempts if placed(a.dial_outcome)]
    if not placed_:
        return "not_called"
    last = max(placed_, key=lambda a: a.attempt_no)
    # The stop ended its tries: how the last call went says whether it was heard.
    return category(last.outcome.value) if last.outcome not in (None, AttemptOutcome.INTERRUPTED) else "stopped"


def record_export(s: Session, report: CampaignReport, actor: str) -> None:
    """Audit a campaign's export before its bytes are written (C3): it names households."""
    audit.record(s, actor, "campaign.export", f"campaign:{report.campaign_id}", rows=len(report.members),
                 attempt_rows=len(report.attempt_lines))
