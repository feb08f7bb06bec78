"""``binfoon members import|list|show|edit|remove|preferences``: a BIN's member households, kept by
its coordinator as a CSV file and changed one by one.

Every change is audited; every error is a clear message and writes nothing; full numbers (and
e-mail addresses) are shown only when asked for, and that is audited too. A member's channels are
their own ("voice+sms", "text" for text only) or their zone's defaults; a choice they cannot receive
(SMS without a mobile number, e-mail without an address) is refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ivr.commands.bins import find_bin, print_json
from ivr.commands.common import CommandError, actor
from ivr.config import Settings
from ivr.directory.member_csv import LANGUAGES
from ivr.directory.member_import import CsvImportError, apply_member_import, parse_member_csv, plan_member_import
from ivr.directory.people import NumberTaken, phone_of, refuse_taken_numbers
from ivr.directory.store import (
    OPT_OUT_NAMES,
    DirectoryRefused,
    Household,
    clear_opt_out,
    member_as_dict,
    member_bin,
    members_by_phone,
    members_of,
    opt_outs,
    record_numbers_shown,
    remove_member,
    save_member,
    set_member_preferences,
    unreachable_channels,
    zone_channel_defaults,
)
from ivr.domain.channels import InvalidChannels, check_email, format_channels, parse_channels
from ivr.domain.phone import InvalidPhoneNumber, mask, normalize_phone
from ivr.domain.vocabulary import Channel, PhoneRank, Role, Urgency
from storage import audit
from storage.db import open_database, session_scope
from storage.models import Bin, Person


def register_member_actions(members: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the member actions to the ``members`` command (called by ``ivr.commands.directory``)."""
    p = members.add_parser("import", help="make a BIN's members those of a CSV file (name, phone, second phone, "
                                          "street, language, channels, email); shows what changes, removes "
                                          "only with --yes")
    p.add_argument("--bin", type=int, required=True)
    p.add_argument("file", metavar="FILE", help="the CSV file, or - for standard input")
    p.add_argument("--mode", choices=["replace", "merge"], default="replace",
                   help="replace (default): the file is the whole list, members not in it are removed (with "
                        "--yes); merge: add and update only, never remove")
    p.add_argument("--dry-run", action="store_true", help="list who would be added, changed and removed; "
                                                          "write nothing")
    p.add_argument("--yes", action="store_true", help="confirm removing the members the file no longer has")
    p.set_defaults(func=cmd_members_import)
    p = members.add_parser("list", help="list a BIN's members (with their person ids)")
    p.add_argument("--bin", type=int, required=True)
    p.add_argument("--show-numbers", action="store_true", help="show full phone numbers (audited)")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=cmd_members_list)
    p = members.add_parser("show", help="one member household: numbers and e-mail (masked), BINs, window and "
                                        "pause, channels and opt-outs")
    p.add_argument("person", type=int, metavar="ID", help="the member's person id (see `binfoon members list`)")
    p.add_argument("--show-numbers", action="store_true", help="show full phone numbers and e-mail (audited)")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=cmd_members_show)
    p = members.add_parser("edit", help="change a member household's name, street, language, numbers, channels "
                                        "or e-mail (audited)")
    p.add_argument("person", type=int, metavar="ID", help="the member's person id")
    p.add_argument("--name")
    p.add_argument("--street", help="the street ('none' to clear)")
    p.add_argument("--language", choices=["nl", "fr", "de"])
    p.add_argument("--phone", help="the first number")
    p.add_argument("--second-phone", help="the second number ('none' to clear)")
    p.add_argument("--channels", help="the member's own channels: voice, sms, email joined by + (e.g. voice+sms), "
                                      "'text' for text only; 'default' (or 'none') for the zone's defaults")
    p.add_argument("--email", help="where e-mail copies go ('none' to clear)")
    p.add_argument("--clear-opt-out", action="append", default=[], choices=["calls", "sms", "email"],
                   help="take the member back in on a channel they opted out of (repeatable; audited)")
    p.set_defaults(func=cmd_members_edit)
    p = members.add_parser("remove", help="take a household off a BIN's members (its call history stays)")
    p.add_argument("person", type=int, metavar="ID", help="the member's person id")
    p.add_argument("--bin", type=int, help="the BIN (needed when the household is a member of several)")
    p.set_defaults(func=cmd_members_remove)
    p = members.add_parser("preferences", help="a member's own window for preventive calls and holiday pause")
    p.add_argument("--phone", required=True, help="the member's phone number")
    p.add_argument("--bin", type=int, help="the member's BIN (needed when the number is in several)")
    p.add_argument("--window", help="local hours for preventive calls, e.g. 18:00-20:00 ('none' to clear)")
    p.add_argument("--pause", help="no preventive calls between two dates, e.g. 2026-12-20..2027-01-05 "
                                   "('none' to clear)")
    p.set_defaults(func=cmd_members_preferences)


def _read_member_file(raw: str) -> bytes:
    if raw == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(raw).read_bytes()
    except OSError as exc:
        raise CommandError(f"{raw}: {exc.strerror}") from None


def _refused(name: str, exc: CsvImportError) -> CommandError:
    """Print every error of the refused file; the one-line error that ends the command."""
    for error in exc.errors:
        print(f"{name}: {error}", file=sys.stderr)
    return CommandError(f"{name}: {len(exc.errors)} error(s); nothing was imported")


def cmd_members_import(settings: Settings, args: argparse.Namespace) -> int:
    """Make a BIN's member list the CSV file's (``merge``: add and update only). A bad file changes
    nothing; removing anyone needs ``--yes``; ``--dry-run`` only shows what would change."""
    name = "standard input" if args.file == "-" else args.file
    data = _read_member_file(args.file)
    try:
        rows = parse_member_csv(data, settings.destinations)
    except CsvImportError as exc:
        raise _refused(name, exc) from None
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        bin_ = find_bin(session, args.bin)
        try:
            plan = plan_member_import(session, bin_, rows, args.mode)
        except CsvImportError as exc:
            raise _refused(name, exc) from None
        if args.dry_run:
            for line in plan.lines():
                print(line)
            print(f"{plan.summary()}; dry run: nothing was written")
            return 0
        if plan.removed and not args.yes:
            for line in plan.lines():
                print(line)
            raise CommandError(f"BIN {args.bin}: {len(plan.removed)} member(s) are not in {name} and would be "
                               "removed. Nothing was written: add --yes to remove them, or --mode merge to keep "
                               "them")
        result = apply_member_import(session, bin_, rows, plan, actor())
    for line in plan.not_applied_lines():  # people already in the directory keep their own channels, address
        print(line)
    reused = f", {len(plan.reused)} of them already in the directory" if plan.reused else ""
    print(f"BIN {args.bin}: {result.added} added, {result.updated} updated, {result.removed} removed "
          f"({len(rows)} members{reused}; mode {args.mode})")
    return 0


def cmd_members_list(settings: Settings, args: argparse.Namespace) -> int:
    """List a BIN's members with their ids; numbers are masked unless asked for (and then audited)."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        people = members_of(session, find_bin(session, args.bin).id)
        if args.show_numbers:
            record_numbers_shown(session, args.bin, len(people), actor())
        rows = [member_as_dict(session, person, args.show_numbers) for person in people]
    if args.json:
        print_json(rows)
        return 0
    for m in rows:
        numbers = " / ".join(n for n in (m["phone"], m["second_phone"]) if n)
        print(f"{m['id']}\t{m['name']}\t{numbers}\t{m['street'] or ''}\t{m['language']}")
    return 0


def _member(session: Session, person_id: int) -> Person:
    person = session.get(Person, person_id)
    if person is None or not any(r.role is Role.MEMBER for r in person.roles):
        raise CommandError(f"no member with person id {person_id} (see `binfoon members list --bin N`)")
    return person


def cmd_members_show(settings: Settings, args: argparse.Namespace) -> int:
    """One member household's details (numbers masked unless asked for, then audited)."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        person = _member(session, args.person)
        if args.show_numbers:
            audit.record(session, actor(), "member.opened", f"person:{person.id}")
        m = member_as_dict(session, person, args.show_numbers)
        defaults = _defaults_line(session, person, settings)
        shown_opt_outs = _opt_outs_line(person, settings)
    if args.json:
        print_json(m)
        return 0
    print(f"member {m['id']}: {m['name']} ({m['language']}){'' if m['active'] else '  [deactivated]'}")
    print(f"  BIN(s):  {', '.join(str(b) for b in m['bins'])}")
    print(f"  numbers: {' / '.join(n for n in (m['phone'], m['second_phone']) if n)}")
    print(f"  street:  {m['street'] or '-'}")
    print(f"  window:  {m['window'] or '-'}   pause: {m['pause'] or '-'}")
    print(f"  channels: {m['channels'] or 'zone default: ' + defaults}")
    print(f"  e-mail:  {m['email'] or '-'}")
    print(f"  opt-outs: {shown_opt_outs or 'none'}")
    return 0


#: The opt-out each ``--clear-opt-out`` name clears (the names ``members show`` and its JSON use).
OPT_OUT_CHANNELS = {name: channel for channel, name in OPT_OUT_NAMES.items()}
#: What ``--channels`` takes for "no choice of their own: the zone's defaults" (any case).
ZONE_DEFAULT_WORDS = ("default", "none")


def _opt_outs_line(person: Person, settings: Settings) -> str:
    """``calls since 2026-12-06 14:03; sms since ...`` (local time), or ``""`` for none."""
    return "; ".join(f"{OPT_OUT_NAMES[c]} since {when.astimezone(settings.tz):%Y-%m-%d %H:%M}"
                     for c, when in opt_outs(person).items())


def _defaults_line(session: Session, person: Person, settings: Settings) -> str:
    """The channels a member without their own gets: ``urgent voice+sms, preventive voice+email``."""
    bin_ = member_bin(session, person.id)
    if bin_ is None:
        return "-"
    defaults = zone_channel_defaults(bin_.zone, settings)
    return ", ".join(f"{u.value} {format_channels(defaults[u])}" for u in (Urgency.URGENT, Urgency.PREVENTIVE))


def cmd_members_edit(settings: Settings, args: argparse.Namespace) -> int:
    """Change a member household; a number another household of the same BIN has is refused, and so
    are channels the household could not receive (SMS without a mobile number, e-mail without an address)."""
    editing = any(v is not None for v in (args.name, args.street, args.language, args.phone, args.second_phone,
                                          args.channels, args.email))
    if not editing and not args.clear_opt_out:
        raise CommandError("nothing to change: give --name, --street, --language, --phone, --second-phone, "
                           "--channels, --email or --clear-opt-out")
    try:
        phone = settings.destinations.dialable(args.phone) if args.phone is not None else None
        second = (settings.destinations.dialable(args.second_phone)
                  if args.second_phone not in (None, "none") else None)
    except InvalidPhoneNumber as exc:
        raise CommandError(f"phone: {exc}") from None
    if args.name is not None and not args.name.strip():
        raise CommandError("--name: the name is empty")
    channels = email = None
    try:
        if args.channels is not None and args.channels.strip().lower() not in ZONE_DEFAULT_WORDS:
            channels = format_channels(parse_channels(args.channels))
    except InvalidChannels as exc:
        raise CommandError(f"--channels: {exc}") from None
    try:
        if args.email is not None and args.email.strip().lower() != "none":
            email = check_email(args.email)
    except ValueError as exc:
        raise CommandError(f"--email: {exc}") from None
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        person = _member(session, args.person)
        primary = phone_of(person, PhoneRank.PRIMARY)
        current_second = phone_of(person, PhoneRank.SECONDARY)
        household = Household(
            name=args.name.strip() if args.name is not None else person.name,
            street=(None if args.street == "none" else args.street) if args.street is not None else person.street,
            language=LANGUAGES[args.language] if args.language else person.language,
            phone=phone or (primary.e164 if primary else ""),
            second_phone=second if args.second_phone is not None else (current_second.e164 if current_second else None),
            channels=channels if args.channels is not None else person.channels,
            email=email if args.email is not None else person.email)
        if household.second_phone == household.phone:
            raise CommandError("the second phone is the same as the first")
        unreachable = unreachable_channels(household.channels, (household.phone, household.second_phone),
                                           household.email) if editing else []
        if Channel.SMS in unreachable:
            raise CommandError(f"channels {household.channels}: SMS needs a mobile number, and the member has none "
                               "(give --channels without sms, or a mobile --phone / --second-phone)")
        if Channel.EMAIL in unreachable:
            raise CommandError(f"channels {household.channels}: e-mail needs an address (give --email, or "
                               "--channels without email)")
        for bin_id in [r.bin_id for r in person.roles if r.role is Role.MEMBER]:
            try:
                refuse_taken_numbers(session, [n for n in (household.phone, household.second_phone) if n],
                                     Role.MEMBER, bin_id=bin_id, except_person=person.id)
            except NumberTaken as exc:
                raise CommandError(f"phone: {exc}") from None
        if editing:
            save_member(session, person.id, household, actor())
        cleared = {name: clear_opt_out(session, person, OPT_OUT_CHANNELS[name], actor())
                   for name in dict.fromkeys(args.clear_opt_out)}
    done = ["saved"] if editing else []
    done += [f"{name}: back in" if was else f"{name}: not opted out, nothing to clear" for name, was in cleared.items()]
    print(f"member {args.person} ({household.name}) {'; '.join(done)}")
    return 0


def cmd_members_remove(settings: Settings, args: argparse.Namespace) -> int:
    """Take a household off a BIN (audited); the person and their call history stay."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        person = _member(session, args.person)
        bins = [r.bin_id for r in person.roles if r.role is Role.MEMBER]
        if args.bin is None and len(bins) > 1:
            numbers = sorted(session.get_one(Bin, b).number for b in bins if b is not None)
            raise CommandError(f"person {person.id} ({person.name}) is a member of BINs "
                               f"{', '.join(map(str, numbers))}: give --bin")
        bin_ = find_bin(session, args.bin) if args.bin is not None else session.get_one(Bin, bins[0])
        try:
            remove_member(session, person, bin_, actor())
        except DirectoryRefused as exc:
            raise CommandError(str(exc)) from None
        print(f"member {person.id} ({person.name}) removed from BIN {bin_.number}")
    return 0


def cmd_members_preferences(settings: Settings, args: argparse.Namespace) -> int:
    """Set or clear a member's personal call window and holiday pause (urgent calls ignore both)."""
    from ivr.delivery.policy import Window

    try:
        phone = normalize_phone(args.phone)
    except InvalidPhoneNumber as exc:
        raise CommandError(f"phone: {exc}") from None
    window = pause = None
    if args.window and args.window != "none":
        try:
            parsed = Window.parse(args.window)
        except ValueError as exc:
            raise CommandError(f"--window: {exc}") from None
        window = (parsed.start.strftime("%H:%M"), parsed.end.strftime("%H:%M"))
    if args.pause and args.pause != "none":
        try:
            start, end = (dt.date.fromisoformat(part.strip()) for part in args.pause.split(".."))
        except ValueError:
            raise CommandError(f"--pause: {args.pause!r} is not two dates like 2026-12-20..2027-01-05") from None
        if end < start:
            raise CommandError("--pause: the pause ends before it starts")
        pause = (start, end)
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        found = members_by_phone(session, phone, find_bin(session, args.bin).id if args.bin is not None else None)
        where = f" in BIN {args.bin}" if args.bin is not None else ""
        if not found:
            raise CommandError(f"no member with phone {mask(phone)}{where}")
        if len({p.id for p, _b in found}) > 1:
            matches = "; ".join(f"person {p.id} ({p.name}, BIN {b.number})" for p, b in found)
            raise CommandError(f"phone {mask(phone)}{where} is the number of more than one member: {matches}. "
                               "Give --bin (or change the number with `binfoon members edit`)")
        person = found[0][0]
        changes: dict[str, Any] = {}
        if args.window is not None:
            changes["window"] = window
        if args.pause is not None:
            changes["pause"] = pause
        set_member_preferences(session, person, actor(), **changes)
        print(f"{person.name}: window {person.call_window_start or '-'}-{person.call_window_end or '-'}, "
              f"pause {person.pause_from or '-'}..{person.pause_until or '-'}")
    return 0
