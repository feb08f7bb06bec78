"""The message desk: every database step of BINFOON 1, from the PIN to the coordinator's decision.

Rules:
- the database is the truth: each step is one transaction, committed before the call goes on
  (a recording is stored and its row written before the officer hears the next prompt; a
  review call is written before it is dialled; a decision before "thank you");
- a message moves only along ``ivr.domain.message.TRANSITIONS``;
- every access to a recording, every PIN attempt and every decision is in the audit log, with
  phone numbers masked and never a PIN;
- SQL runs in a worker thread (``asyncio.to_thread``): the event loop keeps serving AMI.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ivr.domain.message import check_transition
from ivr.domain.phone import mask
from ivr.domain.pin import PinPolicy
from ivr.telephony.call import Recorded
from ivr.media.compare import read_wav_mono, speech_span
from ivr.directory.pin_gate import PinRules, check_pin, lock_in_force, pin_key
from ivr.directory.sip_accounts import officer_by_sip
from storage import audit
from storage.db import Desk
from storage.models import (
    Bin, Campaign, Message, Person, PhoneNumber, Recording, ReviewCall, ReviewDecision, RoleAssignment,
    utcnow,
)
from ivr.domain.vocabulary import MessageKind, MessageSource, MessageStatus, Role, Urgency
from storage.recordings import RecordingStore

log = logging.getLogger(__name__)

#: The police line's name in ``PinAttempt.line`` and its audit actions (``police.pin_wrong``...).
LINE = "police"


@dataclass(frozen=True)
class Officer:
    """A police officer who proved who they are."""

    person_id: int
    name: str
    language: str
    #: The zones whose BINs the officer may alert; ``None`` means every zone.
    zone_ids: frozenset[int] | None


def sip_key(username: str) -> str:
    """How lockouts and the audit log name a call from an officer's SIP account (fits ``PinAttempt.caller_id``)."""
    return f"sip:{username}"[:32]


@dataclass(frozen=True)
class PinResult:
    """The answer to one PIN: the officer, or the lock now in force (or neither: just wrong)."""

    officer: Officer | None
    locked_until: dt.datetime | None = None


@dataclass(frozen=True)
class BinChoice:
    """The BIN an officer typed, or the prompt that says why it cannot be used."""

    bin_id: int = 0
    number: int = 0
    name: str = ""
    error_prompt: str | None = None


@dataclass(frozen=True)
class Take:
    """One stored recording of a message."""

    recording_id: int | None
    take: int
    path: Path | None
    duration_s: float
    speech_s: float
    end_reason: str


class AfterIntake(Protocol):
    """What follows the police line's steps (the chain): a kept take is transcribed, a submitted
    message is reviewed."""

    def take_kept(self, message_id: int, recording_id: int | None) -> None:
        """A take was stored (``recording_id`` ``None``: nothing was recorded)."""

    def submitted(self, message_id: int) -> None:
        """The officer sent the message."""


class MessageDesk(Desk):
    """The database side of the police line: who is calling, the message, its takes, "send"."""

    def __init__(
        self,
        engine: Engine,
        store: RecordingStore,
        *,
        pin_policy: PinPolicy = PinPolicy(),
        pin_rules: PinRules | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        super().__init__(engine)
        self.store = store
        self.pin_policy = pin_policy
        #: Per caller ID (``pin_policy`` unless ``pin_rules`` are given), per account, per line; the pepper.
        self.pin_rules = pin_rules or PinRules(caller=pin_policy)
        self.clock = clock

    # -- the police line: who is calling ------------------------------------------------------
    def _officer_by_caller(self, s: Session, key: str) -> Person | None:
        return s.scalars(
            select(Person).join(PhoneNumber).join(RoleAssignment)
            .where(PhoneNumber.e164 == key, Person.active.is_(True),
                   RoleAssignment.role.in_((Role.POLICE_OFFICER, Role.POLICE_APPROVER)))
        ).first()

    async def lock_for(self, caller_id: str) -> dt.datetime | None:
        """The lock in force for this caller ID (or the account it belongs to), if any."""
        key = pin_key(caller_id)
        return await self.tx(lambda s: self._lock(s, key, f"caller:{mask(key)}", self._officer_by_caller(s, key)))

    async def lock_for_sip(self, username: str) -> dt.datetime | None:
        """The lock in force for an officer's SIP account (or the person it belongs to), if any."""
        key = sip_key(username)
        return await self.tx(lambda s: self._lock(s, key, key, officer_by_sip(s, username)))

    def _lock(self, s: Session, key: str, subject: str, person: Person | None) -> dt.datetime | None:
        lock = lock_in_force(s, self.pin_rules, key, person.id if person else None, self.clock(), line=LINE)
        if lock is not None:
            audit.record(s, subject, "police.call_refused_locked",
                         f"person:{person.id if person else '-'}", locked_until=lock.isoformat())
        return lock

    async def check_pin(self, caller_id: str, pin: str) -> PinResult:
        """Check a PIN typed from ``caller_id``; every attempt is stored and audited (never the PIN)."""
        key = pin_key(caller_id)
        return await self.tx(lambda s: self._check(s, key, self._officer_by_caller(s, key), pin))

    async def check_sip_pin(self, username: str, pin: str) -> PinResult:
        """Check a PIN typed on a call from an officer's SIP account (the endpoint Asterisk
        authenticated): the account, not the caller ID the softphone claims, says who should be calling."""
        return await self.tx(lambda s: self._check(s, sip_key(username), officer_by_sip(s, username), pin))

    def _check(self, s: Session, key: str, person: Person | None, pin: str) -> PinResult:
        verdict = check_pin(s, self.pin_rules, key, person, pin, self.clock(), line=LINE)
        person = verdict.person
        if person is None:
            return PinResult(None, verdict.locked_until)
        zones = [r.zone_id for r in person.roles if r.role in (Role.POLICE_OFFICER, Role.POLICE_APPROVER)]
        zone_ids = None if any(z is None for z in zones) else frozenset(z for z in zones if z is not None)
        return PinResult(Officer(person.id, person.name, person.language.value, zone_ids))

    async def find_bin(self, officer: Officer, digits: str) -> BinChoice:
        """The BIN with this number, if the officer may alert it."""
        def work(s: Session) -> BinChoice:
            if not digits.isdigit():
                return BinChoice(error_prompt="police_bin_unknown")
            bin_ = s.scalars(select(Bin).where(Bin.number == int(digits))).first()
            if bin_ is None:
                return BinChoice(error_prompt="police_bin_unknown")
            if officer.zone_ids is not None and bin_.zone_id not in officer.zone_ids:
                return BinChoice(error_prompt="police_bin_other_zone")
            return BinChoice(bin_.id, bin_.number, bin_.name)
        return await self.tx(work)

    # -- the police line: the message ---------------------------------------------------------
    async def create_draft(self, officer: Officer, bin_id: int, urgency: Urgency) -> int:
        """A new message, a draft until the officer sends it."""
        def work(s: Session) -> int:
            message = Message(bin_id=bin_id, urgency=urgency, status=MessageStatus.DRAFT,
                              created_by_id=officer.person_id, source=MessageSource.PHONE, created_at=self.clock())
            s.add(message)
            s.flush()
            audit.record(s, f"person:{officer.person_id}", "message.draft", f"message:{message.id}",
                         bin_id=bin_id, urgency=urgency.value)
            return message.id
        return await self.tx(work)

    async def keep_take(self, message_id: int, take: int, recorded: Recorded, actor: str) -> Take:
        """Store what was recorded (before anything else) and write its row; the spool copy is removed."""
        def work(s: Session) -> Take:
            return self._keep(s, message_id, take, recorded.path, recorded.end_reason, actor)
        return await self.tx(work)

    def _keep(self, s: Session, message_id: int, take: int, source: Path, end_reason: str, actor: str) -> Take:
        if not source.exists() or source.stat().st_size == 0:
            # Asterisk wrote nothing (the caller hung up at the beep): there is nothing to keep.
            return Take(None, take, None, 0.0, 0.0, end_reason)
        stored = self.store.store(source, message_id, take)
        speech_s = 0.0
        try:
            samples, rate = read_wav_mono(source)  # the plaintext; the stored file is sealed
            span = speech_span(samples, rate)
            speech_s = 0.0 if span is None else span[1] - span[0]
        except (ValueError, EOFError) as exc:
            log.warning("message %d take %d: cannot measure speech: %s", message_id, take, exc)
        recording = Recording(message_id=message_id, path=str(stored.path), sha256=stored.sha256,
                              duration_s=stored.duration_s, sample_rate=stored.sample_rate, take=take,
                              speech_s=round(speech_s, 3), end_reason=end_reason, created_at=self.clock())
        s.add(recording)
        s.flush()
        audit.record(s, actor, "recording.stored", f"message:{message_id}", take=take, sha256=stored.sha256,
                     seconds=round(stored.duration_s, 2), end_reason=end_reason)
        if source.resolve() != stored.path.resolve():
            source.unlink(missing_ok=True)  # the plaintext spool copy is not kept
        return Take(recording.id, take, stored.path, stored.duration_s, speech_s, end_reason)

    async def submit(self, message_id: int, take: int, actor: str) -> None:
        """The officer pressed "send": the message is submitted (its review is the chain's next step)."""
        def work(s: Session) -> None:
            message = s.get_one(Message, message_id)
            check_transition(message.status, MessageStatus.RECORDED)
            message.status = MessageStatus.RECORDED
            message.submitted_at = self.clock()
            message.submitted_take = take
            audit.record(s, actor, "message.submitted", f"message:{message_id}", take=take)
        await self.tx(work)

    async def cancel(self, message_id: int, actor: str) -> None:
        """The officer pressed *: the message is never sent (its recordings are kept)."""
        def work(s: Session) -> None:
            message = s.get_one(Message, message_id)
            check_transition(message.status, MessageStatus.CANCELLED)
            message.status = MessageStatus.CANCELLED
            audit.record(s, actor, "message.cancelled", f"message:{message_id}")
        await self.tx(work)

    def submit_text_message(self, bin_number: int, urgency: Urgency, text: str, audio: Path, actor: str,
                            follow_up_of: int | None = None, kind: MessageKind = MessageKind.ALERT,
                            author_id: int | None = None) -> int:
        """A written message, already spoken into ``audio``: stored and submitted in one transaction,
        its author (``author_id``, a person) included (blocking)."""
        def work(s: Session) -> int:
            bin_ = s.scalars(select(Bin).where(Bin.number == bin_number)).first()
            if bin_ is None:
                raise LookupError(f"no BIN with number {bin_number}")
            now = self.clock()
            message = Message(bin_id=bin_.id, urgency=urgency, status=MessageStatus.DRAFT, text=text,
                              source=MessageSource.TEXT, created_at=now, follow_up_of_id=follow_up_of, kind=kind,
                              created_by_id=author_id)
            s.add(message)
            s.flush()
            self._keep(s, message.id, 1, audio, "text", actor)
            check_transition(message.status, MessageStatus.RECORDED)
            message.status = MessageStatus.RECORDED
            message.submitted_at = now
            message.submitted_take = 1
            audit.record(s, actor, "message.submitted", f"message:{message.id}", take=1, source="text")
            return message.id
        return self.run(work)

    async def recording_to_play(self, message_id: int, actor: str, take: int | None = None) -> Path:
        """The message's original recording (or ``take``), checksum verified; the access is audited first."""
        return await self.tx(lambda s: open_take(s, self.store, message_id, actor, take))

    async def submitted_recording(self, message_id: int) -> int | None:
        """The id of the take the message was submitted with (``None``: not submitted)."""
        def work(s: Session) -> int | None:
            return s.scalar(select(Recording.id).join(Message, Message.id == Recording.message_id).where(
                Message.id == message_id, Recording.take == Message.submitted_take))
        return await self.tx(work)

    async def latest_message_of_bin(self, bin_number: int) -> int | None:
        """The newest message for a BIN (demo and benchmarks follow their own alerts with it)."""
        def work(s: Session) -> int | None:
            return s.scalar(select(Message.id).join(Bin).where(Bin.number == bin_number)
                            .order_by(Message.id.desc()).limit(1))
        return await self.tx(work)

    # -- recovery -----------------------------------------------------------------------------
    async def unfinished(self) -> list[tuple[int, MessageStatus, dt.datetime | None]]:
        """Messages the running service must act on: (id, status, deliver_at)."""
        def work(s: Session) -> list[tuple[int, MessageStatus, dt.datetime | None]]:
            rows = s.execute(select(Message.id, Message.status, Message.deliver_at).where(
                Message.status.in_((MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS,
                                    MessageStatus.AWAITING_APPROVAL, MessageStatus.APPROVED))).order_by(Message.id)).all()
            return [(mid, status, at) for mid, status, at in rows]
        return await self.tx(work)


def open_take(s: Session, store: RecordingStore, message_id: int, actor: str, take: int | None = None) -> Path:
    """The message's submitted take (or ``take``), checksum verified; the access is audited first."""
    message = s.get_one(Message, message_id)
    wanted = take or message.submitted_take
    recording = next((r for r in message.recordings if r.take == wanted), None)
    if recording is None:
        raise LookupError(f"message {message_id} has no recording take {wanted}")
    audit.record(s, actor, "recording.played", f"message:{message_id}", take=recording.take)
    return store.open_verified(Path(recording.path), recording.sha256)


#: How ``binfoon message show`` words each status for the police.
STATUS_TEXT = {
    MessageStatus.DRAFT: "draft: recorded but not sent by the officer (never delivered)",
    MessageStatus.RECORDED: "recorded: waiting for the coordinators to be called",
    MessageStatus.WITH_COORDINATORS: "with the coordinators: waiting for a decision",
    MessageStatus.AWAITING_APPROVAL: "urgent, without review: waiting for a second police officer's approval",
    MessageStatus.APPROVED: "approved",
    MessageStatus.REJECTED: "rejected by the coordinator",
    MessageStatus.DELIVERING: "being delivered to the members",
    MessageStatus.DONE: "done",
    MessageStatus.CANCELLED: "cancelled",
}


def describe(session: Session, message_id: int) -> dict[str, object]:
    """Where a message stands, for the police: status, review calls, decision, delivery counts."""
    from storage.models import CallAttempt, Confirmation

    message = session.get(Message, message_id)
    if message is None:
        raise LookupError(f"no message {message_id}")
    decision = session.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).first()
    calls = session.scalars(select(ReviewCall).where(ReviewCall.message_id == message_id)
                            .order_by(ReviewCall.dialled_at)).all()
    campaign = session.scalars(select(Campaign).where(Campaign.message_id == message_id)).first()
    take = next((r for r in message.recordings if r.take == message.submitted_take), None)
    status = STATUS_TEXT[message.status]
    if message.status is MessageStatus.APPROVED and message.deliver_at is not None:
        status += f", to be delivered at {message.deliver_at.isoformat(timespec='seconds')}"
    report: dict[str, object] = {
        "id": message.id, "bin": message.bin.number, "bin_name": message.bin.name,
        "urgency": message.urgency.value, "source": message.source.value, "status": message.status.value,
        "status_text": status,
        "created_at": message.created_at.isoformat(timespec="seconds"),
        "submitted_at": message.submitted_at.isoformat(timespec="seconds") if message.submitted_at else None,
        "recording_seconds": round(take.duration_s, 2) if take else None,
        "takes": len(message.recordings),
        "review_calls": [{"person": c.person_id, "number": mask(c.e164), "round": c.round, "role": c.role.value,
                          "outcome": c.dial_outcome, "answered": c.answered_at is not None} for c in calls],
        "decision": None if decision is None else {
            "decision": decision.decision.value, "by": decision.person.name if decision.person else "zone policy",
            "via": decision.via, "at": decision.decided_at.isoformat(timespec="seconds"),
            "deliver_at": message.deliver_at.isoformat(timespec="seconds") if message.deliver_at else None},
        "delivery": None,
    }
    if campaign is not None:
        attempts = session.scalar(select(func.count()).select_from(CallAttempt)
                                  .where(CallAttempt.campaign_id == campaign.id)) or 0
        confirmed = session.scalar(select(func.count()).select_from(Confirmation)
                                   .where(Confirmation.campaign_id == campaign.id)) or 0
        members = session.scalar(select(func.count()).select_from(RoleAssignment)
                                 .where(RoleAssignment.role == Role.MEMBER,
                                        RoleAssignment.bin_id == message.bin_id)) or 0
        report["delivery"] = {"campaign": campaign.id, "status": campaign.status.value, "members": members,
                              "attempts": attempts, "confirmed": confirmed}
    return report
