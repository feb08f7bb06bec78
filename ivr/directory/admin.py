"""The admin's tools over the directory: persons (list, show, edit, deactivate, roles, PIN) and zones.

Rules:
- every change is an admin's (or the server's operator's, ``Actor.operator``): anyone else gets an
  ``AdminError`` and nothing is written. The web and the command line check it too; this is the
  check that counts;
- every change is audited with the actor, old and new values (never a PIN, never a full number);
- bad input is an ``AdminError`` whose message says why, and nothing is written;
- a zone asks for a second approver only if it has two active police (one speaks, the other approves);
- the last active admin can be neither deactivated nor lose the admin role (nobody could undo it);
- a person's web account follows their roles and their state: deactivating ends its sessions, a
  role change gives the account the role the directory now gives (or disables it: no role left);
- a reset PIN is made here and handed back once: only its hash is stored, and the audit row says
  that it was reset, not what it is.
These functions run inside the caller's transaction (blocking SQL).
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ivr.directory.accounts import sync_account
from ivr.directory.pin_gate import PinRules, PinState, pin_state, set_pin, unlock
from ivr.directory.store import NumberTaken, next_coordinator_priority, refuse_taken_numbers
from ivr.domain.actor import Actor
from ivr.domain.phone import mask
from ivr.domain.vocabulary import Escalation, Language, ReviewMode, Role
from storage import audit
from storage.models import (
    Bin,
    OfficerSipAccount,
    Person,
    PoliceZone,
    RoleAssignment,
    WebAccount,
    utcnow,
)

#: Roles scoped to a BIN, and to a zone (an admin's is global).
BIN_ROLES: Final = frozenset({Role.COORDINATOR, Role.MEMBER})
ZONE_ROLES: Final = frozenset({Role.POLICE_OFFICER, Role.POLICE_APPROVER})
MAX_NAME_CHARS: Final = 200
#: Digits of a PIN an admin's reset makes (the longest a new PIN may be: the hardest to guess).
RESET_PIN_DIGITS: Final = 8


class AdminError(ValueError):
    """The change is refused (not an admin, nobody by that id, bad value); the message says why."""


class _Unchanged:
    """The default of ``edit_zone``'s fields: "leave it as it is" (``None`` clears a limit)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()


def require_admin(s: Session, actor: Actor) -> None:
    """Refuse anyone but an admin or the server's operator.

    A person is an admin by the directory, read now: ``Actor.admin`` comes from the caller (a web
    session made before the role was taken away, a caller that got it wrong) and is not enough."""
    if actor.admin and (actor.person_id is None or _is_active_admin(s, actor.person_id)):
        return
    raise AdminError(f"{actor.label} is not an admin: only admins change persons and zones")


def _is_active_admin(s: Session, person_id: int) -> bool:
    return s.scalar(select(RoleAssignment.id).join(Person, Person.id == RoleAssignment.person_id)
                    .where(RoleAssignment.person_id == person_id, RoleAssignment.role == Role.ADMIN,
                           Person.active.is_(True)).limit(1)) is not None


# -- what is shown ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoleRow:
    """One role of a person, with its scope."""

    role: str
    bin_number: int | None = None
    zone_code: str | None = None
    priority: int | None = None

    def __str__(self) -> str:
        where = (f" BIN {self.bin_number}" if self.bin_number is not None else
                 f" zone {self.zone_code}" if self.zone_code is not None else "")
        order = f" #{self.priority}" if self.priority is not None else ""
        return f"{self.role}{where}{order}"

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"role": self.role, "bin": self.bin_number, "zone": self.zone_code, "priority": self.priority}


@dataclass(frozen=True)
class PersonRow:
    """A person in a list: numbers masked."""

    id: int
    name: str
    language: str
    active: bool
    roles: list[RoleRow]
    phones: list[str]

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"id": self.id, "name": self.name, "language": self.language, "active": self.active,
                "roles": [r.as_dict() for r in self.roles], "phones": self.phones}


@dataclass(frozen=True)
class PersonDetails:
    """Everything an admin sees of a person (numbers masked, never a PIN or password)."""

    id: int
    name: str
    language: str
    street: str | None
    active: bool
    created_at: dt.datetime
    roles: list[RoleRow]
    phones: list[tuple[str, str]]
    web_account: dict[str, Any] | None
    sip_account: str | None
    pin: PinState

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"id": self.id, "name": self.name, "language": self.language, "street": self.street,
                "active": self.active, "created_at": self.created_at.isoformat(),
                "roles": [r.as_dict() for r in self.roles],
                "phones": [{"rank": rank, "number": number} for rank, number in self.phones],
                "web_account": self.web_account, "sip_account": self.sip_account, "pin": self.pin.as_dict()}


@dataclass(frozen=True)
class BinRow:
    """A BIN of a zone."""

    number: int
    name: str
    one_level: bool
    members: int

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"number": self.number, "name": self.name, "one_level": self.one_level, "members": self.members}


@dataclass(frozen=True)
class ZoneRow:
    """A zone and its settings."""

    code: str
    name: str
    review_mode: str
    urgent_escalation: str
    max_channels: int | None
    max_cps: float | None
    second_approver: bool
    review_max_rounds: int | None
    bins: int

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"code": self.code, "name": self.name, "review_mode": self.review_mode,
                "urgent_escalation": self.urgent_escalation, "max_channels": self.max_channels,
                "max_cps": self.max_cps, "second_approver": self.second_approver,
                "review_max_rounds": self.review_max_rounds, "bins": self.bins}


@dataclass(frozen=True)
class ZoneDetails:
    """A zone, its BINs (with their one-level mode) and its police."""

    zone: ZoneRow
    bin_rows: list[BinRow] = field(default_factory=list)
    police: list[PersonRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {**self.zone.as_dict(), "bins": [b.as_dict() for b in self.bin_rows],
                "police": [p.as_dict() for p in self.police]}


# -- persons ---------------------------------------------------------------------------------------
def _roles(s: Session, person: Person) -> list[RoleRow]:
    rows = []
    for r in sorted(person.roles, key=lambda r: (r.role.value, r.bin_id or 0, r.zone_id or 0)):
        bin_number = s.get_one(Bin, r.bin_id).number if r.bin_id is not None else None
        zone_code = s.get_one(PoliceZone, r.zone_id).code if r.zone_id is not None else None
        rows.append(RoleRow(r.role.value, bin_number, zone_code, r.priority if r.role is Role.COORDINATOR else None))
    return rows


def _phones(person: Person) -> list[tuple[str, str]]:
    return [(p.rank.value, mask(p.e164)) for p in sorted(person.phones, key=lambda p: p.rank.value)]


def _row(s: Session, person: Person) -> PersonRow:
    return PersonRow(person.id, person.name, person.language.value, person.active, _roles(s, person),
                     [number for _rank, number in _phones(person)])


def _person(s: Session, person_id: int) -> Person:
    person = s.get(Person, person_id)
    if person is None:
        raise AdminError(f"no person {person_id}")
    return person


def _zone(s: Session, code: str) -> PoliceZone:
    zone = s.scalars(select(PoliceZone).where(PoliceZone.code == code)).first()
    if zone is None:
        raise AdminError(f"no police zone with code {code!r}")
    return zone


def _bin(s: Session, number: int) -> Bin:
    found = s.scalars(select(Bin).where(Bin.number == number)).first()
    if found is None:
        raise AdminError(f"no BIN number {number}")
    return found


def list_people(s: Session, *, role: Role | None = None, bin_number: int | None = None,
                zone_code: str | None = None, active: bool | None = None) -> list[PersonRow]:
    """People by id, filtered: with ``role``; with a role in BIN ``bin_number``; with a role in zone
    ``zone_code`` (its police, or a BIN of it); active or not (``None``: both)."""
    query = select(Person).order_by(Person.id)
    if role is not None or bin_number is not None or zone_code is not None:
        scoped = select(RoleAssignment.person_id)
        if role is not None:
            scoped = scoped.where(RoleAssignment.role == role)
        if bin_number is not None:
            scoped = scoped.where(RoleAssignment.bin_id == _bin(s, bin_number).id)
        if zone_code is not None:
            zone = _zone(s, zone_code)
            zone_bins = select(Bin.id).where(Bin.zone_id == zone.id)
            scoped = scoped.where((RoleAssignment.zone_id == zone.id) | RoleAssignment.bin_id.in_(zone_bins))
        query = query.where(Person.id.in_(scoped))
    if active is not None:
        query = query.where(Person.active.is_(active))
    return [_row(s, person) for person in s.scalars(query)]


def person_details(s: Session, person_id: int, rules: PinRules | None = None,
                   now: dt.datetime | None = None) -> PersonDetails:
    """One person: roles with scope and priority, masked numbers, web and SIP accounts, PIN state
    (``rules``: the lockout policies in force; the defaults when not given)."""
    person = _person(s, person_id)
    account = s.scalars(select(WebAccount).where(WebAccount.person_id == person.id)).first()
    web = None if account is None else {"username": account.username, "role": account.role.value,
                                        "active": account.active}
    sip = s.scalar(select(OfficerSipAccount.username).where(OfficerSipAccount.person_id == person.id))
    return PersonDetails(person.id, person.name, person.language.value, person.street, person.active,
                         person.created_at, _roles(s, person), _phones(person), web, sip,
                         pin_state(s, person, rules or PinRules(), now or utcnow()))


def _active_admins(s: Session) -> set[int]:
    return set(s.scalars(select(RoleAssignment.person_id).join(Person, Person.id == RoleAssignment.person_id)
                         .where(RoleAssignment.role == Role.ADMIN, Person.active.is_(True))))


def _keep_an_admin(s: Session, person: Person, doing: str) -> None:
    # Two admins taking each other's admin away at once would each see the other still there: the
    # admin role rows are locked first (PostgreSQL; SQLite: its write lock), so the second waits for
    # the first to commit and then counts what is left.
    if s.get_bind().dialect.name == "sqlite":
        s.execute(text(f"UPDATE {RoleAssignment.__tablename__} SET id = id WHERE 1 = 0"))
    s.execute(select(RoleAssignment.id).where(RoleAssignment.role == Role.ADMIN).order_by(RoleAssignment.id)
              .with_for_update())
    if _active_admins(s) == {person.id}:
        raise AdminError(f"person {person.id} is the last active admin: cannot {doing} (add another admin first)")


def set_active(s: Session, person_id: int, active: bool, actor: Actor) -> None:
    """Activate or deactivate a person. A deactivated person is called by nobody (review, members),
    cannot use the police line, the replay line or their SIP account, and their web sessions end."""
    require_admin(s, actor)
    person = _person(s, person_id)
    if person.active == active:
        raise AdminError(f"person {person_id} is already {'active' if active else 'deactivated'}")
    if not active:
        if actor.person_id == person.id:
            raise AdminError("you cannot deactivate yourself")
        _keep_an_admin(s, person, "deactivate them")
    person.active = active
    audit.record(s, actor.label, "person.activated" if active else "person.deactivated", f"person:{person.id}")
    sync_account(s, person, actor.label)


def _check_name(name: str) -> str:
    clean = " ".join(name.split())
    if not clean:
        raise AdminError("a name cannot be empty")
    if len(clean) > MAX_NAME_CHARS:
        raise AdminError(f"a name has at most {MAX_NAME_CHARS} characters")
    return clean


def _check_language(language: str | Language) -> Language:
    try:
        return language if isinstance(language, Language) else Language(language)
    except ValueError:
        raise AdminError(f"language {language!r}: nl, fr or de") from None


def edit_person(s: Session, person_id: int, actor: Actor, *, name: str | None = None,
                language: str | Language | None = None) -> list[str]:
    """Change a person's name and/or language; returns what changed (audited: old and new)."""
    require_admin(s, actor)
    person = _person(s, person_id)
    changes: dict[str, Any] = {}
    if name is not None:
        clean = _check_name(name)
        if clean != person.name:
            changes["name"] = [person.name, clean]
            person.name = clean
    if language is not None:
        lang = _check_language(language)
        if lang is not person.language:
            changes["language"] = [person.language.value, lang.value]
            person.language = lang
    if changes:
        audit.record(s, actor.label, "person.edited", f"person:{person.id}", **changes)
    return list(changes)


def _scope(s: Session, role: Role, bin_number: int | None, zone_code: str | None) -> tuple[int | None, int | None]:
    """(bin id, zone id) of a role, or why that scope does not fit it."""
    if role in BIN_ROLES:
        if bin_number is None or zone_code is not None:
            raise AdminError(f"a {role.value} belongs to a BIN: give the BIN (and no zone)")
        return _bin(s, bin_number).id, None
    if role in ZONE_ROLES:
        if zone_code is None or bin_number is not None:
            raise AdminError(f"a {role.value} belongs to a zone: give the zone (and no BIN)")
        return None, _zone(s, zone_code).id
    if bin_number is not None or zone_code is not None:
        raise AdminError("an admin's role is not scoped to a BIN or a zone")
    return None, None


def _assignment(s: Session, person: Person, role: Role, bin_id: int | None,
                zone_id: int | None) -> RoleAssignment | None:
    return next((r for r in person.roles if r.role is role and r.bin_id == bin_id and r.zone_id == zone_id), None)


def add_role(s: Session, person_id: int, role: Role, actor: Actor, *, bin_number: int | None = None,
             zone_code: str | None = None, priority: int | None = None) -> None:
    """Give a person a role in a BIN (coordinator, member), a zone (police) or everywhere (admin).

    A coordinator without ``priority`` goes last. One number is one identity per role and scope:
    the role is refused when another active person with one of this person's numbers holds it."""
    require_admin(s, actor)
    person = _person(s, person_id)
    bin_id, zone_id = _scope(s, role, bin_number, zone_code)
    if priority is not None and (role is not Role.COORDINATOR or priority < 0):
        raise AdminError("a priority is a whole number of 0 or more, for coordinators only")
    if _assignment(s, person, role, bin_id, zone_id) is not None:
        raise AdminError(f"person {person.id} already has that role")
    try:  # the directory's one rule: one number is one person per role and scope
        refuse_taken_numbers(s, [p.e164 for p in person.phones], role, bin_id=bin_id, except_person=person.id)
    except NumberTaken as exc:
        raise AdminError(str(exc)) from None
    if role is Role.COORDINATOR and priority is None and bin_id is not None:
        priority = next_coordinator_priority(s, bin_id)
    person.roles.append(RoleAssignment(role=role, bin_id=bin_id, zone_id=zone_id, priority=priority or 0))
    s.flush()
    audit.record(s, actor.label, "person.role_added", f"person:{person.id}", role=role.value, bin=bin_number,
                 zone=zone_code, priority=priority if role is Role.COORDINATOR else None)
    sync_account(s, person, actor.label)


def remove_role(s: Session, person_id: int, role: Role, actor: Actor, *, bin_number: int | None = None,
                zone_code: str | None = None) -> None:
    """Take a role away (its scope is needed when the person has that role in more than one place)."""
    require_admin(s, actor)
    person = _person(s, person_id)
    held = [r for r in person.roles if r.role is role]
    if bin_number is not None or zone_code is not None:
        bin_id, zone_id = _scope(s, role, bin_number, zone_code)
        held = [r for r in held if r.bin_id == bin_id and r.zone_id == zone_id]
    if not held:
        raise AdminError(f"person {person.id} has no such {role.value} role")
    if len(held) > 1:
        where = ", ".join(str(r) for r in _roles(s, person) if r.role == role.value)
        raise AdminError(f"person {person.id} is {role.value} in more than one place ({where}): say which")
    if role is Role.ADMIN and person.active:
        _keep_an_admin(s, person, "take away their admin role")
    found = held[0]
    bin_number_of = s.get_one(Bin, found.bin_id).number if found.bin_id is not None else None
    zone_code_of = s.get_one(PoliceZone, found.zone_id).code if found.zone_id is not None else None
    person.roles.remove(found)
    s.flush()
    audit.record(s, actor.label, "person.role_removed", f"person:{person.id}", role=role.value, bin=bin_number_of,
                 zone=zone_code_of)
    sync_account(s, person, actor.label)


def new_reset_pin() -> str:
    """A random PIN for a reset: ``RESET_PIN_DIGITS`` digits from the system's secure generator."""
    return "".join(secrets.choice("0123456789") for _ in range(RESET_PIN_DIGITS))


def reset_pin(s: Session, person_id: int, actor: Actor, pepper: bytes | None, now: dt.datetime) -> str:
    """Give a person a one-time PIN, end their PIN locks, and return the PIN (shown once to the
    admin, who hands it over; it is never stored, logged or audited: only its hash is kept)."""
    require_admin(s, actor)
    person = _person(s, person_id)
    pin = new_reset_pin()
    set_pin(s, person, pin, pepper, actor.label)
    unlock(s, person, actor.label, now)
    audit.record(s, actor.label, "person.pin_reset", f"person:{person.id}", digits=len(pin))
    return pin


def unlock_pin(s: Session, person_id: int, actor: Actor, now: dt.datetime) -> list[str]:
    """End every PIN lock of a person (``pin_gate.unlock``); returns the keys cleared (masked)."""
    require_admin(s, actor)
    return unlock(s, _person(s, person_id), actor.label, now)


# -- zones -----------------------------------------------------------------------------------------
def _zone_row(s: Session, zone: PoliceZone) -> ZoneRow:
    bins = s.scalar(select(func.count(Bin.id)).where(Bin.zone_id == zone.id)) or 0
    return ZoneRow(zone.code, zone.name, zone.review_mode.value, zone.urgent_escalation.value, zone.max_channels,
                   zone.max_cps, zone.second_approver, zone.review_max_rounds, bins)


def list_zones(s: Session) -> list[ZoneRow]:
    """Every zone, by code."""
    return [_zone_row(s, z) for z in s.scalars(select(PoliceZone).order_by(PoliceZone.code))]


def zone_details(s: Session, code: str) -> ZoneDetails:
    """A zone with its BINs (one-level mode, member count) and its police officers and approvers."""
    zone = _zone(s, code)
    bins = []
    for b in s.scalars(select(Bin).where(Bin.zone_id == zone.id).order_by(Bin.number)):
        members = s.scalar(select(func.count(RoleAssignment.id)).join(Person, Person.id == RoleAssignment.person_id)
                           .where(RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == b.id,
                                  Person.active.is_(True))) or 0
        bins.append(BinRow(b.number, b.name, b.one_level, members))
    police = [_row(s, p) for p in s.scalars(
        select(Person).where(Person.id.in_(select(RoleAssignment.person_id).where(
            RoleAssignment.zone_id == zone.id, RoleAssignment.role.in_(ZONE_ROLES)))).order_by(Person.id))]
    return ZoneDetails(_zone_row(s, zone), bins, police)


def _positive_int(field_name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AdminError(f"{field_name}: a whole number of 1 or more (or none)")
    return value


def _positive_float(field_name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise AdminError(f"{field_name}: a number above 0 (or none)")
    return float(value)


#: Police a zone needs before a second approver may be asked for: one speaks, another approves.
SECOND_APPROVER_POLICE: Final = 2


def _active_police(s: Session, zone: PoliceZone) -> int:
    """How many active people are police officers or approvers of ``zone``."""
    return s.scalar(select(func.count(func.distinct(RoleAssignment.person_id)))
                    .join(Person, Person.id == RoleAssignment.person_id)
                    .where(RoleAssignment.zone_id == zone.id, RoleAssignment.role.in_(ZONE_ROLES),
                           Person.active.is_(True))) or 0


def edit_zone(s: Session, code: str, actor: Actor, *, name: Any = UNCHANGED, max_channels: Any = UNCHANGED,
              max_cps: Any = UNCHANGED, review_mode: Any = UNCHANGED, urgent_escalation: Any = UNCHANGED,
              second_approver: Any = UNCHANGED, review_max_rounds: Any = UNCHANGED) -> list[str]:
    """Change a zone's settings; a field left ``UNCHANGED`` stays, ``None`` clears a limit (the
    global setting applies). Every value is checked before any is written. Returns what changed.

    ``second_approver`` is refused in a zone with fewer than two active police officers or approvers:
    an urgent message waiting for a second approval there could never go."""
    require_admin(s, actor)
    zone = _zone(s, code)
    wanted: dict[str, Any] = {}
    if name is not UNCHANGED:
        wanted["name"] = _check_name(str(name or ""))
    if max_channels is not UNCHANGED:
        wanted["max_channels"] = _positive_int("max_channels", max_channels)
    if max_cps is not UNCHANGED:
        wanted["max_cps"] = _positive_float("max_cps", max_cps)
    if review_max_rounds is not UNCHANGED:
        wanted["review_max_rounds"] = _positive_int("review_max_rounds", review_max_rounds)
    if review_mode is not UNCHANGED:
        try:
            wanted["review_mode"] = ReviewMode(review_mode)
        except ValueError:
            raise AdminError(f"review_mode: one of {', '.join(m.value for m in ReviewMode)}") from None
    if urgent_escalation is not UNCHANGED:
        try:
            wanted["urgent_escalation"] = Escalation(urgent_escalation)
        except ValueError:
            raise AdminError(f"urgent_escalation: one of {', '.join(e.value for e in Escalation)}") from None
    if second_approver is not UNCHANGED:
        if not isinstance(second_approver, bool):
            raise AdminError("second_approver: yes or no")
        wanted["second_approver"] = second_approver
        if second_approver and not zone.second_approver:
            police = _active_police(s, zone)
            if police < SECOND_APPROVER_POLICE:
                raise AdminError(f"second_approver: zone {zone.code} has {police} active police officer(s) or "
                                 f"approver(s); a second approval needs at least {SECOND_APPROVER_POLICE} (the "
                                 "one who speaks the message cannot approve it): add police to the zone first")
    changes: dict[str, Any] = {}
    for key, new in wanted.items():
        old = getattr(zone, key)
        if old != new:
            changes[key] = [_plain(old), _plain(new)]
            setattr(zone, key, new)
    if changes:
        audit.record(s, actor.label, "zone.edited", f"zone:{zone.code}", **changes)
    return list(changes)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, (ReviewMode, Escalation)) else value


def set_one_level(s: Session, bin_number: int, on: bool, actor: Actor) -> None:
    """Turn a BIN's one-level mode on or off (police messages straight to its members)."""
    require_admin(s, actor)
    found = _bin(s, bin_number)
    if found.one_level == on:
        return
    found.one_level = on
    audit.record(s, actor.label, "bin.one_level", f"bin:{found.number}", on=on)
