"""Is the trunk down, and does a failed call count against its member? (``ivr.delivery.policy``, pure)."""

from __future__ import annotations

import datetime as dt

from ivr.delivery.policy import (
    TrunkRules, TrunkWatch, may_dial, observe_dial, observe_registration, probe_started,
)

T0 = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.timezone.utc)
RULES = TrunkRules(congestion_streak=3, probe_after_s=5.0, probe_max_s=20.0)


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _down_by_congestion() -> TrunkWatch:
    watch = TrunkWatch()
    for i in range(3):
        watch = observe_dial(watch, f"a{i}", "congestion", RULES, T0).watch
    assert watch.down
    return watch


def test_congestion_below_the_streak_is_the_members_and_the_streak_ends_at_a_reached_phone() -> None:
    first = observe_dial(TrunkWatch(), "a1", "congestion", RULES, T0)
    second = observe_dial(first.watch, "a2", "congestion", RULES, T0)
    assert (first.charge, second.charge) == (True, True) and second.watch.streak == ("a1", "a2")
    reached = observe_dial(second.watch, "a3", "busy", RULES, T0)
    assert reached.charge and reached.watch == TrunkWatch()
    # Two more congestions after a reached phone: still no streak of three.
    again = observe_dial(observe_dial(reached.watch, "a4", "congestion", RULES, T0).watch, "a5", "congestion",
                         RULES, T0)
    assert not again.watch.down and again.charge


def test_a_streak_of_congestion_downs_the_trunk_and_gives_every_call_of_it_back() -> None:
    watch = TrunkWatch()
    verdicts = []
    for i in range(3):
        verdict = observe_dial(watch, f"a{i}", "congestion", RULES, _at(i))
        verdicts.append(verdict)
        watch = verdict.watch
    last = verdicts[-1]
    assert last.watch.down and last.watch.down_since == _at(2)
    assert last.charge is False and last.uncharge == ("a0", "a1")
    assert "3 calls in a row" in last.watch.reason
    assert last.watch.probe_at == _at(2 + RULES.probe_after_s)


def test_an_unknown_failure_decides_nothing() -> None:
    watch = observe_dial(TrunkWatch(), "a1", "congestion", RULES, T0).watch
    verdict = observe_dial(watch, "a2", "failed", RULES, T0)
    assert verdict.charge and verdict.watch == watch


def test_while_down_nothing_is_dialled_but_one_probe_when_it_is_due() -> None:
    watch = _down_by_congestion()
    assert not may_dial(watch, T0)
    assert not may_dial(watch, _at(4.9))
    assert may_dial(watch, _at(5.0))
    probing = probe_started(watch, "probe-1")
    assert probing.probing == "probe-1" and not may_dial(probing, _at(6))


def test_a_failed_probe_costs_nothing_and_the_next_waits_twice_as_long_up_to_the_most() -> None:
    watch = probe_started(_down_by_congestion(), "p1")
    failed = observe_dial(watch, "p1", "congestion", RULES, _at(6))
    assert failed.charge is False and failed.watch.down and failed.watch.probing is None
    assert failed.watch.probe_at == _at(6 + 10) and failed.watch.down_since == T0
    waits = []
    for i in range(4):
        watch = probe_started(failed.watch, f"p{i + 2}")
        failed = observe_dial(watch, f"p{i + 2}", "failed", RULES, T0)
        waits.append(failed.watch.probe_s)
    assert waits == [20.0, 20.0, 20.0, 20.0]


def test_a_call_that_was_already_out_when_the_trunk_went_down_costs_nothing_and_is_no_probe() -> None:
    watch = probe_started(_down_by_congestion(), "p1")
    late = observe_dial(watch, "a9", "congestion", RULES, _at(1))
    assert late.charge is False and late.watch.probing == "p1" and late.watch.probe_at == watch.probe_at


def test_a_call_that_reaches_a_phone_ends_the_pause() -> None:
    watch = probe_started(_down_by_congestion(), "p1")
    for outcome in ("answered", "busy", "no_answer", "invalid_number"):
        back = observe_dial(watch, "p1", outcome, RULES, _at(6))
        assert back.charge and back.watch == TrunkWatch() and may_dial(back.watch, _at(6))


def test_a_rejected_call_does_not_prove_the_trunk_is_back() -> None:
    # A carrier whose registration was refused answers 403: that is no phone.
    watch = probe_started(_down_by_congestion(), "p1")
    verdict = observe_dial(watch, "p1", "rejected", RULES, _at(6))
    assert verdict.watch.down and verdict.charge is False


def test_registration_refused_or_lost_downs_the_trunk_and_registered_brings_it_back() -> None:
    for status in ("Rejected", "Unregistered", "Failed"):
        down = observe_registration(TrunkWatch(), status, RULES, T0)
        assert down.down and down.unregistered and down.reason == f"trunk registration {status.lower()}"
        assert down.probe_at == _at(RULES.probe_after_s)
        assert observe_registration(down, "Registered", RULES, _at(1)) == TrunkWatch()
    # Registered while up changes nothing; a refusal while already down keeps its start.
    assert observe_registration(TrunkWatch(), "Registered", RULES, T0) == TrunkWatch()
    congested = _down_by_congestion()
    refused = observe_registration(congested, "Rejected", RULES, _at(3))
    assert refused.down_since == T0 and refused.unregistered and refused.reason == "trunk registration rejected"
    # Other states (Registering...) decide nothing.
    assert observe_registration(TrunkWatch(), "Registering", RULES, T0) == TrunkWatch()
