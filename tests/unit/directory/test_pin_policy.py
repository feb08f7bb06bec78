"""The lockout rules as pure decisions: growing locks, an admin's unlock, a line's global limit,
RELIABILITY D2 (many caller IDs, one account), and the call-back lines' limits."""

from __future__ import annotations

import datetime as dt

from ivr.delivery.line_limits import LineLimits, LineVerdict, line_verdict
from ivr.domain.pin import CLEARED, Attempt, PinPolicy, locked_until

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)


def _at(minutes: float, outcome: str = "wrong") -> Attempt:
    return Attempt(T0 + dt.timedelta(minutes=minutes), outcome)


def _m(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_each_further_lock_of_a_key_lasts_twice_as_long_up_to_the_cap() -> None:
    policy = PinPolicy(max_failures=3, window_s=900, lock_s=900, growth=2.0, max_lock_s=3600)
    first = [_at(0), _at(1), _at(2)]                       # locked 2 -> 17
    assert locked_until(first, policy, _m(3)) == _m(17)
    second = first + [_at(18), _at(19), _at(20)]           # locked again at 20: 30 minutes
    assert locked_until(second, policy, _m(21)) == _m(50)
    third = second + [_at(51), _at(52), _at(53)]           # 60 minutes
    assert locked_until(third, policy, _m(54)) == _m(113)
    fourth = third + [_at(114), _at(115), _at(116)]        # 120 would be more than the cap: 60
    assert locked_until(fourth, policy, _m(117)) == _m(176)


def test_a_right_pin_or_an_unlock_starts_the_key_afresh() -> None:
    policy = PinPolicy(growth=2.0)
    locked_twice = [_at(0), _at(1), _at(2), _at(18), _at(19), _at(20)]
    assert locked_until(locked_twice, policy, _m(21)) == _m(50)
    # The admin's unlock ends the lock in force at once, and the next lock is a first one again.
    cleared = locked_twice + [_at(25, CLEARED)]
    assert locked_until(cleared, policy, _m(26)) is None
    assert locked_until(cleared + [_at(30), _at(31), _at(32)], policy, _m(33)) == _m(47)
    # After a right PIN the growth starts again too.
    ok = [_at(0), _at(1), _at(2), _at(20, "ok"), _at(21), _at(22), _at(23)]
    assert locked_until(ok, policy, _m(24)) == _m(38)


def test_old_locks_are_forgotten() -> None:
    policy = PinPolicy(growth=2.0, memory_s=3600)
    attempts = [_at(0), _at(1), _at(2), _at(200), _at(201), _at(202)]  # the first lock is 3 h old
    assert locked_until(attempts, policy, _m(203)) == _m(217)


def test_d2_one_account_locks_after_five_failures_from_a_hundred_caller_ids() -> None:
    account = PinPolicy(max_failures=5)
    caller = PinPolicy(max_failures=3)
    # 100 wrong PINs, each from another caller ID, all against the same account, one a minute.
    attempts = [_at(i) for i in range(100)]
    # No caller ID ever locks (one try each) ...
    assert all(locked_until([a], caller, a.at) is None for a in attempts)
    # ... but the account locks with the fifth, and stays locked while the guesses go on (each
    # further one is refused unchecked, stored as "locked").
    assert locked_until(attempts[:4], account, _m(4)) is None
    assert locked_until(attempts[:5], account, _m(4)) == _m(19)
    refused = attempts[:5] + [_at(i, "locked") for i in range(5, 100)]
    assert locked_until(refused, account, _m(18)) == _m(19)


def test_a_line_closes_after_its_global_limit_and_opens_again() -> None:
    line = PinPolicy(max_failures=30, window_s=900, lock_s=900, growth=1.0)
    # 29 callers each typing one wrong PIN leave the line open; the 30th closes it for everyone.
    assert locked_until([_at(i / 10) for i in range(29)], line, _m(3)) is None
    assert locked_until([_at(i / 10) for i in range(30)], line, _m(3)) == _m(2.9 + 15)
    assert locked_until([_at(i / 10) for i in range(30)], line, _m(18)) is None


def test_call_back_limits_per_caller_id_and_per_line() -> None:
    limits = LineLimits(caller_max_calls=5, caller_window_s=3600, unknown_max_calls=50, window_s=3600, lock_s=3600)
    assert line_verdict([_m(i) for i in range(4)], [], limits, _m(10)) is LineVerdict.OPEN
    assert line_verdict([_m(i) for i in range(5)], [], limits, _m(10)) is LineVerdict.CALLER_LIMITED
    assert line_verdict([_m(i) for i in range(5)], [], limits, _m(61)) is LineVerdict.OPEN  # an hour later
    # 50 calls from numbers that are nobody's close the line for an hour, for every caller.
    unknown = [_m(i / 10) for i in range(50)]
    assert line_verdict([], unknown[:49], limits, _m(5)) is LineVerdict.OPEN
    assert line_verdict([], unknown, limits, _m(5)) is LineVerdict.LINE_CLOSED
    assert line_verdict([], unknown, limits, _m(4.9 + 61)) is LineVerdict.OPEN
