"""The coordinator's review conversation against the fake call and a real database."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

from sqlalchemy import select

from ivr.telephony.call import Recorded
from ivr.review.flow import ReviewEnd, ReviewRules, coordinator_review
from ivr.police_line.store import Officer
from ivr.review.store import Contact
from storage.db import session_scope
from storage.models import AuditEntry, Message, ReviewDecision
from ivr.domain.vocabulary import Decision, MessageStatus, Role, Urgency
from tests.conftest import SHARED_DIR, Clock
from tests.fakes import FakeCall
from tests.steps import StepLog
from tests.world import World

BRUSSELS = zoneinfo.ZoneInfo("Europe/Brussels")
RULES = ReviewRules(key_timeout_s=1.0, tz=BRUSSELS)  # the shared ``clock`` starts at 20:15 in Brussels
SPEECH = SHARED_DIR / "audio" / "espeak-nl" / "01.wav"


async def _submitted_message(world: World, tmp_path: Path, urgency: Urgency = Urgency.URGENT) -> int:
    desk = world.desk
    officer = Officer(world.officer_id, "Peeters", "nl", None)
    message_id = await desk.create_draft(officer, world.bin_id, urgency)
    spool = tmp_path / "spool.wav"
    spool.write_bytes(SPEECH.read_bytes())
    await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    await desk.submit(message_id, 1, "test")
    await world.reviews.to_coordinators(message_id)
    return message_id


async def _review(world: World, tmp_path: Path, script: list[object], message_id: int,
                  coordinator: int = 0, after: StepLog | None = None) -> tuple[ReviewEnd, FakeCall, str]:
    person_id, phone = world.coordinators[coordinator]
    call_id = await world.reviews.new_review_call(message_id, Contact(person_id, phone, Role.COORDINATOR), 1)
    call = FakeCall(script, tmp_path, caller_id="")
    return await coordinator_review(call, world.reviews, call_id, RULES, after or StepLog()), call, call_id


def _decision(world: World, message_id: int) -> tuple[Message, ReviewDecision | None]:
    with session_scope(world.engine) as s:
        return (s.get_one(Message, message_id),
                s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).first())


async def test_1_forwards_now(world: World, tmp_path: Path, clock: Clock) -> None:
    after = StepLog()
    message_id = await _submitted_message(world, tmp_path)
    end, call, call_id = await _review(world, tmp_path, ["1"], message_id, after=after)
    assert end is ReviewEnd.FORWARD_NOW
    assert call.said == ["review_intro", "review_header", "review_menu", "review_forwarded_now"]
    # The header says what, from where, when (local time) and for which BIN; then the original plays.
    assert call.values[1] == {"urgency": "Dringend", "zone": "Gent", "hour": 20, "minute": 15, "bin": "Kerkwijk"}
    assert [p.read_bytes() for p in call.played] == [SPEECH.read_bytes()]
    message, decision = _decision(world, message_id)
    assert message.status is MessageStatus.APPROVED
    assert decision is not None and decision.decision is Decision.FORWARD_NOW
    assert decision.person_id == world.coordinators[0][0] and decision.review_call_id == call_id
    # The decision goes on to the chain (delivery now) exactly once.
    assert [(d.message_id, d.decision, d.deliver_at) for d in after.decisions] == \
        [(message_id, Decision.FORWARD_NOW, clock.now)]


async def test_2_with_minutes_forwards_later(world: World, tmp_path: Path, clock: Clock) -> None:
    message_id = await _submitted_message(world, tmp_path)
    end, call, _ = await _review(world, tmp_path, ["2", "45"], message_id)
    assert end is ReviewEnd.FORWARD_LATER
    message, decision = _decision(world, message_id)
    assert decision is not None and decision.decision is Decision.FORWARD_LATER
    expected = clock.now + dt.timedelta(minutes=45)
    assert message.deliver_at is not None and message.deliver_at.replace(tzinfo=dt.timezone.utc) == expected
    assert call.said[-1] == "review_forwarded_later" and call.values[-1] == {"hour": 21, "minute": 0}


async def test_2_with_hhmm_forwards_at_that_local_time(world: World, tmp_path: Path) -> None:
    message_id = await _submitted_message(world, tmp_path, Urgency.PREVENTIVE)
    end, call, _ = await _review(world, tmp_path, ["2", "0730"], message_id)  # 07:30 tomorrow, Brussels
    assert end is ReviewEnd.FORWARD_LATER
    message, _ = _decision(world, message_id)
    assert message.deliver_at is not None
    at = message.deliver_at.replace(tzinfo=dt.timezone.utc).astimezone(BRUSSELS)
    assert (at.date(), at.hour, at.minute) == (dt.date(2026, 11, 24), 7, 30)


async def test_2_with_a_bad_time_is_asked_again(world: World, tmp_path: Path) -> None:
    message_id = await _submitted_message(world, tmp_path)
    end, call, _ = await _review(world, tmp_path, ["2", "2575", "0", "10"], message_id)
    assert end is ReviewEnd.FORWARD_LATER
    assert call.said.count("review_later_invalid") == 2


async def test_3_replays_then_1(world: World, tmp_path: Path) -> None:
    message_id = await _submitted_message(world, tmp_path)
    end, call, _ = await _review(world, tmp_path, ["3", "1"], message_id)
    assert end is ReviewEnd.FORWARD_NOW
    assert call.said.count("review_header") == 2 and len(call.played) == 2
    with session_scope(world.engine) as s:
        plays = s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.played")).all()
    assert len(plays) == 2  # every hearing of the recording is audited


async def test_9_rejects(world: World, tmp_path: Path) -> None:
    message_id = await _submitted_message(world, tmp_path)
    end, _, _ = await _review(world, tmp_path, ["9"], message_id)
    assert end is ReviewEnd.REJECT
    message, decision = _decision(world, message_id)
    assert message.status is MessageStatus.REJECTED and decision is not None and message.deliver_at is None


async def test_no_key_ends_without_a_decision(world: World, tmp_path: Path) -> None:
    message_id = await _submitted_message(world, tmp_path)
    end, call, _ = await _review(world, tmp_path, [None, None, None], message_id)
    assert end is ReviewEnd.NO_DECISION and call.said[-1] == "review_no_decision"
    message, decision = _decision(world, message_id)
    assert message.status is MessageStatus.WITH_COORDINATORS and decision is None


async def test_the_second_coordinator_hears_it_is_decided(world: World, tmp_path: Path) -> None:
    message_id = await _submitted_message(world, tmp_path)
    await _review(world, tmp_path, ["9"], message_id, coordinator=0)
    end, call, _ = await _review(world, tmp_path, ["1"], message_id, coordinator=1)
    assert end is ReviewEnd.ALREADY_DECIDED and call.said == ["review_already_decided"]
    message, decision = _decision(world, message_id)
    assert message.status is MessageStatus.REJECTED and decision is not None
    assert decision.person_id == world.coordinators[0][0]
