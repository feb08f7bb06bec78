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

from sqlalchemy import func, select
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
from storage.models import Bin, BinStreet, Person, PhoneNumber, PoliceZone, RoleAssignment
from ivr.domain.vocabulary import Escalation, Language, PhoneRank, ReviewMode, Role

if TYPE_CHECKING:
    from ivr.directory.accounts import Viewer

__all__ = [  # the member file's names stay importable from here
    "COLUMNS", "LANGUAGES", "REQUIRED", "CsvImportError", "ImportResult", "LineError", "MemberRow", "import_members",
    "parse_member_csv",
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


# -- people ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewPerson:
    """A person to add with one role (``bin_id``/``zone_id`` as the role needs)."""

    name: str
    role: Role
    language: Language
    phone: str
    second_phone: str | None = None
    priority: int = 0
    bin_id: int | None = None
    zone_id: int | None = None
    pin_hash: str | None = None


def add_person(s: Session, new: NewPerson, actor: str, **audited: object) -> int:
    """Add a person with one role and their numbers; audited (with ``audited`` as details); their id."""
    assignment = RoleAssignment(role=new.role, priority=new.priority, bin_id=new.bin_id, zone_id=new.zone_id)
    person = Person(name=new.name, language=new.language, pin_hash=new.pin_hash)
    person.roles.append(assignment)
    person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=new.phone))
    if new.second_phone:
        person.phones.append(PhoneNumber(rank=PhoneRank.SECONDARY, e164=new.second_phone))
    s.add(person)
    s.flush()
    audit.record(s, actor, "person.add", f"person:{person.id}", role=new.role.value, **audited,
                 phone=mask(new.phone))
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


def import_members(session: Session, bin_: Bin, rows: list[MemberRow], actor: str) -> ImportResult:
    """Make ``bin_``'s member list equal to ``rows`` (in the caller's transaction)."""
    current = session.scalars(
        select(Person).join(RoleAssignment).where(RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_.id)
    ).unique().all()
    by_phone = {}
    for person in current:
        primary = phone_of(person, PhoneRank.PRIMARY)
        if primary is not None:
            by_phone[primary.e164] = person
    added = updated = 0
    keep: set[int] = set()  # ids of current members still in the file (new ones need no id)
    for row in rows:
        person = by_phone.get(row.phone)
        if person is None:
            person = Person(name=row.name, language=row.language or bin_.language)
            session.add(person)
            person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
            person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=row.phone))
            added += 1
        else:
            updated += 1
            keep.add(person.id)
        person.name = row.name
        person.street = row.street
        person.language = row.language or bin_.language
        second = phone_of(person, PhoneRank.SECONDARY)
        if row.second_phone is None and second is not None:
            person.phones.remove(second)
        elif row.second_phone is not None and second is None:
            person.phones.append(PhoneNumber(rank=PhoneRank.SECONDARY, e164=row.second_phone))
        elif row.second_phone is not None and second is not None:
            second.e164 = row.second_phone
    removed = 0
    for person in current:
        if person.id not in keep:
            for role in [r for r in person.roles if r.role is Role.MEMBER and r.bin_id == bin_.id]:
                person.roles.remove(role)
            removed += 1
    audit.record(session, actor, "members.import", f"bin:{bin_.number}", added=added, updated=updated,
                 removed=removed)
    return ImportResult(added, updated, removed)


def record_test_call(s: Session, person_id: int, call_id: str, actor: str) -> tuple[str, str]:
    """Write (audit) a test call to a member before it is placed; returns its number and language."""
    person = s.get_one(Person, person_id)
    phone = phone_of(person, PhoneRank.PRIMARY)
    if phone is None:
        raise LookupError(f"person {person_id} has no phone number")
    audit.record(s, actor, "member.test_call", f"person:{person_id}", call=call_id)
    return phone.e164, person.language.value
