"""The member file a coordinator keeps: parsing and checking it, before anything is written.

A file with any error is refused whole, with every error line-numbered (``CsvImportError``); a
number the destination policy refuses (premium, satellite, outside the allowed countries:
``ivr.domain.destinations``) is such an error.
Pure: no database here; ``ivr.directory.member_import.import_members`` writes what this accepts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from ivr.domain.destinations import DEFAULT_DESTINATIONS, DestinationPolicy
from ivr.domain.phone import InvalidPhoneNumber
from ivr.domain.vocabulary import Language

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


def parse_member_csv(data: bytes, destinations: DestinationPolicy = DEFAULT_DESTINATIONS) -> list[MemberRow]:
    """Every member row of ``data``; raises ``CsvImportError`` with all problems found (numbers are
    checked against ``destinations``, the installation's ``Settings.destinations``)."""
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
            phone = destinations.dialable(get("phone"))
        except InvalidPhoneNumber as exc:
            errors.append(LineError(line, f"phone: {exc}"))
        if get("second_phone"):
            try:
                second = destinations.dialable(get("second_phone"))
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
