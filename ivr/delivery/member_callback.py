"""A member calls the BIN line back: the latest message of their BIN again, and they may confirm.

  system: "This is an urgent BIN message from the police." + the original recording
  system: "Press 1 to confirm, 2 to hear it again"     member: 1
  system: "Thank you."
The caller ID is the only key (it can be spoofed): calls are rate-limited per caller ID and per line
(``ivr.delivery.line_limits``), and a number that is no member's, a caller or line over its limits and
a member without a message all hear the same "no message for your neighbourhood" and nothing else,
so calling teaches an enumerator nothing. When the latest message is a drill, its prompts say it is a
test, as on the drill's own calls. A confirmation is stored as unverified (``callback-unverified``).
"""

from __future__ import annotations

import enum

from ivr.delivery.policy import member_prompts
from ivr.delivery.drill import campaign_is_drill
from ivr.delivery.line_limits import LineLimits
from ivr.delivery.store import DeliveryDesk
from ivr.directory.pin_gate import pin_key
from ivr.domain.phone import caller_e164
from ivr.telephony.call import Call


class CallbackEnd(enum.Enum):
    """How a call-back ended (the values are what logs and ``flow_ends`` have always said)."""

    CONFIRMED = "confirmed"
    HEARD = "heard"
    UNKNOWN_CALLER = "unknown_caller"
    NO_MESSAGE = "no_message"
    LIMITED = "limited"


#: What the call-back line answers instead of a message; the caller cannot tell which (same words).
_NOTHING_TO_PLAY = {"unknown": CallbackEnd.UNKNOWN_CALLER, None: CallbackEnd.NO_MESSAGE,
                    "limited": CallbackEnd.LIMITED}


async def member_callback(call: Call, desk: DeliveryDesk, key_timeout_s: float,
                          limits: LineLimits = LineLimits()) -> CallbackEnd:
    """The whole call-back conversation; returns how it ended."""
    # A hidden or malformed number is counted (and refused) like any unknown one.
    caller = caller_e164(call.caller_id) or pin_key(call.caller_id)
    found = await desk.latest_for_caller(caller, limits)
    if found is None or isinstance(found, str):
        await call.say("callback_no_message")
        await call.hangup()
        return _NOTHING_TO_PLAY[found]
    campaign_id, person_id, language, recording, urgent = found
    call.language = language
    prompts = member_prompts(urgent, await desk.tx(lambda s: campaign_is_drill(s, campaign_id)))
    await call.say(prompts["BINFOON_HEADER"])
    for _ in range(3):
        key = await call.play_audio(recording)
        if key not in ("1", "2"):
            key = await call.ask(prompts["BINFOON_KEYS"], key_timeout_s)
        if key == "1":
            await desk.confirm_callback(campaign_id, person_id)
            await call.say(prompts["BINFOON_THANKS"])
            await call.hangup()
            return CallbackEnd.CONFIRMED
        if key != "2":
            break
    await call.say("member_goodbye")
    await call.hangup()
    return CallbackEnd.HEARD
