"""Placing an outbound call: the dial template, our caller ID, and an exact outcome.

Rule: every Originate passes ``AmiDialer.dial``, and a number the destination policy refuses
(``ivr.domain.destinations``: premium, satellite, outside the allowed countries) is never handed to
Asterisk, whoever asked for the call (member, review or test call) and however the number got into
the database: the call ends as ``invalid_number`` with ``barred`` saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Protocol

from ivr.domain.destinations import DEFAULT_DESTINATIONS, DestinationPolicy
from ivr.domain.phone import mask
from ivr.telephony.ami import AmiGateway, AmiUnavailable, OriginateOutcomeUnknown, OriginateRefused
from ivr.telephony.outcomes import DialOutcome, classify_dial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dialled:
    """How dialling ended: answered (the flow runs now) or why not, with the Q.850 cause if known."""

    outcome: DialOutcome
    cause: int | None = None
    #: The call's fate is unknown (AMI went down after the Originate): it may still be up.
    lost: bool = False
    #: Nothing was placed (AMI down before the Originate, or Asterisk refused it): no phone was called.
    refused: bool = False
    #: Why nothing was placed (Asterisk's words), for the log.
    why: str = ""
    #: The destination policy refused the number (why): nothing was placed, and nothing ever will be.
    barred: str = ""


class Dialer(Protocol):
    """What the review and campaign logic need to place a call."""

    async def dial(self, call_id: str, number: str, *, context: str, variables: Mapping[str, str],
                   ring_timeout_s: float, exten: str = "s") -> Dialled:
        """Dial ``number``; when answered, run ``context,exten``. ``call_id`` was persisted before."""

    @property
    def ready(self) -> bool:
        """True when calls can be placed now (the PBX is connected)."""

    async def live_call_ids(self) -> set[str] | None:
        """The ids of the calls (channels) up in the PBX now; ``None`` if the PBX cannot tell."""


class AmiDialer:
    """Dials through AMI Originate with the configured dial template and caller ID."""

    def __init__(self, ami: AmiGateway, dial_template: str, caller_id_number: str, caller_id_name: str,
                 destinations: DestinationPolicy = DEFAULT_DESTINATIONS) -> None:
        self.ami = ami
        self.dial_template = dial_template
        self.destinations = destinations
        if not dial_template.startswith("Local/"):
            # A channel straight to a trunk runs no dialplan before the answer: only the check in
            # ``dial`` stands between a stored number and the carrier (RELIABILITY A6 wants both).
            log.warning("dial_template %r dials the trunk directly: the dialplan's destination check is "
                        "bypassed; use Local/${NUMBER}@binfoon-dial-out", dial_template)
        # The same number and name on every call and retry, so members can save it.
        self.caller_id = f'"{caller_id_name}" <{caller_id_number}>' if caller_id_name else caller_id_number

    @property
    def ready(self) -> bool:
        """True while AMI is logged in."""
        return self.ami.connected

    async def dial(self, call_id: str, number: str, *, context: str, variables: Mapping[str, str],
                   ring_timeout_s: float, exten: str = "s") -> Dialled:
        """Originate and classify; a lost outcome counts as failed (never re-sent blindly). A number the
        destination policy refuses is not originated at all."""
        barred = self.destinations.refusal(number)
        if barred is not None:
            log.warning("call %s to %s not placed: %s", call_id, mask(number), barred)
            return Dialled(DialOutcome.INVALID_NUMBER, barred=barred)
        try:
            result = await self.ami.originate(
                call_id, self.dial_template.replace("${NUMBER}", number), context=context, exten=exten,
                variables=dict(variables), caller_id=self.caller_id, timeout_s=ring_timeout_s)
        except AmiUnavailable:
            log.warning("call %s not placed: AMI is down", call_id)
            return Dialled(DialOutcome.FAILED, refused=True, why="AMI is down")
        except OriginateRefused as exc:
            log.warning("call %s not placed: %s", call_id, exc)
            return Dialled(DialOutcome.FAILED, refused=True, why=str(exc))
        except OriginateOutcomeUnknown as exc:
            log.warning("call %s: outcome lost with the AMI connection (%s)", call_id, exc)
            return Dialled(DialOutcome.FAILED, lost=True)
        return Dialled(classify_dial(result.success, result.reason, result.cause), result.cause)

    async def live_call_ids(self) -> set[str] | None:
        """Uniqueids of the channels up in Asterisk; ``None`` if AMI is down or does not answer."""
        try:
            return await self.ami.live_channel_ids()
        except (AmiUnavailable, TimeoutError, OriginateOutcomeUnknown) as exc:
            log.warning("cannot list Asterisk's channels: %s", exc)
            return None
