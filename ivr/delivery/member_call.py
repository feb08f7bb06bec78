"""BINFOON 2, the member call: the police's own recording, 1 confirms, 2 replays.

The conversation (the system called the member):
  system: "This is an urgent BIN message from the police." + the original recording
  system: "Press 1 to confirm you heard it, 2 to hear it again"      member: 1
  system: "Thank you, your confirmation is noted."
A key pressed during the recording counts at once (1 confirms, 2 replays from the start). After the
message the keys are reminded until ``reminders`` are spent. The confirmation is committed before
"thank you". On an answering machine (the dialplan waited for its beep) the message plays once,
followed by a moment of silence so that nothing of its end is cut.
A drill ("Testbericht BIN-foon") says so in every prompt: the header, the keys and the thanks are
the drill's (``policy.member_prompts``), as the dialplan's fallback plays them.
The flow sets BINFOON_DONE=1 when it has handled the call, so the dialplan's own fallback (for an
application that is down) never plays the message a second time.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ivr.delivery.policy import member_prompts
from ivr.delivery.store import DeliveryDesk
from ivr.telephony.agi import is_originated_channel
from ivr.telephony.call import Call, CallHungUp


class MemberEnd(enum.Enum):
    """How a member call ended."""

    CONFIRMED = "confirmed"
    NO_KEY = "answered_no_key"
    VOICEMAIL = "voicemail"


@dataclass(frozen=True)
class MemberRules:
    """Timing of the member call."""

    key_timeout_s: float = 8.0
    reminders: int = 2
    #: Silence kept on the line after the message on an answering machine, before hanging up: a
    #: hang-up right after the last sample loses the last frame(s) the machine had not yet recorded
    #: (measured on the simulated machine: the recording stopped 2.75 ms short of the message's end).
    machine_tail_s: float = 1.0


@dataclass(frozen=True)
class MemberCallStart:
    """What the dialplan hands the member call: our attempt id and the answering-machine verdict."""

    attempt_id: str
    amd_status: str


def member_call_start(args: Sequence[str], unique_id: str) -> MemberCallStart | None:
    """The member call's AGI arguments (attempt id, AMD verdict), taken only on the channel we
    originated for that attempt: ``None`` (refuse the call before anything is played or stored) when
    the channel is another one, so a leaked attempt id confirms nobody."""
    if not args or not is_originated_channel(unique_id, args[0]):
        return None
    return MemberCallStart(args[0], args[1] if len(args) > 1 else "")


class DurableMark(Protocol):
    """What the flow needs from the channel beyond ``Call``: Asterisk-side records."""

    async def mark_confirmed(self, attempt_id: str) -> None:
        """Write the confirmation where Asterisk keeps it even if the application dies (CEL)."""

    async def mark_done(self) -> None:
        """Tell the dialplan the application handled the call (no fallback)."""

    async def pause(self, seconds: float) -> None:
        """Keep the line open, silent, for ``seconds``."""


async def member_call(call: Call, channel: DurableMark, desk: DeliveryDesk, attempt_id: str,
                      amd_status: str, rules: MemberRules) -> MemberEnd:
    """The whole member conversation."""
    brief = await desk.member_brief(attempt_id, amd_status or None)
    call.language = brief.language
    prompts = member_prompts(brief.urgent, brief.drill)
    header, keys, thanks = prompts["BINFOON_HEADER"], prompts["BINFOON_KEYS"], prompts["BINFOON_THANKS"]
    if amd_status == "MACHINE":
        await call.say(header)
        await call.play_audio(brief.recording)
        await channel.mark_done()
        try:
            await channel.pause(rules.machine_tail_s)  # the machine records the message to its last sample
            await call.hangup()
        except CallHungUp:
            pass  # the machine stopped first: the whole message was left all the same
        return MemberEnd.VOICEMAIL
    await call.say(header)  # a key here is too early to count: the message has not been heard
    reminders = 0
    key: str | None = None
    while True:
        key = await call.play_audio(brief.recording)
        while key not in ("1", "2"):
            if reminders > rules.reminders:
                await call.say("member_goodbye")
                await channel.mark_done()
                await call.hangup()
                return MemberEnd.NO_KEY
            reminders += 1
            key = await call.ask(keys, rules.key_timeout_s)
        if key == "1":
            # Durable first (Asterisk's CEL, then our database), "thank you" after.
            await channel.mark_confirmed(attempt_id)
            await desk.confirm(attempt_id)
            await channel.mark_done()
            await call.say(thanks)
            await call.hangup()
            return MemberEnd.CONFIRMED
        continue  # "2": the message again, from the start
