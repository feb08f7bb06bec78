"""C1 and issue 14 item 7 on a real Asterisk: an officer's alert is sealed at rest as soon as it is
stored (Asterisk's recording spool emptied), members still hear the original recording, and once
the campaign is over and the retention purge ran, no byte of it is left on disk."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from ivr.archive.at_rest import PUBLISHED_GRACE_S, MediaCopies, unpublish_stale
from ivr.archive.store import Archive
from ivr.domain.vocabulary import MessageSource, MessageStatus, Urgency
from ivr.lab.network import PhoneScript
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.media.compare import hear, read_wav_mono
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import Message, PhoneNumber, Recording
from storage.sealed import MAGIC
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import campaign_done, message_seconds, officer_script, start_binfoon
from tests.integration.conftest import eventually
from tests.unit.archive.test_at_rest import files_under, holding
from tests.world import OFFICER_PHONE, build_world

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
#: A recording kept from before sealing existed (a plain WAV in the store).
LEGACY_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "05.wav"


def speech_slices(wav: Path, size: int = 4096) -> list[bytes]:
    """4 kB slices of a recording's samples that hold speech (a slice of silence would match any file)."""
    with open(wav, "rb") as f:
        data = f.read()[44:]
    slices = [data[i:i + size] for i in range(0, len(data) - size, size)]
    spoken = [piece for piece in slices if np.frombuffer(piece, "<i2").std() > 200]
    assert len(spoken) >= 3, wav
    return spoken[:: max(1, len(spoken) // 4)]


def _legacy_message(engine: object, store_root: Path) -> tuple[int, Path]:
    """A delivered message whose take is still a plain WAV in the store (stored before sealing)."""
    created = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    with session_scope(engine) as s:  # type: ignore[arg-type]
        from storage.models import Bin

        bin_id = s.scalars(select(Bin.id).where(Bin.number == 12)).one()
        message = Message(bin_id=bin_id, urgency=Urgency.PREVENTIVE, status=MessageStatus.DONE, created_at=created,
                          submitted_take=1, source=MessageSource.PHONE)
        s.add(message)
        s.flush()
        path = store_root / f"message-{message.id:06d}" / "take-1.wav"
        path.parent.mkdir(parents=True, mode=0o700)
        path.write_bytes(LEGACY_CLIP.read_bytes())
        s.add(Recording(message_id=message.id, path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                        duration_s=2.0, created_at=created, take=1))
        return message.id, path


async def test_an_alert_is_sealed_at_rest_heard_whole_and_gone_after_the_purge(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    data_dir = tmp_path / "var"
    world = build_world(f"sqlite:///{tmp_path / 'binfoon.db'}", data_dir / "recordings")
    legacy_id, legacy_path = _legacy_message(world.engine, data_dir / "recordings")
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=world, max_channels=2, max_cps=20.0,
                                  member_ring_timeout_s=3.0, review_ring_timeout_s=1.0, urgent_retry_after_s=0.5,
                                  urgent_retries=0)
    app = binfoon.app
    store = app.desk.store
    try:
        # The service sealed the legacy recording at start: its row points at the seal, the WAV is gone.
        with session_scope(world.engine) as s:
            legacy = s.scalars(select(Recording).where(Recording.message_id == legacy_id)).one()
            assert legacy.path.endswith(".sealed") and not legacy_path.exists()
            assert store.plaintext(Path(legacy.path), legacy.sha256) == LEGACY_CLIP.read_bytes()
        heard_s = await message_seconds(renderer, CLIP)
        people = seed_members(world.engine, 12, [
            MemberCase("confirms", PhoneScript.answers(rings=1, keys=((heard_s + 1.0, "1"),)), None, "confirmed")])
        script_members(lab, world.engine, people)
        officer = await lab.call_in(OFFICER_PHONE, officer_script(CLIP))
        await officer.wait(timeout_s=90)
        [intake] = await binfoon.timeline.wait_for_flows("police_intake", 1, timeout_s=10)
        assert intake.end == "sent", officer.steps_done
        # What Asterisk recorded into its spool was taken in and removed: no plaintext left there.
        spool = app.media.record_dir
        await eventually(lambda: [p for p in files_under(spool) if p.stat().st_size > 0], lambda left: not left,
                         timeout_s=60)
        # Nobody reviews: the urgent alert is forwarded by the zone's policy and delivered.
        await campaign_done(binfoon, timeout_s=180)
        with session_scope(world.engine) as s:
            message = s.scalars(select(Message).where(Message.id != legacy_id)).one()
            recording = message.recordings[0]
            sealed, sha = Path(recording.path), recording.sha256
        # At rest: no stored file is a WAV; the key is a 0600 file outside the database.
        for path in files_under(store.root):
            data = path.read_bytes()
            assert data.startswith(MAGIC) and b"RIFF" not in data and b"WAVE" not in data, path
        assert stat.S_IMODE(store.key_file.stat().st_mode) == 0o600
        # The member heard the original recording, whole (the real member flow, through Asterisk).
        plain = store.open_verified(sealed, sha)
        original, rate = read_wav_mono(plain)
        with session_scope(world.engine) as s:
            [member_number] = s.scalars(select(PhoneNumber.e164).where(PhoneNumber.person_id.in_(list(people))))
        [call] = lab.network.calls_to(member_number)
        heard, heard_rate = read_wav_mono(await asyncio.to_thread(call.heard_audio))
        assert heard_rate == rate
        hearing = hear(original, heard, rate)
        assert hearing.whole, hearing
        # The copy Asterisk played from: readable by Asterisk (its user here, as root), by nobody else.
        published = app.voice.sounds_dir / "audio" / f"{sha}.wav"
        assert published.exists() and stat.S_IMODE(published.stat().st_mode) == 0o640
        slices = speech_slices(plain)
        roots = (data_dir, app.voice.sounds_dir, store.plain_dir, renderer.text_dir())
        assert published in holding(slices, *roots)
        # The campaign is over: the published copy goes (the service's sweep; here called at once).
        assert unpublish_stale(world.engine, [app.voice.sounds_dir], now=time.time() + PUBLISHED_GRACE_S + 1) >= 1
        assert not published.exists()
        # The retention purge, a year and more later: nothing of the recording remains anywhere.
        archive = Archive(world.engine, store, operator="test",
                          copies=MediaCopies((app.voice.sounds_dir,), renderer.cache_dir))
        report = archive.purge_expired(dt.datetime.now(dt.UTC) + dt.timedelta(days=400), 365, "test")
        assert {(i.kind, i.message_id) for i in report.purged} >= {("recording", message.id)}
        assert holding(slices, *roots) == []
        assert not os.path.exists(sealed)
    finally:
        await app.stop()
