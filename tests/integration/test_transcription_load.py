"""Transcription never blocks calls (issue 6, acceptance), against the real Asterisk.

During a 50-member campaign, with a recording being transcribed by the real Whisper path (Whisper base,
the default Dutch model, in its worker process; issue 15's acceptance; the Vosk path's load was measured
the same way in issue 6):
- the event loop never stalls more than 100 ms (a 5 ms ticker measures the longest gap);
- the AMI session is never re-established (one login, no disconnect);
- a take is transcribed within one message-length of the recording's end, and it is a take that
  was only saved, never sent: transcription starts when the recording is stored.

The figures are printed (``pytest -s``); the 100 ms bound is the issue's requirement, not a benchmark.
When the loop is late, ``LoopWatch`` says why: what the loop's thread was running, how long it
waited for a CPU (Linux schedstat: the machine was busy), and long garbage collections (which
hold the GIL; the service freezes its start-up objects out of the collector for that reason).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import gc
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.telephony.call import Recorded
from ivr.media.voice import PromptRenderer
from ivr.police_line.store import Officer
from ivr.delivery.report import campaign_report
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import member_cases, script_members, seed_members
from storage.db import session_scope
from storage.models import Campaign, CallAttempt, Recording, Transcript
from storage.sealed import open_transcript
from ivr.domain.vocabulary import Urgency
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import (
    Binfoon, campaign_done, message_seconds, start_binfoon, submit_recorded, utc, wav_seconds,
)

pytestmark = pytest.mark.integration

ESPEAK = SHARED_DIR / "audio" / "espeak-nl"
CLIP = ESPEAK / "02.wav"  # the campaign's message
MEMBERS = 50
MAX_STALL_S = 0.1


class LoopWatch:
    """A task that sleeps ``period_s`` again and again: a gap much longer than that is a stall.

    A thread also looks at the loop every 10 ms; while the loop is late by more than ``suspect_s``,
    it records what the loop's thread is running, so a stall names its cause.
    """

    def __init__(self, period_s: float = 0.005, suspect_s: float = 0.04) -> None:
        self.period_s = period_s
        self.suspect_s = suspect_s
        #: (gap in seconds, when it ended in seconds since ``start``), longest first after ``stop``.
        self.gaps: list[tuple[float, float]] = []
        #: Stack (innermost last) of the loop's thread -> how many 10 ms samples caught it there.
        self.stall_stacks: collections.Counter[str] = collections.Counter()
        self._task: asyncio.Task[None] | None = None
        self._began = 0.0
        self._last = 0.0
        self._stop = asyncio.Event()
        self._halt = threading.Event()
        self._sampler: threading.Thread | None = None
        #: Gaps longer than ``suspect_s``: (gap, of which runnable but not on a CPU, when since ``start``).
        self.late: list[tuple[float, float, float]] = []
        #: Garbage collections longer than ``suspect_s``: (seconds, generation, when since ``start``).
        self.gc_pauses: list[tuple[float, int, float]] = []
        self._gc_began = 0.0

    def start(self) -> None:
        """Start ticking on the running loop, the sampling thread and the collector's stopwatch."""
        self._began = self._last = time.monotonic()
        gc.callbacks.append(self._gc)
        self._task = asyncio.create_task(self._tick(), name="loop-watch")
        self._sampler = threading.Thread(target=self._sample, args=(threading.get_ident(),), daemon=True)
        self._sampler.start()

    async def _tick(self) -> None:
        # The kernel's count of how long this thread waited, runnable, for a CPU (Linux schedstat):
        # a late loop that waited that long was starved by the machine, not blocked by our code.
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        try:
            waited = self._run_delay_s(fd)
            while not self._stop.is_set():
                await asyncio.sleep(self.period_s)
                now = time.monotonic()
                gap = now - self._last
                self.gaps.append((gap, now - self._began))
                self._last = now
                if gap > self.suspect_s:
                    self.late.append((gap, self._run_delay_s(fd) - waited, now - self._began))
                waited = self._run_delay_s(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _run_delay_s(fd: int) -> float:
        return int(os.pread(fd, 128, 0).split()[1]) / 1e9

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        # A collection holds the GIL: every thread, the loop's and the sampler's, waits for it.
        if phase == "start":
            self._gc_began = time.monotonic()
        elif time.monotonic() - self._gc_began > self.suspect_s:
            self.gc_pauses.append((time.monotonic() - self._gc_began, info["generation"],
                                   time.monotonic() - self._began))

    def _sample(self, loop_thread: int) -> None:
        while not self._halt.wait(0.01):
            if time.monotonic() - self._last > self.suspect_s:
                frame = sys._current_frames().get(loop_thread)
                if frame is not None:
                    stack = traceback.format_stack(frame, limit=12)
                    self.stall_stacks["".join(stack[-8:])] += 1

    async def stop(self) -> None:
        """Stop ticking (again: nothing happens) and sort the gaps, longest first."""
        if self._task is None or self._stop.is_set():
            return
        self._stop.set()
        self._halt.set()
        gc.callbacks.remove(self._gc)
        await self._task
        self.gaps.sort(reverse=True)

    @property
    def max_gap_s(self) -> float:
        """The longest gap measured (after ``stop``)."""
        return self.gaps[0][0] if self.gaps else 0.0

    def culprits(self, top: int = 3) -> str:
        """Where the loop's thread was caught most often while the loop was late."""
        late = ", ".join(f"{g * 1000:.0f} ms (waiting for a CPU {w * 1000:.0f} ms) at {at:.1f} s"
                         for g, w, at in sorted(self.late, reverse=True)[:5])
        pauses = ", ".join(f"gen {g} {d * 1000:.0f} ms at {at:.1f} s" for d, g, at in self.gc_pauses)
        return (f"late ticks: {late}\ngarbage collections: {pauses or 'none long'}\n"
                + "\n".join(f"--- {n} x 10 ms:\n{stack}" for stack, n in self.stall_stacks.most_common(top)))


def _long_take(target: Path) -> Path:
    """Every espeak-nl clip in a row: a ~53 s take at 8 kHz mono 16-bit, as Asterisk records it
    (a police message may last 120 s)."""
    from pydub import AudioSegment

    take = AudioSegment.empty()
    for clip in sorted(ESPEAK.glob("*.wav")):
        take += AudioSegment.from_wav(clip)
    take.set_frame_rate(8000).set_channels(1).set_sample_width(2).export(target, format="wav")
    return target


@dataclass(frozen=True)
class Snapshot:
    """What the database says at one moment (a few columns: polling must stay light)."""

    campaign_running: bool
    dialled: int
    #: The recordings that have a transcript.
    transcribed: frozenset[int]


def _snapshot(binfoon: Binfoon) -> Snapshot:
    """Is the campaign running, how many calls were dialled, which recordings have a transcript (blocking)."""
    with session_scope(binfoon.world.engine) as s:
        finished = s.execute(select(Campaign.finished_at)).first()
        dialled = s.scalar(select(func.count(CallAttempt.id)).where(CallAttempt.dialled_at.is_not(None))) or 0
        transcribed = frozenset(s.scalars(select(Transcript.recording_id)))
        return Snapshot(finished is not None and finished[0] is None, dialled, transcribed)


def _recordings(binfoon: Binfoon) -> dict[int, tuple[Recording, Transcript | None]]:
    """Every recording with its transcript, by message id (blocking)."""
    with session_scope(binfoon.world.engine) as s:
        return {r.message_id: (r, s.scalar(select(Transcript).where(Transcript.recording_id == r.id)))
                for r in s.scalars(select(Recording))}


def _seconds_after(stored_at: dt.datetime, ended_at: dt.datetime | None) -> float:
    """Seconds from a recording's end to its transcript's ``created_at`` (SQLite gives naive UTC)."""
    stored, ended = utc(stored_at), ended_at
    assert stored is not None and ended is not None
    return (stored - ended).total_seconds()


async def _read(binfoon: Binfoon) -> Snapshot:
    # SQL off the loop: a query waiting for SQLite's write lock would stall the loop being measured.
    return await asyncio.to_thread(_snapshot, binfoon)


async def _until(binfoon: Binfoon, done: Callable[[Snapshot], bool], timeout_s: float, what: str) -> Snapshot:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        snapshot = await _read(binfoon)
        if done(snapshot):
            return snapshot
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.2)


@pytest.mark.serial
async def test_transcription_during_a_50_member_campaign_never_stalls_the_loop_nor_the_ami(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer, whisper_model_path: Path) -> None:
    model = whisper_model_path
    long_take = await asyncio.to_thread(_long_take, tmp_path / "long-take.wav")
    long_take_s = wav_seconds(long_take)
    binfoon = await start_binfoon(
        lab, tmp_path, renderer, speech_model_path=str(model), max_channels=MEMBERS, max_cps=50.0,
        member_ring_timeout_s=3.0, review_ring_timeout_s=1.0, urgent_retry_after_s=1.0,
        no_key_retry_after_s=1.0, key_timeout_s=4.0, member_reminders=1)
    watch = LoopWatch()
    try:
        # The workers load the model first, as the service does when it starts. Loading a model
        # takes time (`binfoon bench transcribe` reports it as load_s) and would otherwise
        # count against the one-message-length bound, which is about a running service; it happens
        # in the worker process either way, so the loop is not spared anything by this.
        began = time.monotonic()
        assert await binfoon.app.transcripts.warm_up()
        warm_s = time.monotonic() - began
        cases = member_cases(MEMBERS, await message_seconds(renderer, CLIP))
        people = seed_members(binfoon.world.engine, 12, cases)
        script_members(lab, binfoon.world.engine, people)

        watch.start()
        clip_ended = utc(dt.datetime.now(dt.timezone.utc))
        message_id = await submit_recorded(binfoon, CLIP)  # urgent, nobody reviews: forwarded by the zone
        # Once member calls are up, an officer's new take is saved (a draft, never sent).
        await _until(binfoon, lambda now: now.dialled >= 20, 90, "20 member calls dialled")
        officer = Officer(binfoon.world.officer_id, "P", "nl", None)
        draft_id = await binfoon.app.desk.create_draft(officer, binfoon.world.bin_id, Urgency.PREVENTIVE)
        spool = binfoon.settings.data_dir / "spool-long.wav"
        await asyncio.to_thread(spool.write_bytes, long_take.read_bytes())
        take_ended = utc(dt.datetime.now(dt.timezone.utc))  # the officer pressed #: the file is complete
        take = await binfoon.app.desk.keep_take(draft_id, 1, Recorded(spool, "dtmf"), "test")
        binfoon.app.chain.take_kept(draft_id, take.recording_id)  # as the police line does
        recording_id = take.recording_id
        assert recording_id is not None
        then = await _until(binfoon, lambda now: recording_id in now.transcribed,
                            long_take_s + 60, "the long take's transcript")
        campaign = await campaign_done(binfoon, timeout_s=240)
        await watch.stop()

        by_message = await asyncio.to_thread(_recordings, binfoon)
        clip_recording, clip_transcript = by_message[message_id]
        long_recording, long_transcript = by_message[draft_id]
        assert clip_transcript is not None and long_transcript is not None
        clip_latency_s = _seconds_after(clip_transcript.created_at, clip_ended)
        long_latency_s = _seconds_after(long_transcript.created_at, take_ended)
        report = campaign_report(binfoon.world.engine, campaign.id, binfoon.app.campaigns.policies,
                                 dt.datetime.now(dt.timezone.utc))
        states = {line.person_id: line.state for line in report.members}
        longest = ", ".join(f"{g * 1000:.0f} ms at {at:.1f} s" for g, at in watch.gaps[:5])
        campaign_then = "running" if then.campaign_running else "over"
        print(f"\nmodel warm-up (worker start + model load, before the campaign): {warm_s:.2f} s"
              f"\nmax event-loop gap: {watch.max_gap_s * 1000:.1f} ms over {len(watch.gaps)} ticks "
              f"(longest: {longest})"
              f"\nAMI logins {lab.ami.logins}, disconnects {lab.ami.disconnects}"
              f"\ntranscript latency: saved take {long_latency_s:.2f} s "
              f"for {long_recording.duration_s:.1f} s of audio (campaign {campaign_then}, {then.dialled} calls dialled when stored); "
              f"campaign message {clip_latency_s:.2f} s for {clip_recording.duration_s:.1f} s"
              f"\ncampaign: {report.counts()}")
        if watch.late:
            print(f"late by more than {watch.suspect_s * 1000:.0f} ms:\n{watch.culprits()}")
        # The transcription overlapped the campaign: stored while the campaign was still calling.
        assert then.campaign_running
        assert watch.max_gap_s < MAX_STALL_S, (
            f"the event loop stalled {watch.max_gap_s * 1000:.0f} ms; it was running:\n{watch.culprits()}")
        assert (lab.ami.logins, lab.ami.disconnects, lab.ami.watchdog_aborts) == (1, 0, 0)
        # The acceptance: the take saved while the campaign calls is transcribed within its own length.
        # (The campaign message's own take is transcribed during the review, before any member call:
        # its latency is printed above, not asserted.)
        assert 0 < long_latency_s <= long_recording.duration_s
        assert clip_latency_s > 0
        # Sealed at rest: its words are read with the recordings' key.
        opened = open_transcript(binfoon.app.desk.store.key, long_recording.id, long_transcript.text,
                                 long_transcript.words)
        assert (long_transcript.engine, long_transcript.model) == ("whisper", model.name) and opened.words
        # And the calls went as the households were scripted.
        wrong = {pid: (case.behaviour, states[pid], case.expected)
                 for pid, case in people.items() if states[pid] != case.expected}
        assert wrong == {}
        assert report.calls_after_confirming == 0
    finally:
        await watch.stop()
        await binfoon.app.stop()
