"""The directory: zones, BINs, people, and the member list a coordinator keeps as a CSV file.

All the SQL of BINs, people, members and their phone numbers lives here; the command line and
the web console call these functions with a session of their own transaction.

A member is a household: one row, one primary number (and maybe a second). The coordinator's
file is the truth for their BIN, so an import *replaces* the BIN's member list, matching
existing members by primary number so their history stays linked. A file with any error is
refused whole, with every error line-numbered (``ivr.directory.member_csv``), and nothing is written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ivr.directory.member_csv import (
    COLUMNS,
    LANGUAGES,
    REQUIRED,
    CsvImportError,
    LineError,
    MemberRow,
    parse_member_csv,
)
from ivr.domain.phone import mask
from storage import audit
from storage.models import Bin, BinStreet, DrillSchedule, Message, Person, PhoneNumber, PoliceZone, RoleAssignment
from ivr.domain.vocabulary import Escalation, Language, PhoneRank, ReviewMode, Role

if TYPE_CHECKING:
    from ivr.directory.accounts import Viewer

__all__ = [  # the member file's names stay importable from here
    "COLUMNS", "LANGUAGES", "REQUIRED", "CsvImportError", "ImportPlan", "ImportResult", "LineError", "MemberRow",
    "import_members", "parse_member_csv", "plan_member_import",
]


@dataclass(frozen=True)
class ImportResult:
    """What an import changed."""

    added: int
    updated: int
    removed: int




def phone_of(person: Person, rank: PhoneRank) -> PhoneNumber | None:
    """The person's number of that rank."""
    return next((p for p in person.phones if p.rank is rank), None)


def set_phone(person: Person, rank: PhoneRank, e164: str | None) -> None:
    """Give the person this number of that rank (``None``: none of that rank)."""
    current = phone_of(person, rank)
    if e164 is None:
        if current is not None:
            person.phones.remove(current)
    elif current is None:
        person.phones.append(PhoneNumber(rank=rank, e164=e164))
    else:
        current.e164 = e164


# -- zones and BINs ----------------------------------------------------------------------------
def zone_by_code(s: Session, code: str) -> PoliceZone | None:
    """The police zone with this code."""
    return s.scalars(select(PoliceZone).where(PoliceZone.code == code)).first()


def add_zone(s: Session, code: str, name: str, review_mode: ReviewMode, escalation: Escalation,
             actor: str) -> PoliceZone:
    """A new police zone (a taken code raises ``IntegrityError``); audited."""
    zone = PoliceZone(code=code, name=name, review_mode=review_mode, urgent_escalation=escalation)
    s.add(zone)
    s.flush()
    audit.record(s, actor, "zone.add", f"zone:{code}", name=name)
    return zone


def bin_by_number(s: Session, number: int) -> Bin | None:
    """The BIN with this number."""
    return s.scalars(select(Bin).where(Bin.number == number)).first()


def add_bin(s: Session, number: int, name: str, zone: PoliceZone, language: Language, streets: list[str],
            actor: str) -> Bin:
    """A new BIN of ``zone`` (a taken number raises ``IntegrityError``); audited."""
    bin_ = Bin(number=number, name=name, zone=zone, language=language)
    bin_.streets = [BinStreet(street=st.strip()) for st in dict.fromkeys(streets) if st.strip()]
    s.add(bin_)
    s.flush()
    audit.record(s, actor, "bin.add", f"bin:{number}", name=name, zone=zone.code)
    return bin_


def member_count(s: Session, bin_id: int) -> int:
    """How many member households the BIN has."""
    return s.scalar(select(func.count()).select_from(RoleAssignment).where(
        RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_id)) or 0


def bins_with_member_counts(s: Session) -> list[tuple[Bin, int]]:
    """Every BIN by number, with its member count."""
    return [(bin_, member_count(s, bin_.id)) for bin_ in s.scalars(select(Bin).order_by(Bin.number))]


def edit_bin(s: Session, bin_: Bin, name: str | None, language: Language, streets: list[str] | None,
             actor: str) -> None:
    """New language, and name and streets unless ``None`` (streets kept are the same rows); audited.

    Who may change the name and streets (admins: they steer alerts) is the caller's check."""
    if name is not None:
        bin_.name = name
    bin_.language = language
    if streets is not None:
        keep = {st.street: st for st in bin_.streets}
        bin_.streets = [keep.get(street) or BinStreet(street=street) for street in streets]
    audit.record(s, actor, "bin.edit", f"bin:{bin_.number}", name=bin_.name, language=language.value,
                 streets=len(bin_.streets))


class DirectoryRefused(ValueError):
    """A change the directory refuses (a BIN with police messages cannot be removed, say); the message says why."""


def bin_messages(s: Session, bin_id: int) -> int:
    """How many police messages (of any kind and state) the BIN has."""
    return s.scalar(select(func.count()).select_from(Message).where(Message.bin_id == bin_id)) or 0


def bin_as_dict(s: Session, bin_: Bin) -> dict[str, Any]:
    """A BIN's details, as ``bin list``/``bin show --json`` print them (coordinators' numbers masked)."""
    coordinators = [{"id": p.id, "name": p.name, "priority": next(
        (r.priority for r in p.roles if r.role is Role.COORDINATOR and r.bin_id == bin_.id), 0),
        "phone": mask(primary.e164) if (primary := phone_of(p, PhoneRank.PRIMARY)) else None, "active": p.active}
        for p in coordinators_of(s, bin_.id)]
    return {"id": bin_.id, "number": bin_.number, "name": bin_.name, "zone": bin_.zone.code,
            "zone_name": bin_.zone.name, "language": bin_.language.value, "one_level": bin_.one_level,
            "streets": [st.street for st in bin_.streets], "members": member_count(s, bin_.id),
            "coordinators": coordinators, "messages": bin_messages(s, bin_.id)}


def change_bin(s: Session, bin_: Bin, actor: str, *, name: str | None = None, language: Language | None = None,
               zone: PoliceZone | None = None, one_level: bool | None = None,
               streets: list[str] | None = None) -> list[str]:
    """Change what is given (``None``: unchanged); audited with the old and new values; the names of
    the fields that changed (none: nothing written)."""
    changes: dict[str, Any] = {}
    if name is not None and name != bin_.name:
        changes["name"] = [bin_.name, name]
        bin_.name = name
    if language is not None and language is not bin_.language:
        changes["language"] = [bin_.language.value, language.value]
        bin_.language = language
    if zone is not None and zone.id != bin_.zone_id:
        changes["zone"] = [bin_.zone.code, zone.code]
        bin_.zone = zone
    if one_level is not None and one_level != bin_.one_level:
        changes["one_level"] = [bin_.one_level, one_level]
        bin_.one_level = one_level
    if streets is not None:
        wanted = [st.strip() for st in dict.fromkeys(streets) if st.strip()]
        if wanted != [st.street for st in bin_.streets]:
            changes["streets"] = [len(bin_.streets), len(wanted)]
            keep = {st.street: st for st in bin_.streets}
            bin_.streets = [keep.get(street) or BinStreet(street=street) for street in wanted]
    if changes:
        audit.record(s, actor, "bin.edit", f"bin:{bin_.number}", **changes)
    return list(changes)


def remove_bin(s: Session, bin_: Bin, actor: str) -> int:
    """Delete a BIN that never had a police message; its roles go with it (the people stay, with their
    other roles). Audited; the number of roles removed. A BIN with messages is refused: they are
    police records, kept as they were (``DirectoryRefused``)."""
    messages = bin_messages(s, bin_.id)
    if messages:
        raise DirectoryRefused(f"BIN {bin_.number} has {messages} police message(s): they are police records and "
                               "are kept, so the BIN stays. Take its people off instead (`binfoon members remove ID "
                               f"--bin {bin_.number}`, `binfoon person role ID --remove coordinator --bin "
                               f"{bin_.number}`)")
    roles = s.scalar(select(func.count()).select_from(RoleAssignment).where(RoleAssignment.bin_id == bin_.id)) or 0
    s.execute(delete(RoleAssignment).where(RoleAssignment.bin_id == bin_.id))
    s.execute(delete(DrillSchedule).where(DrillSchedule.bin_id == bin_.id))
    audit.record(s, actor, "bin.remove", f"bin:{bin_.number}", name=bin_.name, zone=bin_.zone.code, roles=roles)
    s.delete(bin_)
    s.flush()
    return roles


def member_as_dict(s: Session, person: Person, show_numbers: bool = False) -> dict[str, Any]:
    """A member household's details and its BINs (numbers masked unless ``show_numbers``, which the caller audits)."""
    bins = list(s.scalars(select(Bin).join(RoleAssignment, RoleAssignment.bin_id == Bin.id).where(
        RoleAssignment.person_id == person.id, RoleAssignment.role == Role.MEMBER).order_by(Bin.number)))
    numbers = {p.rank.value: (p.e164 if show_numbers else mask(p.e164)) for p in person.phones}
    return {"id": person.id, "name": person.name, "street": person.street, "language": person.language.value,
            "phone": numbers.get(PhoneRank.PRIMARY.value), "second_phone": numbers.get(PhoneRank.SECONDARY.value),
            "bins": [b.number for b in bins], "active": person.active,
            "window": f"{person.call_window_start}-{person.call_window_end}" if person.call_window_start else None,
            "pause": f"{person.pause_from}..{person.pause_until}" if person.pause_from else None}


def remove_member(s: Session, person: Person, bin_: Bin, actor: str) -> None:
    """Take a household off a BIN's member list (the person and their call history stay); audited."""
    roles = [r for r in person.roles if r.role is Role.MEMBER and r.bin_id == bin_.id]
    if not roles:
        raise DirectoryRefused(f"person {person.id} ({person.name}) is not a member of BIN {bin_.number}")
    for role in roles:
        person.roles.remove(role)
    audit.record(s, actor, "member.remove", f"person:{person.id}", bin=bin_.number)


# -- people ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewPerson:
    """A person to add with one role (``bin_id``/``zone_id`` as the role needs)."""

    name: str
    role: Role
    language: Language
    phone: str
    second_phone: str | None = None
    #: Coordinators are called lowest first; ``None``: after the BIN's last coordinator.
    priority: int | None = None
    bin_id: int | None = None
    zone_id: int | None = None
    pin_hash: str | None = None


class NumberTaken(ValueError):
    """A phone number already identifies someone else in the same role and scope; the message names them."""

    def __init__(self, e164: str, holders: list[Person], role: Role) -> None:
        self.holders = holders
        names = ", ".join(f"person {p.id} ({p.name})" for p in holders)
        super().__init__(f"{mask(e164)} is already the number of {names} as {role.value}: one number is one "
                         "person per role and BIN (police and admins: in the whole installation), since the "
                         "caller ID says who calls")


#: Roles whose number identifies the caller across the whole installation (the police and admin
#: lines look the caller ID up in every zone), not only within a BIN.
GLOBAL_IDENTITY_ROLES = (Role.POLICE_OFFICER, Role.POLICE_APPROVER, Role.ADMIN)


def number_holders(s: Session, e164: str, role: Role, *, bin_id: int | None = None,
                   except_person: int | None = None) -> list[Person]:
    """The active people who have ``e164`` (first or second number) in ``role``: in the same BIN for
    coordinators and members, anywhere for the police and admins (``GLOBAL_IDENTITY_ROLES``)."""
    query = select(Person).join(PhoneNumber).join(RoleAssignment).where(
        PhoneNumber.e164 == e164, RoleAssignment.role == role, Person.active.is_(True))
    if role not in GLOBAL_IDENTITY_ROLES:
        query = query.where(RoleAssignment.bin_id == bin_id)
    if except_person is not None:
        query = query.where(Person.id != except_person)
    return list(s.scalars(query.order_by(Person.id)).unique())


def refuse_taken_numbers(s: Session, numbers: list[str], role: Role, *, bin_id: int | None = None,
                         except_person: int | None = None) -> None:
    """Raise ``NumberTaken`` when one of ``numbers`` already identifies another person in that role and scope."""
    for e164 in numbers:
        holders = number_holders(s, e164, role, bin_id=bin_id, except_person=except_person)
        if holders:
            raise NumberTaken(e164, holders, role)


def next_coordinator_priority(s: Session, bin_id: int) -> int:
    """The priority after the BIN's last coordinator (1 for the first): a new one is called last."""
    last = s.scalar(select(func.max(RoleAssignment.priority)).where(
        RoleAssignment.role == Role.COORDINATOR, RoleAssignment.bin_id == bin_id))
    return 1 if last is None else last + 1


def add_person(s: Session, new: NewPerson, actor: str, **audited: object) -> int:
    """Add a person with one role and their numbers; audited (with ``audited`` as details); their id.

    Refused with ``NumberTaken`` when a number already identifies someone else in that role and scope;
    a coordinator without a priority goes after the BIN's last one."""
    numbers = [new.phone] + ([new.second_phone] if new.second_phone else [])
    refuse_taken_numbers(s, numbers, new.role, bin_id=new.bin_id)
    priority = new.priority
    if priority is None:
        priority = next_coordinator_priority(s, new.bin_id) if new.role is Role.COORDINATOR and new.bin_id else 0
    assignment = RoleAssignment(role=new.role, priority=priority, bin_id=new.bin_id, zone_id=new.zone_id)
    person = Person(name=new.name, language=new.language, pin_hash=new.pin_hash)
    person.roles.append(assignment)
    person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=new.phone))
    if new.second_phone:
        person.phones.append(PhoneNumber(rank=PhoneRank.SECONDARY, e164=new.second_phone))
    s.add(person)
    s.flush()
    audit.record(s, actor, "person.add", f"person:{person.id}", role=new.role.value, **audited,
                 phone=mask(new.phone), priority=priority)
    return person.id


def coordinators_of(s: Session, bin_id: int) -> list[Person]:
    """A BIN's coordinators, in calling order."""
    return list(s.scalars(select(Person).join(RoleAssignment).where(
        RoleAssignment.role == Role.COORDINATOR, RoleAssignment.bin_id == bin_id).order_by(RoleAssignment.priority)))


# -- members -----------------------------------------------------------------------------------
def members_of(s: Session, bin_id: int) -> list[Person]:
    """A BIN's member households by name."""
    return list(s.scalars(select(Person).join(RoleAssignment).where(
        RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_id).order_by(Person.name, Person.id)))


def record_numbers_shown(s: Session, bin_number: int, count: int, actor: str) -> None:
    """Audit that a BIN's full member numbers were shown (before they are)."""
    audit.record(s, actor, "members.show_numbers", f"bin:{bin_number}", count=count)


def member_bin(s: Session, person_id: int) -> Bin | None:
    """The BIN a member belongs to (the first, should they be in several)."""
    return s.scalars(select(Bin).join(RoleAssignment, RoleAssignment.bin_id == Bin.id).where(
        RoleAssignment.person_id == person_id, RoleAssignment.role == Role.MEMBER)).first()


def member_by_phone(s: Session, e164: str) -> Person | None:
    """The member household that has this number (first or second)."""
    return s.scalars(select(Person).join(PhoneNumber).join(RoleAssignment).where(
        PhoneNumber.e164 == e164, RoleAssignment.role == Role.MEMBER)).first()


def members_by_phone(s: Session, e164: str, bin_id: int | None = None) -> list[tuple[Person, Bin]]:
    """Every (member household, BIN) with this number (first or second), in one BIN or all: more than
    one means the number alone does not say whose it is."""
    query = select(Person, Bin).join(PhoneNumber, PhoneNumber.person_id == Person.id).join(
        RoleAssignment, RoleAssignment.person_id == Person.id).join(Bin, Bin.id == RoleAssignment.bin_id).where(
        PhoneNumber.e164 == e164, RoleAssignment.role == Role.MEMBER)
    if bin_id is not None:
        query = query.where(Bin.id == bin_id)
    return [(person, bin_) for person, bin_ in s.execute(query.order_by(Person.id, Bin.number)).unique()]


def phone_taken(s: Session, bin_id: int, e164: str, person_id: int | None = None) -> bool:
    """Is ``e164`` the first number of another household of this BIN (``person_id``: the one edited)?"""
    others = select(PhoneNumber.id).join(Person).join(RoleAssignment).where(
        RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_id, PhoneNumber.rank == PhoneRank.PRIMARY,
        PhoneNumber.e164 == e164)
    if person_id is not None:
        others = others.where(Person.id != person_id)
    return s.scalar(others.limit(1)) is not None


@dataclass(frozen=True)
class Household:
    """A member household's details as typed in a form (numbers already normalized)."""

    name: str
    street: str | None
    language: Language
    phone: str
    second_phone: str | None


def add_member(s: Session, bin_: Bin, household: Household, actor: str) -> int:
    """Add one member household to ``bin_``; audited; its person id."""
    person = Person(name=household.name, street=household.street, language=household.language)
    person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
    set_phone(person, PhoneRank.PRIMARY, household.phone)
    set_phone(person, PhoneRank.SECONDARY, household.second_phone)
    s.add(person)
    s.flush()
    audit.record(s, actor, "member.add", f"person:{person.id}", bin=bin_.number, phone=mask(household.phone))
    return person.id


def save_member(s: Session, person_id: int, household: Household, actor: str) -> None:
    """Replace a member's name, street, language and numbers; audited."""
    person = s.get_one(Person, person_id)
    person.name = household.name
    person.street = household.street
    person.language = household.language
    set_phone(person, PhoneRank.PRIMARY, household.phone)
    set_phone(person, PhoneRank.SECONDARY, household.second_phone)
    audit.record(s, actor, "member.edit", f"person:{person_id}", phone=mask(household.phone))


_UNCHANGED: Any = object()


def set_member_preferences(s: Session, person: Person, actor: str, *,
                           window: tuple[str, str] | None = _UNCHANGED,
                           pause: tuple[dt.date, dt.date] | None = _UNCHANGED) -> None:
    """Set (or clear with ``None``) a member's own call window and holiday pause; left out: unchanged. Audited."""
    shown_window = shown_pause = None
    if window is not _UNCHANGED:
        person.call_window_start, person.call_window_end = window or (None, None)
        shown_window = "-".join(window) if window else None
    if pause is not _UNCHANGED:
        person.pause_from, person.pause_until = pause or (None, None)
        shown_pause = f"{pause[0]}..{pause[1]}" if pause else None
    audit.record(s, actor, "member.preferences", f"person:{person.id}", window=shown_window, pause=shown_pause)


# -- what a signed-in viewer sees (the web console) --------------------------------------------
def bins_in_scope(s: Session, viewer: Viewer) -> list[Bin]:
    """The BINs this viewer sees, by number."""
    return [b for b in s.scalars(select(Bin).order_by(Bin.number)) if viewer.sees_bin(b.id, b.zone_id)]


def bin_in_scope(s: Session, viewer: Viewer, number: int) -> Bin | None:
    """The BIN with this number, if the viewer sees it (else ``None``, as if it did not exist)."""
    bin_ = bin_by_number(s, number)
    return bin_ if bin_ is not None and viewer.sees_bin(bin_.id, bin_.zone_id) else None


def bin_choices(s: Session, viewer: Viewer) -> list[tuple[int, str, list[str]]]:
    """(number, name, streets) of every BIN the viewer sees: what the send form offers."""
    return [(b.number, b.name, [st.street for st in b.streets]) for b in bins_in_scope(s, viewer)]


def bin_overview(s: Session, viewer: Viewer) -> list[dict[str, Any]]:
    """The BINs the viewer sees, with zone, streets, member count and whether they keep its members."""
    return [{"number": b.number, "name": b.name, "zone": b.zone.name, "language": b.language.value,
             "streets": [st.street for st in b.streets], "members": member_count(s, b.id),
             "editable": viewer.may_edit_members(b.id)} for b in bins_in_scope(s, viewer)]


def bin_with_members(s: Session, viewer: Viewer, bin_: Bin) -> dict[str, Any]:
    """One BIN's details and its members (numbers masked), as its page shows them."""
    rows = [{"id": p.id, "name": p.name, "street": p.street or "", "language": p.language.value,
             "numbers": [mask(ph.e164) for ph in sorted(p.phones, key=lambda ph: ph.rank.value)]}
            for p in members_of(s, bin_.id)]
    return {"bin": {"number": bin_.number, "name": bin_.name, "zone": bin_.zone.name,
                    "language": bin_.language.value, "streets": [st.street for st in bin_.streets]},
            "members": rows, "editable": viewer.may_edit_members(bin_.id)}


def resolve_bins(s: Session, viewer: Viewer, raw: str
                 ) -> tuple[list[Bin], list[tuple[str, str]], dict[int, list[str]]]:
    """BINs named by number or by street (comma or line separated): (found, [(error text id, token)],
    {BIN id: its streets that matched}). A BIN found by a street is in the last: the sender must see
    and confirm it, since a street matches every BIN with a street starting with the typed word."""
    found: dict[int, Bin] = {}
    errors: list[tuple[str, str]] = []
    by_street: dict[int, list[str]] = {}
    tokens = [t.strip() for part in raw.replace("\n", ",").split(",") for t in [part] if t.strip()]
    for token in tokens:
        pattern = ""
        if token.isdigit():
            matches = list(s.scalars(select(Bin).where(Bin.number == int(token))))
        else:
            # A street matches a BIN's street case-insensitively, whole or as its beginning.
            pattern = token.lower().replace("%", "").replace("_", "") + "%"
            matches = list(s.scalars(select(Bin).join(BinStreet).where(func.lower(BinStreet.street).like(pattern))
                                     .distinct()))
        if not matches:
            errors.append(("send_error_unknown_bin", token))
            continue
        for bin_ in matches:
            if not viewer.sees_bin(bin_.id, bin_.zone_id):
                errors.append(("send_error_other_zone", str(bin_.number)))
            else:
                found[bin_.id] = bin_
                if pattern:
                    streets = by_street.setdefault(bin_.id, [])
                    streets += [st.street for st in bin_.streets
                                if st.street.lower().startswith(pattern[:-1]) and st.street not in streets]
    return sorted(found.values(), key=lambda b: b.number), errors, by_street


def member_in_scope(s: Session, viewer: Viewer, person_id: int) -> tuple[Person, Bin] | None:
    """A member and their BIN, if the viewer sees that BIN (else ``None``, as if they did not exist)."""
    person = s.get(Person, person_id)
    bin_ = member_bin(s, person_id) if person is not None else None
    if person is None or bin_ is None or not viewer.sees_bin(bin_.id, bin_.zone_id):
        return None
    return person, bin_


def open_member(s: Session, person: Person, bin_: Bin, actor: str) -> dict[str, Any]:
    """A member's details with full numbers, for an editor; the opening is audited (it shows numbers)."""
    audit.record(s, actor, "member.opened", f"person:{person.id}")
    second = phone_of(person, PhoneRank.SECONDARY)
    primary = phone_of(person, PhoneRank.PRIMARY)
    return {"member": {"id": person.id, "name": person.name, "street": person.street or "",
                       "language": person.language.value, "phone": primary.e164 if primary else "",
                       "second_phone": second.e164 if second else ""},
            "bin": {"number": bin_.number, "name": bin_.name}}


@dataclass(frozen=True)
class PlannedMember:
    """One household an import touches: its line in the file (0: not in the file), name, first number,
    the person (``None``: a new one) and, for a change, what changes."""

    line: int
    name: str
    phone: str
    person_id: int | None = None
    changes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportPlan:
    """What an import of a member file would do, worked out before anything is written.

    ``reused``: people already in the directory with the row's number (a coordinator, a member of
    another BIN) who become members of this BIN as the same person, not a duplicate. ``removed`` is
    empty in merge mode: merge never removes anyone."""

    bin_number: int
    mode: str
    added: tuple[PlannedMember, ...]
    reused: tuple[PlannedMember, ...]
    changed: tuple[PlannedMember, ...]
    unchanged: tuple[PlannedMember, ...]
    removed: tuple[PlannedMember, ...]

    def lines(self) -> list[str]:
        """One line per household added, reused, changed or removed (numbers masked)."""
        out = [f"add      line {m.line:<4} {m.name}  {mask(m.phone)}" for m in self.added]
        out += [f"reuse    line {m.line:<4} {m.name}  {mask(m.phone)}  (person {m.person_id}, already in the "
                "directory)" for m in self.reused]
        out += [f"change   line {m.line:<4} {m.name}  {mask(m.phone)}  (person {m.person_id}: "
                f"{', '.join(m.changes)})" for m in self.changed]
        out += [f"remove             {m.name}  {mask(m.phone)}  (person {m.person_id})" for m in self.removed]
        return out

    def summary(self) -> str:
        """``BIN 12: 1 added, ... (mode replace)``."""
        return (f"BIN {self.bin_number}: {len(self.added) + len(self.reused)} added, {len(self.changed)} changed, "
                f"{len(self.unchanged)} unchanged, {len(self.removed)} removed (mode {self.mode})")


IMPORT_MODES = ("replace", "merge")


def _member_changes(person: Person, row: MemberRow, language: Language) -> tuple[str, ...]:
    second = phone_of(person, PhoneRank.SECONDARY)
    changes = []
    if person.name != row.name:
        changes.append("name")
    if (person.street or None) != row.street:
        changes.append("street")
    if person.language is not language:
        changes.append("language")
    if (second.e164 if second else None) != row.second_phone:
        changes.append("second phone")
    return tuple(changes)


def plan_member_import(session: Session, bin_: Bin, rows: list[MemberRow], mode: str = "replace") -> ImportPlan:
    """What importing ``rows`` into ``bin_`` would change (reads only). ``replace``: the file is the
    whole list, members not in it are removed; ``merge``: add and update, never remove.

    Raises ``CsvImportError`` (line-numbered) when a row's number already belongs to another member
    of this BIN than the one it matches: one number is one household per BIN."""
    if mode not in IMPORT_MODES:
        raise ValueError(f"mode must be one of {', '.join(IMPORT_MODES)}, not {mode!r}")
    current = members_of(session, bin_.id)
    by_phone: dict[str, Person] = {}
    any_number: dict[str, Person] = {}
    for person in current:
        for number in person.phones:
            any_number.setdefault(number.e164, person)
            if number.rank is PhoneRank.PRIMARY:
                by_phone[number.e164] = person
    added: list[PlannedMember] = []
    reused: list[PlannedMember] = []
    changed: list[PlannedMember] = []
    unchanged: list[PlannedMember] = []
    errors: list[LineError] = []
    kept: set[int] = set()
    for row in rows:
        person = by_phone.get(row.phone)
        for number, label in ((row.phone, "phone"), (row.second_phone, "second phone")):
            other = any_number.get(number) if number else None
            if other is not None and other is not person:
                errors.append(LineError(row.line, f"{label} {mask(number or '')} is already the number of member "
                                                  f"person {other.id} ({other.name}) of BIN {bin_.number}"))
        if person is not None:
            kept.add(person.id)
            changes = _member_changes(person, row, row.language or bin_.language)
            (changed if changes else unchanged).append(PlannedMember(row.line, row.name, row.phone, person.id,
                                                                     changes))
            continue
        known = session.scalars(select(Person).join(PhoneNumber).where(
            PhoneNumber.e164 == row.phone, PhoneNumber.rank == PhoneRank.PRIMARY, Person.active.is_(True))
            .order_by(Person.id)).first()
        if known is not None:
            reused.append(PlannedMember(row.line, row.name, row.phone, known.id))
        else:
            added.append(PlannedMember(row.line, row.name, row.phone))
    if errors:
        raise CsvImportError(errors)
    removed = [] if mode == "merge" else [
        PlannedMember(0, p.name, (phone_of(p, PhoneRank.PRIMARY) or PhoneNumber(e164="")).e164, p.id)
        for p in current if p.id not in kept]
    return ImportPlan(bin_.number, mode, tuple(added), tuple(reused), tuple(changed), tuple(unchanged),
                      tuple(removed))


def apply_member_import(session: Session, bin_: Bin, rows: list[MemberRow], plan: ImportPlan,
                        actor: str) -> ImportResult:
    """Write ``plan`` (made by ``plan_member_import`` for these ``rows`` in this transaction); audited."""
    by_line = {row.line: row for row in rows}
    for planned in plan.added:
        row = by_line[planned.line]
        person = Person(name=row.name, street=row.street, language=row.language or bin_.language)
        person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
        set_phone(person, PhoneRank.PRIMARY, row.phone)
        set_phone(person, PhoneRank.SECONDARY, row.second_phone)
        session.add(person)
    for planned in plan.reused:
        # The same person joins this BIN's members; their name and numbers stay theirs.
        person = session.get_one(Person, planned.person_id)  # held: the collection's events need their owner
        person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
    for planned in plan.changed:
        row = by_line[planned.line]
        person = session.get_one(Person, planned.person_id)
        person.name = row.name
        person.street = row.street
        person.language = row.language or bin_.language
        set_phone(person, PhoneRank.SECONDARY, row.second_phone)
    for planned in plan.removed:
        person = session.get_one(Person, planned.person_id)
        for role in [r for r in person.roles if r.role is Role.MEMBER and r.bin_id == bin_.id]:
            person.roles.remove(role)
    session.flush()
    result = ImportResult(len(plan.added) + len(plan.reused), len(plan.changed) + len(plan.unchanged),
                          len(plan.removed))
    audit.record(session, actor, "members.import", f"bin:{bin_.number}", added=result.added,
                 updated=result.updated, removed=result.removed, reused=len(plan.reused), mode=plan.mode)
    return result


def import_members(session: Session, bin_: Bin, rows: list[MemberRow], actor: str,
                   mode: str = "replace") -> ImportResult:
    """Make ``bin_``'s member list equal to ``rows`` (``merge``: add and update only), in the caller's
    transaction. Who may remove members without a confirmation is the caller's business (the command
    line asks for ``--yes``)."""
    return apply_member_import(session, bin_, rows, plan_member_import(session, bin_, rows, mode), actor)


def record_test_call(s: Session, person_id: int, call_id: str, actor: str) -> tuple[str, str]:
    """Write (audit) a test call to a member before it is placed; returns its number and language."""
    person = s.get_one(Person, person_id)
    phone = phone_of(person, PhoneRank.PRIMARY)
    if phone is None:
        raise LookupError(f"person {person_id} has no phone number")
    audit.record(s, actor, "member.test_call", f"person:{person_id}", call=call_id)
    return phone.e164, person.language.value
