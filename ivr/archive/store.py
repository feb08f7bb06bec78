"""The archive: find, list and replay past police messages; purge them when their time is up.

Rules of this module:

* Search (``ivr.archive.search``) finds sealed transcripts by their blind index (migration 0009;
  word forms since 0011) and typed message texts by their term table (migration 0011); every word
  is required (AND), in any of its forms; ``word*`` is a prefix (see ``ivr.archive.search``).
* Replay is allowed to admins and to the police (officers, approvers) of the message's zone, and
  to nobody else (``ivr.archive.access``). Every replay and every refusal is written to the audit
  log and committed *before* any byte is copied or played (write ahead of the side effect).
* Export (``Archive.export``: a CAP 1.2 document plus the original audio) follows the replay rule
  and is audited the same way, before any byte is written.
* Retention: see ``ivr.archive.purge.purge_expired``. The audit keeps that an item existed and was
  purged (checksum, duration, dates), never its content.
* No wall clock here: the purge is given ``now``.
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ivr.archive import cap, search as finding
from ivr.archive.access import (
    ZONE_POLICE, AccessDenied, ArchiveError, bin_replay_refusal, replay_refusal, resolve_person,
)
from ivr.archive.at_rest import NO_COPIES, MediaCopies, alert_refused_recording
from ivr.archive.purge import IN_FLIGHT, PurgedItem, PurgeReport, purge_expired
from ivr.archive.search import ArchiveEntry, search_words
from storage import audit
from storage.db import Desk, session_scope
from storage.models import BinStreet, Message, Recording, Transcript
from ivr.domain.vocabulary import MessageStatus, Urgency
from storage.recordings import RecordingCorrupted, RecordingStore, verify_plain
from storage.sealed import SealError, open_transcript

# What other modules import from here, wherever it now lives.
__all__ = [
    "IN_FLIGHT", "PLAYERS", "ZONE_POLICE", "AccessDenied", "Archive", "ArchiveEntry", "ArchiveError",
    "Export", "PurgeReport", "PurgedItem", "bin_replay_refusal", "find_player",
    "resolve_person", "search_words",
]

#: External players tried, in order, for "play to the speakers" (the file is appended).
PLAYERS: tuple[tuple[str, ...], ...] = (
    ("aplay", "-q"),
    ("paplay",),
    ("ffplay", "-nodisp", "-autoexit", "-loglevel", "error"),
)


@dataclass(frozen=True)
class Export:
    """What ``Archive.export`` wrote: the CAP document and the audio next to it."""

    message_id: int
    cap_file: Path
    audio_file: Path
    identifier: str
    msg_type: str


class Archive(Desk):
    """Search, list, replay and purge over the database and the recording store."""

    def __init__(self, engine: Engine, store: RecordingStore, *, operator: str = "",
                 copies: MediaCopies = NO_COPIES) -> None:
        """``operator``: who runs the program (e.g. ``cli:alice``), added to every audit record;
        ``copies``: where else the service puts police audio (removed with it by the purge)."""
        super().__init__(engine)
        self.store = store
        self.operator = operator
        self.copies = copies

    # -- finding ---------------------------------------------------------------------------

    def search(self, words: Sequence[str], actor: str, *, limit: int = 50) -> list[ArchiveEntry]:
        """Messages whose transcript or typed text holds every word, newest first; the search is audited."""
        wanted = search_words(words)
        if not wanted:
            raise ArchiveError("give at least one word to search for")

        def work(s: Session) -> list[ArchiveEntry]:
            snippets = finding.hits(s, wanted, self.store.key)
            entries = finding.entries(s, [Message.id.in_(snippets)], limit) if snippets else []
            # The query words are references, not content; the result ids say what was seen.
            audit.record(s, actor, "archive.searched", "archive", words=wanted,
                         results=[e.message_id for e in entries], **self._via())
            return [ArchiveEntry(**{**e.__dict__, "snippet": snippets[e.message_id]}) for e in entries]
        return self.run(work)

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
            return verify_plain(to_file, expected)
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
        refusal = replay_refusal(s, person, message)
        if refusal is not None:
            audit.record(s, who, refused_action, f"message:{message_id}", reason=refusal, **self._via())
        return message, who, refusal

    def _open_take(self, message: Message, take: int | None) -> tuple[Recording, Path]:
        """The take's row and its file, checked against its SHA-256."""
        recording = _take(message, take)
        try:
            return recording, self.store.open_verified(Path(recording.path), recording.sha256)
        except RecordingCorrupted as exc:
            alert_refused_recording(self.engine, f"message:{message.id}", str(exc))
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
                document = _cap_message(s, self.store, message, recording, cap.CapAudio(
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
            verify_plain(audio_file, expected)
        except RecordingCorrupted as exc:
            raise ArchiveError(f"the copy differs from the original: {exc}") from None
        _private_write(cap_file, xml)
        return result

    def _via(self) -> dict[str, str]:
        return {"via": self.operator} if self.operator else {}

    # -- retention -------------------------------------------------------------------------

    def purge_expired(self, now: dt.datetime, retention_days: int, actor: str, *,
                      dry_run: bool = False) -> PurgeReport:
        """Delete the recordings, transcripts and typed texts older than ``retention_days`` (0: keep all);
        ``ivr.archive.purge.purge_expired`` says what goes, and how."""
        return purge_expired(self.engine, self.store, now, retention_days, actor, self._via(),
                             dry_run=dry_run, copies=self.copies)

    # Last in the class: the name shadows the built-in ``list`` for type checkers.
    def list(self, bin: int | None = None, zone: str | None = None, since: dt.datetime | None = None,
             until: dt.datetime | None = None, urgency: Urgency | None = None,
             status: MessageStatus | None = None, *, limit: int | None = None) -> builtins.list[ArchiveEntry]:
        """Messages by BIN number, zone code, creation time (``since`` <= t < ``until``), urgency, status."""
        where = finding.filters(bin, zone, since, until, urgency, status)
        return self.run(lambda s: finding.entries(s, where, limit))


def find_player() -> list[str] | None:
    """The first external audio player found on PATH, as a command (the file is appended)."""
    for command in PLAYERS:
        found = shutil.which(command[0])
        if found is not None:
            return [found, *command[1:]]
    return None


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
                      message.submitted_at or message.created_at)


def _cap_message(s: Session, store: RecordingStore, message: Message, recording: Recording,
                 audio: cap.CapAudio) -> cap.CapMessage:
    """The CAP view of ``message``: its text (else the opened transcript of ``recording``) and what
    it follows."""
    description = message.text
    if description is None:
        transcript = s.scalars(select(Transcript).where(Transcript.recording_id == recording.id)).first()
        if transcript is not None:
            try:
                description = open_transcript(store.key, recording.id, transcript.text, transcript.words).text
            except SealError as exc:
                raise ArchiveError(f"message {message.id}: its transcript does not open: {exc}") from None
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
                          tuple(references), audio=audio, exercise=message.drill)


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
