"""``binfoon campaign watch|report|stop|renotify``: a message's delivery, followed and controlled.

``stop`` and ``renotify`` go through ``ivr.delivery.control`` (its one permission rule): without
``--as`` the server's operator acts; with ``--as person:ID`` that person must be allowed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from sqlalchemy import Engine

from ivr.commands.common import CommandError, actor, refuse_overwrite
from ivr.config import Settings
from ivr.delivery.control import ControlError, renotify, stop_campaign
from ivr.delivery.policy import retry_policies
from ivr.delivery.report import (COPY_LABELS, MemberLine, campaign_report, record_export, render_copies,
                                 render_progress)
from ivr.domain.actor import Actor
from storage.db import open_database, session_scope


#: How long ``campaign watch`` waits for a ladder SMS past its due time before it ends without it.
LADDER_GRACE = dt.timedelta(seconds=60)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``campaign`` commands."""
    campaigns = sub.add_parser("campaign", help="delivery to the members").add_subparsers(dest="action", required=True)
    p = campaigns.add_parser("watch", help="a live progress bar until the campaign is done")
    p.add_argument("id", type=int)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--once", action="store_true", help="print the progress once and exit")
    p.set_defaults(func=cmd_watch)
    p = campaigns.add_parser("report", help="who confirmed, who did not, every attempt")
    p.add_argument("id", type=int)
    p.add_argument("--csv", type=Path, help="write one line per member to this CSV file, and one line per call "
                   "attempt to FILE-attempts.csv next to it (numbers masked)")
    p.add_argument("--force", action="store_true", help="replace the CSV files if they exist")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)
    p = campaigns.add_parser("stop", help="stop a running campaign: no new call starts, calls up finish")
    p.add_argument("id", type=int)
    p.add_argument("--as", dest="who", metavar="person:ID", help="on whose behalf (checked and audited)")
    p.set_defaults(func=cmd_stop)
    p = campaigns.add_parser("renotify", help="call again everyone who has not confirmed (a new round)")
    p.add_argument("id", type=int)
    p.add_argument("--as", dest="who", metavar="person:ID", help="on whose behalf (checked and audited)")
    p.set_defaults(func=cmd_renotify)


def acting(engine: Engine, who: str | None) -> Actor:
    """Who acts: the operator at the command line, or ``--as person:ID`` (an active person)."""
    from ivr.archive.access import resolve_person

    if who is None:
        return Actor.operator(actor())
    with session_scope(engine) as s:
        person = resolve_person(s, who)
        if person is None:
            raise CommandError(f"--as {who}: no such person (give person:ID or a phone number only they have)")
        if not person.active:
            raise CommandError(f"--as {who}: {person.name} is not active")
        return Actor(f"{actor()} as person:{person.id}", person.id)


def cmd_stop(settings: Settings, args: argparse.Namespace) -> int:
    """Stop a campaign (audited); print where its members stood."""
    engine = open_database(settings.resolved_database_url)
    who = acting(engine, args.who)
    try:
        with session_scope(engine) as s:
            result = stop_campaign(s, args.id, who, dt.datetime.now(dt.timezone.utc))
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    print(f"campaign {result.campaign_id} (message {result.message_id}) stopped at "
          f"{result.stopped_at.isoformat(timespec='seconds')}: no new call starts, calls up finish. "
          f"{result.confirmed} of {result.members} members had confirmed; {result.never_called} never called. "
          f"`binfoon campaign report {result.campaign_id}` lists everyone; "
          f"`binfoon message retract {result.message_id}` sends a retraction.")
    return 0


def cmd_renotify(settings: Settings, args: argparse.Namespace) -> int:
    """A new round: everyone who has not confirmed is called again (audited)."""
    engine = open_database(settings.resolved_database_url)
    who = acting(engine, args.who)
    try:
        with session_scope(engine) as s:
            result = renotify(s, args.id, who, dt.datetime.now(dt.timezone.utc))
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    print(f"campaign {result.campaign_id}: round {result.round} calls {result.members} member(s) who have not "
          f"confirmed; the running service (`binfoon serve`) starts at once.")
    return 0


def attempts_csv_path(members_csv: Path) -> Path:
    """Where ``--csv report.csv`` writes every attempt: ``report-attempts.csv`` beside it."""
    return members_csv.with_name(f"{members_csv.stem}-attempts{members_csv.suffix or '.csv'}")


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    """Redraw the progress until the campaign is done (or once)."""
    engine = open_database(settings.resolved_database_url)
    while True:
        try:
            report = campaign_report(engine, args.id, retry_policies(settings), dt.datetime.now(dt.timezone.utc),
                                     settings)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        line = render_progress(report.campaign_id, report.status, report.counts(), len(report.members),
                               paused=report.paused, copies=report.copies, ladder=report.ladder,
                               ladder_waiting=report.ladder_waiting, ladder_due_at=report.ladder_due_at)
        # A stopped campaign is over once the calls up at the stop have finished; a done one once the
        # contact ladder's SMS are written (or should have been: SMS on, a little after they fell due).
        # A preventive message's ladder SMS due in the quiet hours waits for the morning: the watch does
        # not, it says until when the SMS is deferred and ends.
        over = report.status == "done" or (report.status == "stopped" and not report.counts().get("in_call_at_stop"))
        if over and report.status == "done" and settings.sms_sendsms_url and report.ladder_due_at is not None:
            now = dt.datetime.now(dt.timezone.utc)
            sends_at = report.ladder_sends_at or report.ladder_due_at
            deferred = sends_at > report.ladder_due_at + LADDER_GRACE
            over = deferred or now > report.ladder_due_at + LADDER_GRACE
            if over and report.ladder_waiting and sends_at > now:
                line += f"  | ladder SMS deferred until {sends_at:%Y-%m-%d %H:%M} UTC (quiet hours)"
        if report.status == "stopped" and report.stopped_at is not None:
            line += f"  STOPPED {report.stopped_at:%Y-%m-%d %H:%M:%S} UTC by {report.stopped_by}"
        end = "\n" if args.once or over or not sys.stdout.isatty() else "\r"
        # Padded: a shorter line must blank out the end of the longer one it overwrites.
        print(line.ljust(120) if end == "\r" else line, end=end, flush=True)
        if args.once or over:
            return 0
        time.sleep(max(0.2, args.interval))


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    """The report; the CSV export is audited (it names households)."""
    engine = open_database(settings.resolved_database_url)
    try:
        report = campaign_report(engine, args.id, retry_policies(settings), dt.datetime.now(dt.timezone.utc),
                                 settings)
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    counts = {k: v for k, v in report.counts().items() if v}
    if args.csv:
        attempts_csv = attempts_csv_path(args.csv)
        refuse_overwrite(args.csv, args.force)
        refuse_overwrite(attempts_csv, args.force)
        # Audited before the bytes are written (C3): the export names households.
        with session_scope(engine) as s:
            record_export(s, report, actor())
        args.csv.write_text(report.to_csv(), encoding="utf-8")
        attempts_csv.write_text(report.attempts_to_csv(), encoding="utf-8")
    if args.json:
        print(json.dumps({"campaign": report.campaign_id, "message": report.message_id, "status": report.status,
                          "members": len(report.members), "attempts": report.attempts, **counts,
                          "calls_after_confirming": report.calls_after_confirming,
                          "not_placed": report.not_placed, "paused": report.paused, "round": report.round,
                          "stopped_at": report.stopped_at.isoformat() if report.stopped_at else None,
                          "stopped_by": report.stopped_by, "calls_after_stop": report.calls_after_stop,
                          "in_call_at_stop": sum(1 for m in report.members if m.in_call_at_stop),
                          **report.copies, "ladder": report.ladder, "ladder_waiting": report.ladder_waiting,
                          "ladder_due_at": report.ladder_due_at.isoformat() if report.ladder_due_at else None},
                         indent=2))
        return 0
    rounds = f" (round {report.round})" if report.round > 1 else ""
    print(f"campaign {report.campaign_id} for message {report.message_id}: {report.status}{rounds}; "
          f"{counts.get('confirmed', 0)} of {len(report.members)} members confirmed, {report.attempts} calls")
    if report.stopped_at is not None:
        print(f"  stopped at {report.stopped_at:%Y-%m-%d %H:%M:%S} UTC by {report.stopped_by}"
              + ("" if report.status == "stopped" else "; resumed by a re-notify"))
    if report.paused:
        print(f"  delivery PAUSED: {report.paused}")
    written = render_copies(report.copies, report.ladder, report.ladder_waiting, report.ladder_due_at)
    if written:
        print(f"  copies: {written}")
    for line in report.members:
        note = "  (in a call at the stop)" if line.in_call_at_stop and line.state != "in_call_at_stop" else ""
        print(f"  {line.name:<24} {line.number:<14} {line.state:<18} {line.attempts} call(s)  "
              f"{line.channels or '-':<15} {_copies_of(line)}{note}")
    if args.csv:
        print(f"CSV written to {args.csv} (members) and {attempts_csv_path(args.csv)} (every attempt)")
    return 0


def _copies_of(line: MemberLine) -> str:
    """A member's written copies for the report: "SMS delivered (ladder) · e-mail bounced: 550 no such
    user": a ladder's marked, a failure's reason as Kannel or the relay gave it."""
    said = [f"{COPY_LABELS.get(c.channel, c.channel)} {c.status}" + (" (ladder)" if c.reason == "ladder" else "")
            + (f": {c.detail}" if c.detail and c.status in ("failed", "bounced") else "") for c in line.copies]
    via = "  confirmed by SMS" if line.confirmed_via == "sms" else ""
    return (" · ".join(said) or "no copy") + via
