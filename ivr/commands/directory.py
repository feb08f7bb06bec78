"""Directory commands: ``zone add``, ``bin add|list|show|edit|remove``, ``person add|pin|unlock``, ``person
sip-account add|rotate|remove|list``, ``members import|list|show|edit|remove|preferences``.

Every change is audited; every error is a clear message and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.commands.common import CommandError, actor
from ivr.config import Settings
from ivr.directory.store import (
    LANGUAGES,
    CsvImportError,
    DirectoryRefused,
    Household,
    NewPerson,
    NumberTaken,
    add_bin,
    add_person,
    add_zone,
    apply_member_import,
    bin_as_dict,
    bin_by_number,
    bins_with_member_counts,
    change_bin,
    member_as_dict,
    members_by_phone,
    members_of,
    parse_member_csv,
    phone_of,
    plan_member_import,
    record_numbers_shown,
    refuse_taken_numbers,
    remove_bin,
    remove_member,
    save_member,
    set_member_preferences,
    zone_by_code,
)
from ivr.directory.sip_accounts import (
    SipAccountError,
    add_sip_account,
    generate_password,
    publish_officers,
    read_password_file,
    remove_sip_account,
    rotate_sip_account,
    sip_accounts,
)
from ivr.domain.phone import InvalidPhoneNumber, mask, normalize_phone
from storage import audit
from storage.db import open_database, session_scope
from storage.models import Bin, Person, PoliceZone
from ivr.domain.vocabulary import Escalation, PhoneRank, ReviewMode, Role
from ivr.directory.pin_gate import find_person, set_pin, unlock
from storage.pins import PepperError, hash_pin, load_pepper, new_pin_problem


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the directory commands."""
    zone = sub.add_parser("zone", help="police zones").add_subparsers(dest="action", required=True)
    p = zone.add_parser("add", help="add a police zone")
    p.add_argument("--code", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--review-mode", choices=[m.value for m in ReviewMode], default=ReviewMode.SEQUENTIAL.value,
                   help="call the coordinators one after another (default) or all at once")
    p.add_argument("--urgent-escalation", choices=[e.value for e in Escalation], default=Escalation.AUTO_FORWARD.value,
                   help="an urgent message no coordinator decided on: forwarded (default), to the zone's police "
                        "approvers, or it waits")
    p.set_defaults(func=cmd_zone_add)
    from ivr.commands import admin as admin_cmd

    admin_cmd.register_zone_actions(zone)  # list, show, edit: the admin's tools

    bin_ = sub.add_parser("bin", help="neighbourhood information networks").add_subparsers(dest="action", required=True)
    p = bin_.add_parser("add", help="add a BIN")
    p.add_argument("--number", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--zone", required=True, help="police zone code")
    p.add_argument("--language", default="nl", choices=["nl", "fr", "de"])
    p.add_argument("--street", action="append", default=[], help="a street the BIN covers (repeatable)")
    p.set_defaults(func=cmd_bin_add)
    p = bin_.add_parser("list", help="list the BINs with their ids, zone, mode and member counts")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=cmd_bin_list)
    p = bin_.add_parser("show", help="one BIN: zone, language, one-level mode, streets, coordinators, members")
    p.add_argument("number", type=int, metavar="BIN", help="BIN number")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=cmd_bin_show)
    p = bin_.add_parser("edit", help="change a BIN's name, language, zone, streets or one-level mode (audited)")
    p.add_argument("number", type=int, metavar="BIN", help="BIN number")
    p.add_argument("--name")
    p.add_argument("--language", choices=["nl", "fr", "de"])
    p.add_argument("--zone", help="move the BIN to this police zone (code)")
    p.add_argument("--one-level", choices=["yes", "no"],
                   help="yes: police messages go straight to the members, the coordinators are told afterwards")
    p.add_argument("--street", action="append", help="the streets the BIN covers (repeatable; replaces the list)")
    p.set_defaults(func=cmd_bin_edit)
    p = bin_.add_parser("remove", help="delete a BIN that never had a police message (one with messages is kept)")
    p.add_argument("number", type=int, metavar="BIN", help="BIN number")
    p.add_argument("--yes", action="store_true", help="confirm: its members and coordinators lose their role in it")
    p.set_defaults(func=cmd_bin_remove)
    from ivr.commands import drill as drill_cmd

    drill_cmd.register_bin_actions(bin_)  # `bin test`, `bin drills`: the drills' own module

    person = sub.add_parser("person", help="people and their roles").add_subparsers(dest="action", required=True)
    p = person.add_parser("add", help="add a person with a role")
    p.add_argument("--name", required=True)
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--bin", type=int, help="BIN number (coordinators, members)")
    p.add_argument("--zone", help="police zone code (police officers)")
    p.add_argument("--phone", required=True)
    p.add_argument("--second-phone")
    p.add_argument("--language", default="nl", choices=["nl", "fr", "de"])
    p.add_argument("--priority", type=int, help="coordinators are called in this order, lowest first "
                                                "(default: after the BIN's last coordinator)")
    pin = p.add_mutually_exclusive_group()
    pin.add_argument("--pin-file", type=Path, help="read the PIN from this file (never give it on the command line)")
    pin.add_argument("--pin-stdin", action="store_true", help="read the PIN from standard input")
    p.set_defaults(func=cmd_person_add)
    p = person.add_parser("pin", help="give a person a new PIN (6 to 8 digits; rotates an older 4-digit PIN)")
    p.add_argument("person", metavar="PERSON", help="person id or exact name")
    pin = p.add_mutually_exclusive_group(required=True)
    pin.add_argument("--pin-file", type=Path, help="read the PIN from this file (never give it on the command line)")
    pin.add_argument("--pin-stdin", action="store_true", help="read the PIN from standard input")
    p.set_defaults(func=cmd_person_pin)
    p = person.add_parser("unlock", help="end a person's PIN locks (their account, numbers and SIP account)")
    p.add_argument("person", metavar="PERSON", help="person id or exact name")
    p.set_defaults(func=cmd_person_unlock)
    _register_sip_accounts(person)
    from ivr.commands import admin as admin_cmd

    admin_cmd.register_person_actions(person)  # list, show, edit, deactivate, role: the admin's tools

    members = sub.add_parser("members", help="a BIN's member households").add_subparsers(dest="action", required=True)
    p = members.add_parser("import", help="make a BIN's members those of a CSV file (name, phone, second phone, "
                                          "street, language); shows what changes, removes only with --yes")
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
    p = members.add_parser("show", help="one member household: numbers (masked), BINs, window and pause")
    p.add_argument("person", type=int, metavar="ID", help="the member's person id (see `binfoon members list`)")
    p.add_argument("--show-numbers", action="store_true", help="show full phone numbers (audited)")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=cmd_members_show)
    p = members.add_parser("edit", help="change a member household's name, street, language or numbers (audited)")
    p.add_argument("person", type=int, metavar="ID", help="the member's person id")
    p.add_argument("--name")
    p.add_argument("--street", help="the street ('none' to clear)")
    p.add_argument("--language", choices=["nl", "fr", "de"])
    p.add_argument("--phone", help="the first number")
    p.add_argument("--second-phone", help="the second number ('none' to clear)")
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


def _register_sip_accounts(person: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sip = person.add_parser(
        "sip-account", help="an officer's own SIP account (optional): the police line from a softphone, "
                            "the account instead of caller ID as the first factor (the PIN is still asked)",
    ).add_subparsers(dest="sip_action", required=True)
    for action, text, func in (
        ("add", "give a police officer a SIP account", cmd_sip_account_add),
        ("rotate", "give an officer's SIP account a new password", cmd_sip_account_rotate),
        ("remove", "delete an officer's SIP account", cmd_sip_account_remove),
    ):
        p = sip.add_parser(action, help=text)
        p.add_argument("person", type=int, metavar="PERSON", help="person id (see `binfoon person add`)")
        if action == "add":
            p.add_argument("--username", help="SIP username (default: officer-PERSON)")
        if action != "remove":
            source = p.add_mutually_exclusive_group()
            source.add_argument("--password-file", type=Path,
                                help="read the password from this file (first line; mode 0600). "
                                     "Default: a password is generated and shown once")
            source.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        _instance_arguments(p)
        p.set_defaults(func=func)
    p = sip.add_parser("list", help="list the officers' SIP accounts (never a password)")
    p.add_argument("person", type=int, nargs="?", metavar="PERSON", help="only this person's account")
    p.set_defaults(func=cmd_sip_account_list)


def _instance_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="default", help="the Asterisk instance to update (default: default)")
    p.add_argument("--instance-dir", type=Path, help="where the instance lives (default: the standard place)")


def _zone(session: Session, code: str) -> PoliceZone:
    zone = zone_by_code(session, code)
    if zone is None:
        raise CommandError(f"no police zone with code {code!r} (add it with `binfoon zone add`)")
    return zone


def _bin(session: Session, number: int) -> Bin:
    found = bin_by_number(session, number)
    if found is None:
        raise CommandError(f"no BIN number {number} (add it with `binfoon bin add`)")
    return found


def cmd_zone_add(settings: Settings, args: argparse.Namespace) -> int:
    """Add a police zone."""
    engine = open_database(settings.resolved_database_url)
    try:
        with session_scope(engine) as session:
            add_zone(session, args.code, args.name, ReviewMode(args.review_mode), Escalation(args.urgent_escalation),
                     actor())
    except IntegrityError:
        raise CommandError(f"police zone {args.code!r} already exists") from None
    print(f"police zone {args.code} added")
    return 0


def cmd_bin_add(settings: Settings, args: argparse.Namespace) -> int:
    """Add a BIN to a zone."""
    if args.number <= 0:
        raise CommandError("--number must be a positive number (it is typed on a phone keypad)")
    engine = open_database(settings.resolved_database_url)
    try:
        with session_scope(engine) as session:
            add_bin(session, args.number, args.name, _zone(session, args.zone), LANGUAGES[args.language],
                    args.street, actor())
    except IntegrityError:
        raise CommandError(f"BIN number {args.number} already exists") from None
    print(f"BIN {args.number} ({args.name}) added to zone {args.zone}")
    return 0


def _json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=1, default=str))


def cmd_bin_list(settings: Settings, args: argparse.Namespace) -> int:
    """List the BINs with their ids, zone, language, mode and member counts."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        rows = [bin_as_dict(session, bin_) for bin_, _members in bins_with_member_counts(session)]
    if args.json:
        _json(rows)
        return 0
    for b in rows:
        mode = "  one-level" if b["one_level"] else ""
        print(f"{b['number']:>6}  {b['name']}  zone {b['zone']}  {b['language']}  {b['members']} members  "
              f"{len(b['coordinators'])} coordinator(s)  (id {b['id']}){mode}")
    return 0


def cmd_bin_show(settings: Settings, args: argparse.Namespace) -> int:
    """One BIN's details."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        b = bin_as_dict(session, _bin(session, args.number))
    if args.json:
        _json(b)
        return 0
    print(f"BIN {b['number']} (id {b['id']}): {b['name']}, zone {b['zone']} ({b['zone_name']}), {b['language']}, "
          f"{'one-level: police messages go straight to the members' if b['one_level'] else 'reviewed by its coordinators'}")
    print(f"  streets:      {', '.join(b['streets']) or 'none'}")
    print(f"  members:      {b['members']}")
    print(f"  messages:     {b['messages']}")
    for c in b["coordinators"]:
        print(f"  coordinator   {c['id']:>6}  {c['name']}  priority {c['priority']}  {c['phone'] or '-'}"
              f"{'' if c['active'] else '  [deactivated]'}")
    if not b["coordinators"]:
        print("  coordinators: none (nobody reviews its messages)")
    return 0


def cmd_bin_edit(settings: Settings, args: argparse.Namespace) -> int:
    """Change a BIN (audited with old and new values); nothing given is an error."""
    if all(v is None for v in (args.name, args.language, args.zone, args.one_level, args.street)):
        raise CommandError("nothing to change: give --name, --language, --zone, --one-level or --street")
    if args.name is not None and not args.name.strip():
        raise CommandError("--name: the name is empty")
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        bin_ = _bin(session, args.number)
        changed = change_bin(session, bin_, actor(), name=args.name.strip() if args.name else None,
                             language=LANGUAGES[args.language] if args.language else None,
                             zone=_zone(session, args.zone) if args.zone else None,
                             one_level=None if args.one_level is None else args.one_level == "yes",
                             streets=args.street)
    print(f"BIN {args.number}: " + (f"{', '.join(changed)} changed" if changed else "nothing changed"))
    return 0


def cmd_bin_remove(settings: Settings, args: argparse.Namespace) -> int:
    """Delete a BIN without messages; one with people in it needs ``--yes``."""
    engine = open_database(settings.resolved_database_url)
    try:
        with session_scope(engine) as session:
            bin_ = _bin(session, args.number)
            details = bin_as_dict(session, bin_)
            people = details["members"] + len(details["coordinators"])
            if people and not args.yes and not details["messages"]:
                raise CommandError(f"BIN {args.number} has {details['members']} member(s) and "
                                   f"{len(details['coordinators'])} coordinator(s): they lose their role in it. "
                                   "Nothing was removed; add --yes to remove it")
            roles = remove_bin(session, bin_, actor())
    except DirectoryRefused as exc:
        raise CommandError(str(exc)) from None
    print(f"BIN {args.number} removed ({roles} role(s) in it ended; the people stay in the directory)")
    return 0


def _read_pin(args: argparse.Namespace) -> str | None:
    if args.pin_file:
        try:
            pin = args.pin_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CommandError(f"cannot read the PIN file: {exc.strerror}") from None
    elif args.pin_stdin:
        pin = sys.stdin.readline().strip()
    else:
        return None
    problem = new_pin_problem(pin)
    if problem is not None:
        source = "--pin-file" if args.pin_file else "--pin-stdin"
        raise CommandError(f"{source}: {problem}")
    return pin


def _person_arg(session: Session, ref: str) -> Person:
    """The person the PERSON argument names (a name or an id), or a clear command-line error."""
    try:
        return find_person(session, ref)
    except LookupError as exc:
        raise CommandError(f"PERSON: {exc}") from None


def _pepper(settings: Settings) -> bytes:
    try:
        return load_pepper(settings.pin_pepper_path)
    except PepperError as exc:
        raise CommandError(f"pin_pepper_file: {exc}") from None


def cmd_person_pin(settings: Settings, args: argparse.Namespace) -> int:
    """Give a person a new PIN (peppered hash); audited, never printed."""
    pin = _read_pin(args)
    assert pin is not None  # the PIN source is required
    pepper = _pepper(settings)
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        person = _person_arg(session, args.person)
        set_pin(session, person, pin, pepper, actor())
        print(f"person {person.id} ({person.name}): new PIN set")
    return 0


def cmd_person_unlock(settings: Settings, args: argparse.Namespace) -> int:
    """End every PIN lock of a person (after a spoofer locked them out, say); audited."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        person = _person_arg(session, args.person)
        cleared = unlock(session, person, actor(), dt.datetime.now(dt.timezone.utc))
        print(f"person {person.id} ({person.name}): PIN locks cleared ({', '.join(cleared) or 'account'})")
    return 0


def cmd_person_add(settings: Settings, args: argparse.Namespace) -> int:
    """Add a person with one role, phone numbers and (for officers, admins) a PIN."""
    role = Role(args.role)
    try:
        # Numbers BINfoon may call (review, member calls): the destination policy refuses premium,
        # satellite and far-away ones with the reason (a RefusedDestination is an InvalidPhoneNumber).
        phone = settings.destinations.dialable(args.phone)
        second = settings.destinations.dialable(args.second_phone) if args.second_phone else None
    except InvalidPhoneNumber as exc:
        raise CommandError(f"phone: {exc}") from None
    if role in (Role.COORDINATOR, Role.MEMBER) and args.bin is None:
        raise CommandError(f"a {role.value} belongs to a BIN: give --bin")
    if role in (Role.POLICE_OFFICER, Role.POLICE_APPROVER) and args.zone is None:
        raise CommandError("a police officer belongs to a zone: give --zone")
    pin = _read_pin(args)
    if role in (Role.POLICE_OFFICER, Role.POLICE_APPROVER, Role.ADMIN) and pin is None:
        raise CommandError(f"a {role.value} calls in with a PIN: give --pin-file or --pin-stdin")
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        new = NewPerson(name=args.name, role=role, language=LANGUAGES[args.language], phone=phone,
                        second_phone=second, priority=args.priority,
                        bin_id=_bin(session, args.bin).id if args.bin is not None else None,
                        zone_id=_zone(session, args.zone).id if args.zone is not None else None,
                        pin_hash=hash_pin(pin, _pepper(settings)) if pin else None)
        try:
            person_id = add_person(session, new, actor(), bin=args.bin, zone=args.zone)
        except NumberTaken as exc:
            raise CommandError(f"phone: {exc}") from None
    print(f"person {person_id} ({args.name}) added as {role.value}")
    return 0


def _read_member_file(raw: str) -> bytes:
    if raw == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(raw).read_bytes()
    except OSError as exc:
        raise CommandError(f"{raw}: {exc.strerror}") from None


def cmd_members_import(settings: Settings, args: argparse.Namespace) -> int:
    """Make a BIN's member list the CSV file's (``merge``: add and update only). A bad file changes
    nothing; removing anyone needs ``--yes``; ``--dry-run`` only shows what would change."""
    name = "standard input" if args.file == "-" else args.file
    data = _read_member_file(args.file)
    try:
        rows = parse_member_csv(data, settings.destinations)
    except CsvImportError as exc:
        for error in exc.errors:
            print(f"{name}: {error}", file=sys.stderr)
        raise CommandError(f"{name}: {len(exc.errors)} error(s); nothing was imported") from None
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        bin_ = _bin(session, args.bin)
        try:
            plan = plan_member_import(session, bin_, rows, args.mode)
        except CsvImportError as exc:
            for error in exc.errors:
                print(f"{name}: {error}", file=sys.stderr)
            raise CommandError(f"{name}: {len(exc.errors)} error(s); nothing was imported") from None
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
    reused = f", {len(plan.reused)} of them already in the directory" if plan.reused else ""
    print(f"BIN {args.bin}: {result.added} added, {result.updated} updated, {result.removed} removed "
          f"({len(rows)} members{reused}; mode {args.mode})")
    return 0


def cmd_members_list(settings: Settings, args: argparse.Namespace) -> int:
    """List a BIN's members with their ids; numbers are masked unless asked for (and then audited)."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        people = members_of(session, _bin(session, args.bin).id)
        if args.show_numbers:
            record_numbers_shown(session, args.bin, len(people), actor())
        rows = [member_as_dict(session, person, args.show_numbers) for person in people]
    if args.json:
        _json(rows)
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
    if args.json:
        _json(m)
        return 0
    print(f"member {m['id']}: {m['name']} ({m['language']}){'' if m['active'] else '  [deactivated]'}")
    print(f"  BIN(s):  {', '.join(str(b) for b in m['bins'])}")
    print(f"  numbers: {' / '.join(n for n in (m['phone'], m['second_phone']) if n)}")
    print(f"  street:  {m['street'] or '-'}")
    print(f"  window:  {m['window'] or '-'}   pause: {m['pause'] or '-'}")
    return 0


def cmd_members_edit(settings: Settings, args: argparse.Namespace) -> int:
    """Change a member household; a number another household of the same BIN has is refused."""
    if all(v is None for v in (args.name, args.street, args.language, args.phone, args.second_phone)):
        raise CommandError("nothing to change: give --name, --street, --language, --phone or --second-phone")
    try:
        phone = settings.destinations.dialable(args.phone) if args.phone is not None else None
        second = (settings.destinations.dialable(args.second_phone)
                  if args.second_phone not in (None, "none") else None)
    except InvalidPhoneNumber as exc:
        raise CommandError(f"phone: {exc}") from None
    if args.name is not None and not args.name.strip():
        raise CommandError("--name: the name is empty")
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
            second_phone=second if args.second_phone is not None else (current_second.e164 if current_second else None))
        if household.second_phone == household.phone:
            raise CommandError("the second phone is the same as the first")
        for bin_id in [r.bin_id for r in person.roles if r.role is Role.MEMBER]:
            try:
                refuse_taken_numbers(session, [n for n in (household.phone, household.second_phone) if n],
                                     Role.MEMBER, bin_id=bin_id, except_person=person.id)
            except NumberTaken as exc:
                raise CommandError(f"phone: {exc}") from None
        save_member(session, person.id, household, actor())
    print(f"member {args.person} ({household.name}) saved")
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
        bin_ = _bin(session, args.bin) if args.bin is not None else session.get_one(Bin, bins[0])
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
        found = members_by_phone(session, phone, _bin(session, args.bin).id if args.bin is not None else None)
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


def _sip_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password given (file or stdin), or a generated one; and whether it was generated."""
    if args.password_file:
        try:
            return read_password_file(args.password_file), False
        except SipAccountError as exc:
            raise CommandError(f"--password-file: {exc}") from None
    if args.password_stdin:
        return sys.stdin.readline().strip(), False
    return generate_password(), True


def _publish(settings: Settings, args: argparse.Namespace, engine: Engine) -> None:
    """Write the officers' file of the instance and, if it runs, make PJSIP reload it. The database
    is the truth and is already committed: a failure here is reported, and the service writes the
    file again when it starts."""
    from ivr.asterisk.officers import ReloadError
    from ivr.commands.asterisk import instance_for

    try:
        instance = instance_for(settings, args.name, args.instance_dir)
        runtime = instance.runtime
        group = runtime.asterisk_user()[1] if runtime.root is not None else None
        running = instance.is_running() and os.geteuid() == 0
        publish_officers(engine, instance.run_dir, group, reload=running)
    except (CommandError, OSError, ReloadError) as exc:
        print(f"binfoon: stored, but Asterisk was not updated ({exc}); "
              "it takes effect when `binfoon serve` starts", file=sys.stderr)
        return
    print("Asterisk reloaded its SIP accounts" if running else
          "written: a running Asterisk reloads it (systemd's binfoon-officers.path, or "
          "`binfoon asterisk reload-pjsip` as root); a stopped one reads it when it starts")


def _sip_change(settings: Settings, args: argparse.Namespace, change: Callable[[Session], str]) -> int:
    engine = open_database(settings.resolved_database_url)
    try:
        with session_scope(engine) as session:
            said = change(session)
    except SipAccountError as exc:
        raise CommandError(str(exc)) from None
    print(said)
    _publish(settings, args, engine)
    return 0


def cmd_sip_account_add(settings: Settings, args: argparse.Namespace) -> int:
    """Give a police officer a SIP account; a generated password is shown once and never stored."""
    password, generated = _sip_password(args)

    def change(session: Session) -> str:
        account = add_sip_account(session, args.person, password, actor(), username=args.username)
        return _account_text(f"SIP account {account.username!r} added for person {args.person}", account.username,
                             password if generated else None)
    return _sip_change(settings, args, change)


def cmd_sip_account_rotate(settings: Settings, args: argparse.Namespace) -> int:
    """Give an officer's SIP account a new password (the old one stops working at once)."""
    password, generated = _sip_password(args)

    def change(session: Session) -> str:
        account = rotate_sip_account(session, args.person, password, actor())
        return _account_text(f"SIP account {account.username!r} of person {args.person} has a new password",
                             account.username, password if generated else None)
    return _sip_change(settings, args, change)


def cmd_sip_account_remove(settings: Settings, args: argparse.Namespace) -> int:
    """Delete an officer's SIP account (its endpoint disappears from Asterisk)."""
    def change(session: Session) -> str:
        return f"SIP account {remove_sip_account(session, args.person, actor())!r} of person {args.person} removed"
    return _sip_change(settings, args, change)


def cmd_sip_account_list(settings: Settings, args: argparse.Namespace) -> int:
    """List the SIP accounts: username, person, and whether the person may still use it."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        rows = [(a, live) for a, live in sip_accounts(session) if args.person is None or a.person_id == args.person]
        if args.person is not None and not rows:
            raise CommandError(f"person {args.person} has no SIP account")
        for account, live in rows:
            state = "active" if live else "inactive (no active police role)"
            changed = (account.rotated_at or account.created_at).strftime("%Y-%m-%d %H:%M")
            print(f"{account.username:<28} person {account.person_id:<6} {account.person.name}  "
                  f"({state}; password set {changed} UTC)")
    return 0


def _account_text(head: str, username: str, generated: str | None) -> str:
    if generated is None:
        return head
    # Shown once: only its digest is stored, so nobody can show it again.
    return f"{head}\nSIP username: {username}\nSIP password (shown once, not stored): {generated}"
