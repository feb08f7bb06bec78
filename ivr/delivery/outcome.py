"""How a member call attempt ended, decided in one place: a pure function of what was observed.

An attempt ends either at dialling (busy, no answer, ...: the dial outcome is the attempt's) or, once
answered, when its conversation ends: the member flow says confirmed, voicemail or no key; a call no
flow took (the application was unreachable) counts as answered without a key. A stored confirmation
always wins: Asterisk may have written it durably (CEL) while the flow could not say so.
"""

from __future__ import annotations

from ivr.domain.vocabulary import AttemptOutcome
from ivr.telephony.dialer import Dialled
from ivr.telephony.outcomes import DialOutcome

#: The member flow's ends that are an attempt's outcome as they are (``MemberEnd`` values).
_FLOW_OUTCOMES = {"confirmed": AttemptOutcome.CONFIRMED, "voicemail": AttemptOutcome.VOICEMAIL}


#: The stored dial outcome of an attempt that never reached Asterisk's channels (AMI down before the
#: Originate, or Asterisk refused it: "Asterisk is shutting down"). No phone was called: it is no
#: attempt against the member, and reports do not count it.
NOT_PLACED = "not_placed"
#: The stored dial outcome of an attempt whose fate was lost with the AMI connection.
UNKNOWN = "unknown"


def dialled_outcome(dialled: Dialled) -> str | None:
    """The attempt's outcome when dialling ended it; ``None`` if the call was answered.

    A call that was never placed, or whose fate was lost with the PBX connection, is
    ``interrupted``: it is dialled again and costs the member no try."""
    if dialled.lost or dialled.refused:
        return AttemptOutcome.INTERRUPTED.value
    if dialled.outcome is DialOutcome.ANSWERED:
        return None
    return dialled.outcome.value


def dial_record(dialled: Dialled) -> str:
    """What the attempt's row stores as its dial outcome (``not_placed`` when no channel was made)."""
    if dialled.refused:
        return NOT_PLACED
    if dialled.lost:
        return UNKNOWN
    return dialled.outcome.value


def placed(dial_outcome: str | None) -> bool:
    """True if the attempt reached Asterisk's channels (a report counts it as a call)."""
    return dial_outcome != NOT_PLACED


def answered_outcome(flow_end: str | None, *, confirmed: bool, failed: bool = False) -> AttemptOutcome:
    """The outcome of an answered attempt, from the flow's end (``None``: no flow ran), whether a
    confirmation is stored for it, and whether our side failed during the call."""
    if confirmed:
        return AttemptOutcome.CONFIRMED
    if failed:
        return AttemptOutcome.FAILED
    return _FLOW_OUTCOMES.get(flow_end or "", AttemptOutcome.ANSWERED_NO_KEY)
