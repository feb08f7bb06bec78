"""The admin's tools over persons: list, show, edit, deactivate, roles, PIN (the rules: ``ivr.directory.admin``)."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ivr.directory.accounts import sync_account
from ivr.directory.admin.checks import (
    BIN_ROLES,
    ZONE_ROLES,
    AdminError,
    active_admins,
    check_name,
    get_bin,
    get_person,
    get_zone,
    require_admin,
)
from ivr.directory.people import NumberTaken, next_coordinator_priority, refuse_taken_numbers
from ivr.directory.pin_gate import PinRules, PinState, pin_state, set_pin, unlock
from ivr.domain.actor import Actor
from ivr.domain.phone import mask
from ivr.domain.vocabulary import Language, Role
from storage import audit
from storage.models import Bin, OfficerSipAccount, Person, PoliceZone, RoleAssignment, WebAccount, utcnow

#: Digits of a PIN an admin's reset makes (the longest a new PIN may be: the hardest to guess).
RESET_PIN_DIGITS: Final = 8


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


def _scope_of(s: Session, r: RoleAssignment) -> tuple[int | None, str | None]:
    """(BIN number, zone code) of a held role."""
    return (s.get_one(Bin, r.bin_id).number if r.bin_id is not None else None,
            s.get_one(PoliceZone, r.zone_id).code if r.zone_id is not None else None)


def _roles(s: Session, person: Person) -> list[RoleRow]:
    return [RoleRow(r.role.value, *_scope_of(s, r), r.priority if r.role is Role.COORDINATOR else None)
            for r in sorted(person.roles, key=lambda r: (r.role.value, r.bin_id or 0, r.zone_id or 0))]


def _phones(person: Person) -> list[tuple[str, str]]:
    return [(p.rank.value, mask(p.e164)) for p in sorted(person.phones, key=lambda p: p.rank.value)]


def person_row(s: Session, person: Person) -> PersonRow:
    """A person as a list shows them."""
    return PersonRow(person.id, person.name, person.language.value, person.active, _roles(s, person),
                     [number for _rank, number in _phones(person)])


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
            scoped = scoped.where(RoleAssignment.bin_id == get_bin(s, bin_number).id)
        if zone_code is not None:
            zone = get_zone(s, zone_code)
            zone_bins = select(Bin.id).where(Bin.zone_id == zone.id)
            scoped = scoped.where((RoleAssignment.zone_id == zone.id) | RoleAssignment.bin_id.in_(zone_bins))
        query = query.where(Person.id.in_(scoped))
    if active is not None:
        query = query.where(Person.active.is_(active))
    return [person_row(s, person) for person in s.scalars(query)]


def person_details(s: Session, person_id: int, rules: PinRules | None = None,
                   now: dt.datetime | None = None) -> PersonDetails:
    """One person: roles with scope and priority, masked numbers, web and SIP accounts, PIN state
    (``rules``: the lockout policies in force; the defaults when not given)."""
    person = get_person(s, person_id)
    account = s.scalars(select(WebAccount).where(WebAccount.person_id == person.id)).first()
    web = None if account is None else {"username": account.username, "role": account.role.value,
                                        "active": account.active}
    sip = s.scalar(select(OfficerSipAccount.username).where(OfficerSipAccount.person_id == person.id))
    return PersonDetails(person.id, person.name, person.language.value, person.street, person.active,
                         person.created_at, _roles(s, person), _phones(person), web, sip,
                         pin_state(s, person, rules or PinRules(), now or utcnow()))


# -- changes ---------------------------------------------------------------------------------------
def _keep_an_admin(s: Session, person: Person, doing: str) -> None:
    # Two admins taking each other's admin away at once would each see the other still there: the
    # admin role rows are locked first (PostgreSQL; SQLite: its write lock), so the second waits for
    # the first to commit and then counts what is left.
    if s.get_bind().dialect.name == "sqlite":
        s.execute(text(f"UPDATE {RoleAssignment.__tablename__} SET id = id WHERE 1 = 0"))
    s.execute(select(RoleAssignment.id).where(RoleAssignment.role == Role.ADMIN).order_by(RoleAssignment.id)
              .with_for_update())
    if active_admins(s) == {person.id}:
        raise AdminError(f"person {person.id} is the last active admin: cannot {doing} (add another admin first)")


def set_active(s: Session, person_id: int, active: bool, actor: Actor) -> None:
    """Activate or deactivate a person. A deactivated person is called by nobody (review, members),
    cannot use the police line, the replay line or their SIP account, and their web sessions end."""
    require_admin(s, actor)
    person = get_person(s, person_id)
    if person.active == active:
        raise AdminError(f"person {person_id} is already {'active' if active else 'deactivated'}")
    if not active:
        if actor.person_id == person.id:
            raise AdminError("you cannot deactivate yourself")
        _keep_an_admin(s, person, "deactivate them")
    person.active = active
    audit.record(s, actor.label, "person.activated" if active else "person.deactivated", f"person:{person.id}")
    sync_account(s, person, actor.label)


def _check_language(language: str | Language) -> Language:
    try:
        return language if isinstance(language, Language) else Language(language)
    except ValueError:
        raise AdminError(f"language {language!r}: nl, fr or de") from None


def edit_person(s: Session, person_id: int, actor: Actor, *, name: str | None = None,
                language: str | Language | None = None) -> list[str]:
    """Change a person's name and/or language; returns what changed (audited: old and new)."""
    require_admin(s, actor)
    person = get_person(s, person_id)
    changes: dict[str, Any] = {}
    if name is not None:
        clean = check_name(name)
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
        return get_bin(s, bin_number).id, None
    if role in ZONE_ROLES:
        if zone_code is None or bin_number is not None:
            raise AdminError(f"a {role.value} belongs to a zone: give the zone (and no BIN)")
        return None, get_zone(s, zone_code).id
    if bin_number is not None or zone_code is not None:
        raise AdminError("an admin's role is not scoped to a BIN or a zone")
    return None, None


def _assignment(person: Person, role: Role, bin_id: int | None, zone_id: int | None) -> RoleAssignment | None:
    return next((r for r in person.roles if r.role is role and r.bin_id == bin_id and r.zone_id == zone_id), None)


def add_role(s: Session, person_id: int, role: Role, actor: Actor, *, bin_number: int | None = None,
             zone_code: str | None = None, priority: int | None = None) -> None:
    """Give a person a role in a BIN (coordinator, member), a zone (police) or everywhere (admin).

    A coordinator without ``priority`` goes last. One number is one identity per role and scope:
    the role is refused when another active person with one of this person's numbers holds it."""
    require_admin(s, actor)
    person = get_person(s, person_id)
    bin_id, zone_id = _scope(s, role, bin_number, zone_code)
    if priority is not None and (role is not Role.COORDINATOR or priority < 0):
        raise AdminError("a priority is a whole number of 0 or more, for coordinators only")
    if _assignment(person, role, bin_id, zone_id) is not None:
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
    person = get_person(s, person_id)
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
    bin_number_of, zone_code_of = _scope_of(s, found)
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
    person = get_person(s, person_id)
    pin = new_reset_pin()
    set_pin(s, person, pin, pepper, actor.label)
    unlock(s, person, actor.label, now)
    audit.record(s, actor.label, "person.pin_reset", f"person:{person.id}", digits=len(pin))
    return pin


def unlock_pin(s: Session, person_id: int, actor: Actor, now: dt.datetime) -> list[str]:
    """End every PIN lock of a person (``pin_gate.unlock``); returns the keys cleared (masked)."""
    require_admin(s, actor)
    return unlock(s, get_person(s, person_id), actor.label, now)
