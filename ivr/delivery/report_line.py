"""A coordinator calls the report line: "27 of the 31 members have confirmed" for their BIN's
latest message. Only coordinators (by caller ID) hear counts; others hear the number is unknown."""

from __future__ import annotations

from ivr.delivery.store import DeliveryDesk
from ivr.domain.phone import caller_e164
from ivr.telephony.call import Call


async def coordinator_report(call: Call, desk: DeliveryDesk) -> str:
    """The report-line conversation; returns how it ended."""
    caller = caller_e164(call.caller_id)
    found = await desk.report_for_coordinator(caller) if caller else "unknown"
    if found == "unknown":
        await call.say("callback_unknown_caller")
        await call.hangup()
        return "unknown_caller"
    if found is None:
        await call.say("report_no_campaign")
        await call.hangup()
        return "no_campaign"
    assert not isinstance(found, str)
    language, confirmed, members = found
    call.language = language
    await call.say("report_counts", confirmed=confirmed, members=members)
    await call.say("member_goodbye")
    await call.hangup()
    return f"{confirmed}/{members}"
