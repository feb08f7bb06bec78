"""Which copies fall due, and their writing (QUEUED): the copies at a campaign's start, a follow-up's
in writing, the contact ladder's SMS, and the cancellations of stopped and retracted campaigns
(issue 17). ``CopyPlan`` is a part of ``ivr.copies.store.CopyDesk``.

Rules:
- a campaign's copies at the start (by choice, a text-only member's) are planned ONCE, with the
  members of that moment (``Campaign.copies_planned_at``, written in the same transaction); after
  that only the contact ladder is planned: its SMS ``after_s`` after a called member's calls are over
  and unconfirmed (``ivr.domain.channels``), so a finished campaign stays in the plan only while one
  can still fall due, and only for the members it called;
- a follow-up goes to those who received the first message, by call or by a copy (SENT, DELIVERED):
  on their own channels and on every channel they received the first one in writing (whoever got
  the alert by SMS gets its retraction by SMS); a retracted message gets no more copies (its queued
  ones are cancelled, no ladder);
- a follow-up's copies are planned until its first message can reach nobody more in writing
  (``CopyPlan._owing``: a ladder SMS that can still fall due, a copy queued or being sent): whoever
  gets the first message late in writing gets the follow-up on that channel too;
- a preventive message's SMS keeps the quiet hours, as its calls do: written, and not taken before
  they end (``TextCopy.retry_at``);
- a stopped campaign's queued copies are cancelled (and queued again if a re-notify runs it again).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from ivr.copies.contacts import load_contacts, written_address
from ivr.copies.rules import CopyRules
from ivr.delivery.members import (
    DIALLING,
    campaign_members,
    first_call_still_up,
    received_in_writing,
    recipients,
)
from ivr.delivery.policy import Verdict, next_step
from ivr.domain.channels import (
    Contact,
    InvalidChannels,
    LadderRules,
    copies_at_start,
    ladder_due,
    zone_defaults,
)
from ivr.domain.vocabulary import (
    AttemptOutcome,
    CampaignStatus,
    Channel,
    CopyReason,
    CopyStatus,
    MessageKind,
    MessageStatus,
    Urgency,
)
from storage.db import Desk
from storage.models import Campaign, Message, Person, PoliceZone, TextCopy

log = logging.getLogger(__name__)

#: The ``detail`` of a copy cancelled by its campaign's stop (a re-notify queues it again).
STOPPED_DETAIL = "campaign stopped"
#: The ``detail`` of a copy cancelled because its message was retracted (never queued again).
RETRACTED_DETAIL = "message retracted"


class CopyPlan(Desk):
    """The plan of ``ivr.copies.store.CopyDesk``: which copies fall due, written QUEUED."""

    clock: Callable[[], dt.datetime]
    rules: CopyRules

    async def plan(self, channels_on: Collection[Channel]) -> dt.datetime | None:
        """Write (QUEUED) every copy due now on the channels that have a gateway (``channels_on``);
        cancel the queued copies of stopped and retracted campaigns. Returns when the next copy falls
        due or may be tried again, if any is known (a ladder's delay, a preventive SMS waiting for the
        morning, the pause after a passing failure): the sender sleeps until then at most."""
        now = self.clock()
        on = set(channels_on)
        campaign_ids, soonest = await self.tx(lambda s: self._campaigns_to_plan(s, now, on))
        for campaign_id in campaign_ids:
            try:
                at = await self.tx(lambda s, cid=campaign_id: self._plan_campaign(s, cid, on, now))
            except IntegrityError:
                # Another process wrote one of these copies between our read and our insert: the unique
                # row decided, and the next pass plans from what is stored.
                log.info("campaign %d: copies planned by another process meanwhile; planned again", campaign_id)
                at = now
            except Exception:
                # One campaign that cannot be planned (a zone's broken setting, a bug) holds up no other.
                log.exception("campaign %d: its copies could not be planned; the others' are", campaign_id)
                continue
            if at is not None:
                soonest = at if soonest is None else min(soonest, at)
        return soonest

    def _campaigns_to_plan(self, s: Session, now: dt.datetime,
                           channels_on: set[Channel]) -> tuple[list[int], dt.datetime | None]:
        """Cancel and re-queue what campaigns' stops, re-notifies and retractions call for; return the
        campaigns to plan and when the next queued copy may be taken."""
        stopped = select(Campaign.id).where(Campaign.status == CampaignStatus.CANCELLED)
        count = _cancel_queued(s, stopped, STOPPED_DETAIL, now)
        if count:
            log.info("%d queued copies cancelled: their campaigns were stopped", count)
        count = _cancel_queued(s, retracted_campaigns(), RETRACTED_DETAIL, now)
        if count:
            log.info("%d queued copies cancelled: their messages were retracted", count)
        # A re-notify runs a stopped campaign again: its copies cancelled by the stop go again (the
        # claim checks opt-outs, so nobody who opted out since gets one).
        running = select(Campaign.id).where(Campaign.status.in_(DIALLING))
        again = (TextCopy.status == CopyStatus.CANCELLED, TextCopy.detail == STOPPED_DETAIL,
                 TextCopy.campaign_id.in_(running))
        if s.scalar(select(TextCopy.id).where(*again).limit(1)) is not None:
            # Queued anew: its retry time and tries count from now (``_give_up_at``), not from the first run.
            s.execute(update(TextCopy).where(*again).values(status=CopyStatus.QUEUED, failed_at=None, detail=None,
                                                             created_at=now, tries=0, retry_at=None)
                      .execution_options(synchronize_session=False))
        ladder_since = self._ladder_since(s, now)
        unplanned_since = now - dt.timedelta(seconds=self.rules.recent_s)
        done = Campaign.status == CampaignStatus.DONE
        # A follow-up is planned while its first message can still reach someone in writing: whoever
        # gets the first message by a late copy (the ladder's, a retried one) gets the follow-up too.
        owing_firsts = select(Campaign.message_id).where(Campaign.id.in_(self._owing(ladder_since, now)))
        follow_ups = select(Message.id).where(Message.kind != MessageKind.ALERT,
                                              Message.follow_up_of_id.in_(owing_firsts))
        wanted = [Campaign.status.in_(DIALLING),
                  and_(done, Campaign.copies_planned_at.is_(None), Campaign.finished_at >= unplanned_since),
                  and_(done, Campaign.message_id.in_(follow_ups))]
        if Channel.SMS in channels_on:
            wanted.append(and_(done, Campaign.copies_planned_at.is_not(None), Campaign.finished_at >= ladder_since))
        ids = list(s.scalars(select(Campaign.id).where(
            or_(*wanted), Campaign.id.not_in(retracted_campaigns())).order_by(Campaign.id)))
        next_try = s.scalar(select(func.min(TextCopy.retry_at)).where(
            TextCopy.status == CopyStatus.QUEUED, TextCopy.channel.in_(list(channels_on)), TextCopy.retry_at > now,
            TextCopy.campaign_id.not_in(stopped)))
        return ids, next_try

    def _ladder_since(self, s: Session, now: dt.datetime) -> dt.datetime:
        """A campaign that finished before this may no longer owe a ladder SMS (the longest ladder delay,
        the settings' or a zone's, plus ``ladder_margin_s``)."""
        longest = max(self.rules.ladder.after_s, s.scalar(select(func.max(PoliceZone.ladder_after_s))) or 0.0)
        return now - dt.timedelta(seconds=longest + self.rules.ladder_margin_s)

    def _owing(self, ladder_since: dt.datetime, now: dt.datetime) -> Select[tuple[int]]:
        """The campaigns that can still hand someone their message in writing: running or finished since
        ``ladder_since`` (a ladder SMS can fall due; not a retracted one's), or with a copy queued or
        being sent (a retry's pause runs for hours), or with one handed over within ``recent_s`` (a
        follow-up planned after it sees it, however late that pass comes)."""
        window = and_(Campaign.id.not_in(retracted_campaigns()), or_(
            Campaign.status.in_(DIALLING),
            and_(Campaign.status == CampaignStatus.DONE, Campaign.finished_at >= ladder_since)))
        recent = now - dt.timedelta(seconds=self.rules.recent_s)
        busy = select(TextCopy.campaign_id).where(or_(
            TextCopy.status.in_((CopyStatus.QUEUED, CopyStatus.SENDING)),
            func.coalesce(TextCopy.sent_at, TextCopy.delivered_at) >= recent))
        return select(Campaign.id).where(or_(window, Campaign.id.in_(busy)))

    def _plan_campaign(self, s: Session, campaign_id: int, channels_on: set[Channel],
                       now: dt.datetime) -> dt.datetime | None:
        """Write the campaign's copies due now on ``channels_on``; when its next one falls due (a ladder
        SMS's delay, a preventive SMS waiting for the morning), if any."""
        campaign = s.get_one(Campaign, campaign_id)
        if campaign.status not in DIALLING and campaign.status is not CampaignStatus.DONE:
            return None  # stopped since the list was read
        message = campaign.message
        urgent = message.urgency is Urgency.URGENT
        zone = message.bin.zone
        defaults = self._defaults(zone.urgent_channels, zone.preventive_channels, zone.code)
        ladder = LadderRules(self.rules.ladder.sms if zone.ladder_sms is None else zone.ladder_sms,
                             self.rules.ladder.after_s if zone.ladder_after_s is None else zone.ladder_after_s)
        existing = {(pid, channel) for pid, channel in s.execute(
            select(TextCopy.person_id, TextCopy.channel).where(TextCopy.campaign_id == campaign_id))}
        # A preventive message's SMS keeps the quiet hours (a phone buzzes as a call rings); e-mail does not.
        sms_from = now if urgent else self.rules.sms_allowed_from(now)
        soonest: dt.datetime | None = None

        def write(person_id: int, channel: Channel, reason: CopyReason, address: str) -> None:
            nonlocal soonest
            if channel not in channels_on or (person_id, channel) in existing:
                return
            wait = channel is Channel.SMS and sms_from > now
            if wait:
                soonest = sms_from if soonest is None else min(soonest, sms_from)
            s.add(TextCopy(campaign_id=campaign_id, person_id=person_id, channel=channel, reason=reason,
                           address=address, status=CopyStatus.QUEUED, created_at=now,
                           retry_at=sms_from if wait else None))
            existing.add((person_id, channel))

        if campaign.copies_planned_at is None:
            if self._copies_at_start(s, campaign, message, defaults, write, now):
                campaign.copies_planned_at = now  # once: with the members of this moment
        elif message.kind is not MessageKind.ALERT and message.follow_up_of_id is not None:
            # A re-notify of the first message may hand it to someone in writing after this was planned.
            people = recipients(s, message)
            self._follow_up_in_writing(s, message, people, load_contacts(s, people), write, now)
        if ladder.sms and Channel.SMS in channels_on:
            for pid, (due_at, number) in self._ladder(s, campaign, message, ladder, existing, now).items():
                if due_at <= now:
                    write(pid, Channel.SMS, CopyReason.LADDER, number)
                else:
                    soonest = due_at if soonest is None else min(soonest, due_at)
        s.flush()
        return soonest

    def _copies_at_start(self, s: Session, campaign: Campaign, message: Message,
                         defaults: dict[Urgency, frozenset[Channel]],
                         write: Callable[[int, Channel, CopyReason, str], None], now: dt.datetime) -> bool:
        """Write the copies that go when the campaign starts; whether they are all known (a follow-up's
        are not while its first message may still reach someone: a call up, a copy queued or being
        sent, a ladder SMS that can still fall due: ``_owing``).

        A follow-up goes to those who received the first message (``recipients``), on their own
        channels and on each channel they received the first one in writing (``received_in_writing``),
        for the reason that one went (a voice-only member who got the ladder's SMS gets the
        retraction by SMS, as the ladder's)."""
        people = recipients(s, message)
        contacts = load_contacts(s, people)
        for pid in people:
            for channel, reason, address in copies_at_start(contacts[pid], message.urgency, defaults):
                write(pid, channel, reason, address)
        still_owing = self._follow_up_in_writing(s, message, people, contacts, write, now)
        return not still_owing and not first_call_still_up(s, message)

    def _follow_up_in_writing(self, s: Session, message: Message, people: list[int], contacts: dict[int, Contact],
                              write: Callable[[int, Channel, CopyReason, str], None], now: dt.datetime) -> bool:
        """A follow-up's copies on each channel its ``people`` received the first message in writing
        (idempotent: ``write`` skips those written); whether the first campaign can still hand its
        message to someone in writing (``_owing``: planned again on the next pass)."""
        if message.kind is MessageKind.ALERT or message.follow_up_of_id is None:
            return False
        first = s.scalar(select(Campaign.id).where(Campaign.message_id == message.follow_up_of_id)
                         .order_by(Campaign.id).limit(1))
        if first is None:
            return False
        in_writing = received_in_writing(s, first)
        reasons = {(pid, channel): reason for pid, channel, reason in s.execute(
            select(TextCopy.person_id, TextCopy.channel, TextCopy.reason).where(
                TextCopy.campaign_id == first, TextCopy.person_id.in_(list(in_writing))))}
        for pid in people:
            for channel in sorted(in_writing.get(pid, ()), key=lambda c: c.value):
                address = written_address(contacts[pid], channel)
                if address is not None:
                    write(pid, channel, reasons.get((pid, channel), CopyReason.CHOICE), address)
        owing = self._owing(self._ladder_since(s, now), now).where(Campaign.id == first)
        return s.scalar(owing.limit(1)) is not None

    def _defaults(self, urgent: str | None, preventive: str | None, zone: str) -> dict[Urgency, frozenset[Channel]]:
        """A zone's default channels per urgency; the settings' when the zone's cannot be read (logged)."""
        try:
            return zone_defaults(urgent, preventive, self.rules.urgent_channels, self.rules.preventive_channels)
        except InvalidChannels as exc:
            log.error("zone %s: its default channels cannot be read (%s): the settings' are used", zone, exc)
            return zone_defaults(None, None, self.rules.urgent_channels, self.rules.preventive_channels)

    def _ladder(self, s: Session, campaign: Campaign, message: Message, ladder: LadderRules,
                existing: set[tuple[int, Channel]], now: dt.datetime) -> dict[int, tuple[dt.datetime, str]]:
        """When each called, unconfirmed member's ladder SMS falls due, and the number it goes to
        (members it never does for left out). A finished campaign's: only for the members it had
        (called, or covered by a housemate's calls and in the directory before it finished), never
        for someone who joined the BIN since."""
        policy = self.rules.policies[message.urgency is Urgency.URGENT]
        members = [m for m in campaign_members(s, campaign, message) if m.called]
        if not members:
            return {}
        views = {m.view.person_id: m.view for m in members}
        contacts = load_contacts(s, list(views))
        done = campaign.status is CampaignStatus.DONE
        joined: dict[int, dt.datetime] = {}
        if done:
            covered = [m.view.person_id for m in members if m.covered_by is not None]
            joined = {pid: at for pid, at in s.execute(
                select(Person.id, Person.created_at).where(Person.id.in_(covered)))}
        out: dict[int, tuple[dt.datetime, str]] = {}
        for member in members:
            pid = member.view.person_id
            contact = contacts.get(pid)
            if contact is None:
                continue
            if done and member.covered_by is not None and (
                    campaign.finished_at is None or joined.get(pid, now) > campaign.finished_at):
                continue  # in the BIN since the campaign finished: it is not theirs
            # A member covered by a housemate on the same line was called through the housemate's calls.
            calls = views.get(member.covered_by, member.view) if member.covered_by is not None else member.view
            tried = [a for a in calls.attempts if a.outcome is not None and a.outcome != AttemptOutcome.INTERRUPTED]
            over = done or next_step(calls, policy, now).verdict is Verdict.DONE
            ended = max((a.ended_at for a in tried if a.ended_at is not None), default=None)
            due_at = ladder_due(ladder, contact, called=bool(tried), confirmed=member.view.confirmed, calls_over=over,
                                last_call_ended=ended, has_sms_copy=(pid, Channel.SMS) in existing)
            if due_at is not None and contact.sms_number is not None:  # ladder_due wants a mobile
                out[pid] = (due_at, contact.sms_number)  # a preventive one is written to wait for the morning
        return out


def _cancel_queued(s: Session, campaigns: Select[tuple[int]], detail: str, now: dt.datetime) -> int:
    """Cancel the QUEUED copies of ``campaigns`` (a select of their ids), saying why; how many. Read
    first: most passes find none, and an UPDATE would take SQLite's write lock for nothing."""
    where = (TextCopy.status == CopyStatus.QUEUED, TextCopy.campaign_id.in_(campaigns))
    if s.scalar(select(TextCopy.id).where(*where).limit(1)) is None:
        return 0
    result = s.execute(update(TextCopy).where(*where)
                       .values(status=CopyStatus.CANCELLED, failed_at=now, detail=detail)
                       .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def retracted_campaigns() -> Select[tuple[int]]:
    """The campaigns whose message has a retraction that stands (``ivr.delivery.control.live_retraction``:
    a cancellation follow-up not rejected or cancelled)."""
    retractions = select(Message.follow_up_of_id).where(
        Message.kind == MessageKind.CANCELLATION, Message.follow_up_of_id.is_not(None),
        Message.status.not_in((MessageStatus.REJECTED, MessageStatus.CANCELLED)))
    return select(Campaign.id).where(Campaign.message_id.in_(retractions))

