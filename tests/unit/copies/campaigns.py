"""Members with channels and a running campaign in the test database, for the copies' fast tests."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

from sqlalchemy import select

from ivr.copies.store import CopyDesk, CopyRules
from ivr.delivery.policy import RetryPolicy
from ivr.domain.vocabulary import (
    AttemptOutcome,
    AttemptStatus,
    CampaignStatus,
    Channel,
    Language,
    MessageKind,
    PhoneRank,
    Role,
    Urgency,
)
from storage.db import session_scope
from storage.models import CallAttempt, Campaign, Message, Person, PhoneNumber, RoleAssignment, TextCopy
from storage.sealed import TranscriptContent, add_transcript
from tests.unit.delivery.sent import Sent, sent_message
from tests.world import World

_numbers = itertools.count(1)


def member(world: World, *, channels: str | None = None, email: str | None = None, mobile: bool = True,
           phone: str | None = None, language: str = "nl", **opt_outs: dt.datetime) -> int:
    """A member of the world's BIN: a mobile (or landline) number of their own, their channels and e-mail."""
    number = phone or (f"+32470{next(_numbers):06d}" if mobile else f"+3292{next(_numbers):06d}")
    with session_scope(world.engine) as s:
        person = Person(name=f"Lid {number}", language=Language(language), channels=channels, email=email,
                        **opt_outs)
        person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=number))
        person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=world.bin_id))
        s.add(person)
        s.flush()
        return person.id


def number_of(world: World, person_id: int) -> str:
    with session_scope(world.engine) as s:
        return s.scalars(select(PhoneNumber.e164).where(PhoneNumber.person_id == person_id)).first() or ""


async def campaign(world: World, tmp_path: Path, *, urgency: Urgency = Urgency.URGENT, text: str | None = None,
                   drill: bool = False, follow_up_of: int | None = None,
                   kind: MessageKind = MessageKind.UPDATE) -> Sent:
    """A sent message of the world's BIN (its recording stored) and its running campaign; with
    ``follow_up_of``, a follow-up of that message (an update, or a retraction: ``CANCELLATION``)."""
    sent = await sent_message(world, tmp_path, urgency=urgency)
    with session_scope(world.engine) as s:
        message = s.get_one(Message, sent.message_id)
        message.text, message.drill = text, drill
        if follow_up_of is not None:
            message.follow_up_of_id, message.kind = follow_up_of, kind
    return sent


def transcribe(world: World, message_id: int, words: str, *, uncertain: bool = False) -> None:
    """The sent take's transcript, sealed as the recogniser stores it."""
    with session_scope(world.engine) as s:
        message = s.get_one(Message, message_id)
        take = next(r for r in message.recordings if r.take == message.submitted_take)
        add_transcript(s, world.desk.store.key(), take.id, TranscriptContent(words), confidence=0.9,
                       model="test", created_at=world.desk.clock(), uncertain=uncertain)


def call(world: World, campaign_id: int, person_id: int, outcome: AttemptOutcome, ended: dt.datetime,
         attempt_no: int = 1) -> None:
    """An attempt that ended with ``outcome`` at ``ended`` (as the dialer stores it)."""
    with session_scope(world.engine) as s:
        e164 = s.scalars(select(PhoneNumber.e164).where(PhoneNumber.person_id == person_id)).first()
        s.add(CallAttempt(campaign_id=campaign_id, person_id=person_id, e164=e164, attempt_no=attempt_no,
                          status=AttemptStatus.ENDED, dial_outcome="no_answer", outcome=outcome,
                          dialled_at=ended - dt.timedelta(seconds=30), ended_at=ended))


def set_campaign(world: World, campaign_id: int, status: CampaignStatus, at: dt.datetime | None = None) -> None:
    with session_scope(world.engine) as s:
        row = s.get_one(Campaign, campaign_id)
        row.status = status
        if status is CampaignStatus.DONE:
            row.finished_at = at
        if status is CampaignStatus.CANCELLED:
            row.stopped_at, row.stopped_by = at, "test"


def copies(world: World, campaign_id: int | None = None) -> dict[tuple[int, Channel], TextCopy]:
    """Every copy (of one campaign), by (member, channel)."""
    with session_scope(world.engine) as s:
        query = select(TextCopy)
        if campaign_id is not None:
            query = query.where(TextCopy.campaign_id == campaign_id)
        return {(c.person_id, c.channel): c for c in s.scalars(query)}


def copy_desk(world: World, **rules: object) -> CopyDesk:
    """The copy desk on the world's database, recordings and clock; no retries (one unanswered call
    ends a member's calls), unless ``policies`` are given."""
    rules.setdefault("policies", {True: RetryPolicy(retries=0, no_key_retries=0),
                                  False: RetryPolicy(retries=0, no_key_retries=0)})
    return CopyDesk(world.engine, world.desk.store, world.desk.clock, CopyRules(**rules))  # type: ignore[arg-type]
