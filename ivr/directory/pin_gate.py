"""Caller ID + PIN with lockout over the stored ``PinAttempt`` rows: one rule for every phone line.

Rules:
- a caller is counted by caller ID (E.164 when it parses; 3 wrong lock it), by the account that
  caller ID belongs to (5 wrong from any number of caller IDs lock it: RELIABILITY D2) and by the
  line (many wrong from everyone close the line's PIN checks for a while); each further lock of a
  key lasts longer (``ivr.domain.pin``). Caller-ID and account counts span every line (switching
  lines gives no fresh guesses);
- a call from an officer's SIP account (digest-authenticated by Asterisk) is counted by that
  account alone: a spoofer who locked the officer's number and person cannot lock them out of it,
  nor does the line limit refuse it;
- an account lock or a closed line writes a ``security.alert`` for the admins at once;
- PINs are checked against peppered hashes (``storage.pins``); a right PIN with an older hash
  is re-hashed with the pepper;
- every attempt is stored and audited, never the PIN itself. These functions run inside the
  caller's transaction (blocking SQL: call them from a worker thread, as the desks do).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, null, or_, select
from sqlalchemy.orm import Session

from ivr.config import Settings
from ivr.domain.phone import InvalidPhoneNumber, mask, normalize_phone
from ivr.domain.pin import CLEARED, Attempt, PinPolicy, locked_until
from ivr.domain.vocabulary import PinOutcome
from storage import audit
from storage.models import OfficerSipAccount, Person, PhoneNumber, PinAttempt

log = logging.getLogger(__name__)

#: The ``line`` of the rows ``unlock`` writes: each ends every lock of its key.
UNLOCK = "unlock"


@dataclass(frozen=True)
class PinRules:
    """The lockout policies of the PIN lines, and the pepper the PINs are hashed with."""

    #: Per caller ID (D1: 3 wrong per 15 min); each further lock twice as long.
    caller: PinPolicy = PinPolicy(growth=2.0)
    #: Per account, from any caller ID (D2: 5 wrong); each further lock twice as long.
    account: PinPolicy = PinPolicy(max_failures=5, growth=2.0)
    #: Per line, everyone together; a closed line stays closed ``lock_s`` (it does not grow).
    line: PinPolicy = PinPolicy(max_failures=30, growth=1.0)
    pepper: bytes | None = field(default=None, repr=False)


def pin_key(caller_id: str) -> str:
    """The caller ID as lockouts count it: E.164 when it parses, else the raw text under ``cli:``
    (never ``sip:``: that key is an authenticated SIP account's, and a carrier passes on any text)."""
    try:
        return normalize_phone(caller_id)
    except InvalidPhoneNumber:
        raw = caller_id.strip()
        return f"cli:{raw}"[:32] if raw else "anonymous"


#: A caller ID that gave the right PIN on a line this recently still gets its PIN checked while the
#: line is closed (it stays under its own caller-ID and account limits).
TRUSTED_KEY_S = 30 * 86400.0


def _attempts(rows: Iterable[Any]) -> list[Attempt]:
    return [Attempt(when, CLEARED if line == UNLOCK else result.value) for when, result, line in rows]


def lock_over_rows(s: Session, at: Any, outcome: Any,
                   counted: Iterable[tuple[Any, object, PinPolicy]], now: dt.datetime,
                   line: Any = None) -> dt.datetime | None:
    """The latest lock in force over stored attempts (columns ``at`` and ``outcome``; ``line``, if
    given, marks unlock rows): each ``(column, value, policy)`` counts the rows where ``column ==
    value`` under its own policy."""
    locks = []
    for column, value, policy in counted:
        if value is None:
            continue
        horizon = now - dt.timedelta(seconds=policy.horizon_s)
        marks = line if line is not None else null()
        rows = s.execute(select(at, outcome, marks).where(column == value, at >= horizon)).all()
        until = locked_until(_attempts(rows), policy, now)
        if until is not None:
            locks.append(until)
    return max(locks) if locks else None


def _key_lock(s: Session, policy: PinPolicy, column: Any, value: object, now: dt.datetime) -> dt.datetime | None:
    return lock_over_rows(s, PinAttempt.at, PinAttempt.outcome, ((column, value, policy),), now, PinAttempt.line)


def _on_line(line: str) -> Any:
    on_line = PinAttempt.line == line
    if line == "police":
        on_line = or_(on_line, PinAttempt.line.is_(None))  # rows from before migration 0008
    return on_line


def line_lock(s: Session, rules: PinRules, line: str, now: dt.datetime) -> dt.datetime | None:
    """Until when ``line`` refuses PIN checks (too many wrong PINs against accounts), or ``None``.

    Only guesses against an account count: a PIN typed from a number that is nobody's can never
    open anything (those callers meet their own caller-ID limit), and counting them would let anyone
    shut the line for every officer."""
    horizon = now - dt.timedelta(seconds=rules.line.horizon_s)
    wrong = s.scalars(select(PinAttempt.at).where(PinAttempt.outcome == PinOutcome.WRONG, PinAttempt.at >= horizon,
                                                  PinAttempt.person_id.is_not(None), _on_line(line))).all()
    return locked_until([Attempt(at, "wrong") for at in wrong], rules.line, now)


def trusted_key(s: Session, key: str, line: str, now: dt.datetime) -> bool:
    """Whether ``key`` gave the right PIN on ``line`` within ``TRUSTED_KEY_S`` (a closed line still checks it)."""
    since = now - dt.timedelta(seconds=TRUSTED_KEY_S)
    return s.scalars(select(PinAttempt.id).where(PinAttempt.caller_id == key, PinAttempt.outcome == PinOutcome.OK,
                                                 PinAttempt.at >= since, _on_line(line)).limit(1)).first() is not None


def lock_in_force(s: Session, rules: PinRules | PinPolicy, key: str, person_id: int | None,
                  now: dt.datetime, *, line: str | None = None) -> dt.datetime | None:
    """Until when this caller ID, this account (or, with ``line``, the line) is locked, or ``None``.

    A SIP key (``sip:...``) is counted on its own: the account behind it was authenticated."""
    rules = rules if isinstance(rules, PinRules) else PinRules(caller=rules, account=rules)
    locks = [_key_lock(s, rules.caller, PinAttempt.caller_id, key, now)]
    if not key.startswith("sip:"):
        locks.append(_key_lock(s, rules.account, PinAttempt.person_id, person_id, now))
        if line is not None and not trusted_key(s, key, line, now):
            locks.append(line_lock(s, rules, line, now))
    found = [lock for lock in locks if lock is not None]
    return max(found) if found else None


@dataclass(frozen=True)
class PinVerdict:
    """One PIN checked: the person when it was right; the lock now in force, if any."""

    person: Person | None
    locked_until: dt.datetime | None = None


def security_alert(s: Session, kind: str, subject: str, **details: Any) -> None:
    """An alert for the admins (an audit row they see) and a WARNING line; never a PIN or a full number."""
    audit.record(s, "system", "security.alert", subject, kind=kind, **details)
    log.warning("security alert %s on %s %s", kind, subject, details)


def check_pin(s: Session, rules: PinRules | PinPolicy, key: str, person: Person | None, pin: str,
              now: dt.datetime, *, line: str) -> PinVerdict:
    """Check ``pin`` typed from caller ID ``key`` (``person``: whom that caller ID belongs to).

    Audit actions are ``{line}.pin_ok``, ``{line}.pin_wrong``, ``{line}.locked`` and
    ``{line}.pin_refused_locked`` (a locked caller's PIN is not even compared); an account that
    locks or a line that closes is a ``security.alert``.
    """
    from storage.pins import hash_pin, needs_rehash, verify_pin

    rules = rules if isinstance(rules, PinRules) else PinRules(caller=rules, account=rules)
    person_id = person.id if person else None
    subject, target = f"caller:{mask(key)}", f"person:{person_id or '-'}"
    lock = lock_in_force(s, rules, key, person_id, now, line=line)
    if lock is not None:
        s.add(PinAttempt(at=now, caller_id=key, person_id=person_id, outcome=PinOutcome.LOCKED, line=line))
        audit.record(s, subject, f"{line}.pin_refused_locked", target, locked_until=lock.isoformat())
        return PinVerdict(None, lock)
    # An unknown caller costs the same scrypt time as a known one (verify_pin(pin, None)).
    stored = person.pin_hash if person else None
    ok = verify_pin(pin, stored, rules.pepper) and person is not None
    s.add(PinAttempt(at=now, caller_id=key, person_id=person_id, outcome=PinOutcome.OK if ok else PinOutcome.WRONG,
                     line=line))
    s.flush()
    audit.record(s, subject, f"{line}.pin_ok" if ok else f"{line}.pin_wrong", target)
    if ok:
        assert person is not None
        if needs_rehash(stored, rules.pepper):
            person.pin_hash = hash_pin(pin, rules.pepper)  # peppered from now on
            audit.record(s, "system", "person.pin_rehashed", target)
        return PinVerdict(person)
    sip = key.startswith("sip:")
    if not sip and person_id is not None and _key_lock(s, rules.account, PinAttempt.person_id, person_id, now):
        security_alert(s, "pin_account_locked", target, line=line, caller=mask(key))
    if not sip and line_lock(s, rules, line, now) is not None:
        security_alert(s, "pin_line_limit", f"line:{line}", line=line, caller=mask(key))
    lock = lock_in_force(s, rules, key, person_id, now, line=None if sip else line)
    if lock is not None:
        audit.record(s, subject, f"{line}.locked", target, locked_until=lock.isoformat())
    return PinVerdict(None, lock)


def unlock(s: Session, person: Person, actor: str, now: dt.datetime) -> list[str]:
    """End every PIN lock of ``person``: their account, their phone numbers as caller IDs and their
    SIP account (audited ``person.unlocked``). Returns the keys cleared (numbers masked)."""
    keys = [phone.e164 for phone in s.scalars(select(PhoneNumber).where(PhoneNumber.person_id == person.id))]
    sip = s.scalars(select(OfficerSipAccount.username).where(OfficerSipAccount.person_id == person.id)).first()
    if sip is not None:
        keys.append(f"sip:{sip}"[:32])
    for key in keys or [f"{UNLOCK}:{person.id}"]:
        s.add(PinAttempt(at=now, caller_id=key, person_id=person.id, outcome=PinOutcome.OK, line=UNLOCK))
    person.pin_reset_at = now  # shown to admins: when the locks were last lifted
    cleared = [key if key.startswith("sip:") else mask(key) for key in keys]
    audit.record(s, actor, "person.unlocked", f"person:{person.id}", keys=cleared)
    return cleared


@dataclass(frozen=True)
class PinState:
    """What an admin sees of a person's PIN: whether one is set, the lock in force, the last reset."""

    is_set: bool
    locked_until: dt.datetime | None
    reset_at: dt.datetime | None

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"set": self.is_set, "locked_until": self.locked_until.isoformat() if self.locked_until else None,
                "reset_at": self.reset_at.isoformat() if self.reset_at else None}


def pin_state(s: Session, person: Person, rules: PinRules, now: dt.datetime) -> PinState:
    """Whether ``person`` has a PIN, until when their account, numbers or SIP account are locked
    (the latest; ``None``: not locked) and when an admin last reset or unlocked it."""
    keys = [phone.e164 for phone in s.scalars(select(PhoneNumber).where(PhoneNumber.person_id == person.id))]
    sip = s.scalars(select(OfficerSipAccount.username).where(OfficerSipAccount.person_id == person.id)).first()
    if sip is not None:
        keys.append(f"sip:{sip}"[:32])
    locks = [lock_in_force(s, rules, key, person.id, now) for key in keys or [f"{UNLOCK}:{person.id}"]]
    found = [lock for lock in locks if lock is not None]
    return PinState(person.pin_hash is not None, max(found) if found else None, person.pin_reset_at)


def rules_from_settings(settings: Settings, *, pepper: bool = True) -> PinRules:
    """The PIN rules of ``settings``, with the pepper (its key file is made 0600 on first use;
    ``pepper=False``: the lockout policies alone, for showing a lock)."""
    from storage.pins import load_pepper

    def policy(max_failures: int, window_s: float, lock_s: float, growth: float) -> PinPolicy:
        return PinPolicy(max_failures, window_s, lock_s, growth=growth, max_lock_s=settings.pin_max_lock_s)

    growth = settings.pin_lock_growth
    return PinRules(caller=policy(settings.pin_max_failures, settings.pin_lock_s, settings.pin_lock_s, growth),
                    account=policy(settings.pin_account_max_failures, settings.pin_lock_s, settings.pin_lock_s,
                                   growth),
                    line=policy(settings.pin_line_max_failures, settings.pin_line_window_s,
                                settings.pin_line_lock_s, 1.0),
                    pepper=load_pepper(settings.pin_pepper_path) if pepper else None)


def find_person(s: Session, name_or_id: str) -> Person:
    """The person with this id, or with exactly this name (case does not matter); ``LookupError``
    says why not (nobody, or several with that name: give the id)."""
    text = name_or_id.strip()
    if text.isdigit():
        person = s.get(Person, int(text))
        if person is None:
            raise LookupError(f"no person {text}")
        return person
    found = list(s.scalars(select(Person).where(func.lower(Person.name) == text.lower()).order_by(Person.id)))
    if not found:
        raise LookupError(f"no person named {text!r}")
    if len(found) > 1:
        raise LookupError(f"{len(found)} people are named {text!r} (ids {', '.join(str(p.id) for p in found)}): "
                          "give the id")
    return found[0]


def set_pin(s: Session, person: Person, pin: str, pepper: bytes | None, actor: str) -> None:
    """A new PIN for ``person`` (peppered hash; check ``storage.pins.new_pin_problem`` first). Audited,
    never the PIN."""
    from storage.pins import hash_pin

    person.pin_hash = hash_pin(pin, pepper)
    audit.record(s, actor, "person.pin_set", f"person:{person.id}")
