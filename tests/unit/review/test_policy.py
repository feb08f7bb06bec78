"""Pure review and PIN decisions."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from ivr.domain.message import InvalidTransition, check_transition
from ivr.domain.pin import Attempt, PinPolicy, locked_until
from ivr.review.policy import NextStep, RoundResult, after_undecided_round, parse_later, waves
from ivr.domain.vocabulary import MessageStatus

BXL = zoneinfo.ZoneInfo("Europe/Brussels")
NOW = dt.datetime(2026, 11, 23, 20, 15, tzinfo=BXL)
T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(("digits", "expected"), [
    ("5", NOW + dt.timedelta(minutes=5)),
    ("120", NOW + dt.timedelta(minutes=120)),
    ("2130", dt.datetime(2026, 11, 23, 21, 30, tzinfo=BXL)),
    ("0730", dt.datetime(2026, 11, 24, 7, 30, tzinfo=BXL)),   # already past today: tomorrow
    ("2015", dt.datetime(2026, 11, 24, 20, 15, tzinfo=BXL)),  # now exactly: tomorrow
    ("0", None), ("2575", None), ("2460", None), ("", None), ("12345", None), ("1*", None),
])
def test_parse_later(digits: str, expected: dt.datetime | None) -> None:
    assert parse_later(digits, NOW) == expected


def test_waves() -> None:
    assert waves([1, 2, 3], parallel=False) == [[1], [2], [3]]
    assert waves([1, 2, 3], parallel=True) == [[1, 2, 3]]
    assert waves([], parallel=True) == []


@pytest.mark.parametrize(("urgent", "policy", "approvers_called", "have", "step"), [
    (False, "auto_forward", False, True, NextStep.WAIT),
    (True, "auto_forward", False, False, NextStep.AUTO_FORWARD),
    (True, "police_approver", False, True, NextStep.CALL_APPROVERS),
    (True, "police_approver", True, True, NextStep.WAIT),
    (True, "police_approver", False, False, NextStep.AUTO_FORWARD),
    (True, "wait", False, True, NextStep.WAIT),
])
def test_after_an_undecided_round(urgent: bool, policy: str, approvers_called: bool, have: bool,
                                  step: NextStep) -> None:
    assert after_undecided_round(RoundResult(urgent, policy, approvers_called, have)) is step


def _at(minutes: float, outcome: str) -> Attempt:
    return Attempt(T0 + dt.timedelta(minutes=minutes), outcome)


def test_three_wrong_pins_lock_for_fifteen_minutes() -> None:
    policy = PinPolicy()
    attempts = [_at(0, "wrong"), _at(1, "wrong"), _at(2, "wrong")]
    assert locked_until(attempts[:2], policy, T0 + dt.timedelta(minutes=3)) is None
    assert locked_until(attempts, policy, T0 + dt.timedelta(minutes=3)) == T0 + dt.timedelta(minutes=17)
    assert locked_until(attempts, policy, T0 + dt.timedelta(minutes=17, seconds=1)) is None
    # Attempts refused while locked neither count nor extend the lock.
    more = attempts + [_at(5, "locked"), _at(6, "wrong")]
    assert locked_until(more, policy, T0 + dt.timedelta(minutes=10)) == T0 + dt.timedelta(minutes=17)


def test_a_right_pin_clears_the_streak_and_old_failures_expire() -> None:
    policy = PinPolicy()
    assert locked_until([_at(0, "wrong"), _at(1, "wrong"), _at(2, "ok"), _at(3, "wrong")], policy,
                        T0 + dt.timedelta(minutes=4)) is None
    assert locked_until([_at(0, "wrong"), _at(20, "wrong"), _at(40, "wrong")], policy,
                        T0 + dt.timedelta(minutes=41)) is None


def test_message_transitions() -> None:
    check_transition(MessageStatus.DRAFT, MessageStatus.RECORDED)
    with pytest.raises(InvalidTransition):
        check_transition(MessageStatus.DRAFT, MessageStatus.APPROVED)
    with pytest.raises(InvalidTransition):
        check_transition(MessageStatus.REJECTED, MessageStatus.APPROVED)
