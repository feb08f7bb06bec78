"""The replay desk: every database step of the admin line (hear a BIN's latest messages by phone).

Rules:
- who is calling is proved by caller ID *and* PIN, with the police line's lockout: the same
  ``PinAttempt`` rows, counted per caller ID and per account (``ivr.directory.pin_gate``),
  so wrong PINs on either line count together (no fresh guesses by switching lines);
- who may replay is decided by the archive's one rule (``ivr.archive.store.bin_replay_refusal``):
  admins (in scope) and the police of the BIN's zone. A refusal is audited
  (``recording.play_refused``) before the caller hears it, and nothing about the BIN's
  messages is read for a refused caller;
- every replay writes ``recording.played`` and commits it *before* the audio's path is handed
  back to be played (write ahead of the side effect); the access rule is checked again then;
- SQL runs in a worker thread (``storage.db.Desk.tx``): the event loop keeps serving calls.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.orm import Session

from ivr.archive.access import ZONE_POLICE, AccessDenied, bin_replay_refusal
from ivr.delivery.members import campaign_members
from ivr.domain.phone import mask
from ivr.domain.pin import PinPolicy
from ivr.police_line.store import BinChoice
from ivr.directory.pin_gate import PinRules, check_pin, lock_in_force, pin_key
from storage import audit
from storage.db import Desk
from storage.models import (
    Bin, Campaign, Confirmation, Message, Person, PhoneNumber, Recording, RoleAssignment, utcnow,
)
from ivr.domain.vocabulary import Role, Urgency
from storage.recordings import RecordingStore

#: The ``via`` of every audit record written for the admin line.
VIA = "admin_line"
#: Roles that may replay something (in some scope); anybody else is refused right after the PIN.
REPLAY_ROLES = frozenset({Role.ADMIN}) | ZONE_POLICE


@dataclass(frozen=True)
class Replayer:
    """A person who proved who they are on the admin line (their right to replay is checked per BIN)."""

    person_id: int
    name: str
    language: str


@dataclass(frozen=True)
class ReplayPin:
    """The answer to one PIN: the person, or the lock now in force (or neither: just wrong)."""

    replayer: Replayer | None
    locked_until: dt.datetime | None = None


@dataclass(frozen=True)
class ReplayEntry:
    """One message as the admin line tells it (``confirmed``, ``members``: ``None`` if never delivered)."""

    message_id: int
    urgent: bool
    spoken_at: dt.datetime
    confirmed: int | None
    members: int | None


class ReplayDesk(Desk):
    """The database side of the admin line."""

    def __init__(self, engine: Engine, store: RecordingStore, *, pin_policy: PinPolicy = PinPolicy(),
                 clock: Callable[[], dt.datetime] = utcnow, pin_rules: PinRules | None = None) -> None:
        super().__init__(engine)
        self.store = store
        self.pin_policy = pin_policy
        #: The police line's rules (``pin_policy`` per caller ID unless ``pin_rules`` are given).
        self.pin_rules = pin_rules or PinRules(caller=pin_policy)
        self.clock = clock

    # -- who is calling -------------------------------------------------------------------------
    @staticmethod
    def _person_by_caller(s: Session, key: str) -> Person | None:
        # A shared household line may belong to several people: the one with a PIN and a role
        # that can replay is the one who would call this line.
        people = s.scalars(select(Person).join(PhoneNumber).where(
            PhoneNumber.e164 == key, Person.active.is_(True), Person.pin_hash.is_not(None))
            .order_by(Person.id).distinct()).all()
        for person in people:
            if any(role.role in REPLAY_ROLES for role in person.roles):
                return person
        return people[0] if people else None

    async def lock_for(self, caller_id: str) -> dt.datetime | None:
        """The lock in force for this caller ID (or the account it belongs to), if any; audited."""
        def work(s: Session) -> dt.datetime | None:
            key = pin_key(caller_id)
            person = self._person_by_caller(s, key)
            lock = lock_in_force(s, self.pin_rules, key, person.id if person else None, self.clock(), line=VIA)
            if lock is not None:
                audit.record(s, f"caller:{mask(key)}", "admin_line.call_refused_locked",
                             f"person:{person.id if person else '-'}", locked_until=lock.isoformat())
            return lock
        return await self.tx(work)

    async def check_pin(self, caller_id: str, pin: str) -> ReplayPin:
        """Check a PIN typed from ``caller_id``; every attempt is stored and audited (never the PIN)."""
        def work(s: Session) -> ReplayPin:
            key = pin_key(caller_id)
            verdict = check_pin(s, self.pin_rules, key, self._person_by_caller(s, key), pin, self.clock(),
                                line=VIA)
            person = verdict.person
            if person is None:
                return ReplayPin(None, verdict.locked_until)
            return ReplayPin(Replayer(person.id, person.name, person.language.value))
        return await self.tx(work)

    # -- may they, and which BIN ----------------------------------------------------------------
    async def may_replay_anything(self, replayer: Replayer) -> bool:
        """False (and the refusal audited) for someone with no role that can ever replay."""
        def work(s: Session) -> bool:
            roles = set(s.scalars(select(RoleAssignment.role)
                                  .where(RoleAssignment.person_id == replayer.person_id)))
            if roles & REPLAY_ROLES:
                return True
            audit.record(s, f"person:{replayer.person_id}", "recording.play_refused", VIA,
                         reason="only admins and the police of the message's zone may replay it", via=VIA)
            return False
        return await self.tx(work)

    async def find_bin(self, replayer: Replayer, digits: str) -> BinChoice:
        """The BIN with this number if ``replayer`` may replay its messages; a refusal is audited."""
        def work(s: Session) -> BinChoice:
            bin_ = (s.scalars(select(Bin).where(Bin.number == int(digits))).first()
                    if digits.isdigit() else None)
            if bin_ is None:
                return BinChoice(error_prompt="police_bin_unknown")
            refusal = bin_replay_refusal(s, s.get(Person, replayer.person_id), bin_)
            if refusal is not None:
                audit.record(s, f"person:{replayer.person_id}", "recording.play_refused",
                             f"bin:{bin_.number}", reason=refusal, via=VIA)
                return BinChoice(error_prompt="admin_bin_refused")
            return BinChoice(bin_.id, bin_.number, bin_.name)
        return await self.tx(work)

    # -- the messages ---------------------------------------------------------------------------
    async def latest(self, bin_id: int, limit: int) -> list[ReplayEntry]:
        """The BIN's latest ``limit`` sent messages whose recording is still kept, newest first,
        each with its confirmation count (confirmed members / members called, as the report line).
        Drills are left out: the line would read a test out as a real message."""
        def work(s: Session) -> list[ReplayEntry]:
            # Only what an officer sent (a draft or a purged recording has nothing to replay), and never a
            # drill: its header would announce a test as a real preventive message.
            spoken = func.coalesce(Message.submitted_at, Message.created_at)
            messages = s.scalars(
                select(Message).join(Recording, and_(Recording.message_id == Message.id,
                                                     Recording.take == Message.submitted_take))
                .where(Message.bin_id == bin_id, Message.drill.is_(False))
                .order_by(spoken.desc(), Message.id.desc()).limit(limit)).all()
            entries = []
            for message in messages:
                campaign = s.scalars(select(Campaign).where(Campaign.message_id == message.id)).first()
                confirmed = members = None
                if campaign is not None:
                    members = len(campaign_members(s, campaign, message))
                    confirmed = len(set(s.scalars(select(Confirmation.person_id)
                                                  .where(Confirmation.campaign_id == campaign.id))))
                spoken_at = message.submitted_at or message.created_at
                entries.append(ReplayEntry(message.id, message.urgency is Urgency.URGENT, spoken_at,
                                           confirmed, members))
            return entries
        return await self.tx(work)

    async def recording_to_play(self, replayer: Replayer, message_id: int) -> Path:
        """The message's sent recording, checksum verified; ``recording.played`` is committed first.

        Raises ``AccessDenied`` (the refusal audited) should the caller's rights have changed
        since they chose the BIN.
        """
        def work(s: Session) -> Path | str:
            message = s.get_one(Message, message_id)
            actor = f"person:{replayer.person_id}"
            refusal = bin_replay_refusal(s, s.get(Person, replayer.person_id), message.bin)
            if refusal is not None:
                audit.record(s, actor, "recording.play_refused", f"message:{message_id}", reason=refusal,
                             via=VIA)
                return refusal
            recording = next(r for r in message.recordings if r.take == message.submitted_take)
            path = self.store.open_verified(Path(recording.path), recording.sha256)
            audit.record(s, actor, "recording.played", f"message:{message_id}", take=recording.take,
                         sha256=recording.sha256, to="phone", via=VIA)
            return path
        found = await self.tx(work)
        if isinstance(found, str):
            raise AccessDenied(f"person {replayer.person_id} may not replay message {message_id}: {found}")
        return found
