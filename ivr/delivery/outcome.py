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


def dialled_outcome(dialled: Dialled) -> str | None:
    """The attempt's outcome when dialling ended it; ``None`` if the call was answered.

    A call whose fate was lost with the PBX connection is ``interrupted``: it is retried and costs
    the member no try."""
    if dialled.lost:
        return AttemptOutcome.INTERRUPTED.value
    if dialled.outcome is DialOutcome.ANSWERED:
        return None
    return dialled.outcome.value


def answered_outcome(flow_end: str | None, *, confirmed: bool, failed: bool = False) -> AttemptOutcome:
    """The outcome of an answered attempt, from the flow's end (``None``: no flow ran), whether a
    confirmation is stored for it, and whether our side failed during the call."""
    if confirmed:
        return AttemptOutcome.CONFIRMED
    if failed:
        return AttemptOutcome.FAILED
    return _FLOW_OUTCOMES.get(flow_end or "", AttemptOutcome.ANSWERED_NO_KEY)
