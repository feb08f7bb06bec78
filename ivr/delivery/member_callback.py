"""A member calls the BIN line back: the latest message of their BIN again, and they may confirm.

  system: "This is an urgent BIN message from the police." + the original recording
  system: "Press 1 to confirm, 2 to hear it again"     member: 1
  system: "Thank you."
Callers whose number is no member's hear that the number is unknown, and nothing else.
"""

from __future__ import annotations

import enum

from ivr.delivery.store import DeliveryDesk
from ivr.domain.phone import caller_e164
from ivr.telephony.call import Call


class CallbackEnd(enum.Enum):
    """How a call-back ended (the values are what logs and ``flow_ends`` have always said)."""

    CONFIRMED = "confirmed"
    HEARD = "heard"
    UNKNOWN_CALLER = "unknown_caller"
    NO_MESSAGE = "no_message"


async def member_callback(call: Call, desk: DeliveryDesk, key_timeout_s: float) -> CallbackEnd:
    """The whole call-back conversation; returns how it ended."""
    caller = caller_e164(call.caller_id)
    found = await desk.latest_for_caller(caller) if caller else "unknown"
    if found == "unknown":
        await call.say("callback_unknown_caller")
        await call.hangup()
        return CallbackEnd.UNKNOWN_CALLER
    if found is None:
        await call.say("callback_no_message")
        await call.hangup()
        return CallbackEnd.NO_MESSAGE
    assert not isinstance(found, str)
    campaign_id, person_id, language, recording, urgent = found
    call.language = language
    await call.say("member_header_urgent" if urgent else "member_header_preventive")
    for _ in range(3):
        key = await call.play_audio(recording)
        if key not in ("1", "2"):
            key = await call.ask("member_keys", key_timeout_s)
        if key == "1":
            await desk.confirm_callback(campaign_id, person_id)
            await call.say("member_thanks")
            await call.hangup()
            return CallbackEnd.CONFIRMED
        if key != "2":
            break
    await call.say("member_goodbye")
    await call.hangup()
    return CallbackEnd.HEARD
