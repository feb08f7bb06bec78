"""A cancel (``ivr.delivery.control.cancel_message``, another process) committed while a decision is
being stored wins: the decision changes nothing (it used to overwrite CANCELLED by id)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

from sqlalchemy import select

from ivr.delivery.control import cancel_message
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import Decision, MessageStatus, Role, Urgency
from ivr.police_line.store import Officer, Recorded
from ivr.review.store import Contact
from storage.db import session_scope
from storage.models import Message, ReviewDecision
from tests.conftest import Clock
from tests.unit.delivery.test_campaign_runner import CLIP
from tests.unit.review.test_rounds import _round, _world
from tests.unit.review.test_second_approver import second_approver_zone
from tests.world import World, build_world


async def _submitted(tmp_path: Path) -> tuple[World, int]:
    world = build_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store")
    desk = world.desk
    officer = Officer(world.officer_id, "P", "nl", None)
    message_id = await desk.create_draft(officer, world.bin_id, Urgency.PREVENTIVE)
    spool = tmp_path / "take.wav"
    spool.write_bytes(CLIP.read_bytes())
    await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    await desk.submit(message_id, 1, "test")
    return world, message_id


def _cancel_held_open(world: World, message_id: int) -> tuple[threading.Thread, threading.Event]:
    """A cancel whose transaction has written CANCELLED (holding SQLite's write lock) and commits later."""
    written = threading.Event()

    def cancel() -> None:
        with session_scope(world.engine) as s:
            cancel_message(s, message_id, Actor.operator("cli:test"), dt.datetime.now(dt.timezone.utc))
            written.set()
            time.sleep(0.5)  # the decision's write waits for this commit
    thread = threading.Thread(target=cancel)
    thread.start()
    assert written.wait(10)
    return thread, written


async def test_a_decision_does_not_overwrite_a_concurrent_cancel(tmp_path: Path) -> None:
    world, message_id = await _submitted(tmp_path)
    with session_scope(world.engine) as s:
        s.get_one(Message, message_id).status = MessageStatus.WITH_COORDINATORS
    thread, _ = _cancel_held_open(world, message_id)
    decided = await world.reviews.decide(message_id, Decision.FORWARD_NOW, person_id=None,
                                         review_call_id=None)
    thread.join()
    assert decided is None
    with session_scope(world.engine) as s:
        message = s.get_one(Message, message_id)
        assert message.status is MessageStatus.CANCELLED and message.deliver_at is None
        assert s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).all() == []


async def test_waiting_for_approval_does_not_overwrite_a_concurrent_cancel(tmp_path: Path) -> None:
    world, message_id = await _submitted(tmp_path)
    with session_scope(world.engine) as s:
        assert s.get_one(Message, message_id).status in (MessageStatus.RECORDED,
                                                         MessageStatus.WITH_COORDINATORS)
    thread, _ = _cancel_held_open(world, message_id)
    waits = await world.reviews.await_approval(message_id, "one_level")
    thread.join()
    assert waits is False
    with session_scope(world.engine) as s:
        assert s.get_one(Message, message_id).status is MessageStatus.CANCELLED


async def test_a_decision_without_a_race_is_stored(tmp_path: Path) -> None:
    world, message_id = await _submitted(tmp_path)
    with session_scope(world.engine) as s:
        s.get_one(Message, message_id).status = MessageStatus.WITH_COORDINATORS
    decided = await world.reviews.decide(message_id, Decision.FORWARD_NOW, person_id=None,
                                         review_call_id=None)
    assert decided is not None and decided.deliver_at is not None
    with session_scope(world.engine) as s:
        assert s.get_one(Message, message_id).status is MessageStatus.APPROVED
        decisions = s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).all()
        assert len(decisions) == 1


async def test_a_second_approval_does_not_overwrite_a_concurrent_cancel(tmp_path: Path, clock: Clock) -> None:
    world = second_approver_zone(_world(tmp_path, clock, coordinators=1, approvers=1), colleague=False)
    message_id, _, _, _, _ = await _round(world, tmp_path, clock, {})
    [(approver_id, approver)] = world.approvers
    desk = world.reviews
    with session_scope(world.engine) as s:
        assert s.get_one(Message, message_id).status is MessageStatus.AWAITING_APPROVAL
    call_id = await desk.new_review_call(message_id, Contact(approver_id, approver, Role.POLICE_APPROVER), 9,
                                         "approval")
    await desk.recording_to_play(message_id, f"person:{approver_id}", review_call_id=call_id)
    thread, _ = _cancel_held_open(world, message_id)
    decided = await desk.second_decision(call_id, approver_id, approve=True)
    thread.join()
    assert decided is None
    with session_scope(world.engine) as s:
        message = s.get_one(Message, message_id)
        assert message.status is MessageStatus.CANCELLED and message.second_approved_by_id is None
        assert s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).all() == []
