"""The transcription desk: every stored recording gets a transcript, now or once a model is there.

Rules:
- the database is the truth: a recording is "untranscribed" exactly when it has no ``Transcript``
  row, so after a restart, or once a model appears, ``transcribe_pending`` finds the backlog again;
- recognition runs in the worker pool (``ivr.asr.pool``), SQL in a worker thread: the event
  loop only waits;
- without a usable model nothing is transcribed, nothing is lost, and the log says so (once per
  change, not on every call);
- a recording that failed with the current model is not retried by ``transcribe_pending`` in this
  process (no hot loop over a broken file); ``transcribe_recording`` always tries;
- a transcript is stored sealed (``storage.sealed``: the recordings' key, text and words together)
  with the blind-index tokens of its words, never as plaintext;
- a recording is transcribed in its message's BIN's language (nl, fr, de), told to the engine,
  never detected, and stored in that language when the engine names none (Vosk: one language
  per model), so search reads it with the right language's word forms; a transcript the engine
  marks uncertain (a repetition loop, the time cap) is stored as such, and the log names the
  recording and the reason (counts only: no word of a message is ever logged).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from ivr.asr.models import configured_model_path, model_problem, usable_model_path
from ivr.asr.pool import TranscriptionFailed, TranscriptionPool
from ivr.asr.transcriber import EngineOptions, TranscriptResult
from ivr.config import Settings
from storage.db import session_scope
from storage.models import Bin, Message, Recording, Transcript, utcnow
from storage.recordings import RecordingCorrupted, RecordingStore, open_recording
from storage.sealed import TranscriptContent, add_transcript

log = logging.getLogger(__name__)

INSTALL_HINT = "install one with `binfoon models install nl` or set speech_model_path"


def recording_store_of(path: Path) -> RecordingStore:
    """The store holding a recording's file (``<store>/message-NNNNNN/take-N.sealed``, as
    ``open_recording`` finds it): its key seals the recording's transcript too."""
    return RecordingStore(path.parent.parent)


class TranscriptionDesk:
    """Finds recordings without a transcript, transcribes them in worker processes, stores the result."""

    def __init__(self, engine: Engine, model_locator: Callable[[], Path | None], *, workers: int = 1,
                 why_no_model: Callable[[], str] = lambda: "no model configured",
                 clock: Callable[[], dt.datetime] = utcnow, options: EngineOptions | None = None) -> None:
        self.engine = engine
        self.model_locator = model_locator
        self.why_no_model = why_no_model
        self.workers = max(1, workers)
        self.options = options or EngineOptions()
        self.clock = clock
        self._pool: TranscriptionPool | None = None
        self._inflight: dict[int, asyncio.Future[Transcript | None]] = {}
        self._failed: dict[int, Path] = {}  # recording id -> the model it failed with
        self._last_said: tuple[Path | None, int] | None = None

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings) -> TranscriptionDesk:
        """A desk using the configured model (looked up again on every call), worker count and engine
        options."""
        def why() -> str:
            path = configured_model_path(settings)
            return model_problem(path) or f"{path} is not usable"
        return cls(engine, lambda: usable_model_path(settings), workers=settings.speech_workers,
                   why_no_model=why, options=EngineOptions.from_settings(settings))

    # --- what is there ------------------------------------------------------------------------

    def untranscribed_ids(self) -> list[int]:
        """Ids of the recordings without a transcript, oldest first (blocking SQL)."""
        with session_scope(self.engine) as s:
            query = (select(Recording.id).outerjoin(Transcript, Transcript.recording_id == Recording.id)
                     .where(Transcript.id.is_(None)).order_by(Recording.id))
            return list(s.scalars(query))

    def untranscribed_count(self) -> int:
        """How many recordings have no transcript (blocking SQL)."""
        with session_scope(self.engine) as s:
            query = (select(func.count(Recording.id))
                     .outerjoin(Transcript, Transcript.recording_id == Recording.id)
                     .where(Transcript.id.is_(None)))
            return int(s.scalar(query) or 0)

    async def count_untranscribed(self) -> int:
        """``untranscribed_count`` off the event loop."""
        return await asyncio.to_thread(self.untranscribed_count)

    def model_path(self) -> Path | None:
        """The usable model folder now, or ``None``; the worker pool follows it when it changes."""
        path = self.model_locator()
        if self._pool is not None and (path is None or self._pool.model_path != path):
            self._pool.close(wait=False)
            self._pool = None
        if path is not None and self._pool is None:
            self._pool = TranscriptionPool(path, self.workers, self.options)
        return path

    # --- work ---------------------------------------------------------------------------------

    async def start(self) -> bool:
        """Say whether a model is in use and load it in the workers now, so the first recording
        does not wait for the model to load; then do the backlog. True when a model is in use."""
        path = self.model_path()
        try:
            await self.warm_up()
        except TranscriptionFailed as exc:
            log.error("transcription workers could not start: %s", exc)
        await self.transcribe_pending()
        return path is not None

    async def warm_up(self) -> bool:
        """Start the workers and wait until they hold the model (cheap once done); False without a
        usable model. Raises ``TranscriptionFailed`` when the workers cannot start."""
        if self.model_path() is None or self._pool is None:
            return False
        await self._pool.warm_up()
        return True

    async def transcribe_pending(self) -> int:
        """Transcribe every recording that has none yet; returns how many transcripts were stored."""
        ids = await asyncio.to_thread(self.untranscribed_ids)
        path = self.model_path()
        self._say_state(path, len(ids))
        if path is None or not ids:
            return 0
        todo = [i for i in ids if self._failed.get(i) != path]
        gate = asyncio.Semaphore(self.workers)

        async def one(recording_id: int) -> Transcript | None:
            async with gate:
                return await self.transcribe_recording(recording_id)

        results = await asyncio.gather(*(one(i) for i in todo))
        stored = sum(1 for r in results if r is not None)
        if stored:
            log.info("transcribed %d recording(s) with %s", stored, path.name)
        return stored

    async def transcribe_recording(self, recording_id: int) -> Transcript | None:
        """The transcript of one recording: the stored one, a new one, or ``None`` (no model, failed)."""
        running = self._inflight.get(recording_id)
        if running is not None:  # the same recording asked for twice (save hook + backlog): one job
            return await asyncio.shield(running)
        future: asyncio.Future[Transcript | None] = asyncio.get_running_loop().create_future()
        self._inflight[recording_id] = future
        try:
            transcript = await self._transcribe(recording_id)
            future.set_result(transcript)
            return transcript
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._inflight[recording_id]

    async def _transcribe(self, recording_id: int) -> Transcript | None:
        existing, audio, language = await asyncio.to_thread(self._lookup, recording_id)
        if existing is not None or audio is None:
            return existing
        path = self.model_path()
        if path is None or self._pool is None:
            log.warning("recording %d kept untranscribed: no speech model (%s); %s",
                        recording_id, self.why_no_model(), INSTALL_HINT)
            return None
        try:
            result = await self._pool.transcribe(audio, language)
        except TranscriptionFailed as exc:
            self._failed[recording_id] = path
            log.error("recording %d kept untranscribed: %s", recording_id, exc)
            return None
        self._failed.pop(recording_id, None)
        stored = await asyncio.to_thread(self._store, recording_id, result, language)
        if stored is not None and result.uncertain:
            log.warning("recording %d: transcript stored as uncertain (%s)", recording_id,
                        result.uncertain_reason or "no reason given")
        return stored

    def _lookup(self, recording_id: int) -> tuple[Transcript | None, Path | None, str | None]:
        """The stored transcript, or the recording's plaintext audio and its BIN's language code."""
        with session_scope(self.engine) as s:
            existing = s.scalar(select(Transcript).where(Transcript.recording_id == recording_id))
            if existing is not None:
                return existing, None, None
            found = s.execute(select(Recording, Bin.language)
                              .join(Message, Recording.message_id == Message.id)
                              .join(Bin, Message.bin_id == Bin.id)
                              .where(Recording.id == recording_id)).first()
            if found is None:
                return None, None, None
            recording, language = found
            try:  # sealed at rest: the transcriber reads the verified plaintext copy
                return None, open_recording(Path(recording.path), recording.sha256), language.value
            except RecordingCorrupted as exc:
                log.error("recording %d kept untranscribed: %s", recording_id, exc)
                return None, None, None

    def _store(self, recording_id: int, result: TranscriptResult,
               bin_language: str | None = None) -> Transcript | None:
        # Stored in the language the engine was told, or, when it names none (Vosk), the BIN's.
        # Sealed with the key of the recording's own store (as ``open_recording`` reads it), with its
        # search tokens in the same transaction: no plaintext of it reaches the database.
        try:
            with session_scope(self.engine) as s:
                recording = s.get(Recording, recording_id)
                if recording is None:
                    return None  # purged while it was being transcribed
                key = recording_store_of(Path(recording.path)).key()
                return add_transcript(s, key, recording_id, TranscriptContent(result.text, result.words),
                                      confidence=result.confidence, model=result.model,
                                      created_at=self.clock(), engine=result.engine,
                                      language=result.language or bin_language,
                                      uncertain=result.uncertain)
        except IntegrityError:  # another process stored it first: theirs stands
            return self._lookup(recording_id)[0]

    def _say_state(self, path: Path | None, untranscribed: int) -> None:
        # Say it when something changed, so a periodic call does not flood the log.
        state = (path, untranscribed)
        if state == self._last_said:
            return
        self._last_said = state
        if path is None and untranscribed:
            log.warning("no speech model (%s): %d recording(s) kept untranscribed; %s",
                        self.why_no_model(), untranscribed, INSTALL_HINT)
        elif path is None:
            log.warning("no speech model (%s): new recordings will be kept untranscribed; %s",
                        self.why_no_model(), INSTALL_HINT)
        elif untranscribed:
            log.info("transcribing %d recording(s) with %s", untranscribed, path)

    def close(self) -> None:
        """Stop the worker processes (blocking until they exit)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def aclose(self) -> None:
        """``close`` off the event loop."""
        await asyncio.to_thread(self.close)
