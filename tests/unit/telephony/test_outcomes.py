"""The dial-outcome table: busy, no answer, congestion and invalid numbers are never mixed up."""

import pytest

from ivr.telephony.outcomes import DialOutcome, classify_dial


@pytest.mark.parametrize(
    ("success", "reason", "cause", "expected"),
    [
        (True, 4, None, DialOutcome.ANSWERED),
        # As measured on Asterisk 22 with Local channels (reason carries it, cause 0)...
        (False, 5, 0, DialOutcome.BUSY),
        (False, 8, 0, DialOutcome.CONGESTION),
        (False, 3, 19, DialOutcome.NO_ANSWER),
        (False, 0, 1, DialOutcome.INVALID_NUMBER),
        # ...and over a PJSIP trunk (reason 0, the SIP status mapped to a Q.850 cause).
        (False, 0, 17, DialOutcome.BUSY),
        (False, 0, 34, DialOutcome.CONGESTION),
        (False, 0, 21, DialOutcome.REJECTED),
        (False, 0, 20, DialOutcome.NO_ANSWER),
        (False, 0, 28, DialOutcome.INVALID_NUMBER),
        (False, 0, 38, DialOutcome.CONGESTION),
        # The cause wins over a coarse reason; normal clearing says nothing.
        (False, 3, 17, DialOutcome.BUSY),
        (False, 3, 16, DialOutcome.NO_ANSWER),
        (False, 1, 16, DialOutcome.FAILED),
        (False, 0, None, DialOutcome.FAILED),
        (False, 4, None, DialOutcome.FAILED),  # "answered" with a failure response is not an answer
    ],
)
def test_classify_dial(success: bool, reason: int, cause: int | None, expected: DialOutcome) -> None:
    assert classify_dial(success, reason, cause) is expected
