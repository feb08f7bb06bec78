"""A member who listens (PhoneScript.listens) on a real campaign: the key comes only after the
recording has been heard to its end, as the phone heard it; a recording not heard is never confirmed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.lab.network import PhoneScript, SimulatedCall
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.media.compare import hear_file, locate, read_wav_mono
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import Confirmation, PhoneNumber
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import campaign_done, start_binfoon, submit_recorded, wav_seconds

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
#: Another police recording (same voice, "ramen en deuren" too): not what is played.
OTHER_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "05.wav"
AFTER_S = 0.3


def member_number(engine: object, person_id: int) -> str:
    with session_scope(engine) as s:  # type: ignore[arg-type]
        return s.scalars(select(PhoneNumber.e164).where(PhoneNumber.person_id == person_id)).one()


def confirmations(engine: object) -> list[int]:
    with session_scope(engine) as s:  # type: ignore[arg-type]
        return [c.person_id for c in s.scalars(select(Confirmation))]


async def test_a_listening_member_confirms_only_after_the_whole_recording(
        any_lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    lab = any_lab
    binfoon = await start_binfoon(lab, tmp_path, renderer, max_channels=4, member_ring_timeout_s=5.0,
                                  review_ring_timeout_s=1.0, key_timeout_s=6.0)
    try:
        script = PhoneScript.listens(CLIP, after_s=AFTER_S, timeout_s=60.0)
        people = seed_members(binfoon.world.engine, 12, [MemberCase("listens", script, None, "confirmed")])
        script_members(lab, binfoon.world.engine, people)
        [person_id] = people
        number = member_number(binfoon.world.engine, person_id)
        await submit_recorded(binfoon, CLIP)
        await campaign_done(binfoon, timeout_s=120)
        assert confirmations(binfoon.world.engine) == [person_id]
        [call] = lab.network.calls_to(number)
        assert call.end_heard_at is not None and call.end_heard_s is not None
        [(key_s, key)] = call.keys_sent
        assert key == "1"
        assert key_s >= call.end_heard_s + AFTER_S
        header_s = wav_seconds(await binfoon.app.renderer.wav("member_header_urgent", "nl"))
        assert call.end_heard_s >= header_s + wav_seconds(CLIP)
        # It heard the recording whole, and the end it detected is where the recording really ends in
        # what it heard (found by the last half second: a lost frame earlier would shift a whole-clip match).
        heard_path = await asyncio.to_thread(call.heard_audio)
        assert hear_file(CLIP, heard_path).whole
        clip, rate = read_wav_mono(CLIP)
        heard, _ = read_wav_mono(heard_path)
        last = locate(clip[-rate // 2:], heard, rate)
        assert last.peak_ncc > 0.9
        played_end_s = last.lag_s + 0.5
        assert call.end_heard_audio_s == pytest.approx(played_end_s, abs=0.05)
        report(lab, call, played_end_s)
    finally:
        await binfoon.app.stop()


async def test_a_recording_not_heard_to_its_end_is_never_confirmed(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    # The member listens for another recording than the one played: it never hears its end, hangs up
    # without a key when its patience runs out (before the application's own key timeout).
    binfoon = await start_binfoon(lab, tmp_path, renderer, max_channels=4, member_ring_timeout_s=5.0,
                                  review_ring_timeout_s=1.0, key_timeout_s=30.0)
    try:
        header_s = wav_seconds(await binfoon.app.renderer.wav("member_header_urgent", "nl"))
        patience_s = 4.0 + header_s + wav_seconds(CLIP) + 3.0
        script = PhoneScript.listens(OTHER_CLIP, after_s=AFTER_S, timeout_s=patience_s)
        people = seed_members(binfoon.world.engine, 12,
                              [MemberCase("listens", script, None, "answered_no_key")])
        script_members(lab, binfoon.world.engine, people)
        number = member_number(binfoon.world.engine, next(iter(people)))
        await submit_recorded(binfoon, CLIP)
        [call] = await lab.network.wait_for_calls(number, 1, timeout_s=90)
        assert call.answered_at is not None
        assert call.keys_sent == []
        assert call.end_heard_at is None
        assert call.ended_by == "phone"
        # It did hear the recording that was played (the call went on), just not the one it listens for.
        assert hear_file(CLIP, await asyncio.to_thread(call.heard_audio)).whole
        assert confirmations(binfoon.world.engine) == []
    finally:
        await binfoon.app.stop()


def report(lab: PhoneLab, call: SimulatedCall, played_end_s: float) -> None:
    assert call.end_heard_s is not None and call.end_heard_audio_s is not None
    print(f"{lab.dial_template}: recording ended at {played_end_s:.3f} s of heard audio, detected at "
          f"{call.end_heard_audio_s:.3f} s; heard {call.end_heard_s:.3f} s after the answer "
          f"(ear lag {call.end_heard_s - call.end_heard_audio_s:.3f} s), key at {call.keys_sent[0][0]:.3f} s")
