"""Fault test (RELIABILITY B1): the application is SIGKILLed in the middle of a 200-member campaign
and started again. Nobody who confirmed is called again; nobody is skipped.

The application runs as its own process (`binfoon serve`) against the test's private Asterisk and
simulated phones, exactly as in production; the test only seeds the database and pulls the plug.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.media.compare import read_wav_mono
from ivr.media.voice import PromptRenderer
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import PhoneScript
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from storage.db import session_scope
from storage.models import CallAttempt, Confirmation, Message, PhoneNumber
from ivr.domain.vocabulary import AttemptOutcome, MessageStatus
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import campaign_done, serve_process, start_binfoon, stop_process, submit_recorded, utc
from tests.integration.conftest import until
from tests.pg import ON_BOTH_DATABASES

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "08.wav"
MEMBERS = 200


def _serve(lab: PhoneLab, db_url: str, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    return serve_process(lab, db_url, data_dir, log, max_channels="50", max_cps="50")


@pytest.mark.serial
@ON_BOTH_DATABASES
async def test_sigkill_mid_campaign_loses_nobody_and_calls_no_confirmed_member_again(
        lab: PhoneLab, database: str, tmp_path: Path, renderer: PromptRenderer) -> None:
    # The directory and the message, written by the test; then the app runs in its own process.
    binfoon = await start_binfoon(lab, tmp_path, renderer, database=database)
    header = await renderer.wav("member_header_urgent", "nl")
    heard_s = 4.0 + len(read_wav_mono(header)[0]) / 8000 + len(read_wav_mono(CLIP)[0]) / 8000
    confirm = PhoneScript.answers(rings=1, keys=((heard_s + 1.0, "1"),))
    people = seed_members(binfoon.world.engine, 12, [MemberCase("confirms", confirm, None, "confirmed")] * MEMBERS)
    script_members(lab, binfoon.world.engine, people)
    await binfoon.app.stop()
    await lab.app.stop()  # free the FastAGI port for the application's own process
    engine = binfoon.world.engine
    db_url = database
    log = tmp_path / "serve.log"
    offset = time.time() - time.monotonic()

    def confirmed() -> int:
        with session_scope(engine) as s:
            return s.scalar(select(func.count()).select_from(Confirmation)) or 0

    first = _serve(lab, db_url, binfoon.settings.data_dir, log)
    try:
        # The stopped in-test app only writes the message; the serving process picks it up.
        message_id = await submit_recorded(binfoon, CLIP, chain=False)
        await until(lambda: confirmed() >= MEMBERS // 2, 300, "half the members confirmed", poll_s=0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.time()
        at_kill = confirmed()
    finally:
        if first.poll() is None:
            first.kill()
    second = _serve(lab, db_url, binfoon.settings.data_dir, log)
    try:
        await campaign_done(binfoon, timeout_s=400)  # the service's process writes it; read from the database
    finally:
        stop_process(second)
    with session_scope(engine) as s:
        confirmations = {c.person_id: utc(c.confirmed_at) for c in s.scalars(select(Confirmation))}
        attempts = s.scalars(select(CallAttempt)).all()
        assert s.get_one(Message, message_id).status is MessageStatus.DONE
    # The kill really cut calls in the middle: attempts dialled before it and ended after it. Each
    # was closed as interrupted on restart and retried, or went on without the killed process (the
    # dialplan's fallback, its key recovered from Asterisk's CEL record; or, still before its
    # conversation, it reached the restarted process) and ended confirmed.
    cut = [a for a in attempts if a.dialled_at and a.ended_at
           and utc(a.dialled_at).timestamp() < killed_at < utc(a.ended_at).timestamp()]
    assert cut, "no call was in flight at the kill"
    assert all(a.outcome in (AttemptOutcome.INTERRUPTED, AttemptOutcome.CONFIRMED) for a in cut), \
        [(a.outcome, a.dial_outcome) for a in cut]
    # Nobody skipped: every member confirmed in the end.
    assert set(confirmations) == set(people), f"{len(confirmations)} of {MEMBERS} confirmed"
    # Nobody called again after confirming: neither in our records nor at the phones themselves.
    assert [a for a in attempts if utc(a.dialled_at) > confirmations[a.person_id]] == []
    with session_scope(engine) as s:
        numbers = {p.e164: p.person_id
                   for p in s.scalars(select(PhoneNumber).where(PhoneNumber.person_id.in_(list(people))))}
    late_calls = [(number, c.started_at) for number, pid in numbers.items() for c in lab.network.calls_to(number)
                  if offset + c.started_at > confirmations[pid].timestamp() + 0.5]
    assert late_calls == []
    assert at_kill >= MEMBERS // 2 and killed_at > 0
