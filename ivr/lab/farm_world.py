"""The directory of a lab farm and its messages, written straight into the farm's database.

A farm's nodes run in their own processes; the lab only writes what an officer and a coordinator
would have: a zone with BINs and their members, and messages recorded, sent and approved (the
leader's reconciliation picks an approved message up within a poll and starts its campaign).
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select

from ivr.domain.vocabulary import Decision, Language, PhoneRank, Role, Urgency
from ivr.police_line.store import MessageDesk, Officer
from ivr.review.store import ReviewDesk
from ivr.telephony.call import Recorded
from storage import audit
from storage.db import session_scope
from storage.models import Bin, Campaign, Person, PhoneNumber, PoliceZone, RoleAssignment
from storage.recordings import RecordingStore

ZONE = ("5415", "Gent")
OFFICER_NAME = "Inspecteur Peeters"


@dataclass(frozen=True)
class Member:
    """A member the lab seeded: who, which BIN, and the number the simulated network answers for them."""

    person_id: int
    bin_number: int
    number: str


class FarmWorld:
    """Seeds the farm's directory and submits approved messages (blocking and async helpers)."""

    def __init__(self, engine: Engine, recordings_dir: Path) -> None:
        self.engine = engine
        self.recordings = RecordingStore(recordings_dir)
        self.desk = MessageDesk(engine, self.recordings)
        self.reviews = ReviewDesk(engine, self.recordings)
        self.members: list[Member] = []
        self._zone_id: int | None = None
        self._officer_id: int | None = None

    def seed_bin(self, bin_number: int, members: int, prefix: str) -> list[Member]:
        """A BIN (in the lab's zone, made on first use, with an officer) with ``members`` members, one number
        each: ``prefix`` + a 6-digit serial. Returns them (also kept in ``self.members``)."""
        seeded: list[Member] = []
        with session_scope(self.engine) as s:
            if self._zone_id is None:
                zone = PoliceZone(code=ZONE[0], name=ZONE[1])
                s.add(zone)
                s.flush()
                officer = Person(name=OFFICER_NAME, language=Language.NL)
                officer.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164="+32475000001"))
                officer.roles.append(RoleAssignment(role=Role.POLICE_OFFICER, zone_id=zone.id))
                s.add(officer)
                s.flush()
                self._zone_id, self._officer_id = zone.id, officer.id
            bin_ = Bin(number=bin_number, name=f"BIN {bin_number}", zone_id=self._zone_id)
            s.add(bin_)
            s.flush()
            for i in range(1, members + 1):
                number = f"{prefix}{i:06d}"
                person = Person(name=f"Lid {bin_number}-{i}", language=Language.NL)
                person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=number))
                person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
                s.add(person)
                s.flush()
                seeded.append(Member(person.id, bin_number, number))
            audit.record(s, "lab", "directory.seed", f"bin:{bin_number}", members=members)
        self.members.extend(seeded)
        return seeded

    async def submit_approved(self, bin_number: int, clip: Path, urgency: Urgency = Urgency.URGENT) -> int:
        """A message for the BIN with ``clip`` (8 kHz WAV) as its recording, sent by the officer and
        forwarded at once (as a coordinator pressing "forward now" would); returns its id."""
        with session_scope(self.engine) as s:
            bin_id = s.scalars(select(Bin.id).where(Bin.number == bin_number)).one()
        assert self._officer_id is not None, "seed a BIN first"
        message_id = await self.desk.create_draft(Officer(self._officer_id, OFFICER_NAME, "nl", None), bin_id, urgency)
        spool = self.recordings.root.parent / f"spool-{message_id}.wav"
        spool.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, spool)
        await self.desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "lab")
        await self.desk.submit(message_id, 1, "lab")
        await self.reviews.to_coordinators(message_id)
        decided = await self.reviews.decide(message_id, Decision.FORWARD_NOW, person_id=None, review_call_id=None,
                                            via="lab")
        if decided is None:
            raise RuntimeError(f"message {message_id}: somebody decided before the lab did")
        return message_id

    def campaign_of(self, message_id: int) -> Campaign | None:
        """The message's campaign (detached), if it has one yet."""
        with session_scope(self.engine) as s:
            return s.scalars(select(Campaign).where(Campaign.message_id == message_id)).first()


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """A database datetime as aware UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
