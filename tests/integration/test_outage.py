"""An outage is never a member's failure, and a number never has two calls at once (issue 13 item 3).

Three outages against the real Asterisk, each counted at the phones themselves (the simulated
network records every call that reached a phone, with when it started and ended):

- Asterisk stops gracefully while a call is up: for as long as that call lasts every AMI action,
  Originate included, is refused ("Asterisk is shutting down"). Those calls never reached a phone:
  they cost nobody a try, and the report does not count them;
- the service is SIGKILLed while members are in their calls: the dialplan carries those calls on
  (its fallback) and the restarted service waits for them to end before it calls those members again;
- the carrier answers every call with 503: the campaign pauses (the database, ``campaign watch``
  and the log say so), the calls that failed cost nobody a try, and delivery resumes when the
  carrier is back.

Every scenario checks: 0 members charged for calls that never reached a phone, 0 numbers with two
calls up at once, 0 confirmed members called again, 0 members skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from ivr.delivery.policy import retry_policies
from ivr.delivery.outcome import NOT_PLACED
from ivr.delivery.policy import NOT_A_TRY
from ivr.delivery.report import campaign_report
from ivr.delivery.store import PAUSE_KEY
from ivr.lab.network import PhoneScript
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import AuditEntry, CallAttempt, Campaign, Checkpoint, Confirmation, PhoneNumber
from ivr.domain.vocabulary import AttemptOutcome, AttemptStatus, Decision
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import (
    Binfoon,
    campaign_done,
    message_seconds,
    serve_process,
    start_binfoon,
    stop_process,
    submit_recorded,
    watch_once,
)
from tests.integration.conftest import until

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"


# -- what the phones saw ----------------------------------------------------------------------------
def numbers_of(engine: Engine, people: object) -> dict[str, int]:
    """Every phone number of these members -> its member."""
    with session_scope(engine) as s:
        return {p.e164: p.person_id for p in s.scalars(select(PhoneNumber).where(
            PhoneNumber.person_id.in_(list(people))))}  # type: ignore[call-overload]


def numbers_with_two_calls_at_once(lab: PhoneLab, numbers: dict[str, int]) -> list[str]:
    """Numbers whose phone had two calls up at the same moment (a call still up ends now)."""
    out = []
    now = time.monotonic()
    for number in numbers:
        spans = sorted((c.started_at, c.ended_at or now) for c in lab.network.calls_to(number))
        if any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])):
            out.append(number)
    return out


def attempts_of(engine: Engine) -> list[CallAttempt]:
    """Every member call attempt, oldest first."""
    with session_scope(engine) as s:
        return list(s.scalars(select(CallAttempt).order_by(CallAttempt.created_at)))


def charged_without_a_phone(engine: Engine, lab: PhoneLab, numbers: dict[str, int]) -> dict[str, int]:
    """Numbers with more tries charged to their member than calls that reached the phone, by how many.

    A try is charged when its outcome counts against the member (the policy's ``NOT_A_TRY`` do not)."""
    charged: dict[str, int] = {}
    for attempt in attempts_of(engine):
        if attempt.e164 in numbers and attempt.outcome is not None and attempt.outcome not in NOT_A_TRY:
            charged[attempt.e164] = charged.get(attempt.e164, 0) + 1
    return {number: n - len(lab.network.calls_to(number)) for number, n in charged.items()
            if n > len(lab.network.calls_to(number))}


def confirmed_called_again(engine: Engine, lab: PhoneLab, numbers: dict[str, int], offset: float) -> list[str]:
    """Numbers a call reached after their member had confirmed (``offset``: wall clock - monotonic)."""
    with session_scope(engine) as s:
        confirmed = {c.person_id: c.confirmed_at.replace(tzinfo=dt.timezone.utc).timestamp()
                     for c in s.scalars(select(Confirmation))}
    return [number for number, person in numbers.items() if person in confirmed
            for call in lab.network.calls_to(number) if offset + call.started_at > confirmed[person] + 0.5]


def final_states(binfoon: Binfoon, campaign_id: int, **policy: object) -> dict[int, str]:
    """Every member's state in the campaign's report (``policy``: the serving process's retry settings)."""
    policies = retry_policies(dataclasses.replace(binfoon.settings, **policy))  # type: ignore[arg-type]
    report = campaign_report(binfoon.world.engine, campaign_id, policies, dt.datetime.now(dt.timezone.utc))
    return {line.person_id: line.state for line in report.members}


async def approved(binfoon: Binfoon) -> int:
    """A message for BIN 12, approved for delivery now while no dialer runs (the application is stopped)."""
    message_id = await submit_recorded(binfoon, CLIP, chain=False)
    assert await binfoon.app.review_desk.decide(message_id, Decision.FORWARD_NOW, person_id=None,
                                                review_call_id=None)
    return message_id


def control_socket_command(run_dir: Path, command: str) -> None:
    """Run one Asterisk CLI command over the instance's control socket (what ``asterisk -rx`` does)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(run_dir / "run" / "asterisk.ctl"))
        sock.recv(256)
        sock.sendall(f"cli quit after {command}".encode() + b"\0")
        sock.settimeout(2)
        try:
            while sock.recv(4096):
                pass
        except TimeoutError:
            pass  # a stopping Asterisk may keep the console open: the command is taken


# -- 1. Asterisk stopping gracefully -------------------------------------------------------------------
async def test_calls_asterisk_refuses_while_it_stops_cost_nobody_a_try(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    settings = dict(max_channels=2, max_cps=20.0, member_ring_timeout_s=3.0, review_ring_timeout_s=1.0,
                    urgent_retries=1, urgent_retry_after_s=1.0, no_key_retries=0, no_key_retry_after_s=1.0)
    binfoon = await start_binfoon(lab, tmp_path, renderer, **settings)  # type: ignore[arg-type]
    engine = binfoon.world.engine
    confirm = PhoneScript.answers(rings=1, keys=((await message_seconds(renderer, CLIP) + 1.0, "1"),))
    # The first household listens in silence: its call keeps the stopping Asterisk up (and refusing)
    # for as long as it lasts. The others are dialled while Asterisk refuses: busy and unanswered
    # lines must still get their retry, everyone must still be called.
    people = seed_members(engine, 12, [MemberCase("listens", PhoneScript.silent(), None, "answered_no_key")]
                          + [MemberCase("busy", PhoneScript.busy(), None, "busy")] * 2
                          + [MemberCase("rings out", PhoneScript.never_answers(), None, "no_answer")] * 2
                          + [MemberCase("confirms", confirm, None, "confirmed")] * 3)
    script_members(lab, engine, people)
    numbers = numbers_of(engine, people)
    listener = next(n for n, p in numbers.items() if people[p].behaviour == "listens")
    await binfoon.app.stop()
    await approved(binfoon)
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=binfoon.world, **settings)  # type: ignore[arg-type]
    try:
        await until(lambda: any(c.answered_at for c in lab.network.calls_to(listener)), 60, "the listener answered")
        # Stop gracefully: no new call, the calls up go on; AMI stays logged in and refuses every action.
        await asyncio.to_thread(control_socket_command, lab.asterisk.run_dir, "core stop gracefully")
        await until(lambda: any(a.dial_outcome == NOT_PLACED for a in attempts_of(engine)), 30,
                    "an Originate refused while Asterisk stops")
        await until(lambda: not lab.asterisk.is_running(), 120, "Asterisk stopped")
        await asyncio.to_thread(lab.asterisk.stop)  # reaps the process that ended by itself
        await asyncio.to_thread(lab.asterisk.start)
        campaign = await campaign_done(binfoon, timeout_s=150)
    finally:
        await binfoon.app.stop()

    attempts = attempts_of(engine)
    refused = [a for a in attempts if a.dial_outcome == NOT_PLACED]
    assert refused and all(a.outcome is AttemptOutcome.INTERRUPTED for a in refused)
    assert charged_without_a_phone(engine, lab, numbers) == {}
    assert numbers_with_two_calls_at_once(lab, numbers) == []
    assert confirmed_called_again(engine, lab, numbers, time.time() - time.monotonic()) == []
    # Nobody skipped, every retry given: each household ended as its phone behaves.
    assert final_states(binfoon, campaign.id) == {p: case.expected for p, case in people.items()}
    calls: dict[str, list[int]] = {people[p].behaviour: [] for p in people}
    for number, person in numbers.items():
        calls[people[person].behaviour].append(len(lab.network.calls_to(number)))
    assert calls == {"listens": [1], "busy": [2, 2], "rings out": [2, 2], "confirms": [1, 1, 1]}
    # The report counts the calls placed, not the ones Asterisk refused.
    report = campaign_report(engine, campaign.id, binfoon.app.campaigns.policies, dt.datetime.now(dt.timezone.utc))
    assert report.not_placed == len(refused)
    assert report.attempts == sum(len(lab.network.calls_to(n)) for n in numbers)
    print(f"\nOUTAGE graceful-stop: refused originates {len(refused)}, members charged for unreachable calls "
          f"{len(charged_without_a_phone(engine, lab, numbers))}, numbers with two calls at once "
          f"{len(numbers_with_two_calls_at_once(lab, numbers))}, confirmed members called again 0, skipped 0")


# -- 2. the service SIGKILLed while members listen ---------------------------------------------------
def _serve(lab: PhoneLab, db_url: str, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    return serve_process(lab, db_url, data_dir, log, max_channels="20", max_cps="20", no_key_retries="0")


async def test_after_a_sigkill_no_number_gets_a_second_call_while_the_first_is_up(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    engine = binfoon.world.engine
    heard_s = await message_seconds(renderer, CLIP)
    confirm = PhoneScript.answers(rings=1, keys=((heard_s + 1.0, "1"),))
    # Silent households keep their call up longest: after the kill the dialplan's fallback plays them
    # the message and waits for a key (about 48 s), long past any fixed grace.
    people = seed_members(engine, 12, [MemberCase("listens", PhoneScript.silent(), None, "answered_no_key")] * 4
                          + [MemberCase("confirms", confirm, None, "confirmed")] * 4)
    script_members(lab, engine, people)
    numbers = numbers_of(engine, people)
    listeners = {p for p, case in people.items() if case.behaviour == "listens"}
    await binfoon.app.stop()
    await approved(binfoon)
    await lab.app.stop()  # free the FastAGI port for the service's own process
    db_url = f"sqlite:///{tmp_path / 'binfoon.db'}"
    log = tmp_path / "serve.log"
    offset = time.time() - time.monotonic()

    def everyone_in_the_conversation() -> bool:
        # The flow began playing the message to every member (its audit line is written first).
        with session_scope(engine) as s:
            return len(list(s.scalars(select(AuditEntry.id).where(
                AuditEntry.action == "recording.played", AuditEntry.actor.like("attempt:%"))))) >= len(people)

    first = _serve(lab, db_url, binfoon.settings.data_dir, log)
    try:
        await until(everyone_in_the_conversation, 90, "every member in the conversation", poll_s=0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    left_up = [a.id for a in attempts_of(engine) if a.status is not AttemptStatus.ENDED]
    second = _serve(lab, db_url, binfoon.settings.data_dir, log)
    try:
        await campaign_done(binfoon, timeout_s=180)  # the service's process writes it; read from the database
    finally:
        stop_process(second)

    assert len(left_up) >= len(listeners), "the kill cut no call"
    doubled = numbers_with_two_calls_at_once(lab, numbers)
    assert doubled == [], (doubled, log.read_text()[-3000:])
    assert charged_without_a_phone(engine, lab, numbers) == {}
    assert confirmed_called_again(engine, lab, numbers, offset) == []
    with session_scope(engine) as s:
        campaign_id = s.scalars(select(Campaign.id)).one()
    states = final_states(binfoon, campaign_id, no_key_retries=0)
    assert states == {p: case.expected for p, case in people.items()}
    # The cut calls went on in the dialplan and were waited for: each listener heard the message once
    # more afterwards, never over the first call.
    assert sorted(len(lab.network.calls_to(n)) for n, p in numbers.items() if p in listeners) == [2] * len(listeners)
    waited = [line for line in log.read_text().splitlines() if "left up" in line]
    assert waited, "the restarted service did not find the calls left up"
    print(f"\nOUTAGE sigkill: calls left up at the kill {len(left_up)}, numbers with two calls at once "
          f"{len(doubled)}, members charged for unreachable calls 0, confirmed members called again 0, skipped 0\n"
          + "\n".join(waited))


# -- 3. the carrier answers 503 to every call ---------------------------------------------------------
async def _network_down(lab: PhoneLab, down: bool) -> None:
    """Make the phone network's Asterisk refuse every call with congestion (SIP 503), or stop it."""
    response = await lab.network_ami.action({"Action": "Setvar", "Variable": "SIM_NETWORK_DOWN",
                                             "Value": "1" if down else "0"})
    assert response.get("Response") == "Success", response


async def test_a_carrier_refusing_every_call_pauses_the_campaign_at_no_members_cost(
        trunk_lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    lab = trunk_lab
    caplog.set_level(logging.INFO, logger="ivr.delivery")
    settings = dict(max_channels=3, max_cps=20.0, member_ring_timeout_s=3.0, review_ring_timeout_s=1.0,
                    urgent_retries=1, urgent_retry_after_s=1.0, outage_congestion_streak=4,
                    outage_probe_after_s=2.0, outage_probe_max_s=4.0)
    binfoon = await start_binfoon(lab, tmp_path, renderer, **settings)  # type: ignore[arg-type]
    engine = binfoon.world.engine
    confirm = PhoneScript.answers(rings=1, keys=((await message_seconds(renderer, CLIP) + 1.0, "1"),))
    people = seed_members(engine, 12, [MemberCase("confirms", confirm, None, "confirmed")] * 6
                          + [MemberCase("busy", PhoneScript.busy(), None, "busy")])
    script_members(lab, engine, people)
    numbers = numbers_of(engine, people)
    await binfoon.app.stop()
    await approved(binfoon)
    await _network_down(lab, True)
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=binfoon.world, **settings)  # type: ignore[arg-type]

    def paused() -> bool:
        with session_scope(engine) as s:
            return s.get(Checkpoint, PAUSE_KEY) is not None

    def congested() -> int:
        return sum(1 for a in attempts_of(engine) if a.dial_outcome == "congestion")

    try:
        await until(paused, 60, "delivery paused")
        # One probe call after the pause failed too: still paused, and it cost nobody a try either.
        await until(lambda: congested() >= settings["outage_congestion_streak"] + 1, 30,  # type: ignore[operator]
                    "a failed probe call")
        assert paused()
        with session_scope(engine) as s:
            campaign_id = s.scalars(select(Campaign.id)).one()
        watched = watch_once(binfoon, campaign_id, monkeypatch, capsys)
        assert "PAUSED: carrier refuses every call" in watched, watched
        assert lab.network.calls == []  # no phone was reached
        await _network_down(lab, False)
        campaign = await campaign_done(binfoon, timeout_s=120)
    finally:
        await binfoon.app.stop()

    attempts = attempts_of(engine)
    failed_on_trunk = [a for a in attempts if a.dial_outcome == "congestion"]
    assert failed_on_trunk and all(a.outcome is AttemptOutcome.INTERRUPTED for a in failed_on_trunk)
    assert not paused()
    assert charged_without_a_phone(engine, lab, numbers) == {}
    assert numbers_with_two_calls_at_once(lab, numbers) == []
    assert confirmed_called_again(engine, lab, numbers, time.time() - time.monotonic()) == []
    assert final_states(binfoon, campaign.id) == {p: case.expected for p, case in people.items()}
    assert sorted(len(lab.network.calls_to(n)) for n in numbers) == [1] * 6 + [2]
    messages = [r.getMessage() for r in caplog.records]
    assert any("delivery PAUSED" in m for m in messages) and any("delivery resumed" in m for m in messages)
    print(f"\nOUTAGE trunk-503: calls refused by the carrier {len(failed_on_trunk)}, members charged for them "
          f"{len(charged_without_a_phone(engine, lab, numbers))}, numbers with two calls at once 0, "
          f"confirmed members called again 0, skipped 0\n{watched.strip()}")
