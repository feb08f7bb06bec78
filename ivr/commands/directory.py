"""Directory commands: the ``zone``, ``bin``, ``person`` and ``members`` commands, with ``zone add``,
``person add|pin|unlock`` and ``person sip-account add|rotate|remove|list`` here. Their other
actions are their own modules': ``bin add|list|show|edit|remove`` ``ivr.commands.bins``, ``members
import|list|show|edit|remove|preferences`` ``ivr.commands.members``, the admin's tools
``ivr.commands.admin``, the drills ``ivr.commands.drill``.

Every change is audited; every error is a clear message and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.commands import bins as bins_cmd
from ivr.commands import members as members_cmd
from ivr.commands.bins import find_bin, find_zone
from ivr.commands.common import CommandError, actor
from ivr.config import Settings
from ivr.directory.member_csv import LANGUAGES
from ivr.directory.people import NewPerson, NumberTaken, add_person
from ivr.directory.store import add_zone
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
from ivr.domain.phone import InvalidPhoneNumber
from storage.db import open_database, session_scope
from storage.models import Person
from ivr.domain.vocabulary import Escalation, ReviewMode, Role
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
    bins_cmd.register_bin_actions(bin_)  # add, list, show, edit, remove
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
    members_cmd.register_member_actions(members)  # import, list, show, edit, remove, preferences


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
                        bin_id=find_bin(session, args.bin).id if args.bin is not None else None,
                        zone_id=find_zone(session, args.zone).id if args.zone is not None else None,
                        pin_hash=hash_pin(pin, _pepper(settings)) if pin else None)
        try:
            person_id = add_person(session, new, actor(), bin=args.bin, zone=args.zone)
        except NumberTaken as exc:
            raise CommandError(f"phone: {exc}") from None
    print(f"person {person_id} ({args.name}) added as {role.value}")
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
