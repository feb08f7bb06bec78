"""How a member's delivery is reported: one table, from which every report's view is derived.

Pure. Each row is one state a member of a campaign can be in, in the order a progress bar
lists them; it says which final attempt outcomes end in it, which segment of the web console's
live bar counts it, whether the delivery is over, and whether the message was heard
("delivered": the coordinator's log counts it; its outcomes are "received": a follow-up goes
only to those). The report (``CATEGORY``, ``LIVE_STATES``, ``FINAL_STATES``), the coordinator's
log (``DELIVERED_STATES``), the console's bar (``BAR``) and the follow-ups (``RECEIVED``) all
read this table, so they cannot disagree. The states outside the dialer's (``OTHER_STATES``: members
not called, a stopped campaign's) have a row too, so the bar counts every member.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.domain.vocabulary import AttemptOutcome as O


@dataclass(frozen=True)
class ReportState:
    """One state of a member in a campaign's report."""

    name: str
    #: The live bar's segment that counts members in this state.
    bar: str
    #: The member's delivery is over (the bar's filled part).
    final: bool = False
    #: The member heard the message (confirmed, answered without a key, or an answering machine has it).
    delivered: bool = False
    #: The attempt outcomes a finished member in this state ended with.
    outcomes: tuple[O, ...] = ()


#: Every report state, in the order a progress bar lists them. ``ringing`` is a call placed and not
#: yet answered: the attempt's row says DIALING from before the Originate until the answer, and
#: nothing between (Asterisk's "ringing" is not stored), so dialling and ringing are one state here.
STATES: tuple[ReportState, ...] = (
    ReportState("confirmed", "confirmed", final=True, delivered=True, outcomes=(O.CONFIRMED,)),
    ReportState("answering_machine", "answering_machine", final=True, delivered=True,
                outcomes=(O.VOICEMAIL,)),
    ReportState("answered", "waiting"),
    ReportState("ringing", "waiting"),
    ReportState("waiting_retry", "waiting"),
    ReportState("queued", "waiting"),
    ReportState("answered_no_key", "failed", final=True, delivered=True, outcomes=(O.ANSWERED_NO_KEY,)),
    ReportState("no_answer", "failed", final=True, outcomes=(O.NO_ANSWER,)),
    ReportState("busy", "failed", final=True, outcomes=(O.BUSY,)),
    ReportState("failed", "failed", final=True,
                outcomes=(O.REJECTED, O.CONGESTION, O.FAILED, O.INVALID_NUMBER, O.CANCELLED, O.EXPIRED)),
)
#: States of a member outside the dialer's table, which the bar counts all the same (its segments
#: add up to the members): one the dialer does not call (issue 17) and who has not confirmed, with
#: written copies only (``text_only``) or nothing that reaches them (``no_channel``: not reached);
#: and a stopped campaign's (``ivr.delivery.report.STOPPED_STATES``): a call up at the stop is
#: still under way, one never called or whose retries the stop cut short was not reached.
OTHER_STATES: tuple[ReportState, ...] = (
    ReportState("text_only", "text_only", final=True),
    ReportState("no_channel", "failed", final=True),
    ReportState("in_call_at_stop", "waiting"),
    ReportState("not_called", "failed", final=True),
    ReportState("stopped", "failed", final=True),
)
#: The live bar's segments, in the order the console draws them (over first, waiting last).
BAR_SEGMENTS = ("confirmed", "answering_machine", "failed", "text_only", "waiting")

#: Live states, in the order a progress bar shows them.
LIVE_STATES = tuple(state.name for state in STATES)
#: States in which a member's delivery is over (the bar's filled part).
FINAL_STATES = tuple(state.name for state in STATES if state.final)
#: States in which the message was heard (the coordinator's log's "delivered").
DELIVERED_STATES = tuple(state.name for state in STATES if state.delivered)
#: Final attempt outcome -> the report state it shows as (what ``binfoon demo`` and the coordinator hear).
CATEGORY: dict[str, str] = {outcome.value: state.name for state in STATES for outcome in state.outcomes}
#: Live bar segment -> the report states it counts (every state of a report is in one).
BAR: dict[str, tuple[str, ...]] = {segment: tuple(state.name for state in STATES + OTHER_STATES
                                                  if state.bar == segment) for segment in BAR_SEGMENTS}
#: Outcomes that mean the member heard the message (follow-ups go only to them).
RECEIVED: tuple[O, ...] = tuple(outcome for state in STATES if state.delivered for outcome in state.outcomes)


def category(outcome: str) -> str:
    """The report state of a member who ended with ``outcome`` (an unknown one counts as failed)."""
    return CATEGORY.get(outcome, "failed")
