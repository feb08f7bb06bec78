"""A one-level BIN ("1 niveau") on the real Asterisk: the police message reaches the members with no
review call, and each coordinator's phone rings once, with the notice (counted at the simulated phones
and in ``review_calls``). The coordinator who presses 1 hears the police's recording."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.lab.network import PhoneScript
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.media.compare import hear, read_wav_mono
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import AuditEntry, Bin, Confirmation, Message, ReviewCall, ReviewDecision
from ivr.domain.vocabulary import MessageStatus
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import campaign_done, message_seconds, start_binfoon, submit_recorded, wav_seconds
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"


async def test_one_level_bin_members_get_the_message_and_each_coordinator_one_notice(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer, max_channels=6, max_cps=20.0, member_ring_timeout_s=3.0,
                                  review_ring_timeout_s=5.0, urgent_retry_after_s=1.0, key_timeout_s=3.0)
    try:
        engine = binfoon.world.engine
        with session_scope(engine) as s:
            s.get_one(Bin, binfoon.world.bin_id).one_level = True
        confirm = PhoneScript.answers(rings=1, keys=((await message_seconds(renderer, CLIP) + 1.0, "1"),))
        people = seed_members(engine, 12, [MemberCase("confirms", confirm, None, "confirmed")] * 5)
        script_members(lab, engine, people)
        (_, listener), (_, other) = binfoon.world.coordinators
        # One coordinator presses 1 while the notice is said (hears the message), the other just listens.
        notice_s = wav_seconds(await renderer.wav("notice_goodbye", "nl"))
        lab.network.script(listener, PhoneScript.answers(rings=1, keys=((2.0, "1"),)))
        lab.network.script(other, PhoneScript.answers(rings=2))
        message_id = await submit_recorded(binfoon, CLIP)
        await campaign_done(binfoon, timeout_s=120)

        def notices() -> list[ReviewCall]:
            with session_scope(engine) as s:
                return list(s.scalars(select(ReviewCall).where(ReviewCall.message_id == message_id)))
        calls = await eventually(notices, lambda rows: len(rows) == 2 and all(r.ended_at for r in rows), timeout_s=90)
        await asyncio.sleep(1.0)  # nothing else may follow (no retry, no review round)
        calls = notices()
        rung = {phone: len(lab.network.calls_to(phone)) for phone in (listener, other)}
        with session_scope(engine) as s:
            confirmed = len(s.scalars(select(Confirmation)).all())
            decision = s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).one()
            status = s.get_one(Message, message_id).status
            played = s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.played",
                                                        AuditEntry.actor.like("person:%"))).all()
        purposes = sorted((c.e164, c.purpose, c.dial_outcome) for c in calls)
        ends = sorted(f.end for f in binfoon.timeline.flow_ends if f.flow == "coordinator_review")
        print(f"one-level BIN 12: {confirmed}/{len(people)} members confirmed, message {status.value}, "
              f"decision {decision.decision.value} via {decision.via}; coordinator phones rung {rung}; "
              f"review_calls {purposes}; conversations {ends}; recording played to coordinators {len(played)}x")
        assert confirmed == len(people) and status is MessageStatus.DONE
        assert (decision.via, decision.person_id) == ("one_level", None)
        assert rung == {listener: 1, other: 1}                                   # each phone rang once
        assert purposes == sorted([(listener, "notice", "answered"), (other, "notice", "answered")])  # no review call
        assert ends == ["notice_heard", "notice_heard"]
        # The coordinator who pressed 1 heard the police's own recording; the other did not.
        clip, rate = read_wav_mono(CLIP)
        [listened] = lab.network.calls_to(listener)
        [informed] = lab.network.calls_to(other)
        heard, heard_rate = await asyncio.to_thread(lambda: read_wav_mono(listened.heard_audio()))
        only_told, _ = await asyncio.to_thread(lambda: read_wav_mono(informed.heard_audio()))
        assert heard_rate == rate and hear(clip, heard, rate).whole
        assert not hear(clip, only_told, rate).whole
        assert len(played) == 1 and len(only_told) / rate > notice_s
    finally:
        await binfoon.app.stop()
