"""The admin's tools on the command line: persons and zones (list, show, edit, deactivate, roles).

The operator at the server's command line acts as an admin (``Actor.operator``); the changes are
``ivr.directory.admin``'s, which checks and audits them. A user error is one line and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from ivr.commands.common import CommandError, actor, positive_int
from ivr.config import Settings
from ivr.directory import admin
from ivr.directory.pin_gate import rules_from_settings
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import Escalation, ReviewMode, Role
from storage.db import open_database, session_scope

T = TypeVar("T")


def register_person_actions(person: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the admin's actions to the ``person`` command (called by ``ivr.commands.directory``)."""
    p = person.add_parser("list", help="list people (active ones unless --inactive or --all)")
    p.add_argument("--role", choices=[r.value for r in Role])
    p.add_argument("--bin", type=int, help="only people with a role in this BIN")
    p.add_argument("--zone", help="only people with a role in this zone (its police, or one of its BINs)")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--inactive", action="store_true", help="only deactivated people")
    state.add_argument("--all", action="store_true", help="active and deactivated people")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_person_list)
    p = person.add_parser("show", help="one person: roles, masked numbers, accounts, PIN state")
    p.add_argument("person", type=int, metavar="ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_person_show)
    p = person.add_parser("edit", help="change a person's name or language")
    p.add_argument("person", type=int, metavar="ID")
    p.add_argument("--name")
    p.add_argument("--language", choices=["nl", "fr", "de"])
    p.set_defaults(func=cmd_person_edit)
    p = person.add_parser("deactivate", help="nobody calls them any more; no police line, replay line or web")
    p.add_argument("person", type=int, metavar="ID")
    p.set_defaults(func=cmd_person_deactivate)
    p = person.add_parser("activate", help="undo a deactivation")
    p.add_argument("person", type=int, metavar="ID")
    p.set_defaults(func=cmd_person_activate)
    p = person.add_parser("role", help="give or take away a role (with its BIN or zone)")
    p.add_argument("person", type=int, metavar="ID")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--add", choices=[r.value for r in Role], metavar="ROLE")
    which.add_argument("--remove", choices=[r.value for r in Role], metavar="ROLE")
    p.add_argument("--bin", type=int, help="BIN number (coordinator, member)")
    p.add_argument("--zone", help="police zone code (police officer, police approver)")
    p.add_argument("--priority", type=int, help="a coordinator's place in the calling order (default: last)")
    p.set_defaults(func=cmd_person_role)


def register_zone_actions(zone: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the admin's actions to the ``zone`` command (called by ``ivr.commands.directory``)."""
    p = zone.add_parser("list", help="list the police zones and their settings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_zone_list)
    p = zone.add_parser("show", help="one zone: settings, BINs (one-level mode), police")
    p.add_argument("code", metavar="CODE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_zone_show)
    p = zone.add_parser("edit", help="change a zone's settings ('none' clears a limit: the global one applies)")
    p.add_argument("code", metavar="CODE")
    p.add_argument("--name")
    p.add_argument("--max-channels", type=_optional(positive_int), metavar="N|none",
                   help="simultaneous member calls for this zone's campaigns")
    p.add_argument("--max-cps", type=_optional(_positive_float), metavar="X|none", help="new member calls a second")
    p.add_argument("--review-mode", choices=[m.value for m in ReviewMode])
    p.add_argument("--urgent-escalation", choices=[e.value for e in Escalation])
    p.add_argument("--second-approver", choices=["yes", "no"],
                   help="urgent messages sent without review wait for a second police officer's yes")
    p.add_argument("--review-max-rounds", type=_optional(positive_int), metavar="N|none",
                   help="review rounds of a waiting preventive message before its author is told")
    p.add_argument("--one-level", action="append", default=[], metavar="BIN=on|off",
                   help="a BIN of the zone goes straight to its members (repeatable)")
    p.add_argument("--urgent-channels", metavar="CHANNELS|none",
                   help="channels of a member who chose none, for urgent messages (voice, sms, email joined by +, "
                        "always with voice; none: the setting copy_channels_urgent)")
    p.add_argument("--preventive-channels", metavar="CHANNELS|none",
                   help="the same for preventive messages (none: the setting copy_channels_preventive)")
    p.add_argument("--ladder-sms", choices=["yes", "no", "none"],
                   help="the contact ladder: an SMS copy to a called member who did not confirm (none: the setting)")
    p.add_argument("--ladder-after-s", type=_optional(_seconds), metavar="SECONDS|none",
                   help="that SMS this long after the member's last call (none: the setting ladder_after_s)")
    p.set_defaults(func=cmd_zone_edit)


# -- argument types --------------------------------------------------------------------------------
class _NoneValue:
    """``none`` given: clear the limit."""


NONE = _NoneValue()


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        return NONE if raw.strip().lower() == "none" else kind(raw)
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{raw} is not allowed: give a number above 0")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{raw} is not allowed: give 0 seconds or more")
    return value


# -- helpers ---------------------------------------------------------------------------------------
def _operator() -> Actor:
    return Actor.operator(actor())


def _in_tx(settings: Settings, work: Callable[[Session], T]) -> T:
    """``work`` in one transaction; an ``AdminError`` is the user's, and nothing is written."""
    engine = open_database(settings.resolved_database_url)
    try:
        with session_scope(engine) as s:
            return work(s)
    except admin.AdminError as exc:
        raise CommandError(str(exc)) from None


def _dump(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=1, default=str))


def _when(value: dt.datetime | None, settings: Settings) -> str:
    return value.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M") if value is not None else "-"


# -- persons ---------------------------------------------------------------------------------------
def cmd_person_list(settings: Settings, args: argparse.Namespace) -> int:
    """List people with their roles and masked numbers."""
    active = None if args.all else not args.inactive
    rows = _in_tx(settings, lambda s: admin.list_people(s, role=Role(args.role) if args.role else None,
                                                        bin_number=args.bin, zone_code=args.zone, active=active))
    if args.json:
        _dump([r.as_dict() for r in rows])
        return 0
    for r in rows:
        state = "" if r.active else "  [deactivated]"
        roles = "; ".join(str(role) for role in r.roles) or "no role"
        print(f"{r.id:>6}  {r.name:<30} {r.language}  {roles}  {' / '.join(r.phones)}{state}")
    return 0


def cmd_person_show(settings: Settings, args: argparse.Namespace) -> int:
    """One person's details (never a PIN, password or full number)."""
    rules = rules_from_settings(settings, pepper=False)
    d = _in_tx(settings, lambda s: admin.person_details(s, args.person, rules))
    if args.json:
        _dump(d.as_dict())
        return 0
    print(f"person {d.id}: {d.name} ({d.language}){'' if d.active else '  DEACTIVATED'}")
    print(f"  roles:   {'; '.join(str(r) for r in d.roles) or 'none'}")
    print(f"  numbers: {', '.join(f'{number} ({rank})' for rank, number in d.phones) or 'none'}")
    if d.street:
        print(f"  street:  {d.street}")
    web = d.web_account
    print(f"  web:     {web['username'] + ' (' + web['role'] + ('' if web['active'] else ', disabled') + ')' if web else 'no account'}")
    print(f"  SIP:     {d.sip_account or 'no account'}")
    pin = d.pin
    lock = f"locked until {_when(pin.locked_until, settings)}" if pin.locked_until else "not locked"
    print(f"  PIN:     {'set' if pin.is_set else 'none'}, {lock}; last reset or unlock {_when(pin.reset_at, settings)}")
    return 0


def cmd_person_edit(settings: Settings, args: argparse.Namespace) -> int:
    """Change a person's name or language."""
    if args.name is None and args.language is None:
        raise CommandError("nothing to change: give --name and/or --language")
    changed = _in_tx(settings, lambda s: admin.edit_person(s, args.person, _operator(), name=args.name,
                                                           language=args.language))
    print(f"person {args.person}: {', '.join(changed) + ' changed' if changed else 'nothing changed'}")
    return 0


def cmd_person_deactivate(settings: Settings, args: argparse.Namespace) -> int:
    """Deactivate a person (audited)."""
    _in_tx(settings, lambda s: admin.set_active(s, args.person, False, _operator()))
    print(f"person {args.person} deactivated: nobody calls them; the police line, the replay line and the "
          "web console refuse them")
    return 0


def cmd_person_activate(settings: Settings, args: argparse.Namespace) -> int:
    """Activate a person again (audited)."""
    _in_tx(settings, lambda s: admin.set_active(s, args.person, True, _operator()))
    print(f"person {args.person} active again")
    return 0


def cmd_person_role(settings: Settings, args: argparse.Namespace) -> int:
    """Add or remove one role."""
    if args.add:
        role = Role(args.add)
        _in_tx(settings, lambda s: admin.add_role(s, args.person, role, _operator(), bin_number=args.bin,
                                                  zone_code=args.zone, priority=args.priority))
        print(f"person {args.person}: role {role.value} added")
    else:
        if args.priority is not None:
            raise CommandError("--priority goes with --add")
        role = Role(args.remove)
        _in_tx(settings, lambda s: admin.remove_role(s, args.person, role, _operator(), bin_number=args.bin,
                                                     zone_code=args.zone))
        print(f"person {args.person}: role {role.value} removed")
    return 0


# -- zones -----------------------------------------------------------------------------------------
def _zone_line(z: admin.ZoneRow) -> str:
    channels = z.max_channels if z.max_channels is not None else "global"
    cps = z.max_cps if z.max_cps is not None else "global"
    rounds = z.review_max_rounds if z.review_max_rounds is not None else "setting"
    return (f"{z.code:<8} {z.name:<24} review {z.review_mode}, urgent {z.urgent_escalation}, channels {channels}, "
            f"cps {cps}, second approver {'yes' if z.second_approver else 'no'}, review rounds {rounds}, "
            f"{z.bins} BIN(s)")


def _copies_line(z: admin.ZoneRow, settings: Settings) -> str:
    """The zone's default channels and contact ladder, each marked when it is the setting's."""
    def own(value: Any, setting: Any, shown: Callable[[Any], str] = str) -> str:
        return shown(value) if value is not None else f"{shown(setting)} (setting)"

    ladder = own(z.ladder_sms, settings.ladder_sms, lambda on: "on" if on else "off")
    after = own(z.ladder_after_s, settings.ladder_after_s, lambda s: f"{s:g} s")
    return (f"  channels: urgent {own(z.urgent_channels, settings.copy_channels_urgent)}, preventive "
            f"{own(z.preventive_channels, settings.copy_channels_preventive)}; ladder SMS {ladder}, after {after}")


def cmd_zone_list(settings: Settings, args: argparse.Namespace) -> int:
    """List the zones and their settings."""
    rows = _in_tx(settings, admin.list_zones)
    if args.json:
        _dump([z.as_dict() for z in rows])
        return 0
    for z in rows:
        print(_zone_line(z))
    return 0


def cmd_zone_show(settings: Settings, args: argparse.Namespace) -> int:
    """One zone with its BINs and police."""
    d = _in_tx(settings, lambda s: admin.zone_details(s, args.code))
    if args.json:
        _dump(d.as_dict())
        return 0
    print(_zone_line(d.zone))
    print(_copies_line(d.zone, settings))
    for b in d.bin_rows:
        print(f"  BIN {b.number:<6} {b.name:<24} {b.members} member(s){'  one-level' if b.one_level else ''}")
    for p in d.police:
        print(f"  police {p.id:>5} {p.name}{'' if p.active else ' [deactivated]'}")
    return 0


def _one_levels(raw: list[str]) -> list[tuple[int, bool]]:
    out = []
    for item in raw:
        number, _, state = item.partition("=")
        if not number.strip().isdigit() or state.strip().lower() not in ("on", "off"):
            raise CommandError(f"--one-level {item!r}: give BIN=on or BIN=off (e.g. 12=on)")
        out.append((int(number), state.strip().lower() == "on"))
    return out


def cmd_zone_edit(settings: Settings, args: argparse.Namespace) -> int:
    """Change a zone's settings (and its BINs' one-level mode); all or nothing."""
    fields: dict[str, Any] = {}
    for name in ("name", "max_channels", "max_cps", "review_max_rounds", "review_mode", "urgent_escalation"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = None if value is NONE else value
    if args.second_approver is not None:
        fields["second_approver"] = args.second_approver == "yes"
    for name in ("urgent_channels", "preventive_channels"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = None if value.strip().lower() in ("none", "default") else value
    if args.ladder_sms is not None:
        fields["ladder_sms"] = None if args.ladder_sms == "none" else args.ladder_sms == "yes"
    if args.ladder_after_s is not None:
        fields["ladder_after_s"] = None if args.ladder_after_s is NONE else args.ladder_after_s
    one_levels = _one_levels(args.one_level)
    if not fields and not one_levels:
        raise CommandError("nothing to change: give a setting (see --help)")

    def work(s: Session) -> list[str]:
        operator = _operator()
        changed = admin.edit_zone(s, args.code, operator, **fields)
        bins = {b.number for b in admin.zone_details(s, args.code).bin_rows}
        for number, on in one_levels:
            if number not in bins:
                raise admin.AdminError(f"BIN {number} is not in zone {args.code}")
            admin.set_one_level(s, number, on, operator)
            changed.append(f"BIN {number} one-level {'on' if on else 'off'}")
        return changed

    changed = _in_tx(settings, work)
    print(f"zone {args.code}: {', '.join(changed) + ' changed' if changed else 'nothing changed'}")
    return 0
