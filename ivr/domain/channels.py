"""Which channels reach a member, which written copies they get, and when the contact ladder sends one.

Pure decisions (issue 17): no I/O. The rules:
- a member's channels are their own choice (``Person.channels``), else the zone's default for the
  message's urgency (the police circular: urgent -> call + SMS, preventive -> call + e-mail);
- an opt-out removes its channel whatever was chosen (calls on the BIN call-back line, SMS by
  "STOP", e-mail by List-Unsubscribe); "text only" is a choice without ``voice``;
- an SMS goes to the member's first mobile number, an e-mail to their address; a channel without
  an address gives no copy;
- copies by choice (and a text-only member's) go when the campaign starts; the ladder's SMS goes to a
  member who is called and has not confirmed ``after_s`` after their calls are over.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from ivr.domain.phone import is_mobile
from ivr.domain.vocabulary import Channel, CopyReason, Urgency

#: The order channels are written in ("voice+sms+email").
ORDER = (Channel.VOICE, Channel.SMS, Channel.EMAIL)
#: Words accepted for a choice besides the channel names: "text" is a text-only member's choice.
ALIASES: dict[str, frozenset[Channel]] = {
    "text": frozenset({Channel.SMS, Channel.EMAIL}),
    "call": frozenset({Channel.VOICE}),
    "e-mail": frozenset({Channel.EMAIL}),
    "mail": frozenset({Channel.EMAIL}),
}
#: The police circular's defaults, per urgency (a zone may set its own).
CIRCULAR_DEFAULTS: dict[Urgency, frozenset[Channel]] = {
    Urgency.URGENT: frozenset({Channel.VOICE, Channel.SMS}),
    Urgency.PREVENTIVE: frozenset({Channel.VOICE, Channel.EMAIL}),
}

_SPLIT = re.compile(r"[+,;\s/]+")
#: A plausible e-mail address (the relay has the last word): one @, a dot in the domain, no spaces.
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$")


class InvalidChannels(ValueError):
    """A channel choice that cannot be read; the message says why and what is accepted."""


def parse_channels(text: str) -> frozenset[Channel]:
    """A channel choice as written ("voice+sms", "sms, email", "text" for text only), or ``InvalidChannels``."""
    words = [w for w in _SPLIT.split(text.strip().lower()) if w]
    if not words:
        raise InvalidChannels("no channel given: write voice, sms, email (joined by +) or text")
    chosen: set[Channel] = set()
    for word in words:
        if word in ALIASES:
            chosen |= ALIASES[word]
            continue
        try:
            chosen.add(Channel(word))
        except ValueError:
            raise InvalidChannels(f"{word!r} is not a channel: write voice, sms, email (joined by +) or text") from None
    return frozenset(chosen)


def format_channels(channels: frozenset[Channel]) -> str:
    """A channel set as stored and shown ("voice+sms")."""
    return "+".join(c.value for c in ORDER if c in channels)


def check_email(address: str) -> str:
    """An e-mail address, trimmed (the domain lower-cased), or ``ValueError`` saying why it is none."""
    value = address.strip()
    if not _EMAIL.match(value) or len(value) > 254:
        raise ValueError(f"{address.strip()!r} is not an e-mail address (name@example.be)")
    local, domain = value.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def mask_email(address: str) -> str:
    """An e-mail address with all of the name but its first letter hidden (for lists, logs and audit rows)."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"


@dataclass(frozen=True)
class Contact:
    """What the decisions need to know of one member."""

    person_id: int
    #: The member's own choice (``None``: the zone's default for the urgency).
    chosen: frozenset[Channel] | None
    numbers: tuple[str, ...]
    email: str | None
    calls_opted_out: bool = False
    sms_opted_out: bool = False
    email_opted_out: bool = False

    @property
    def sms_number(self) -> str | None:
        """Where an SMS goes: the first mobile number (``None``: no mobile)."""
        return next((n for n in self.numbers if is_mobile(n)), None)


def zone_defaults(urgent: str | None, preventive: str | None, settings_urgent: str,
                  settings_preventive: str) -> dict[Urgency, frozenset[Channel]]:
    """The default channels per urgency: the zone's own, else the settings'."""
    return {Urgency.URGENT: parse_channels(urgent or settings_urgent),
            Urgency.PREVENTIVE: parse_channels(preventive or settings_preventive)}


def channels_for(contact: Contact, urgency: Urgency, defaults: dict[Urgency, frozenset[Channel]]) -> frozenset[Channel]:
    """The channels that reach ``contact`` for a message of ``urgency``: the choice (or the default),
    less what they opted out of, less what they have no address for."""
    chosen = set(contact.chosen if contact.chosen is not None else defaults[urgency])
    if contact.calls_opted_out or not contact.numbers:
        chosen.discard(Channel.VOICE)
    if contact.sms_opted_out or contact.sms_number is None:
        chosen.discard(Channel.SMS)
    if contact.email_opted_out or not contact.email:
        chosen.discard(Channel.EMAIL)
    return frozenset(chosen)


def is_called(contact: Contact, urgency: Urgency, defaults: dict[Urgency, frozenset[Channel]]) -> bool:
    """Whether the dialer calls this member for a message of ``urgency``."""
    return Channel.VOICE in channels_for(contact, urgency, defaults)


def copies_at_start(contact: Contact, urgency: Urgency,
                    defaults: dict[Urgency, frozenset[Channel]]) -> list[tuple[Channel, CopyReason, str]]:
    """The written copies that go when the campaign starts: (channel, why, address)."""
    channels = channels_for(contact, urgency, defaults)
    reason = CopyReason.CHOICE if Channel.VOICE in channels else CopyReason.TEXT_ONLY
    out: list[tuple[Channel, CopyReason, str]] = []
    if Channel.SMS in channels and contact.sms_number:
        out.append((Channel.SMS, reason, contact.sms_number))
    if Channel.EMAIL in channels and contact.email:
        out.append((Channel.EMAIL, reason, contact.email))
    return out


@dataclass(frozen=True)
class LadderRules:
    """The contact ladder of a zone: on or off, and how long after the last call."""

    sms: bool
    after_s: float


def ladder_due(rules: LadderRules, contact: Contact, *, called: bool, confirmed: bool, calls_over: bool,
               last_call_ended: dt.datetime | None, has_sms_copy: bool) -> dt.datetime | None:
    """When the ladder's SMS copy falls due for this member (``None``: it never does).

    It does for a member who was called, has not confirmed, whose calls are over (every retry
    spent), has a mobile number and no SMS copy yet: ``after_s`` after their last call ended."""
    if not rules.sms or not called or confirmed or not calls_over or has_sms_copy:
        return None
    if contact.sms_opted_out or contact.sms_number is None or last_call_ended is None:
        return None
    return last_call_ended + dt.timedelta(seconds=rules.after_s)


#: What a member's SMS reply means: "1"/"OK"/"JA"/"OUI" confirms, "STOP" opts out, "START" back in.
_CONFIRM = {"1", "ok", "oké", "oke", "okay", "ja", "oui", "yes"}
_STOP = {"stop", "stopp", "arret", "arrêt", "stopall", "unsubscribe", "uitschrijven"}
_START = {"start", "unstop", "aan"}


def reply_action(text: str) -> str:
    """``confirm``, ``stop``, ``start`` or ``unknown`` for the text of a member's SMS reply (its first word)."""
    words = text.strip().lower().split()
    first = words[0].strip(".!,") if words else ""
    if first in _CONFIRM:
        return "confirm"
    if first in _STOP:
        return "stop"
    if first in _START:
        return "start"
    return "unknown"
