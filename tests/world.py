"""A small directory for flow tests: one zone, two BINs, an officer with a PIN, coordinators, an approver."""

from __future__ import annotations

import datetime as dt
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import Engine

from ivr.police_line.store import MessageDesk
from ivr.review.store import ReviewDesk
from storage.db import open_database, session_scope
from storage.models import Bin, Person, PhoneNumber, PoliceZone, RoleAssignment, utcnow
from ivr.domain.vocabulary import Escalation, PhoneRank, ReviewMode, Role
from storage.pins import hash_pin
from storage.recordings import RecordingStore

OFFICER_PHONE = "+32475000001"
OFFICER_PIN = "4321"
OTHER_ZONE_BIN = 99


@dataclass
class World:
    """What the tests refer to."""

    engine: Engine
    desk: MessageDesk
    reviews: ReviewDesk
    zone_id: int
    bin_id: int
    bin_number: int
    officer_id: int
    coordinators: list[tuple[int, str]] = field(default_factory=list)
    approvers: list[tuple[int, str]] = field(default_factory=list)


def _person(name: str, phone: str, role: Role, *, bin_id: int | None = None, zone_id: int | None = None,
            priority: int = 0, pin: str | None = None, language: str = "nl") -> Person:
    from ivr.domain.vocabulary import Language

    person = Person(name=name, language=Language(language), pin_hash=hash_pin(pin) if pin else None)
    person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=phone))
    person.roles.append(RoleAssignment(role=role, bin_id=bin_id, zone_id=zone_id, priority=priority))
    return person


def build_world(db_url: str, store_dir: Path, *, coordinators: int = 2, approvers: int = 0,
                mode: ReviewMode = ReviewMode.SEQUENTIAL, escalation: Escalation = Escalation.AUTO_FORWARD,
                coordinator_phones: list[str] | None = None, approver_phones: list[str] | None = None,
                clock: Callable[[], dt.datetime] = utcnow) -> World:
    """Create the directory in the database at ``db_url``; returns handles to it."""
    engine = open_database(db_url)
    with session_scope(engine) as s:
        zone = PoliceZone(code="5415", name="Gent", review_mode=mode, urgent_escalation=escalation)
        other = PoliceZone(code="5416", name="Brugge")
        s.add_all([zone, other])
        s.flush()
        bin_ = Bin(number=12, name="Kerkwijk", zone_id=zone.id)
        s.add_all([bin_, Bin(number=OTHER_ZONE_BIN, name="Elders", zone_id=other.id)])
        s.flush()
        officer = _person("Inspecteur Peeters", OFFICER_PHONE, Role.POLICE_OFFICER, zone_id=zone.id, pin=OFFICER_PIN)
        s.add(officer)
        phones = coordinator_phones or [f"+3292000{i:03d}" for i in range(1, coordinators + 1)]
        people = [_person(f"Coördinator {i}", phone, Role.COORDINATOR, bin_id=bin_.id, priority=i)
                  for i, phone in enumerate(phones, start=1)]
        approver_list = approver_phones or [f"+3293000{i:03d}" for i in range(1, approvers + 1)]
        appr = [_person(f"Commissaris {i}", phone, Role.POLICE_APPROVER, zone_id=zone.id, priority=i)
                for i, phone in enumerate(approver_list, start=1)]
        s.add_all(people + appr)
        s.flush()
        recordings = RecordingStore(store_dir)
        world = World(engine, MessageDesk(engine, recordings, clock=clock), ReviewDesk(engine, recordings, clock=clock),
                      zone.id, bin_.id,
                      bin_.number, officer.id,
                      [(p.id, p.phones[0].e164) for p in people], [(p.id, p.phones[0].e164) for p in appr])
    return world


def silence_wav(path: Path, seconds: float = 3.0, rate_hz: int = 8000) -> Path:
    """A WAV of digital silence (what a caller who says nothing leaves)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(b"\0\0" * int(seconds * rate_hz))
    return path
