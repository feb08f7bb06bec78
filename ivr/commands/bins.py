"""``binfoon bin add|list|show|edit|remove``: the BINs (neighbourhood information networks) of the
police zones; and the BIN and zone arguments the other directory commands look up.

Every change is audited; every error is a clear message and writes nothing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.commands.common import CommandError, actor
from ivr.config import Settings
from ivr.directory.member_csv import LANGUAGES
from ivr.directory.store import (
    DirectoryRefused,
    add_bin,
    all_bins,
    bin_as_dict,
    bin_by_number,
    change_bin,
    remove_bin,
    zone_by_code,
)
from storage.db import open_database, session_scope
from storage.models import Bin, PoliceZone


def register_bin_actions(bin_: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the BIN actions to the ``bin`` command (called by ``ivr.commands.directory``)."""
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


def find_zone(session: Session, code: str) -> PoliceZone:
    """The police zone a ``--zone`` argument names, or a clear command-line error."""
    zone = zone_by_code(session, code)
    if zone is None:
        raise CommandError(f"no police zone with code {code!r} (add it with `binfoon zone add`)")
    return zone


def find_bin(session: Session, number: int) -> Bin:
    """The BIN a ``--bin``/BIN argument names, or a clear command-line error."""
    found = bin_by_number(session, number)
    if found is None:
        raise CommandError(f"no BIN number {number} (add it with `binfoon bin add`)")
    return found


def print_json(data: Any) -> None:
    """``--json`` output: indented, non-ASCII kept, dates as text."""
    print(json.dumps(data, ensure_ascii=False, indent=1, default=str))


def cmd_bin_add(settings: Settings, args: argparse.Namespace) -> int:
    """Add a BIN to a zone."""
    if args.number <= 0:
        raise CommandError("--number must be a positive number (it is typed on a phone keypad)")
    engine = open_database(settings.resolved_database_url)
    try:
        with session_scope(engine) as session:
            add_bin(session, args.number, args.name, find_zone(session, args.zone), LANGUAGES[args.language],
                    args.street, actor())
    except IntegrityError:
        raise CommandError(f"BIN number {args.number} already exists") from None
    print(f"BIN {args.number} ({args.name}) added to zone {args.zone}")
    return 0


def cmd_bin_list(settings: Settings, args: argparse.Namespace) -> int:
    """List the BINs with their ids, zone, language, mode and member counts."""
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as session:
        rows = [bin_as_dict(session, bin_) for bin_ in all_bins(session)]
    if args.json:
        print_json(rows)
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
        b = bin_as_dict(session, find_bin(session, args.number))
    if args.json:
        print_json(b)
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
        bin_ = find_bin(session, args.number)
        changed = change_bin(session, bin_, actor(), name=args.name.strip() if args.name else None,
                             language=LANGUAGES[args.language] if args.language else None,
                             zone=find_zone(session, args.zone) if args.zone else None,
                             one_level=None if args.one_level is None else args.one_level == "yes",
                             streets=args.street)
    print(f"BIN {args.number}: " + (f"{', '.join(changed)} changed" if changed else "nothing changed"))
    return 0


def cmd_bin_remove(settings: Settings, args: argparse.Namespace) -> int:
    """Delete a BIN without messages; one with people in it needs ``--yes``."""
    engine = open_database(settings.resolved_database_url)
    try:
        with session_scope(engine) as session:
            bin_ = find_bin(session, args.number)
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
