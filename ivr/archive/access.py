"""Who may have a police message back: the archive's one access rule, whatever the way in.

Rules: replay (and export) is allowed to admins (in scope) and to the police (officers,
approvers) of the message's zone, and to nobody else; the rule depends only on the message's BIN
and zone, so the admin line checks it before a BIN's messages are even listed. These functions
run inside the caller's transaction; auditing a refusal is the caller's job.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.phone import InvalidPhoneNumber, normalize_phone
from storage.models import Bin, Message, Person, PhoneNumber, RoleAssignment
from ivr.domain.vocabulary import Role


class ArchiveError(Exception):
    """A request the archive cannot serve (unknown message, no recording, no player); says why."""


class AccessDenied(ArchiveError):
    """The person asking may not replay this message (the refusal is already audited)."""


#: Roles that may replay a message of their own zone.
ZONE_POLICE = frozenset({Role.POLICE_OFFICER, Role.POLICE_APPROVER})


def resolve_person(s: Session, who: str) -> Person | None:
    """The person ``who`` names: ``person:ID``, a bare id, or a phone number only they have; else ``None``."""
    raw = who.strip()
    raw = raw.removeprefix("person:")
    if raw.isdigit() and not raw.startswith("0"):
        return s.get(Person, int(raw))
    try:
        e164 = normalize_phone(raw)
    except InvalidPhoneNumber:
        return None
    people = s.scalars(select(Person).join(PhoneNumber).where(PhoneNumber.e164 == e164).distinct()).all()
    # A shared household number does not say who is asking.
    return people[0] if len(people) == 1 else None


def replay_refusal(s: Session, person: Person | None, message: Message) -> str | None:
    """Why ``person`` may not replay ``message`` (``None``: allowed)."""
    return bin_replay_refusal(s, person, message.bin)


def bin_replay_refusal(s: Session, person: Person | None, bin_: Bin) -> str | None:
    """Why ``person`` may not replay the messages of ``bin_`` (``None``: allowed).

    The one access rule for replay, whatever the way in (command line, admin phone line): the
    rule depends only on the message's BIN and zone, so it can be checked before a BIN's
    messages are even listed.
    """
    if person is None:
        return "not a known person (give person:ID or a phone number of theirs)"
    if not person.active:
        return "the person is not active"
    zone_id = bin_.zone_id
    for role in s.scalars(select(RoleAssignment).where(RoleAssignment.person_id == person.id)):
        in_scope = role.zone_id in (None, zone_id) and role.bin_id in (None, bin_.id)
        if role.role is Role.ADMIN and in_scope:
            return None
        if role.role in ZONE_POLICE and role.zone_id == zone_id:
            return None
    return "only admins and the police of the message's zone may replay it"
