"""BINFOON 1, the police line: an officer proves who they are, picks the BIN and urgency, speaks.

The conversation:
  system: "Welcome... type your PIN, then #"      officer: 1234#      (3 wrong: locked, audited)
  system: "Type the BIN's number, then #"          officer: 12#
  system: "You chose BIN 12, Kerkwijk. 1 if right, 2 for another"    officer: 1
  system: "1 urgent, 2 preventive"                 officer: 1
  system: "Speak after the tone; # when done" *beep* officer speaks (# or 3 s silence ends)
  system: "1 listen, 2 speak again, 3 send, * cancel"                officer: 3
  system: "Sent to the coordinators. Goodbye."   (a one-level BIN: "goes straight to the members";
          an urgent one there, in a zone with a second approver: "waits for a second officer's approval")
The PIN and the BIN are the steps every PIN line shares (``ivr.directory.caller``).
The first factor is the caller ID, or, on a call from an officer's own SIP account, that account
(authenticated by Asterisk's digest check; the softphone's caller ID is then never looked at).
Every recording is stored before the next prompt; a hang-up at any point leaves a draft that is
never sent; only key 3 submits.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from ivr.directory.caller import Unidentified, identify, pick_bin
from ivr.domain.vocabulary import Urgency
from ivr.police_line.route import SENT_PROMPT, submitted_route
from ivr.police_line.store import AfterIntake, BinChoice, MessageDesk, Officer, PinResult
from ivr.telephony.call import Call, choose

#: Takes an officer may record for one message (each is kept).
MAX_TAKES = 9


@dataclass(frozen=True)
class IntakeRules:
    """The timing rules of the police line (from the settings)."""

    key_timeout_s: float = 6.0
    record_max_s: int = 120
    record_silence_s: int = 3


class IntakeEnd(enum.Enum):
    """How a police-line call ended."""

    SENT = "sent"
    CANCELLED = "cancelled"
    DRAFT_KEPT = "draft_kept"          # recorded but never sent (hang-up or no choice)
    LOCKED = "locked"
    NOT_AUTHENTICATED = "not_authenticated"
    NO_MESSAGE = "no_message"          # ended before anything was recorded


async def police_intake(call: Call, desk: MessageDesk, rules: IntakeRules, after: AfterIntake,
                        *, sip_account: str | None = None) -> IntakeEnd:
    """The whole police-line conversation; kept takes and "send" go on to ``after``.

    ``sip_account``: the officer's SIP username when the call comes from that account's endpoint.
    """
    officer = await authenticate(call, desk, rules, sip_account)
    if not isinstance(officer, Officer):
        return officer
    call.language = officer.language
    bin_ = await choose_bin(call, desk, officer, rules)
    if bin_ is None:
        await call.say("no_input_goodbye")
        return IntakeEnd.NO_MESSAGE
    key = await choose(call, "police_choose_urgency", "12", rules.key_timeout_s)
    if key is None:
        await call.say("no_input_goodbye")
        return IntakeEnd.NO_MESSAGE
    urgency = Urgency.URGENT if key == "1" else Urgency.PREVENTIVE
    message_id = await desk.create_draft(officer, bin_.bin_id, urgency)
    return await record_and_send(call, desk, message_id, f"person:{officer.person_id}", rules, after)


async def authenticate(call: Call, desk: MessageDesk, rules: IntakeRules,
                       sip_account: str | None = None) -> Officer | IntakeEnd:
    """Caller ID (or the SIP account) and PIN (``ivr.directory.caller.identify``); a locked caller is
    not allowed to guess."""
    if sip_account is None:
        lock_for, check_pin = desk.lock_for, desk.check_pin
    else:
        # The account Asterisk authenticated is the first factor: the caller ID a softphone sends is its own claim.
        async def lock_for(_caller_id: str) -> dt.datetime | None:
            return await desk.lock_for_sip(sip_account)

        async def check_pin(_caller_id: str, pin: str) -> PinResult:
            return await desk.check_sip_pin(sip_account, pin)
    officer = await identify(call, lock_for, check_pin, lambda answer: answer.officer,
                             pin_prompt="police_enter_pin", key_timeout_s=rules.key_timeout_s)
    if isinstance(officer, Unidentified):
        return IntakeEnd.LOCKED if officer is Unidentified.LOCKED else IntakeEnd.NOT_AUTHENTICATED
    return officer


async def choose_bin(call: Call, desk: MessageDesk, officer: Officer, rules: IntakeRules) -> BinChoice | None:
    """The BIN by its number, read back for confirmation (``ivr.directory.caller.pick_bin``)."""
    picked = await pick_bin(call, lambda digits: desk.find_bin(officer, digits),
                            key_timeout_s=rules.key_timeout_s)
    return picked.choice


async def record_and_send(call: Call, desk: MessageDesk, message_id: int, actor: str,
                          rules: IntakeRules, after: AfterIntake) -> IntakeEnd:
    """Record takes until the officer sends or cancels; every take is stored first (then transcribed)."""
    kept_any = False
    for take in range(1, MAX_TAKES + 1):
        await call.say("police_record_after_beep")
        await call.beep()
        recorded = await call.record(rules.record_max_s, rules.record_silence_s)
        stored = await desk.keep_take(message_id, take, recorded, actor)
        after.take_kept(message_id, stored.recording_id)
        kept_any = kept_any or stored.recording_id is not None
        if recorded.hung_up:
            return IntakeEnd.DRAFT_KEPT if kept_any else IntakeEnd.NO_MESSAGE
        if stored.speech_s <= 0.0:
            await call.say("police_recording_empty")
            continue
        if recorded.end_reason == "max_duration":
            await call.say("police_recording_too_long")
        while True:
            key = await choose(call, "police_review_menu", "123*", rules.key_timeout_s)
            if key == "1":
                assert stored.path is not None
                await call.play_audio(await desk.recording_to_play(message_id, actor, take=take))
                continue
            if key == "3":
                await desk.submit(message_id, take, actor)
                after.submitted(message_id)
                route = await desk.tx(lambda s: submitted_route(s, message_id))
                await call.say(SENT_PROMPT[route])
                await call.hangup()
                return IntakeEnd.SENT
            if key == "*":
                await desk.cancel(message_id, actor)
                await call.say("police_cancelled")
                await call.hangup()
                return IntakeEnd.CANCELLED
            if key is None:
                await call.say("no_input_goodbye")
                await call.hangup()
                return IntakeEnd.DRAFT_KEPT
            break  # "2": speak again
    await call.say("no_input_goodbye")
    await call.hangup()
    return IntakeEnd.DRAFT_KEPT if kept_any else IntakeEnd.NO_MESSAGE
