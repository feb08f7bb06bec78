"""The dialer's pure decisions: retries, second numbers, final outcomes, quiet hours, pace."""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo

import pytest

from ivr.domain.pace import TokenBucket
from ivr.delivery.policy import (
    FINAL, AttemptView, MemberView, RetryPolicy, Verdict, Window, next_allowed, next_step,
)

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)
POLICY = RetryPolicy(retries=1, retry_after_s=300, backoff=2.0, no_key_retries=1, no_key_retry_after_s=600)
BOTH = (("primary", "+3291111111"), ("secondary", "+32470222222"))
BXL = zoneinfo.ZoneInfo("Europe/Brussels")


def _a(no: int, rank: str, outcome: str | None, minutes: float = 0) -> AttemptView:
    return AttemptView(no, rank, outcome, NOW + dt.timedelta(minutes=minutes))


def test_first_call_goes_to_the_primary_number_now() -> None:
    step = next_step(MemberView(1, BOTH), POLICY, NOW)
    assert (step.verdict, step.rank, step.e164, step.attempt_no, step.at) == (Verdict.DIAL, "primary", BOTH[0][1], 1, NOW)


def test_busy_is_retried_after_five_minutes_then_the_second_number() -> None:
    step = next_step(MemberView(1, BOTH, (_a(1, "primary", "busy"),)), POLICY, NOW)
    assert (step.rank, step.attempt_no, step.at) == ("primary", 2, NOW + dt.timedelta(minutes=5))
    step = next_step(MemberView(1, BOTH, (_a(1, "primary", "busy"), _a(2, "primary", "no_answer", 5))), POLICY, NOW)
    assert (step.rank, step.attempt_no, step.at) == ("secondary", 3, NOW)


def test_back_off_grows_each_retry() -> None:
    policy = RetryPolicy(retries=3, retry_after_s=60, backoff=2.0)
    attempts = (_a(1, "primary", "busy"), _a(2, "primary", "busy"), _a(3, "primary", "busy"))
    step = next_step(MemberView(1, BOTH[:1], attempts), policy, NOW)
    assert step.at == NOW + dt.timedelta(seconds=240)


def test_invalid_number_goes_to_the_second_at_once_and_costs_no_retry() -> None:
    step = next_step(MemberView(1, BOTH, (_a(1, "primary", "invalid_number"),)), POLICY, NOW)
    assert (step.rank, step.at) == ("secondary", NOW)


def test_confirmed_never_dialled_again_and_in_flight_waits() -> None:
    assert next_step(MemberView(1, BOTH, (_a(1, "primary", "busy"),), confirmed=True), POLICY, NOW).final == "confirmed"
    assert next_step(MemberView(1, BOTH, (_a(1, "primary", None),)), POLICY, NOW).verdict is Verdict.IN_FLIGHT


def test_answered_without_key_has_its_own_retry_on_the_same_number() -> None:
    step = next_step(MemberView(1, BOTH, (_a(1, "primary", "answered_no_key"),)), POLICY, NOW)
    assert (step.rank, step.at) == ("primary", NOW + dt.timedelta(minutes=10))
    done = next_step(MemberView(1, BOTH, (_a(1, "primary", "answered_no_key"), _a(2, "primary", "answered_no_key"))),
                     POLICY, NOW)
    assert (done.verdict, done.final) == (Verdict.DONE, "answered_no_key")


def test_voicemail_is_final_and_an_interrupted_call_is_redialled_at_once() -> None:
    assert next_step(MemberView(1, BOTH, (_a(1, "primary", "voicemail"),)), POLICY, NOW).final == "voicemail"
    step = next_step(MemberView(1, BOTH, (_a(1, "primary", "busy"), _a(2, "primary", "interrupted"))), POLICY, NOW)
    assert (step.verdict, step.rank, step.attempt_no, step.at) == (Verdict.DIAL, "primary", 3, NOW)


def test_a_shared_second_number_has_one_history_for_everyone_who_lists_it() -> None:
    """B4 beyond the primary: a sharer's calls on my second number count as my tries of it."""
    shared_line = BOTH[1][1]
    mine = (_a(1, "primary", "busy"), _a(2, "primary", "busy", 5))
    # My own primary comes first, whatever happens on the shared line.
    busy_line = (("secondary", _a(1, "secondary", None)),)
    step = next_step(MemberView(1, BOTH, shared=busy_line), POLICY, NOW)
    assert (step.verdict, step.rank) == (Verdict.DIAL, "primary")
    # The sharer's call on it is up: wait rather than ring the same household twice.
    waiting = next_step(MemberView(1, BOTH, mine, shared=((shared_line, _a(3, "secondary", None)),)), POLICY, NOW)
    assert waiting.verdict is Verdict.IN_FLIGHT
    # Their one unanswered call is my first try of it: one retry is left, not two.
    once = ((shared_line, _a(3, "secondary", "no_answer", 6)),)
    step = next_step(MemberView(1, BOTH, mine, shared=once), POLICY, NOW)
    assert (step.verdict, step.e164, step.attempt_no, step.at) == (
        Verdict.DIAL, shared_line, 3, NOW + dt.timedelta(minutes=11))
    twice = once + ((shared_line, _a(4, "secondary", "no_answer", 12)),)
    done = next_step(MemberView(1, BOTH, mine, shared=twice), POLICY, NOW)
    assert (done.verdict, done.final) == (Verdict.DONE, "no_answer")
    # Their message on the household's machine is mine: it is not left there twice.
    machine = ((shared_line, _a(3, "secondary", "voicemail", 6)),)
    assert next_step(MemberView(1, BOTH, mine, shared=machine), POLICY, NOW).final == "voicemail"
    # A cut call (a crash) on it costs nobody a try.
    cut = ((shared_line, _a(3, "secondary", "interrupted", 6)),)
    step = next_step(MemberView(1, BOTH, mine, shared=cut), POLICY, NOW)
    assert (step.verdict, step.e164, step.at) == (Verdict.DIAL, shared_line, NOW)


@pytest.mark.parametrize("outcomes", list(itertools.product(
    ["busy", "no_answer", "rejected", "congestion", "failed", "invalid_number", "answered_no_key", "voicemail",
     "interrupted"], repeat=3)))
def test_every_member_ends_in_one_final_outcome(outcomes: tuple[str, ...]) -> None:
    """B6: whatever happens, following the policy ends in exactly one outcome of the closed set."""
    member = MemberView(1, BOTH)
    script = list(outcomes)
    for _ in range(20):
        step = next_step(member, POLICY, NOW + dt.timedelta(days=1))
        if step.verdict is Verdict.DONE:
            assert step.final in FINAL
            return
        assert step.verdict is Verdict.DIAL
        outcome = script.pop(0) if script else "busy"
        member = MemberView(1, BOTH, member.attempts + (_a(step.attempt_no, step.rank, outcome),))
    pytest.fail(f"no final outcome after 20 calls: {member.attempts}")


def test_quiet_hours_move_preventive_calls_to_the_morning() -> None:
    day = Window.parse("08:00-21:00")
    late = dt.datetime(2026, 11, 23, 22, 30, tzinfo=BXL)
    assert next_allowed(late, [day]) == dt.datetime(2026, 11, 24, 8, 0, tzinfo=BXL)
    noon = dt.datetime(2026, 11, 23, 12, 0, tzinfo=BXL)
    assert next_allowed(noon, [day]) == noon
    # A personal window (evenings only) on top of the quiet hours.
    assert next_allowed(noon, [day, Window.parse("18:00-20:00")]) == dt.datetime(2026, 11, 23, 18, 0, tzinfo=BXL)
    # A holiday pause: nothing until the day after it ends.
    pause = (dt.date(2026, 11, 23), dt.date(2026, 11, 30))
    assert next_allowed(noon, [day], pause) == dt.datetime(2026, 12, 1, 8, 0, tzinfo=BXL)
    with pytest.raises(ValueError):
        Window.parse("21:00")
    with pytest.raises(ValueError):
        next_allowed(noon, [Window.parse("08:00-09:00"), Window.parse("10:00-11:00")])


def test_window_across_midnight() -> None:
    night = Window.parse("21:00-08:00")
    assert night.contains(dt.time(23, 0)) and night.contains(dt.time(7, 59)) and not night.contains(dt.time(8, 0))


def test_token_bucket_holds_the_pace() -> None:
    bucket = TokenBucket(rate=5.0, burst=1.0, now=0.0)
    taken = [t / 100 for t in range(0, 1000) if bucket.take(t / 100)]  # try every 10 ms for 10 s
    assert 49 <= len(taken) <= 51  # 5 a second for 10 s (float steps may lose the last)
    # No window of one second ever holds more than 5 (plus the one token it started with).
    assert max(sum(1 for t in taken if s <= t < s + 1.0) for s in taken) <= 5
    assert bucket.wait_s(10.0) <= 0.2


def test_outcomes_as_members_or_stored_strings_decide_alike() -> None:
    # The policy speaks the storage's vocabulary: an AttemptOutcome and its stored string are one word.
    from ivr.domain.vocabulary import AttemptOutcome

    histories = [(("busy", 0), ("no_answer", 5)), (("answered_no_key", 0),), (("voicemail", 0),),
                 (("interrupted", 0),), (("invalid_number", 0), ("busy", 1), ("busy", 7))]
    for history in histories:
        ranks = itertools.cycle(["primary"]) if len(history) < 3 else iter(["primary", "secondary", "secondary"])
        plain = tuple(_a(no, rank, outcome, minutes)
                      for no, ((outcome, minutes), rank) in enumerate(zip(history, ranks), start=1))
        members = tuple(AttemptView(a.attempt_no, a.rank, AttemptOutcome(a.outcome), a.ended_at) for a in plain)
        as_text, as_enum = (next_step(MemberView(1, BOTH, views), POLICY, NOW) for views in (plain, members))
        assert as_text == as_enum, history
        assert type(as_enum.final) is str
    assert FINAL == {o for o in AttemptOutcome if o is not AttemptOutcome.INTERRUPTED}
