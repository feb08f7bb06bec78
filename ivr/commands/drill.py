"""``binfoon bin test|drills|drill-report``: drills ("Testbericht BIN-foon") for a whole BIN, now or on a
schedule, and who they reached."""

from __future__ import annotations

import argparse
import json

from ivr.commands.common import CommandError, actor, parse_when, positive_int
from ivr.config import Settings
from ivr.delivery.drill import (
    DrillError,
    DrillRefused,
    ReachReport,
    cancel_drill_schedule,
    drill_schedules,
    latest_drills,
    reach_report,
    schedule_drill,
    start_drill,
)
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import Role
from storage.db import open_database, session_scope
from storage.models import Person
from storage.recordings import RecordingStore


def register_bin_actions(bin_: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the drill actions to the ``bin`` command (called by ``ivr.commands.directory``)."""
    p = bin_.add_parser("test", help='a drill now: a "Testbericht BIN-foon" to every member of the BIN')
    p.add_argument("number", type=int, help="BIN number")
    p.add_argument("--text", help="the words to speak (default: the catalogue's test message in the BIN's language)")
    p.add_argument("--as", dest="who", metavar="person:ID",
                   help="on whose behalf (an admin, a coordinator of the BIN or the zone's police); audited")
    p.set_defaults(func=cmd_test)
    p = bin_.add_parser("drills", help="the drill schedules: list them, or set or remove a BIN's")
    p.add_argument("number", type=int, nargs="?", help="BIN number (none: list every schedule)")
    p.add_argument("--every-months", type=positive_int, metavar="N", help="a drill every N months (3: quarterly)")
    p.add_argument("--first", metavar="WHEN", help="the first drill, local time (2027-01-15T10:00)")
    p.add_argument("--off", action="store_true", help="remove the BIN's schedule")
    p.add_argument("--as", dest="who", metavar="person:ID", help="on whose behalf; audited")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_drills)
    p = bin_.add_parser("drill-report", help="who a drill reached, and the wrong numbers it found")
    p.add_argument("number", type=int, help="BIN number")
    p.add_argument("--message", type=positive_int, metavar="ID", help="that drill (default: the BIN's latest)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_report)


def who_acts(settings: Settings, who: str | None) -> Actor:
    """The operator (no ``--as``), or the active person ``person:ID`` on whose behalf they act."""
    if who is None:
        return Actor.operator(actor())
    raw = who.removeprefix("person:")
    if not raw.isdigit():
        raise CommandError(f"--as {who!r}: give person:ID (see `binfoon person list`)")
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as s:
        person = s.get(Person, int(raw))
        if person is None or not person.active:
            raise CommandError(f"--as {who}: no active person with id {raw}")
        admin = any(r.role is Role.ADMIN for r in person.roles)
    return Actor(f"{actor()} as person:{raw}", int(raw), admin)


def cmd_test(settings: Settings, args: argparse.Namespace) -> int:
    """A drill of the BIN now."""
    who = who_acts(settings, args.who)
    engine = open_database(settings.resolved_database_url)
    try:
        message_id = start_drill(engine, RecordingStore(settings.data_dir / "recordings"), args.number, who,
                                 text=args.text)
    except (DrillError, DrillRefused) as exc:
        raise CommandError(str(exc)) from None
    print(f"drill {message_id} for BIN {args.number}: approved; the running service (`binfoon serve`) calls "
          f"every member now (within the allowed hours). Its reach report: "
          f"`binfoon bin drill-report {args.number} --message {message_id}`.")
    return 0


def cmd_drills(settings: Settings, args: argparse.Namespace) -> int:
    """List the schedules, set one (``--every-months`` and ``--first``) or remove one (``--off``)."""
    changing = args.off or args.every_months is not None or args.first is not None
    if not changing:
        engine = open_database(settings.resolved_database_url)
        with session_scope(engine) as s:
            lines = drill_schedules(s, args.number)
        if args.json:
            print(json.dumps([{"bin": x.bin_number, "name": x.bin_name, "every_months": x.every_months,
                               "next_at": x.next_at.isoformat(timespec="minutes"), "created_by": x.created_by}
                              for x in lines], indent=2, ensure_ascii=False))
            return 0
        if not lines:
            print("no drill schedules" + (f" for BIN {args.number}" if args.number is not None else ""))
        for x in lines:
            local = x.next_at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
            print(f"BIN {x.bin_number:<6} {x.bin_name:<24} every {x.every_months} month(s), next {local}  "
                  f"(by {x.created_by})")
        return 0
    if args.number is None:
        raise CommandError("give the BIN number: binfoon bin drills 12 --every-months 3 --first 2027-01-15T10:00")
    if args.off and (args.every_months is not None or args.first is not None):
        raise CommandError("--off removes the schedule: give it alone")
    who = who_acts(settings, args.who)
    engine = open_database(settings.resolved_database_url)
    try:
        with session_scope(engine) as s:
            if args.off:
                removed = cancel_drill_schedule(s, args.number, who)
                print(f"BIN {args.number}: drill schedule removed" if removed
                      else f"BIN {args.number} had no drill schedule")
                return 0
            if args.every_months is None or args.first is None:
                raise CommandError("a schedule needs both --every-months N and --first WHEN")
            first = parse_when(args.first, settings, end_of_day=False)
            schedule = schedule_drill(s, args.number, args.every_months, first, who)
            local = schedule.next_at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
    except (DrillError, DrillRefused) as exc:
        raise CommandError(str(exc)) from None
    print(f"BIN {args.number}: a drill every {args.every_months} month(s), the first at {local}; the running "
          f"service keeps the alarm (quiet hours hold its calls like any preventive message).")
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    """The reach report of the BIN's latest drill (or ``--message``)."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as s:
        if args.message is None:
            drills = latest_drills(s, args.number, limit=1)
            if not drills:
                raise CommandError(f"BIN {args.number} has had no drill (start one: binfoon bin test {args.number})")
            message_id = drills[0]
        else:
            message_id = args.message
        try:
            report = reach_report(s, message_id)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
    if report.bin_number != args.number:
        raise CommandError(f"drill {message_id} is not a drill of BIN {args.number}")
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
        return 0
    print(render_report(report))
    return 0


def render_report(report: ReachReport) -> str:
    """The reach report as text: the figures, the wrong numbers, then every member."""
    c = report.counts()
    campaign = f"campaign {report.campaign_id}" if report.campaign_id else "no campaign yet"
    lines = [f"drill {report.message_id}  BIN {report.bin_number} ({report.bin_name})  {campaign}, {report.status}",
             f"  {c['members']} members: {c['reached']} reached ({c['confirmed']} confirmed), "
             f"{c['not_reached']} not reached" + (f", {c['pending']} still being called" if c["pending"] else "")
             + (f", {c['not_called']} not called (text only or opted out of calls)" if c["not_called"] else "")
             + f"; {c['wrong_numbers']} wrong number(s)"]
    for w in report.wrong_numbers:
        cause = f", cause {w.cause}" if w.cause is not None else ""
        lines.append(f"  wrong number: {w.name} (person {w.person_id}) {w.rank} {w.number}: {w.why}{cause}")
    for m in report.members:
        last = f"  last call: {m.last_outcome}" if m.last_outcome and m.state != "confirmed" else ""
        lines.append(f"  {m.person_id:>6}  {m.name:<28} {m.number:<16} {m.state:<12} {m.attempts} call(s){last}")
    return "\n".join(lines)
