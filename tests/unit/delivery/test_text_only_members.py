"""Issue 17: a member the message does not reach by phone (text only, opted out of calls) is never dialled
and never keeps the campaign from finishing; the dialer reads the member's choice and their zone's default."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.delivery.members import campaign_members, recipients
from ivr.delivery.store import DeliveryDesk
from ivr.domain.vocabulary import CampaignStatus, Urgency
from storage.db import session_scope
from storage.models import AuditEntry, CallAttempt, Campaign, Person, PoliceZone
from tests.unit.delivery.test_campaign_runner import FakeDialer, _add_members, _approved, _runner, _until_done
from tests.world import World, build_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store")


def _set(world: World, person_id: int, **values: object) -> None:
    with session_scope(world.engine) as s:
        person = s.get_one(Person, person_id)
        for name, value in values.items():
            setattr(person, name, value)


async def test_text_only_and_opted_out_members_are_not_dialled_and_the_campaign_finishes(
        world: World, tmp_path: Path) -> None:
    called, text_only, opted_out, chose_voice = _add_members(world, 4)
    _set(world, text_only, channels="sms+email", email="lid@example.be")
    _set(world, opted_out, calls_opt_out_at=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc))
    _set(world, chose_voice, channels="voice")
    dialer = FakeDialer(world.desk, {})  # type: ignore[arg-type]
    runner = _runner(world, dialer)
    await _approved(world, tmp_path)
    await runner.start()
    try:
        await _until_done(world)
    finally:
        await runner.stop()
    with session_scope(world.engine) as s:
        dialled_people = sorted(a.person_id for a in s.scalars(select(CallAttempt)))
        campaign = s.scalars(select(Campaign)).one()
        message = campaign.message
        members = {m.view.person_id: m.called for m in campaign_members(s, campaign, message)}
        everyone = recipients(s, message)
    assert dialled_people == sorted([called, chose_voice])
    # The message still goes to all four (their copies are the copies' business), and reports list them.
    assert members == {called: True, text_only: False, opted_out: False, chose_voice: True}
    assert sorted(everyone) == sorted(members)
    # The campaign's last word counts them too: text only (an address), and no channel (a landline, and
    # the urgent default's SMS needs a mobile): every member is in it once.
    with session_scope(world.engine) as s:
        [done] = s.scalars(select(AuditEntry).where(AuditEntry.action == "campaign.done")).all()
    assert (done.details["text_only"], done.details["no_channel"]) == (1, 1)
    assert sum(done.details.values()) == 4


async def test_a_text_only_member_sharing_a_line_covers_nobody(world: World, tmp_path: Path) -> None:
    """Members sharing a primary number are called once, for both: never through one who is not called."""
    text_only, called = _add_members(world, 2, shared=2)  # both on the same number
    _set(world, text_only, channels="email", email="lid@example.be")
    dialer = FakeDialer(world.desk, {})  # type: ignore[arg-type]
    runner = _runner(world, dialer)
    await _approved(world, tmp_path)
    [plan] = await DeliveryDesk(world.engine, world.desk.store).plans()
    assert [(m.view.person_id, m.covered_by) for m in plan.members] == [(called, None)]
    await runner.start()
    try:
        await _until_done(world)
    finally:
        await runner.stop()
    with session_scope(world.engine) as s:
        assert [a.person_id for a in s.scalars(select(CallAttempt))] == [called]


async def test_a_campaign_of_text_only_members_alone_finishes_without_a_call(world: World, tmp_path: Path) -> None:
    [member] = _add_members(world, 1)
    _set(world, member, channels="sms")
    dialer = FakeDialer(world.desk, {})  # type: ignore[arg-type]
    runner = _runner(world, dialer)
    await _approved(world, tmp_path)
    await runner.start()
    try:
        await _until_done(world)
    finally:
        await runner.stop()
    assert dialer.dialled == []
    with session_scope(world.engine) as s:
        assert s.scalars(select(Campaign.status)).one() is CampaignStatus.DONE


async def test_the_zones_default_decides_for_members_who_chose_nothing(world: World, tmp_path: Path) -> None:
    """A zone whose preventive default leaves voice out makes its members who chose nothing text-only for
    preventive messages; urgent ones still call them, and a member's own choice wins over the zone's."""
    chose_nothing, chose_voice = _add_members(world, 2)
    _set(world, chose_voice, channels="voice+email")
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).preventive_channels = "email"
    await _approved(world, tmp_path, urgency=Urgency.PREVENTIVE)
    await _approved(world, tmp_path, urgency=Urgency.URGENT)
    with session_scope(world.engine) as s:
        preventive, urgent = s.scalars(select(Campaign).order_by(Campaign.id)).all()
        assert {m.view.person_id: m.called for m in campaign_members(s, preventive, preventive.message)} == {
            chose_nothing: False, chose_voice: True}
        assert {m.view.person_id: m.called for m in campaign_members(s, urgent, urgent.message)} == {
            chose_nothing: True, chose_voice: True}
