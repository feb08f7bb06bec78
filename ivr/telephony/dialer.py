"""Placing an outbound call: the dial template, our caller ID, and an exact outcome."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Protocol

from ivr.telephony.ami import AmiGateway, AmiUnavailable, OriginateOutcomeUnknown
from ivr.telephony.outcomes import DialOutcome, classify_dial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dialled:
    """How dialling ended: answered (the flow runs now) or why not, with the Q.850 cause if known."""

    outcome: DialOutcome
    cause: int | None = None
    #: The call's fate is unknown or it never left (AMI went down): retry it, at no cost to the member.
    lost: bool = False


class Dialer(Protocol):
    """What the review and campaign logic need to place a call."""

    async def dial(self, call_id: str, number: str, *, context: str, variables: Mapping[str, str],
                   ring_timeout_s: float, exten: str = "s") -> Dialled:
        """Dial ``number``; when answered, run ``context,exten``. ``call_id`` was persisted before."""

    @property
    def ready(self) -> bool:
        """True when calls can be placed now (the PBX is connected)."""


class AmiDialer:
    """Dials through AMI Originate with the configured dial template and caller ID."""

    def __init__(self, ami: AmiGateway, dial_template: str, caller_id_number: str, caller_id_name: str) -> None:
        self.ami = ami
        self.dial_template = dial_template
        # The same number and name on every call and retry, so members can save it.
        self.caller_id = f'"{caller_id_name}" <{caller_id_number}>' if caller_id_name else caller_id_number

    @property
    def ready(self) -> bool:
        """True while AMI is logged in."""
        return self.ami.connected

    async def dial(self, call_id: str, number: str, *, context: str, variables: Mapping[str, str],
                   ring_timeout_s: float, exten: str = "s") -> Dialled:
        """Originate and classify; a lost outcome counts as failed (never re-sent blindly)."""
        try:
            result = await self.ami.originate(
                call_id, self.dial_template.replace("${NUMBER}", number), context=context, exten=exten,
                variables=dict(variables), caller_id=self.caller_id, timeout_s=ring_timeout_s)
        except AmiUnavailable:
            log.warning("call %s not placed: AMI is down", call_id)
            return Dialled(DialOutcome.FAILED, lost=True)
        except OriginateOutcomeUnknown as exc:
            log.warning("call %s: outcome lost with the AMI connection (%s)", call_id, exc)
            return Dialled(DialOutcome.FAILED, lost=True)
        return Dialled(classify_dial(result.success, result.reason, result.cause), result.cause)
