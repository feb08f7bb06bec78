"""FastAGI trusts no local process (issue 14 item 4), against the real service on a private Asterisk.

A test plays a local process that reaches the service's FastAGI port and speaks AGI by hand:
- without the instance's secret (or with a wrong one) no flow runs: the police intake never
  answers, no PIN attempt and no audit row are written, the socket is closed;
- with the secret (leaked, say) but on a channel that is not the one we originated, a member call
  confirms nobody and a review call decides nothing; the admins get a ``security.alert``.
The real calls still work: tests/integration/test_binfoon1.py and test_binfoon2.py use the same path.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from ivr.lab.phone_lab import PhoneLab
from ivr.lab.phones import PhoneScript
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import AuditEntry, CallAttempt, Confirmation, PinAttempt, ReviewCall, ReviewDecision
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import start_binfoon, submit_recorded
from tests.integration.conftest import eventually
from tests.world import OFFICER_PHONE

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
#: A channel id Asterisk could give any channel: not the one we originated for the call.
OTHER_CHANNEL = "1733490000.99"


async def speak_agi(port: int, script: str, unique_id: str, *args: str, caller_id: str = OFFICER_PHONE,
                    max_commands: int = 40) -> bytes:
    """Be a local process that speaks FastAGI by hand: send an AGI environment for ``script``, answer
    every command with a key press ('1'), and return everything the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    env = ["agi_network: yes", f"agi_network_script: {script}", f"agi_request: agi://127.0.0.1:{port}/{script}",
           "agi_channel: PJSIP/trunk-00000001", "agi_language: nl", "agi_type: PJSIP",
           f"agi_uniqueid: {unique_id}", f"agi_callerid: {caller_id}", "agi_calleridname: Peeters",
           "agi_context: binfoon-police", "agi_extension: s", "agi_priority: 1"]
    env += [f"agi_arg_{i}: {arg}" for i, arg in enumerate(args, start=1)]
    writer.write(("\n".join(env) + "\n\n").encode())
    sent = b""
    try:
        for _ in range(max_commands):
            line = await asyncio.wait_for(reader.readline(), 15)
            if not line:
                break
            sent += line
            writer.write(b"200 result=49 endpos=8000\n")
            await writer.drain()
    finally:
        writer.close()
    return sent


def _count(engine: Engine, model: type) -> int:
    with session_scope(engine) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _alerts(engine: Engine) -> list[tuple[str, dict[str, object]]]:
    with session_scope(engine) as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.action == "security.alert").order_by(AuditEntry.id))
        return [(r.subject, dict(r.details)) for r in rows]


async def test_without_the_secret_no_flow_runs(lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    engine = binfoon.world.engine
    audit_before = _count(engine, AuditEntry)
    try:
        with caplog.at_level(logging.DEBUG):
            for script in ("police_intake", "admin_replay", "officer_intake",
                           "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG/police_intake"):
                # The officer's own caller ID: before the fix the police line asked this process for a PIN.
                sent = await speak_agi(lab.app.port, script, "1733490000.1")
                assert sent == b"", f"{script}: the service spoke AGI to a process without the secret: {sent!r}"
        assert _count(engine, PinAttempt) == 0
        assert _count(engine, AuditEntry) == audit_before
        assert list(binfoon.timeline.flow_ends) == []
        refusals = [r for r in caplog.records if r.name == "ivr.telephony.agi" and "refused" in r.getMessage()]
        assert len(refusals) == 4 and {r.levelno for r in refusals} == {logging.WARNING}
        assert lab.asterisk.agi_secret not in caplog.text
    finally:
        await binfoon.app.stop()


async def test_a_leaked_attempt_id_on_another_channel_confirms_nobody(lab: PhoneLab, tmp_path: Path,
                                                                     renderer: PromptRenderer,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    # The member's phone rings for long: the attempt is real and open (its id is the Originate ChannelId).
    binfoon = await start_binfoon(lab, tmp_path, renderer, member_ring_timeout_s=30.0, review_ring_timeout_s=1.0)
    engine = binfoon.world.engine
    try:
        people = seed_members(engine, 12, [MemberCase("never answers", PhoneScript.never_answers(), None,
                                                      "no_answer")])
        script_members(lab, engine, people)
        await submit_recorded(binfoon, CLIP)  # nobody reviews: urgent, forwarded by the zone's policy

        def dialled() -> list[str]:
            with session_scope(engine) as s:
                return list(s.scalars(select(CallAttempt.id).where(CallAttempt.dialled_at.is_not(None))))
        [attempt_id] = await eventually(dialled, bool, timeout_s=60)

        with caplog.at_level(logging.DEBUG):
            sent = await speak_agi(lab.app.port, f"{lab.asterisk.agi_secret}/member_call", OTHER_CHANNEL,
                                   attempt_id, "HUMAN")
        # Refused before anything is played or stored: hung up (so the dialplan's own fallback does
        # not play the message either), nothing else.
        assert sent == b"HANGUP\n"
        with session_scope(engine) as s:
            attempt = s.get_one(CallAttempt, attempt_id)
            assert attempt.answered_at is None and attempt.amd_status is None
            assert s.scalars(select(Confirmation)).all() == []
        assert [(subject, details["kind"], details["flow"]) for subject, details in _alerts(engine)] == [
            (f"call:{attempt_id}", "agi-foreign-channel", "member_call")]
        assert lab.asterisk.agi_secret not in caplog.text
    finally:
        await binfoon.app.stop()


async def test_a_leaked_review_call_id_on_another_channel_decides_nothing(lab: PhoneLab, tmp_path: Path,
                                                                          renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer, review_ring_timeout_s=30.0)
    engine = binfoon.world.engine
    try:
        for _person_id, phone in binfoon.world.coordinators:
            lab.network.script(phone, PhoneScript.never_answers())
        message_id = await submit_recorded(binfoon, CLIP)

        def ringing() -> list[str]:
            with session_scope(engine) as s:
                return list(s.scalars(select(ReviewCall.id).where(ReviewCall.message_id == message_id,
                                                                  ReviewCall.dialled_at.is_not(None))))
        review_call_id = (await eventually(ringing, bool, timeout_s=30))[0]

        sent = await speak_agi(lab.app.port, f"{lab.asterisk.agi_secret}/coordinator_review", OTHER_CHANNEL,
                               review_call_id)
        assert sent == b"HANGUP\n"
        assert _count(engine, ReviewDecision) == 0
        with session_scope(engine) as s:
            assert s.get_one(ReviewCall, review_call_id).answered_at is None
        assert [(subject, details["flow"]) for subject, details in _alerts(engine)] == [
            (f"call:{review_call_id}", "coordinator_review")]
    finally:
        await binfoon.app.stop()
