"""The web console's test call to a member against the real Asterisk (issue 16 item 6): it asks for 1
and stores what happened. One member presses 1 during the test message, one listens and hangs up
without a key, one is busy; each outcome is stored (an audit row) and shown by the console."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from ivr.directory.accounts import Viewer
from ivr.directory.test_calls import last_result
from ivr.domain.vocabulary import WebRole
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.phones import PhoneScript
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.media.voice import PromptRenderer
from ivr.web.console import Console
from storage.db import session_scope
from tests.integration.binfoon import start_binfoon

pytestmark = pytest.mark.integration


def _seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


@pytest.mark.timeout(180)
async def test_the_test_call_reads_the_key_and_stores_the_outcome(lab: PhoneLab, tmp_path: Path,
                                                                  renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer, member_ring_timeout_s=5.0)
    console = Console.from_app(binfoon.app)
    try:
        header_s = _seconds(await renderer.wav("member_header_drill", "nl"))
        # 1 while the test message plays (the header is over); the other hangs up in the message.
        people = seed_members(binfoon.world.engine, 12, [
            MemberCase("presses 1", PhoneScript.answers(keys=((header_s + 2.0, "1"),)), None, "confirmed"),
            MemberCase("no key", PhoneScript.hangs_up_after(header_s + 3.0), None, "answered_no_key"),
            MemberCase("busy", PhoneScript.busy(), None, "busy")])
        script_members(lab, binfoon.world.engine, people)
        viewer = Viewer(0, binfoon.world.officer_id, "Inspecteur Peeters", "peeters", WebRole.ADMIN, "nl", 0,
                        None, None)
        for person_id in people:
            await console.test_call(viewer, person_id)
        for _ in range(900):
            if all(outcome not in ("dialling", "answered") for outcome in console.test_results().values()):
                break
            await asyncio.sleep(0.1)
        expected = {person_id: case.expected for person_id, case in people.items()}
        assert console.test_results() == expected
        with session_scope(binfoon.world.engine) as s:
            stored = {person_id: last_result(s, person_id) for person_id in people}
        assert {pid: r.outcome if r else None for pid, r in stored.items()} == expected
        # One call each: a test call is never retried.
        assert [len(lab.network.calls_to(p.e164)) for p in _phones(binfoon, people)] == [1, 1, 1]
    finally:
        await console.aclose()
        await binfoon.app.stop()


def _phones(binfoon, people):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from storage.models import PhoneNumber

    with session_scope(binfoon.world.engine) as s:
        return list(s.scalars(select(PhoneNumber).where(PhoneNumber.person_id.in_(list(people)))
                              .order_by(PhoneNumber.person_id)))
