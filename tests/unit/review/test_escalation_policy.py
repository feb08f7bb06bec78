"""Bounded escalation, quiet hours and the routes past review: pure functions of (state, now)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from ivr.review.policy import (
    APPROVAL_RETRY_S, QuietHours, Route, Waiting, WaitStep, after_approval_round, after_waiting_round,
    at_round_start, route_of_submitted, tell_again_at, without_review,
)

BRUSSELS = zoneinfo.ZoneInfo("Europe/Brussels")
NIGHT = QuietHours.parse("21:00-08:00")
UTC = dt.timezone.utc


def local(y: int, mo: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=BRUSSELS)


def waiting(rounds_done: int, *, urgent: bool = False, max_rounds: int = 6, told: bool = False) -> Waiting:
    return Waiting(urgent=urgent, rounds_done=rounds_done, max_rounds=max_rounds, police_told=told)


@pytest.mark.parametrize(("one_level", "urgent", "second", "route"), [
    (False, True, True, Route.REVIEW), (False, False, False, Route.REVIEW),
    (True, True, False, Route.STRAIGHT), (True, False, True, Route.STRAIGHT),   # preventive: never a second officer
    (True, True, True, Route.SECOND_APPROVAL),
])
def test_where_a_submitted_message_goes(one_level: bool, urgent: bool, second: bool, route: Route) -> None:
    assert route_of_submitted(one_level, urgent, second) is route


def test_the_zones_auto_forward_waits_for_a_second_officer_only_when_urgent_and_asked() -> None:
    assert without_review(urgent=True, second_approver=True) is Route.SECOND_APPROVAL
    assert without_review(urgent=True, second_approver=False) is Route.STRAIGHT


def test_quiet_hours_parse_and_contain() -> None:
    assert NIGHT.contains(dt.time(21, 0)) and NIGHT.contains(dt.time(3, 0)) and NIGHT.contains(dt.time(7, 59))
    assert not NIGHT.contains(dt.time(8, 0)) and not NIGHT.contains(dt.time(20, 59))
    day_window = QuietHours.parse("12:00-14:00")
    assert day_window.contains(dt.time(13, 0)) and not day_window.contains(dt.time(14, 0))
    for bad in ("21:00", "25:00-08:00", "08:00-08:00"):
        with pytest.raises(ValueError):
            QuietHours.parse(bad)


def test_a_call_in_the_night_moves_to_its_end_in_local_time() -> None:
    evening = local(2026, 11, 23, 22, 30)
    assert NIGHT.first_call_at(evening, BRUSSELS) == local(2026, 11, 24, 8, 0)
    early = local(2026, 11, 24, 5, 10)
    assert NIGHT.first_call_at(early, BRUSSELS) == local(2026, 11, 24, 8, 0)
    day = local(2026, 11, 24, 8, 0)
    assert NIGHT.first_call_at(day, BRUSSELS) == day      # the end itself is day


def test_the_night_of_a_dst_change_ends_at_eight_on_the_wall_clock() -> None:
    # 29 March 2026: clocks go 02:00 -> 03:00; the night is an hour shorter, 08:00 is 06:00 UTC.
    spring = dt.datetime(2026, 3, 28, 21, 30, tzinfo=UTC)  # 22:30 CET
    end = NIGHT.first_call_at(spring, BRUSSELS)
    assert end == dt.datetime(2026, 3, 29, 6, 0, tzinfo=UTC) and end.astimezone(BRUSSELS).hour == 8
    # 25 October 2026: clocks go 03:00 -> 02:00; 08:00 is 07:00 UTC again.
    autumn = dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CEST or CET: inside the night anyway
    end = NIGHT.first_call_at(autumn, BRUSSELS)
    assert end == dt.datetime(2026, 10, 25, 7, 0, tzinfo=UTC) and end.astimezone(BRUSSELS).hour == 8
    # A night that ends in the hour that does not exist (02:30 on 29 March) ends right after the jump.
    odd = QuietHours.parse("23:00-02:30")
    end = odd.first_call_at(dt.datetime(2026, 3, 28, 23, 0, tzinfo=UTC), BRUSSELS)  # 00:00 CET
    assert end == dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST: never before the night is over


def test_a_preventive_round_waits_for_the_morning_an_urgent_one_does_not() -> None:
    night = local(2026, 11, 23, 23, 0).astimezone(UTC)
    assert at_round_start(waiting(0), night, NIGHT, BRUSSELS) == (WaitStep.WAIT, local(2026, 11, 24, 8))
    assert at_round_start(waiting(0, urgent=True), night, NIGHT, BRUSSELS) == (WaitStep.CALL, night)
    day = local(2026, 11, 23, 10, 0).astimezone(UTC)
    assert at_round_start(waiting(3), day, NIGHT, BRUSSELS) == (WaitStep.CALL, day)


def test_the_next_round_is_after_retry_unless_that_falls_in_the_night() -> None:
    afternoon = local(2026, 11, 23, 15, 0).astimezone(UTC)
    step, at = after_waiting_round(waiting(1), afternoon, 900.0, NIGHT, BRUSSELS)
    assert (step, at) == (WaitStep.WAIT, afternoon + dt.timedelta(minutes=15))
    late = local(2026, 11, 23, 20, 50).astimezone(UTC)
    assert after_waiting_round(waiting(1), late, 900.0, NIGHT, BRUSSELS) == (WaitStep.WAIT, local(2026, 11, 24, 8))
    # Urgent (a zone whose escalation is "wait"): the night does not stop it, the maximum does.
    assert after_waiting_round(waiting(1, urgent=True), late, 900.0, NIGHT, BRUSSELS)[1] == late + dt.timedelta(minutes=15)


def test_after_the_last_round_the_police_are_told_once_and_nothing_more_happens() -> None:
    now = local(2026, 11, 23, 15, 0).astimezone(UTC)
    assert after_waiting_round(waiting(5), now, 900.0, NIGHT, BRUSSELS)[0] is WaitStep.WAIT
    assert after_waiting_round(waiting(6), now, 900.0, NIGHT, BRUSSELS)[0] is WaitStep.TELL_POLICE
    assert after_waiting_round(waiting(6, told=True), now, 900.0, NIGHT, BRUSSELS)[0] is WaitStep.NOTHING
    # A restart after the last round: no seventh round.
    assert at_round_start(waiting(6), now, NIGHT, BRUSSELS)[0] is WaitStep.TELL_POLICE
    assert at_round_start(waiting(7, told=True), now, NIGHT, BRUSSELS)[0] is WaitStep.NOTHING
    # A zone's maximum of 2, and a nonsense maximum of 0 still allows the first round.
    assert after_waiting_round(waiting(2, max_rounds=2), now, 900.0, NIGHT, BRUSSELS)[0] is WaitStep.TELL_POLICE
    assert at_round_start(waiting(0, max_rounds=0), now, NIGHT, BRUSSELS)[0] is WaitStep.CALL


def test_nobody_approved_the_author_is_told_once_and_rounds_go_on_to_the_maximum() -> None:
    now = dt.datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    first = after_approval_round(1, 6, author_told=False, now=now, retry_after_s=900.0)
    assert first.tell_author and first.retry_at == now + dt.timedelta(seconds=APPROVAL_RETRY_S)
    again = after_approval_round(2, 6, author_told=True, now=now, retry_after_s=60.0)
    assert not again.tell_author and again.retry_at == now + dt.timedelta(seconds=60)
    last = after_approval_round(6, 6, author_told=True, now=now, retry_after_s=900.0)
    assert not last.tell_author and last.retry_at is None


def test_the_police_are_not_rung_at_night_about_a_preventive_message() -> None:
    # Before the fix "rounds spent" came before the night: a restart at night rang the police.
    night = local(2026, 11, 23, 23, 0).astimezone(UTC)
    assert at_round_start(waiting(6), night, NIGHT, BRUSSELS) == (WaitStep.WAIT, local(2026, 11, 24, 8))
    assert after_waiting_round(waiting(6), night, 900.0, NIGHT, BRUSSELS) == (WaitStep.WAIT, local(2026, 11, 24, 8))
    assert at_round_start(waiting(6, urgent=True), night, NIGHT, BRUSSELS) == (WaitStep.TELL_POLICE, night)
    assert at_round_start(waiting(6, told=True), night, NIGHT, BRUSSELS) == (WaitStep.NOTHING, night)


def test_a_police_call_nobody_answered_is_made_again_after_the_retry_not_at_night() -> None:
    afternoon = local(2026, 11, 23, 15, 0).astimezone(UTC)
    assert tell_again_at(False, afternoon, 900.0, NIGHT, BRUSSELS) == afternoon + dt.timedelta(minutes=15)
    late = local(2026, 11, 23, 20, 50).astimezone(UTC)
    assert tell_again_at(False, late, 900.0, NIGHT, BRUSSELS) == local(2026, 11, 24, 8)
    assert tell_again_at(True, late, 900.0, NIGHT, BRUSSELS) == late + dt.timedelta(minutes=15)
