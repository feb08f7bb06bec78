"""Typed events parsed from AMI messages. Raw header names never leave ``ivr.telephony``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union


@dataclass(frozen=True)
class FullyBooted:
    """Asterisk has finished booting (sent after every login, so after every reconnect too)."""


@dataclass(frozen=True)
class ChannelHungUp:
    """A channel ended; ``cause`` is the Q.850 hang-up cause (16 normal, 17 busy, 19 no answer...)."""

    channel_id: str
    channel: str
    cause: int
    cause_text: str


@dataclass(frozen=True)
class DtmfReceived:
    """A key pressed on a channel (``direction`` is Received or Sent, from the channel's view)."""

    channel_id: str
    channel: str
    digit: str
    direction: str
    duration_ms: int


@dataclass(frozen=True)
class UserEventReceived:
    """A ``UserEvent()`` raised by our dialplan."""

    name: str
    channel_id: str
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrunkRegistration:
    """An outbound SIP registration changed state (``Registry`` event): ``status`` is Registered,
    Unregistered, Rejected or Failed (Asterisk's words); ``cause`` the SIP response, if it says one."""

    domain: str
    username: str
    status: str
    cause: str = ""

    @property
    def registered(self) -> bool:
        """True when the carrier accepted the registration."""
        return self.status.lower() == "registered"


@dataclass(frozen=True)
class OriginateResult:
    """The outcome of an asynchronous Originate.

    ``reason`` is the last call-progress frame Asterisk read before giving up or answering:
    0 failed before any progress, 1 hung up, 3 ringing (then timed out), 4 answered, 5 busy,
    8 congestion. ``cause`` is the channel's hang-up cause when one was seen.
    """

    channel_id: str
    success: bool
    reason: int
    cause: int | None = None


AmiEvent = Union[FullyBooted, ChannelHungUp, DtmfReceived, UserEventReceived, TrunkRegistration]


def _int(value: object, default: int = 0) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def parse_event(headers: Mapping[str, str]) -> AmiEvent | None:
    """Turn the headers of one AMI event into a typed event, or ``None`` if we don't use it.

    ``headers`` must be case-insensitive (panoramisk's Message is).
    """
    name = str(headers.get("Event", ""))
    if name == "FullyBooted":
        return FullyBooted()
    if name == "Hangup":
        return ChannelHungUp(
            channel_id=str(headers.get("Uniqueid", "")),
            channel=str(headers.get("Channel", "")),
            cause=_int(headers.get("Cause")),
            cause_text=str(headers.get("Cause-txt", "")),
        )
    if name == "DTMFEnd":
        return DtmfReceived(
            channel_id=str(headers.get("Uniqueid", "")),
            channel=str(headers.get("Channel", "")),
            digit=str(headers.get("Digit", "")),
            direction=str(headers.get("Direction", "")),
            duration_ms=_int(headers.get("DurationMs")),
        )
    if name == "Registry":
        return TrunkRegistration(
            domain=str(headers.get("Domain", "")),
            username=str(headers.get("Username", "")),
            status=str(headers.get("Status", "")),
            cause=str(headers.get("Cause", "")),
        )
    if name == "UserEvent":
        skip = {"event", "userevent", "uniqueid", "privilege", "timestamp"}
        return UserEventReceived(
            name=str(headers.get("UserEvent", "")),
            channel_id=str(headers.get("Uniqueid", "")),
            fields={str(k): str(v) for k, v in headers.items() if str(k).lower() not in skip},
        )
    return None
