"""PIN lockout on the phone lines: pure decisions over the attempts seen so far.

Rules (RELIABILITY D1, D2, D5):
- ``max_failures`` wrong PINs within ``window_s`` lock the key they were typed under (a caller ID,
  an officer account, a SIP account, or a whole line) for ``lock_s``;
- each further lock of the same key lasts ``growth`` times longer than the one before, up to
  ``max_lock_s``; locks older than ``memory_s`` are forgotten, and a correct PIN (``ok``) or an
  admin's unlock (``cleared``) starts the key afresh;
- attempts refused while locked are not checked and neither count nor extend the lock.
Each key has its own policy (``PinRules`` in ``ivr.directory.pin_gate``): a caller ID locks after 3,
an account after 5 from any number of caller IDs, a line after many from everyone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

#: An attempt outcome that ends every lock and streak of its key (``binfoon person unlock``).
CLEARED = "cleared"


@dataclass(frozen=True)
class PinPolicy:
    """How many wrong PINs lock, for how long, and how much longer each further lock lasts."""

    max_failures: int = 3
    window_s: float = 900.0
    lock_s: float = 900.0
    #: The n-th lock of a key in a row (n from 0) lasts ``lock_s * growth**n``, at most ``max_lock_s``
    #: (1.0: every lock as long; the phone lines' ``PinRules`` use 2.0).
    growth: float = 1.0
    max_lock_s: float = 86400.0
    #: Locks longer ago than this no longer make the next one longer.
    memory_s: float = 7 * 86400.0

    @property
    def horizon_s(self) -> float:
        """How far back attempts can still matter: the lock in force and the one before it (whose
        refused attempts must not count), and with growth every lock still in memory."""
        if self.growth <= 1.0:
            return 2 * (self.window_s + self.lock_s)
        return self.memory_s + 2 * (self.window_s + max(self.max_lock_s, self.lock_s))

    def lock_length_s(self, earlier_locks: int) -> float:
        """How long a lock lasts when the key was locked ``earlier_locks`` times before (in memory)."""
        return min(self.lock_s * self.growth ** earlier_locks, max(self.max_lock_s, self.lock_s))


@dataclass(frozen=True)
class Attempt:
    """One PIN attempt: when, and whether it was ``ok``, ``wrong``, refused as ``locked``, or ``cleared``."""

    at: dt.datetime
    outcome: str


def locked_until(attempts: Iterable[Attempt], policy: PinPolicy, now: dt.datetime) -> dt.datetime | None:
    """The end of the lock in force at ``now`` for one key, or ``None`` when not locked."""
    lock_end: dt.datetime | None = None
    streak: list[dt.datetime] = []
    locks: list[dt.datetime] = []  # when each earlier lock (still in memory) began
    window = dt.timedelta(seconds=policy.window_s)
    memory = dt.timedelta(seconds=policy.memory_s)
    for attempt in sorted(attempts, key=lambda a: a.at):
        if attempt.outcome == CLEARED:
            lock_end, streak, locks = None, [], []
            continue
        if attempt.outcome == "locked" or (lock_end is not None and attempt.at < lock_end):
            continue
        if attempt.outcome == "ok":
            streak, locks = [], []
            continue
        streak = [t for t in streak if attempt.at - t < window] + [attempt.at]
        if len(streak) >= policy.max_failures:
            locks = [t for t in locks if attempt.at - t < memory]
            lock_end = attempt.at + dt.timedelta(seconds=policy.lock_length_s(len(locks)))
            locks.append(attempt.at)
            streak = []
    return lock_end if lock_end is not None and lock_end > now else None
