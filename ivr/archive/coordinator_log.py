"""The coordinator's log: every police message of a BIN in a period, for evaluation with the police.

The BIN circular asks coordinators to keep a log of police messages (time, content, feedback, what
was done). This module makes it from the archive. Rules:

* The figures are pure functions of rows (``time_to_share``, ``make_entry``) and the rendering is
  pure too (``to_csv``, ``to_html``, ``to_text``); only ``collect`` reads the database, and it reuses
  ``Archive.list`` (which messages) and ``campaign_report`` (where every member stands, by the
  dialer's own policy) instead of counting again.
* Drafts are left out: they never left the officer's hands. So are drills ("Testbericht BIN-foon",
  ``Message.drill``): a test never mixes with the police's real messages, their figures or rates
  (a drill's own figures are its reach report, ``ivr.delivery.drill.reach_report``).
* Delivered = members who heard the message (confirmed, answered without a key, answering machine:
  ``ivr.delivery.states.DELIVERED_STATES``) or, not having heard it, got it in writing: an SMS or
  e-mail copy sent or delivered (a text-only member's, or the contact ladder's SMS; issue 17).
  Confirmed = pressed 1 (or replied by SMS). Rates are over the campaign's members, those not
  called included (for a follow-up: those who received the first message); ``None`` when there is
  no campaign or nobody to reach.
* Time to 95 %: from the campaign's start (the approval when it has none) to the confirmation that
  brings the confirmed members to at least 95 % of the members, rounded up (19 of 20, 10 of 10);
  ``None`` ("niet bereikt") if that never happened.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ivr.archive.store import Archive
from ivr.config import Settings
from ivr.delivery.members import RECEIVED_COPIES
from ivr.delivery.policy import RetryPolicy
from ivr.delivery.report import CampaignReport, campaign_report
from ivr.delivery.states import DELIVERED_STATES
from ivr.domain.csvsafe import safe_cell
from storage import audit
from storage.db import session_scope
from storage.models import Bin, Campaign, Message, Recording, ReviewDecision, Transcript
from storage.sealed import SealError, open_transcript
from ivr.domain.vocabulary import Decision, MessageKind, MessageStatus, Urgency

#: The share of members whose confirmation the log times ("time to reach 95 % of members").
TARGET_PERCENT = 95
#: A written copy in one of these states reached its member ("delivered" in the log).
WRITTEN = tuple(status.value for status in RECEIVED_COPIES)

URGENCY_NL = {Urgency.URGENT: "dringend", Urgency.PREVENTIVE: "preventief"}
KIND_NL = {MessageKind.ALERT: "melding", MessageKind.UPDATE: "opvolging",
           MessageKind.CANCELLATION: "annulering"}
DECISION_NL = {Decision.FORWARD_NOW: "meteen doorgestuurd", Decision.FORWARD_LATER: "later doorgestuurd",
               Decision.REJECT: "geweigerd"}
STATUS_NL = {MessageStatus.RECORDED: "ingesproken", MessageStatus.WITH_COORDINATORS: "bij de coördinatoren",
             MessageStatus.AWAITING_APPROVAL: "wacht op een tweede agent",
             MessageStatus.APPROVED: "goedgekeurd", MessageStatus.REJECTED: "geweigerd",
             MessageStatus.DELIVERING: "wordt verstuurd", MessageStatus.DONE: "verstuurd",
             MessageStatus.CANCELLED: "geannuleerd", MessageStatus.DRAFT: "ontwerp"}


class UnknownBin(LookupError):
    """No BIN has this number."""


@dataclass(frozen=True)
class LogEntry:
    """One police message in the log."""

    message_id: int
    created_at: dt.datetime
    urgency: Urgency
    kind: MessageKind
    status: MessageStatus
    follow_up_of: int | None
    #: The typed text, else the transcript; ``None`` when there is neither (untranscribed or purged).
    text: str | None
    #: "typed" or "transcript" (``None`` with no text).
    text_source: str | None
    decision: Decision | None = None
    #: Who decided: a coordinator's (or approver's) name; ``None`` with a decision: the zone's policy.
    decided_by: str | None = None
    decided_via: str | None = None
    decided_at: dt.datetime | None = None
    campaign_id: int | None = None
    campaign_start: dt.datetime | None = None
    members: int = 0
    delivered: int = 0
    confirmed: int = 0
    time_to_target: dt.timedelta | None = None
    #: Later messages that follow this one: (id, kind).
    follow_ups: tuple[tuple[int, MessageKind], ...] = ()

    @property
    def delivery_rate(self) -> float | None:
        """Share of the members who heard the message (``None``: nobody to call)."""
        return self.delivered / self.members if self.members else None

    @property
    def confirmation_rate(self) -> float | None:
        """Share of the members who confirmed (``None``: nobody to call)."""
        return self.confirmed / self.members if self.members else None


@dataclass(frozen=True)
class CoordinatorLog:
    """The log of one BIN over ``[since, until)``."""

    bin_number: int
    bin_name: str
    zone_code: str
    zone_name: str
    since: dt.datetime
    until: dt.datetime
    made_at: dt.datetime
    entries: list[LogEntry] = field(default_factory=list)


# -- pure figures ----------------------------------------------------------------------------------


def needed_confirmations(members: int, percent: int = TARGET_PERCENT) -> int:
    """How many confirmations make ``percent`` % of ``members`` (rounded up; integer arithmetic)."""
    return -(-members * percent // 100)


def time_to_share(start: dt.datetime | None, confirmed_at: Iterable[dt.datetime | None], members: int,
                  percent: int = TARGET_PERCENT) -> dt.timedelta | None:
    """From ``start`` to the confirmation that brings the confirmed to ``percent`` % of ``members``.

    ``None`` when there is no start, nobody to call, or too few confirmed. A confirmation before the
    start (a member who called back in early) counts as at the start: never a negative time.
    """
    if start is None or members <= 0:
        return None
    times = sorted(t for t in confirmed_at if t is not None)
    needed = needed_confirmations(members, percent)
    if len(times) < needed:
        return None
    return max(times[needed - 1] - start, dt.timedelta(0))


def make_entry(message: Message, text: str | None, text_source: str | None, decision: ReviewDecision | None,
               decided_by: str | None, campaign: Campaign | None, report: CampaignReport | None,
               follow_ups: Sequence[tuple[int, MessageKind]]) -> LogEntry:
    """A log entry from the rows of one message (and its campaign's report)."""
    decided_at = decision.decided_at if decision is not None else None
    start = None
    members = delivered = confirmed = 0
    time_to = None
    if campaign is not None and report is not None:
        start = campaign.started_at or decided_at
        counts = report.counts()
        members = len(report.members)
        # A copy handed over (SENT) is as far as we can know an e-mail went (no delivery report comes
        # for one), and it is what a follow-up counts as received (``received_in_writing``): a member
        # reached in writing only (text only, or the ladder's SMS after unanswered calls) is delivered.
        delivered = sum(1 for line in report.members if line.state in DELIVERED_STATES
                        or any(copy.status in WRITTEN for copy in line.copies))
        confirmed = counts.get("confirmed", 0)
        time_to = time_to_share(start, (line.confirmed_at for line in report.members), members)
    return LogEntry(
        message_id=message.id, created_at=message.created_at,
        urgency=message.urgency, kind=message.kind, status=message.status,
        follow_up_of=message.follow_up_of_id,
        text=text, text_source=text_source,
        decision=decision.decision if decision is not None else None, decided_by=decided_by,
        decided_via=decision.via if decision is not None else None, decided_at=decided_at,
        campaign_id=campaign.id if campaign is not None else None, campaign_start=start,
        members=members, delivered=delivered, confirmed=confirmed, time_to_target=time_to,
        follow_ups=tuple(follow_ups))


# -- reading the archive ---------------------------------------------------------------------------


def collect(engine: Engine, archive: Archive, bin_number: int, since: dt.datetime, until: dt.datetime,
            policies: dict[bool, RetryPolicy], now: dt.datetime, settings: Settings | None = None) -> CoordinatorLog:
    """The log of BIN ``bin_number`` for messages created in ``[since, until)``, oldest first.
    ``settings`` give the channels of members who chose none, as the campaign report reads them
    (``None``: the built-in settings).

    Raises ``UnknownBin`` when no BIN has that number, ``ValueError`` when ``until`` is not after ``since``.
    """
    if until <= since:
        raise ValueError("the end of the period must be after its start")
    with session_scope(engine) as s:
        bin_ = s.scalars(select(Bin).where(Bin.number == bin_number)).first()
        if bin_ is None:
            raise UnknownBin(f"no BIN number {bin_number}")
        log = CoordinatorLog(bin_.number, bin_.name, bin_.zone.code, bin_.zone.name, since, until, now)
    listed = [e for e in reversed(archive.list(bin=bin_number, since=since, until=until))
              if e.status is not MessageStatus.DRAFT]
    for listed_entry in listed:
        with session_scope(engine) as s:
            message = s.get_one(Message, listed_entry.message_id)
            if message.drill:
                continue
            text, source = message.text, "typed" if message.text else None
            if text is None:
                transcript = s.scalars(select(Transcript)
                                       .join(Recording, Recording.id == Transcript.recording_id)
                                       .where(Recording.message_id == message.id)
                                       .order_by((Recording.take == message.submitted_take).desc(),
                                                 Recording.take.desc())).first()
                if transcript is not None:  # sealed at rest: opened with the archive's key
                    try:
                        text = open_transcript(archive.store.key, transcript.recording_id, transcript.text,
                                               transcript.words).text or None
                    except SealError as exc:  # altered or swapped: shown as no text, said in the log
                        logging.getLogger(__name__).error("message %d: its transcript does not open: %s",
                                                          message.id, exc)
                source = "transcript" if text else None
            decision = s.scalars(select(ReviewDecision)
                                 .where(ReviewDecision.message_id == message.id)).first()
            who = decision.person if decision is not None else None
            decided_by = who.name if who is not None else None
            campaign = s.scalars(select(Campaign).where(Campaign.message_id == message.id)).first()
            follow_ups = [(int(mid), kind) for mid, kind in s.execute(
                select(Message.id, Message.kind).where(Message.follow_up_of_id == message.id,
                                                       Message.status != MessageStatus.DRAFT)
                .order_by(Message.id))]
        # Read after the session closes (it opens its own); the rows above stay loaded.
        report = campaign_report(engine, campaign.id, policies, now, settings) if campaign is not None else None
        log.entries.append(make_entry(message, text or None, source, decision, decided_by, campaign, report,
                                      follow_ups))
    return log


# -- rendering ---------------------------------------------------------------------------------------

CSV_COLUMNS = ("message_id", "created_at", "urgency", "kind", "status", "follow_up_of", "text", "text_source",
               "decision", "decided_by", "decided_via", "decided_at", "campaign_id", "campaign_start",
               "members", "delivered", "confirmed", "delivery_rate", "confirmation_rate", "time_to_95_s", "follow_ups")


def _iso(value: dt.datetime | None, tz: dt.tzinfo) -> str:
    return value.astimezone(tz).isoformat(timespec="seconds") if value is not None else ""


def _rate(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else ""


def to_csv(log: CoordinatorLog, tz: dt.tzinfo) -> str:
    """One row per message; times local with their offset, rates 0..1, empty where there is no value.

    The text and the coordinator's name are people's words: escaped so a spreadsheet never runs them.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for e in log.entries:
        writer.writerow([
            e.message_id, _iso(e.created_at, tz), e.urgency.value, e.kind.value, e.status.value,
            e.follow_up_of or "", safe_cell(e.text), e.text_source or "",
            e.decision.value if e.decision else "",
            safe_cell(e.decided_by) or ("zone_policy" if e.decision is not None else ""), e.decided_via or "",
            _iso(e.decided_at, tz), e.campaign_id or "", _iso(e.campaign_start, tz), e.members, e.delivered,
            e.confirmed, _rate(e.delivery_rate), _rate(e.confirmation_rate),
            int(e.time_to_target.total_seconds()) if e.time_to_target is not None else "",
            " ".join(str(mid) for mid, _ in e.follow_ups)])
    return buffer.getvalue()


def duration_nl(value: dt.timedelta | None) -> str:
    """``1 u 05 min``, ``4 min 10 s``, ``45 s``; ``niet bereikt`` for ``None``."""
    if value is None:
        return "niet bereikt"
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} u {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _percent_nl(count: int, members: int) -> str:
    return f"{count} van {members} ({100 * count / members:.0f} %)" if members else "–"


def _decision_nl(e: LogEntry, tz: dt.tzinfo) -> str:
    if e.decision is None:
        return "nog geen beslissing"
    who = e.decided_by or "beleid van de zone (geen coördinator besliste)"
    when = e.decided_at.astimezone(tz).strftime("%d-%m-%Y %H:%M") if e.decided_at else ""
    return f"{DECISION_NL[e.decision]} door {who}, {when}"


def _follow_ups_nl(e: LogEntry) -> str:
    parts = [f"{KIND_NL[kind]} #{mid}" for mid, kind in e.follow_ups]
    if e.follow_up_of is not None:
        parts.insert(0, f"{KIND_NL[e.kind]} van #{e.follow_up_of}")
    return "; ".join(parts) or "–"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.4em; } p.meta { color: #444; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 0.35em 0.5em; vertical-align: top; text-align: left; }
th { background: #eee; } tr.dringend td:first-child { border-left: 4px solid #c00; }
tr.preventief td:first-child { border-left: 4px solid #080; } td.num { white-space: nowrap; }
.leeg { color: #777; font-style: italic; }
@media print { body { margin: 0; } }
"""


def to_html(log: CoordinatorLog, tz: dt.tzinfo) -> str:
    """A self-contained page (inline style, no scripts, nothing fetched), in Dutch."""
    e = html.escape

    def local(value: dt.datetime) -> str:
        return value.astimezone(tz).strftime("%d-%m-%Y %H:%M")

    last_day = (log.until - dt.timedelta(microseconds=1)).astimezone(tz)
    title = f"Logboek van de coördinator – BIN {log.bin_number} {log.bin_name}"
    rows = []
    for entry in log.entries:
        text = e(entry.text) if entry.text else '<span class="leeg">geen tekst of transcript</span>'
        if entry.text_source == "transcript":
            text += ' <span class="leeg">(transcript)</span>'
        rows.append(
            f'<tr class="{URGENCY_NL[entry.urgency]}"><td class="num">#{entry.message_id}<br>'
            f"{local(entry.created_at)}</td><td>{URGENCY_NL[entry.urgency]}</td>"
            f"<td>{KIND_NL[entry.kind]}</td>"
            f"<td>{text}</td><td>{e(_decision_nl(entry, tz))}<br>"
            f'<span class="leeg">{STATUS_NL[entry.status]}</span></td>'
            f'<td class="num">{_percent_nl(entry.delivered, entry.members)}</td>'
            f'<td class="num">{_percent_nl(entry.confirmed, entry.members)}</td>'
            f'<td class="num">{duration_nl(entry.time_to_target) if entry.campaign_id else "–"}</td>'
            f"<td>{e(_follow_ups_nl(entry))}</td></tr>")
    body = "\n".join(rows) if rows else (
        '<tr><td colspan="9" class="leeg">Geen politieberichten in deze periode.</td></tr>')
    return f"""<!DOCTYPE html>
<html lang="nl-BE">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{e(title)}</h1>
<p class="meta">Politiezone {e(log.zone_code)} {e(log.zone_name)} · periode {local(log.since)} tot en met
{last_day.strftime("%d-%m-%Y %H:%M")} · {len(log.entries)} bericht(en) · opgemaakt op {local(log.made_at)}</p>
<h2>Berichten</h2>
<table>
<thead><tr><th>Bericht en tijdstip</th><th>Urgentie</th><th>Soort</th><th>Inhoud</th><th>Beslissing coördinator</th>
<th>Bereikt</th><th>Bevestigd</th><th>Tijd tot {TARGET_PERCENT} % bevestigd</th><th>Opvolging</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
<p class="meta">Bereikt: het bericht werd beluisterd (bevestigd, opgenomen zonder toets, of antwoordapparaat),
of kwam als sms of e-mail aan (verstuurd of afgeleverd: leden die enkel tekst kozen, of de sms van de contactladder).
Tijd tot {TARGET_PERCENT} %: vanaf de start van de oproepen tot de bevestiging die {TARGET_PERCENT} % van de leden
haalt.</p>
</body>
</html>
"""


def to_text(log: CoordinatorLog, tz: dt.tzinfo) -> str:
    """A short plain-text summary for the terminal: one line per message."""
    lines = [f"BIN {log.bin_number} ({log.bin_name}): {len(log.entries)} message(s)"]
    for entry in log.entries:
        lines.append(
            f"{entry.message_id:>6}  {entry.created_at.astimezone(tz):%Y-%m-%d %H:%M}  "
            f"{entry.urgency.value:<10} {entry.kind.value:<12} "
            f"{entry.decision.value if entry.decision else '-':<13} "
            f"confirmed {entry.confirmed}/{entry.members}  "
            f"95%: {duration_nl(entry.time_to_target) if entry.campaign_id else '-'}")
    return "\n".join(lines) + "\n"


def record_report(s: Session, log: CoordinatorLog, bin_number: int, since: dt.datetime, until: dt.datetime,
                  outputs: list[str], actor: str) -> None:
    """Audit a coordinator's log before it is written: it lists what the police sent and who confirmed."""
    audit.record(s, actor, "report.created", f"bin:{bin_number}", since=since.isoformat(),
                 until=until.isoformat(), messages=[e.message_id for e in log.entries], outputs=outputs)
