"""Retention runs by itself: ``ivr.archive.retention.RetentionSweep`` and the service's poll loop that starts it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Coroutine

import pytest

from ivr.app import BinfoonApp
from ivr.archive.at_rest import MediaCopies
from ivr.archive.retention import ACTOR, RetentionSweep
from ivr.archive.store import Archive
from tests.unit.archive.test_archive import NOW, Lab, make_lab


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return make_lab(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path)


def test_the_sweep_is_due_at_start_then_once_a_day(lab: Lab) -> None:
    ticks = Ticks()
    sweep = RetentionSweep(lab.archive, 30, lambda: NOW, monotonic=ticks)
    assert sweep.due()  # at start
    asyncio.run(sweep.run())
    assert not sweep.due()
    ticks.now += 86400 - 1
    assert not sweep.due()
    ticks.now += 1
    assert sweep.due()
    # Retention 0 keeps everything: never due.
    assert not RetentionSweep(lab.archive, 0, lambda: NOW, monotonic=ticks).due()


def test_a_sweep_purges_what_is_past_its_time_and_audits_it_as_the_service(lab: Lab) -> None:
    old = lab.message(NOW - dt.timedelta(days=31), transcript="oude melding")
    young = lab.message(NOW - dt.timedelta(days=29), transcript="jonge melding")
    sweep = RetentionSweep(lab.archive, 30, lambda: NOW, monotonic=Ticks())
    asyncio.run(sweep.run())
    assert sweep.last_report is not None
    assert sorted((i.kind, i.message_id) for i in sweep.last_report.purged) == [
        ("recording", old), ("transcript", old)]
    assert [(a.actor, a.subject) for a in lab.audits("recording.purged")] == [(ACTOR, f"message:{old}")]
    assert [e.message_id for e in lab.archive.search(["melding"], "t")] == [young]


def test_a_failing_sweep_is_logged_and_tried_again_the_next_day(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database locked")

    lab.archive.purge_expired = broken  # type: ignore[method-assign]
    sweep = RetentionSweep(lab.archive, 30, lambda: NOW, monotonic=ticks)
    asyncio.run(sweep.run())
    assert sweep.last_report is None and "retention purge failed" in caplog.text
    assert not sweep.due()
    ticks.now += 86400
    assert sweep.due()


async def test_the_service_poll_loop_runs_the_sweep_once_at_start(lab: Lab) -> None:
    """``BinfoonApp._poll`` (the running service) starts the sweep on its first pass, and not again that day."""
    old = lab.message(NOW - dt.timedelta(days=400), transcript="oud")
    tasks: list[asyncio.Future[Any]] = []

    async def nothing() -> int:
        return 0

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.ensure_future(coro))

    app = SimpleNamespace(POLL_S=0.0, TRANSCRIBE_EVERY_S=1e9, ingest_cel=nothing, reconcile=nothing,
                          _spawn=spawn, _transcribe=None, _leads=lambda: True,
                          retention=RetentionSweep(lab.archive, 30, lambda: NOW, monotonic=Ticks()))
    poller = asyncio.ensure_future(BinfoonApp._poll(app))  # type: ignore[arg-type]
    for _ in range(200):  # many passes of the loop
        await asyncio.sleep(0)
        if app.retention.last_report is not None:
            break
    await asyncio.gather(*tasks)
    for _ in range(20):
        await asyncio.sleep(0)
    poller.cancel()
    await asyncio.gather(poller, return_exceptions=True)
    assert len(tasks) == 1
    assert [a.subject for a in lab.audits("recording.purged")] == [f"message:{old}"]


def test_the_sweep_also_removes_published_audio_no_message_needs_every_minute(lab: Lab, tmp_path: Path) -> None:
    """Issue 14 item 7: the service's copy for Asterisk of a message that is over goes, without waiting a day."""
    sounds = tmp_path / "binfoon-sounds"
    (sounds / "audio").mkdir(parents=True)
    stale = sounds / "audio" / f"{'a' * 64}.wav"  # no message in flight has this content
    stale.write_bytes(b"police audio")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    # A typed police text an older version rendered into the shared prompt cache (0644).
    cache = tmp_path / "rendered"
    (cache / "nl").mkdir(parents=True)
    typed = cache / "nl" / "text-0123456789ab.wav"
    typed.write_bytes(b"typed police text")
    prompt = cache / "nl" / "member_thanks-0123456789ab.wav"
    prompt.write_bytes(b"a catalogue prompt")
    archive = Archive(lab.engine, lab.store, operator="service", copies=MediaCopies((sounds,), cache))
    ticks = Ticks()
    sweep = RetentionSweep(archive, 30, lambda: NOW, monotonic=ticks, sounds_dirs=[sounds])
    assert sweep.due()
    asyncio.run(sweep.run())
    assert not stale.exists() and sweep.last_report is not None and not sweep.due()
    assert not typed.exists() and prompt.exists()
    stale.write_bytes(b"police audio")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    ticks.now += 60
    assert sweep.due()  # the minute's unpublishing, not the day's purge
    sweep.last_report = None
    asyncio.run(sweep.run())
    assert not stale.exists() and sweep.last_report is None
