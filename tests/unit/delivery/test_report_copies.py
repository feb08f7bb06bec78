"""The follow-up of written copies in a campaign's report (issue 17): per member their channels and how
their SMS and e-mail went, counts per channel by status, and the members the dialer does not call.

Rows of ``text_copies`` are written here as ``ivr.copies`` writes them, in a real SQLite database; the
report only reads them."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.config import Settings
from ivr.delivery.members import campaign_members
from ivr.delivery.policy import RetryPolicy
from ivr.delivery.report import (
    MEMBER_COLUMNS, REACH_STATES, campaign_report, channel_defaults, copy_counts, member_contacts, render_copies,
    render_progress,
)
from ivr.domain.channels import is_called
from ivr.domain.vocabulary import (
    AttemptOutcome, AttemptStatus, CampaignStatus, Channel, CopyReason, CopyStatus, Language, MessageStatus,
    PhoneRank, Role, Urgency,
)
from storage.db import session_scope
from storage.models import (
    CallAttempt, Campaign, Confirmation, Message, Person, PhoneNumber, PoliceZone, RoleAssignment, TextCopy,
)
from tests.world import World, build_world

POLICY = {True: RetryPolicy(retries=1, retry_after_s=60), False: RetryPolicy(retries=1, retry_after_s=60)}
T0 = dt.datetime(2025, 3, 4, 9, 0, tzinfo=dt.timezone.utc)
#: Every copy status at 0: the shape ``copy_counts`` always has.
ZERO = {status.value: 0 for status in CopyStatus}


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store")


def _member(world: World, name: str, numbers: tuple[str, ...] = (), *, email: str | None = None,
            channels: str | None = None, calls_opt_out: bool = False, sms_opt_out: bool = False) -> int:
    with session_scope(world.engine) as s:
        person = Person(name=name, language=Language.NL, email=email, channels=channels,
                        calls_opt_out_at=T0 if calls_opt_out else None, sms_opt_out_at=T0 if sms_opt_out else None)
        for rank, e164 in zip((PhoneRank.PRIMARY, PhoneRank.SECONDARY), numbers):
            person.phones.append(PhoneNumber(rank=rank, e164=e164))
        person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=world.bin_id))
        s.add(person)
        s.flush()
        return person.id


def _campaign(world: World, urgency: Urgency = Urgency.URGENT) -> int:
    """A running campaign of a message approved for the BIN (as the desk leaves it; nobody dialled yet)."""
    with session_scope(world.engine) as s:
        message = Message(bin_id=world.bin_id, urgency=urgency, status=MessageStatus.DELIVERING, text="Inbraak.")
        s.add(message)
        s.flush()
        campaign = Campaign(message_id=message.id, status=CampaignStatus.RUNNING, started_at=T0)
        s.add(campaign)
        s.flush()
        return campaign.id


def _copy(world: World, campaign_id: int, person_id: int, channel: Channel, status: CopyStatus,
          reason: CopyReason = CopyReason.CHOICE, address: str = "+32470000000", detail: str | None = None) -> None:
    at = T0 + dt.timedelta(seconds=30)
    with session_scope(world.engine) as s:
        s.add(TextCopy(campaign_id=campaign_id, person_id=person_id, channel=channel, reason=reason, address=address,
                       status=status, created_at=T0, detail=detail,
                       sending_at=at if status is not CopyStatus.QUEUED else None,
                       sent_at=at if status in (CopyStatus.SENT, CopyStatus.DELIVERED) else None,
                       delivered_at=at if status is CopyStatus.DELIVERED else None,
                       failed_at=at if status in (CopyStatus.FAILED, CopyStatus.BOUNCED) else None))


def _confirm(world: World, campaign_id: int, person_id: int, via: str) -> None:
    with session_scope(world.engine) as s:
        s.add(Confirmation(campaign_id=campaign_id, person_id=person_id, confirmed_at=T0 + dt.timedelta(minutes=2),
                           via=via))


def test_copies_are_counted_by_channel_and_status_and_listed_per_member(world: World) -> None:
    called = _member(world, "Gebeld", ("+32470000001",))                       # zone default: voice+sms
    mailed = _member(world, "Mail", ("+3293000002",), email="mail@example.be", channels="voice+email")
    deaf = _member(world, "Doof", ("+32470000003",), email="doof@example.be", channels="text")
    ladder = _member(world, "Ladder", ("+32470000004",), channels="voice")
    nothing = _member(world, "Niets", ("+3293000005",), channels="sms")          # no mobile: no channel left
    no_calls = _member(world, "Geen oproepen", ("+32470000006",), calls_opt_out=True)
    campaign_id = _campaign(world)
    _copy(world, campaign_id, called, Channel.SMS, CopyStatus.DELIVERED)
    _copy(world, campaign_id, mailed, Channel.EMAIL, CopyStatus.SENT, address="mail@example.be")
    _copy(world, campaign_id, deaf, Channel.SMS, CopyStatus.FAILED, CopyReason.TEXT_ONLY, detail="no route")
    _copy(world, campaign_id, deaf, Channel.EMAIL, CopyStatus.BOUNCED, CopyReason.TEXT_ONLY, "doof@example.be",
          detail="550 no such user")
    _copy(world, campaign_id, ladder, Channel.SMS, CopyStatus.DELIVERED, CopyReason.LADDER)
    _copy(world, campaign_id, no_calls, Channel.SMS, CopyStatus.QUEUED, CopyReason.TEXT_ONLY)
    _confirm(world, campaign_id, deaf, "sms")  # replied "1" to an SMS that came through after all

    expected = {"sms": {**ZERO, "queued": 1, "failed": 1, "delivered": 2}, "email": {**ZERO, "sent": 1, "bounced": 1}}
    assert copy_counts(world.engine, campaign_id) == expected
    with session_scope(world.engine) as s:
        assert copy_counts(s, campaign_id) == expected  # a session of the caller's does as well
    assert copy_counts(world.engine, campaign_id + 1) == {"sms": ZERO, "email": ZERO}

    report = campaign_report(world.engine, campaign_id, POLICY, T0)
    assert report.copies == expected and report.ladder == 1
    lines = {line.person_id: line for line in report.members}
    assert [line.person_id for line in report.members] == [called, mailed, deaf, ladder, nothing, no_calls]
    assert {pid: (line.state, line.channels, line.sms, line.email) for pid, line in lines.items()} == {
        called: ("queued", "voice+sms", "delivered", None),
        mailed: ("queued", "voice+email", None, "sent"),
        deaf: ("confirmed", "sms+email", "failed", "bounced"),
        ladder: ("queued", "voice", "delivered", None),
        nothing: ("no_channel", "", None, None),
        no_calls: ("text_only", "sms", "queued", None),
    }
    assert lines[deaf].confirmed_via == "sms" and lines[deaf].attempts == 0
    assert lines[ladder].copy("sms").reason == "ladder"  # type: ignore[union-attr]
    email = lines[deaf].copy("email")
    assert email is not None and (email.status, email.reason, email.at, email.detail) == (
        "bounced", "text_only", T0 + dt.timedelta(seconds=30), "550 no such user")
    counts = report.counts()
    assert (counts["queued"], counts["confirmed"], counts["text_only"], counts["no_channel"]) == (3, 1, 1, 1)
    assert report.copy_summary() == {**expected, "ladder": 1, "ladder_waiting": 0, "text_only": 1, "no_channel": 1}

    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert list(rows[0]) == MEMBER_COLUMNS
    by_id = {int(r["person_id"]): r for r in rows}
    assert [by_id[deaf][k] for k in ("state", "confirmed_via", "channels", "sms", "sms_reason", "sms_at", "email",
                                     "email_reason", "email_at")] == [
        "confirmed", "sms", "sms+email", "failed", "text_only", "2025-03-04T09:00:30+00:00", "bounced", "text_only",
        "2025-03-04T09:00:30+00:00"]
    assert [by_id[ladder][k] for k in ("sms", "sms_reason", "email", "email_reason", "email_at")] == [
        "delivered", "ladder", "", "", ""]
    assert [by_id[no_calls][k] for k in ("state", "channels", "sms", "sms_at")] == [
        "text_only", "sms", "queued", "2025-03-04T09:00:00+00:00"]  # queued: since it was written
    assert by_id[nothing]["state"] == "no_channel" and by_id[nothing]["channels"] == ""
    assert "mail@example.be" not in report.to_csv() and "+32470000003" not in report.to_csv()

    # The watch line: the members not called are over (nothing more comes by phone), then the copies.
    assert render_progress(campaign_id, report.status, counts, len(report.members), width=6, copies=report.copies,
                           ladder=report.ladder) == (
        f"campaign {campaign_id} (running) [###...] 3/6  confirmed 1  queued 3  text only 1  no channel 1"
        "  | SMS 1 queued, 2 delivered, 1 failed · e-mail 1 sent, 1 bounced · ladder 1")


def test_the_copies_line_says_each_copy_once_in_the_order_of_its_life() -> None:
    counts = {"sms": {**ZERO, "delivered": 10, "sent": 2, "failed": 1}, "email": {**ZERO, "sent": 8, "bounced": 1}}
    assert render_copies(counts, ladder=3) == (
        "SMS 2 sent, 10 delivered, 1 failed · e-mail 8 sent, 1 bounced · ladder 3")
    assert render_copies({"sms": ZERO, "email": {"sending": 4}}) == "e-mail 4 sending"
    assert render_copies({"sms": ZERO, "email": ZERO}) == ""
    assert render_copies({"sms": {"delivered": 1}}, ladder=1, ladder_waiting=2, ladder_due_at=T0) == (
        "SMS 1 delivered · ladder 1 (+2 due by 09:00:00 UTC)")
    # Without copies the watch line is what it always was.
    assert render_progress(1, "done", {"confirmed": 2}, 2, width=4, copies={"sms": ZERO, "email": ZERO}) == (
        "campaign 1 (done) [####] 2/2  confirmed 2")


def test_who_is_called_follows_the_zone_as_the_dialer_decides(world: World) -> None:
    chose_voice = _member(world, "Koos oproep", ("+32470000011",), channels="voice")
    default = _member(world, "Standaard", ("+32470000012",), email="std@example.be")
    no_number = _member(world, "Geen nummer", email="geen@example.be")
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).preventive_channels = "email"  # this zone writes preventive news
    preventive = _campaign(world, Urgency.PREVENTIVE)
    urgent = _campaign(world, Urgency.URGENT)

    def states(campaign_id: int, settings: Settings | None = None) -> dict[int, tuple[str, str]]:
        report = campaign_report(world.engine, campaign_id, POLICY, T0, settings)
        return {line.person_id: (line.state, line.channels) for line in report.members}

    assert states(preventive) == {chose_voice: ("queued", "voice"), default: ("text_only", "email"),
                                  no_number: ("text_only", "email")}
    assert states(urgent) == {chose_voice: ("queued", "voice"), default: ("queued", "voice+sms"),
                              no_number: ("no_channel", "")}  # urgent by default: a call and an SMS, neither possible
    # Where the zone sets nothing, the settings' default gives the channels.
    assert states(urgent, Settings(copy_channels_urgent="voice+email")) == {
        chose_voice: ("queued", "voice"), default: ("queued", "voice+email"), no_number: ("text_only", "email")}
    # The report's "not called" is the dialer's own decision, member by member: those its plan leaves out.
    with session_scope(world.engine) as s:
        for campaign_id in (preventive, urgent):
            campaign = s.get_one(Campaign, campaign_id)
            planned = {m.view.person_id for m in campaign_members(s, campaign, campaign.message) if m.called}
            contacts = member_contacts(s, [chose_voice, default, no_number])
            defaults = channel_defaults(campaign.message, Settings())
            report = campaign_report(world.engine, campaign_id, POLICY, T0)
            not_called = {pid for pid, contact in contacts.items()
                          if not is_called(contact, campaign.message.urgency, defaults)}
            assert {line.person_id for line in report.members if line.state in REACH_STATES} == not_called \
                == {chose_voice, default, no_number} - planned
            # The channels shown name voice exactly for those the dialer calls.
            assert {line.person_id for line in report.members if "voice" in line.channels.split("+")} == planned


def test_a_member_who_opts_out_of_calls_between_two_calls_is_not_waited_for(world: World) -> None:
    waiting = _member(world, "Wacht", ("+32470000021",))
    over = _member(world, "Bezet", ("+32470000022",))
    campaign_id = _campaign(world)
    with session_scope(world.engine) as s:
        for pid, outcome, no in ((waiting, AttemptOutcome.NO_ANSWER, 1), (over, AttemptOutcome.BUSY, 1),
                                 (over, AttemptOutcome.BUSY, 2)):
            e164 = s.scalars(select(PhoneNumber.e164).where(PhoneNumber.person_id == pid)).one()
            s.add(CallAttempt(campaign_id=campaign_id, person_id=pid, attempt_no=no, e164=e164, outcome=outcome,
                              status=AttemptStatus.ENDED, dial_outcome=outcome.value, dialled_at=T0,
                              ended_at=T0 + dt.timedelta(seconds=30)))
    before = {line.person_id: line.state for line in campaign_report(world.engine, campaign_id, POLICY, T0).members}
    assert before == {waiting: "waiting_retry", over: "busy"}
    with session_scope(world.engine) as s:
        for pid in (waiting, over):
            s.get_one(Person, pid).calls_opt_out_at = T0 + dt.timedelta(minutes=1)
    report = campaign_report(world.engine, campaign_id, POLICY, T0)
    # The retry will not come: the member gets their SMS only. A member whose calls were over keeps how they ended.
    assert {line.person_id: (line.state, line.attempts, line.channels) for line in report.members} == {
        waiting: ("text_only", 1, "sms"), over: ("busy", 2, "sms")}


def test_the_ladders_sms_still_to_come_are_counted_with_when_the_last_falls_due(world: World) -> None:
    unheard = _member(world, "Niet bereikt", ("+32470000031",), channels="voice")
    got_it = _member(world, "Al sms", ("+32470000032",), channels="voice")
    confirmed = _member(world, "Bevestigd", ("+32470000033",), channels="voice")
    landline = _member(world, "Vaste lijn", ("+3293000034",), channels="voice")
    still_called = _member(world, "Nog te bellen", ("+32470000035",), channels="voice")
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).ladder_after_s = 600.0
    campaign_id = _campaign(world)
    ends = {unheard: [T0 + dt.timedelta(seconds=30), T0 + dt.timedelta(seconds=130)],
            got_it: [T0 + dt.timedelta(seconds=40), T0 + dt.timedelta(seconds=140)],
            confirmed: [T0 + dt.timedelta(seconds=50)], landline: [T0 + dt.timedelta(seconds=60),
                                                                   T0 + dt.timedelta(seconds=160)],
            still_called: [T0 + dt.timedelta(seconds=70)]}
    with session_scope(world.engine) as s:
        for pid, ended in ends.items():
            e164 = s.scalars(select(PhoneNumber.e164).where(PhoneNumber.person_id == pid)).one()
            for no, at in enumerate(ended, start=1):
                outcome = AttemptOutcome.CONFIRMED if pid == confirmed else AttemptOutcome.NO_ANSWER
                s.add(CallAttempt(campaign_id=campaign_id, person_id=pid, attempt_no=no, e164=e164, outcome=outcome,
                                  status=AttemptStatus.ENDED, dial_outcome="answered" if pid == confirmed
                                  else "no_answer", dialled_at=at - dt.timedelta(seconds=25), ended_at=at))
    _confirm(world, campaign_id, confirmed, "call")
    _copy(world, campaign_id, got_it, Channel.SMS, CopyStatus.SENT, CopyReason.LADDER)
    now = T0 + dt.timedelta(seconds=200)
    report = campaign_report(world.engine, campaign_id, POLICY, now)
    states = {line.person_id: line.state for line in report.members}
    assert states == {unheard: "no_answer", got_it: "no_answer", confirmed: "confirmed", landline: "no_answer",
                      still_called: "waiting_retry"}
    # Only the member whose calls are over, unconfirmed, with a mobile and no SMS yet: 600 s after their last call.
    assert (report.ladder, report.ladder_waiting, report.ladder_due_at) == (1, 1, T0 + dt.timedelta(seconds=730))
    assert render_copies(report.copies, report.ladder, report.ladder_waiting, report.ladder_due_at) == (
        "SMS 1 sent · ladder 1 (+1 due by 09:12:10 UTC)")
    # A zone without the ladder waits for none, nor do settings without it where the zone says nothing;
    # nor does a stopped campaign.
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).ladder_sms = False
    assert campaign_report(world.engine, campaign_id, POLICY, now).ladder_waiting == 0
    with session_scope(world.engine) as s:
        zone = s.get_one(PoliceZone, world.zone_id)
        zone.ladder_sms = zone.ladder_after_s = None
    assert campaign_report(world.engine, campaign_id, POLICY, now, Settings(ladder_sms=False)).ladder_waiting == 0
    assert campaign_report(world.engine, campaign_id, POLICY, now, Settings(ladder_after_s=60.0)).ladder_due_at == \
        T0 + dt.timedelta(seconds=190)
    with session_scope(world.engine) as s:
        s.get_one(Campaign, campaign_id).status = CampaignStatus.CANCELLED
    assert campaign_report(world.engine, campaign_id, POLICY, now).ladder_waiting == 0


def test_a_done_campaigns_members_have_their_calls_over_for_the_ladder(world: World) -> None:
    """The copy engine's rule: once the campaign is done, every called member's calls are over, even one
    whose retry never came (a preventive member whose calls expired shows as waiting a retry): their
    ladder SMS is counted as to come, and when it may go (a preventive one: after the quiet hours)."""
    expired = _member(world, "Verlopen", ("+32470000041",), channels="voice")
    campaign_id = _campaign(world, Urgency.PREVENTIVE)
    late = dt.datetime(2025, 3, 4, 20, 0, tzinfo=dt.timezone.utc)  # 21:00 in Brussels: the quiet hours begin
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).ladder_after_s = 60.0
        s.add(CallAttempt(campaign_id=campaign_id, person_id=expired, attempt_no=1, e164="+32470000041",
                          outcome=AttemptOutcome.NO_ANSWER, status=AttemptStatus.ENDED, dial_outcome="no_answer",
                          dialled_at=late - dt.timedelta(seconds=30), ended_at=late))
    now = late + dt.timedelta(seconds=10)
    running = campaign_report(world.engine, campaign_id, POLICY, now)
    assert [line.state for line in running.members] == ["waiting_retry"] and running.ladder_waiting == 0
    with session_scope(world.engine) as s:
        s.get_one(Campaign, campaign_id).status = CampaignStatus.DONE
    done = campaign_report(world.engine, campaign_id, POLICY, now)
    assert (done.ladder_waiting, done.ladder_due_at) == (1, late + dt.timedelta(seconds=60))
    assert done.ladder_sends_at == dt.datetime(2025, 3, 5, 7, 0, tzinfo=dt.timezone.utc)  # 08:00 in Brussels


def test_a_follow_up_goes_to_whoever_received_the_first_by_phone_or_in_writing(world: World) -> None:
    """Issue 17: a retraction goes to those who heard the first message and to those who got it in writing
    (a copy sent or delivered); one who got it in writing only is not called for it (it reaches them in
    writing, on the channels the first did), and the report lists them so."""
    from ivr.delivery.members import received_in_writing, recipients
    from ivr.domain.vocabulary import MessageKind

    heard = _member(world, "Gehoord", ("+32470000051",))
    texted = _member(world, "Tekst", ("+32470000052",), channels="sms")
    ladder = _member(world, "Ladder", ("+32470000053",), channels="voice")
    replied = _member(world, "Antwoordde", ("+32470000054",), channels="voice")
    bounced = _member(world, "Onbestelbaar", ("+3293000055",), email="x@example.be", channels="email")
    nothing = _member(world, "Niets", ("+32470000056",))
    first = _campaign(world)
    with session_scope(world.engine) as s:
        s.get_one(Campaign, first).status = CampaignStatus.DONE
        for pid, outcome in ((heard, AttemptOutcome.VOICEMAIL), (ladder, AttemptOutcome.NO_ANSWER),
                             (replied, AttemptOutcome.NO_ANSWER), (nothing, AttemptOutcome.NO_ANSWER)):
            e164 = s.scalars(select(PhoneNumber.e164).where(PhoneNumber.person_id == pid)).one()
            s.add(CallAttempt(campaign_id=first, person_id=pid, attempt_no=1, e164=e164, outcome=outcome,
                              status=AttemptStatus.ENDED, dial_outcome="answered", dialled_at=T0, ended_at=T0))
    _copy(world, first, texted, Channel.SMS, CopyStatus.DELIVERED, CopyReason.TEXT_ONLY)
    _copy(world, first, ladder, Channel.SMS, CopyStatus.SENT, CopyReason.LADDER)
    _copy(world, first, replied, Channel.SMS, CopyStatus.DELIVERED, CopyReason.LADDER)
    _copy(world, first, bounced, Channel.EMAIL, CopyStatus.BOUNCED, CopyReason.TEXT_ONLY, "x@example.be")
    _copy(world, first, nothing, Channel.SMS, CopyStatus.FAILED, CopyReason.LADDER)
    _confirm(world, first, replied, "sms")  # replied "1" to the ladder's SMS: received, in writing
    with session_scope(world.engine) as s:
        first_message = s.get_one(Campaign, first).message
        retraction = Message(bin_id=world.bin_id, urgency=Urgency.URGENT, status=MessageStatus.DELIVERING,
                             text="Vergeet het vorige bericht.", kind=MessageKind.CANCELLATION,
                             follow_up_of_id=first_message.id)
        s.add(retraction)
        s.flush()
        follow_up = Campaign(message_id=retraction.id, status=CampaignStatus.RUNNING, started_at=T0)
        s.add(follow_up)
        s.flush()
        assert received_in_writing(s, first) == {texted: {Channel.SMS}, ladder: {Channel.SMS},
                                                 replied: {Channel.SMS}}
        assert recipients(s, retraction) == sorted([heard, texted, ladder, replied])
        assert {m.view.person_id: m.called for m in campaign_members(s, follow_up, retraction)} == {
            heard: True, texted: False, ladder: False, replied: False}
        follow_up_id = follow_up.id
    report = campaign_report(world.engine, follow_up_id, POLICY, T0 + dt.timedelta(minutes=5))
    assert {line.person_id: (line.state, line.channels) for line in report.members} == {
        heard: ("queued", "voice+sms"), texted: ("text_only", "sms"), ladder: ("text_only", "sms"),
        replied: ("text_only", "sms")}
