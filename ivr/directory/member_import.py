"""Importing a coordinator's member file into their BIN: a plan worked out before anything is
written, then the plan written in the same transaction.

The coordinator's file is the truth for their BIN, so an import *replaces* the BIN's member list
(``merge``: adds and updates only), matching existing members by primary number so their history
stays linked. A file with any error is refused whole, with every error line-numbered
(``ivr.directory.member_csv``), and nothing is written.

Channels and e-mail (issue 17): a file with a ``channels`` or ``email`` column sets them (an empty
cell: the zone's default channels, no address); a file without that column leaves them as they are,
and a member's choice must still be one they can receive (SMS: a mobile number; e-mail: an address).
A person reused from the directory keeps their name and numbers; the file's channels (or e-mail
address) are theirs only if they have none of their own, and must reach them with their numbers;
where they have their own, the plan's line says the file's were not applied. Every member whose
channels or address an import changes gets an audit row of their own (``member.edit``, old and new,
the address masked), as an edit by hand does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.directory.member_csv import CsvImportError, LineError, MemberRow, parse_member_csv
from ivr.directory.people import phone_of, set_phone
from ivr.directory.store import Household, members_of, new_member, unreachable_channels
from ivr.domain.channels import mask_email
from ivr.domain.phone import mask
from ivr.domain.vocabulary import Channel, Language, PhoneRank, Role
from storage import audit
from storage.models import Bin, Person, PhoneNumber, RoleAssignment

__all__ = [  # with the member file's names an importer needs
    "IMPORT_MODES", "CsvImportError", "ImportPlan", "ImportResult", "MemberRow", "PlannedMember",
    "apply_member_import", "import_members", "parse_member_csv", "plan_member_import",
]


@dataclass(frozen=True)
class ImportResult:
    """What an import changed."""

    added: int
    updated: int
    removed: int


@dataclass(frozen=True)
class PlannedMember:
    """One household an import touches: its line in the file (0: not in the file), name, first number,
    the person (``None``: a new one) and, for a change, what changes (for a new one: the channels and
    e-mail address it gets, if any)."""

    line: int
    name: str
    phone: str
    person_id: int | None = None
    changes: tuple[str, ...] = ()
    #: For a person reused from the directory: the file's values that are not applied (they have their own).
    not_applied: tuple[str, ...] = ()


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
        out = [f"add      line {m.line:<4} {m.name}  {mask(m.phone)}"
               + (f"  ({', '.join(m.changes)})" if m.changes else "") for m in self.added]
        out += [_reuse_line(m) for m in self.reused]
        out += [f"change   line {m.line:<4} {m.name}  {mask(m.phone)}  (person {m.person_id}: "
                f"{', '.join(m.changes)})" for m in self.changed]
        out += [f"remove             {m.name}  {mask(m.phone)}  (person {m.person_id})" for m in self.removed]
        return out

    def not_applied_lines(self) -> list[str]:
        """The lines of people reused from the directory who keep their own channels or address (the
        file's were not applied): said after an import too, not only in its plan."""
        return [_reuse_line(m) for m in self.reused if m.not_applied]

    def summary(self) -> str:
        """``BIN 12: 1 added, ... (mode replace)``."""
        return (f"BIN {self.bin_number}: {len(self.added) + len(self.reused)} added, {len(self.changed)} changed, "
                f"{len(self.unchanged)} unchanged, {len(self.removed)} removed (mode {self.mode})")


IMPORT_MODES = ("replace", "merge")


def _reuse_line(m: PlannedMember) -> str:
    return (f"reuse    line {m.line:<4} {m.name}  {mask(m.phone)}  (person {m.person_id}, already in the directory"
            + "".join(f"; {c}" for c in m.changes)
            + (f"; the file's {' and '.join(m.not_applied)} not applied: the person has their own"
               if m.not_applied else "") + ")")


def _shown_channels(channels: str | None) -> str:
    return channels or "zone default"


def _shown_email(email: str | None) -> str:
    return mask_email(email) if email else "none"


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
    if "channels" in row.given and person.channels != row.channels:
        changes.append(f"channels {_shown_channels(person.channels)} -> {_shown_channels(row.channels)}")
    if "email" in row.given and person.email != row.email:
        changes.append(f"e-mail {_shown_email(person.email)} -> {_shown_email(row.email)}")
    return tuple(changes)


def _new_contact(row: MemberRow) -> tuple[str, ...]:
    """What a new member's line shows besides name and number: their channels and address, if given."""
    return tuple(([f"channels {row.channels}"] if row.channels else [])
                 + ([f"e-mail {mask_email(row.email)}"] if row.email else []))


def _unreachable_choice(row: MemberRow, person: Person | None) -> str | None:
    """Why the channels a member ends up with (the file's, or their own where the file has no such
    column) cannot reach them, or ``None``. The file alone was checked when it was read."""
    if {"channels", "email"} <= row.given:
        return None
    kept = person.channels if person is not None else None
    channels = row.channels if "channels" in row.given else kept
    email = row.email if "email" in row.given else (person.email if person is not None else None)
    missing = unreachable_channels(channels, (row.phone, row.second_phone), email)
    if Channel.SMS in missing:
        return f"channels {channels}: SMS needs a mobile number, and no number of this line is one"
    if Channel.EMAIL in missing:
        return f"channels {channels}: e-mail needs an address, and this member would have none"
    return None


def _reused_contact(person: Person, row: MemberRow) -> tuple[dict[str, str | None], tuple[str, ...], tuple[str, ...]]:
    """What a reused person takes of the row's channels and e-mail: (values to set, the changes as the
    plan shows them, the file's values not applied). Only what the person has none of is taken."""
    values: dict[str, str | None] = {}
    changes: list[str] = []
    not_applied: list[str] = []
    if "channels" in row.given and row.channels != person.channels:
        if person.channels is None:
            values["channels"] = row.channels
            changes.append(f"channels {_shown_channels(None)} -> {_shown_channels(row.channels)}")
        else:
            not_applied.append("channels")
    if "email" in row.given and row.email != person.email:
        if person.email is None:
            values["email"] = row.email
            changes.append(f"e-mail {_shown_email(None)} -> {_shown_email(row.email)}")
        else:
            not_applied.append("e-mail")
    return values, tuple(changes), tuple(not_applied)


def _unreachable_for_reused(person: Person, values: dict[str, str | None]) -> str | None:
    """Why the channels a reused person would have cannot reach them with their own numbers, or ``None``."""
    if not values:
        return None
    channels = values.get("channels", person.channels)
    missing = unreachable_channels(channels, tuple(n.e164 for n in person.phones), values.get("email", person.email))
    if Channel.SMS in missing:
        return (f"channels {channels}: SMS needs a mobile number, and person {person.id} (already in the directory, "
                "who keeps their numbers) has none")
    if Channel.EMAIL in missing:
        return f"channels {channels}: e-mail needs an address, and person {person.id} would have none"
    return None


def plan_member_import(session: Session, bin_: Bin, rows: list[MemberRow], mode: str = "replace") -> ImportPlan:
    """What importing ``rows`` into ``bin_`` would change (reads only). ``replace``: the file is the
    whole list, members not in it are removed; ``merge``: add and update, never remove.

    Raises ``CsvImportError`` (line-numbered) when a row's number already belongs to another member
    of this BIN than the one it matches (one number is one household per BIN), or when a member's
    channels, with what the file leaves as it is, could not reach them."""
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
            if (unreachable := _unreachable_choice(row, person)) is not None:
                errors.append(LineError(row.line, unreachable))
            kept.add(person.id)
            changes = _member_changes(person, row, row.language or bin_.language)
            (changed if changes else unchanged).append(PlannedMember(row.line, row.name, row.phone, person.id,
                                                                     changes))
            continue
        known = session.scalars(select(Person).join(PhoneNumber).where(
            PhoneNumber.e164 == row.phone, PhoneNumber.rank == PhoneRank.PRIMARY, Person.active.is_(True))
            .order_by(Person.id)).first()
        if known is not None:
            values, changes, not_applied = _reused_contact(known, row)
            if (unreachable := _unreachable_for_reused(known, values)) is not None:
                errors.append(LineError(row.line, unreachable))
            reused.append(PlannedMember(row.line, row.name, row.phone, known.id, changes, not_applied))
        else:
            if (unreachable := _unreachable_choice(row, None)) is not None:
                errors.append(LineError(row.line, unreachable))
            added.append(PlannedMember(row.line, row.name, row.phone, changes=_new_contact(row)))
    if errors:
        raise CsvImportError(errors)
    removed = [] if mode == "merge" else [
        PlannedMember(0, p.name, primary.e164 if (primary := phone_of(p, PhoneRank.PRIMARY)) else "", p.id)
        for p in current if p.id not in kept]
    return ImportPlan(bin_.number, mode, tuple(added), tuple(reused), tuple(changed), tuple(unchanged),
                      tuple(removed))


def apply_member_import(session: Session, bin_: Bin, rows: list[MemberRow], plan: ImportPlan,
                        actor: str) -> ImportResult:
    """Write ``plan`` (made by ``plan_member_import`` for these ``rows`` in this transaction); audited."""
    by_line = {row.line: row for row in rows}
    for planned in plan.added:
        row = by_line[planned.line]
        new_member(session, bin_, Household(row.name, row.street, row.language or bin_.language, row.phone,
                                            row.second_phone, row.channels, row.email))
    contact_changes: dict[int, dict[str, Any]] = {}
    for planned in plan.reused:
        # The same person joins this BIN's members; their name and numbers stay theirs, and so do
        # their channels and address if they have their own (``_reused_contact``).
        person = session.get_one(Person, planned.person_id)  # held: the collection's events need their owner
        person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
        values, _, _ = _reused_contact(person, by_line[planned.line])
        contact_changes[person.id] = _contact_change(person, values)
        for key, value in values.items():
            setattr(person, key, value)
    for planned in plan.changed:
        row = by_line[planned.line]
        person = session.get_one(Person, planned.person_id)
        contact_changes[person.id] = _contact_change(person, {key: getattr(row, key) for key in row.given})
        person.name = row.name
        person.street = row.street
        person.language = row.language or bin_.language
        set_phone(person, PhoneRank.SECONDARY, row.second_phone)
        if "channels" in row.given:
            person.channels = row.channels
        if "email" in row.given:
            person.email = row.email
    for planned in plan.removed:
        person = session.get_one(Person, planned.person_id)
        for role in [r for r in person.roles if r.role is Role.MEMBER and r.bin_id == bin_.id]:
            person.roles.remove(role)
    session.flush()
    result = ImportResult(len(plan.added) + len(plan.reused), len(plan.changed) + len(plan.unchanged),
                          len(plan.removed))
    changed = {pid: change for pid, change in contact_changes.items() if change}
    audit.record(session, actor, "members.import", f"bin:{bin_.number}", added=result.added,
                 updated=result.updated, removed=result.removed, reused=len(plan.reused), mode=plan.mode,
                 channels_or_email_changed=len(changed))
    for pid, change in sorted(changed.items()):
        audit.record(session, actor, "member.edit", f"person:{pid}", bin=bin_.number, via="import", **change)
    return result


def _contact_change(person: Person, values: dict[str, Any]) -> dict[str, Any]:
    """The channels and e-mail address ``values`` change of ``person``, as ``member.edit`` rows show them:
    [old, new], the address masked."""
    change: dict[str, Any] = {}
    if "channels" in values and values["channels"] != person.channels:
        change["channels"] = [person.channels, values["channels"]]
    if "email" in values and values["email"] != person.email:
        change["email"] = [mask_email(e) if e else None for e in (person.email, values["email"])]
    return change


def import_members(session: Session, bin_: Bin, rows: list[MemberRow], actor: str,
                   mode: str = "replace") -> ImportResult:
    """Make ``bin_``'s member list equal to ``rows`` (``merge``: add and update only), in the caller's
    transaction. Who may remove members without a confirmation is the caller's business (the command
    line asks for ``--yes``)."""
    return apply_member_import(session, bin_, rows, plan_member_import(session, bin_, rows, mode), actor)
