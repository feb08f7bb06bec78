"""One message as the web console shows it: who may see it, its take and transcript, replay checks.

Rules: a message outside the viewer's BINs/zones is as if it did not exist (``None``); whether a
viewer may play it is the archive's one replay rule (``bin_replay_refusal``), and a refused play
is audited (``recording.play_refused``, ``via=web``) in the caller's transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.archive.store import bin_replay_refusal
from ivr.asr.desk import recording_store_of
from ivr.police_line.store import describe
from storage import audit
from storage.models import Message, Person, Recording, Transcript
from storage.recordings import RecordingStore
from storage.sealed import SealError, open_transcript

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ivr.directory.accounts import Viewer


@dataclass(frozen=True)
class ShownTranscript:
    """A transcript as the message page shows it (opened: text and timed words)."""

    text: str
    words: list[dict[str, Any]]
    model: str
    confidence: float | None
    #: "whisper" or "vosk", and the language the recogniser was told (``None`` for older rows).
    engine: str = "vosk"
    language: str | None = None
    #: A repetition loop survived the retry, or the time cap cut it: the page says to listen instead.
    uncertain: bool = False


def visible_message(s: Session, viewer: Viewer, message_id: int) -> Message | None:
    """The message, if it is one of the viewer's BINs/zones (else ``None``)."""
    message = s.get(Message, message_id)
    if message is None or not viewer.sees_bin(message.bin_id, message.bin.zone_id):
        return None
    return message


def submitted_take(message: Message) -> Recording | None:
    """The take the officer sent (``None``: none yet)."""
    return next((r for r in message.recordings if r.take == message.submitted_take), None)


def message_view(s: Session, viewer: Viewer, message: Message) -> dict[str, Any]:
    """Everything the message page shows but the campaign: report, take, transcript, author, may play."""
    report = describe(s, message.id)
    take = submitted_take(message)
    transcript = None
    if take is not None:
        row = s.scalars(select(Transcript).where(Transcript.recording_id == take.id)).first()
        if row is not None:  # sealed at rest: opened with the key of the take's store
            try:
                key = recording_store_of(Path(take.path)).key
                content = open_transcript(key, take.id, row.text, row.words)
            except SealError as exc:  # altered or swapped: the page shows none, the log says why
                log.error("message %d: its transcript does not open: %s", message.id, exc)
            else:
                transcript = ShownTranscript(content.text, content.words, row.model, row.confidence,
                                             row.engine, row.language, row.uncertain)
    creator = s.get(Person, message.created_by_id) if message.created_by_id else None
    may_play = bin_replay_refusal(s, s.get(Person, viewer.person_id), message.bin) is None
    return {"message": message, "report": report, "take": take, "transcript": transcript,
            "creator": creator.name if creator else None, "bin": message.bin, "may_play": may_play,
            "drill": message.drill}


def web_replay_refusal(s: Session, viewer: Viewer, message: Message, *, audit_refusal: bool) -> str | None:
    """Why the viewer may not play the message (``None``: allowed); ``audit_refusal``: write the refusal."""
    refusal = bin_replay_refusal(s, s.get(Person, viewer.person_id), message.bin)
    if refusal is not None and audit_refusal:
        audit.record(s, viewer.actor, "recording.play_refused", f"message:{message.id}", reason=refusal,
                     via="web")
    return refusal


def verified_take_path(s: Session, store: RecordingStore, message_id: int) -> Path | None:
    """The sent take's file, its checksum verified (``None``: no take; ``RecordingCorrupted``: altered)."""
    take = submitted_take(s.get_one(Message, message_id))
    if take is None:
        return None
    return store.open_verified(Path(take.path), take.sha256)


def audited_csv_export(s: Session, actor: str, message_id: int) -> int | None:
    """The message's campaign id, its CSV export audited (``None``: no campaign, nothing written)."""
    delivery = describe(s, message_id)["delivery"]
    if not delivery:
        return None
    audit.record(s, actor, "campaign.exported", f"message:{message_id}", format="csv")
    return int(delivery["campaign"])  # type: ignore[index]
