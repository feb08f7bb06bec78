"""A drill of a forty-member BIN against the real Asterisk: the running service picks the drill up,
every member is called with the test message, and the reach report equals the simulator's script
(wrong numbers included); the members hear that it is a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from ivr.asterisk.install import AsteriskRuntime
from ivr.delivery.drill import reach_report, start_drill
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import PhoneRank
from ivr.lab.network import Behaviour, PhoneScript
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import MemberCase, member_cases, script_members, seed_members
from ivr.media.compare import hear, read_wav_mono
from ivr.media.prompts import text as prompt_text
from ivr.media.tts import synthesize
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import Message, PhoneNumber
from storage.recordings import RecordingStore
from tests.integration.binfoon import campaign_done, start_binfoon, wav_seconds

pytestmark = pytest.mark.integration

#: A number the destination policy refuses (not Belgium or a neighbour): found as a wrong number, never dialled.
BARRED = "+447700900123"
#: What each scripted end means in a reach report.
REACH_STATE = {"confirmed": "confirmed", "answered_no_key": "reached", "answering_machine": "machine",
               "busy": "not_reached", "no_answer": "not_reached", "failed": "not_reached",
               "invalid_number": "not_reached"}


@pytest.fixture
async def drill_lab(asterisk_runtime: AsteriskRuntime, instances_dir: Path) -> AsyncIterator[PhoneLab]:
    """Simulated phones behind Local channels, ringing briefly."""
    lab = await PhoneLab.start(asterisk_runtime, instances_dir, ring_s=0.3)
    try:
        yield lab
    finally:
        await lab.stop()


def _wrong_number_expected(case: MemberCase) -> str | None:
    if case.behaviour == "barred number":
        return "barred"
    scripts = [case.primary] + ([case.secondary] if case.secondary else [])
    return "invalid_number" if any(s.behaviour is Behaviour.UNREACHABLE for s in scripts) else None


async def test_a_drill_of_forty_members_reaches_them_as_scripted(drill_lab: PhoneLab, tmp_path: Path,
                                                                renderer: PromptRenderer) -> None:
    lab = drill_lab
    binfoon = await start_binfoon(
        lab, tmp_path, renderer, max_channels=40, max_cps=50.0, member_ring_timeout_s=3.0,
        review_ring_timeout_s=1.0, preventive_retry_after_s=1.0, no_key_retry_after_s=1.0, key_timeout_s=4.0,
        member_reminders=1)
    try:
        engine = binfoon.world.engine
        # How long a member listens before pressing a key: AMD, the drill's header, the test message.
        spoken = await asyncio.to_thread(synthesize, prompt_text("drill_message", "nl"), "nl", tmp_path / "drill.wav")
        header = await renderer.wav("member_header_drill", "nl")
        message_s = 4.0 + wav_seconds(header) + wav_seconds(spoken)
        cases = member_cases(39, message_s) + [
            MemberCase("barred number", PhoneScript.never_answers(), None, "invalid_number")]
        people = seed_members(engine, 12, cases)
        barred_id = max(people)
        with session_scope(engine) as s:
            s.execute(update(PhoneNumber).where(PhoneNumber.person_id == barred_id).values(e164=BARRED))
        script_members(lab, engine, people)

        # As `binfoon bin test 12` does: the service (polling the database) starts delivering it.
        message_id = await asyncio.to_thread(
            start_drill, engine, RecordingStore(binfoon.settings.data_dir / "recordings"), 12,
            Actor.operator("cli:test"))
        campaign = await campaign_done(binfoon, timeout_s=300)
        with session_scope(engine) as s:
            assert s.get_one(Message, message_id).drill
            report = reach_report(s, message_id)
        assert report.campaign_id == campaign.id and report.status == "done"

        states = {line.person_id: line.state for line in report.members}
        wrong = {pid: (people[pid].behaviour, states.get(pid), REACH_STATE[people[pid].expected])
                 for pid in people if states.get(pid) != REACH_STATE[people[pid].expected]}
        assert wrong == {}
        expected = {"members": len(people),
                    "reached": sum(1 for c in people.values() if REACH_STATE[c.expected] != "not_reached"),
                    "confirmed": sum(1 for c in people.values() if c.expected == "confirmed"),
                    "not_reached": sum(1 for c in people.values() if REACH_STATE[c.expected] == "not_reached"),
                    "pending": 0, "not_called": 0,  # every member of this drill is called
                    "wrong_numbers": sum(1 for c in people.values() if _wrong_number_expected(c))}
        assert report.counts() == expected
        found = {w.person_id: w.why for w in report.wrong_numbers}
        assert found == {pid: why for pid, c in people.items() if (why := _wrong_number_expected(c))}
        assert all(w.rank == PhoneRank.PRIMARY.value for w in report.wrong_numbers)
        assert lab.network.calls_to(BARRED) == []  # refused before any channel
        print(f"drill {message_id} of BIN 12, campaign {campaign.id}: {report.counts()}; "
              f"scripted: {expected}; wrong numbers: {sorted(found.values())}")

        # A member who confirmed heard the drill's header ("Dit is een test ..."), not a real message's.
        with session_scope(engine) as s:
            primary = {p.person_id: p.e164 for p in s.scalars(select(PhoneNumber).where(
                PhoneNumber.person_id.in_(list(people)), PhoneNumber.rank == PhoneRank.PRIMARY))}
        [confirmer] = [pid for pid, c in people.items() if c.behaviour == "confirms"][:1]
        [call] = lab.network.calls_to(primary[confirmer])
        heard, rate = await asyncio.to_thread(read_wav_mono, call.heard_audio())
        drill_header, _ = read_wav_mono(header)
        preventive_header, _ = read_wav_mono(await renderer.wav("member_header_preventive", "nl"))
        hearing = hear(drill_header, heard, rate)
        print(f"drill header heard at {hearing.lag_s} s (whole: {hearing.whole})")
        assert hearing.whole, hearing
        assert not hear(preventive_header, heard, rate).whole  # the negative control
    finally:
        await binfoon.app.stop()
