"""The copy desk against a real SQLite database: which copies are written when, how they move, members' replies."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ivr.copies.plan import RETRACTED_DETAIL, STOPPED_DETAIL
from ivr.delivery.store import DeliveryDesk
from ivr.domain.channels import LadderRules
from ivr.domain.vocabulary import (
    AttemptOutcome,
    CampaignStatus,
    Channel,
    CopyReason,
    CopyStatus,
    MessageKind,
    PhoneRank,
    Urgency,
)
from storage.db import session_scope
from storage.models import (
    AuditEntry,
    Campaign,
    Confirmation,
    Person,
    PhoneNumber,
    PoliceZone,
    RoleAssignment,
    SmsReply,
    TextCopy,
)
from tests.conftest import Clock
from tests.unit.copies.campaigns import (
    call,
    campaign,
    copies,
    copy_desk,
    member,
    number_of,
    set_campaign,
    transcribe,
)
from tests.world import World

BOTH = {Channel.SMS, Channel.EMAIL}
BXL = zoneinfo.ZoneInfo("Europe/Brussels")


def _audit(world: World, action: str) -> list[AuditEntry]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def _add_mobile(world: World, person_id: int, e164: str = "+32499123456") -> str:
    """A second (mobile) number for ``person_id``."""
    with session_scope(world.engine) as s:
        s.add(PhoneNumber(person_id=person_id, rank=PhoneRank.SECONDARY, e164=e164))
    return e164


def _confirmed(world: World) -> list[tuple[int, int, str]]:
    with session_scope(world.engine) as s:
        rows = s.scalars(select(Confirmation).order_by(Confirmation.id))
        return [(c.campaign_id, c.person_id, c.via) for c in rows]


# -- the plan: copies at the start ----------------------------------------------------------------
async def test_copies_by_choice_and_text_only_go_at_the_start(world: World, tmp_path: Path) -> None:
    by_default = member(world)                                              # urgent default: voice+sms
    text_only = member(world, channels="sms+email", email="doof@example.be")
    voice_only = member(world, channels="voice")
    landline = member(world, mobile=False)                                  # no mobile: no SMS
    with_mail = member(world, channels="voice+email", email="lid@example.be")
    sent = await campaign(world, tmp_path)
    desk = copy_desk(world)
    assert await desk.plan(BOTH) is None
    got = {key: (c.reason, c.status, c.address) for key, c in copies(world).items()}
    assert got == {
        (by_default, Channel.SMS): (CopyReason.CHOICE, CopyStatus.QUEUED, number_of(world, by_default)),
        (text_only, Channel.SMS): (CopyReason.TEXT_ONLY, CopyStatus.QUEUED, number_of(world, text_only)),
        (text_only, Channel.EMAIL): (CopyReason.TEXT_ONLY, CopyStatus.QUEUED, "doof@example.be"),
        (with_mail, Channel.EMAIL): (CopyReason.CHOICE, CopyStatus.QUEUED, "lid@example.be"),
    }
    assert voice_only not in {pid for pid, _ in got} and landline not in {pid for pid, _ in got}
    # Planned again (a restart, a second node): nothing more.
    await desk.plan(BOTH)
    await asyncio.gather(desk.plan(BOTH), copy_desk(world).plan(BOTH))
    assert len(copies(world, sent.campaign_id)) == 4


async def test_only_channels_with_a_gateway_get_copies(world: World, tmp_path: Path) -> None:
    text_only = member(world, channels="sms+email", email="doof@example.be")
    await campaign(world, tmp_path)
    await copy_desk(world).plan({Channel.SMS})
    assert set(copies(world)) == {(text_only, Channel.SMS)}
    await copy_desk(world).plan(set())
    assert set(copies(world)) == {(text_only, Channel.SMS)}


async def test_the_zones_defaults_per_urgency(world: World, tmp_path: Path) -> None:
    chose_nothing = member(world, email="lid@example.be")
    with session_scope(world.engine) as s:
        zone = s.get_one(PoliceZone, world.zone_id)
        zone.urgent_channels, zone.preventive_channels = "voice+email", "voice+sms+email"
    urgent = await campaign(world, tmp_path)
    preventive = await campaign(world, tmp_path, urgency=Urgency.PREVENTIVE)
    await copy_desk(world, tz=BXL).plan(BOTH)  # 20:15 in Brussels: inside the allowed hours
    assert set(copies(world, urgent.campaign_id)) == {(chose_nothing, Channel.EMAIL)}
    assert set(copies(world, preventive.campaign_id)) == {(chose_nothing, Channel.SMS), (chose_nothing, Channel.EMAIL)}


async def test_the_settings_defaults_hold_where_the_zone_has_none(world: World, tmp_path: Path) -> None:
    chose_nothing = member(world, email="lid@example.be")
    preventive = await campaign(world, tmp_path, urgency=Urgency.PREVENTIVE)
    await copy_desk(world, preventive_channels="voice+sms", tz=BXL).plan(BOTH)
    assert set(copies(world, preventive.campaign_id)) == {(chose_nothing, Channel.SMS)}


async def test_an_opted_out_member_gets_nothing_on_that_channel(world: World, tmp_path: Path) -> None:
    at = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    no_sms = member(world, channels="voice+sms+email", email="a@example.be", sms_opt_out_at=at)
    no_mail = member(world, channels="voice+sms+email", email="b@example.be", email_opt_out_at=at)
    await campaign(world, tmp_path)
    await copy_desk(world).plan(BOTH)
    assert set(copies(world)) == {(no_sms, Channel.EMAIL), (no_mail, Channel.SMS)}


async def test_a_preventive_sms_waits_for_the_morning_an_email_does_not(
        world: World, tmp_path: Path, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 23, 22, 30, tzinfo=BXL).astimezone(dt.timezone.utc)
    someone = member(world, channels="voice+sms+email", email="lid@example.be")
    await campaign(world, tmp_path, urgency=Urgency.PREVENTIVE, text="Let op.")
    desk = copy_desk(world, tz=BXL)
    due = await desk.plan(BOTH)
    morning = dt.datetime(2026, 11, 24, 8, 0, tzinfo=BXL)
    assert due == morning
    # Written with the others (the copies at the start are planned once), taken in the morning.
    got = copies(world)
    assert set(got) == {(someone, Channel.EMAIL), (someone, Channel.SMS)}
    assert got[(someone, Channel.SMS)].retry_at == morning and got[(someone, Channel.EMAIL)].retry_at is None
    [job] = await desk.claim(5)
    assert job.channel is Channel.EMAIL
    assert await desk.plan(BOTH) == morning
    clock.now = morning.astimezone(dt.timezone.utc) - dt.timedelta(seconds=1)
    assert await desk.claim(5) == []
    clock.advance(seconds=1)
    [job] = await desk.claim(5)
    assert job.channel is Channel.SMS


async def test_a_campaign_done_long_ago_is_no_longer_planned(world: World, tmp_path: Path, clock: Clock) -> None:
    text_only = member(world, channels="sms")
    sent = await campaign(world, tmp_path)
    set_campaign(world, sent.campaign_id, CampaignStatus.DONE, clock.now - dt.timedelta(days=2))
    await copy_desk(world).plan(BOTH)
    assert copies(world) == {}
    set_campaign(world, sent.campaign_id, CampaignStatus.DONE, clock.now - dt.timedelta(minutes=1))
    await copy_desk(world).plan(BOTH)  # a text-only member's campaign is done at once: still planned
    assert set(copies(world)) == {(text_only, Channel.SMS)}


async def test_copies_at_the_start_are_planned_once_with_the_members_of_that_moment(
        world: World, tmp_path: Path, clock: Clock) -> None:
    early = member(world, channels="sms")
    sent = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    with session_scope(world.engine) as s:
        assert s.get_one(Campaign, sent.campaign_id).copies_planned_at == clock.now
    late = member(world)  # imported after the start (voice+sms by default): the alert is not theirs
    clock.advance(minutes=1)
    await desk.plan(BOTH)
    set_campaign(world, sent.campaign_id, CampaignStatus.DONE, clock.now)
    clock.advance(minutes=10)
    await desk.plan(BOTH)
    assert set(copies(world)) == {(early, Channel.SMS)}
    assert late not in {pid for pid, _ in copies(world)}


async def test_a_finished_campaign_is_planned_only_while_a_ladder_sms_can_fall_due(
        world: World, tmp_path: Path, clock: Clock) -> None:
    missed = member(world, channels="voice")
    sent = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world, ladder=LadderRules(True, 900.0), ladder_margin_s=600.0)
    await desk.plan({Channel.EMAIL})  # its copies at the start planned while SMS was off
    call(world, sent.campaign_id, missed, AttemptOutcome.NO_ANSWER, clock.now)
    finished = clock.now
    set_campaign(world, sent.campaign_id, CampaignStatus.DONE, finished)
    clock.now = finished + dt.timedelta(seconds=900 + 600 + 1)
    await desk.plan(BOTH)
    assert copies(world) == {}  # no longer planned: nothing can fall due any more
    clock.now = finished + dt.timedelta(seconds=900 + 599)
    await desk.plan(BOTH)
    assert set(copies(world)) == {(missed, Channel.SMS)}


async def test_a_campaign_that_cannot_be_planned_holds_up_no_other(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    someone = member(world, channels="sms")
    broken = await campaign(world, tmp_path, text="Eerste.")
    fine = await campaign(world, tmp_path, text="Tweede.")
    desk = copy_desk(world)
    real = desk._copies_at_start

    def copies_at_start(s: Session, campaign: Campaign, *rest: Any) -> bool:
        if campaign.id == broken.campaign_id:
            raise ValueError("a setting nobody can read")
        return real(s, campaign, *rest)

    monkeypatch.setattr(desk, "_copies_at_start", copies_at_start)
    await desk.plan(BOTH)
    assert set(copies(world, fine.campaign_id)) == {(someone, Channel.SMS)}
    assert copies(world, broken.campaign_id) == {}
    assert f"campaign {broken.campaign_id}: its copies could not be planned" in caplog.text


# -- the plan: the ladder -------------------------------------------------------------------------
async def test_the_ladder_sends_the_sms_to_the_unconfirmed_after_the_delay(
        world: World, tmp_path: Path, clock: Clock) -> None:
    missed = member(world, channels="voice")            # voice only: the ladder's SMS all the same
    confirmed = member(world, channels="voice")
    landline = member(world, channels="voice", mobile=False)
    busy = member(world, channels="voice")
    sent = await campaign(world, tmp_path)
    ended = clock.now
    for pid in (missed, landline):
        call(world, sent.campaign_id, pid, AttemptOutcome.NO_ANSWER, ended)
    call(world, sent.campaign_id, confirmed, AttemptOutcome.CONFIRMED, ended)
    with session_scope(world.engine) as s:
        s.add(Confirmation(campaign_id=sent.campaign_id, person_id=confirmed, confirmed_at=ended, via="call"))
    call(world, sent.campaign_id, busy, AttemptOutcome.BUSY, ended)
    desk = copy_desk(world, ladder=LadderRules(True, 600.0))  # no retries: one call ends a member's calls
    clock.advance(seconds=599)
    assert await desk.plan(BOTH) == ended + dt.timedelta(seconds=600)
    assert copies(world) == {}
    clock.advance(seconds=1)
    await desk.plan(BOTH)
    got = copies(world)
    assert set(got) == {(missed, Channel.SMS), (busy, Channel.SMS)}
    assert got[(missed, Channel.SMS)].reason is CopyReason.LADDER
    assert got[(missed, Channel.SMS)].address == number_of(world, missed)


async def test_no_ladder_while_retries_are_left_nor_when_the_zone_turns_it_off(
        world: World, tmp_path: Path, clock: Clock) -> None:
    from ivr.delivery.policy import RetryPolicy

    missed = member(world, channels="voice")
    sent = await campaign(world, tmp_path)
    call(world, sent.campaign_id, missed, AttemptOutcome.NO_ANSWER, clock.now)
    clock.advance(hours=1)
    retrying = copy_desk(world, policies={True: RetryPolicy(retries=1, retry_after_s=7200),
                                          False: RetryPolicy(retries=1, retry_after_s=7200)})
    await retrying.plan(BOTH)
    assert copies(world) == {}  # the second call is still to come
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).ladder_sms = False
    await copy_desk(world).plan(BOTH)
    assert copies(world) == {}
    set_campaign(world, sent.campaign_id, CampaignStatus.DONE, clock.now)  # the campaign is over: calls are
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).ladder_sms, s.get_one(PoliceZone, world.zone_id).ladder_after_s = None, 60
    await retrying.plan(BOTH)
    assert set(copies(world)) == {(missed, Channel.SMS)}


async def test_a_member_who_has_an_sms_copy_already_gets_no_ladder_sms(
        world: World, tmp_path: Path, clock: Clock) -> None:
    by_choice = member(world)  # voice+sms by default: their SMS went at the start
    sent = await campaign(world, tmp_path)
    desk = copy_desk(world)
    await desk.plan(BOTH)
    call(world, sent.campaign_id, by_choice, AttemptOutcome.NO_ANSWER, clock.now)
    clock.advance(hours=2)
    await desk.plan(BOTH)
    [only] = copies(world).values()
    assert only.reason is CopyReason.CHOICE


async def test_a_preventive_ladder_sms_keeps_the_quiet_hours(world: World, tmp_path: Path, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 23, 20, 40, tzinfo=BXL).astimezone(dt.timezone.utc)
    missed = member(world, channels="voice")
    sent = await campaign(world, tmp_path, urgency=Urgency.PREVENTIVE)
    call(world, sent.campaign_id, missed, AttemptOutcome.NO_ANSWER, clock.now)
    desk = copy_desk(world, ladder=LadderRules(True, 900.0), tz=BXL)
    assert await desk.plan(BOTH) == clock.now + dt.timedelta(seconds=900)  # 20:55: still allowed
    clock.advance(seconds=1800)  # 21:10: due, but the quiet hours began
    morning = dt.datetime(2026, 11, 24, 8, 0, tzinfo=BXL)
    assert await desk.plan(BOTH) == morning
    [row] = copies(world).values()
    assert (row.person_id, row.reason, row.retry_at) == (missed, CopyReason.LADDER, morning)
    assert await desk.claim(5, text_wait_s=0) == []
    clock.now = morning.astimezone(dt.timezone.utc)
    [job] = await desk.claim(5, text_wait_s=0)
    assert job.reason is CopyReason.LADDER


async def test_a_finished_campaigns_ladder_is_for_the_members_it_had(
        world: World, tmp_path: Path, clock: Clock) -> None:
    """Housemates on one line are called once (the first stands in): the other gets the ladder's SMS
    too, but someone who joined the line after the campaign finished does not."""
    line = "+3292555555"
    caller = member(world, channels="voice", phone=line, created_at=clock.now - dt.timedelta(days=30))
    housemate = member(world, channels="voice", phone=line, created_at=clock.now - dt.timedelta(days=30))
    _add_mobile(world, caller, "+32499000001")
    _add_mobile(world, housemate, "+32499000002")
    sent = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world, ladder=LadderRules(True, 900.0))
    await desk.plan(BOTH)
    call(world, sent.campaign_id, caller, AttemptOutcome.NO_ANSWER, clock.now)
    set_campaign(world, sent.campaign_id, CampaignStatus.DONE, clock.now)
    newcomer = member(world, channels="voice", phone=line, created_at=clock.now + dt.timedelta(minutes=5))
    _add_mobile(world, newcomer, "+32499000003")
    clock.advance(seconds=900)
    await desk.plan(BOTH)
    assert set(copies(world)) == {(caller, Channel.SMS), (housemate, Channel.SMS)}


# -- stops ----------------------------------------------------------------------------------------
async def test_a_stopped_campaign_cancels_its_queued_copies_and_a_renotify_queues_them_again(
        world: World, tmp_path: Path, clock: Clock) -> None:
    text_only = member(world, channels="sms+email", email="doof@example.be")
    sent = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    [job] = await desk.claim(1, channels=[Channel.EMAIL])  # one is being sent: the stop leaves it be
    set_campaign(world, sent.campaign_id, CampaignStatus.CANCELLED, clock.now)
    assert await desk.claim(5) == []
    await desk.plan(BOTH)
    got = copies(world)
    assert got[(text_only, Channel.SMS)].status is CopyStatus.CANCELLED
    assert got[(text_only, Channel.SMS)].detail == STOPPED_DETAIL
    assert got[(text_only, Channel.EMAIL)].status is CopyStatus.SENDING
    set_campaign(world, sent.campaign_id, CampaignStatus.RUNNING)
    await desk.plan(BOTH)
    assert copies(world)[(text_only, Channel.SMS)].status is CopyStatus.QUEUED
    assert job.channel is Channel.EMAIL


async def test_a_copy_queued_again_by_a_renotify_gets_its_retry_time_and_tries_anew(
        world: World, tmp_path: Path, clock: Clock) -> None:
    text_only = member(world, channels="sms")
    sent = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world, retry_for_s=3600.0, max_tries=3)
    await desk.plan(BOTH)
    for _ in range(2):
        [job] = await desk.claim(5)
        assert await desk.failed(job.copy_id, "503 busy") is CopyStatus.QUEUED
        clock.advance(minutes=1)
    set_campaign(world, sent.campaign_id, CampaignStatus.CANCELLED, clock.now)
    await desk.plan(BOTH)
    clock.advance(hours=3)  # a re-notify, hours later
    set_campaign(world, sent.campaign_id, CampaignStatus.RUNNING)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    assert job.tries == 1
    # A passing failure is tried again: its hour counts from the re-notify, its tries from zero.
    assert await desk.failed(job.copy_id, "503 busy") is CopyStatus.QUEUED
    assert copies(world)[(text_only, Channel.SMS)].created_at == clock.now


# -- claiming and sending -------------------------------------------------------------------------
async def test_a_claim_takes_each_copy_once(world: World, tmp_path: Path) -> None:
    for _ in range(6):
        member(world, channels="sms")
    await campaign(world, tmp_path, text="Verdachte wagen in de Kerkstraat.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    first, second = await asyncio.gather(desk.claim(4), copy_desk(world).claim(4))
    ids = [job.copy_id for job in first + second]
    assert len(ids) == 6 == len(set(ids))
    assert all(c.status is CopyStatus.SENDING and c.tries == 1 for c in copies(world).values())
    assert first[0].text == "Verdachte wagen in de Kerkstraat." and first[0].bin_name == "Kerkwijk"


async def test_an_sms_waits_for_the_transcript_then_goes_without_it(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path)
    desk = copy_desk(world)
    await desk.plan(BOTH)
    assert await desk.claim(5, text_wait_s=120) == []
    clock.advance(seconds=120)
    [job] = await desk.claim(5, text_wait_s=120)
    assert job.text is None and job.transcript is None


async def test_an_sms_goes_as_soon_as_the_transcript_is_there(world: World, tmp_path: Path) -> None:
    member(world, channels="sms")
    spoken = await campaign(world, tmp_path)
    desk = copy_desk(world)
    await desk.plan(BOTH)
    assert await desk.claim(5) == []
    transcribe(world, spoken.message_id, "inbraak in de schoolstraat")
    [job] = await desk.claim(5)
    assert job.transcript == "inbraak in de schoolstraat" and job.text is None


async def test_copies_waiting_for_a_transcript_hold_up_no_other_campaign(world: World, tmp_path: Path) -> None:
    for _ in range(60):  # more waiting copies than one claim looks at
        member(world, channels="sms")
    await campaign(world, tmp_path)                       # spoken: its copies wait for the transcript
    typed = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    jobs = await desk.claim(1)
    assert [job.campaign_id for job in jobs] == [typed.campaign_id]


async def test_an_uncertain_transcript_is_not_sent(world: World, tmp_path: Path) -> None:
    member(world, channels="sms")
    spoken = await campaign(world, tmp_path)
    transcribe(world, spoken.message_id, "la la la la la", uncertain=True)
    desk = copy_desk(world)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    assert job is not None and job.transcript is None


async def test_an_email_claim_opens_the_recording_and_audits_it(world: World, tmp_path: Path) -> None:
    someone = member(world, channels="email", email="lid@example.be")
    sent = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    assert job.recording is not None and job.recording.read_bytes()[:4] == b"RIFF"
    [row] = _audit(world, "recording.emailed")
    assert row.subject == f"message:{sent.message_id}" and row.details["to"] == f"person:{someone}"
    assert row.details["address"] == "l***@example.be" and row.actor == f"copy:{job.copy_id}"


async def test_without_attach_audio_an_email_claim_leaves_the_recording_closed(world: World, tmp_path: Path) -> None:
    member(world, channels="email", email="lid@example.be")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world, attach_audio=False)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    assert job.recording is None and job.text == "Let op."
    assert _audit(world, "recording.emailed") == []


async def test_a_member_who_opted_out_since_it_was_queued_gets_no_copy(world: World, tmp_path: Path) -> None:
    someone = member(world, channels="email", email="lid@example.be")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    with session_scope(world.engine) as s:
        s.get_one(Person, someone).email_opt_out_at = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    assert await desk.claim(5) == []
    assert copies(world)[(someone, Channel.EMAIL)].status is CopyStatus.CANCELLED


async def test_a_ladder_sms_is_cancelled_when_its_member_confirmed_meanwhile(
        world: World, tmp_path: Path, clock: Clock) -> None:
    missed = member(world, channels="voice")
    chose_sms = member(world)  # voice+sms by default: their copy is their choice, it goes all the same
    sent = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world, ladder=LadderRules(True, 60.0))
    await desk.plan(BOTH)
    call(world, sent.campaign_id, missed, AttemptOutcome.NO_ANSWER, clock.now)
    clock.advance(seconds=60)
    await desk.plan(BOTH)
    assert copies(world)[(missed, Channel.SMS)].reason is CopyReason.LADDER
    with session_scope(world.engine) as s:  # both call back and confirm before the SMS go
        for pid in (missed, chose_sms):
            s.add(Confirmation(campaign_id=sent.campaign_id, person_id=pid, confirmed_at=clock.now, via="callback"))
    [job] = await desk.claim(5)
    assert job.person_id == chose_sms
    row = copies(world)[(missed, Channel.SMS)]
    assert row.status is CopyStatus.CANCELLED and row.detail.startswith("member confirmed")


async def test_copies_of_members_who_left_the_bin_or_were_deactivated_are_cancelled(
        world: World, tmp_path: Path) -> None:
    left, deactivated, stays = (member(world, channels="sms") for _ in range(3))
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    with session_scope(world.engine) as s:
        s.execute(delete(RoleAssignment).where(RoleAssignment.person_id == left))
        s.get_one(Person, deactivated).active = False
    jobs = await desk.claim(5)
    assert [job.person_id for job in jobs] == [stays]
    got = copies(world)
    for pid in (left, deactivated):
        assert got[(pid, Channel.SMS)].status is CopyStatus.CANCELLED
        assert got[(pid, Channel.SMS)].detail == "no longer an active member of the BIN"


async def test_urgent_copies_are_claimed_first_then_the_oldest(world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    older = await campaign(world, tmp_path, urgency=Urgency.PREVENTIVE, text="Eerst.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    clock.advance(minutes=1)
    urgent = await campaign(world, tmp_path, text="Dringend.")
    await desk.plan(BOTH)
    clock.advance(minutes=1)
    newer = await campaign(world, tmp_path, urgency=Urgency.PREVENTIVE, text="Daarna.")
    await desk.plan(BOTH)
    order = [job.campaign_id for _ in range(3) for job in await desk.claim(1)]
    assert order == [urgent.campaign_id, older.campaign_id, newer.campaign_id]


async def test_a_preventive_sms_due_again_in_the_quiet_hours_waits_for_the_morning(
        world: World, tmp_path: Path, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 23, 20, 59, 50, tzinfo=BXL).astimezone(dt.timezone.utc)
    member(world, channels="sms")
    await campaign(world, tmp_path, urgency=Urgency.PREVENTIVE, text="Let op.")
    desk = copy_desk(world, tz=BXL)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    assert await desk.failed(job.copy_id, "503 busy") is CopyStatus.QUEUED
    clock.advance(seconds=30)  # 21:00:20: its pause is over, the quiet hours began
    assert await desk.claim(5) == []
    morning = dt.datetime(2026, 11, 24, 8, 0, tzinfo=BXL)
    [row] = copies(world).values()
    assert (row.status, row.retry_at) == (CopyStatus.QUEUED, morning)
    assert await desk.plan(BOTH) == morning


async def test_a_passing_failure_waits_a_growing_pause_before_it_is_tried_again(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    for pause_s in (30, 60, 120, 240, 480, 600, 600):
        [job] = await desk.claim(5)
        assert await desk.failed(job.copy_id, "smsbox: connection refused") is CopyStatus.QUEUED
        again_at = clock.now + dt.timedelta(seconds=pause_s)
        assert copies(world)[(job.person_id, Channel.SMS)].retry_at == again_at
        assert await desk.claim(5) == []            # not at once: the gateway is down
        assert await desk.plan(BOTH) == again_at    # the sender sleeps until then
        clock.advance(seconds=pause_s - 1)
        assert await desk.claim(5) == []
        clock.advance(seconds=1)
    [job] = await desk.claim(5)
    assert job.tries == 8


async def test_a_copy_is_given_up_after_the_retry_time(world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world, retry_for_s=3600.0)
    await desk.plan(BOTH)
    queued_at = clock.now
    tries = 0
    while True:
        [job] = await desk.claim(5)
        tries += 1
        status = await desk.failed(job.copy_id, "503 busy")
        if status is CopyStatus.FAILED:
            break
        assert status is CopyStatus.QUEUED and clock.now < queued_at + dt.timedelta(hours=1)
        clock.now = copies(world)[(job.person_id, Channel.SMS)].retry_at
    assert clock.now >= queued_at + dt.timedelta(hours=1) and tries == 11  # 30 s .. 8 min, then every 10 min
    [row] = copies(world).values()
    assert row.tries == tries and row.detail == "503 busy" and row.failed_at == clock.now
    clock.advance(hours=1)
    assert await desk.claim(5) == [] and await desk.plan(BOTH) is None


async def test_a_copy_is_given_up_after_max_tries_whatever_the_time(
        world: World, tmp_path: Path, clock: Clock) -> None:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world, max_tries=3)
    await desk.plan(BOTH)
    for expected in (CopyStatus.QUEUED, CopyStatus.QUEUED, CopyStatus.FAILED):
        [job] = await desk.claim(5)
        assert await desk.failed(job.copy_id, "503 busy") is expected
        clock.advance(minutes=10)
    [row] = copies(world).values()
    assert row.tries == 3 and row.detail == "503 busy" and row.failed_at is not None
    assert await desk.claim(5) == []


async def test_a_preventive_sms_gets_its_retry_time_after_the_quiet_hours(
        world: World, tmp_path: Path, clock: Clock) -> None:
    """Queued at 22:30 (it waits for 08:00): its six hours of tries count from the morning."""
    clock.now = dt.datetime(2026, 11, 23, 22, 30, tzinfo=BXL).astimezone(dt.timezone.utc)
    member(world, channels="sms")
    await campaign(world, tmp_path, urgency=Urgency.PREVENTIVE, text="Let op.")
    desk = copy_desk(world, tz=BXL)
    await desk.plan(BOTH)
    for at, expected in ((dt.datetime(2026, 11, 24, 8, 0, tzinfo=BXL), CopyStatus.QUEUED),
                         (dt.datetime(2026, 11, 24, 13, 59, tzinfo=BXL), CopyStatus.QUEUED),
                         (dt.datetime(2026, 11, 24, 14, 9, tzinfo=BXL), CopyStatus.FAILED)):
        clock.now = at.astimezone(dt.timezone.utc)
        [job] = await desk.claim(5)
        assert await desk.failed(job.copy_id, "503 busy") is expected


async def test_a_refusal_is_final_at_once_and_a_bounce_is_kept(world: World, tmp_path: Path) -> None:
    sms_member = member(world, channels="sms+email", email="weg@example.be")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    jobs = {job.channel: job for job in await desk.claim(5)}
    assert await desk.failed(jobs[Channel.SMS].copy_id, "bad number", final=True) is CopyStatus.FAILED
    assert await desk.bounced(jobs[Channel.EMAIL].copy_id, "550 no such mailbox")
    got = copies(world)
    assert got[(sms_member, Channel.EMAIL)].status is CopyStatus.BOUNCED
    assert got[(sms_member, Channel.EMAIL)].detail == "550 no such mailbox"


async def test_sent_records_the_answer_segments_and_message_id(world: World, tmp_path: Path) -> None:
    member(world, channels="sms+email", email="lid@example.be")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    jobs = {job.channel: job for job in await desk.claim(5)}
    assert await desk.sent(jobs[Channel.SMS].copy_id, "0: Accepted for delivery", segments=2)
    assert await desk.sent(jobs[Channel.EMAIL].copy_id, "250 queued", provider_ref="<x@example.be>")
    assert not await desk.sent(jobs[Channel.SMS].copy_id, "again")  # once
    rows = {c.channel: c for c in copies(world).values()}
    assert rows[Channel.SMS].status is CopyStatus.SENT and rows[Channel.SMS].segments == 2
    assert rows[Channel.SMS].detail == "0: Accepted for delivery"
    assert rows[Channel.EMAIL].provider_ref == "<x@example.be>"


# -- delivery reports -----------------------------------------------------------------------------
async def test_delivery_reports_move_forward_only(world: World, tmp_path: Path, clock: Clock) -> None:
    for _ in range(3):
        member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    a, b, c = (job.copy_id for job in await desk.claim(5))
    now = clock.now
    # 8: the SMSC has it (the proof Kannel got it, before Kannel's own answer is stored).
    assert await desk.delivery_report(a, 8, now) is CopyStatus.SENT
    assert not await desk.sent(a, "0: Accepted for delivery", segments=1)  # already SENT: kept
    assert await desk.delivery_report(a, 1, now) is CopyStatus.DELIVERED
    assert await desk.delivery_report(a, 2, now) is None and await desk.delivery_report(a, 8, now) is None
    assert await desk.delivery_report(b, 16, now) is CopyStatus.FAILED
    assert await desk.delivery_report(b, 1, now) is None
    assert await desk.delivery_report(c, 4, now) is CopyStatus.SENT
    assert await desk.delivery_report(c, 2, now) is CopyStatus.FAILED
    assert await desk.delivery_report("no-such-copy", 1, now) is None
    assert await desk.delivery_report(a, 3, now) is None
    with session_scope(world.engine) as s:
        rows = {r.id: r for r in s.scalars(select(TextCopy))}
    assert rows[a].status is CopyStatus.DELIVERED and rows[a].delivered_at == now and rows[a].segments == 1
    assert rows[a].detail.startswith("dlr 1")
    assert (rows[b].status, rows[c].status) == (CopyStatus.FAILED, CopyStatus.FAILED)


async def test_a_delivered_sms_is_never_sent_again_after_a_lost_answer(world: World, tmp_path: Path) -> None:
    """Kannel's answer was lost (a timeout: failed, queued again), but its report says the SMSC has it."""
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    assert await desk.failed(job.copy_id, "timed out") is CopyStatus.QUEUED
    assert await desk.delivery_report(job.copy_id, 8, world.desk.clock()) is CopyStatus.SENT
    assert await desk.claim(5) == []


# -- resume ---------------------------------------------------------------------------------------
async def test_orphans_are_claimed_again_only_while_still_sending(world: World, tmp_path: Path) -> None:
    member(world, channels="sms+email", email="lid@example.be")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    jobs = {job.channel: job for job in await desk.claim(5)}  # then the process died
    orphans = {o.channel: o.copy_id for o in await copy_desk(world).orphans()}
    assert orphans == {Channel.SMS: jobs[Channel.SMS].copy_id, Channel.EMAIL: jobs[Channel.EMAIL].copy_id}
    await desk.delivery_report(orphans[Channel.SMS], 8, world.desk.clock())  # Kannel had it
    [again] = await desk.claim(5, orphans=list(orphans.values()))
    assert again.copy_id == orphans[Channel.EMAIL] and again.resumed and again.tries == 2


async def test_an_sms_is_stamped_only_when_handed_to_kannel(world: World, tmp_path: Path, clock: Clock) -> None:
    """Claimed, an SMS waits for its pace token: left SENDING then, it never reached Kannel, and the
    orphans say so (``sending_at`` empty); an e-mail is handed over at once."""
    member(world, channels="sms+email", email="lid@example.be")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    jobs = {job.channel: job for job in await desk.claim(5)}
    found = {o.channel: o.sending_at for o in await desk.orphans()}
    assert found == {Channel.SMS: None, Channel.EMAIL: clock.now}
    clock.advance(seconds=1)
    assert await desk.handing(jobs[Channel.SMS].copy_id)
    found = {o.channel: o.sending_at for o in await desk.orphans()}
    assert found[Channel.SMS] == clock.now
    # Another process's unstamped SMS counts from its claim.
    assert await desk.orphans(older_than=clock.now - dt.timedelta(seconds=2)) == []
    await desk.delivery_report(jobs[Channel.SMS].copy_id, 8, clock.now)
    assert not await desk.handing(jobs[Channel.SMS].copy_id)  # settled: it does not go


async def test_a_preventive_sms_orphan_waits_for_the_end_of_the_quiet_hours(
        world: World, tmp_path: Path, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 23, 20, 59, tzinfo=BXL).astimezone(dt.timezone.utc)
    member(world, channels="sms")
    await campaign(world, tmp_path, urgency=Urgency.PREVENTIVE, text="Let op.")
    desk = copy_desk(world, tz=BXL)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    await desk.handing(job.copy_id)  # handed over, then the process died
    clock.advance(minutes=5)  # 21:04: back, in the quiet hours
    assert await desk.claim(5, orphans=[job.copy_id]) == []
    morning = dt.datetime(2026, 11, 24, 8, 0, tzinfo=BXL)
    [row] = copies(world).values()
    assert (row.status, row.retry_at) == (CopyStatus.QUEUED, morning)
    assert await desk.plan(BOTH) == morning
    clock.now = morning.astimezone(dt.timezone.utc)
    [again] = await desk.claim(5)
    assert again.copy_id == job.copy_id


async def test_orphans_older_than_a_bound(world: World, tmp_path: Path, clock: Clock) -> None:
    for _ in range(2):
        member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    [first] = await desk.claim(1)
    clock.advance(minutes=5)
    [second] = await desk.claim(1)
    assert [o.copy_id for o in await desk.orphans(older_than=clock.now - dt.timedelta(minutes=1))] == [first.copy_id]
    assert [o.copy_id for o in await desk.orphans()] == [first.copy_id, second.copy_id]
    await desk.sent(first.copy_id, "0: Accepted")
    still = await desk.orphans(older_than=clock.now + dt.timedelta(seconds=1))
    assert [o.copy_id for o in still] == [second.copy_id]


# -- replies --------------------------------------------------------------------------------------
async def test_a_reply_1_confirms_the_latest_campaign_and_the_dialer_stops(
        world: World, tmp_path: Path, clock: Clock) -> None:
    someone = member(world)
    sent = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    await desk.sent(job.copy_id, "0: Accepted")
    number = number_of(world, someone)
    assert await desk.take_reply(number, "+3250000000", "ok, gezien", "kannel-1", clock.now) == "confirm"
    assert await desk.take_reply(number, "+3250000000", "ok, gezien", "kannel-1", clock.now) == "confirm"
    with session_scope(world.engine) as s:
        [confirmation] = s.scalars(select(Confirmation)).all()
        [reply] = s.scalars(select(SmsReply)).all()
    assert (confirmation.campaign_id, confirmation.person_id, confirmation.via) == (sent.campaign_id, someone, "sms")
    assert confirmation.attempt_id is None and reply.campaign_id == sent.campaign_id
    [row] = _audit(world, "confirmation.stored")
    assert row.details == {"person": someone, "via": "sms", "verified": False} and number not in row.actor
    # The dialer reads confirmations: no call is written for this member any more.
    delivery = DeliveryDesk(world.engine, world.desk.store, clock=clock)
    assert await delivery.begin_attempt(sent.campaign_id, someone, number, "primary", 1) is None


async def test_a_reply_1_confirms_only_a_campaign_that_called_that_number(world: World, tmp_path: Path,
                                                                          clock: Clock) -> None:
    """Being a member of a BIN with a campaign running is not enough: a "1" from a number nobody
    called, nor texted, confirms nothing (anyone can send an SMS from a number they claim)."""
    someone = member(world, channels="voice")
    sent = await campaign(world, tmp_path)
    desk = copy_desk(world)
    number = number_of(world, someone)
    assert await desk.take_reply(number, "", "1", None, clock.now) == "confirm"
    assert _confirmed(world) == []
    # Called on it (this round), the call over: now it counts.
    call(world, sent.campaign_id, someone, AttemptOutcome.NO_ANSWER, clock.now)
    clock.advance(minutes=1)
    assert await desk.take_reply(number, "", "1", None, clock.now) == "confirm"
    assert _confirmed(world) == [(sent.campaign_id, someone, "sms")]


async def test_a_reply_1_counts_only_from_the_number_the_copy_went_to_after_it_went(
        world: World, tmp_path: Path, clock: Clock) -> None:
    someone = member(world, channels="sms")
    other_mobile = _add_mobile(world, someone)
    older = await campaign(world, tmp_path, text="Eerst.")
    newer = await campaign(world, tmp_path, text="Daarna.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    sent_at = clock.now
    for job in await desk.claim(5):
        await desk.sent(job.copy_id, "0: Accepted")
    number = number_of(world, someone)
    # From their other mobile (no copy went there, no call), or received before the copy was: nothing.
    assert await desk.take_reply(other_mobile, "", "1", "k-1", sent_at) == "confirm"
    clock.now = sent_at - dt.timedelta(seconds=2)
    assert await desk.take_reply(number, "", "1", "k-2", clock.now) == "confirm"
    assert _confirmed(world) == []
    clock.now = sent_at + dt.timedelta(minutes=2)
    assert await desk.take_reply(number, "", "1", "k-3", clock.now) == "confirm"
    assert _confirmed(world) == [(newer.campaign_id, someone, "sms")]  # the newest of the two
    with session_scope(world.engine) as s:
        assert [r.campaign_id for r in s.scalars(select(SmsReply).order_by(SmsReply.id))] == \
            [None, None, newer.campaign_id]
    assert older.campaign_id != newer.campaign_id


async def test_a_reply_1_counts_when_the_smscs_clock_runs_behind(
        world: World, tmp_path: Path, clock: Clock) -> None:
    """The SMSC dates the "1" five minutes before the copy went (its clock is behind): the time we
    received it says it came after."""
    someone = member(world, channels="sms")
    sent = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    await desk.sent(job.copy_id, "0: Accepted")
    clock.advance(minutes=1)
    smsc_time = clock.now - dt.timedelta(minutes=6)
    assert await desk.take_reply(number_of(world, someone), "", "1", "k-1", smsc_time) == "confirm"
    assert _confirmed(world) == [(sent.campaign_id, someone, "sms")]


async def test_a_reply_from_an_unknown_number_is_stored_and_does_nothing(world: World, clock: Clock) -> None:
    desk = copy_desk(world)
    assert await desk.take_reply("+32479999999", "", "OK", "k-9", clock.now) == "confirm"
    assert await desk.take_reply("+32479999999", "", "wie is dit?", "k-10", clock.now) == "unknown"
    with session_scope(world.engine) as s:
        assert s.scalars(select(Confirmation)).all() == []
        assert [r.campaign_id for r in s.scalars(select(SmsReply))] == [None, None]


async def test_stop_opts_out_and_cancels_queued_sms_start_opts_back_in(
        world: World, tmp_path: Path, clock: Clock) -> None:
    someone = member(world, channels="sms+email", email="lid@example.be")
    await campaign(world, tmp_path)  # no text yet: the copies wait in the queue
    desk = copy_desk(world)
    await desk.plan(BOTH)
    number = number_of(world, someone)
    assert await desk.take_reply(number, "", "STOP", "k-1", clock.now) == "stop"
    got = copies(world)
    assert got[(someone, Channel.SMS)].status is CopyStatus.CANCELLED
    assert got[(someone, Channel.EMAIL)].status is CopyStatus.QUEUED
    with session_scope(world.engine) as s:
        assert s.get_one(Person, someone).sms_opt_out_at == clock.now
    [row] = _audit(world, "member.sms_opt_out")
    assert row.subject == f"person:{someone}" and row.details["cancelled"] == 1
    # A later campaign writes no SMS for them.
    later = await campaign(world, tmp_path)
    await desk.plan(BOTH)
    assert set(copies(world, later.campaign_id)) == {(someone, Channel.EMAIL)}
    assert await desk.take_reply(number, "", "Start", "k-2", clock.now) == "start"
    with session_scope(world.engine) as s:
        assert s.get_one(Person, someone).sms_opt_out_at is None
    assert len(_audit(world, "member.sms_opt_in")) == 1


async def test_stop_from_a_second_number_opts_out_only_whose_sms_go_there(
        world: World, tmp_path: Path, clock: Clock) -> None:
    """A partner's mobile is often a member's second number: their STOP is theirs alone."""
    partner = member(world, channels="sms")
    number = number_of(world, partner)
    lists_it_second = member(world, channels="sms")
    _add_mobile(world, lists_it_second, number)
    landline_only = member(world, channels="voice+sms", mobile=False)
    _add_mobile(world, landline_only, number)  # their only mobile: their SMS go there
    desk = copy_desk(world)
    assert await desk.take_reply(number, "", "STOP", "k-1", clock.now) == "stop"
    with session_scope(world.engine) as s:
        opted = {pid: s.get_one(Person, pid).sms_opt_out_at for pid in (partner, lists_it_second, landline_only)}
    assert opted == {partner: clock.now, lists_it_second: None, landline_only: clock.now}


# -- follow-ups -----------------------------------------------------------------------------------
async def test_a_follow_up_goes_to_those_who_got_the_first_by_call_or_copy(
        world: World, tmp_path: Path, clock: Clock) -> None:
    heard = member(world, channels="voice+sms")
    texted = member(world, channels="sms")
    missed = member(world, channels="sms")           # their copy of the first failed
    first = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan({Channel.SMS})
    jobs = {job.person_id: job for job in await desk.claim(5)}
    await desk.sent(jobs[texted].copy_id, "0: Accepted")
    await desk.failed(jobs[missed].copy_id, "bad number", final=True)
    call(world, first.campaign_id, heard, AttemptOutcome.ANSWERED_NO_KEY, clock.now)
    follow_up = await campaign(world, tmp_path, text="Opgelost.", follow_up_of=first.message_id)
    await desk.plan({Channel.SMS})
    assert set(copies(world, follow_up.campaign_id)) == {(heard, Channel.SMS), (texted, Channel.SMS)}


async def test_a_retraction_goes_in_writing_to_whoever_got_the_first_in_writing(
        world: World, tmp_path: Path, clock: Clock) -> None:
    by_ladder = member(world, channels="voice")                           # voice only: the ladder's SMS
    mailed = member(world, channels="sms+email", email="lid@example.be")  # text only: SMS failed, e-mail went
    heard = member(world, channels="voice")                               # heard the call: no copy
    missed = member(world, channels="sms")                                # their copy never went
    first = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world, ladder=LadderRules(True, 60.0))
    await desk.plan(BOTH)
    call(world, first.campaign_id, by_ladder, AttemptOutcome.NO_ANSWER, clock.now)
    call(world, first.campaign_id, heard, AttemptOutcome.ANSWERED_NO_KEY, clock.now)
    set_campaign(world, first.campaign_id, CampaignStatus.DONE, clock.now)
    clock.advance(seconds=60)
    await desk.plan(BOTH)
    for job in await desk.claim(10):
        if job.person_id == by_ladder or job.channel is Channel.EMAIL:
            await desk.sent(job.copy_id, "accepted")
        else:
            await desk.failed(job.copy_id, "not routable", final=True)
    retraction = await campaign(world, tmp_path, text="Vergeet het vorige bericht.", follow_up_of=first.message_id,
                                kind=MessageKind.CANCELLATION)
    await desk.plan(BOTH)
    got = {key: (c.reason, c.address) for key, c in copies(world, retraction.campaign_id).items()}
    assert got == {
        (by_ladder, Channel.SMS): (CopyReason.LADDER, number_of(world, by_ladder)),
        (mailed, Channel.SMS): (CopyReason.TEXT_ONLY, number_of(world, mailed)),  # their own choice
        (mailed, Channel.EMAIL): (CopyReason.TEXT_ONLY, "lid@example.be"),
    }
    assert heard not in {pid for pid, _ in got} and missed not in {pid for pid, _ in got}
    # Planned for good once the first message can reach nobody more in writing (its copies went an
    # hour ago; a retracted message gets no ladder).
    with session_scope(world.engine) as s:
        assert s.get_one(Campaign, retraction.campaign_id).copies_planned_at is None
    clock.advance(hours=1, seconds=1)
    await desk.plan(BOTH)
    with session_scope(world.engine) as s:
        assert s.get_one(Campaign, retraction.campaign_id).copies_planned_at == clock.now


async def test_a_follow_up_reaches_who_gets_the_first_by_a_late_ladder_sms(
        world: World, tmp_path: Path, clock: Clock) -> None:
    """The update is planned before the first message's ladder SMS went; that SMS goes two hours
    later, after an outage of the gateway: the update follows it by SMS."""
    missed = member(world, channels="voice")  # voice only: they get the first message by the ladder's SMS
    first = await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world, ladder=LadderRules(True, 900.0), ladder_margin_s=600.0)
    await desk.plan(BOTH)
    call(world, first.campaign_id, missed, AttemptOutcome.NO_ANSWER, clock.now)
    set_campaign(world, first.campaign_id, CampaignStatus.DONE, clock.now)
    update = await campaign(world, tmp_path, text="Opgelost.", follow_up_of=first.message_id)
    await desk.plan(BOTH)
    set_campaign(world, update.campaign_id, CampaignStatus.DONE, clock.now)  # nobody to call: done at once
    assert copies(world, update.campaign_id) == {}
    clock.advance(seconds=900)
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    assert job.reason is CopyReason.LADDER
    assert await desk.failed(job.copy_id, "smsbox: connection refused") is CopyStatus.QUEUED
    clock.advance(hours=2)  # the ladder's window and the update's first hour are over; the retry is not
    await desk.plan(BOTH)
    [job] = await desk.claim(5)
    await desk.sent(job.copy_id, "0: Accepted")
    await desk.plan(BOTH)
    got = copies(world, update.campaign_id)
    assert {key: c.reason for key, c in got.items()} == {(missed, Channel.SMS): CopyReason.LADDER}
    with session_scope(world.engine) as s:
        assert s.get_one(Campaign, update.campaign_id).copies_planned_at is None  # the first may still owe


async def test_a_retracted_message_gets_no_more_copies(world: World, tmp_path: Path, clock: Clock) -> None:
    waiting = member(world, channels="sms")  # a spoken message: their copy waits for the transcript
    missed = member(world, channels="voice")
    first = await campaign(world, tmp_path)
    desk = copy_desk(world, ladder=LadderRules(True, 900.0))
    await desk.plan(BOTH)
    call(world, first.campaign_id, missed, AttemptOutcome.NO_ANSWER, clock.now)
    set_campaign(world, first.campaign_id, CampaignStatus.DONE, clock.now)
    await campaign(world, tmp_path, text="Vergeet het.", follow_up_of=first.message_id,
                   kind=MessageKind.CANCELLATION)
    assert await desk.claim(5, text_wait_s=0) == []  # the claim sees it first
    clock.advance(seconds=900)  # the ladder's SMS would be due
    await desk.plan(BOTH)
    got = copies(world, first.campaign_id)
    assert set(got) == {(waiting, Channel.SMS)}
    assert (got[(waiting, Channel.SMS)].status, got[(waiting, Channel.SMS)].detail) == \
        (CopyStatus.CANCELLED, RETRACTED_DETAIL)
