"""Durable confirmations: the CEL CSV file that Asterisk writes on its own.

When a member presses 1, the ``binfoon-member`` dialplan (or the application over AGI, through
the ``binfoon-member-confirm`` subroutine or ``EXEC CELGenUserEvent BINFOON_CONFIRM,<attempt>``)
raises the CEL user event ``BINFOON_CONFIRM`` with the attempt id as its extra. ``cel_custom``
appends it to a CSV file in the instance's own log directory (``asterisk-conf/cel_custom.conf``),
opening and closing the file for every event. The application reads the lines written after its
last checkpoint (a byte offset) on start and while it runs, so a confirmation made while it was
down or dying is never lost (RELIABILITY.md §2.6, target B1).

Rules:
- a line is consumed only once it is complete (ends with a newline): a line Asterisk is still
  writing is read next time, whole;
- a missing file is no confirmation yet; a file shorter than the checkpoint was rotated or
  truncated, and is read again from its start (confirming is idempotent per attempt, so a line
  read twice does no harm, and none is skipped);
- lines that are not ``BINFOON_CONFIRM`` user events are passed over; malformed lines are logged
  and passed over, never fatal.

The file's columns, in order (all quoted, ``"`` doubled inside a value)::

    EventEnum,UserEventName,EventTime,UniqueID,LinkedID,ChanName,AppName,AppData,EventExtra
    "USER_DEFINED","BINFOON_CONFIRM","1795423733.229856","<attempt>","<linkedid>","Local/...;1",
    "CELGenUserEvent","BINFOON_CONFIRM,<attempt>","{""extra"":""<attempt>""}"

``EventTime`` is seconds since the epoch (UTC) with 6 digits of microseconds (cel.conf sets no
``dateformat``); ``EventExtra`` is the JSON object CELGenUserEvent makes of its second argument.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ivr.asterisk.instance import AsteriskInstance

log = logging.getLogger(__name__)

#: The CSV file's name in the instance's log directory (the section name in cel_custom.conf).
CEL_CSV_NAME = "binfoon-cel.csv"
#: The CEL user event a confirmation raises (dialplan binfoon-member-confirm).
CONFIRM_EVENT = "BINFOON_CONFIRM"
#: The columns of the file, as cel_custom.conf lists them.
COLUMNS = ("EventEnum", "UserEventName", "EventTime", "UniqueID", "LinkedID", "ChanName", "AppName",
           "AppData", "EventExtra")


@dataclass(frozen=True)
class CelConfirmation:
    """A member confirmed (key 1) on the call attempt ``attempt_id``, at ``at`` (UTC)."""

    attempt_id: str
    at: dt.datetime
    #: The Uniqueid of the channel that raised the event (the attempt id on an originated call).
    uniqueid: str


@dataclass(frozen=True)
class CelRow:
    """One line of the CEL CSV file."""

    event: str
    user_event: str
    at: dt.datetime
    uniqueid: str
    linkedid: str
    channel: str
    app_name: str
    app_data: str
    extra: str


def cel_csv_path(instance: "AsteriskInstance") -> Path:
    """Host path of the CEL CSV file of ``instance`` (in its own log directory)."""
    return instance.run_dir / "log" / CEL_CSV_NAME


def read_cel_rows(path: Path, offset: int) -> tuple[list[CelRow], int]:
    """The complete lines of ``path`` after byte ``offset``, parsed, and the offset after them."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, io.SEEK_END)
            if offset > size:
                log.warning("CEL file %s is shorter than the checkpoint (%d > %d bytes): rotated or "
                            "truncated, read again from its start", path, offset, size)
                offset = 0
            f.seek(offset)
            data = f.read(size - offset)
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset  # nothing complete yet (or only the start of a line being written)
    complete = data[: end + 1]
    rows: list[CelRow] = []
    for fields in csv.reader(io.StringIO(complete.decode("utf-8", "replace"), newline="")):
        if not fields:
            continue
        row = _row(fields)
        if row is None:
            log.warning("CEL file %s: malformed line passed over: %r", path, fields)
            continue
        rows.append(row)
    return rows, offset + len(complete)


def read_confirmations(path: Path, offset: int) -> tuple[list[CelConfirmation], int]:
    """Confirmations written to the CEL CSV ``path`` after byte ``offset``, and the new offset.

    Keep the returned offset as the checkpoint (after the confirmations are committed) and pass
    it next time. See the module docstring for partial lines, missing and rotated files.
    """
    rows, new_offset = read_cel_rows(path, offset)
    found = []
    for row in rows:
        if row.event != "USER_DEFINED" or row.user_event != CONFIRM_EVENT:
            continue
        attempt_id = _attempt_id(row)
        if not attempt_id:
            log.warning("CEL file %s: %s without an attempt id passed over (uniqueid %s)",
                        path, CONFIRM_EVENT, row.uniqueid)
            continue
        found.append(CelConfirmation(attempt_id=attempt_id, at=row.at, uniqueid=row.uniqueid))
    return found, new_offset


def _row(fields: list[str]) -> CelRow | None:
    if len(fields) != len(COLUMNS):
        return None
    event, user_event, when, uniqueid, linkedid, channel, app_name, app_data, extra = fields
    at = _parse_time(when)
    if at is None:
        return None
    return CelRow(event, user_event, at, uniqueid, linkedid, channel, app_name, app_data, extra)


def _parse_time(text: str) -> dt.datetime | None:
    """``1795423733.229856`` (seconds since the epoch, microseconds) as an aware UTC datetime."""
    seconds, _, fraction = text.strip().partition(".")
    if not seconds.isdigit() or (fraction and not fraction.isdigit()):
        return None
    micros = int((fraction + "000000")[:6]) if fraction else 0
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return epoch + dt.timedelta(seconds=int(seconds), microseconds=micros)


def _attempt_id(row: CelRow) -> str:
    """The attempt id: CELGenUserEvent's extra (``{"extra":"<attempt>"}``), else its own argument."""
    extra = row.extra.strip()
    if extra:
        try:
            decoded = json.loads(extra)
        except ValueError:
            return extra  # a plain extra (other Asterisk versions write it as given)
        if isinstance(decoded, dict):
            value = decoded.get("extra")
            if isinstance(value, str) and value.strip():
                return value.strip()
        elif isinstance(decoded, str) and decoded.strip():
            return decoded.strip()
    name, _, argument = row.app_data.partition(",")
    if row.app_name == "CELGenUserEvent" and name == CONFIRM_EVENT:
        return argument.strip()
    return ""
