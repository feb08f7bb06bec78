"""A coordinator calls the report line: "27 of the 31 members have confirmed" for their BIN's
latest message. Only coordinators (by caller ID) hear counts. The caller ID can be spoofed: calls are
rate-limited per caller ID and per line (``ivr.delivery.line_limits``), the counts heard are audited
as told to an unverified caller, and a number that is no coordinator's, a caller or line over its
limits and a BIN without a campaign all hear the same "no message sent yet": nothing to enumerate."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ivr.delivery.line_limits import LineLimits
from ivr.delivery.store import DeliveryDesk
from ivr.directory.pin_gate import pin_key
from ivr.domain.phone import caller_e164
from ivr.telephony.call import Call


class ReportEnd(enum.Enum):
    """How a report-line call ended."""

    TOLD = "told"
    UNKNOWN_CALLER = "unknown_caller"
    NO_CAMPAIGN = "no_campaign"
    LIMITED = "limited"


@dataclass(frozen=True)
class ReportHeard:
    """How the call ended and, when the counts were told, which counts."""

    end: ReportEnd
    confirmed: int = 0
    members: int = 0

    @property
    def value(self) -> str:
        """The end as logs and ``flow_ends`` have always said it: "27/31" when told, else the end's value."""
        return f"{self.confirmed}/{self.members}" if self.end is ReportEnd.TOLD else self.end.value

    def __str__(self) -> str:
        return self.value  # logged as before: "27/31"


#: How a call without counts ended; the caller heard the same words in each case.
_NO_COUNTS = {"unknown": ReportEnd.UNKNOWN_CALLER, None: ReportEnd.NO_CAMPAIGN, "limited": ReportEnd.LIMITED}


async def coordinator_report(call: Call, desk: DeliveryDesk, limits: LineLimits = LineLimits()) -> ReportHeard:
    """The report-line conversation; returns how it ended."""
    caller = caller_e164(call.caller_id) or pin_key(call.caller_id)  # a hidden number is counted too
    found = await desk.report_for_coordinator(caller, limits)
    if found is None or isinstance(found, str):
        await call.say("report_no_campaign")
        await call.hangup()
        return ReportHeard(_NO_COUNTS[found])
    language, confirmed, members = found
    call.language = language
    await call.say("report_counts", confirmed=confirmed, members=members)
    await call.say("member_goodbye")
    await call.hangup()
    return ReportHeard(ReportEnd.TOLD, confirmed, members)
