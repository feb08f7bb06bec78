"""What every ``binfoon`` sub-command shares: the user-facing error, who is acting, local dates.

Command modules import these from here, never from ``ivr.cli`` (which only wires them up).
"""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path

from ivr.config import Settings


class CommandError(Exception):
    """A user-facing failure: printed as ``binfoon: <message>`` with exit status 1 (2 is a usage error)."""


def actor() -> str:
    """How the audit log names the operating-system user who typed the command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def parse_when(raw: str, settings: Settings, *, end_of_day: bool) -> dt.datetime:
    """A local date or date-time, as UTC; a bare date means its start (``end_of_day``: the next midnight)."""
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise CommandError(f"{raw!r} is not a date (2026-11-23) or a time (2026-11-23T14:00)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=settings.tz)
        return when.astimezone(dt.UTC)
    if end_of_day:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(), tzinfo=settings.tz).astimezone(dt.UTC)


def positive_int(raw: str) -> int:
    """An ``argparse`` type: a whole number of at least 1 (``--limit 0`` is a usage error, not "no limit")."""
    import argparse

    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw} is not allowed: give 1 or more")
    return value


def refuse_overwrite(path: Path, force: bool) -> None:
    """One rule for every command that writes a file: an existing file is only replaced with ``--force``."""
    if path.exists() and not force:
        raise CommandError(f"{path} exists already: choose another name, or add --force to replace it")
