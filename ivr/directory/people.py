"""People of the directory and their numbers: adding a person with one role, and the rule that a
phone number identifies one person per role and BIN (police and admins: in the whole installation).

All the SQL of people and their phone numbers lives here; BINs and members are ``ivr.directory.store``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ivr.domain.phone import mask
from ivr.domain.vocabulary import Language, PhoneRank, Role
from storage import audit
from storage.models import Person, PhoneNumber, RoleAssignment


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
