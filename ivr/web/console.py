"""What the web console does, apart from HTTP: it reads the database and acts through the app.

Rules:
- nothing here decides anything the phone side decides: a typed alert goes through the same
  steps as ``binfoon message send`` (``synthesize`` then ``MessageDesk.submit_text_message``, one
  transaction with its author), an uploaded one through the police line's steps (draft, kept take,
  submit); both then go on to the chain's next steps (``ivr.chain.steps``: transcript, review), in the
  service at once, on a database alone at the service's next sweep;
- a test call is an outbound call like any other, placed as ``ivr.web.test_calls`` says;
- campaign progress is ``ivr.delivery.report.campaign_report`` (the dialer's own view), never recounted;
- no SQL here: reads and writes are the features' own functions (``ivr.delivery.board``,
  ``ivr.directory.store``, ...), each given a session of ``Console.run``/``Console.tx``;
- SQL and audio work run in worker threads, speech in the service's rendering processes (the
  event loop keeps serving calls); password checks (argon2) and the live streams' polling have
  their own bounded threads (``signin_tx``, ``read``), apart from the pool the call flows' database
  steps use, so a sign-in flood or many open boards cannot delay a PIN check on the phone;
- an upload reaches ffmpeg only if it starts like an audio file (a playlist or anything else
  ffmpeg would follow to other files never does), and is then decoded only as that container,
  with plain files as the only protocol (``convert_upload``);
- the console runs inside ``binfoon serve`` (``Console.from_app``) or, for tests and tools, on a
  database alone (``Console.standalone``: no calls can be placed then).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ivr.config import Settings
from ivr.delivery.board import board_rows, stage_of
from ivr.delivery.policy import retry_policies
from ivr.delivery.policy import RetryPolicy
from ivr.delivery.progress import confirmation_times
from ivr.delivery.report import CampaignReport, campaign_report
from ivr.delivery.states import BAR
from ivr.directory.accounts import Viewer
from ivr.domain.vocabulary import Urgency
from ivr.media.tts import TELEPHONE_RATE_HZ, synthesize
from ivr.police_line.store import MessageDesk, Officer
from ivr.telephony.call import Recorded
from ivr.web.test_calls import MemberTestCalls
from storage.db import Desk
from storage.models import utcnow
from storage.recordings import RecordingStore, wav_facts

if TYPE_CHECKING:
    from ivr.app import BinfoonApp

log = logging.getLogger(__name__)
T = TypeVar("T")

class ConsoleBusy(RuntimeError):
    """Too many sign-ins wait for a password check: refused at once (the visitor tries again)."""


class AfterSend(Protocol):
    """What follows a message sent from the console (the chain, in the running service)."""

    def take_kept(self, message_id: int, recording_id: int | None) -> None:
        """An uploaded take was stored."""

    def submitted(self, message_id: int) -> None:
        """A message was submitted."""

    def written_submitted(self, message_id: int) -> None:
        """A typed message was submitted with its spoken take."""


@dataclass
class Progress:
    """A campaign's live bar."""

    campaign_id: int
    members: int
    bar: dict[str, int]
    status: str
    #: The written copies and the members not called (``CampaignReport.copy_summary``).
    copies: dict[str, Any] = field(default_factory=dict)


def bar_of(report: CampaignReport) -> dict[str, int]:
    """A campaign report's members counted into the bar's segments."""
    counts = report.counts()
    return {segment: sum(counts.get(state, 0) for state in states) for segment, states in BAR.items()}


def progress_of(engine: Engine, campaign_id: int, policies: dict[bool, RetryPolicy], now: dt.datetime,
                settings: Settings | None = None) -> Progress:
    """The bar of one campaign, from the same report the dialer's decisions follow."""
    report = campaign_report(engine, campaign_id, policies, now, settings)
    return Progress(campaign_id, len(report.members), bar_of(report), report.status, report.copy_summary())


@dataclass
class Console(MemberTestCalls):
    """The console's handle on the chain: database, desk, settings and (when serving) the app."""

    settings: Settings
    engine: Engine
    desk: MessageDesk
    app: BinfoonApp | None = None
    clock: Callable[[], dt.datetime] = utcnow
    #: The chain's next steps after a send; ``None`` on a database alone (the service picks the
    #: message up at its next sweep).
    after: AfterSend | None = None
    #: Set when the server stops: live streams end.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    #: Test calls placed from the console: call id -> outcome (``dialling`` until known).
    test_calls: dict[str, str] = field(default_factory=dict)
    #: The latest test call per member: person id -> call id.
    test_call_of: dict[int, str] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _store: Desk = field(init=False, repr=False)
    #: Password checks (argon2) and the live streams' polling have their own bounded threads, never
    #: the pool the call flows' database steps share (``tx``, asyncio's default): a sign-in flood or
    #: many open boards cannot delay a PIN check on the phone.
    hashing: ThreadPoolExecutor = field(init=False, repr=False)
    reading: ThreadPoolExecutor = field(init=False, repr=False)
    #: Sign-ins hashing or waiting for a thread (beyond ``web_hash_workers + web_signin_queue``: busy).
    _signins: int = field(default=0, init=False, repr=False)

    @classmethod
    def from_app(cls, app: BinfoonApp) -> Console:
        """The console of a running service: its desk, so submitted messages go to review at once."""
        return cls(app.settings, app.engine, app.desk, app, app.clock, after=app.chain)

    @classmethod
    def standalone(cls, settings: Settings, engine: Engine) -> Console:
        """A console on the database only (messages wait for ``binfoon serve`` to pick them up)."""
        return cls(settings, engine, MessageDesk(engine, RecordingStore(settings.data_dir / "recordings")))

    @property
    def policies(self) -> dict[bool, RetryPolicy]:
        """The retry policies, as the dialer uses them."""
        return self.app.campaigns.policies if self.app is not None else retry_policies(self.settings)

    def __post_init__(self) -> None:
        self._store = Desk(self.engine)
        self.hashing = ThreadPoolExecutor(self.settings.web_hash_workers, thread_name_prefix="web-hash")
        self.reading = ThreadPoolExecutor(self.settings.web_stream_workers, thread_name_prefix="web-read")

    def run(self, work: Callable[[Session], T]) -> T:
        """One transaction (blocking)."""
        return self._store.run(work)

    async def tx(self, work: Callable[[Session], T]) -> T:
        """One transaction in a worker thread."""
        return await self._store.tx(work)

    async def signin_tx(self, work: Callable[[Session], T]) -> T:
        """One transaction that checks a password, on the password threads (``ConsoleBusy`` at once
        when ``web_signin_queue`` sign-ins already wait for one)."""
        if self._signins >= self.settings.web_hash_workers + self.settings.web_signin_queue:
            raise ConsoleBusy("too many sign-ins at once")
        self._signins += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.hashing, self.run, work)
        finally:
            self._signins -= 1

    async def read(self, work: Callable[[], T]) -> T:
        """Blocking reads for the live streams and the audit view, on their own threads."""
        return await asyncio.get_running_loop().run_in_executor(self.reading, work)

    # -- the live board ------------------------------------------------------------------------
    def board(self, viewer: Viewer) -> list[dict[str, Any]]:
        """Messages in progress (and finished in the last day) this viewer sees, newest first (blocking)."""
        now = self.clock()
        rows = self.run(lambda s: board_rows(s, viewer, now))
        items: list[dict[str, Any]] = [
            {"id": r.message_id, "bin": r.bin_number, "bin_name": r.bin_name, "urgency": r.urgency.value,
             "status": r.status.value, "stage": stage_of(r.status, r.deliver_at, now),
             "created_at": r.created_at.isoformat(timespec="seconds"),
             "text": (r.text or "")[:120], "campaign": r.campaign_id} for r in rows]
        for item in items:
            item["progress"] = item["copies"] = None
            if item["campaign"] is not None:
                p = progress_of(self.engine, item["campaign"], self.policies, now, self.settings)
                item["progress"] = {"members": p.members, **p.bar}
                item["copies"] = p.copies
        return items

    # -- the message page ----------------------------------------------------------------------
    def confirmations_over_time(self, campaign_id: int) -> tuple[dt.datetime | None, list[dt.datetime]]:
        """(when the campaign started, every confirmation time in order) (blocking)."""
        start, times = self.run(lambda s: confirmation_times(s, campaign_id))
        return start, [t for t in times if t is not None]

    # -- sending -------------------------------------------------------------------------------
    def officer(self, viewer: Viewer) -> Officer:
        """The signed-in police officer (or admin) as the desk knows officers."""
        return Officer(viewer.person_id, viewer.name, viewer.language, viewer.zone_ids)

    async def send_text(self, viewer: Viewer, bins: list[tuple[int, str]], urgency: Urgency, text: str) -> list[int]:
        """Speak ``text`` for each BIN (number, language) and submit it: the ``binfoon message send`` path."""
        ids = []
        with tempfile.TemporaryDirectory() as tmp:
            spoken: dict[str, Path] = {}
            for number, language in bins:
                if language not in spoken:
                    spoken[language] = await self.speak(text, language, Path(tmp) / f"spoken-{language}.wav")
                # The desk moves its source into the store: each BIN gets its own copy.
                copy = Path(tmp) / f"bin-{number}.wav"
                shutil.copyfile(spoken[language], copy)
                message_id = await asyncio.to_thread(functools.partial(
                    self.desk.submit_text_message, number, urgency, text, copy, viewer.actor,
                    author_id=viewer.person_id))
                if self.after is not None:
                    self.after.written_submitted(message_id)
                ids.append(message_id)
        return ids

    async def send_audio(self, viewer: Viewer, bin_ids: list[int], urgency: Urgency, wav: Path) -> list[int]:
        """An uploaded recording (already converted): the police line's own steps, per BIN."""
        officer = self.officer(viewer)
        ids = []
        for bin_id in bin_ids:
            message_id = await self.desk.create_draft(officer, bin_id, urgency)
            copy = wav.with_name(f"upload-{message_id}.wav")
            shutil.copyfile(wav, copy)
            take = await self.desk.keep_take(message_id, 1, Recorded(copy, "upload"), viewer.actor)
            await self.desk.submit(message_id, 1, viewer.actor)
            if self.after is not None:
                self.after.take_kept(message_id, take.recording_id)
                self.after.submitted(message_id)
            ids.append(message_id)
        return ids

    async def speak(self, text: str, language: str, target: Path) -> Path:
        """``text`` spoken into ``target`` as ``binfoon message send`` speaks it (8 kHz telephone WAV).

        In the service, the prompt renderer's worker processes speak it (espeak-ng never runs in
        the service's own process); on a database alone, a worker thread does.
        """
        if self.app is not None:
            wav = await self.app.renderer.text_wav(text, language)
            await asyncio.to_thread(shutil.copyfile, wav, target)
            return target
        return await asyncio.to_thread(_speak_locked, text, language, target)

    async def spoken(self, text: str, language: str) -> bytes:
        """``text`` spoken, as the bytes of a WAV file (the send form's preview)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = await self.speak(text, language, Path(tmp) / "preview.wav")
            return await asyncio.to_thread(path.read_bytes)

    async def aclose(self) -> None:
        """End live streams and wait for test calls in flight."""
        self.closing.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.hashing.shutdown(wait=False, cancel_futures=True)
        self.reading.shutdown(wait=False, cancel_futures=True)


# espeak-ng keeps global state in this process: one synthesis at a time.
_speech_lock = threading.Lock()


def _speak_locked(text: str, language: str, target: Path) -> Path:
    with _speech_lock:
        return synthesize(text, language, target)


class NotAudio(ValueError):
    """The upload is not audio that can be played on the phone."""


def audio_container(head: bytes) -> str | None:
    """The audio file type the first bytes of a file announce (``None``: not a known audio file).

    ffmpeg guesses a format from the content and follows what it finds: a playlist (HLS, concat,
    ...) makes it open other files, such as another zone's recordings. Only files that start
    like one of these audio containers are given to it, and then only as that container.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "aac"  # ADTS: the MPEG sync word with layer 0
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mp4"  # m4a, 3gp
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[:5] == b"#!AMR":
        return "amr"
    return None


#: ffmpeg's demuxer for each container, and the names ffmpeg may report for it.
_DEMUXERS: dict[str, tuple[str, frozenset[str]]] = {
    "wav": ("wav", frozenset({"wav"})),
    "aiff": ("aiff", frozenset({"aiff"})),
    "ogg": ("ogg", frozenset({"ogg"})),
    "flac": ("flac", frozenset({"flac"})),
    "aac": ("aac", frozenset({"aac"})),
    "mp3": ("mp3", frozenset({"mp3"})),
    "mp4": ("mov", frozenset({"mov,mp4,m4a,3gp,3g2,mj2"})),
    "webm": ("matroska", frozenset({"matroska,webm"})),
    "amr": ("amr", frozenset({"amr"})),
}
_NOT_AUDIO = "not an audio file: WAV, MP3, OGG, FLAC, M4A, WebM, AIFF or AMR"
_FFMPEG_TIMEOUT_S = 60


def _id3_size(header: bytes) -> int:
    """The size of an ID3v2 tag's body, from its 10-byte header (a "synchsafe" integer: 7 bits a byte)."""
    return (header[6] & 0x7F) << 21 | (header[7] & 0x7F) << 14 | (header[8] & 0x7F) << 7 | header[9] & 0x7F


def _after_id3(data: bytes) -> bytes:
    """``data`` without its leading ID3v2 tags (and the zero padding some writers leave after them)."""
    while data[:3] == b"ID3" and len(data) >= 10:
        size = _id3_size(data)
        data = data[10 + size + (10 if data[5] & 0x10 else 0):]  # flag 0x10: a 10-byte footer
    return data.lstrip(b"\0")


def _mpeg_frames_follow(path: Path) -> bool:
    """Whether an "mp3" really continues with MPEG audio frames after its tags (not a playlist behind a tag)."""
    with path.open("rb") as f:
        head = f.read(10)
        if head[:3] == b"ID3" and len(head) == 10:
            head += f.read(_id3_size(head) + 10 + 4096)  # the tag, a possible footer or second tag, then the first frame
        rest = _after_id3(head)
    return len(rest) >= 2 and rest[0] == 0xFF and rest[1] & 0xE0 == 0xE0


def _ffmpeg_guess(path: Path) -> str | None:
    """The demuxer ffmpeg would pick by itself, learnt with only a pipe allowed (it can open no other file)."""
    with path.open("rb") as f:
        done = subprocess.run(["ffprobe", "-hide_banner", "-v", "debug", "-protocol_whitelist", "pipe",
                               "-i", "pipe:0"], stdin=f, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    found = re.search(rb"Format (\S+) probed with size=", done.stderr)
    return found.group(1).decode() if found else None


def _declared(path: Path, demuxer: str) -> tuple[str, float | None]:
    """(format name, duration) ffprobe reads from the file opened as ``demuxer`` alone."""
    done = subprocess.run(["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-f", demuxer,
                           "-show_entries", "format=format_name,duration", "-of", "json", str(path)],
                          capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise NotAudio("undecodable")
    facts = json.loads(done.stdout or b"{}").get("format", {})
    try:
        duration: float | None = float(facts.get("duration", ""))
    except ValueError:
        duration = None  # raw streams (AMR, ADTS) may not say
    return str(facts.get("format_name", "")), duration


def _decode(source: Path, target: Path, demuxer: str) -> None:
    """Decode ``source`` as ``demuxer`` only, to 8 kHz mono 16-bit PCM WAV; no protocol but plain files."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-protocol_whitelist", "file",
                           "-f", demuxer, "-i", str(source), "-map", "0:a:0", "-map_metadata", "-1",
                           "-ac", "1", "-ar", str(TELEPHONE_RATE_HZ), "-c:a", "pcm_s16le", "-fflags", "+bitexact",
                           "-f", "wav", "-y", str(target)], capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    if done.returncode != 0:
        # ffmpeg's words name our temp paths: they go to the log, the officer reads a plain reason.
        log.info("upload refused by ffmpeg: %s", done.stderr.decode(errors="replace").strip()[-500:])
        raise NotAudio("undecodable")


def convert_upload(source: Path, target: Path, max_s: float) -> float:
    """Convert an uploaded audio file to telephone WAV; its length in seconds (blocking).

    The file is decoded as the container its first bytes announce, never as what ffmpeg guesses,
    from a copy in a private directory, with plain files as the only protocol; anything ffmpeg
    itself would read as another format (a playlist behind an ID3 tag, ...) is refused.
    """
    with source.open("rb") as f:
        container = audio_container(f.read(16))
    if container is None:
        raise NotAudio(_NOT_AUDIO)
    try:
        return _convert_as(source, target, max_s, container)
    except subprocess.TimeoutExpired:
        raise NotAudio("too slow to decode") from None


def _convert_as(source: Path, target: Path, max_s: float, container: str) -> float:
    """``convert_upload`` once the container is known."""
    demuxer, names = _DEMUXERS[container]
    with tempfile.TemporaryDirectory(prefix="binfoon-upload-") as tmp:  # mode 0700
        work = Path(tmp)
        copy = work / "upload"  # no extension: nothing for a demuxer to key on
        shutil.copyfile(source, copy)
        if container == "mp3" and not _mpeg_frames_follow(copy):
            raise NotAudio(_NOT_AUDIO)
        if _ffmpeg_guess(copy) not in names:
            raise NotAudio(_NOT_AUDIO)  # a polyglot: ffmpeg alone would read it as something else
        format_name, declared_s = _declared(copy, demuxer)
        if format_name not in names:
            raise NotAudio(_NOT_AUDIO)
        decoded = work / "decoded.wav"
        _decode(copy, decoded, demuxer)
        seconds, _rate = wav_facts(decoded)
        if declared_s is not None and abs(seconds - declared_s) > max(2.0, 0.25 * declared_s):
            raise NotAudio(f"{seconds:.1f} s decoded, {declared_s:.1f} s declared")
        if seconds < 0.5:
            raise NotAudio("no sound in it")
        if seconds > max_s:
            raise NotAudio(f"{seconds:.0f} s")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(decoded, target)
    return seconds
