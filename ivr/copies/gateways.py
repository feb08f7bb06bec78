"""The two edges a written copy leaves by, kept behind small interfaces so the sender can be tested
against fakes and against the real Kannel and SMTP server alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class SendFailed(Exception):
    """The hand-over failed for a passing reason (gateway or relay away, busy): tried again later."""


class SendUncertain(Exception):
    """The hand-over may or may not have reached the gateway or relay (a read timeout after the request
    was sent): never retried at once; the copy stays SENDING and is settled like a crash's orphan (an
    SMS waits for Kannel's delivery report, an e-mail is sent again with the same Message-ID)."""


class SendRefused(Exception):
    """The gateway or relay refused this copy for good (a bad number, a mailbox that does not exist):
    recorded as failed or bounced, never tried again. The message is the refusal, cut short."""


@dataclass(frozen=True)
class SmsCopy:
    """One SMS as it is handed to the gateway."""

    #: The copy's id (``TextCopy.id``): Kannel's delivery reports name it, so they map back to the row.
    copy_id: str
    to: str
    sender: str
    text: str
    #: ``True``: the text needs UCS-2 (not all GSM-7); Kannel is told the coding.
    unicode: bool = False


@dataclass(frozen=True)
class EmailCopy:
    """One e-mail as it is handed to the relay."""

    copy_id: str
    to: str
    subject: str
    body: str
    #: The Message-ID (``<copy_id@domain>``): the same on a resend after a crash.
    message_id: str
    attachments: tuple[tuple[str, Path], ...] = ()
    headers: dict[str, str] = field(default_factory=dict)


class SmsGateway(Protocol):
    """Where SMS copies go (Kannel's smsbox in production and in the lab)."""

    async def send(self, sms: SmsCopy) -> str:
        """Hand ``sms`` over; returns the gateway's answer. ``SendFailed`` / ``SendRefused`` /
        ``SendUncertain`` otherwise."""
        ...


class Mailer(Protocol):
    """Where e-mail copies go (the configured SMTP relay)."""

    async def send(self, mail: EmailCopy) -> str:
        """Hand ``mail`` over; returns the relay's answer. ``SendFailed`` / ``SendRefused`` (a bounce) /
        ``SendUncertain`` otherwise."""
        ...
