"""Police audio at rest: legacy plain recordings sealed, and the copies made for playing removed.

Rules of this module:

* The store seals every new recording (``storage.recordings``); recordings stored before sealing
  existed are sealed by ``seal_legacy`` (run by the service at start): the sealed file is written
  and fsynced, the row pointed at it and committed, and only then the plain file removed, so a
  crash leaves at worst a plain file the next run removes (its row already points at the seal).
* A recording is played from copies: the plaintext copy in the store's private directory, the
  copy published into Asterisk's sounds directory (``audio/<sha256>.wav``), and for a typed
  message the rendered speech of its text. ``remove_copies`` removes them all (the purge calls
  it); ``unpublish_stale`` removes published audio no message in flight still needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select

from ivr.domain.vocabulary import MessageStatus
from ivr.media.voice import DEFAULT_CACHE_DIR, PUBLISH_LOCK, free_text_files
from storage import audit
from storage.db import session_scope
from storage.models import Message, Recording
from storage.recordings import RecordingCorrupted, RecordingStore
from storage.sealed import KeyFileError, file_is_sealed

log = logging.getLogger(__name__)

#: A message in one of these states is still being worked on: its audio is needed (never purged,
#: never unpublished).
IN_FLIGHT = frozenset({MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS, MessageStatus.APPROVED,
                       MessageStatus.DELIVERING})
#: Published audio used this recently stays (a member calling back, an admin replaying: the call
#: plays it right after publishing).
PUBLISHED_GRACE_S = 900.0


@dataclass(frozen=True)
class MediaCopies:
    """Where copies of police audio are made besides the store."""

    #: Asterisk sounds directories the service publishes into (``<spool>/binfoon-sounds``).
    sounds_dirs: tuple[Path, ...] = ()
    #: The prompt renderer's cache (free texts are rendered into its private twin).
    cache_dir: Path = DEFAULT_CACHE_DIR


#: No Asterisk sounds directory (the command line, tests): the store, the private copies and the renderer's.
NO_COPIES = MediaCopies()


def remove_copies(store: RecordingStore, copies: MediaCopies, shas: Iterable[str], texts: Iterable[str]) -> int:
    """Remove every copy of these recordings (by plaintext SHA-256) and of these typed texts; how many files."""
    removed = 0
    for sha in shas:
        store.forget(sha)
        for sounds in copies.sounds_dirs:
            published = sounds / "audio" / f"{sha}.wav"
            if published.exists():
                published.unlink(missing_ok=True)
                removed += 1
    for text in texts:
        for path in free_text_files(text, copies.cache_dir):
            if path.exists():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def needed_audio(engine: Engine) -> set[str]:
    """The SHA-256 of every sent take whose message is still in flight (reviews or delivery to come)."""
    with session_scope(engine) as s:
        rows = s.execute(select(Recording.sha256).join(Message, Message.id == Recording.message_id).where(
            Message.status.in_(IN_FLIGHT), Recording.take == Message.submitted_take)).all()
    return {sha for (sha,) in rows}


def unpublish_stale(engine: Engine, sounds_dirs: Iterable[Path], *, now: float | None = None,
                    grace_s: float = PUBLISHED_GRACE_S) -> int:
    """Remove published audio (``audio/*.wav``) that no message in flight needs and nobody used for
    ``grace_s``: a campaign over, its reviews over, its copy for Asterisk goes. How many files."""
    now = time.time() if now is None else now
    keep = needed_audio(engine)
    removed = 0
    for sounds in sounds_dirs:
        folder = sounds / "audio"
        if not folder.is_dir():
            continue
        for path in folder.glob("*.wav"):
            if path.stem in keep:
                continue
            try:
                with PUBLISH_LOCK:  # not between a call flow's look at the file and its play
                    if now - path.stat().st_mtime >= grace_s:
                        path.unlink()
                        removed += 1
            except FileNotFoundError:
                pass
    return removed


def alert_refused_recording(engine: Engine, subject: str, reason: str) -> None:
    """A stored recording did not open (another key, altered, swapped, gone): a security alert for the
    admins (an audit row of its own, committed whatever the caller then does) and a WARNING line."""
    log.warning("security alert: %s: stored recording refused: %s", subject, reason)
    with session_scope(engine) as s:
        audit.record(s, "system", "security.alert", subject, kind="recording_refused", reason=reason)


def remove_shared_text_renders(cache_dir: Path) -> int:
    """Remove the rendered free texts earlier versions left in the shared prompt cache
    (``<cache>/<language>/text-*.wav``, 0644: typed police messages); how many."""
    removed = 0
    for path in cache_dir.glob("*/text-*.wav"):
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except PermissionError as exc:  # the cache was built by another user: say it, keep going
            log.warning("cannot remove the rendered police text %s: %s", path, exc)
    return removed


@dataclass
class SealReport:
    """What ``seal_legacy`` did."""

    sealed: int = 0
    problems: list[str] = field(default_factory=list)


def seal_legacy(engine: Engine, store: RecordingStore, actor: str = "service:at_rest") -> SealReport:
    """Seal every recording still stored as a plain WAV (checked against its SHA-256 first).

    A damaged or missing file is reported, not sealed (its row stays as it is). Audited once, with
    the count. Raises ``KeyFileError`` if the key file is unusable (nothing is changed then).
    """
    store.key()  # an unusable key file is said now (the service does not start), not at the first recording
    report = SealReport()
    root = store.root.resolve()
    with session_scope(engine) as s:
        rows = s.execute(select(Recording.id, Recording.path, Recording.sha256).order_by(Recording.id)).all()
    for recording_id, raw_path, sha in rows:
        path = Path(raw_path)
        if not path.resolve().is_relative_to(root) or not path.exists():
            continue  # elsewhere (left alone), or purged/missing: nothing to seal
        if file_is_sealed(path):
            _remove_plain_twin(path)
            continue
        try:
            sealed = store.seal_file(path, sha)
        except RecordingCorrupted as exc:
            report.problems.append(f"recording {recording_id}: {exc}")
            continue
        with session_scope(engine) as s:
            row = s.get(Recording, recording_id)
            if row is None:  # purged meanwhile
                sealed.unlink(missing_ok=True)
                continue
            row.path = str(sealed)
        path.unlink(missing_ok=True)
        report.sealed += 1
    if report.sealed or report.problems:
        with session_scope(engine) as s:
            audit.record(s, actor, "recordings.sealed", "recording-store", sealed=report.sealed,
                         problems=len(report.problems))
        log.info("sealed %d plain recording(s) at rest (%d problem(s))", report.sealed, len(report.problems))
    for problem in report.problems:
        log.error("not sealed: %s", problem)
    return report


def _remove_plain_twin(sealed: Path) -> None:
    # A crash between the commit and the unlink leaves the plain file beside its seal.
    for suffix in (".wav",):
        twin = sealed.with_suffix(suffix)
        if twin != sealed and twin.exists():
            twin.unlink(missing_ok=True)


__all__ = [
    "IN_FLIGHT",
    "NO_COPIES",
    "KeyFileError",
    "MediaCopies",
    "SealReport",
    "alert_refused_recording",
    "needed_audio",
    "remove_copies",
    "remove_shared_text_renders",
    "seal_legacy",
    "unpublish_stale",
]
