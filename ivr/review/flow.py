"""Review: a coordinator hears the police's original recording and decides with one key.

The conversation (the system called the coordinator):
  system: "Hello, this is BINfoon. The police have a message for your BIN."
  system: "Urgent message from police zone X, spoken at 14:32, for BIN Kerkwijk." + the recording
  system: "1 forward now, 2 forward later, 3 listen again, 9 reject"
    1 -> stored, "sent to all members now"
    2 -> "minutes then #, or a time as four digits" -> stored with the time, "sent at 21:30"
    3 -> header and recording again
    9 -> stored, "rejected"
The decision is committed before the coordinator hears it confirmed; if another coordinator
decided first, this one is told so and nothing changes.

The same route carries the other calls of the review side; the call's brief says which (its purpose):
  notice     (one-level BIN, to each coordinator): "a police message went straight to the members of
             BIN 12; 1 to hear it now, or later on your report line"
  approval   (a second police officer): "an urgent message goes out without review and needs your
             approval" + header and recording; "1 approve, 2 listen again, 3 reject"; a 1 counts
             only once the recording has played in this call (an earlier 1 plays it first)
  escalation (the author, else the zone's police): "nobody reviewed (approved) your message for BIN 12
             after 6 rounds; it is still waiting"
"""

from __future__ import annotations

import datetime as dt
import enum
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

from ivr.review.policy import parse_later
from ivr.telephony.agi import is_originated_channel
from ivr.telephony.call import Call, choose
from ivr.review.store import APPROVAL, ESCALATION, NOTICE, AfterDecision, ReviewBrief, ReviewDesk
from ivr.media.prompts import text
from ivr.domain.vocabulary import Decision


@dataclass(frozen=True)
class ReviewRules:
    """Timing and local time for the review call."""

    key_timeout_s: float = 6.0
    tz: dt.tzinfo = zoneinfo.ZoneInfo("Europe/Brussels")


#: The keys of the review menu.
MENU_KEYS = "1239"


def _is_menu_key(key: str | None) -> bool:
    return key is not None and key in MENU_KEYS


class ReviewEnd(enum.Enum):
    """How a review call ended."""

    FORWARD_NOW = "forward_now"
    FORWARD_LATER = "forward_later"
    REJECT = "reject"
    ALREADY_DECIDED = "already_decided"
    NO_DECISION = "no_decision"
    APPROVED = "approved"          # the second police officer approved: delivered now
    NOTICE_HEARD = "notice_heard"  # a coordinator was told a one-level message went out
    POLICE_TOLD = "police_told"    # the author (or the zone's police) heard that nobody reviewed or approved


def review_call_start(args: Sequence[str], unique_id: str) -> str | None:
    """The review call's id from its AGI arguments, taken only on the channel we originated for that
    review call (the same rule as the member call's): ``None`` means refuse it before anything is
    played or stored, so a leaked review-call id decides nothing."""
    if not args or not is_originated_channel(unique_id, args[0]):
        return None
    return args[0]


async def coordinator_review(call: Call, desk: ReviewDesk, review_call_id: str, rules: ReviewRules,
                             after: AfterDecision) -> ReviewEnd:
    """The whole review conversation; a decision goes on to ``after`` before "thank you"."""
    brief = await desk.brief(review_call_id)
    call.language = brief.language
    if brief.purpose == NOTICE:
        return await notice(call, desk, brief, rules)
    if brief.purpose == APPROVAL:
        return await second_approval(call, desk, brief, rules, after)
    if brief.purpose == ESCALATION:
        return await police_told(call, brief, rules)
    if brief.decided:
        await call.say("review_already_decided")
        return ReviewEnd.ALREADY_DECIDED
    # A coordinator who knows the menu may press its key at any moment (barge-in).
    early = await call.say("review_intro")
    replay = True
    while True:
        if replay and not _is_menu_key(early):
            early = await play_message(call, desk, brief, rules)
        replay = False
        key = early if _is_menu_key(early) else await choose(call, "review_menu", MENU_KEYS, rules.key_timeout_s)
        early = None
        if key is None:
            await call.say("review_no_decision")
            return ReviewEnd.NO_DECISION
        if key == "3":
            replay = True
            continue
        deliver_at: dt.datetime | None = None
        if key == "2":
            deliver_at = await ask_when(call, rules, desk.clock())
            if deliver_at is None:
                continue  # back to the menu
        decision = {"1": Decision.FORWARD_NOW, "2": Decision.FORWARD_LATER, "9": Decision.REJECT}[key]
        decided = await desk.decide(brief.message_id, decision, person_id=brief.person_id,
                                    review_call_id=review_call_id, deliver_at=deliver_at)
        if decided is None:
            await call.say("review_already_decided")
            return ReviewEnd.ALREADY_DECIDED
        after.decided(decided)
        if decision is Decision.FORWARD_NOW:
            await call.say("review_forwarded_now")
        elif decision is Decision.REJECT:
            await call.say("review_rejected")
        else:
            assert deliver_at is not None
            local = deliver_at.astimezone(rules.tz)
            await call.say("review_forwarded_later", hour=local.hour, minute=local.minute)
        return ReviewEnd(decision.value)


async def notice(call: Call, desk: ReviewDesk, brief: ReviewBrief, rules: ReviewRules) -> ReviewEnd:
    """One-level BIN: the coordinator is told the message went out; 1 plays it now (audited)."""
    key = await call.say("notice_sent_to_members", bin=brief.bin_number, name=brief.bin_name)
    if key != "1":
        key = await call.ask("notice_replay_offer", rules.key_timeout_s)
    if key == "1":
        await play_message(call, desk, brief, rules)
    await call.say("notice_goodbye")
    return ReviewEnd.NOTICE_HEARD


async def second_approval(call: Call, desk: ReviewDesk, brief: ReviewBrief, rules: ReviewRules,
                          after: AfterDecision) -> ReviewEnd:
    """A second police officer approves (1), replays (2) or rejects (3) an urgent message without review;
    the store checks who they are (not the author, an officer of the zone) before anything changes.

    An approval is of what was heard: a 1 counts only once the recording has started in this call; a
    1 pressed before (in the intro or the header) plays the recording first."""
    if not brief.awaiting_approval:
        await call.say("review_already_decided")
        return ReviewEnd.ALREADY_DECIDED
    key = await call.say("approval_intro", bin=brief.bin_number, name=brief.bin_name)
    heard = False
    while True:
        if key not in ("1", "3"):  # nothing pressed yet, another key, or 2 (listen again)
            key, started = await _header_and_recording(call, desk, brief, rules)
            heard = heard or started
        if key == "1" and not heard:
            # Approving is sending it to every member: not before they heard it (the key asked again after).
            key = await _recording(call, desk, brief)
            heard = True
        if key not in ("1", "2", "3"):
            key = await choose(call, "approval_menu", "123", rules.key_timeout_s)
        if key is None:
            await call.say("review_no_decision")
            return ReviewEnd.NO_DECISION
        if key == "2":
            continue
        decided = await desk.second_decision(brief.review_call_id, brief.person_id, approve=key == "1")
        if decided is None:
            await call.say("review_already_decided")
            return ReviewEnd.ALREADY_DECIDED
        after.decided(decided)
        if key == "1":
            await call.say("review_forwarded_now")
            return ReviewEnd.APPROVED
        await call.say("review_rejected")
        return ReviewEnd.REJECT


async def police_told(call: Call, brief: ReviewBrief, rules: ReviewRules) -> ReviewEnd:
    """The author (or the zone's police) hears that nobody reviewed, or nobody approved, the message."""
    for _ in range(2):  # once, and once more on 1
        if brief.awaiting_approval:
            await call.say("escalation_not_approved", bin=brief.bin_number)
        else:
            await call.say("escalation_not_reviewed", bin=brief.bin_number, rounds=brief.rounds)
        if await call.ask("escalation_repeat_offer", rules.key_timeout_s) != "1":
            break
    await call.say("notice_goodbye")
    return ReviewEnd.POLICE_TOLD


async def play_message(call: Call, desk: ReviewDesk, brief: ReviewBrief, rules: ReviewRules) -> str | None:
    """The short header, then the original recording (its playing is audited); a key stops them."""
    return (await _header_and_recording(call, desk, brief, rules))[0]


async def _header_and_recording(call: Call, desk: ReviewDesk, brief: ReviewBrief,
                                rules: ReviewRules) -> tuple[str | None, bool]:
    """``play_message``, and whether the recording started (a key in the header stops before it)."""
    spoken = brief.spoken_at.astimezone(rules.tz)
    word = text("word_urgent" if brief.urgent else "word_preventive", call.language)
    key = await call.say("review_header", urgency=word, zone=brief.zone_name, hour=spoken.hour,
                         minute=spoken.minute, bin=brief.bin_name)
    if key is not None:
        return key, False
    return await _recording(call, desk, brief), True


async def _recording(call: Call, desk: ReviewDesk, brief: ReviewBrief) -> str | None:
    """The original recording alone (its playing is audited first); a key stops it."""
    # On an approval call the desk notes that it played: only then may that call approve.
    recording = await desk.recording_to_play(brief.message_id, f"person:{brief.person_id}",
                                             review_call_id=brief.review_call_id if brief.purpose == APPROVAL else None)
    return await call.play_audio(recording)


async def ask_when(call: Call, rules: ReviewRules, now: dt.datetime) -> dt.datetime | None:
    """Minutes then #, or HHMM; asked again after a wrong time. Returns UTC, or ``None``."""
    for _ in range(3):
        digits = await call.read_digits("review_later_ask", max_digits=4, timeout_s=rules.key_timeout_s)
        if digits:
            at = parse_later(digits, now.astimezone(rules.tz))
            if at is not None:
                return at.astimezone(dt.timezone.utc)
        await call.say("review_later_invalid")
    return None
