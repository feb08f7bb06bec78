"""How each member is reached in writing: their channels, numbers, e-mail and opt-outs, as the copies'
plan and the SMS replies read them (issue 17)."""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain.channels import Contact, InvalidChannels, parse_channels
from ivr.domain.vocabulary import Channel, PhoneRank
from storage.models import Person, PhoneNumber

log = logging.getLogger(__name__)


def load_contacts(s: Session, person_ids: Collection[int]) -> dict[int, Contact]:
    """What the channel decisions need of each person: their choice, numbers (primary first), e-mail
    and opt-outs. A stored choice that cannot be read counts as none (the zone's default), logged."""
    ids = list(person_ids)
    phones: dict[int, list[tuple[int, str]]] = {}
    for pid, rank, e164 in s.execute(select(PhoneNumber.person_id, PhoneNumber.rank, PhoneNumber.e164)
                                     .where(PhoneNumber.person_id.in_(ids))):
        phones.setdefault(pid, []).append((0 if rank is PhoneRank.PRIMARY else 1, e164))
    out: dict[int, Contact] = {}
    for row in s.execute(select(Person.id, Person.channels, Person.email, Person.calls_opt_out_at,
                                Person.sms_opt_out_at, Person.email_opt_out_at).where(Person.id.in_(ids))):
        chosen = None
        if row.channels:
            try:
                chosen = parse_channels(row.channels)
            except InvalidChannels:
                log.warning("person %d: stored channels %r cannot be read: the zone's default is used",
                            row.id, row.channels)
        out[row.id] = Contact(row.id, chosen, tuple(e164 for _, e164 in sorted(phones.get(row.id, []))), row.email,
                              row.calls_opt_out_at is not None, row.sms_opt_out_at is not None,
                              row.email_opt_out_at is not None)
    return out


def written_address(contact: Contact, channel: Channel) -> str | None:
    """Where a copy on ``channel`` goes to now (``None``: nowhere, or the member opted out of it)."""
    if channel is Channel.SMS:
        return None if contact.sms_opted_out else contact.sms_number
    if channel is Channel.EMAIL:
        return None if contact.email_opted_out else contact.email
    return None
