"""What every admin change checks first: that an admin asks, that what it names exists, that a
name is a name. A refusal is an ``AdminError`` whose message says why; nothing is written."""

from __future__ import annotations

from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.actor import Actor
from ivr.domain.vocabulary import Role
from storage.models import Bin, Person, PoliceZone, RoleAssignment

#: Roles scoped to a BIN, and to a zone (an admin's is global).
BIN_ROLES: Final = frozenset({Role.COORDINATOR, Role.MEMBER})
ZONE_ROLES: Final = frozenset({Role.POLICE_OFFICER, Role.POLICE_APPROVER})
MAX_NAME_CHARS: Final = 200


class AdminError(ValueError):
    """The change is refused (not an admin, nobody by that id, bad value); the message says why."""


def require_admin(s: Session, actor: Actor) -> None:
    """Refuse anyone but an admin or the server's operator.

    A person is an admin by the directory, read now: ``Actor.admin`` comes from the caller (a web
    session made before the role was taken away, a caller that got it wrong) and is not enough."""
    if actor.admin and (actor.person_id is None or actor.person_id in active_admins(s)):
        return
    raise AdminError(f"{actor.label} is not an admin: only admins change persons and zones")


def active_admins(s: Session) -> set[int]:
    """The ids of the active people with the admin role."""
    return set(s.scalars(select(RoleAssignment.person_id).join(Person, Person.id == RoleAssignment.person_id)
                         .where(RoleAssignment.role == Role.ADMIN, Person.active.is_(True))))


def get_person(s: Session, person_id: int) -> Person:
    """The person with this id (``AdminError``: nobody)."""
    person = s.get(Person, person_id)
    if person is None:
        raise AdminError(f"no person {person_id}")
    return person


def get_zone(s: Session, code: str) -> PoliceZone:
    """The police zone with this code (``AdminError``: none)."""
    zone = s.scalars(select(PoliceZone).where(PoliceZone.code == code)).first()
    if zone is None:
        raise AdminError(f"no police zone with code {code!r}")
    return zone


def get_bin(s: Session, number: int) -> Bin:
    """The BIN with this number (``AdminError``: none)."""
    found = s.scalars(select(Bin).where(Bin.number == number)).first()
    if found is None:
        raise AdminError(f"no BIN number {number}")
    return found


def check_name(name: str) -> str:
    """A person's or zone's name with its spaces tidied (``AdminError``: empty or too long)."""
    clean = " ".join(name.split())
    if not clean:
        raise AdminError("a name cannot be empty")
    if len(clean) > MAX_NAME_CHARS:
        raise AdminError(f"a name has at most {MAX_NAME_CHARS} characters")
    return clean
