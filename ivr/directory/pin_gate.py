"""Caller ID + PIN with lockout over the stored ``PinAttempt`` rows: one rule for every phone line.

Rules: a caller is counted by caller ID (E.164 when it parses) *and* by the account it belongs to,
over the same rows for every line, so wrong PINs on the police line and on the admin line count
together (switching lines gives no fresh guesses). Every attempt is stored and audited, never the
PIN itself. These functions run inside the caller's transaction (blocking SQL: call them from a
worker thread, as the desks do).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.phone import InvalidPhoneNumber, mask, normalize_phone
from ivr.domain.pin import Attempt, PinPolicy, locked_until
from storage import audit
from storage.models import Person, PinAttempt
from ivr.domain.vocabulary import PinOutcome


def pin_key(caller_id: str) -> str:
    """The caller ID as lockouts count it: E.164 when it parses, else the raw text."""
    try:
        return normalize_phone(caller_id)
    except InvalidPhoneNumber:
        return caller_id.strip()[:32] or "anonymous"


def lock_over_rows(s: Session, at: Any, outcome: Any,
                   counted: Iterable[tuple[Any, object, PinPolicy]], now: dt.datetime) -> dt.datetime | None:
    """The latest lock in force over stored attempts (columns ``at`` and ``outcome``): each
    ``(column, value, policy)`` counts the rows where ``column == value`` under its own policy."""
    locks = []
    for column, value, policy in counted:
        if value is None:
            continue
        horizon = now - dt.timedelta(seconds=policy.window_s + policy.lock_s) * 2
        rows = s.execute(select(at, outcome).where(column == value, at >= horizon)).all()
        until = locked_until([Attempt(when, result.value) for when, result in rows], policy, now)
        if until is not None:
            locks.append(until)
    return max(locks) if locks else None


def lock_in_force(s: Session, policy: PinPolicy, key: str, person_id: int | None,
                  now: dt.datetime) -> dt.datetime | None:
    """Until when this caller ID or this account is locked (the later of the two), or ``None``."""
    return lock_over_rows(s, PinAttempt.at, PinAttempt.outcome,
                          ((PinAttempt.caller_id, key, policy), (PinAttempt.person_id, person_id, policy)), now)


@dataclass(frozen=True)
class PinVerdict:
    """One PIN checked: the person when it was right; the lock now in force, if any."""

    person: Person | None
    locked_until: dt.datetime | None = None


def check_pin(s: Session, policy: PinPolicy, key: str, person: Person | None, pin: str, now: dt.datetime,
              *, line: str) -> PinVerdict:
    """Check ``pin`` typed from caller ID ``key`` (``person``: whom that caller ID belongs to).

    Audit actions are ``{line}.pin_ok``, ``{line}.pin_wrong``, ``{line}.locked`` and
    ``{line}.pin_refused_locked`` (a locked caller's PIN is not even compared).
    """
    from storage.pins import verify_pin

    person_id = person.id if person else None
    subject, target = f"caller:{mask(key)}", f"person:{person_id or '-'}"
    lock = lock_in_force(s, policy, key, person_id, now)
    if lock is not None:
        s.add(PinAttempt(at=now, caller_id=key, person_id=person_id, outcome=PinOutcome.LOCKED))
        audit.record(s, subject, f"{line}.pin_refused_locked", target, locked_until=lock.isoformat())
        return PinVerdict(None, lock)
    # An unknown caller costs the same scrypt time as a known one (verify_pin(pin, None)).
    ok = verify_pin(pin, person.pin_hash if person else None) and person is not None
    s.add(PinAttempt(at=now, caller_id=key, person_id=person_id, outcome=PinOutcome.OK if ok else PinOutcome.WRONG))
    s.flush()
    audit.record(s, subject, f"{line}.pin_ok" if ok else f"{line}.pin_wrong", target)
    if ok:
        return PinVerdict(person)
    lock = lock_in_force(s, policy, key, person_id, now)
    if lock is not None:
        audit.record(s, subject, f"{line}.locked", target, locked_until=lock.isoformat())
    return PinVerdict(None, lock)
