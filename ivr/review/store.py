"""The review's database side: who to call, each review call, and the decision.

Rules:
- each review call is written before it is dialled (its id is the Originate ChannelId), its dial
  outcome and its end as soon as known;
- one decision per message (a unique row): two coordinators pressing 1 at once make one decision;
- when to deliver is the message's own ``deliver_at`` (the decision row records who and how, not when);
- a message moves only along ``ivr.domain.message.TRANSITIONS``; every decision is audited;
- a message waiting for a second police officer (``AWAITING_APPROVAL``) is decided by that officer
  alone, on an approval call made to them (not its author; a police approver or officer of its zone);
  they approve only after its recording started playing on that call (this process saw it start);
- every call has a purpose (review, notice, approval, escalation), written with it before it is dialled;
- the police "were told" (nobody reviewed, nobody approved) only when an escalation call was answered;
  the audit row saying so is written once, before the first such call;
- a one-level message's coordinators still owed a notice (a crash after the decision) are found from
  the database alone (``pending_notices``), so start-up can call them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.domain.message import check_transition
from ivr.police_line.store import open_take
from storage import audit
from storage.db import Desk
from storage.models import (
    AuditEntry, Bin, Message, Person, PhoneNumber, ReviewCall, ReviewDecision, RoleAssignment, utcnow,
)
from ivr.domain.vocabulary import (
    AttemptStatus, Decision, Escalation, MessageStatus, PhoneRank, ReviewMode, Role, Urgency,
)
from ivr.telephony.outcomes import DialOutcome
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
    #: The BIN is one-level ("1 niveau") and its zone wants a second officer for urgent messages without review.
    one_level: bool = False
    second_approver: bool = False
    #: The zone's own maximum of review rounds (``None``: the setting's).
    zone_max_rounds: int | None = None
    #: Rounds of review calls, and of approval calls, already dialled.
    review_rounds: int = 0
    approval_rounds: int = 0
    #: The police were told that nobody reviewed it / that nobody approved it (an escalation call answered).
    police_told: bool = False
    author_told_unapproved: bool = False
    #: How the decision was made (phone, escalation, one_level, second_approver, ...), if there is one.
    decided_via: str | None = None
    decision: Decision | None = None
    #: Coordinators who already got a notice call (one-level BINs: one notice each, never more).
    noticed: frozenset[int] = frozenset()
    #: Who may be the second police officer: the zone's approvers, then its officers (never the author).
    second_approvers: tuple[Contact, ...] = ()
    #: Who is told when nobody reviewed (or approved): the author, else the zone's approvers, else its officers.
    police_to_tell: tuple[Contact, ...] = ()

    @property
    def notices_due(self) -> tuple[Contact, ...]:
        """The coordinators still to be told that a one-level message went out (none before it did)."""
        went_out = (self.one_level and self.decision is not None and self.decision is not Decision.REJECT
                    and self.decided_via in (ONE_LEVEL, SECOND_APPROVER))
        return tuple(c for c in self.coordinators if c.person_id not in self.noticed) if went_out else ()


#: How a decision was made, in ``review_decisions.via`` (besides phone, escalation, cli, web).
ONE_LEVEL = "one_level"
SECOND_APPROVER = "second_approver"
#: The purposes of a review call (``review_calls.purpose``).
REVIEW, NOTICE, APPROVAL, ESCALATION = "review", "notice", "approval", "escalation"
#: The audit actions that say the police are being told (written once, before the first call).
NOBODY_REVIEWED = "message.nobody_reviewed"
NOBODY_APPROVED = "message.nobody_approved"


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
    #: Why the call was made (review, notice, approval, escalation).
    purpose: str = REVIEW
    #: The message waits for a second police officer's approval.
    awaiting_approval: bool = False
    #: Review rounds dialled for the message (what an escalation call says).
    rounds: int = 0


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
        #: Approval calls on which the recording started playing (an approval must follow a hearing).
        self._heard_on: set[str] = set()

    async def review_plan(self, message_id: int) -> ReviewPlan:
        """Who to call about ``message_id``, how, and what the zone does if nobody decides."""
        return await self.tx(lambda s: plan_of(s, message_id))

    async def to_coordinators(self, message_id: int) -> None:
        """The message is with the coordinators (from recorded; unchanged if already there)."""
        def work(s: Session) -> None:
            message = s.get_one(Message, message_id)
            if message.status is MessageStatus.RECORDED:
                message.status = MessageStatus.WITH_COORDINATORS
                audit.record(s, "system", "message.to_coordinators", f"message:{message_id}")
        await self.tx(work)

    async def new_review_call(self, message_id: int, contact: Contact, round_no: int, purpose: str = REVIEW) -> str:
        """Write the call (review, notice, approval or escalation) before it is dialled; its id becomes
        the Originate ChannelId."""
        if purpose not in (REVIEW, NOTICE, APPROVAL, ESCALATION):
            raise ValueError(f"no such review call purpose: {purpose!r}")

        def work(s: Session) -> str:
            call = ReviewCall(message_id=message_id, person_id=contact.person_id, e164=contact.e164,
                              round=round_no, role=contact.role, status=AttemptStatus.DIALING,
                              dialled_at=self.clock(), purpose=purpose)
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
                spoken_at=message.submitted_at or message.created_at, decided=decided is not None,
                purpose=call.purpose, awaiting_approval=message.status is MessageStatus.AWAITING_APPROVAL,
                rounds=_rounds(s, message.id, REVIEW))
        return await self.tx(work)

    async def decide(self, message_id: int, decision: Decision, *, person_id: int | None,
                     review_call_id: str | None, deliver_at: dt.datetime | None = None,
                     via: str = "phone") -> Decided | None:
        """Store the decision; ``None`` if somebody else decided first (nothing is changed then)."""
        def work(s: Session) -> dt.datetime | None | bool:
            message = s.get_one(Message, message_id)
            if s.scalar(select(ReviewDecision.id).where(ReviewDecision.message_id == message_id)) is not None:
                return False
            if message.status is MessageStatus.AWAITING_APPROVAL:
                return False  # only the second police officer decides it now (``second_decision``)
            if message.status is MessageStatus.CANCELLED:
                return False  # cancelled meanwhile (``ivr.delivery.control.cancel_message``): nothing to decide
            now = self.clock()
            at = deliver_at if decision is Decision.FORWARD_LATER else (now if decision is Decision.FORWARD_NOW
                                                                         else None)
            s.add(ReviewDecision(message_id=message_id, person_id=person_id, review_call_id=review_call_id,
                                 decision=decision, via=via, decided_at=now))
            new = MessageStatus.REJECTED if decision is Decision.REJECT else MessageStatus.APPROVED
            check_transition(message.status, new)
            _move(s, message, new, deliver_at=at)
            audit.record(s, f"person:{person_id}" if person_id else "system", f"message.{decision.value}",
                         f"message:{message_id}", via=via, deliver_at=at.isoformat() if at else None)
            s.flush()
            return at
        try:
            result = await self.tx(work)
        except (IntegrityError, _Moved):
            return None  # two coordinators at once, or a cancel committed meanwhile: nothing is stored
        if result is False:
            return None
        return Decided(message_id, decision, result if isinstance(result, dt.datetime) else None)

    async def await_approval(self, message_id: int, via: str) -> bool:
        """The message would go out without review (``via``: one_level or escalation) and waits for a
        second police officer; False if it was decided or moved meanwhile (nothing is changed then)."""
        def work(s: Session) -> bool:
            message = s.get_one(Message, message_id)
            if message.status is MessageStatus.AWAITING_APPROVAL:
                return True
            decided = s.scalar(select(ReviewDecision.id).where(ReviewDecision.message_id == message_id))
            if decided is not None or message.status not in (MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS):
                return False
            check_transition(message.status, MessageStatus.AWAITING_APPROVAL)
            _move(s, message, MessageStatus.AWAITING_APPROVAL)
            audit.record(s, "system", "message.awaiting_approval", f"message:{message_id}", via=via)
            return True
        try:
            return await self.tx(work)
        except _Moved:
            return False  # cancelled (or decided) meanwhile

    async def second_decision(self, review_call_id: str, person_id: int, approve: bool) -> Decided | None:
        """The second police officer's key on their approval call: approved (delivered now) or rejected.

        ``None`` (nothing changed) unless the call is an approval call made to ``person_id``, who is not
        the author and still a police approver or officer of the message's zone, and the message still
        waits for approval (another officer may have answered first); an approval also needs the
        recording to have started on that call (``recording_to_play(..., review_call_id=...)``)."""
        if approve and review_call_id not in self._heard_on:
            return None  # nobody approves what they did not hear (the flow plays it first)

        def work(s: Session) -> Decided | None:
            call = s.get_one(ReviewCall, review_call_id)
            message = s.get_one(Message, call.message_id)
            if (call.purpose != APPROVAL or call.person_id != person_id or message.created_by_id == person_id
                    or message.status is not MessageStatus.AWAITING_APPROVAL
                    or not _may_second(s, person_id, message.bin.zone_id)):
                return None
            if s.scalar(select(ReviewDecision.id).where(ReviewDecision.message_id == message.id)) is not None:
                return None
            now = self.clock()
            decision = Decision.FORWARD_NOW if approve else Decision.REJECT
            s.add(ReviewDecision(message_id=message.id, person_id=person_id, review_call_id=review_call_id,
                                 decision=decision, via=SECOND_APPROVER, decided_at=now))
            new = MessageStatus.APPROVED if approve else MessageStatus.REJECTED
            check_transition(message.status, new)
            if approve:
                _move(s, message, new, second_approved_by_id=person_id, second_approved_at=now, deliver_at=now)
            else:
                _move(s, message, new)
            audit.record(s, f"person:{person_id}", "message.second_approved" if approve else "message.second_rejected",
                         f"message:{message.id}", review_call=review_call_id)
            s.flush()
            return Decided(message.id, decision, now if approve else None)
        try:
            return await self.tx(work)
        except (IntegrityError, _Moved):
            return None  # two officers at once, or a cancel committed meanwhile: nothing is stored
        finally:
            self._heard_on.discard(review_call_id)  # one key decides per call

    async def police_told(self, message_id: int, action: str, rounds: int, contacts: tuple[Contact, ...]) -> bool:
        """Write that the police are told nobody reviewed (or approved) the message, before they are
        called; once: False (nothing written) if the row exists (a call nobody answered is made again)."""
        if action not in (NOBODY_REVIEWED, NOBODY_APPROVED):
            raise ValueError(f"not an escalation: {action!r}")

        def work(s: Session) -> bool:
            if _told(s, message_id, action):
                return False
            audit.record(s, "system", action, f"message:{message_id}", rounds=rounds,
                         told=[f"person:{c.person_id}" for c in contacts])
            return True
        return await self.tx(work)

    async def pending_notices(self, since: dt.datetime) -> list[int]:
        """The messages decided since ``since`` whose coordinators are owed a notice call: sent without
        review on a one-level BIN (``one_level``, or ``second_approver`` there), not rejected, and a
        coordinator of the BIN without a notice call about it (a crash came between the decision and
        the calls). Oldest decision first."""
        return await self.tx(lambda s: pending_notices(s, since))

    async def recording_to_play(self, message_id: int, actor: str, take: int | None = None, *,
                                review_call_id: str | None = None) -> Path:
        """The message's original recording, checksum verified; the access is audited first. With
        ``review_call_id``: it is played on that call (an approval call may approve from then on)."""
        path = await self.tx(lambda s: open_take(s, self.store, message_id, actor, take))
        if review_call_id is not None:
            self._heard_on.add(review_call_id)
        return path


class _Moved(Exception):
    """The message's status changed since it was read (a cancel from another process committed): the
    transaction is rolled back, decision row and all."""


def _move(s: Session, message: Message, new: MessageStatus, **values: object) -> None:
    """Set ``message``'s status to ``new`` (and ``values``) only if it is still the status read, as
    committed now: SQLite reads outside a write transaction, so a cancel
    (``ivr.delivery.control.cancel_message``) may have committed since; overwriting it by id would
    undo it. ``_Moved`` if so."""
    moved = s.execute(update(Message).where(Message.id == message.id, Message.status == message.status)
                      .values(status=new, **values).execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        raise _Moved
    s.refresh(message)


def _rounds(s: Session, message_id: int, purpose: str) -> int:
    return s.scalar(select(func.count(func.distinct(ReviewCall.round))).where(
        ReviewCall.message_id == message_id, ReviewCall.purpose == purpose)) or 0


def _may_second(s: Session, person_id: int, zone_id: int) -> bool:
    """Is ``person_id`` (active) a police approver or officer of the zone ``zone_id``?"""
    return s.scalar(select(RoleAssignment.id).join(Person).where(
        RoleAssignment.person_id == person_id, Person.active.is_(True), RoleAssignment.zone_id == zone_id,
        RoleAssignment.role.in_((Role.POLICE_APPROVER, Role.POLICE_OFFICER))).limit(1)) is not None


def _told(s: Session, message_id: int, action: str) -> bool:
    """The audit row ``action`` (nobody reviewed / approved) exists for the message."""
    return s.scalar(select(AuditEntry.id).where(AuditEntry.action == action,
                                                AuditEntry.subject == f"message:{message_id}").limit(1)) is not None


def _heard_escalation(s: Session, message_id: int) -> bool:
    """Somebody answered an escalation call about the message: the police were told."""
    return s.scalar(select(ReviewCall.id).where(
        ReviewCall.message_id == message_id, ReviewCall.purpose == ESCALATION,
        ReviewCall.dial_outcome == DialOutcome.ANSWERED.value).limit(1)) is not None


def pending_notices(s: Session, since: dt.datetime) -> list[int]:
    """``ReviewDesk.pending_notices`` in the session ``s``."""
    decided = s.execute(
        select(ReviewDecision.message_id, Message.bin_id).join(Message, Message.id == ReviewDecision.message_id)
        .join(Bin, Bin.id == Message.bin_id)
        .where(Bin.one_level.is_(True), ReviewDecision.via.in_((ONE_LEVEL, SECOND_APPROVER)),
               ReviewDecision.decision != Decision.REJECT, ReviewDecision.decided_at >= since)
        .order_by(ReviewDecision.decided_at, ReviewDecision.message_id)).all()
    owed = []
    for message_id, bin_id in decided:
        # The coordinators a round would call (active, with a primary phone), as ``plan_of`` reads them.
        coordinators = set(s.scalars(
            select(Person.id).join(RoleAssignment).join(PhoneNumber)
            .where(RoleAssignment.role == Role.COORDINATOR, RoleAssignment.bin_id == bin_id,
                   Person.active.is_(True), PhoneNumber.rank == PhoneRank.PRIMARY)))
        noticed = set(s.scalars(select(ReviewCall.person_id).where(
            ReviewCall.message_id == message_id, ReviewCall.purpose == NOTICE)))
        if coordinators - noticed:
            owed.append(message_id)
    return owed


def plan_of(s: Session, message_id: int) -> ReviewPlan:
    """The ``ReviewPlan`` of ``message_id`` read in the session ``s``."""
    message = s.get_one(Message, message_id)
    zone = message.bin.zone

    def contacts(role: Role, **where: int) -> tuple[Contact, ...]:
        query = (select(Person.id, PhoneNumber.e164).join(RoleAssignment).join(PhoneNumber)
                 .where(RoleAssignment.role == role, Person.active.is_(True),
                        PhoneNumber.rank == PhoneRank.PRIMARY)
                 .order_by(RoleAssignment.priority, Person.id))
        for column, value in where.items():
            query = query.where(getattr(RoleAssignment, column) == value)
        seen: set[int] = set()
        found = []
        for pid, e164 in s.execute(query).all():
            if pid not in seen:
                seen.add(pid)
                found.append(Contact(pid, e164, role))
        return tuple(found)

    approvers = contacts(Role.POLICE_APPROVER, zone_id=zone.id)
    officers = contacts(Role.POLICE_OFFICER, zone_id=zone.id)
    author = message.created_by_id
    second: list[Contact] = []
    for c in approvers + officers:
        if c.person_id != author and all(c.person_id != o.person_id for o in second):
            second.append(c)
    author_contact: tuple[Contact, ...] = ()
    if author is not None:
        row = s.execute(select(Person.id, PhoneNumber.e164).join(PhoneNumber).where(
            Person.id == author, Person.active.is_(True), PhoneNumber.rank == PhoneRank.PRIMARY)).first()
        if row is not None:
            role = Role.POLICE_APPROVER if any(c.person_id == author for c in approvers) else Role.POLICE_OFFICER
            author_contact = (Contact(row[0], row[1], role),)
    rounds = s.scalar(select(func.max(ReviewCall.round)).where(ReviewCall.message_id == message_id)) or 0
    decision = s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).first()
    review_rounds, approval_rounds = _rounds(s, message_id, REVIEW), _rounds(s, message_id, APPROVAL)
    noticed = frozenset(s.scalars(select(ReviewCall.person_id).where(
        ReviewCall.message_id == message_id, ReviewCall.purpose == NOTICE)))
    return ReviewPlan(
        message_id=message_id, urgent=message.urgency is Urgency.URGENT,
        parallel=zone.review_mode is ReviewMode.PARALLEL, escalation=zone.urgent_escalation,
        coordinators=contacts(Role.COORDINATOR, bin_id=message.bin_id),
        approvers=approvers,
        status=message.status, decided=decision is not None, next_round=rounds + 1,
        one_level=message.bin.one_level, second_approver=zone.second_approver,
        zone_max_rounds=zone.review_max_rounds,
        review_rounds=review_rounds, approval_rounds=approval_rounds,
        # (The audit log has no index on its subject: it is read only when the answer can matter.)
        # Told = an escalation call answered (an audit row alone is no proof: nobody may have answered).
        police_told=review_rounds > 0 and message.status is MessageStatus.WITH_COORDINATORS
        and _heard_escalation(s, message_id),
        author_told_unapproved=message.status is MessageStatus.AWAITING_APPROVAL and _heard_escalation(s, message_id),
        decided_via=decision.via if decision else None, decision=decision.decision if decision else None,
        noticed=noticed, second_approvers=tuple(second),
        police_to_tell=author_contact or (tuple(c for c in approvers if c.person_id != author)
                                          or tuple(c for c in officers if c.person_id != author)))
