"""A coordinator calls the report line: "27 of the 31 members have confirmed" for their BIN's
latest message, which they may then hear (a one-level BIN's notice call sends them here).

  system: "27 van de 31 leden hebben bevestigd."
  system: "Toets 1 om het laatste bericht te beluisteren."       coordinator: 1
  system: "Dit is een dringend BIN-bericht van de politie." + the original recording
  system: "Toets 1 om het laatste bericht te beluisteren."       coordinator: (nothing)
  system: "Toets 9 om het versturen te stoppen."                 (while it is sent, with a PIN)
  system: "Tot ziens."

Only coordinators (by caller ID) hear counts. The caller ID can be spoofed: calls are
rate-limited per caller ID and per line (``ivr.delivery.line_limits``), the counts heard are audited
as told to an unverified caller, and a number that is no coordinator's, a caller or line over its
limits and a BIN without a campaign all hear the same "no message sent yet": nothing to enumerate.

While the BIN's latest campaign runs, a coordinator who has a PIN is offered to stop it ("toets 9"),
confirms with 1, then types their PIN (the caller ID alone could be spoofed: the PIN is checked and
locked out like every PIN line). Without PIN rules (``pins``) the offer is not made.

The replay is the recording the members got (the submitted take), announced by the members' own
header: a drill's says it is a test, so nobody takes it for a real alert. Every play is audited
(``recording.played``) before it starts and checks again that the caller coordinates the BIN
(``DeliveryDesk.replay_for_coordinator``). A coordinator who hangs up after the counts was told
them: the call ends as told."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace

from ivr.delivery.control import stop_with_pin
from ivr.delivery.policy import member_prompts
from ivr.delivery.line_limits import LineLimits
from ivr.delivery.lines_store import CoordinatorReport, ReplayRefused
from ivr.delivery.store import DeliveryDesk
from ivr.directory.pin_gate import PinRules, pin_key
from ivr.domain.phone import caller_e164
from ivr.telephony.call import Call, CallHungUp
from storage.recordings import RecordingCorrupted

log = logging.getLogger(__name__)


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
    #: The coordinator stopped the campaign on this call.
    stopped: bool = False

    @property
    def value(self) -> str:
        """The end as logs and ``flow_ends`` have always said it: "27/31" when told, else the end's value."""
        return f"{self.confirmed}/{self.members}" if self.end is ReportEnd.TOLD else self.end.value

    def __str__(self) -> str:
        return self.value  # logged as before: "27/31"


#: How a call without counts ended; the caller heard the same words in each case.
_NO_COUNTS = {"unknown": ReportEnd.UNKNOWN_CALLER, None: ReportEnd.NO_CAMPAIGN, "limited": ReportEnd.LIMITED}


#: How long the coordinator has to press a key after each question.
KEY_TIMEOUT_S = 6.0
#: Longest PIN the line reads (``#`` ends it sooner).
PIN_DIGITS = 12
#: How often one call may play the message (then the call goes on to the stop offer).
MAX_REPLAYS = 3


async def coordinator_report(call: Call, desk: DeliveryDesk, limits: LineLimits = LineLimits(),
                             pins: PinRules | None = None) -> ReportHeard:
    """The report-line conversation; returns how it ended."""
    caller = caller_e164(call.caller_id) or pin_key(call.caller_id)  # a hidden number is counted too
    found = await desk.report_for_coordinator(caller, limits)
    if not isinstance(found, CoordinatorReport):
        await call.say("report_no_campaign")
        await call.hangup()
        return ReportHeard(_NO_COUNTS[found])
    call.language = found.language
    await call.say("report_counts", confirmed=found.confirmed, members=found.members)
    told = ReportHeard(ReportEnd.TOLD, found.confirmed, found.members)
    try:
        await _offer_replay(call, desk, found)
        stopped = pins is not None and await _offer_stop(call, desk, caller, pins)
        await call.say("member_goodbye")
        await call.hangup()
    except CallHungUp:
        return told  # the counts were heard (a stop made before the hang-up is in the audit)
    return replace(told, stopped=stopped)


async def _offer_replay(call: Call, desk: DeliveryDesk, report: CoordinatorReport) -> None:
    """"Toets 1 om het laatste bericht te beluisteren": the message as the members hear it, again on 1."""
    header = member_prompts(report.urgent, report.drill)["BINFOON_HEADER"]
    for _ in range(MAX_REPLAYS):
        if await call.ask("report_replay_offer", KEY_TIMEOUT_S) != "1":
            return
        try:
            recording = await desk.replay_for_coordinator(report.person_id, report.message_id)
        except (ReplayRefused, LookupError, RecordingCorrupted) as exc:
            # Rights withdrawn since the counts, or the file is gone or altered (an alert is raised):
            # say so, and still offer the stop.
            log.warning("report line: message %d not replayed to person %d: %s", report.message_id,
                        report.person_id, exc)
            await call.say("report_replay_unavailable")
            return
        await call.say(header)  # "dit is een test" before a drill's recording
        await call.play_audio(recording)


async def _offer_stop(call: Call, desk: DeliveryDesk, caller: str, pins: PinRules) -> bool:
    """"Toets 9 om het versturen te stoppen": 9, then 1 to confirm, then the PIN. True if stopped."""
    campaign_id = await desk.stoppable_for_coordinator(caller)
    if campaign_id is None:
        return False
    if await call.ask("report_stop_offer", KEY_TIMEOUT_S) != "9":
        return False
    if await call.ask("report_stop_confirm", KEY_TIMEOUT_S) != "1":
        await call.say("report_not_stopped")
        return False
    pin = await call.read_digits("report_stop_pin", PIN_DIGITS, KEY_TIMEOUT_S)
    stopped = bool(pin) and await desk.tx(lambda s: stop_with_pin(s, caller, campaign_id, pin or "", pins,
                                                                  desk.clock()))
    await call.say("report_stopped" if stopped else "report_not_stopped")
    return stopped
