"""A coordinator calls the report line: "27 of the 31 members have confirmed" for their BIN's
latest message. Only coordinators (by caller ID) hear counts; others hear the number is unknown."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ivr.delivery.store import DeliveryDesk
from ivr.domain.phone import caller_e164
from ivr.telephony.call import Call


class ReportEnd(enum.Enum):
    """How a report-line call ended."""

    TOLD = "told"
    UNKNOWN_CALLER = "unknown_caller"
    NO_CAMPAIGN = "no_campaign"


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


async def coordinator_report(call: Call, desk: DeliveryDesk) -> ReportHeard:
    """The report-line conversation; returns how it ended."""
    caller = caller_e164(call.caller_id)
    found = await desk.report_for_coordinator(caller) if caller else "unknown"
    if found == "unknown":
        await call.say("callback_unknown_caller")
        await call.hangup()
        return ReportHeard(ReportEnd.UNKNOWN_CALLER)
    if found is None:
        await call.say("report_no_campaign")
        await call.hangup()
        return ReportHeard(ReportEnd.NO_CAMPAIGN)
    assert not isinstance(found, str)
    language, confirmed, members = found
    call.language = language
    await call.say("report_counts", confirmed=confirmed, members=members)
    await call.say("member_goodbye")
    await call.hangup()
    return ReportHeard(ReportEnd.TOLD, confirmed, members)
