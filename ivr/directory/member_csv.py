"""The member file a coordinator keeps: parsing and checking it, before anything is written.

A file with any error is refused whole, with every error line-numbered (``CsvImportError``); a
number the destination policy refuses (premium, satellite, outside the allowed countries:
``ivr.domain.destinations``) is such an error.

The optional ``channels`` and ``email`` columns (issue 17) hold a member's own channels ("voice+sms",
"text" for text only; empty: the zone's defaults) and their e-mail address; choosing SMS without a
mobile number, or e-mail without an address, is an error on that line. A file without one of these
columns leaves that choice of its members as it is (``MemberRow.given``).
Pure: no database here; ``ivr.directory.member_import.import_members`` writes what this accepts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from ivr.domain.channels import InvalidChannels, check_email, format_channels, parse_channels
from ivr.domain.destinations import DEFAULT_DESTINATIONS, DestinationPolicy
from ivr.domain.phone import InvalidPhoneNumber, is_mobile
from ivr.domain.vocabulary import Channel, Language

#: Accepted header names (case-insensitive), English and Dutch, per column.
COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("name", "naam"),
    "phone": ("phone", "telefoon", "telephone", "telefoonnummer"),
    "second_phone": ("second phone", "second_phone", "phone 2", "tweede telefoon", "telefoon 2", "telefoon2"),
    "street": ("street", "straat"),
    "language": ("language", "taal"),
    "channels": ("channels", "kanalen"),
    "email": ("email", "e-mail", "mail"),
}
REQUIRED = ("name", "phone")
#: Columns a file may leave out without clearing what its members chose elsewhere (web, command line).
KEPT_WHEN_ABSENT = ("channels", "email")
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
    #: The member's own channels as stored ("voice+sms"; ``None``: the zone's defaults).
    channels: str | None = None
    email: str | None = None
    #: Which of ``KEPT_WHEN_ABSENT`` the file has: the others are left as they are on import.
    given: frozenset[str] = frozenset()


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


def _channels_and_email(raw_channels: str, raw_email: str | None, numbers: tuple[str, ...] | None, line: int,
                        errors: list[LineError]) -> tuple[str | None, str | None]:
    """A row's channels (as stored) and e-mail address, their problems appended to ``errors``.

    ``raw_email`` is ``None`` when the file has no e-mail column (the member's address stays, so the
    import checks an e-mail choice against it); ``numbers`` is ``None`` when they were refused."""
    email = None
    if raw_email:
        try:
            email = check_email(raw_email)
        except ValueError as exc:
            errors.append(LineError(line, f"e-mail: {exc}"))
    if not raw_channels:
        return None, email
    try:
        chosen = parse_channels(raw_channels)
    except InvalidChannels as exc:
        errors.append(LineError(line, f"channels: {exc}"))
        return None, email
    if Channel.SMS in chosen and numbers is not None and not any(is_mobile(n) for n in numbers):
        errors.append(LineError(line, f"channels {raw_channels!r}: SMS needs a mobile number, and no number of "
                                      "this line is one (write email for e-mail only)"))
    if Channel.EMAIL in chosen and raw_email == "":
        errors.append(LineError(line, f"channels {raw_channels!r}: e-mail needs an address in the e-mail column"))
    return format_channels(chosen), email


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
        errors_before_numbers = len(errors)
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
        numbers = tuple(n for n in (phone, second) if n) if len(errors) == errors_before_numbers else None
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
        channels, email = _channels_and_email(get("channels"), get("email") if "email" in positions else None,
                                              numbers, line, errors)
        if name and phone:
            rows.append(MemberRow(line, name, phone, second, get("street") or None, language, channels, email,
                                  frozenset(c for c in KEPT_WHEN_ABSENT if c in positions)))
    if errors:
        raise CsvImportError(errors)
    if not rows:
        raise CsvImportError([LineError(2, "no members: the file has a header but no rows")])
    return rows
