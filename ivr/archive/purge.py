"""Retention: the recordings, transcripts and typed texts of police messages go when their time is up.

Rules: see ``purge_expired``. The audit keeps that an item existed and was purged (checksum,
duration, dates), never its content. No wall clock here: the purge is given ``now``. It is run by
``binfoon archive purge`` and by the service (``ivr.archive.retention``), both through
``ivr.archive.store.Archive.purge_expired``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, and_, delete, or_, select, text

from ivr.archive.at_rest import IN_FLIGHT, NO_COPIES, MediaCopies, remove_copies
from storage import audit
from storage.db import session_scope
from storage.models import Message, Recording, Transcript, TranscriptTerm, as_utc
from storage.recordings import RecordingStore

__all__ = ["IN_FLIGHT", "PurgeReport", "PurgedItem", "purge_expired"]


@dataclass(frozen=True)


class PurgedItem:
    """One thing a purge removed (or would remove, in a dry run)."""

    kind: str  # "recording", "transcript" or "text"
    message_id: int
    item_id: int
    created_at: dt.datetime


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


def purge_expired(engine: Engine, store: RecordingStore, now: dt.datetime, retention_days: int, actor: str,
                  via: dict[str, str], *, dry_run: bool = False, copies: MediaCopies = NO_COPIES) -> PurgeReport:
    """Delete the recordings, transcripts and typed texts older than ``retention_days`` (0: keep all).

    What is purged, and why this way:

    * An item's age is counted from when it came into existence: a recording from its
      ``created_at`` (the police spoke it), a typed text from its message's ``created_at``.
      A transcript is derived from its recording and goes with it, even if it was made later:
      no text of a message outlives its audio. Exactly the items created strictly before
      ``now - retention_days`` are purged; nothing younger is touched.
    * The audio file is deleted from the store and the ``Recording`` and ``Transcript`` rows
      are deleted (the schema allows it: only transcripts refer to recordings). Every copy goes
      with it (``ivr.archive.at_rest.remove_copies``): the plaintext copy handed out for playing,
      the copy published for Asterisk (``copies.sounds_dirs``), and the rendered speech of a
      typed text in every language (the private directory and the shared cache). The typed
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
    * A transcript's blind-index tokens (``transcript_terms``) go with it. On SQLite, freed pages
      are overwritten (``secure_delete``) and the typed texts' full-text index is optimised
      afterwards so that purged words do not linger in old index segments.
    """
    if retention_days < 0:
        raise ValueError("retention_days must be 0 (keep for ever) or more")
    if retention_days == 0:
        return PurgeReport(cutoff=None, dry_run=dry_run)
    cutoff = as_utc(now) - dt.timedelta(days=retention_days)
    report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
    with session_scope(engine) as s:
        expired_audio = select(Recording.message_id).where(Recording.created_at < cutoff)
        candidates = s.scalars(select(Message.id).where(or_(
            Message.id.in_(expired_audio),
            and_(Message.text.is_not(None), Message.created_at < cutoff))).order_by(Message.id)).all()
    for message_id in candidates:
        _purge_message(engine, store, copies, message_id, cutoff, retention_days, actor, via, report)
    if report.purged and not dry_run:
        with session_scope(engine) as s:
            audit.record(s, actor, "archive.purged", "retention", cutoff=cutoff.isoformat(),
                         retention_days=retention_days, recordings=report.count("recording"),
                         transcripts=report.count("transcript"), texts=report.count("text"),
                         held=report.held, **via)
            if s.get_bind().dialect.name == "sqlite":
                s.execute(text("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')"))
    return report


def _purge_message(engine: Engine, store: RecordingStore, copies: MediaCopies, message_id: int,
                   cutoff: dt.datetime, retention_days: int, actor: str, via: dict[str, str],
                   report: PurgeReport) -> None:
    with session_scope(engine) as s:
        if s.get_bind().dialect.name == "sqlite":
            s.execute(text("PRAGMA secure_delete=ON"))
        message = s.get_one(Message, message_id)
        if message.status in IN_FLIGHT:
            report.held.append(message_id)
            return
        files: list[Path] = []
        shas: list[str] = []
        texts: list[str] = []
        for recording in s.scalars(select(Recording).where(Recording.message_id == message_id,
                                                           Recording.created_at < cutoff)
                                   .order_by(Recording.id)).all():
            path = Path(recording.path)
            if not _inside_store(store, path):
                report.problems.append(f"message {message_id} take {recording.take}: {path} is outside "
                                       f"the recording store {store.root}; left alone")
                continue
            transcript = s.scalars(select(Transcript)
                                   .where(Transcript.recording_id == recording.id)).first()
            if transcript is not None:
                report.purged.append(PurgedItem("transcript", message_id, transcript.id,
                                                transcript.created_at))
                if not report.dry_run:
                    audit.record(s, actor, "transcript.purged", f"message:{message_id}",
                                 transcript_id=transcript.id, recording_id=recording.id,
                                 model=transcript.model,
                                 transcribed_at=transcript.created_at.isoformat(),
                                 retention_days=retention_days, **via)
                    # Its search tokens first (they refer to it), then it (it refers to the recording).
                    s.execute(delete(TranscriptTerm).where(TranscriptTerm.transcript_id == transcript.id))
                    s.delete(transcript)
                    s.flush()
            recorded_at = recording.created_at
            report.purged.append(PurgedItem("recording", message_id, recording.id, recorded_at))
            if not report.dry_run:
                audit.record(s, actor, "recording.purged", f"message:{message_id}",
                             recording_id=recording.id, take=recording.take, sha256=recording.sha256,
                             duration_s=recording.duration_s, recorded_at=recorded_at.isoformat(),
                             file="deleted" if path.exists() else "already missing",
                             retention_days=retention_days, **via)
                s.delete(recording)
                files.append(path)
                shas.append(recording.sha256)
        if message.text is not None and message.created_at < cutoff:
            report.purged.append(PurgedItem("text", message_id, message_id, message.created_at))
            if not report.dry_run:
                audit.record(s, actor, "message.text_purged", f"message:{message_id}",
                             chars=len(message.text), written_at=message.created_at.isoformat(),
                             retention_days=retention_days, **via)
                texts.append(message.text)
                message.text = None
        if report.dry_run:
            s.rollback()
            return
        s.flush()
        for path in files:
            path.unlink(missing_ok=True)
            path.with_suffix(".wav").unlink(missing_ok=True)  # a legacy plain twin a crash left
            try:
                path.parent.rmdir()  # the message's folder, once its last take is gone
            except OSError:
                pass
        remove_copies(store, copies, shas, texts)


def _inside_store(store: RecordingStore, path: Path) -> bool:
    # A damaged row must never make the purge delete a file elsewhere on the machine.
    return path.resolve().is_relative_to(store.root.resolve())
