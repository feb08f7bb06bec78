"""The caller-ID lines under attack (issue 14 item 2): rate limits per caller ID and per line that
survive a restart, one answer for unknown and limited numbers, unverified confirmations.

Fake call, real database (SQLite); the real-Asterisk twin is tests/integration/test_gates.py."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from ivr.delivery.line_limits import LineLimits
from ivr.delivery.member_callback import CallbackEnd, member_callback
from ivr.delivery.report_line import ReportEnd, coordinator_report
from ivr.domain.vocabulary import Role
from storage.db import session_scope
from storage.models import AuditEntry, Confirmation
from tests.conftest import Clock, PersonFactory
from tests.fakes import FakeCall
from tests.unit.delivery.sent import delivery_desk, sent_message
from tests.world import World

LIMITS = LineLimits(caller_max_calls=5, caller_window_s=3600, unknown_max_calls=8, window_s=3600, lock_s=3600)


async def _call_back(world: World, tmp_path: Path, caller: str, script: list[object]) -> tuple[CallbackEnd, FakeCall]:
    call = FakeCall(script, tmp_path, caller_id=caller)
    # A new desk each call: nothing is remembered in memory, as after a restart.
    return await member_callback(call, delivery_desk(world), 1.0, LIMITS), call


def _audit(world: World, action: str) -> list[AuditEntry]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


async def test_a_limited_member_hears_exactly_what_an_unknown_number_hears(
        world: World, tmp_path: Path, person: PersonFactory, clock: Clock) -> None:
    member = person(Role.MEMBER)
    await sent_message(world, tmp_path)
    for _ in range(5):  # five calls within the hour: the member hears the message each time
        end, call = await _call_back(world, tmp_path, member.phone, [None])
        assert end is CallbackEnd.HEARD and len(call.played) == 1
        clock.advance(minutes=1)
    limited_end, limited = await _call_back(world, tmp_path, member.phone, ["1"])
    unknown_end, unknown = await _call_back(world, tmp_path, "+32470999888", ["1"])
    assert (limited_end, unknown_end) == (CallbackEnd.LIMITED, CallbackEnd.UNKNOWN_CALLER)
    assert limited.said == unknown.said == ["callback_no_message"]
    assert limited.played == unknown.played == [] and limited.language == unknown.language
    assert limited.hung_up and unknown.hung_up
    with session_scope(world.engine) as s:
        assert s.scalars(select(Confirmation)).all() == []  # the limited member's "1" was never asked for
    assert len(_audit(world, "recording.played")) == 5
    [refused] = _audit(world, "callback.call_limited")
    assert refused.details == {"reason": "caller_limited"} and member.phone not in refused.actor
    clock.advance(minutes=56)  # the first call is more than an hour old
    end, _ = await _call_back(world, tmp_path, member.phone, [None])
    assert end is CallbackEnd.HEARD


async def test_a_confirmation_by_call_back_is_stored_and_audited_as_unverified(
        world: World, tmp_path: Path, person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    sent = await sent_message(world, tmp_path)
    end, _ = await _call_back(world, tmp_path, member.phone, ["1"])
    assert end is CallbackEnd.CONFIRMED
    with session_scope(world.engine) as s:
        [confirmation] = s.scalars(select(Confirmation)).all()
    assert confirmation.via == "callback-unverified" and confirmation.person_id == member.id
    [stored] = _audit(world, "confirmation.stored")
    assert stored.subject == f"campaign:{sent.campaign_id}"
    assert stored.details["via"] == "callback (caller ID, unverified)"
    [played] = _audit(world, "recording.played")
    assert played.details["via"] == "callback (caller ID, unverified)"


async def test_many_unknown_numbers_close_the_line_for_everyone_and_alert_the_admins(
        world: World, tmp_path: Path, person: PersonFactory) -> None:
    member = person(Role.MEMBER)
    await sent_message(world, tmp_path)
    for i in range(8):  # an enumeration: each number once
        end, call = await _call_back(world, tmp_path, f"+3247100{i:04d}", [None])
        assert end is CallbackEnd.UNKNOWN_CALLER and call.said == ["callback_no_message"]
    [alert] = _audit(world, "security.alert")
    assert (alert.actor, alert.subject, alert.details["kind"]) == ("system", "line:callback", "line_enumeration")
    end, call = await _call_back(world, tmp_path, member.phone, [None])
    assert end is CallbackEnd.LIMITED and call.said == ["callback_no_message"] and call.played == []


async def test_the_report_line_answers_a_limited_coordinator_like_a_stranger(
        world: World, tmp_path: Path, person: PersonFactory) -> None:
    person(Role.MEMBER)
    await sent_message(world, tmp_path)
    coordinator_phone = world.coordinators[0][1]
    for _ in range(5):
        heard = await coordinator_report(FakeCall([], tmp_path, caller_id=coordinator_phone), delivery_desk(world),
                                         LIMITS)
        assert heard.end is ReportEnd.TOLD
    limited, stranger = (FakeCall([], tmp_path, caller_id=c) for c in (coordinator_phone, "+32470999888"))
    assert (await coordinator_report(limited, delivery_desk(world), LIMITS)).end is ReportEnd.LIMITED
    assert (await coordinator_report(stranger, delivery_desk(world), LIMITS)).end is ReportEnd.UNKNOWN_CALLER
    assert limited.said == stranger.said == ["report_no_campaign"] and limited.values == stranger.values
    heard_rows = _audit(world, "campaign.report_heard")
    assert len(heard_rows) == 5 and heard_rows[0].details["via"] == "report line (caller ID, unverified)"
