"""The directory: zones, BINs, people, and the member list a coordinator keeps as a CSV file.

A member is a household: one row, one primary number (and maybe a second). The coordinator's
file is the truth for their BIN, so an import *replaces* the BIN's member list, matching
existing members by primary number so their history stays linked. A file with any error is
refused whole, with every error line-numbered, and nothing is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.phone import InvalidPhoneNumber, normalize_phone
from storage import audit
from storage.models import Bin, Language, Person, PhoneNumber, PhoneRank, Role, RoleAssignment

#: Accepted header names (case-insensitive), English and Dutch, per column.
COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("name", "naam"),
    "phone": ("phone", "telefoon", "telephone", "telefoonnummer"),
    "second_phone": ("second phone", "second_phone", "phone 2", "tweede telefoon", "telefoon 2", "telefoon2"),
    "street": ("street", "straat"),
    "language": ("language", "taal"),
}
REQUIRED = ("name", "phone")
LANGUAGES = {
    "nl": Language.NL, "nederlands": Language.NL, "dutch": Language.NL, "vlaams": Language.NL,
    "fr": Language.FR, "français": Language.FR, "francais": Language.FR, "frans": Language.FR, "french": Language.FR,
    "de": Language.DE, "deutsch": Language.DE, "duits": Language.DE, "german": Language.DE,
}


@dataclass(frozen=True)
class LineError:
    """One problem in the file, at a 1-based line number."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class CsvImportError(ValueError):
    """The file was refused; ``errors`` lists every problem found."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass(frozen=True)
class MemberRow:
    """One valid row of the member file."""

    line: int
    name: str
    phone: str
    second_phone: str | None
    street: str | None
    language: Language | None


@dataclass(frozen=True)
class ImportResult:
    """What an import changed."""

    added: int
    updated: int
    removed: int


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvImportError([LineError(line, f"not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                                              "save the file as UTF-8 (CSV UTF-8 in Excel)")]) from None


def _header_map(header: list[str]) -> tuple[dict[str, int], list[LineError]]:
    errors = []
    positions: dict[str, int] = {}
    alias = {name: column for column, names in COLUMNS.items() for name in names}
    for index, title in enumerate(header):
        key = " ".join(title.strip().lower().split())
        column = alias.get(key)
        if column is None:
            known = ", ".join(names[0] for names in COLUMNS.values())
            errors.append(LineError(1, f"unknown column {title.strip()!r}; the columns are: {known}"))
        elif column in positions:
            errors.append(LineError(1, f"column {title.strip()!r} appears twice"))
        else:
            positions[column] = index
    for column in REQUIRED:
        if column not in positions:
            errors.append(LineError(1, f"missing column {column!r}"))
    return positions, errors


def parse_member_csv(data: bytes) -> list[MemberRow]:
    """Every member row of ``data``; raises ``CsvImportError`` with all problems found."""
    text = _decode(data)
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise CsvImportError([LineError(1, "the file is empty: no header and no members")])
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    header = next(reader)
    positions, errors = _header_map(header)
    if errors:
        raise CsvImportError(errors)

    rows: list[MemberRow] = []
    seen: dict[str, int] = {}
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue  # blank lines are harmless
        if len(fields) != len(header):
            errors.append(LineError(line, f"{len(fields)} fields where the header has {len(header)}"))
            continue

        def get(column: str) -> str:
            return fields[positions[column]].strip() if column in positions else ""

        name = get("name")
        if not name:
            errors.append(LineError(line, "the name is empty"))
        phone = second = None
        try:
            phone = normalize_phone(get("phone"))
        except InvalidPhoneNumber as exc:
            errors.append(LineError(line, f"phone: {exc}"))
        if get("second_phone"):
            try:
                second = normalize_phone(get("second_phone"))
            except InvalidPhoneNumber as exc:
                errors.append(LineError(line, f"second phone: {exc}"))
        if phone is not None and second == phone:
            errors.append(LineError(line, "the second phone is the same as the first"))
        if phone is not None:
            if phone in seen:
                errors.append(LineError(line, f"phone {phone} is already on line {seen[phone]}"))
            else:
                seen[phone] = line
        language = None
        if get("language"):
            language = LANGUAGES.get(get("language").lower())
            if language is None:
                errors.append(LineError(line, f"unknown language {get('language')!r}; use nl, fr or de"))
        if name and phone:
            rows.append(MemberRow(line, name, phone, second, get("street") or None, language))
    if errors:
        raise CsvImportError(errors)
    if not rows:
        raise CsvImportError([LineError(2, "no members: the file has a header but no rows")])
    return rows


def _phone(person: Person, rank: PhoneRank) -> PhoneNumber | None:
    return next((p for p in person.phones if p.rank is rank), None)


def import_members(session: Session, bin_: Bin, rows: list[MemberRow], actor: str) -> ImportResult:
    """Make ``bin_``'s member list equal to ``rows`` (in the caller's transaction)."""
    current = session.scalars(
        select(Person).join(RoleAssignment).where(RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_.id)
    ).unique().all()
    by_phone = {}
    for person in current:
        primary = _phone(person, PhoneRank.PRIMARY)
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
        second = _phone(person, PhoneRank.SECONDARY)
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
