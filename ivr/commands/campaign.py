"""``binfoon campaign watch|report``: live progress and the final report of a message's delivery."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from ivr.commands.common import CommandError, actor
from ivr.config import Settings
from ivr.delivery.dialer import retry_policies
from ivr.delivery.report import campaign_report, record_export, render_progress
from storage.db import open_database, session_scope


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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)


def attempts_csv_path(members_csv: Path) -> Path:
    """Where ``--csv report.csv`` writes every attempt: ``report-attempts.csv`` beside it."""
    return members_csv.with_name(f"{members_csv.stem}-attempts{members_csv.suffix or '.csv'}")


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    """Redraw the progress until the campaign is done (or once)."""
    engine = open_database(settings.resolved_database_url)
    while True:
        try:
            report = campaign_report(engine, args.id, retry_policies(settings), dt.datetime.now(dt.timezone.utc))
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        line = render_progress(report.campaign_id, report.status, report.counts(), len(report.members),
                               paused=report.paused)
        end = "\n" if args.once or report.status == "done" or not sys.stdout.isatty() else "\r"
        # Padded: a shorter line must blank out the end of the longer one it overwrites.
        print(line.ljust(120) if end == "\r" else line, end=end, flush=True)
        if args.once or report.status == "done":
            return 0
        time.sleep(max(0.2, args.interval))


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    """The report; the CSV export is audited (it names households)."""
    engine = open_database(settings.resolved_database_url)
    try:
        report = campaign_report(engine, args.id, retry_policies(settings), dt.datetime.now(dt.timezone.utc))
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    counts = {k: v for k, v in report.counts().items() if v}
    if args.csv:
        attempts_csv = attempts_csv_path(args.csv)
        # Audited before the bytes are written (C3): the export names households.
        with session_scope(engine) as s:
            record_export(s, report, actor())
        args.csv.write_text(report.to_csv(), encoding="utf-8")
        attempts_csv.write_text(report.attempts_to_csv(), encoding="utf-8")
    if args.json:
        print(json.dumps({"campaign": report.campaign_id, "message": report.message_id, "status": report.status,
                          "members": len(report.members), "attempts": report.attempts, **counts,
                          "calls_after_confirming": report.calls_after_confirming,
                          "not_placed": report.not_placed, "paused": report.paused}, indent=2))
        return 0
    print(f"campaign {report.campaign_id} for message {report.message_id}: {report.status}; "
          f"{counts.get('confirmed', 0)} of {len(report.members)} members confirmed, {report.attempts} calls")
    if report.paused:
        print(f"  delivery PAUSED: {report.paused}")
    for line in report.members:
        print(f"  {line.name:<24} {line.number:<14} {line.state:<18} {line.attempts} call(s)")
    if args.csv:
        print(f"CSV written to {args.csv} (members) and {attempts_csv_path(args.csv)} (every attempt)")
    return 0
