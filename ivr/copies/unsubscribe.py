"""Unsubscribing from e-mail copies: what the link in every copy (``ivr.copies.email``) does.

Rules:
- unsubscribing sets ``Person.email_opt_out_at`` once, cancels the member's queued e-mail copies (a copy
  the sender has already taken is left to finish) and is audited, all in the caller's transaction;
- it is idempotent: a second unsubscribe sets nothing again and is audited only when it cancelled a copy;
- what the page is shown of a member is nothing personal: the link may have been forwarded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from ivr.domain.vocabulary import Channel, CopyStatus
from storage import audit
from storage.models import Person, TextCopy

#: The audit actor of an unsubscribe (the link in the e-mail is the member's authority, not a sign-in).
UNSUBSCRIBE_ACTOR = "member (unsubscribe link)"


@dataclass(frozen=True)
class Subscription:
    """What the unsubscribe page shows of a member (nothing personal: the link may be forwarded)."""

    person_id: int
    language: str
    #: When they unsubscribed (``None``: e-mail copies still go to them).
    opted_out_at: dt.datetime | None


def subscription(s: Session, person_id: int) -> Subscription | None:
    """The e-mail subscription of ``person_id`` (``None``: no such person)."""
    person = s.get(Person, person_id)
    if person is None:
        return None
    return Subscription(person.id, person.language.value, person.email_opt_out_at)


@dataclass(frozen=True)
class Unsubscribed:
    """What an unsubscribe did."""

    person_id: int
    #: ``False``: the member had already unsubscribed (nothing set again).
    newly: bool
    #: Queued e-mail copies cancelled now.
    cancelled: int


def unsubscribe_email(s: Session, person_id: int, now: dt.datetime, via: str,
                      actor: str = UNSUBSCRIBE_ACTOR) -> Unsubscribed | None:
    """The member stops e-mail copies: ``email_opt_out_at`` set once, their queued e-mail copies
    cancelled, one audit row (``member.email_opt_out``, with ``via``: ``page``, ``one-click``, ``mail``)
    when anything changed. ``None``: no such person."""
    person = s.get(Person, person_id)
    if person is None:
        return None
    newly = person.email_opt_out_at is None
    if newly:
        person.email_opt_out_at = now
    # One conditional UPDATE: a copy the sender has already taken (SENDING) is left to finish.
    result = s.execute(update(TextCopy)
                       .where(TextCopy.person_id == person_id, TextCopy.channel == Channel.EMAIL,
                              TextCopy.status == CopyStatus.QUEUED)
                       .values(status=CopyStatus.CANCELLED, failed_at=now, detail="member unsubscribed from e-mail")
                       .execution_options(synchronize_session=False))
    cancelled = int(getattr(result, "rowcount", 0) or 0)
    if newly or cancelled:
        audit.record(s, actor, "member.email_opt_out", f"person:{person_id}", via=via, cancelled=cancelled,
                     again=not newly)
    return Unsubscribed(person_id, newly, cancelled)
