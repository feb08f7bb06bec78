"""Campaign progress and reports: who confirmed, who did not, every attempt.

The state of each member is derived from the same data and the same policy the dialer uses
(``ivr.delivery.policy.next_step``), so a report can never disagree with what the dialer does; how
each state is reported (``CATEGORY``, ``LIVE_STATES``, ``FINAL_STATES``) is ``ivr.delivery.states``' table.
A stopped campaign (status "stopped", with who and when) adds ``STOPPED_STATES``: a member still in
a call at the stop, one never called, one whose retries the stop ended; a member whose delivery
was over keeps its state.

Written copies (issue 17): each member's line says which channels reach them
(``ivr.domain.channels.channels_for``) and how their SMS and e-mail copies went (``storage.models.TextCopy``,
read only: ``ivr.copies`` writes them). A member the dialer does not call (``Member.called``: its
``is_called``) and who has not confirmed is in a ``REACH_STATES`` state instead of waiting for a
call: ``text_only`` (copies only) or ``no_channel`` (nothing reaches them). The contact ladder's SMS
still to come (``ladder_due``, as ``ivr.copies`` decides it) are counted with when the last falls due.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ivr.config import Settings
from ivr.delivery.members import Member, campaign_members, member_contacts, message_defaults, reach_of
from ivr.delivery.outcome import placed
from ivr.delivery.policy import MemberView, RetryPolicy, Verdict, Window, next_allowed, next_step
from ivr.delivery.states import FINAL_STATES, LIVE_STATES, category
from ivr.delivery.store import delivery_pause
from ivr.domain.channels import LadderRules, format_channels, ladder_due
from ivr.domain.csvsafe import safe_cell
from ivr.domain.phone import mask
from storage import audit
from storage.db import session_scope
from storage.models import CallAttempt, Campaign, Confirmation, Message, Person, TextCopy
from ivr.domain.vocabulary import (AttemptOutcome, AttemptStatus, CampaignStatus, Channel, CopyReason, CopyStatus,
                                   Urgency)

#: How ``campaign watch`` names the live states (what the issue calls them).
STATE_LABELS = {"ringing": "dialing/ringing", "waiting_retry": "waiting for retry",
                "answering_machine": "answering machine", "answered_no_key": "answered, no key",
                "no_answer": "no answer"}
#: States only a stopped campaign has (final: nothing more happens to these members).
STOPPED_STATES = ("in_call_at_stop", "not_called", "stopped")
STATE_LABELS.update({"in_call_at_stop": "in a call at the stop", "not_called": "never called (stopped)",
                     "stopped": "not reached (stopped)"})
#: States of a member the dialer does not call and who has not confirmed: written copies only, or no
#: channel at all (they chose text but have no mobile number or address, or opted out of everything).
REACH_STATES = ("text_only", "no_channel")
STATE_LABELS.update({"text_only": "text only", "no_channel": "no channel"})
#: The written copies' channels, in the order reports list them, and how ``campaign watch`` names them.
COPY_CHANNELS = (Channel.SMS, Channel.EMAIL)
COPY_LABELS: dict[str, str] = {Channel.SMS.value: "SMS", Channel.EMAIL.value: "e-mail"}
#: Columns of the members CSV: one row per member.
MEMBER_COLUMNS = ["person_id", "name", "number", "state", "attempts", "confirmed_at", "confirmed_via", "channels",
                  "sms", "sms_reason", "sms_at", "email", "email_reason", "email_at"]
#: Columns of the attempts CSV: one row per call placed.
ATTEMPT_COLUMNS = ["person_id", "name", "number", "attempt_no", "rank", "started", "answered", "ended", "outcome",
                   "dial_outcome", "hangup_cause", "amd"]


@dataclass(frozen=True)
class CopyLine:
    """One written copy to a member: which channel, why, where it stands and since when."""

    channel: str
    #: choice, text_only or ladder (``CopyReason``).
    reason: str
    #: queued, sending, sent, delivered, failed, bounced or cancelled (``CopyStatus``).
    status: str
    #: When it reached its status (written, handed over, accepted, delivered, failed).
    at: dt.datetime | None
    #: Kannel's or the relay's last word (a delivery report, a refusal), as stored.
    detail: str = ""


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
    #: The channels that reach the member for this message ("voice+sms"; ``format_channels``).
    channels: str = ""
    #: The member's written copies (at most one per channel), SMS first.
    copies: tuple[CopyLine, ...] = ()

    def copy(self, channel: str) -> CopyLine | None:
        """The member's copy on ``channel`` (``sms``, ``email``), if one was written."""
        return next((c for c in self.copies if c.channel == channel), None)

    @property
    def sms(self) -> str | None:
        """The status of the member's SMS copy (``None``: none was written)."""
        found = self.copy(Channel.SMS)
        return found.status if found else None

    @property
    def email(self) -> str | None:
        """The status of the member's e-mail copy (``None``: none was written)."""
        found = self.copy(Channel.EMAIL)
        return found.status if found else None


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
    #: Written copies per channel by status (``copy_counts``' shape), and how many were the ladder's.
    copies: dict[str, dict[str, int]] = field(default_factory=lambda: tally_copies(()))
    ladder: int = 0
    #: Members whose ladder SMS is still to come (calls over, unconfirmed, a mobile, no SMS yet), and
    #: when the last of them falls due (``ivr.domain.channels.ladder_due``; a preventive message's may
    #: wait for the allowed hours beyond it).
    ladder_waiting: int = 0
    ladder_due_at: dt.datetime | None = None
    #: When the last of them may go: its due time, or for a preventive message the end of the quiet
    #: hours it falls in (``ivr.copies`` holds a preventive SMS there, as the dialer holds its calls).
    ladder_sends_at: dt.datetime | None = None

    def counts(self) -> dict[str, int]:
        """Members per state."""
        out = {state: 0 for state in LIVE_STATES + REACH_STATES
               + (STOPPED_STATES if self.status == "stopped" else ())}
        for line in self.members:
            out[line.state] = out.get(line.state, 0) + 1
        return out

    def copy_summary(self) -> dict[str, Any]:
        """The written side at a glance (the console's board): copies per channel by status
        (``copy_counts``' shape), the ladder's, and the members not called by state."""
        counts = self.counts()
        return {**self.copies, "ladder": self.ladder, "ladder_waiting": self.ladder_waiting,
                **{state: counts[state] for state in REACH_STATES}}

    def to_csv(self) -> str:
        """One line per member, with their channels and copies (numbers masked; names escaped against
        formula injection)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(MEMBER_COLUMNS)
        for line in self.members:
            copies: list[object] = []
            for channel in COPY_CHANNELS:
                found = line.copy(channel)
                copies += [found.status, found.reason, _iso(found.at)] if found else ["", "", ""]
            writer.writerow([line.person_id, safe_cell(line.name), line.number, line.state, line.attempts,
                             line.confirmed_at.isoformat(timespec="seconds") if line.confirmed_at else "",
                             line.confirmed_via, line.channels, *copies])
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
                    paused: str | None = None, copies: Mapping[str, Mapping[str, int]] | None = None,
                    ladder: int = 0, ladder_waiting: int = 0, ladder_due_at: dt.datetime | None = None) -> str:
    """The ``campaign watch`` line: a bar of members whose delivery is over, then every live state
    that has members, in ``LIVE_STATES`` order, the written copies (``render_copies``) and why
    delivery is paused if it is (pure: counts in, text out). A member who is not called
    (``REACH_STATES``) has nothing more coming by phone: they count as over."""
    done = sum(counts.get(state, 0) for state in FINAL_STATES + REACH_STATES + STOPPED_STATES[1:])
    filled = min(width, int(width * done / total)) if total else width
    bar = "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"
    states = "  ".join(f"{STATE_LABELS.get(state, state.replace('_', ' '))} {counts[state]}"
                       for state in LIVE_STATES + REACH_STATES + STOPPED_STATES if counts.get(state))
    written = render_copies(copies, ladder, ladder_waiting, ladder_due_at) if copies is not None else ""
    pause = f"  PAUSED: {paused}" if paused else ""
    return (f"campaign {campaign_id} ({status}) {bar}" + (f"  {states}" if states else "")
            + (f"  | {written}" if written else "") + pause)


def render_copies(copies: Mapping[str, Mapping[str, int]], ladder: int = 0, ladder_waiting: int = 0,
                  ladder_due_at: dt.datetime | None = None) -> str:
    """The written copies in one line, e.g. "SMS 2 sent, 10 delivered, 1 failed · e-mail 8 sent,
    1 bounced · ladder 3 (+2 due by 09:15:00 UTC)": each copy counted once, at its status, in
    ``CopyStatus`` order; channels without copies left out; the ladder's copies written, and those
    still to come; "" when there is nothing to say (pure)."""
    parts = []
    for channel in COPY_CHANNELS:
        by_status = copies.get(channel.value, {})
        said = ", ".join(f"{by_status[status]} {status}" for status in CopyStatus if by_status.get(status))
        if said:
            parts.append(f"{COPY_LABELS[channel]} {said}")
    if ladder or ladder_waiting:
        due = f" by {ladder_due_at:%H:%M:%S} UTC" if ladder_due_at is not None else ""
        parts.append(f"ladder {ladder}" + (f" (+{ladder_waiting} due{due})" if ladder_waiting else ""))
    return " · ".join(parts)


def tally_copies(rows: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """(channel, status) pairs counted per channel by status, every status present ("sms" and
    "email" always, a 0 where there is none): the shape ``copy_counts`` and the demo's JSON use."""
    out = {channel.value: {status.value: 0 for status in CopyStatus} for channel in COPY_CHANNELS}
    for channel, status in rows:
        if channel in out:
            out[channel][str(status)] = out[channel].get(str(status), 0) + 1
    return out


def copy_counts(s_or_engine: Session | Engine, campaign_id: int) -> dict[str, dict[str, int]]:
    """A campaign's written copies per channel by status: ``{"sms": {"queued": 0, "sent": 3, ...},
    "email": {...}}`` (every status, 0 where there is none; ``tally_copies``)."""
    if isinstance(s_or_engine, Engine):
        with session_scope(s_or_engine) as s:
            return copy_counts(s, campaign_id)
    rows = s_or_engine.execute(select(TextCopy.channel, TextCopy.status)
                               .where(TextCopy.campaign_id == campaign_id)).tuples()
    return tally_copies((str(channel), str(status)) for channel, status in rows)


def channel_defaults(message: Message, settings: Settings) -> dict[Urgency, frozenset[Channel]]:
    """The channels of a member of ``message``'s BIN who chose none, per urgency: the zone's own, else
    the settings' (``ivr.delivery.members.message_defaults``)."""
    return message_defaults(message, settings.copy_channels_urgent, settings.copy_channels_preventive)


def reach_state(state: str, *, confirmed: bool, called: bool, called_before: bool,
                channels: frozenset[Channel]) -> str:
    """A member's state once the dialer's ``is_called`` is known (pure). A member it does not call who
    has not confirmed is ``text_only`` (``no_channel`` when nothing reaches them), unless they were
    called before they opted out: a call up or over keeps its state, only a wait for the next
    call (``queued``, ``waiting_retry``: the dialer will not go on) gives way."""
    if confirmed or called or (called_before and state not in ("queued", "waiting_retry")):
        return state
    return "text_only" if channels else "no_channel"


def _copy_line(row: TextCopy) -> CopyLine:
    at = {CopyStatus.SENDING: row.sending_at, CopyStatus.SENT: row.sent_at, CopyStatus.DELIVERED: row.delivered_at,
          CopyStatus.FAILED: row.failed_at, CopyStatus.BOUNCED: row.failed_at,
          CopyStatus.CANCELLED: row.failed_at}.get(row.status)
    return CopyLine(str(row.channel), str(row.reason), str(row.status), at or row.created_at, row.detail or "")


def campaign_report(engine: Engine, campaign_id: int, policies: dict[bool, RetryPolicy],
                    now: dt.datetime, settings: Settings | None = None) -> CampaignReport:
    """Where every member of a campaign stands, by phone and in writing. ``settings`` give the
    channels of members who chose none and the contact ladder where the zone sets neither
    (``None``: the built-in settings)."""
    settings = settings if settings is not None else Settings()
    with session_scope(engine) as s:
        campaign = s.get(Campaign, campaign_id)
        if campaign is None:
            raise LookupError(f"no campaign {campaign_id}")
        message = campaign.message
        members: list[Member] = campaign_members(s, campaign, message)
        everyone = [m.view.person_id for m in members]
        attempts = s.scalars(select(CallAttempt).where(CallAttempt.campaign_id == campaign_id)).all()
        stored = s.scalars(select(Confirmation).where(Confirmation.campaign_id == campaign_id)).all()
        confirmations = {c.person_id: c.confirmed_at for c in stored}
        confirmed_via = {c.person_id: c.via for c in stored}
        names = {p.id: p.name for p in s.scalars(select(Person).where(Person.id.in_(everyone)))}
        contacts = member_contacts(s, everyone)
        defaults = channel_defaults(message, settings)
        copy_rows = s.scalars(select(TextCopy).where(TextCopy.campaign_id == campaign_id)).all()
        copies: dict[int, list[CopyLine]] = {}
        for row in sorted(copy_rows, key=lambda r: r.channel != Channel.SMS):  # SMS first
            copies.setdefault(row.person_id, []).append(_copy_line(row))
        not_placed = [a for a in attempts if not placed(a.dial_outcome)]
        attempts = [a for a in attempts if placed(a.dial_outcome)]
        stopped = campaign.status is CampaignStatus.CANCELLED
        report = CampaignReport(campaign_id, message.id, "stopped" if stopped else campaign.status.value,
                                attempts=len(attempts), not_placed=len(not_placed), stopped_at=campaign.stopped_at,
                                stopped_by=campaign.stopped_by, round=campaign.round or 1,
                                copies=tally_copies((str(r.channel), str(r.status)) for r in copy_rows),
                                ladder=sum(1 for r in copy_rows if r.reason is CopyReason.LADDER))
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
        reach = reach_of(s, message, members, contacts, defaults)
        finals: dict[int, str] = {}
        for member in members:
            pid = member.view.person_id
            own = sorted(by_person.get(pid, []), key=lambda a: a.attempt_no)
            # ``Member.called`` is the dialer's own ``is_called``: the report cannot disagree with it.
            state = reach_state(_state(member.view, own, policy, now), confirmed=member.view.confirmed,
                                called=member.called, called_before=bool(own), channels=reach[pid])
            if stopped:
                state = _stopped_state(state, own)
            finals[pid] = state
        rules = ladder_rules(message, settings)
        dues: list[dt.datetime] = []
        for member in members:
            pid = member.view.person_id
            state = finals[pid]
            if member.covered_by is not None and state == "queued":
                state = finals.get(member.covered_by, state)
            numbers = contacts[pid].numbers
            at_stop = stopped and any(_up_at(a, campaign.stopped_at) for a in by_person.get(pid, []))
            own_copies = tuple(copies.get(pid, ()))
            report.members.append(MemberLine(pid, names.get(pid, ""), mask(numbers[0]) if numbers else "-", state,
                                             len(by_person.get(pid, [])), confirmations.get(pid),
                                             confirmed_via.get(pid, ""), at_stop, format_channels(reach[pid]),
                                             own_copies))
            # The copy engine's rule: a member's calls are over when their state is final, or when the
            # campaign is done (a preventive member whose calls expired still shows as waiting a retry).
            calls_over = state in FINAL_STATES or campaign.status is CampaignStatus.DONE
            if not stopped and member.called and calls_over:
                # The calls of a member covered by a housemate on the same line are the housemate's.
                calls = by_person.get(member.covered_by if member.covered_by is not None else pid, [])
                ended = max((a.ended_at for a in calls if a.ended_at is not None
                             and a.outcome not in (None, AttemptOutcome.INTERRUPTED)), default=None)
                due = ladder_due(rules, contacts[pid], called=ended is not None, confirmed=member.view.confirmed,
                                 calls_over=True, last_call_ended=ended,
                                 has_sms_copy=any(c.channel == Channel.SMS for c in own_copies))
                if due is not None:
                    dues.append(due)
        report.ladder_waiting, report.ladder_due_at = len(dues), max(dues, default=None)
        if dues:
            urgent = message.urgency is Urgency.URGENT
            report.ladder_sends_at = max(due if urgent else allowed_after(due, settings) for due in dues)
    return report


def allowed_after(at: dt.datetime, settings: Settings) -> dt.datetime:
    """The first moment at or after ``at`` outside the quiet hours (UTC): when a preventive message's
    SMS due at ``at`` may go (``ivr.copies`` keeps the hours its calls keep)."""
    quiet_start, quiet_end = settings.quiet_hours.split("-")
    local = next_allowed(at.astimezone(settings.tz), [Window.parse(f"{quiet_end}-{quiet_start}")])
    return local.astimezone(dt.timezone.utc)


def ladder_rules(message: Message, settings: Settings) -> LadderRules:
    """The contact ladder of ``message``'s zone: its own switch and delay, else the settings'."""
    zone = message.bin.zone
    return LadderRules(settings.ladder_sms if zone.ladder_sms is None else zone.ladder_sms,
                       settings.ladder_after_s if zone.ladder_after_s is None else zone.ladder_after_s)


def _state(view: MemberView, attempts: list[CallAttempt], policy: RetryPolicy, now: dt.datetime) -> str:
    if view.confirmed:
        return "confirmed"
    live = [a for a in attempts if a.status is not AttemptStatus.ENDED]
    if live:
        return "answered" if live[-1].status is AttemptStatus.ANSWERED else "ringing"
    step = next_step(view, policy, now)
    if step.verdict is Verdict.DONE:
        return category(step.final)
    return "waiting_retry" if attempts else "queued"


def _up_at(attempt: CallAttempt, when: dt.datetime | None) -> bool:
    """Was the attempt's call up at ``when``?"""
    if when is None or attempt.dialled_at is None or attempt.dialled_at > when:
        return False
    return attempt.ended_at is None or attempt.ended_at > when


def _stopped_state(state: str, attempts: list[CallAttempt]) -> str:
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
