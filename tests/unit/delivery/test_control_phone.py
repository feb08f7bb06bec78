"""The report line's stop key: 9, confirm with 1, the coordinator's PIN (fake call, real database)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.delivery.report_line import ReportEnd, coordinator_report
from ivr.directory.pin_gate import PinRules
from ivr.domain.vocabulary import CampaignStatus, Role
from storage.db import session_scope
from storage.models import AuditEntry, Campaign, Person
from storage.pins import hash_pin
from tests.conftest import PersonFactory
from tests.fakes import FakeCall
from tests.unit.delivery.sent import delivery_desk, sent_message
from tests.world import World

PIN = "2468"


def _give_pin(world: World) -> tuple[int, str]:
    coordinator_id, phone = world.coordinators[0]
    with session_scope(world.engine) as s:
        s.get_one(Person, coordinator_id).pin_hash = hash_pin(PIN)
    return coordinator_id, phone


def _status(world: World, campaign_id: int) -> CampaignStatus:
    with session_scope(world.engine) as s:
        return s.get_one(Campaign, campaign_id).status


@pytest.mark.parametrize("keys, stopped", [
    (["9", "1", PIN], True),
    (["9", "1", "1111"], False),   # a wrong PIN
    (["9", "2"], False),           # not confirmed
    ([None], False),               # no key: the counts only
])
async def test_a_coordinator_stops_with_9_then_1_then_the_pin(world: World, tmp_path: Path, person: PersonFactory,
                                                               keys: list[str | None], stopped: bool) -> None:
    person(Role.MEMBER)
    sent = await sent_message(world, tmp_path)
    coordinator_id, phone = _give_pin(world)
    call = FakeCall([None, *keys], tmp_path, caller_id=phone)  # no replay (report_replay_offer), then the keys
    heard = await coordinator_report(call, delivery_desk(world), pins=PinRules())
    assert heard.end is ReportEnd.TOLD and heard.stopped is stopped
    assert _status(world, sent.campaign_id) is (CampaignStatus.CANCELLED if stopped else CampaignStatus.RUNNING)
    assert call.said[:3] == ["report_counts", "report_replay_offer", "report_stop_offer"]
    assert call.said[-1] == "member_goodbye"
    if keys != [None]:
        assert call.said[-2] == ("report_stopped" if stopped else "report_not_stopped")
    with session_scope(world.engine) as s:
        actors = [e.actor for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "campaign.stopped"))]
    assert actors == ([f"phone:person:{coordinator_id}"] if stopped else [])


async def test_no_offer_without_a_pin_or_a_running_campaign(world: World, tmp_path: Path,
                                                            person: PersonFactory) -> None:
    person(Role.MEMBER)
    sent = await sent_message(world, tmp_path)
    _, phone = world.coordinators[0]
    call = FakeCall([None], tmp_path, caller_id=phone)  # no PIN of their own: the caller ID alone is not enough
    assert not (await coordinator_report(call, delivery_desk(world), pins=PinRules())).stopped
    assert call.said == ["report_counts", "report_replay_offer", "member_goodbye"]
    _give_pin(world)
    with session_scope(world.engine) as s:
        s.get_one(Campaign, sent.campaign_id).status = CampaignStatus.DONE
    call = FakeCall([None], tmp_path, caller_id=phone)
    await coordinator_report(call, delivery_desk(world), pins=PinRules())
    assert call.said == ["report_counts", "report_replay_offer", "member_goodbye"]
