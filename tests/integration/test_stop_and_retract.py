"""Issue 16's brakes on the real Asterisk: a 30-member campaign stopped half-way starts no call after
the stop, every member's state is reported, and the retraction reaches exactly those who received the
first message (as the simulated phone network saw it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.delivery.control import stop_campaign, submit_retraction
from ivr.delivery.report import campaign_report
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import CampaignStatus
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import member_cases, script_members, seed_members
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import CallAttempt, Campaign, PhoneNumber
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import message_seconds, start_binfoon, submit_recorded, utc
from tests.integration.conftest import until

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"


async def test_stop_half_way_then_retract(lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    # 8 calls at once, 4 new a second: the stop comes once half of the 30 have had a call.
    binfoon = await start_binfoon(lab, tmp_path, renderer, max_channels=8, max_cps=4.0, member_ring_timeout_s=3.0,
                                  urgent_retry_after_s=1.0, no_key_retry_after_s=1.0, member_reminders=1)
    engine = binfoon.world.engine
    try:
        people = seed_members(engine, 12, member_cases(30, await message_seconds(renderer, CLIP)))
        script_members(lab, engine, people)
        with session_scope(engine) as s:
            # The members' numbers (the coordinators' phones ring too: the review call nobody answers).
            person_of = {p.e164: p.person_id for p in s.scalars(select(PhoneNumber).where(
                PhoneNumber.person_id.in_(list(people))))}
        members_calls = lambda: [c for c in lab.network.calls if c.number in person_of]  # noqa: E731

        def called() -> int:
            with session_scope(engine) as s:
                return s.scalar(select(func.count(func.distinct(CallAttempt.person_id)))) or 0

        def campaigns() -> list[Campaign]:
            with session_scope(engine) as s:
                return list(s.scalars(select(Campaign).order_by(Campaign.id)))

        message_id = await submit_recorded(binfoon, CLIP)
        await until(lambda: called() >= 15, 120, "15 members called")
        first = campaigns()[0]

        def stop() -> dt.datetime:
            with session_scope(engine) as s:
                return stop_campaign(s, first.id, Actor.operator("test"), dt.datetime.now(dt.timezone.utc)).stopped_at
        # The network stamps its calls with the monotonic clock: taken just before the stop is written, so
        # a call that began while it was being written counts as after it (the stricter reading).
        stop_mono = time.monotonic()
        stopped_at = await asyncio.to_thread(stop)

        def open_attempts() -> int:
            with session_scope(engine) as s:
                return s.scalar(select(func.count()).select_from(CallAttempt).where(CallAttempt.outcome.is_(None))) or 0
        await until(lambda: open_attempts() == 0, 60, "the calls up at the stop finished")
        await asyncio.sleep(3)  # the dialer's passes meanwhile must not dial anyone
        with session_scope(engine) as s:
            attempts = list(s.scalars(select(CallAttempt).where(CallAttempt.campaign_id == first.id)))
        # An attempt row is written (``dialled_at``) before its number is dialled: none may be written
        # after the stop.
        after_stop = [a for a in attempts if utc(a.dialled_at) > stopped_at]  # type: ignore[operator]
        # The network's own record: every call that reached a phone is one of the attempts begun before
        # the stop (per number), none more.
        network = Counter(c.number for c in members_calls())
        placed = sorted((a for a in attempts if a.dial_outcome not in ("not_placed", "barred")),
                        key=lambda a: (a.e164, a.dialled_at))
        reached = Counter(a.e164 for a in placed)
        # A phone may begin ringing just after the stop for an attempt written (and Originated) just before
        # it. Each number has one call at a time, so its k-th network call is its k-th placed attempt: every
        # call that began ringing after the stop must belong to an attempt written before the stop.
        by_number: dict[str, list[CallAttempt]] = {}
        for a in placed:
            by_number.setdefault(a.e164, []).append(a)
        rang_after: list[tuple[float, CallAttempt | None]] = []
        for number in network:
            calls = sorted((c for c in members_calls() if c.number == number), key=lambda c: c.started_at)
            for k, call in enumerate(calls):
                if call.started_at > stop_mono:
                    mine = by_number.get(number, [])
                    rang_after.append((call.started_at - stop_mono, mine[k] if k < len(mine) else None))
        report = campaign_report(engine, first.id, binfoon.app.campaigns.policies, dt.datetime.now(dt.timezone.utc))
        states = Counter(line.state for line in report.members)
        print(f"\nstopped at {stopped_at:%H:%M:%S.%f} with {len({a.person_id for a in attempts})}/30 members called; "
              f"{len(attempts)} attempts, {len(after_stop)} written after the stop; network calls "
              f"{sum(network.values())} (= attempts placed {sum(reached.values())}); network calls that began "
              f"ringing after the stop: {len(rang_after)}"
              f"{f' (latest {max(s for s, _ in rang_after):.2f} s after)' if rang_after else ''}, all of attempts "
              f"written before it: {all(a is not None and utc(a.dialled_at) <= stopped_at for _, a in rang_after)}; "
              f"in a call at the stop: {sum(m.in_call_at_stop for m in report.members)}; states {dict(states)}")
        assert after_stop == [] and network == reached and report.calls_after_stop == 0
        for _, attempt in rang_after:
            assert attempt is not None and utc(attempt.dialled_at) <= stopped_at  # type: ignore[arg-type]
        assert report.status == "stopped" and len(report.members) == 30 and sum(states.values()) == 30
        assert 0 < states["not_called"] < 30 and not states.keys() & {"queued", "ringing", "answered", "waiting_retry"}

        # The retraction: the running service delivers it (no review) to exactly those who answered.
        answered = {person_of[c.number] for c in members_calls() if c.answered_at is not None}
        calls_before = len(members_calls())
        retraction = await asyncio.to_thread(submit_retraction, engine, binfoon.app.desk.store, message_id,
                                             Actor.operator("test"))
        await until(lambda: len(campaigns()) == 2 and campaigns()[1].status is CampaignStatus.DONE, 180,
                    "the retraction delivered")
        second = campaigns()[1]
        with session_scope(engine) as s:
            retracted_to = set(s.scalars(select(CallAttempt.person_id).where(CallAttempt.campaign_id == second.id)))
        rang = {person_of[c.number] for c in members_calls()[calls_before:]}
        print(f"retraction (message {retraction}): {len(answered)} members answered the first message; "
              f"the retraction called {len(retracted_to)}, the network saw calls to {len(rang)}")
        assert retracted_to == answered == rang and answered
    finally:
        await binfoon.app.stop()
