"""The admin line: an admin (or the zone's police) hears a BIN's latest messages and how many confirmed.

The conversation:
  system: "Welcome... admin line, type your PIN, then #"   caller: 1234#   (3 wrong: locked, audited)
  system: "Type the BIN's number, then #"                   caller: 12#
  system: "You chose BIN 12, Kerkwijk. 1 if right, 2 for another"         caller: 1
    (these first steps are the police line's: ``ivr.directory.caller``)
  system: "Messages for BIN Kerkwijk: 5. You hear the newest first."
  for each message, newest first:
    system: "Message 1 of 5: urgent message of 27 November at 14:32."
            "27 of the 31 members have confirmed."  + the original recording
    system: "1 hear it again, 2 next (older), 3 previous (newer), * stop"
Only admins and the police of the BIN's zone get past the BIN: anyone else hears a refusal,
which is audited. Every replay is audited before its audio plays (``ReplayDesk``). A key
pressed during the header or the recording acts at once (barge-in).
"""

from __future__ import annotations

import datetime as dt
import enum
import zoneinfo
from dataclasses import dataclass

from ivr.archive.replay import ReplayDesk, ReplayEntry, Replayer
from ivr.directory.caller import Unidentified, identify, pick_bin
from ivr.media.prompts import text
from ivr.police_line.store import BinChoice
from ivr.telephony.call import Call, choose

#: The keys of the menu after each message.
MENU_KEYS = "123*"
#: Month names, as prompt ids (the header says "27 November", in the caller's language).
MONTHS = ("month_january", "month_february", "month_march", "month_april", "month_may", "month_june",
          "month_july", "month_august", "month_september", "month_october", "month_november",
          "month_december")


@dataclass(frozen=True)
class ReplayRules:
    """Timing, local time and list length of the admin line (from the settings)."""

    key_timeout_s: float = 6.0
    tz: dt.tzinfo = zoneinfo.ZoneInfo("Europe/Brussels")
    #: How many of the BIN's latest messages are offered.
    latest: int = 5


class ReplayEnd(enum.Enum):
    """How an admin-line call ended."""

    DONE = "done"                      # heard at least the newest message, then * or silence
    NO_MESSAGES = "no_messages"        # the BIN has nothing to replay
    REFUSED = "refused"                # authenticated, but may not replay (audited)
    NO_BIN = "no_bin"                  # no usable BIN chosen
    LOCKED = "locked"
    NOT_AUTHENTICATED = "not_authenticated"


async def admin_replay(call: Call, desk: ReplayDesk, rules: ReplayRules) -> ReplayEnd:
    """The whole admin-line conversation."""
    replayer = await authenticate(call, desk, rules)
    if not isinstance(replayer, Replayer):
        return replayer
    call.language = replayer.language
    if not await desk.may_replay_anything(replayer):
        await call.say("admin_not_allowed")
        await call.hangup()
        return ReplayEnd.REFUSED
    bin_ = await choose_bin(call, desk, replayer, rules)
    if isinstance(bin_, ReplayEnd):
        await call.say("no_input_goodbye" if bin_ is ReplayEnd.NO_BIN else "member_goodbye")
        await call.hangup()
        return bin_
    entries = await desk.latest(bin_.bin_id, rules.latest)
    if not entries:
        await call.say("admin_no_messages")
        await call.hangup()
        return ReplayEnd.NO_MESSAGES
    await call.say("admin_message_count", count=len(entries), name=bin_.name)
    await browse(call, desk, replayer, entries, rules)
    await call.say("member_goodbye")
    await call.hangup()
    return ReplayEnd.DONE


async def authenticate(call: Call, desk: ReplayDesk, rules: ReplayRules) -> Replayer | ReplayEnd:
    """Caller ID and PIN, with the police line's lockout (``ivr.directory.caller.identify``)."""
    replayer = await identify(call, desk.lock_for, desk.check_pin, lambda answer: answer.replayer,
                              pin_prompt="admin_enter_pin", key_timeout_s=rules.key_timeout_s)
    if isinstance(replayer, Unidentified):
        return ReplayEnd.LOCKED if replayer is Unidentified.LOCKED else ReplayEnd.NOT_AUTHENTICATED
    return replayer


async def choose_bin(call: Call, desk: ReplayDesk, replayer: Replayer,
                     rules: ReplayRules) -> BinChoice | ReplayEnd:
    """The BIN by its number, read back (``ivr.directory.caller.pick_bin``); a BIN the caller may not
    replay is refused (and audited by the desk)."""
    picked = await pick_bin(call, lambda digits: desk.find_bin(replayer, digits),
                            key_timeout_s=rules.key_timeout_s)
    if picked.choice is not None:
        return picked.choice
    return ReplayEnd.REFUSED if "admin_bin_refused" in picked.heard else ReplayEnd.NO_BIN


async def browse(call: Call, desk: ReplayDesk, replayer: Replayer, entries: list[ReplayEntry],
                 rules: ReplayRules) -> None:
    """Play the messages newest first; 1 again, 2 next (older), 3 previous (newer), * stop."""
    index = 0
    play = True
    while True:
        key = await play_entry(call, desk, replayer, entries, index, rules) if play else None
        play = True
        if key is None or key not in MENU_KEYS:
            key = await choose(call, "admin_replay_menu", MENU_KEYS, rules.key_timeout_s)
        if key is None or key == "*":
            return
        if key == "2":
            if index + 1 < len(entries):
                index += 1
            else:
                await call.say("admin_no_older")
                play = False
        elif key == "3":
            if index > 0:
                index -= 1
            else:
                await call.say("admin_no_newer")
                play = False


async def play_entry(call: Call, desk: ReplayDesk, replayer: Replayer, entries: list[ReplayEntry], index: int,
                     rules: ReplayRules) -> str | None:
    """The header (position, urgency, date and time, confirmations), then the recording; a key stops them."""
    entry = entries[index]
    local = entry.spoken_at.astimezone(rules.tz)
    urgency = text("word_urgent" if entry.urgent else "word_preventive", call.language)
    month = text(MONTHS[local.month - 1], call.language)
    key = await call.say("admin_message_header", position=index + 1, total=len(entries), urgency=urgency,
                         day=local.day, month=month, hour=local.hour, minute=local.minute)
    if key is not None:
        return key
    if entry.members is None:
        key = await call.say("admin_not_delivered")
    else:
        key = await call.say("report_counts", confirmed=entry.confirmed, members=entry.members)
    if key is not None:
        return key
    # Audited (and committed) before a byte of the police's recording is played.
    recording = await desk.recording_to_play(replayer, entry.message_id)
    return await call.play_audio(recording)
