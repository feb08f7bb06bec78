"""The archive: find, list and replay past police messages; purge them when their time is up.

Rules of this module:

* Search reads the full-text index of migration 0004 (SQLite FTS5 / PostgreSQL text search) over
  every transcript and every typed message text; all given words must appear (AND).
* Replay is allowed to admins and to the police (officers, approvers) of the message's zone, and
  to nobody else. Every replay and every refusal is written to the audit log and committed
  *before* any byte is copied or played (write ahead of the side effect).
* Export (``Archive.export``: a CAP 1.2 document plus the original audio) follows the replay rule
  and is audited the same way, before any byte is written.
* Retention: see ``Archive.purge_expired``. The audit keeps that an item existed and was purged
  (checksum, duration, dates), never its content.
* No wall clock here: the purge is given ``now``.
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import ColumnElement, Engine, and_, or_, select, text
from sqlalchemy.orm import Session

from ivr.archive import cap
from ivr.domain.phone import InvalidPhoneNumber, normalize_phone
from storage import audit
from storage.db import session_scope
from storage.models import (
    Bin, BinStreet, Message, MessageStatus, Person, PhoneNumber, PoliceZone, Recording, Role, RoleAssignment,
    Transcript, Urgency,
)
from storage.recordings import RecordingCorrupted, RecordingStore


class ArchiveError(Exception):
    """A request the archive cannot serve (unknown message, no recording, no player); says why."""


class AccessDenied(ArchiveError):
    """The person asking may not replay this message (the refusal is already audited)."""


#: A message in one of these states is still being worked on: its audio is needed, never purged.
IN_FLIGHT = frozenset({MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS, MessageStatus.APPROVED,
                       MessageStatus.DELIVERING})

#: Roles that may replay a message of their own zone.
ZONE_POLICE = frozenset({Role.POLICE_OFFICER, Role.POLICE_APPROVER})

#: External players tried, in order, for "play to the speakers" (the file is appended).
PLAYERS: tuple[tuple[str, ...], ...] = (
    ("aplay", "-q"),
    ("paplay",),
    ("ffplay", "-nodisp", "-autoexit", "-loglevel", "error"),
)


@dataclass(frozen=True)
class ArchiveEntry:
    """One message as the archive shows it (``snippet``: where the words were found, for a search)."""

    message_id: int
    bin_number: int
    bin_name: str
    zone_code: str
    created_at: dt.datetime
    urgency: Urgency
    status: MessageStatus
    snippet: str | None = None


@dataclass(frozen=True)
class PurgedItem:
    """One thing a purge removed (or would remove, in a dry run)."""

    kind: str  # "recording", "transcript" or "text"
    message_id: int
    item_id: int
    created_at: dt.datetime


@dataclass(frozen=True)
class Export:
    """What ``Archive.export`` wrote: the CAP document and the audio next to it."""

    message_id: int
    cap_file: Path
    audio_file: Path
    identifier: str
    msg_type: str


@dataclass
class PurgeReport:
    """What a retention purge did; ``cutoff`` is ``None`` when retention is off (0 days)."""

    cutoff: dt.datetime | None
    dry_run: bool
    purged: list[PurgedItem] = field(default_factory=list)
    #: Messages with expired content that were kept because they are still in flight.
    held: list[int] = field(default_factory=list)
    #: Items left alone because something is wrong with them (e.g. a path outside the store).
    problems: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        """How many items of ``kind`` were purged."""
        return sum(1 for item in self.purged if item.kind == kind)


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite gives naive datetimes (stored as UTC); PostgreSQL aware ones.
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def fts5_query(words: Sequence[str]) -> str:
    """``words`` as an FTS5 query: each word a quoted string, all required (no operator injection)."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def search_words(words: Sequence[str]) -> list[str]:
    """The words worth searching for: split on blanks, kept only if they hold a letter or digit."""
    return [w for raw in words for w in raw.split() if any(ch.isalnum() for ch in w)]


class Archive:
    """Search, list, replay and purge over the database and the recording store."""

    def __init__(self, engine: Engine, store: RecordingStore, *, operator: str = "") -> None:
        """``operator``: who runs the program (e.g. ``cli:alice``), added to every audit record."""
        self.engine = engine
        self.store = store
        self.operator = operator

    # -- finding ---------------------------------------------------------------------------

    def search(self, words: Sequence[str], actor: str, *, limit: int = 50) -> list[ArchiveEntry]:
        """Messages whose transcript or typed text holds every word, newest first; the search is audited."""
        wanted = search_words(words)
        if not wanted:
            raise ArchiveError("give at least one word to search for")
        with session_scope(self.engine) as s:
            if s.get_bind().dialect.name == "sqlite":
                hits = self._sqlite_hits(s, fts5_query(wanted))
            else:
                hits = self._postgres_hits(s, " ".join(wanted))
            snippets: dict[int, str] = {}
            for message_id, snippet in hits:
                snippets.setdefault(message_id, snippet)
            entries = self._entries(s, [Message.id.in_(snippets)], limit) if snippets else []
            # The query words are references, not content; the result ids say what was seen.
            audit.record(s, actor, "archive.searched", "archive", words=wanted,
                         results=[e.message_id for e in entries], **self._via())
        return [ArchiveEntry(**{**e.__dict__, "snippet": snippets[e.message_id]}) for e in entries]

    @staticmethod
    def _sqlite_hits(s: Session, query: str) -> list[tuple[int, str]]:
        rows = s.execute(text(
            "SELECT r.message_id, snippet(transcripts_fts, 0, '[', ']', '…', 12) "
            "FROM transcripts_fts JOIN transcripts t ON t.id = transcripts_fts.rowid "
            "JOIN recordings r ON r.id = t.recording_id WHERE transcripts_fts MATCH :q "
            "UNION ALL "
            "SELECT m.id, snippet(messages_fts, 0, '[', ']', '…', 12) "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH :q"),
            {"q": query})
        return [(int(mid), str(snip)) for mid, snip in rows]

    @staticmethod
    def _postgres_hits(s: Session, query: str) -> list[tuple[int, str]]:
        # The to_tsvector expressions are those of the GIN indexes (migration 0004), character for character.
        headline = "'StartSel=[, StopSel=], MaxWords=24, MinWords=8, MaxFragments=1, FragmentDelimiter=…'"
        rows = s.execute(text(
            "SELECT r.message_id, ts_headline('simple', t.text, plainto_tsquery('simple', :q), "
            f"{headline}) FROM transcripts t JOIN recordings r ON r.id = t.recording_id "
            "WHERE to_tsvector('simple'::regconfig, t.text) @@ plainto_tsquery('simple'::regconfig, :q) "
            "UNION ALL "
            f"SELECT m.id, ts_headline('simple', m.text, plainto_tsquery('simple', :q), {headline}) "
            "FROM messages m "
            "WHERE to_tsvector('simple'::regconfig, coalesce(m.text, '')) "
            "@@ plainto_tsquery('simple'::regconfig, :q)"),
            {"q": query})
        return [(int(mid), str(snip)) for mid, snip in rows]

    @staticmethod
    def _entries(s: Session, where: Sequence[ColumnElement[bool]], limit: int | None) -> list[ArchiveEntry]:
        query = (select(Message.id, Bin.number, Bin.name, PoliceZone.code, Message.created_at,
                        Message.urgency, Message.status)
                 .join(Bin, Bin.id == Message.bin_id).join(PoliceZone, PoliceZone.id == Bin.zone_id)
                 .where(*where)
                 .order_by(Message.created_at.desc(), Message.id.desc()))
        if limit is not None:
            query = query.limit(limit)
        return [ArchiveEntry(mid, number, name, code, _utc(created), urgency, status)
                for mid, number, name, code, created, urgency, status in s.execute(query)]

    # -- replay ----------------------------------------------------------------------------

    def play(self, message_id: int, actor: str, to_file: Path | None = None, *, take: int | None = None,
             player: Sequence[str] | None = None) -> Path:
        """Replay a message's recording: a copy to ``to_file``, else to the speakers.

        ``actor`` names who asks: ``person:ID``, a person id, or one of their phone numbers.
        Returns the file written (or the stored file played). Raises ``AccessDenied`` (after
        auditing the refusal) or ``ArchiveError``.
        """
        command = None
        if to_file is None:
            command = list(player) if player is not None else find_player()
            if command is None:
                raise ArchiveError("no audio player found (aplay, paplay or ffplay); "
                                   "write a copy with --out FILE")
        elif to_file.exists():
            raise ArchiveError(f"{to_file} already exists; choose a new file")
        elif not to_file.parent.is_dir():
            raise ArchiveError(f"{to_file.parent} is not a folder")
        refusal: str | None = None
        source, expected = Path(), ""
        with session_scope(self.engine) as s:
            message, who, refusal = self._access(s, message_id, actor, "recording.play_refused")
            if refusal is None:
                recording, source = self._open_take(message, take)
                audit.record(s, who, "recording.played", f"message:{message_id}", take=recording.take,
                             sha256=recording.sha256, to="file" if to_file else "speakers", **self._via())
                expected = recording.sha256
        if refusal is not None:
            raise AccessDenied(f"{actor} may not replay message {message_id}: {refusal}")
        if to_file is None:
            assert command is not None
            result = subprocess.run([*command, str(source)], check=False, capture_output=True, text=True)
            if result.returncode != 0:
                raise ArchiveError(f"{command[0]} failed: {result.stderr.strip() or result.returncode}")
            return source
        _private_copy(source, to_file)
        try:
            return RecordingStore.open_verified(to_file, expected)
        except RecordingCorrupted as exc:
            raise ArchiveError(f"the copy differs from the original: {exc}") from None

    def _access(self, s: Session, message_id: int, actor: str,
                refused_action: str) -> tuple[Message, str, str | None]:
        """The message, who asks (as the audit names them) and why they may not have it (``None``: they
        may). A refusal is audited as ``refused_action``: committed with the session, even though the
        caller then raises."""
        message = s.get(Message, message_id)
        if message is None:
            raise ArchiveError(f"no message {message_id}")
        person = resolve_person(s, actor)
        who = f"person:{person.id}" if person is not None else f"unknown:{actor}"
        refusal = _replay_refusal(s, person, message)
        if refusal is not None:
            audit.record(s, who, refused_action, f"message:{message_id}", reason=refusal, **self._via())
        return message, who, refusal

    def _open_take(self, message: Message, take: int | None) -> tuple[Recording, Path]:
        """The take's row and its file, checked against its SHA-256."""
        recording = _take(message, take)
        try:
            return recording, self.store.open_verified(Path(recording.path), recording.sha256)
        except RecordingCorrupted as exc:
            raise ArchiveError(f"message {message.id}: recording unusable: {exc}") from None

    def export(self, message_id: int, actor: str, out_dir: Path, tz: dt.tzinfo, *,
               embed_audio: bool = True) -> Export:
        """Write ``<id>.cap.xml`` (CAP 1.2) and ``<id>.wav`` (the recording members heard) into ``out_dir``.

        The same rule as ``play``: admins and the police of the message's zone only. The export,
        or its refusal, is audited and committed before any byte is written. ``embed_audio``: the
        audio also goes inside the document (``derefUri``); otherwise the document points at the
        written file by an absolute ``file:`` URI. Raises ``AccessDenied`` or ``ArchiveError``.
        """
        if not out_dir.is_dir():
            raise ArchiveError(f"{out_dir} is not a folder")
        cap_file, audio_file = out_dir / f"{message_id}.cap.xml", out_dir / f"{message_id}.wav"
        for path in (cap_file, audio_file):
            if path.exists():
                raise ArchiveError(f"{path} already exists; choose another folder")
        refusal: str | None = None
        source, expected, xml = Path(), "", b""
        with session_scope(self.engine) as s:
            message, who, refusal = self._access(s, message_id, actor, "message.export_refused")
            if refusal is None:
                recording, source = self._open_take(message, None)
                document = _cap_message(s, message, recording, cap.CapAudio(
                    audio_file.name, source.read_bytes(), recording.take, recording.duration_s))
                try:
                    xml = cap.alert_xml(document, tz,
                                        audio_uri=None if embed_audio else audio_file.resolve().as_uri())
                except cap.CapError as exc:  # raised before the audit record: nothing is exported
                    raise ArchiveError(f"message {message_id}: {exc}") from None
                result = Export(message_id, cap_file, audio_file, document.ref.identifier,
                                cap.MSG_TYPE[document.kind])
                audit.record(s, who, "message.exported", f"message:{message_id}", format="CAP 1.2",
                             identifier=result.identifier, msg_type=result.msg_type, take=recording.take,
                             sha256=recording.sha256, files=[cap_file.name, audio_file.name], **self._via())
                expected = recording.sha256
        if refusal is not None:
            raise AccessDenied(f"{actor} may not export message {message_id}: {refusal}")
        _private_copy(source, audio_file)
        try:
            RecordingStore.open_verified(audio_file, expected)
        except RecordingCorrupted as exc:
            raise ArchiveError(f"the copy differs from the original: {exc}") from None
        _private_write(cap_file, xml)
        return result

    def _via(self) -> dict[str, str]:
        return {"via": self.operator} if self.operator else {}

    # -- retention -------------------------------------------------------------------------

    def purge_expired(self, now: dt.datetime, retention_days: int, actor: str, *,
                      dry_run: bool = False) -> PurgeReport:
        """Delete the recordings, transcripts and typed texts older than ``retention_days`` (0: keep all).

        What is purged, and why this way:

        * An item's age is counted from when it came into existence: a recording from its
          ``created_at`` (the police spoke it), a typed text from its message's ``created_at``.
          A transcript is derived from its recording and goes with it, even if it was made later:
          no text of a message outlives its audio. Exactly the items created strictly before
          ``now - retention_days`` are purged; nothing younger is touched.
        * The audio file is deleted from the store and the ``Recording`` and ``Transcript`` rows
          are deleted (the schema allows it: only transcripts refer to recordings). The typed
          text of a written message is the same content as its synthesised audio, so it is
          cleared too. The ``Message`` row, its review decision, campaign, call attempts and
          confirmations stay: they are the evaluation record (who was called, who confirmed),
          not the police's words.
        * Each purged item gets an audit record with its checksum, duration and dates, so the
          log proves what existed and that it was deleted, without keeping any of it.
        * A message still in flight (recorded, with the coordinators, approved, delivering) is
          held, not purged: members are still to hear it. It is listed in ``held``.
        * Rows and audit records are written per message in one transaction; the file is
          unlinked inside that transaction, just before the commit. Should the commit fail, the
          rows survive pointing at a missing file and the next purge completes the job (it
          notes the file as already missing); the other order could leave police audio on
          disk with no row pointing at it.
        * On SQLite, freed pages are overwritten (``secure_delete``) and the full-text index is
          optimised afterwards so that purged words do not linger in old index segments.
        """
        if retention_days < 0:
            raise ValueError("retention_days must be 0 (keep for ever) or more")
        if retention_days == 0:
            return PurgeReport(cutoff=None, dry_run=dry_run)
        cutoff = _utc(now) - dt.timedelta(days=retention_days)
        report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
        with session_scope(self.engine) as s:
            expired_audio = select(Recording.message_id).where(Recording.created_at < cutoff)
            candidates = s.scalars(select(Message.id).where(or_(
                Message.id.in_(expired_audio),
                and_(Message.text.is_not(None), Message.created_at < cutoff))).order_by(Message.id)).all()
        for message_id in candidates:
            self._purge_message(message_id, cutoff, retention_days, actor, report)
        if report.purged and not dry_run:
            with session_scope(self.engine) as s:
                audit.record(s, actor, "archive.purged", "retention", cutoff=cutoff.isoformat(),
                             retention_days=retention_days, recordings=report.count("recording"),
                             transcripts=report.count("transcript"), texts=report.count("text"),
                             held=report.held, **self._via())
                if s.get_bind().dialect.name == "sqlite":
                    s.execute(text("INSERT INTO transcripts_fts(transcripts_fts) VALUES ('optimize')"))
                    s.execute(text("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')"))
        return report

    def _purge_message(self, message_id: int, cutoff: dt.datetime, retention_days: int, actor: str,
                       report: PurgeReport) -> None:
        with session_scope(self.engine) as s:
            if s.get_bind().dialect.name == "sqlite":
                s.execute(text("PRAGMA secure_delete=ON"))
            message = s.get_one(Message, message_id)
            if message.status in IN_FLIGHT:
                report.held.append(message_id)
                return
            files: list[Path] = []
            for recording in s.scalars(select(Recording).where(Recording.message_id == message_id,
                                                               Recording.created_at < cutoff)
                                       .order_by(Recording.id)).all():
                path = Path(recording.path)
                if not self._inside_store(path):
                    report.problems.append(f"message {message_id} take {recording.take}: {path} is outside "
                                           f"the recording store {self.store.root}; left alone")
                    continue
                transcript = s.scalars(select(Transcript)
                                       .where(Transcript.recording_id == recording.id)).first()
                if transcript is not None:
                    report.purged.append(PurgedItem("transcript", message_id, transcript.id,
                                                    _utc(transcript.created_at)))
                    if not report.dry_run:
                        audit.record(s, actor, "transcript.purged", f"message:{message_id}",
                                     transcript_id=transcript.id, recording_id=recording.id,
                                     model=transcript.model,
                                     transcribed_at=_utc(transcript.created_at).isoformat(),
                                     retention_days=retention_days, **self._via())
                        s.delete(transcript)
                        s.flush()  # the transcript refers to the recording: it must go first
                recorded_at = _utc(recording.created_at)
                report.purged.append(PurgedItem("recording", message_id, recording.id, recorded_at))
                if not report.dry_run:
                    audit.record(s, actor, "recording.purged", f"message:{message_id}",
                                 recording_id=recording.id, take=recording.take, sha256=recording.sha256,
                                 duration_s=recording.duration_s, recorded_at=recorded_at.isoformat(),
                                 file="deleted" if path.exists() else "already missing",
                                 retention_days=retention_days, **self._via())
                    s.delete(recording)
                    files.append(path)
            if message.text is not None and _utc(message.created_at) < cutoff:
                report.purged.append(PurgedItem("text", message_id, message_id, _utc(message.created_at)))
                if not report.dry_run:
                    audit.record(s, actor, "message.text_purged", f"message:{message_id}",
                                 chars=len(message.text), written_at=_utc(message.created_at).isoformat(),
                                 retention_days=retention_days, **self._via())
                    message.text = None
            if report.dry_run:
                s.rollback()
                return
            s.flush()
            for path in files:
                path.unlink(missing_ok=True)
                try:
                    path.parent.rmdir()  # the message's folder, once its last take is gone
                except OSError:
                    pass

    def _inside_store(self, path: Path) -> bool:
        # A damaged row must never make the purge delete a file elsewhere on the machine.
        return path.resolve().is_relative_to(self.store.root.resolve())

    # Last in the class: the name shadows the built-in ``list`` for type checkers.
    def list(self, bin: int | None = None, zone: str | None = None, since: dt.datetime | None = None,
             until: dt.datetime | None = None, urgency: Urgency | None = None,
             status: MessageStatus | None = None, *, limit: int | None = None) -> builtins.list[ArchiveEntry]:
        """Messages by BIN number, zone code, creation time (``since`` <= t < ``until``), urgency, status."""
        where: builtins.list[ColumnElement[bool]] = []
        if bin is not None:
            where.append(Bin.number == bin)
        if zone is not None:
            where.append(PoliceZone.code == zone)
        if since is not None:
            where.append(Message.created_at >= _utc(since))
        if until is not None:
            where.append(Message.created_at < _utc(until))
        if urgency is not None:
            where.append(Message.urgency == urgency)
        if status is not None:
            where.append(Message.status == status)
        with session_scope(self.engine) as s:
            return self._entries(s, where, limit)


def find_player() -> list[str] | None:
    """The first external audio player found on PATH, as a command (the file is appended)."""
    for command in PLAYERS:
        found = shutil.which(command[0])
        if found is not None:
            return [found, *command[1:]]
    return None


def resolve_person(s: Session, who: str) -> Person | None:
    """The person ``who`` names: ``person:ID``, a bare id, or a phone number only they have; else ``None``."""
    raw = who.strip()
    raw = raw.removeprefix("person:")
    if raw.isdigit() and not raw.startswith("0"):
        return s.get(Person, int(raw))
    try:
        e164 = normalize_phone(raw)
    except InvalidPhoneNumber:
        return None
    people = s.scalars(select(Person).join(PhoneNumber).where(PhoneNumber.e164 == e164).distinct()).all()
    # A shared household number does not say who is asking.
    return people[0] if len(people) == 1 else None


def _replay_refusal(s: Session, person: Person | None, message: Message) -> str | None:
    """Why ``person`` may not replay ``message`` (``None``: allowed)."""
    return bin_replay_refusal(s, person, message.bin)


def bin_replay_refusal(s: Session, person: Person | None, bin_: Bin) -> str | None:
    """Why ``person`` may not replay the messages of ``bin_`` (``None``: allowed).

    The one access rule for replay, whatever the way in (command line, admin phone line): the
    rule depends only on the message's BIN and zone, so it can be checked before a BIN's
    messages are even listed.
    """
    if person is None:
        return "not a known person (give person:ID or a phone number of theirs)"
    if not person.active:
        return "the person is not active"
    zone_id = bin_.zone_id
    for role in s.scalars(select(RoleAssignment).where(RoleAssignment.person_id == person.id)):
        in_scope = role.zone_id in (None, zone_id) and role.bin_id in (None, bin_.id)
        if role.role is Role.ADMIN and in_scope:
            return None
        if role.role in ZONE_POLICE and role.zone_id == zone_id:
            return None
    return "only admins and the police of the message's zone may replay it"


def _take(message: Message, take: int | None) -> Recording:
    """The recording to replay: ``take``, else the take that was sent, else the latest."""
    if not message.recordings:
        raise ArchiveError(f"message {message.id} has no recording (never recorded, or purged by retention)")
    wanted = take or message.submitted_take or message.recordings[-1].take
    for recording in message.recordings:
        if recording.take == wanted:
            return recording
    takes = ", ".join(str(r.take) for r in message.recordings)
    raise ArchiveError(f"message {message.id} has no take {wanted} (takes: {takes})")


def _cap_ref(message: Message) -> cap.CapRef:
    zone_code = message.bin.zone.code
    return cap.CapRef(cap.sender_for(zone_code), cap.identifier_for(zone_code, message.id),
                      _utc(message.submitted_at or message.created_at))


def _cap_message(s: Session, message: Message, recording: Recording, audio: cap.CapAudio) -> cap.CapMessage:
    """The CAP view of ``message``: its text (else the transcript of ``recording``) and what it follows."""
    description = message.text
    if description is None:
        description = s.scalars(select(Transcript.text)
                                .where(Transcript.recording_id == recording.id)).first()
    # The chain of messages this one follows, oldest first (guarded against a damaged, looping chain).
    references: builtins.list[cap.CapRef] = []
    seen = {message.id}
    earlier = message.follow_up_of_id
    while earlier is not None and earlier not in seen:
        seen.add(earlier)
        first = s.get(Message, earlier)
        if first is None:
            break
        references.insert(0, _cap_ref(first))
        earlier = first.follow_up_of_id
    streets = tuple(s.scalars(select(BinStreet.street).where(BinStreet.bin_id == message.bin_id)
                              .order_by(BinStreet.street)))
    zone = message.bin.zone
    return cap.CapMessage(_cap_ref(message), message.kind, message.urgency, zone.code, zone.name,
                          message.bin.number, message.bin.name, streets, description or None,
                          tuple(references), audio=audio)


def _private_write(target: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``target`` readable by its owner only (it may embed police audio)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _private_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to a new file ``target`` readable by its owner only (police audio)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)
        out.flush()
        os.fsync(out.fileno())
