"""What the web console does, apart from HTTP: it reads the database and acts through the app.

Rules:
- nothing here decides anything the phone side decides: a typed alert goes through the same
  steps as ``binfoon message send`` (``synthesize`` then ``MessageDesk.submit_text_message``), an
  uploaded one through the police line's steps (draft, kept take, submit); both then enter the
  same review flow (``on_submitted``);
- campaign progress is ``ivr.delivery.report.campaign_report`` (the dialer's own view), never recounted;
- SQL and audio work run in worker threads, speech in the service's rendering processes (the
  event loop keeps serving calls);
- an upload reaches ffmpeg only if it starts like an audio file (a playlist or anything else
  ffmpeg would follow to other files never does);
- the console runs inside ``binfoon serve`` (``Console.from_app``) or, for tests and tools, on a
  database alone (``Console.standalone``: no calls can be placed then).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ivr.delivery.dialer import retry_policies
from ivr.config import Settings
from ivr.delivery.policy import RetryPolicy
from ivr.telephony.call import Recorded
from ivr.media.tts import synthesize, to_telephone_wav
from ivr.police_line.store import MessageDesk, Officer
from ivr.delivery.report import CampaignReport, campaign_report
from ivr.web.auth import Viewer
from storage import audit
from storage.db import session_scope
from storage.models import (
    Bin,
    BinStreet,
    Campaign,
    Confirmation,
    Message,
    MessageStatus,
    Person,
    PhoneNumber,
    PhoneRank,
    Role,
    RoleAssignment,
    Urgency,
    new_id,
    utcnow,
)
from storage.recordings import RecordingStore, wav_facts

if TYPE_CHECKING:
    from ivr.app import BinfoonApp

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Live bar segments, each a group of ``ivr.delivery.report.LIVE_STATES``.
BAR = {
    "confirmed": ("confirmed",),
    "answering_machine": ("answering_machine",),
    "failed": ("no_answer", "busy", "answered_no_key", "failed"),
    "waiting": ("answered", "ringing", "waiting_retry", "queued"),
}
#: Messages shown on the live board: still moving, or finished within this window.
BOARD_RECENT = dt.timedelta(hours=24)
IN_PROGRESS = (MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS, MessageStatus.APPROVED,
               MessageStatus.DELIVERING)


class ConsoleUnavailable(RuntimeError):
    """The console runs without the telephone side (no calls can be placed)."""


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def stage_of(status: MessageStatus, deliver_at: dt.datetime | None, now: dt.datetime) -> str:
    """The board's stage for a message (text ids ``stage_*``)."""
    if status in (MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS):
        return "with_coordinators"
    if status is MessageStatus.APPROVED:
        return "scheduled" if deliver_at is not None and deliver_at > now else "delivering"
    return str(status.value)  # delivering, done, rejected, cancelled, draft


@dataclass
class Progress:
    """A campaign's live bar."""

    campaign_id: int
    members: int
    bar: dict[str, int]
    status: str


def bar_of(report: CampaignReport) -> dict[str, int]:
    """A campaign report's members counted into the bar's segments."""
    counts = report.counts()
    return {segment: sum(counts.get(state, 0) for state in states) for segment, states in BAR.items()}


def progress_of(engine: Engine, campaign_id: int, policies: dict[bool, RetryPolicy], now: dt.datetime) -> Progress:
    """The bar of one campaign, from the same report the dialer's decisions follow."""
    report = campaign_report(engine, campaign_id, policies, now)
    return Progress(campaign_id, len(report.members), bar_of(report), report.status)


@dataclass
class Console:
    """The console's handle on the chain: database, desk, settings and (when serving) the app."""

    settings: Settings
    engine: Engine
    desk: MessageDesk
    app: BinfoonApp | None = None
    clock: Callable[[], dt.datetime] = utcnow
    #: Set when the server stops: live streams end.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    #: Test calls placed from the console: call id -> outcome (``dialling`` until known).
    test_calls: dict[str, str] = field(default_factory=dict)
    #: The latest test call per member: person id -> call id.
    test_call_of: dict[int, str] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def from_app(cls, app: BinfoonApp) -> Console:
        """The console of a running service: its desk, so submitted messages go to review at once."""
        return cls(app.settings, app.engine, app.desk, app, app.clock)

    @classmethod
    def standalone(cls, settings: Settings, engine: Engine) -> Console:
        """A console on the database only (messages wait for ``binfoon serve`` to pick them up)."""
        return cls(settings, engine, MessageDesk(engine, RecordingStore(settings.data_dir / "recordings")))

    @property
    def policies(self) -> dict[bool, RetryPolicy]:
        """The retry policies, as the dialer uses them."""
        return self.app.campaigns.policies if self.app is not None else retry_policies(self.settings)

    def run(self, work: Callable[[Session], T]) -> T:
        """One transaction (blocking)."""
        with session_scope(self.engine) as s:
            return work(s)

    async def tx(self, work: Callable[[Session], T]) -> T:
        """One transaction in a worker thread."""
        return await asyncio.to_thread(self.run, work)

    # -- the live board ------------------------------------------------------------------------
    def board(self, viewer: Viewer) -> list[dict[str, Any]]:
        """Messages in progress (and finished in the last day) this viewer sees, newest first (blocking)."""
        now = self.clock()
        with session_scope(self.engine) as s:
            query = (select(Message, Bin, Campaign.id).join(Bin, Bin.id == Message.bin_id)
                     .outerjoin(Campaign, Campaign.message_id == Message.id)
                     .where((Message.status.in_(IN_PROGRESS)) | (Message.created_at >= now - BOARD_RECENT))
                     .where(Message.status != MessageStatus.DRAFT))
            # The scope is part of the query: the 50 newest are the viewer's 50 newest, not the
            # chain's (a coordinator's one message must not drop out behind other BINs' ones).
            if viewer.bin_ids is not None:
                query = query.where(Message.bin_id.in_(viewer.bin_ids))
            if viewer.zone_ids is not None:
                query = query.where(Bin.zone_id.in_(viewer.zone_ids))
            rows = s.execute(query.order_by(Message.id.desc()).limit(50)).all()
            visible = [(m, b, c) for m, b, c in rows if viewer.sees_bin(b.id, b.zone_id)]
            items = [{"id": m.id, "bin": b.number, "bin_name": b.name, "urgency": m.urgency.value,
                      "status": m.status.value, "stage": stage_of(m.status, _aware(m.deliver_at), now),
                      "created_at": _aware(m.created_at).isoformat(timespec="seconds"),  # type: ignore[union-attr]
                      "text": (m.text or "")[:120], "campaign": c} for m, b, c in visible]
        for item in items:
            item["progress"] = None
            if item["campaign"] is not None:
                p = progress_of(self.engine, item["campaign"], self.policies, now)
                item["progress"] = {"members": p.members, **p.bar}
        return items

    # -- the message page ----------------------------------------------------------------------
    def confirmations_over_time(self, campaign_id: int) -> tuple[dt.datetime | None, list[dt.datetime]]:
        """(when the campaign started, every confirmation time in order) (blocking)."""
        with session_scope(self.engine) as s:
            campaign = s.get_one(Campaign, campaign_id)
            times = [_aware(t) for t in s.scalars(select(Confirmation.confirmed_at)
                                                  .where(Confirmation.campaign_id == campaign_id)
                                                  .order_by(Confirmation.confirmed_at))]
            start = _aware(campaign.started_at or campaign.created_at)
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
                message_id = await asyncio.to_thread(self.desk.submit_text_message, number, urgency, text, copy,
                                                     viewer.actor)
                recording_id = await self.tx(functools.partial(_set_author, message_id=message_id,
                                                               person_id=viewer.person_id))
                # In the service, the take is transcribed and the review starts now, not at the next poll
                # (the command line's path leaves both to the running service's poll).
                self.desk.on_take_stored(message_id, recording_id)
                self.desk.on_submitted(message_id)
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
            await self.desk.keep_take(message_id, 1, Recorded(copy, "upload"), viewer.actor)
            await self.desk.submit(message_id, 1, viewer.actor)
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

    # -- test call -----------------------------------------------------------------------------
    async def test_call(self, viewer: Viewer, person_id: int) -> str:
        """Call one member with the spoken test message (no keys, no campaign); returns the call id."""
        app = self.app
        if app is None:
            raise ConsoleUnavailable("no telephone connection")
        call_id = new_id()

        def work(s: Session) -> tuple[str, str]:
            person = s.get_one(Person, person_id)
            phone = next((p for p in person.phones if p.rank is PhoneRank.PRIMARY), None)
            if phone is None:
                raise LookupError(f"person {person_id} has no phone number")
            # Written before the call is placed (write ahead of every side effect).
            audit.record(s, viewer.actor, "member.test_call", f"person:{person_id}", call=call_id)
            return phone.e164, person.language.value

        e164, language = await self.tx(work)
        header = await app.voice.prompt("member_header_preventive", language)
        sound = await app.voice.prompt("demo_test_message", language)
        self.test_calls[call_id] = "dialling"
        self.test_call_of[person_id] = call_id

        async def place() -> None:
            from ivr.telephony.outcomes import classify_dial

            try:
                # The dialplan's answering-machine leg just plays header and sound: no attempt row,
                # no keys, nothing counted in any campaign.
                result = await app.ami.originate(
                    call_id, app.dialer.dial_template.replace("${NUMBER}", e164), context="binfoon-member",
                    exten="voicemail", variables={"BINFOON_HEADER": header, "BINFOON_SOUND": sound},
                    caller_id=app.dialer.caller_id, timeout_s=self.settings.member_ring_timeout_s)
                self.test_calls[call_id] = classify_dial(result.success, result.reason, result.cause).value
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, the page shows it and the service goes on
                log.warning("test call %s failed: %s", call_id, exc)
                self.test_calls[call_id] = "failed"

        task = asyncio.get_running_loop().create_task(place(), name=f"test-call-{call_id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call_id

    def test_results(self) -> dict[int, str]:
        """The latest test call's outcome per member (``dialling`` until known)."""
        return {person_id: self.test_calls[call_id] for person_id, call_id in self.test_call_of.items()}

    async def aclose(self) -> None:
        """End live streams and wait for test calls in flight."""
        self.closing.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _set_author(s: Session, message_id: int, person_id: int) -> int:
    """Record who typed the message; returns the id of its recording."""
    message = s.get_one(Message, message_id)
    message.created_by_id = person_id
    return next(r.id for r in message.recordings if r.take == message.submitted_take)


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
    like one of these audio containers are given to it.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"  # MPEG audio frames (ADTS AAC starts the same way)
    if head[4:8] == b"ftyp":
        return "mp4"  # m4a, 3gp
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[:5] == b"#!AMR":
        return "amr"
    return None


def convert_upload(source: Path, target: Path, max_s: float) -> float:
    """Convert an audio file to telephone WAV; its length in seconds (blocking)."""
    with source.open("rb") as f:
        head = f.read(16)
    if audio_container(head) is None:
        raise NotAudio("not an audio file: WAV, MP3, OGG, FLAC, M4A, WebM, AIFF or AMR")
    try:
        to_telephone_wav(source, target)
    except Exception as exc:  # noqa: BLE001 - pydub raises CouldntDecodeError, IndexError, or ffmpeg's errors
        raise NotAudio(str(exc).splitlines()[0] if str(exc) else "undecodable") from None
    seconds, _rate = wav_facts(target)
    if seconds < 0.5:
        raise NotAudio("no sound in it")
    if seconds > max_s:
        raise NotAudio(f"{seconds:.0f} s")
    return seconds


def resolve_bins(s: Session, viewer: Viewer, raw: str) -> tuple[list[Bin], list[tuple[str, str]]]:
    """BINs named by number or by street (comma or line separated): (found, [(error text id, token)])."""
    found: dict[int, Bin] = {}
    errors: list[tuple[str, str]] = []
    tokens = [t.strip() for part in raw.replace("\n", ",").split(",") for t in [part] if t.strip()]
    for token in tokens:
        if token.isdigit():
            matches = list(s.scalars(select(Bin).where(Bin.number == int(token))))
        else:
            # A street matches a BIN's street case-insensitively, whole or as its beginning.
            pattern = token.lower().replace("%", "").replace("_", "") + "%"
            matches = list(s.scalars(select(Bin).join(BinStreet).where(func.lower(BinStreet.street).like(pattern))
                                     .distinct()))
        if not matches:
            errors.append(("send_error_unknown_bin", token))
            continue
        for bin_ in matches:
            if not viewer.sees_bin(bin_.id, bin_.zone_id):
                errors.append(("send_error_other_zone", str(bin_.number)))
            else:
                found[bin_.id] = bin_
    return sorted(found.values(), key=lambda b: b.number), errors


def members_of(s: Session, bin_id: int) -> list[Person]:
    """A BIN's member households by name."""
    return list(s.scalars(select(Person).join(RoleAssignment).where(
        RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_id).order_by(Person.name, Person.id)))


def member_bin(s: Session, person_id: int) -> Bin | None:
    """The BIN a member belongs to (the first, should they be in several)."""
    return s.scalars(select(Bin).join(RoleAssignment, RoleAssignment.bin_id == Bin.id).where(
        RoleAssignment.person_id == person_id, RoleAssignment.role == Role.MEMBER)).first()


def phone_taken(s: Session, bin_id: int, e164: str, person_id: int | None = None) -> bool:
    """Is ``e164`` the first number of another household of this BIN (``person_id``: the one edited)?"""
    others = select(PhoneNumber.id).join(Person).join(RoleAssignment).where(
        RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_id, PhoneNumber.rank == PhoneRank.PRIMARY,
        PhoneNumber.e164 == e164)
    if person_id is not None:
        others = others.where(Person.id != person_id)
    return s.scalar(others.limit(1)) is not None


def phone_of(person: Person, rank: PhoneRank) -> PhoneNumber | None:
    """The person's number of that rank."""
    return next((p for p in person.phones if p.rank is rank), None)
