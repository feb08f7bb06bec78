"""A trunk whose registration the carrier refuses pauses delivery at no member's cost (issue 13 item 3).

The lab carrier is real: a second Asterisk that demands REGISTER with digest auth. BINfoon's side
holds a wrong secret, so the carrier answers its REGISTER (and every INVITE) with 401. An urgent
campaign submitted meanwhile must wait: no call reaches a phone, nobody's retries are spent, and
the campaign shows paused (the database's pause row, the report and ``campaign watch``). Then the
right secret is written into BINfoon's secret file, its Asterisk re-reads its configuration and
registers again: the ``Registered`` event resumes delivery and every member is called once and
confirms. Counted at the phones: 0 members charged for calls that never reached a phone, 0
numbers with two calls at once, 0 confirmed members called again, 0 skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.asterisk.install import AsteriskRuntime
from ivr.asterisk.officers import reload_pjsip
from ivr.delivery.report import campaign_report
from ivr.delivery.store import PAUSE_KEY
from ivr.domain.vocabulary import AttemptOutcome
from ivr.lab.network import PhoneScript
from ivr.lab.phone_lab import PhoneLab, write_secret
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import Campaign, Checkpoint
from tests.integration.binfoon import campaign_done, message_seconds, start_binfoon, watch_once
from tests.integration.conftest import eventually, until
from tests.integration.test_outage import (
    CLIP,
    approved,
    attempts_of,
    charged_without_a_phone,
    confirmed_called_again,
    final_states,
    numbers_of,
    numbers_with_two_calls_at_once,
)

pytestmark = pytest.mark.integration

MEMBERS = 6


@pytest.mark.parametrize("refused_while_serving", [False, True],
                         ids=["refused-before-the-service-started", "refused-while-the-service-runs"])
async def test_a_refused_registration_pauses_the_campaign_until_the_right_secret_registers(
        refused_while_serving: bool, asterisk_runtime: AsteriskRuntime, instances_dir: Path, tmp_path: Path,
        renderer: PromptRenderer, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``refused-before-the-service-started``: BINfoon's Asterisk came up first and the carrier refused its
    REGISTER before ``serve`` was there to see the ``Registry`` event (production's order; the refusal is
    final, ``auth_rejection_permanent``: no later event). ``refused-while-the-service-runs``: the service
    sees the refusal (a new REGISTER, still with the wrong secret) and the pause outlives its restart."""
    caplog.set_level(logging.INFO, logger="ivr.delivery")
    lab = await PhoneLab.start(asterisk_runtime, instances_dir, over_pjsip=True, ring_s=0.3,
                               trunk_secret="not-the-secret")
    settings = dict(max_channels=3, max_cps=20.0, member_ring_timeout_s=3.0, review_ring_timeout_s=1.0,
                    urgent_retries=1, urgent_retry_after_s=1.0,
                    # A failed probe puts the next one 16 s off.
                    outage_probe_after_s=8.0, outage_probe_max_s=60.0)
    binfoon = None
    try:
        report = await eventually(lab.asterisk.registration, lambda r: r is not None and r.state == "refused", 15)
        assert report is not None and (report.state, report.last_response) == ("refused", 401), report

        binfoon = await start_binfoon(lab, tmp_path, renderer, **settings)  # type: ignore[arg-type]
        engine = binfoon.world.engine

        def paused() -> str | None:
            with session_scope(engine) as s:
                row = s.get(Checkpoint, PAUSE_KEY)
                return None if row is None else row.value

        if refused_while_serving:
            # REGISTER again with the same wrong secret: the carrier's 401 reaches the running service.
            reply = await lab.ami.action({"Action": "PJSIPRegister", "Registration": "trunk"})
            assert reply.get("Response") == "Success", reply
            await until(lambda: paused() is not None, 20, "delivery paused by the Registry event")
        confirm = PhoneScript.answers(rings=1, keys=((await message_seconds(renderer, CLIP) + 1.0, "1"),))
        people = seed_members(engine, 12, [MemberCase("confirms", confirm, None, "confirmed")] * MEMBERS)
        script_members(lab, engine, people)
        numbers = numbers_of(engine, people)
        await binfoon.app.stop()
        await approved(binfoon)
        binfoon = await start_binfoon(lab, tmp_path, renderer, world=binfoon.world, **settings)  # type: ignore[arg-type]

        def a_campaign() -> int | None:
            with session_scope(engine) as s:
                return s.scalars(select(Campaign.id)).first()

        def dialled() -> list[tuple[str, str | None, str | None]]:
            return [(a.e164, a.dial_outcome, a.outcome and a.outcome.value) for a in attempts_of(engine)]

        if not await eventually(lambda: paused() is not None, bool, 20):
            raise AssertionError(f"delivery not paused for the refused registration; calls dialled meanwhile "
                                 f"(number, dial outcome, outcome): {dialled()}")
        await until(lambda: a_campaign() is not None, 30, "the urgent campaign created")
        campaign_id = a_campaign()
        assert campaign_id is not None
        # A probe call while refused (the carrier challenges its INVITE too): still paused, no phone rang.
        await until(lambda: len(attempts_of(engine)) >= 1, 30, "a probe call on the refused trunk")
        assert paused() is not None and "registration" in (paused() or ""), paused()
        assert lab.network.calls == [], "a call reached a phone while the registration was refused"
        assert charged_without_a_phone(engine, lab, numbers) == {}
        while_refused = len(attempts_of(engine))
        paused_report = campaign_report(engine, campaign_id, binfoon.app.campaigns.policies,
                                        dt.datetime.now(dt.UTC))
        assert paused_report.paused is not None and "registration" in paused_report.paused, paused_report.paused
        watched = watch_once(binfoon, campaign_id, monkeypatch, capsys)
        assert "PAUSED: trunk registration" in watched, watched

        # The operator fixes the secret: BINfoon's Asterisk re-reads it and registers again.
        trunk = lab.asterisk.options.the_trunk
        assert trunk is not None and lab.network_asterisk is not None
        right = (lab.network_asterisk.run_dir / "carrier.secret").read_text().strip()
        write_secret(Path(trunk.secret_file), right)
        await asyncio.to_thread(lab.asterisk.render)
        await asyncio.to_thread(reload_pjsip, lab.asterisk.run_dir)
        reply = await lab.ami.action({"Action": "PJSIPRegister", "Registration": "trunk"})
        assert reply.get("Response") == "Success", reply
        await until(lambda: (r := lab.asterisk.registration()) is not None and r.state == "registered", 20,
                    "the registration with the right secret")
        campaign = await campaign_done(binfoon, timeout_s=60)
    finally:
        if binfoon is not None:
            await binfoon.app.stop()
        await lab.stop()

    attempts = attempts_of(engine)
    on_refused_trunk = [a for a in attempts if a.e164 in numbers and a.outcome is AttemptOutcome.INTERRUPTED]
    assert paused() is None
    assert charged_without_a_phone(engine, lab, numbers) == {}
    assert numbers_with_two_calls_at_once(lab, numbers) == []
    assert confirmed_called_again(engine, lab, numbers, time.time() - time.monotonic()) == []
    assert final_states(binfoon, campaign.id) == {p: case.expected for p, case in people.items()}
    assert sorted(len(lab.network.calls_to(n)) for n in numbers) == [1] * MEMBERS
    messages = [r.getMessage() for r in caplog.records]
    assert any("delivery PAUSED: trunk registration" in m for m in messages), messages
    # Resumed (by the Registered event, or by a probe that reached a phone: under load either may come
    # first, and both are right; which one is not this test's to say).
    assert any("delivery resumed" in m for m in messages), messages
    print(f"\nOUTAGE registration-refused: attempts while refused {while_refused} (calls on the refused trunk "
          f"{len(on_refused_trunk)}), calls that reached phones while refused 0, members charged for unreachable "
          f"calls {len(charged_without_a_phone(engine, lab, numbers))}, numbers with two calls at once 0, "
          f"confirmed members called again 0, skipped 0, calls per member "
          f"{sorted(len(lab.network.calls_to(n)) for n in numbers)}\n{watched.strip()}")
