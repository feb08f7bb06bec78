"""The chain's steps against a real database: each step once, whichever signal comes first."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.scheduler import AlarmClock
from ivr.chain.steps import DELIVER, Chain
from ivr.delivery.store import DeliveryDesk
from ivr.police_line.store import Officer
from ivr.review.store import Decided
from ivr.telephony.call import Recorded
from storage.db import session_scope
from storage.models import Campaign, Message
from ivr.domain.vocabulary import Decision, MessageStatus, Urgency
from tests.conftest import SHARED_DIR, Clock
from tests.world import World

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"


class Transcripts:
    def __init__(self) -> None:
        self.recordings: list[int] = []
        self.backlogs = 0

    async def transcribe_recording(self, recording_id: int) -> None:
        self.recordings.append(recording_id)

    async def transcribe_pending(self) -> int:
        self.backlogs += 1
        return 0


class Reviews:
    def __init__(self) -> None:
        self.started: list[int] = []

    def busy_with(self, message_id: int) -> bool:
        return message_id in self.started

    def start(self, message_id: int) -> None:
        self.started.append(message_id)

    async def resume_notices(self, since: dt.datetime) -> list[int]:
        return []


class Dialer:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


class Observer:
    def __init__(self) -> None:
        self.campaigns: list[tuple[int, int]] = []
        self.submitted_ids: list[int] = []

    def submitted(self, message_id: int) -> None:
        self.submitted_ids.append(message_id)

    def decided(self, decided: Decided) -> None:
        pass

    def campaign_created(self, message_id: int, campaign_id: int) -> None:
        self.campaigns.append((message_id, campaign_id))


@pytest.fixture
def chain(world: World, clock: Clock) -> Chain:
    chain = Chain(world.desk, DeliveryDesk(world.engine, world.desk.store, clock=clock), Transcripts(),  # type: ignore[arg-type]
                  AlarmClock(world.engine), clock=clock, observer=Observer())
    chain.reviews = Reviews()  # type: ignore[assignment]
    chain.dialer = Dialer()  # type: ignore[assignment]
    return chain


async def _submitted(world: World, tmp_path: Path, urgency: Urgency = Urgency.URGENT) -> tuple[int, int]:
    desk = world.desk
    message_id = await desk.create_draft(Officer(world.officer_id, "P", "nl", None), world.bin_id, urgency)
    spool = tmp_path / f"spool-{message_id}.wav"
    spool.write_bytes(CLIP.read_bytes())
    take = await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    await desk.submit(message_id, 1, "test")
    assert take.recording_id is not None
    return message_id, take.recording_id


def _campaigns(world: World) -> int:
    with session_scope(world.engine) as s:
        return s.scalar(select(func.count()).select_from(Campaign)) or 0


async def _settle(chain: Chain) -> None:
    while chain._tasks:
        await asyncio.gather(*list(chain._tasks))


async def test_a_kept_take_is_transcribed_and_a_submitted_message_reviewed(chain: Chain, world: World,
                                                                           tmp_path: Path) -> None:
    message_id, recording_id = await _submitted(world, tmp_path)
    chain.take_kept(message_id, recording_id)
    chain.take_kept(message_id, None)  # nothing was recorded: nothing to transcribe
    chain.submitted(message_id)
    await _settle(chain)
    assert chain.transcripts.recordings == [recording_id]  # type: ignore[attr-defined]
    assert chain.reviews.started == [message_id]  # type: ignore[union-attr]
    assert chain.observer.submitted_ids == [message_id]  # type: ignore[union-attr]


async def test_an_approval_and_the_sweep_at_the_same_moment_make_one_campaign(
        chain: Chain, world: World, tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    # Seen on a real call before the chain had one owner: the approval hook and the one-second
    # sweep both started the delivery; the second failed on the campaign's unique constraint in a
    # task whose exception nobody read.
    message_id, _ = await _submitted(world, tmp_path)
    decided = await world.reviews.decide(message_id, Decision.FORWARD_NOW, person_id=None, review_call_id=None)
    assert decided is not None and decided.deliver_at == clock.now
    with caplog.at_level(logging.ERROR):
        chain.decided(decided)
        await asyncio.gather(chain.reconcile(), chain.reconcile())
        chain.decided(decided)
        await _settle(chain)
        await chain.reconcile()
        await _settle(chain)
    assert _campaigns(world) == 1
    assert [m for m, _ in chain.observer.campaigns] == [message_id]  # type: ignore[union-attr]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with session_scope(world.engine) as s:
        assert s.get_one(Message, message_id).status is MessageStatus.DELIVERING


async def test_two_deliveries_at_once_find_one_campaign(world: World, tmp_path: Path, clock: Clock) -> None:
    message_id, _ = await _submitted(world, tmp_path)
    assert await world.reviews.decide(message_id, Decision.FORWARD_NOW, person_id=None, review_call_id=None)
    first, second = (DeliveryDesk(world.engine, world.desk.store, clock=clock) for _ in range(2))
    started = await asyncio.gather(first.start_campaign(message_id), second.start_campaign(message_id))
    assert all(s is not None for s in started)
    assert len({s.campaign_id for s in started if s}) == 1
    assert sorted(s.created for s in started if s) == [False, True]
    assert _campaigns(world) == 1


async def test_a_later_message_gets_its_alarm_and_is_delivered_when_due_never_before(
        chain: Chain, world: World, tmp_path: Path, clock: Clock) -> None:
    message_id, _ = await _submitted(world, tmp_path, Urgency.PREVENTIVE)
    at = clock.now + dt.timedelta(minutes=45)
    decided = await world.reviews.decide(message_id, Decision.FORWARD_LATER, person_id=None, review_call_id=None,
                                         deliver_at=at)
    assert decided is not None
    chain.alarms.start({DELIVER: chain.alarm})
    try:
        chain.decided(decided)
        assert chain.alarms.when(DELIVER, message_id) == at
        await chain.alarm(message_id)   # an alarm that fires early delivers nothing
        await chain.reconcile()
        await _settle(chain)
        assert _campaigns(world) == 0
        clock.now = at
        await chain.reconcile()         # the sweep delivers it at its time
        await _settle(chain)
        assert _campaigns(world) == 1
    finally:
        chain.alarms.shutdown()


async def test_a_rejection_ends_the_chain(chain: Chain, world: World, tmp_path: Path) -> None:
    message_id, _ = await _submitted(world, tmp_path)
    decided = await world.reviews.decide(message_id, Decision.REJECT, person_id=None, review_call_id=None)
    assert decided is not None and decided.deliver_at is None
    chain.decided(decided)
    await chain.reconcile()
    await _settle(chain)
    assert _campaigns(world) == 0 and chain.alarms.when(DELIVER, message_id) is None


async def test_the_sweep_reviews_a_message_another_process_submitted_once(chain: Chain, world: World,
                                                                        tmp_path: Path) -> None:
    message_id, recording_id = await _submitted(world, tmp_path)
    await chain.reconcile()
    await chain.reconcile()  # the review runs: the sweep does not start it again
    await _settle(chain)
    assert chain.reviews.started == [message_id]  # type: ignore[union-attr]
    # Its submitted take is transcribed (another process could not): that one recording, once.
    assert chain.transcripts.recordings == [recording_id]  # type: ignore[attr-defined]
