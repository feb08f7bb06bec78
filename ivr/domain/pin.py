"""PIN lockout on the police line: a pure decision over the attempts seen so far.

Rules (RELIABILITY D1, D2, D5): ``max_failures`` wrong PINs within ``window_s`` lock the key they
were typed under (an officer account, or a caller ID) for ``lock_s``; attempts refused while locked
are not checked and do not extend the lock; a correct PIN clears the streak. The same rule is
applied to the account and to the caller ID, so neither many numbers against one account nor
many accounts from one number can keep guessing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class PinPolicy:
    """How many wrong PINs lock, and for how long."""

    max_failures: int = 3
    window_s: float = 900.0
    lock_s: float = 900.0


@dataclass(frozen=True)
class Attempt:
    """One PIN attempt: when, and whether it was ``ok``, ``wrong`` or refused as ``locked``."""

    at: dt.datetime
    outcome: str


def locked_until(attempts: Iterable[Attempt], policy: PinPolicy, now: dt.datetime) -> dt.datetime | None:
    """The end of the lock in force at ``now`` for one key, or ``None`` when not locked."""
    lock_end: dt.datetime | None = None
    streak: list[dt.datetime] = []
    window = dt.timedelta(seconds=policy.window_s)
    for attempt in sorted(attempts, key=lambda a: a.at):
        if attempt.outcome == "locked" or (lock_end is not None and attempt.at < lock_end):
            continue
        if attempt.outcome == "ok":
            streak = []
            continue
        streak = [t for t in streak if attempt.at - t < window] + [attempt.at]
        if len(streak) >= policy.max_failures:
            lock_end = attempt.at + dt.timedelta(seconds=policy.lock_s)
            streak = []
    return lock_end if lock_end is not None and lock_end > now else None
