"""A member calls the BIN line back: the latest message of their BIN again, and they may confirm it,
or stop BIN calls (and, later, take them again).

  system: "This is an urgent BIN message from the police." + the original recording
  system: "Press 1 to confirm, 2 to hear it again." "To stop BIN calls, press 9."      member: 1
  system: "Thank you."
or                                                                                    member: 9
  system: "You ask not to be called any more. Press 1 to confirm, 2 to change nothing." member: 1
  system: "Are you sure? Even for an urgent message... Press 1 again to stop the calls." member: 1
  system: "Noted: you will not be called any more. To be called again, call this number and press 9."
A member who opted out hears "to be called again, press 9" instead, and the same two questions.
Anything but 1 to either question changes nothing ("Nothing was changed") and the menu comes back.
The opt-out is written (and audited) before it is confirmed to the member. The caller ID is all the
line knows: the opt-out (or the way back) is for every member whose number it is, and "press 9 to be
called again" is offered only when all of them opted out. A member whose own channels leave calls
out (text only) is offered neither: there is no call to stop, and none would come back.
The caller ID is the only key (it can be spoofed): calls are rate-limited per caller ID and per line
(``ivr.delivery.line_limits``), and a number that is no member's, a caller or line over its limits and
a member without a message all hear the same "no message for your neighbourhood" and nothing else,
so calling teaches an enumerator nothing. When the latest message is a drill, its prompts say it is a
test, as on the drill's own calls. A confirmation is stored as unverified (``callback-unverified``),
and so is an opt-out (its audit row says so; a coordinator sees it on the member's page and may undo it).
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

#: The menu key that stops BIN calls (or, for a member who stopped them, takes them again).
CALLS_KEY = "9"
#: The keys the menu answers: confirm, hear it again, and the calls key (when it is offered).
MENU_KEYS = ("1", "2", CALLS_KEY)
#: How often the recording plays, and the menu is asked, at most.
MAX_PLAYS = 3
MAX_MENUS = 3


class CallbackEnd(enum.Enum):
    """How a call-back ended (the values are what logs and ``flow_ends`` have always said)."""

    CONFIRMED = "confirmed"
    HEARD = "heard"
    UNKNOWN_CALLER = "unknown_caller"
    NO_MESSAGE = "no_message"
    LIMITED = "limited"
    OPTED_OUT = "opted_out"
    OPTED_IN = "opted_in"


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
    # None: the key is not offered (text only); else whether the way back is (all opted out).
    opted_out = await desk.calls_opted_out(caller)
    keys = MENU_KEYS if opted_out is not None else MENU_KEYS[:2]
    await call.say(prompts["BINFOON_HEADER"])
    key = await call.play_audio(recording)
    plays, menus = 1, 0
    while True:
        if key not in keys:
            if menus == MAX_MENUS:
                break
            menus += 1
            key = await _menu(call, prompts["BINFOON_KEYS"], opted_out, key_timeout_s)
        if key == "1":
            await desk.confirm_callback(campaign_id, person_id)
            await call.say(prompts["BINFOON_THANKS"])
            await call.hangup()
            return CallbackEnd.CONFIRMED
        if key == CALLS_KEY and opted_out is not None:
            if await _change_calls(call, desk, caller, opted_out, key_timeout_s):
                await call.hangup()
                return CallbackEnd.OPTED_IN if opted_out else CallbackEnd.OPTED_OUT
            key = None  # nothing changed: the menu again
        elif key == "2" and plays < MAX_PLAYS:
            plays += 1
            key = await call.play_audio(recording)
        else:
            break
    await call.say("member_goodbye")
    await call.hangup()
    return CallbackEnd.HEARD


async def _menu(call: Call, keys_prompt: str, opted_out: bool | None, timeout_s: float) -> str | None:
    """"Press 1 to confirm, 2 to hear it again", then the calls key on offer, if any (a key pressed
    during the first sentence answers at once)."""
    if opted_out is None:
        return await call.ask(keys_prompt, timeout_s)
    key = await call.say(keys_prompt)
    if key is not None:
        return key
    if opted_out:
        return await call.ask("callback_calls_back_offer", timeout_s)
    return await call.ask("callback_calls_stop_offer", timeout_s)


async def _change_calls(call: Call, desk: DeliveryDesk, caller: str, opted_out: bool, timeout_s: float) -> bool:
    """Stop BIN calls (or, for a member who stopped them, take them again) for the members whose
    number ``caller`` is, once the member pressed 1 to both questions; anything else changes nothing.
    ``True`` when it changed."""
    if opted_out:
        sure = (await call.ask("callback_calls_back_confirm", timeout_s) == "1"
                and await call.ask("callback_calls_back_sure", timeout_s) == "1")
    else:
        sure = (await call.ask("callback_calls_stop_confirm", timeout_s) == "1"
                and await call.ask("callback_calls_stop_sure", timeout_s) == "1")
    if not sure:
        await call.say("callback_calls_unchanged")
        return False
    await desk.set_calls_opt_out(caller, not opted_out)  # written before it is said
    await call.say("callback_calls_back_done" if opted_out else "callback_calls_stopped")
    return True
