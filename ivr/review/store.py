"""The review's database side: who to call, each review call, and the decision.

Rules:
- each review call is written before it is dialled (its id is the Originate ChannelId), its dial
  outcome and its end as soon as known;
- one decision per message (a unique row): two coordinators pressing 1 at once make one decision;
- when to deliver is the message's own ``deliver_at`` (the decision row records who and how, not when);
- a message moves only along ``ivr.domain.message.TRANSITIONS``; every decision is audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.domain.message import check_transition
from ivr.police_line.store import open_take
from storage import audit
from storage.db import Desk
from storage.models import Message, Person, PhoneNumber, ReviewCall, ReviewDecision, RoleAssignment, utcnow
from ivr.domain.vocabulary import (
    AttemptStatus, Decision, Escalation, MessageStatus, PhoneRank, ReviewMode, Role, Urgency,
)
from storage.recordings import RecordingStore


@dataclass(frozen=True)
class Contact:
    """Someone the system calls about a message."""

    person_id: int
    e164: str
    role: Role


@dataclass(frozen=True)
class ReviewPlan:
    """Everything a review round needs to know."""

    message_id: int
    urgent: bool
    parallel: bool
    escalation: Escalation
    coordinators: tuple[Contact, ...]
    approvers: tuple[Contact, ...]
    status: MessageStatus
    decided: bool
    next_round: int


@dataclass(frozen=True)
class ReviewBrief:
    """What a coordinator hears about a message, and whether somebody already decided."""

    review_call_id: str
    message_id: int
    person_id: int
    language: str
    urgent: bool
    zone_name: str
    bin_number: int
    bin_name: str
    spoken_at: dt.datetime
    decided: bool


@dataclass(frozen=True)
class Decided:
    """A decision that was stored: what, and when to deliver (``None``: never, the message was rejected)."""

    message_id: int
    decision: Decision
    deliver_at: dt.datetime | None


class AfterDecision(Protocol):
    """What follows a stored decision (the chain: delivery now, or its alarm)."""

    def decided(self, decided: Decided) -> None:
        """``decided`` was stored."""


class ReviewDesk(Desk):
    """The database side of coordinator review."""

    def __init__(self, engine: Engine, store: RecordingStore, *,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        super().__init__(engine)
        self.store = store
        self.clock = clock

    async def review_plan(self, message_id: int) -> ReviewPlan:
        """Who to call about ``message_id``, how, and what the zone does if nobody decides."""
        def work(s: Session) -> ReviewPlan:
            message = s.get_one(Message, message_id)
            zone = message.bin.zone

            def contacts(role: Role, **where: int) -> tuple[Contact, ...]:
                query = (select(Person.id, PhoneNumber.e164).join(RoleAssignment).join(PhoneNumber)
                         .where(RoleAssignment.role == role, Person.active.is_(True),
                                PhoneNumber.rank == PhoneRank.PRIMARY)
                         .order_by(RoleAssignment.priority, Person.id))
                for column, value in where.items():
                    query = query.where(getattr(RoleAssignment, column) == value)
                return tuple(Contact(pid, e164, role) for pid, e164 in s.execute(query).all())

            rounds = s.scalar(select(func.max(ReviewCall.round)).where(ReviewCall.message_id == message_id)) or 0
            decided = s.scalar(select(ReviewDecision.id).where(ReviewDecision.message_id == message_id))
            return ReviewPlan(
                message_id=message_id, urgent=message.urgency is Urgency.URGENT,
                parallel=zone.review_mode is ReviewMode.PARALLEL, escalation=zone.urgent_escalation,
                coordinators=contacts(Role.COORDINATOR, bin_id=message.bin_id),
                approvers=contacts(Role.POLICE_APPROVER, zone_id=zone.id),
                status=message.status, decided=decided is not None, next_round=rounds + 1)
        return await self.tx(work)

    async def to_coordinators(self, message_id: int) -> None:
        """The message is with the coordinators (from recorded; unchanged if already there)."""
        def work(s: Session) -> None:
            message = s.get_one(Message, message_id)
            if message.status is MessageStatus.RECORDED:
                message.status = MessageStatus.WITH_COORDINATORS
                audit.record(s, "system", "message.to_coordinators", f"message:{message_id}")
        await self.tx(work)

    async def new_review_call(self, message_id: int, contact: Contact, round_no: int) -> str:
        """Write the review call before it is dialled; its id becomes the Originate ChannelId."""
        def work(s: Session) -> str:
            call = ReviewCall(message_id=message_id, person_id=contact.person_id, e164=contact.e164,
                              round=round_no, role=contact.role, status=AttemptStatus.DIALING,
                              dialled_at=self.clock())
            s.add(call)
            s.flush()
            return call.id
        return await self.tx(work)

    async def review_call_dialled(self, review_call_id: str, outcome: str, cause: int | None) -> None:
        """How dialling the coordinator ended."""
        def work(s: Session) -> None:
            s.get_one(ReviewCall, review_call_id).mark_dialled(outcome, cause, self.clock())
        await self.tx(work)

    async def review_call_ended(self, review_call_id: str) -> None:
        """The coordinator's call is over."""
        def work(s: Session) -> None:
            s.get_one(ReviewCall, review_call_id).mark_ended(self.clock())
        await self.tx(work)

    async def brief(self, review_call_id: str) -> ReviewBrief:
        """The coordinator answered: what they are told about the message."""
        def work(s: Session) -> ReviewBrief:
            call = s.get_one(ReviewCall, review_call_id)
            call.mark_answered(self.clock())
            message = s.get_one(Message, call.message_id)
            person = s.get_one(Person, call.person_id)
            decided = s.scalar(select(ReviewDecision.id).where(ReviewDecision.message_id == message.id))
            return ReviewBrief(
                review_call_id=review_call_id, message_id=message.id, person_id=person.id,
                language=person.language.value, urgent=message.urgency is Urgency.URGENT,
                zone_name=message.bin.zone.name, bin_number=message.bin.number, bin_name=message.bin.name,
                spoken_at=message.submitted_at or message.created_at, decided=decided is not None)
        return await self.tx(work)

    async def decide(self, message_id: int, decision: Decision, *, person_id: int | None,
                     review_call_id: str | None, deliver_at: dt.datetime | None = None,
                     via: str = "phone") -> Decided | None:
        """Store the decision; ``None`` if somebody else decided first (nothing is changed then)."""
        def work(s: Session) -> dt.datetime | None | bool:
            message = s.get_one(Message, message_id)
            if s.scalar(select(ReviewDecision.id).where(ReviewDecision.message_id == message_id)) is not None:
                return False
            now = self.clock()
            at = deliver_at if decision is Decision.FORWARD_LATER else (now if decision is Decision.FORWARD_NOW
                                                                         else None)
            s.add(ReviewDecision(message_id=message_id, person_id=person_id, review_call_id=review_call_id,
                                 decision=decision, via=via, decided_at=now))
            new = MessageStatus.REJECTED if decision is Decision.REJECT else MessageStatus.APPROVED
            check_transition(message.status, new)
            message.status = new
            message.deliver_at = at
            audit.record(s, f"person:{person_id}" if person_id else "system", f"message.{decision.value}",
                         f"message:{message_id}", via=via, deliver_at=at.isoformat() if at else None)
            s.flush()
            return at
        try:
            result = await self.tx(work)
        except IntegrityError:
            return None  # two coordinators at once: the unique decision row let only one through
        if result is False:
            return None
        return Decided(message_id, decision, result if isinstance(result, dt.datetime) else None)

    async def recording_to_play(self, message_id: int, actor: str, take: int | None = None) -> Path:
        """The message's original recording, checksum verified; the access is audited first."""
        return await self.tx(lambda s: open_take(s, self.store, message_id, actor, take))
