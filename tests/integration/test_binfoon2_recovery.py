"""BINFOON 2 against the real Asterisk, the cases a crash test only meets by chance:

- a member presses 1 while the application is down: the dialplan's fallback has Asterisk write
  the confirmation to its CEL file, and the application takes it in when it starts again (never
  calling that member again). Deterministic: the application is stopped before the call is placed,
  not killed at a random moment (commit 44ae800 dropped that assertion from test_crash.py because
  whether a killed process leaves such a call behind depends on the moment of the kill);
- phone numbers shared by members: one call per number, primary or second number.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from ivr.media.voice import PromptRenderer
from ivr.delivery.report import campaign_report
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import PhoneScript
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.telephony.cel import cel_csv_path, read_confirmations
from storage.db import session_scope
from storage.models import Bin, CallAttempt, Confirmation, Person, PhoneNumber, RoleAssignment
from ivr.domain.vocabulary import AttemptOutcome, CampaignStatus, Decision, Language, PhoneRank, Role
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import campaign_done, message_seconds, start_binfoon, submit_recorded, utc
from tests.integration.conftest import until

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"


def closed_agi() -> str:
    """A FastAGI address where nothing listens: what Asterisk meets while the application is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"agi://127.0.0.1:{port}"


def _confirmations(engine: Engine) -> dict[int, Confirmation]:
    with session_scope(engine) as s:
        return {c.person_id: c for c in s.scalars(select(Confirmation))}


def _attempts(engine: Engine) -> list[CallAttempt]:
    with session_scope(engine) as s:
        return list(s.scalars(select(CallAttempt).order_by(CallAttempt.dialled_at)))


async def test_a_key_pressed_while_the_app_is_down_is_taken_from_cel_and_never_asked_again(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    settings = dict(max_channels=5, max_cps=20.0, member_ring_timeout_s=3.0, review_ring_timeout_s=1.0,
                    urgent_retry_after_s=1.0, no_key_retry_after_s=1.0)
    binfoon = await start_binfoon(lab, tmp_path, renderer, **settings)  # type: ignore[arg-type]
    engine = binfoon.world.engine
    confirm = PhoneScript.answers(rings=1, keys=((await message_seconds(renderer, CLIP) + 1.0, "1"),))
    people = seed_members(engine, 12, [MemberCase("confirms while the app is down", confirm, None, "confirmed"),
                                       MemberCase("confirms", confirm, None, "confirmed")])
    script_members(lab, engine, people)
    down_member, other_member = people
    with session_scope(engine) as s:
        number = {p.person_id: p.e164 for p in s.scalars(select(PhoneNumber))}

    # The application stops before it dials anyone; the message is approved and its campaign made.
    await binfoon.app.stop()
    message_id = await submit_recorded(binfoon, CLIP, chain=False)
    assert await binfoon.app.review_desk.decide(message_id, Decision.FORWARD_NOW, person_id=None,
                                                review_call_id=None)
    started = await binfoon.app.delivery.start_campaign(message_id)
    assert started is not None and started.created
    campaign_id = started.campaign_id
    # What the application did just before it died: the attempt written, the Originate sent with
    # the campaign's sounds. Then nothing of the application answers any more (its FastAGI port is
    # closed), so the answered call runs the dialplan's own conversation.
    delivery = binfoon.app.delivery
    [plan] = await delivery.plans()
    attempt_id = await delivery.begin_attempt(campaign_id, down_member, number[down_member], "primary", 1)
    assert attempt_id is not None
    voice = binfoon.app.voice
    variables = {"BINFOON_SOUND": await voice.audio(plan.recording),
                 "BINFOON_HEADER": await voice.prompt("member_header_urgent", "nl"),
                 "BINFOON_KEYS": await voice.prompt("member_keys", "nl"),
                 "BINFOON_THANKS": await voice.prompt("member_thanks", "nl"),
                 "BINFOON_AGI": closed_agi()}
    result = await lab.call(number[down_member], attempt_id=attempt_id, variables=variables)
    assert result.success, result
    [call] = await lab.network.wait_for_calls(number[down_member], 1, timeout_s=90)
    assert [digits for _, digits in call.keys_sent] == ["1"]
    # Asterisk wrote the key durably (CEL is written asynchronously: give it a moment).
    cel = cel_csv_path(lab.asterisk)
    await until(lambda: any(c.attempt_id == attempt_id for c in read_confirmations(cel, 0)[0]), 5.0,
                "a CEL confirmation row", poll_s=0.1)
    assert _confirmations(engine) == {}  # nobody was there to store it
    restarted_at = time.time()

    # The application starts again: the key counts before anything is dialled.
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=binfoon.world, **settings)  # type: ignore[arg-type]
    try:
        campaign = await campaign_done(binfoon, timeout_s=120)
        assert campaign.status is CampaignStatus.DONE
        confirmations = _confirmations(engine)
        recovered = confirmations[down_member]
        assert (recovered.via, recovered.attempt_id) == ("cel", attempt_id)
        assert utc(recovered.confirmed_at).timestamp() < restarted_at  # the moment of the key, not of the ingest
        assert confirmations[other_member].via == "call"  # the dialer ran after the restart
        attempts = _attempts(engine)
        assert [(a.id, a.outcome) for a in attempts if a.person_id == down_member] == [
            (attempt_id, AttemptOutcome.CONFIRMED)]
        # Not called again, counted at the phone itself.
        assert len(lab.network.calls_to(number[down_member])) == 1
        assert len(lab.network.calls_to(number[other_member])) == 1
    finally:
        await binfoon.app.stop()


def _household(s: object, bin_id: int, name: str, primary: str, secondary: str | None = None) -> int:
    person = Person(name=name, language=Language.NL)
    person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=primary))
    if secondary is not None:
        person.phones.append(PhoneNumber(rank=PhoneRank.SECONDARY, e164=secondary))
    person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_id))
    s.add(person)  # type: ignore[attr-defined]
    s.flush()  # type: ignore[attr-defined]
    return person.id


async def test_numbers_shared_by_members_are_called_once(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer, max_channels=6, max_cps=20.0, member_ring_timeout_s=2.0,
                                  review_ring_timeout_s=1.0, urgent_retry_after_s=0.5, urgent_retries=0)
    engine = binfoon.world.engine
    try:
        landline, machine = "+3295100001", "+3295100002"
        with session_scope(engine) as s:
            bin_id = s.scalars(select(Bin.id).where(Bin.number == 12)).one()
            # Two members of one household on one line: one call, one key, both confirmed.
            an = _household(s, bin_id, "An", landline)
            jan = _household(s, bin_id, "Jan", landline)
            # Two more whose mobiles ring out, with the same second number: a machine. It gets the
            # message once, for both (before, the second member's turn left it on the machine again).
            piet = _household(s, bin_id, "Piet", "+3295100003", machine)
            mieke = _household(s, bin_id, "Mieke", "+3295100004", machine)
        heard_s = await message_seconds(renderer, CLIP)
        lab.network.script(landline, PhoneScript.answers(rings=1, keys=((heard_s + 1.0, "1"),)))
        lab.network.script(machine, PhoneScript.answering_machine(rings=1))
        for mobile in ("+3295100003", "+3295100004"):
            lab.network.script(mobile, PhoneScript.never_answers())
        await submit_recorded(binfoon, CLIP)
        campaign = await campaign_done(binfoon, timeout_s=150)

        assert len(lab.network.calls_to(landline)) == 1
        assert len(lab.network.calls_to(machine)) == 1
        assert [len(lab.network.calls_to(m)) for m in ("+3295100003", "+3295100004")] == [1, 1]
        confirmations = _confirmations(engine)
        assert {pid: c.via for pid, c in confirmations.items()} == {an: "call", jan: "shared"}
        assert confirmations[jan].confirmed_at == confirmations[an].confirmed_at
        report = campaign_report(engine, campaign.id, binfoon.app.campaigns.policies,
                                 dt.datetime.now(dt.timezone.utc))
        states = {line.person_id: line.state for line in report.members}
        assert states == {an: "confirmed", jan: "confirmed", piet: "answering_machine",
                          mieke: "answering_machine"}
        attempts = _attempts(engine)
        assert sorted(a.e164 for a in attempts) == sorted([landline, machine, "+3295100003", "+3295100004"])
    finally:
        await binfoon.app.stop()
