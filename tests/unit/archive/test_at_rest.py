"""Issue 14 item 7 and C1: a purge removes every copy of a police recording (the store's, the
plaintext handed out for playing, the one published for Asterisk, the rendered speech of a typed
text); legacy plain recordings get sealed; published audio no message needs goes."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import shutil
import stat
import threading
import time
import wave
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.archive.at_rest import PUBLISHED_GRACE_S, MediaCopies, seal_legacy, unpublish_stale
from ivr.archive.store import Archive, ArchiveError
from ivr.domain.vocabulary import MessageSource, MessageStatus, Urgency
from ivr.media.voice import PromptRenderer, Voice, free_text_files
from storage.db import session_scope
from storage.models import Message, Recording
from storage.recordings import RecordingStore
from storage.sealed import MAGIC
from tests.conftest import SHARED_DIR
from tests.unit.archive.test_archive import NOW, Lab, make_lab

TYPED = "Opgelet: een valse loodgieter belt aan in de Molenstraat."
ASTERISK_USER = (65534, 65534)
CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"


def pcm_slices(wav: Path, size: int = 4096) -> list[bytes]:
    """Two ``size``-byte slices of a WAV's samples (after the header): what a leftover copy would hold."""
    with wave.open(str(wav), "rb") as w:
        frames = w.readframes(w.getnframes())
    assert len(frames) >= 3 * size, wav
    return [frames[size:2 * size], frames[-2 * size:-size]]


def files_under(*roots: Path) -> Iterator[Path]:
    """Every regular file under the roots (all of them walked, hidden files too)."""
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    yield path


def holding(slices: list[bytes], *roots: Path) -> list[Path]:
    """The files under ``roots`` that hold any of the slices."""
    found = []
    for path in files_under(*roots):
        data = path.read_bytes()
        if any(piece in data for piece in slices):
            found.append(path)
    return found


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    return make_lab(f"sqlite:///{data_dir / 'binfoon.db'}", tmp_path, data_dir / "recordings")


@pytest.fixture
def renderer(tmp_path: Path) -> Iterator[PromptRenderer]:
    with PromptRenderer(tmp_path / "rendered", max_workers=1) as r:
        yield r


def voice_for(renderer: PromptRenderer, tmp_path: Path) -> Voice:
    root = tmp_path / "asterisk-root"
    sounds = root / "var" / "spool" / "asterisk" / "binfoon-sounds"
    return Voice(renderer, sounds, lambda host: "/" + str(Path(host).relative_to(root)), owner=ASTERISK_USER)


def stored_message(lab: Lab, spoken: Path, created_at: dt.datetime, typed: str | None = None) -> int:
    """A sent message with ``spoken`` as its take (a written one as the console sends it: the text, its
    speech stored as the take)."""
    with session_scope(lab.engine) as s:
        message = Message(bin_id=lab.world.bin_id, urgency=Urgency.URGENT, status=MessageStatus.DONE,
                          created_at=created_at, created_by_id=lab.world.officer_id, text=typed,
                          submitted_take=1, source=MessageSource.TEXT if typed else MessageSource.PHONE)
        s.add(message)
        s.flush()
        stored = lab.store.store(spoken, message.id, 1)
        s.add(Recording(message_id=message.id, path=str(stored.path), sha256=stored.sha256,
                        duration_s=stored.duration_s, created_at=created_at, take=1))
        return message.id


async def test_after_a_purge_no_byte_of_the_recording_is_left_anywhere(lab: Lab, renderer: PromptRenderer,
                                                                       tmp_path: Path) -> None:
    voice = voice_for(renderer, tmp_path)
    old = NOW - dt.timedelta(days=400)
    # A spoken message, played to members (published for Asterisk) and replayed (a plaintext copy).
    spoken_id = stored_message(lab, CLIP, old)
    # A typed message: its speech rendered (and previewed in French on the send form), stored, played.
    typed_wav = await renderer.text_wav(TYPED, "nl")
    preview = await renderer.text_wav(TYPED, "fr")
    typed_id = stored_message(lab, typed_wav, old, TYPED)
    # What an older version left in the shared prompt cache.
    shared = free_text_files(TYPED, renderer.cache_dir)[1]
    shared.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(typed_wav, shared)
    recordings = {}
    with session_scope(lab.engine) as s:
        for recording in s.scalars(select(Recording)):
            recordings[recording.message_id] = (Path(recording.path), recording.sha256)
    published = []
    for message_id in (spoken_id, typed_id):
        plain = lab.store.open_verified(*recordings[message_id])
        name = await voice.audio(plain)
        published.append(voice.sounds_dir.parent.parent.parent.parent / (name.lstrip("/") + ".wav"))
    assert await voice.free_text(TYPED, "nl") == await voice.audio(typed_wav)
    # Every copy made for playing: for Asterisk 0640 (its user or group), the private ones 0600.
    for path in published:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.exists()
    for path in (typed_wav, preview):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not path.is_relative_to(renderer.cache_dir)
    plain_spoken = lab.store.open_verified(*recordings[spoken_id])
    slices = (pcm_slices(plain_spoken) + pcm_slices(typed_wav) + pcm_slices(preview))
    roots = (tmp_path, lab.store.plain_dir, renderer.text_dir())
    before = holding(slices, *roots)
    assert set(published) <= set(before) and plain_spoken in before and shared in before

    archive = Archive(lab.engine, lab.store, operator="cli:test",
                      copies=MediaCopies((voice.sounds_dir,), renderer.cache_dir))
    report = archive.purge_expired(NOW, 30, "cli:test")

    assert sorted((i.kind, i.message_id) for i in report.purged) == [
        ("recording", spoken_id), ("recording", typed_id), ("text", typed_id)]
    assert holding(slices, *roots) == []
    # The store holds nothing of either message any more.
    assert list(files_under(lab.store.root)) == []


def test_no_file_in_the_store_is_a_wav_after_legacy_recordings_are_sealed(lab: Lab, tmp_path: Path) -> None:
    legacy_ids = [lab.message(NOW) for _ in range(2)]
    sealed_id = lab.message(NOW)
    originals = {}
    with session_scope(lab.engine) as s:
        for message_id in legacy_ids:
            # As before sealing existed: the plain WAV under the store, the row pointing at it.
            recording = s.scalars(select(Recording).where(Recording.message_id == message_id)).one()
            plain = lab.store.open_verified(Path(recording.path), recording.sha256).read_bytes()
            legacy = Path(recording.path).with_suffix(".wav")
            legacy.write_bytes(plain)
            Path(recording.path).unlink()
            recording.path = str(legacy)
            originals[message_id] = plain
    assert any(path.read_bytes().startswith(b"RIFF") for path in files_under(lab.store.root))

    report = seal_legacy(lab.engine, lab.store, actor="test")

    assert (report.sealed, report.problems) == (2, [])
    for path in files_under(lab.store.root):
        assert b"RIFF" not in path.read_bytes() and path.read_bytes().startswith(MAGIC), path
    with session_scope(lab.engine) as s:
        for recording in s.scalars(select(Recording)):
            assert recording.path.endswith(".sealed")
            plain = lab.store.open_verified(Path(recording.path), recording.sha256).read_bytes()
            assert hashlib.sha256(plain).hexdigest() == recording.sha256
            if recording.message_id in originals:
                assert plain == originals[recording.message_id]
    assert [a.details["sealed"] for a in lab.audits("recordings.sealed")] == [2]
    # Idempotent: nothing left to seal, no second audit row.
    assert seal_legacy(lab.engine, lab.store, actor="test").sealed == 0
    assert len(lab.audits("recordings.sealed")) == 1
    assert sealed_id not in originals


async def test_published_audio_goes_when_no_message_in_flight_needs_it(lab: Lab, renderer: PromptRenderer,
                                                                       tmp_path: Path) -> None:
    voice = voice_for(renderer, tmp_path)
    done = lab.message(NOW, status=MessageStatus.DONE)
    delivering = lab.message(NOW, status=MessageStatus.DELIVERING)
    names = {}
    with session_scope(lab.engine) as s:
        for recording in s.scalars(select(Recording)):
            plain = lab.store.open_verified(Path(recording.path), recording.sha256)
            names[recording.message_id] = await voice.audio(plain)
    audio = voice.sounds_dir / "audio"
    files = {mid: audio / (name.rsplit("/", 1)[1] + ".wav") for mid, name in names.items()}
    assert all(path.exists() for path in files.values())
    # Just used (a member calling back hears it now): kept, whatever the message's state.
    assert unpublish_stale(lab.engine, [voice.sounds_dir]) == 0
    later = time.time() + PUBLISHED_GRACE_S + 1
    assert unpublish_stale(lab.engine, [voice.sounds_dir], now=later) == 1
    assert not files[done].exists() and files[delivering].exists()
    # Played again afterwards: published again.
    with session_scope(lab.engine) as s:
        recording = s.scalars(select(Recording).where(Recording.message_id == done)).one()
        assert await voice.audio(lab.store.open_verified(Path(recording.path), recording.sha256)) == names[done]
    assert files[done].exists()


async def test_audio_handed_to_asterisk_while_the_sweep_runs_is_never_removed_under_it(
        lab: Lab, renderer: PromptRenderer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the sweep read a file's age, the call flow then touched the file and handed its
    name to Asterisk, and the sweep deleted it: the member heard nothing. The name handed out must
    always point at a file."""
    voice = voice_for(renderer, tmp_path)
    done = lab.message(NOW, status=MessageStatus.DONE)
    with session_scope(lab.engine) as s:
        recording = s.scalars(select(Recording).where(Recording.message_id == done)).one()
        plain = lab.store.open_verified(Path(recording.path), recording.sha256)
    name = await voice.audio(plain)
    published = voice.sounds_dir / "audio" / (name.rsplit("/", 1)[1] + ".wav")
    handed: list[str] = []
    real_stat = Path.stat
    sweeper = threading.current_thread()

    def stat_then_a_member_calls_back(self: Path, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_stat(self, *args, **kwargs)
        if self == published and not handed and threading.current_thread() is sweeper:
            # Between the sweep's look at the file and what it does next, a call-back plays it.
            player = threading.Thread(target=lambda: handed.append(asyncio.run(voice.audio(plain))))
            player.start()
            player.join(0.5)  # with the fix the player waits for the sweep: it finishes below
            handed.append("asked")
        return result

    monkeypatch.setattr(Path, "stat", stat_then_a_member_calls_back)
    unpublish_stale(lab.engine, [voice.sounds_dir], now=time.time() + PUBLISHED_GRACE_S + 1)
    monkeypatch.setattr(Path, "stat", real_stat)
    for _ in range(500):  # the player thread, if it waited for the sweep, now publishes again
        if name in handed:
            break
        await asyncio.sleep(0.01)
    assert name in handed and published.exists()


def test_a_recording_that_does_not_open_is_refused_and_alerts_the_admins(lab: Lab, tmp_path: Path) -> None:
    mid = lab.message(NOW)
    # Another installation's key (a store restored without its own key, a key file replaced).
    stranger = Archive(lab.engine, RecordingStore(lab.store.root, key_file=tmp_path / "other.key"),
                       operator="cli:test")
    with pytest.raises(ArchiveError, match="recording unusable: .* does not open with this installation's key"):
        stranger.play(mid, f"person:{lab.admin_id}", tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()
    [alert] = lab.audits("security.alert")
    assert (alert.actor, alert.subject, alert.details["kind"]) == ("system", f"message:{mid}", "recording_refused")
    assert "does not open with this installation's key" in alert.details["reason"]
