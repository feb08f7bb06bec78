"""What became of a test call to a member: stored as an audit row (who placed it is in the row
``member.test_call`` written before it was dialled), read back for the member's page.

Outcomes: ``confirmed`` (answered, 1 pressed), ``answered_no_key`` (answered, no 1), or the dial
outcome when nobody answered (``busy``, ``no_answer``, ``rejected``, ``congestion``,
``invalid_number``, ``failed``). No table holds test calls (they belong to no campaign): the audit
row is the record, and the chain keeps it from being changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from storage import audit

RESULT = "member.test_call_result"
#: The outcomes of an answered test call.
CONFIRMED = "confirmed"
NO_KEY = "answered_no_key"


def answered_outcome(pressed_1: bool) -> str:
    """An answered test call's outcome: did the member press 1?"""
    return CONFIRMED if pressed_1 else NO_KEY


@dataclass(frozen=True)
class TestCallResult:
    """The latest test call to a member: when its result was stored, the outcome, the call's id."""

    __test__ = False  # not a pytest class

    at: dt.datetime
    outcome: str
    call_id: str


def record_result(s: Session, person_id: int, call_id: str, outcome: str) -> None:
    """Store a test call's outcome (by ``system``: the phone said it, nobody typed it)."""
    audit.record(s, "system", RESULT, f"person:{person_id}", call=call_id, outcome=outcome)


def last_result(s: Session, person_id: int) -> TestCallResult | None:
    """The latest stored test call outcome of a member, if any."""
    found = audit.search(s, audit.AuditQuery(action=RESULT, subject=f"person:{person_id}", limit=1))
    if not found:
        return None
    entry = found[0]
    details = entry.details or {}
    return TestCallResult(entry.at, str(details.get("outcome", "")), str(details.get("call", "")))
