"""One table says how every state is reported: the four views derived from it are today's values."""

from __future__ import annotations

from ivr.delivery import report, states
from ivr.domain.vocabulary import AttemptOutcome

# The four tables as they were written out by hand before the one table (report.py, console.py,
# coordinator_log.py, delivery/store.py), and the report's state lists.
OLD_CATEGORY = {
    "confirmed": "confirmed", "voicemail": "answering_machine", "no_answer": "no_answer", "busy": "busy",
    "answered_no_key": "answered_no_key", "rejected": "failed", "congestion": "failed", "failed": "failed",
    "invalid_number": "failed", "cancelled": "failed", "expired": "failed",
}
OLD_BAR = {
    "confirmed": ("confirmed",),
    "answering_machine": ("answering_machine",),
    "failed": ("no_answer", "busy", "answered_no_key", "failed"),
    "waiting": ("answered", "ringing", "waiting_retry", "queued"),
}
OLD_DELIVERED_STATES = ("confirmed", "answering_machine", "answered_no_key")
OLD_RECEIVED = ("confirmed", "answered_no_key", "voicemail")
OLD_LIVE_STATES = ("confirmed", "answering_machine", "answered", "ringing", "waiting_retry", "queued",
                   "answered_no_key", "no_answer", "busy", "failed")
OLD_FINAL_STATES = ("confirmed", "answering_machine", "answered_no_key", "no_answer", "busy", "failed")


def test_category() -> None:
    assert states.CATEGORY == OLD_CATEGORY
    assert all(type(key) is str for key in states.CATEGORY)
    assert states.category("interrupted") == "failed" and states.category("voicemail") == "answering_machine"


def test_bar() -> None:
    # Segments in the console's order; a segment's states are summed, so only their set matters. The
    # dialer's states count as before; members not called (issue 17) and a stopped campaign's are
    # counted too, so the segments add up to the members.
    assert list(states.BAR) == ["confirmed", "answering_machine", "failed", "text_only", "waiting"]
    assert {segment: set(names) & set(states.LIVE_STATES) for segment, names in states.BAR.items()} == \
        {segment: set(OLD_BAR.get(segment, ())) for segment in states.BAR}
    assert set(states.BAR["text_only"]) == {"text_only"}
    assert {"no_channel", "not_called", "stopped"} <= set(states.BAR["failed"])
    assert "in_call_at_stop" in states.BAR["waiting"]


def test_every_state_a_report_shows_is_in_one_bar_segment() -> None:
    shown = report.LIVE_STATES + report.REACH_STATES + report.STOPPED_STATES
    counted = [name for names in states.BAR.values() for name in names]
    assert sorted(counted) == sorted(shown)


def test_delivered_and_received() -> None:
    assert states.DELIVERED_STATES == OLD_DELIVERED_STATES
    assert set(states.RECEIVED) == set(OLD_RECEIVED)
    assert all(isinstance(outcome, AttemptOutcome) for outcome in states.RECEIVED)


def test_live_and_final_states() -> None:
    assert states.LIVE_STATES == report.LIVE_STATES == OLD_LIVE_STATES
    assert states.FINAL_STATES == report.FINAL_STATES == OLD_FINAL_STATES


def test_every_final_outcome_has_one_state() -> None:
    outcomes = [o for state in states.STATES for o in state.outcomes]
    assert len(outcomes) == len(set(outcomes))
    assert set(outcomes) == set(AttemptOutcome) - {AttemptOutcome.INTERRUPTED}
    assert all(state.final for state in states.STATES if state.outcomes)
