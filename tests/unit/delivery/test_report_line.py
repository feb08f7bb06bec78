"""The coordinators' report line, against the fake call and a real database (SQLite): no Asterisk.

The slow twin is tests/integration/test_binfoon2.py::test_call_back_and_report_lines."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from ivr.delivery.report_line import ReportEnd, ReportHeard, coordinator_report
from storage.db import session_scope
from storage.models import AuditEntry
from ivr.domain.vocabulary import Role
from tests.conftest import PersonFactory, Someone
from tests.fakes import FakeCall
from tests.unit.delivery.sent import OTHER_CLIP, Sent, delivery_desk, sent_message
from tests.world import OFFICER_PHONE, World


async def _report(world: World, tmp_path: Path, caller: str,
                  keys: list[str | None] | None = None) -> tuple[ReportHeard, FakeCall]:
    call = FakeCall(keys or [], tmp_path, caller_id=caller)
    return await coordinator_report(call, delivery_desk(world)), call


async def _members(world: World, tmp_path: Path, person: PersonFactory,
                   count: int) -> tuple[list[Someone], Sent]:
    """``count`` members of BIN 12 and a message sent to them."""
    members = [person(Role.MEMBER) for _ in range(count)]
    return members, await sent_message(world, tmp_path)


def _heard(world: World) -> list[tuple[str, str]]:
    with session_scope(world.engine) as s:
        return [(e.actor, e.subject) for e in s.scalars(
            select(AuditEntry).where(AuditEntry.action == "campaign.report_heard").order_by(AuditEntry.id))]


async def test_a_coordinator_hears_how_many_members_confirmed(world: World, tmp_path: Path,
                                                             person: PersonFactory) -> None:
    members, sent = await _members(world, tmp_path, person, 4)
    desk = delivery_desk(world)
    for member in members[:3]:
        assert await desk.confirm_callback(sent.campaign_id, member.id)
    coordinator_id, coordinator_phone = world.coordinators[0]
    heard, call = await _report(world, tmp_path, coordinator_phone, [None])
    assert heard == ReportHeard(ReportEnd.TOLD, confirmed=3, members=4)
    assert heard.value == str(heard) == "3/4"  # what logs and flow_ends said before the result was typed
    # "3 van de 4 leden hebben bevestigd", the replay offer, then goodbye; the coordinator presses nothing.
    assert call.said == ["report_counts", "report_replay_offer", "member_goodbye"]
    assert call.values[0] == {"confirmed": 3, "members": 4}
    assert call.played == [] and call.hung_up
    assert _heard(world) == [(f"person:{coordinator_id}", f"campaign:{sent.campaign_id}")]


async def test_the_figures_are_those_of_the_bins_latest_campaign(world: World, tmp_path: Path,
                                                                person: PersonFactory) -> None:
    members, first = await _members(world, tmp_path, person, 2)
    desk = delivery_desk(world)
    for member in members:
        await desk.confirm_callback(first.campaign_id, member.id)
    latest = await sent_message(world, tmp_path, OTHER_CLIP)
    await desk.confirm_callback(latest.campaign_id, members[0].id)
    heard, _ = await _report(world, tmp_path, world.coordinators[1][1])  # any coordinator of the BIN
    assert (heard.end, heard.confirmed, heard.members, heard.value) == (ReportEnd.TOLD, 1, 2, "1/2")


async def test_the_counts_are_said_in_the_coordinators_language(world: World, tmp_path: Path,
                                                               person: PersonFactory) -> None:
    await _members(world, tmp_path, person, 1)
    french = person(Role.COORDINATOR, language="fr")
    heard, call = await _report(world, tmp_path, french.phone)
    assert heard.value == "0/1" and call.language == "fr"


async def test_anyone_else_is_refused_and_hears_no_figures(world: World, tmp_path: Path,
                                                          person: PersonFactory) -> None:
    members, _ = await _members(world, tmp_path, person, 2)
    approver = person(Role.POLICE_APPROVER)
    retired = person(Role.COORDINATOR, active=False)
    # A member, the police, a stranger, a hidden number, a coordinator who left.
    for caller in (members[0].phone, OFFICER_PHONE, approver.phone, "+32470999888", "", retired.phone):
        heard, call = await _report(world, tmp_path, caller)
        assert heard == ReportHeard(ReportEnd.UNKNOWN_CALLER) and heard.value == "unknown_caller", caller
        assert call.said == ["report_no_campaign"] and call.values == [{}] and call.hung_up
        assert call.played == []
    assert _heard(world) == []


async def test_before_any_campaign_the_coordinator_is_told_so(world: World, tmp_path: Path,
                                                             person: PersonFactory) -> None:
    await _members(world, tmp_path, person, 2)  # BIN 12 has a campaign; BIN 99 has none
    elsewhere = person(Role.COORDINATOR, bin_number=99)
    heard, call = await _report(world, tmp_path, elsewhere.phone)
    assert heard == ReportHeard(ReportEnd.NO_CAMPAIGN) and heard.value == "no_campaign"
    assert call.said == ["report_no_campaign"] and call.hung_up
    assert _heard(world) == []
