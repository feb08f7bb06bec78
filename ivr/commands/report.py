"""``binfoon report --bin BIN --from DATE --to DATE [--html FILE] [--csv FILE] [--force]``: the coordinator's log.

Everything the user typed is checked (the BIN exists, the dates parse, the period is not empty, the
output folders exist) before anything is written; the creation of the log is audited, since it
holds police messages, before the files are written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ivr.archive.coordinator_log import UnknownBin, collect, record_report, to_csv, to_html, to_text
from ivr.archive.store import Archive
from ivr.commands.common import CommandError, actor, parse_when, refuse_overwrite
from ivr.config import Settings
from ivr.delivery.policy import retry_policies
from storage.db import open_database, session_scope
from storage.models import utcnow
from storage.recordings import RecordingStore


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``report`` command."""
    p = sub.add_parser("report", help="the coordinator's log of a BIN's police messages over a period")
    p.add_argument("bin", type=int, nargs="?", metavar="BIN", help="BIN number (or --bin)")
    p.add_argument("--bin", dest="bin_option", type=int, metavar="BIN", help="BIN number, as in every other command")
    p.add_argument("--from", dest="since", required=True, metavar="DATE",
                   help="from this local date or time (2026-11-01 or 2026-11-01T08:00)")
    p.add_argument("--to", dest="until", required=True, metavar="DATE",
                   help="up to this local date (inclusive) or time")
    p.add_argument("--html", type=Path, metavar="FILE", help="write the log as a self-contained HTML page")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write one row per message to this CSV file")
    p.add_argument("--force", action="store_true", help="replace --html/--csv files that exist")
    p.set_defaults(func=cmd_report)


def _check_target(path: Path | None, option: str, force: bool) -> None:
    if path is None:
        return
    if path.is_dir():
        raise CommandError(f"{option} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise CommandError(f"{option}: {path.parent} is not a folder")
    refuse_overwrite(path, force)


def chosen_bin(args: argparse.Namespace) -> int:
    """The BIN given as ``BIN`` or ``--bin`` (the same, if both)."""
    if args.bin is None and args.bin_option is None:
        raise CommandError("which BIN? give --bin NUMBER")
    if args.bin is not None and args.bin_option is not None and args.bin != args.bin_option:
        raise CommandError(f"two BINs given ({args.bin} and --bin {args.bin_option}): give one")
    return args.bin if args.bin is not None else args.bin_option


def _write(path: Path, content: str) -> None:
    # The log holds police messages: readable by its owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        out.write(content)


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    """Make the log; write HTML and/or CSV, or print a summary when neither is asked for."""
    since = parse_when(args.since, settings, end_of_day=False)
    until = parse_when(args.until, settings, end_of_day=True)
    if until <= since:
        raise CommandError("--to must be after --from")
    args.bin = chosen_bin(args)
    _check_target(args.html, "--html", args.force)
    _check_target(args.csv, "--csv", args.force)
    if args.html is not None and args.csv is not None and args.html.resolve() == args.csv.resolve():
        raise CommandError("--html and --csv name the same file")
    engine = open_database(settings.resolved_database_url)
    archive = Archive(engine, RecordingStore(settings.data_dir / "recordings"), operator=actor())
    now = utcnow()
    try:
        log = collect(engine, archive, args.bin, since, until, retry_policies(settings), now, settings)
    except UnknownBin as exc:
        raise CommandError(f"{exc} (see `binfoon bin list`)") from None
    outputs = [name for name, path in (("html", args.html), ("csv", args.csv)) if path is not None]
    with session_scope(engine) as s:
        record_report(s, log, args.bin, since, until, outputs or ["terminal"], actor())
    if args.html is not None:
        _write(args.html, to_html(log, settings.tz))
    if args.csv is not None:
        _write(args.csv, to_csv(log, settings.tz))
    if outputs:
        written = " and ".join(str(p) for p in (args.html, args.csv) if p is not None)
        print(f"BIN {args.bin}: {len(log.entries)} message(s) in the log, written to {written}")
    else:
        print(to_text(log, settings.tz), end="")
    return 0
