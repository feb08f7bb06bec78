"""How a dialled call ended, decided from what Asterisk reports: one tested table.

Voice-broadcast dialers are known to mix up busy, no answer and congestion. Asterisk gives two
coarse signals: the Originate ``Reason`` (the last call-progress frame it read) and the channel's
Q.850 hang-up cause. The cause is the more precise one when present; the reason fills in.
"""

from __future__ import annotations

import enum


class DialOutcome(enum.Enum):
    """What happened to one dialled call before anybody spoke."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    CONGESTION = "congestion"
    INVALID_NUMBER = "invalid_number"
    FAILED = "failed"


# Q.850 cause -> outcome (ITU-T Q.850 table 1; Asterisk's causes.h uses the same numbers).
_BY_CAUSE: dict[int, DialOutcome] = {
    1: DialOutcome.INVALID_NUMBER,   # unallocated number
    2: DialOutcome.INVALID_NUMBER,   # no route to network
    3: DialOutcome.INVALID_NUMBER,   # no route to destination
    22: DialOutcome.INVALID_NUMBER,  # number changed
    28: DialOutcome.INVALID_NUMBER,  # invalid number format
    17: DialOutcome.BUSY,            # user busy
    18: DialOutcome.NO_ANSWER,       # no user responding
    19: DialOutcome.NO_ANSWER,       # no answer from user (alerted)
    20: DialOutcome.NO_ANSWER,       # subscriber absent (mobile off)
    21: DialOutcome.REJECTED,        # call rejected
    27: DialOutcome.CONGESTION,      # destination out of order
    34: DialOutcome.CONGESTION,      # no circuit/channel available
    38: DialOutcome.CONGESTION,      # network out of order
    41: DialOutcome.CONGESTION,      # temporary failure
    42: DialOutcome.CONGESTION,      # switching equipment congestion
    44: DialOutcome.CONGESTION,      # requested channel not available
    47: DialOutcome.CONGESTION,      # resource unavailable (the farm's edge at the carrier's cap)
}

#: The cause the farm's SIP edge (Kamailio) gives a call it refused at the carrier's cap (its 503 carries
#: ``Reason: Q.850;cause=47``): the trunk was full, the member's line was never tried.
EDGE_CAP_CAUSE = 47

# Originate Reason (AST_CONTROL_* of the last frame read) -> outcome.
_BY_REASON: dict[int, DialOutcome] = {
    3: DialOutcome.NO_ANSWER,   # it rang, then the originate timed out
    4: DialOutcome.ANSWERED,
    5: DialOutcome.BUSY,
    8: DialOutcome.CONGESTION,
}


def classify_dial(success: bool, reason: int, cause: int | None) -> DialOutcome:
    """The outcome of an originated call, from Originate's success flag, reason and hang-up cause."""
    if success:
        return DialOutcome.ANSWERED
    # Cause 16 (normal clearing) and 0 say nothing about why an unanswered call failed.
    if cause is not None and cause in _BY_CAUSE:
        return _BY_CAUSE[cause]
    if reason in _BY_REASON and reason != 4:
        return _BY_REASON[reason]
    return DialOutcome.FAILED
