"""The copy desk: every database step of the SMS and e-mail copies (issue 17), each one transaction.

Rules:
- a copy is written (QUEUED) before it is sent, its id the idempotency key towards Kannel and the
  SMTP relay; the unique (campaign, member, channel) makes a second copy impossible, whichever
  process or restart plans it;
- a campaign's copies at the start (by choice, a text-only member's) are planned ONCE, with the
  members of that moment (``Campaign.copies_planned_at``, written in the same transaction); after
  that only the contact ladder is planned: its SMS ``after_s`` after a called member's calls are over
  and unconfirmed (``ivr.domain.channels``), so a finished campaign stays in the plan only while one
  can still fall due, and only for the members it called;
- a follow-up goes to those who received the first message, by call or by a copy (SENT, DELIVERED):
  on their own channels and on every channel they received the first one in writing (whoever got
  the alert by SMS gets its retraction by SMS); a retracted message gets no more copies (its queued
  ones are cancelled, no ladder);
- a preventive message's SMS keeps the quiet hours, as its calls do: written, and not taken before
  they end (``TextCopy.retry_at``);
- a stopped campaign's queued copies are cancelled (and queued again if a re-notify runs it again);
- a follow-up's copies are planned until its first message can reach nobody more in writing
  (``CopyDesk._owing``: a ladder SMS that can still fall due, a copy queued or being sent): whoever
  gets the first message late in writing gets the follow-up on that channel too;
- a copy moves by conditional UPDATEs only (``claim``: QUEUED -> SENDING; a delivery report never
  moves a final state back), so two senders never take the same copy and a late answer never undoes
  a later one; the claim checks again what may have changed since the copy was written (an opt-out,
  a member who left the BIN, a confirmation that makes a ladder SMS pointless, a retraction);
- a passing failure is tried again after a growing pause (30 s, doubling, at most 10 min) until
  ``retry_for_s`` after the copy was queued, so an outage of the gateway or relay is waited out;
- the recording attached to an e-mail is audited (``recording.emailed``) in the transaction that
  opens it, so the row is committed before the path is handed back;
- a member's SMS reply is taken once (unique ``gateway_ref``): "1"/"OK" confirms the newest campaign
  that sent that very number an SMS copy or called it (``Confirmation``, which the dialer reads: their
  calls stop; unverified: a sender's number can be faked), "STOP"/"START" set or clear the SMS opt-out
  of whoever gets their SMS on that number; each is audited.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from ivr.delivery.members import (
    DIALLING,
    RECEIVED_COPIES,
    campaign_members,
    first_call_still_up,
    received_in_writing,
    recipients,
)
from ivr.delivery.policy import RetryPolicy, Verdict, Window, next_allowed, next_step
from ivr.domain.channels import (
    Contact,
    InvalidChannels,
    LadderRules,
    copies_at_start,
    ladder_due,
    mask_email,
    parse_channels,
    reply_action,
    zone_defaults,
)
from ivr.domain.phone import mask
from ivr.domain.vocabulary import (
    AttemptOutcome,
    AttemptStatus,
    CampaignStatus,
    Channel,
    CopyReason,
    CopyStatus,
    MessageKind,
    MessageStatus,
    PhoneRank,
    Role,
    Urgency,
)
from storage import audit
from storage.db import Desk
from storage.models import (
    CallAttempt,
    Campaign,
    Confirmation,
    Message,
    Person,
    PhoneNumber,
    PoliceZone,
    Recording,
    RoleAssignment,
    SmsReply,
    TextCopy,
    Transcript,
    utcnow,
)
from storage.recordings import RecordingCorrupted, RecordingStore
from storage.sealed import SealError, open_transcript

if TYPE_CHECKING:
    from ivr.config import Settings

log = logging.getLogger(__name__)

#: Copy statuses nothing moves out of (a delivery report, a late answer).
FINAL = frozenset({CopyStatus.DELIVERED, CopyStatus.FAILED, CopyStatus.BOUNCED, CopyStatus.CANCELLED})
#: The ``detail`` of a copy cancelled by its campaign's stop (a re-notify queues it again).
STOPPED_DETAIL = "campaign stopped"
#: The ``detail`` of a copy cancelled because its message was retracted (never queued again).
RETRACTED_DETAIL = "message retracted"
#: Kannel's delivery report types (``%d``): 1 delivered to the phone, 2 undelivered, 4 queued on the
#: SMSC, 8 delivered to the SMSC, 16 rejected by the SMSC.
DLR_DELIVERED, DLR_UNDELIVERED, DLR_QUEUED, DLR_SMSC, DLR_REJECTED = 1, 2, 4, 8, 16
_DLR_WORDS = {DLR_DELIVERED: "delivered", DLR_UNDELIVERED: "undelivered", DLR_QUEUED: "queued on the SMSC",
              DLR_SMSC: "delivered to the SMSC", DLR_REJECTED: "rejected by the SMSC"}
#: How long after it was sent (or its member was called) an SMS reply "1" still confirms a campaign.
REPLY_WINDOW = dt.timedelta(hours=48)
#: The pause after a copy's first passing failure; it doubles with each further one, up to the cap.
RETRY_FIRST = dt.timedelta(seconds=30)
RETRY_CAP = dt.timedelta(minutes=10)
DETAIL_CHARS = 200


def retry_pause(tries: int) -> dt.timedelta:
    """How long a copy waits after its ``tries``-th hand-over failed for a passing reason: 30 s,
    1 min, 2 min, ... at most 10 min (a gateway that is down is not hammered, and the copy still goes
    within minutes of its coming back)."""
    doublings = min(max(tries, 1) - 1, 16)
    return min(RETRY_FIRST * (2 ** doublings), RETRY_CAP)


@dataclass(frozen=True)
class CopyRules:
    """What the plan needs beyond the database: the settings' defaults (a zone may set its own)."""

    #: The channels of a member who chose none, per urgency (``copy_channels_urgent`` / ``_preventive``).
    urgent_channels: str = "voice+sms"
    preventive_channels: str = "voice+email"
    #: The contact ladder (``ladder_sms``, ``ladder_after_s``).
    ladder: LadderRules = LadderRules(True, 900.0)
    #: The dialer's retry policies by urgency (``True``: urgent): when a member's calls are over.
    policies: dict[bool, RetryPolicy] = field(default_factory=lambda: {True: RetryPolicy(), False: RetryPolicy()})
    #: A copy whose hand-over fails for a passing reason is tried again until this long after it was
    #: queued (``copy_retry_for_s``) ...
    retry_for_s: float = 6 * 3600.0
    #: ... and at most this many hand-overs in all (``copy_max_tries``).
    max_tries: int = 50
    #: A campaign that finished before its copies at the start were planned (every member text only:
    #: it is done at once) is still planned this long after it finished.
    recent_s: float = 3600.0
    #: A finished campaign's ladder is planned until this long after its last ladder SMS could fall
    #: due (its finish plus the longest ``ladder_after_s``): the time a sender that was down has to
    #: catch up.
    ladder_margin_s: float = 3600.0
    #: Local hours in which a preventive message's SMS may go (its calls keep the same).
    allowed_hours: Window = Window(dt.time(8), dt.time(21))
    tz: dt.tzinfo = dt.timezone.utc
    #: The sent take goes with e-mail copies (``email_attach_audio``).
    attach_audio: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> CopyRules:
        """The rules of ``settings``."""
        from ivr.delivery.policy import retry_policies

        quiet_start, quiet_end = settings.quiet_hours.split("-")
        return cls(settings.copy_channels_urgent, settings.copy_channels_preventive,
                   LadderRules(settings.ladder_sms, settings.ladder_after_s), retry_policies(settings),
                   retry_for_s=settings.copy_retry_for_s, max_tries=settings.copy_max_tries,
                   allowed_hours=Window.parse(f"{quiet_end}-{quiet_start}"), tz=settings.tz,
                   attach_audio=settings.email_attach_audio)


@dataclass(frozen=True)
class CopyJob:
    """A claimed copy (SENDING) and everything its composition needs."""

    copy_id: str
    channel: Channel
    reason: CopyReason
    #: The mobile number (E.164) or e-mail address.
    address: str
    #: Hand-overs tried, this one included.
    tries: int
    person_id: int
    #: The member's language (nl, fr, de).
    language: str
    campaign_id: int
    message_id: int
    kind: MessageKind
    urgency: Urgency
    drill: bool
    bin_number: int
    bin_name: str
    #: The typed text of a message given in writing.
    text: str | None
    #: The speech recogniser's transcript of the sent take (``None``: none, or not trusted).
    transcript: str | None
    #: The sent take as a plain WAV (e-mail only: it is attached).
    recording: Path | None
    #: The copy was left SENDING by a previous process and is sent again (same id, same Message-ID).
    resumed: bool = False


@dataclass(frozen=True)
class Orphan:
    """A copy a previous process left SENDING: its hand-over may or may not have happened."""

    copy_id: str
    channel: Channel
    #: When it was handed to its gateway; ``None``: an SMS claimed that never reached Kannel (it
    #: waited for its pace token), so it goes again at once.
    sending_at: dt.datetime | None


class CopyDesk(Desk):
    """The database side of the written copies."""

    def __init__(self, engine: Engine, recordings: RecordingStore, clock: Callable[[], dt.datetime] = utcnow,
                 rules: CopyRules | None = None) -> None:
        super().__init__(engine)
        self.recordings = recordings
        self.clock = clock
        self.rules = rules or CopyRules()

    # -- the plan -----------------------------------------------------------------------------
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
        count = _cancel_queued(s, _retracted_campaigns(), RETRACTED_DETAIL, now)
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
            or_(*wanted), Campaign.id.not_in(_retracted_campaigns())).order_by(Campaign.id)))
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
        ``ladder_since`` (a ladder SMS can fall due; not a retracted one's), with a copy queued or being
        sent (a retry's pause runs for hours), or with one handed over within ``recent_s`` (a follow-up
        planned after it sees it, however late that pass comes)."""
        window = and_(Campaign.id.not_in(_retracted_campaigns()), or_(
            Campaign.status.in_(DIALLING),
            and_(Campaign.status == CampaignStatus.DONE, Campaign.finished_at >= ladder_since)))
        recent = now - dt.timedelta(seconds=self.rules.recent_s)
        busy = select(TextCopy.campaign_id).where(or_(
            TextCopy.status.in_((CopyStatus.QUEUED, CopyStatus.SENDING)),
            func.coalesce(TextCopy.sent_at, TextCopy.delivered_at) >= recent))
        return select(Campaign.id).where(or_(window, Campaign.id.in_(busy)))

    def _plan_campaign(self, s: Session, campaign_id: int, channels_on: set[Channel],
                       now: dt.datetime) -> dt.datetime | None:
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
        sms_from = now if urgent else self._allowed(now)
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
                address = _written_address(contacts[pid], channel)
                if address is not None:
                    write(pid, channel, reasons.get((pid, channel), CopyReason.CHOICE), address)
        owing = self._owing(self._ladder_since(s, now), now).where(Campaign.id == first)
        return s.scalar(owing.limit(1)) is not None

    def _defaults(self, urgent: str | None, preventive: str | None, zone: str) -> dict[Urgency, frozenset[Channel]]:
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

    def _allowed(self, at: dt.datetime) -> dt.datetime:
        """The first moment at or after ``at`` inside the allowed hours (a preventive message's SMS)."""
        local = next_allowed(at.astimezone(self.rules.tz), [self.rules.allowed_hours])
        return local.astimezone(dt.timezone.utc)

    # -- sending ------------------------------------------------------------------------------
    async def orphans(self, older_than: dt.datetime | None = None) -> list[Orphan]:
        """Copies left SENDING, oldest first: at start (by a process that died during the hand-over),
        or, with ``older_than``, those handed over before it whose answer never came (a hand-over
        that may have reached the gateway, ``SendUncertain``), for the sender to settle. An SMS claimed
        but not yet handed over (``sending_at`` NULL) counts from its claim (``retry_at``, see ``claim``)."""
        def work(s: Session) -> list[Orphan]:
            query = select(TextCopy.id, TextCopy.channel, TextCopy.sending_at).where(
                TextCopy.status == CopyStatus.SENDING)
            if older_than is not None:
                query = query.where(or_(TextCopy.sending_at < older_than, and_(
                    TextCopy.sending_at.is_(None), or_(TextCopy.retry_at.is_(None), TextCopy.retry_at < older_than))))
            oldest_first = func.coalesce(TextCopy.sending_at, TextCopy.retry_at)
            return [Orphan(cid, channel, at) for cid, channel, at in s.execute(query.order_by(oldest_first))]
        return await self.tx(work)

    async def claim(self, limit: int, *, channels: Collection[Channel] = (Channel.SMS, Channel.EMAIL),
                    orphans: Collection[str] = (), text_wait_s: float = 120.0) -> list[CopyJob]:
        """Take up to ``limit`` copies to send (SENDING, ``tries`` + 1), each by a conditional UPDATE
        so no two senders take the same: first the ``orphans`` given (copies left SENDING by a previous
        process, still SENDING: no delivery report came for them), then QUEUED copies on ``channels``
        of campaigns not stopped whose pause is over (``retry_at``), urgent messages' first, then the
        oldest. A copy whose message has neither typed text nor a transcript yet waits up to
        ``text_wait_s`` after it was queued. What changed since a copy was written is checked again
        (``_void``): it is cancelled instead when its member opted out of its channel, left the BIN
        or was deactivated, its message was retracted, or (a ladder SMS) its member confirmed; a
        preventive message's SMS inside the quiet hours stays QUEUED until they end (an orphan one
        is QUEUED again for then: a delivery report that comes meanwhile still settles it).

        An SMS is claimed with ``sending_at`` NULL (its claim time in ``retry_at``): it waits for its
        pace token, and ``handing`` stamps ``sending_at`` just before Kannel gets it, so an SMS left
        SENDING with ``sending_at`` NULL is known never to have reached Kannel."""
        def work(s: Session) -> list[CopyJob]:
            now = self.clock()
            jobs: list[CopyJob] = []
            allowed_from: dt.datetime | None = None

            def taken(channel: Channel) -> dict[str, object]:
                # An SMS is stamped when it is handed to Kannel (``handing``), after its pace token.
                if channel is Channel.SMS:
                    return {"status": CopyStatus.SENDING, "sending_at": None, "retry_at": now,
                            "tries": TextCopy.tries + 1}
                return {"status": CopyStatus.SENDING, "sending_at": now, "tries": TextCopy.tries + 1}

            for copy_id in orphans:
                if len(jobs) >= limit:
                    break
                row = s.get(TextCopy, copy_id)
                if row is None or row.status is not CopyStatus.SENDING:
                    continue
                why = self._void(s, [copy_id]).get(copy_id)
                if why is not None:
                    self._move(s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.CANCELLED, failed_at=now,
                               detail=f"{why} (its last hand-over, cut short, may have reached them)"[:DETAIL_CHARS])
                    continue
                if row.tries >= self.rules.max_tries or now >= self._give_up_at(s, row):
                    self._move(s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.FAILED, failed_at=now,
                               detail=f"no answer from the gateway ({row.tries} tries, the last cut short)")
                    continue
                if row.channel is Channel.SMS and not self._urgent(s, row.campaign_id):
                    allowed_from = allowed_from or self._allowed(now)
                    if allowed_from > now:  # the quiet hours: it goes when they end
                        self._move(s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.QUEUED,
                                   retry_at=allowed_from)
                        continue
                if self._move(s, copy_id, (CopyStatus.SENDING,), **taken(row.channel)):
                    job = self._job(s, copy_id, resumed=True)
                    if job is not None:
                        jobs.append(job)
            if len(jobs) >= limit:
                return jobs
            queued = (TextCopy.status == CopyStatus.QUEUED, TextCopy.channel.in_(list(channels)),
                      or_(TextCopy.retry_at.is_(None), TextCopy.retry_at <= now),
                      TextCopy.campaign_id.not_in(select(Campaign.id).where(
                          Campaign.status == CampaignStatus.CANCELLED)))
            # Copies of a message with no words yet wait (its transcript may come), without holding up
            # the copies of other campaigns behind them.
            waiting = [cid for cid in s.scalars(select(TextCopy.campaign_id).where(*queued).distinct())
                       if not _has_words(s, cid)]
            waited = now - dt.timedelta(seconds=text_wait_s)
            urgent_first = case((Message.urgency == Urgency.URGENT, 0), else_=1)
            candidates = s.execute(
                select(TextCopy.id, TextCopy.channel, Message.urgency)
                .join(Campaign, Campaign.id == TextCopy.campaign_id).join(Message, Message.id == Campaign.message_id)
                .where(*queued, or_(TextCopy.campaign_id.not_in(waiting), TextCopy.created_at <= waited))
                .order_by(urgent_first, TextCopy.created_at, TextCopy.id).limit(max(4 * limit, 50))).all()
            void = self._void(s, [copy_id for copy_id, _, _ in candidates])
            for copy_id, channel, urgency in candidates:
                if len(jobs) >= limit:
                    break
                why = void.get(copy_id)
                if why is not None:
                    self._move(s, copy_id, (CopyStatus.QUEUED,), status=CopyStatus.CANCELLED, failed_at=now,
                               detail=why[:DETAIL_CHARS])
                    continue
                if channel is Channel.SMS and urgency is not Urgency.URGENT:
                    allowed_from = allowed_from or self._allowed(now)
                    if allowed_from > now:  # the quiet hours: it goes when they end
                        self._move(s, copy_id, (CopyStatus.QUEUED,), retry_at=allowed_from)
                        continue
                if self._move(s, copy_id, (CopyStatus.QUEUED,), **taken(channel)):
                    job = self._job(s, copy_id, resumed=False)
                    if job is not None:
                        jobs.append(job)
            return jobs
        return await self.tx(work)

    @staticmethod
    def _void(s: Session, copy_ids: list[str]) -> dict[str, str]:
        """The copies among ``copy_ids`` that must no longer go, and why: their member opted out of
        the channel, is no longer an active member of the message's BIN, confirmed (a ladder SMS: it
        asks for the confirmation), or their message was retracted."""
        if not copy_ids:
            return {}
        rows = s.execute(
            select(TextCopy.id, TextCopy.person_id, TextCopy.channel, TextCopy.reason, TextCopy.campaign_id,
                   Message.bin_id, Person.active, Person.sms_opt_out_at, Person.email_opt_out_at)
            .join(Campaign, Campaign.id == TextCopy.campaign_id).join(Message, Message.id == Campaign.message_id)
            .join(Person, Person.id == TextCopy.person_id).where(TextCopy.id.in_(copy_ids))).all()
        people = sorted({row.person_id for row in rows})
        members = set(s.execute(select(RoleAssignment.person_id, RoleAssignment.bin_id).where(
            RoleAssignment.role == Role.MEMBER, RoleAssignment.person_id.in_(people))).tuples())
        ladder = {(row.campaign_id, row.person_id) for row in rows if row.reason is CopyReason.LADDER}
        confirmed = set(s.execute(select(Confirmation.campaign_id, Confirmation.person_id).where(
            Confirmation.person_id.in_(sorted({pid for _, pid in ladder})),
            Confirmation.campaign_id.in_(sorted({cid for cid, _ in ladder})))).tuples()) if ladder else set()
        retracted = set(s.scalars(_retracted_campaigns().where(
            Campaign.id.in_(sorted({row.campaign_id for row in rows})))))
        out: dict[str, str] = {}
        for row in rows:
            opted_out = row.sms_opt_out_at if row.channel is Channel.SMS else row.email_opt_out_at
            if row.campaign_id in retracted:
                out[row.id] = RETRACTED_DETAIL
            elif opted_out is not None:
                out[row.id] = f"member opted out of {row.channel.value}"
            elif not row.active or (row.person_id, row.bin_id) not in members:
                out[row.id] = "no longer an active member of the BIN"
            elif (row.campaign_id, row.person_id) in confirmed:
                out[row.id] = "member confirmed (the ladder's SMS is not needed)"
        return out

    def _give_up_at(self, s: Session, row: TextCopy) -> dt.datetime:
        """When a copy's passing failures are no longer tried again: ``retry_for_s`` after it was
        queued, or after the quiet hours it was queued in (a preventive message's SMS waits for them)."""
        start = row.created_at
        if row.channel is Channel.SMS and not self._urgent(s, row.campaign_id):
            start = self._allowed(start)
        return start + dt.timedelta(seconds=self.rules.retry_for_s)

    @staticmethod
    def _urgent(s: Session, campaign_id: int) -> bool:
        return s.scalar(select(Message.urgency).join(Campaign, Campaign.message_id == Message.id)
                        .where(Campaign.id == campaign_id)) is Urgency.URGENT

    async def handing(self, copy_id: str) -> bool:
        """An SMS is about to be handed to Kannel: stamp ``sending_at`` (only while SENDING). Whether
        it may go (``False``: settled meanwhile, e.g. by a delivery report)."""
        def work(s: Session) -> bool:
            return self._move(s, copy_id, (CopyStatus.SENDING,), sending_at=self.clock())
        return await self.tx(work)

    def _job(self, s: Session, copy_id: str, *, resumed: bool) -> CopyJob | None:
        """What the claimed copy needs to be composed; ``None`` (the copy failed for good) when the
        e-mail's recording cannot be opened. The recording is opened (and audited) only when e-mail
        copies carry it (``attach_audio``)."""
        row = s.get_one(TextCopy, copy_id)
        s.refresh(row)
        campaign = s.get_one(Campaign, row.campaign_id)
        message = campaign.message
        person = s.get_one(Person, row.person_id)
        take = next((r for r in message.recordings if r.take == message.submitted_take), None)
        transcript = None
        if take is not None:
            stored = s.scalars(select(Transcript).where(Transcript.recording_id == take.id)).first()
            if stored is not None and not stored.uncertain:  # an uncertain one is kept, never sent
                try:
                    transcript = open_transcript(self.recordings.key, take.id, stored.text, stored.words).text or None
                except SealError as exc:
                    log.error("message %d: its transcript does not open (%s): copy %s goes without it",
                              message.id, exc, copy_id)
        recording = None
        if row.channel is Channel.EMAIL and take is not None and self.rules.attach_audio:
            try:
                recording = self.recordings.open_verified(Path(take.path), take.sha256)
            except RecordingCorrupted as exc:
                log.error("copy %s: message %d's recording is unusable: %s", copy_id, message.id, exc)
                self._move(s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.FAILED, failed_at=self.clock(),
                           detail=f"recording unusable: {exc}"[:DETAIL_CHARS])
                return None
            # The recording leaves for a member's mailbox: audited before its path is handed back.
            audit.record(s, f"copy:{copy_id}", "recording.emailed", f"message:{message.id}", take=take.take,
                         to=f"person:{person.id}", address=mask_email(row.address))
        return CopyJob(copy_id, row.channel, row.reason, row.address, row.tries, person.id, person.language.value,
                       campaign.id, message.id, message.kind, message.urgency, bool(message.drill),
                       message.bin.number, message.bin.name, message.text or None, transcript, recording, resumed)

    @staticmethod
    def _move(s: Session, copy_id: str, from_: Collection[CopyStatus], **values: object) -> bool:
        """A conditional UPDATE of one copy: only if it is in one of ``from_``; whether it moved."""
        result = s.execute(update(TextCopy).where(TextCopy.id == copy_id, TextCopy.status.in_(list(from_)))
                           .values(**values).execution_options(synchronize_session=False))
        return bool(getattr(result, "rowcount", 0))

    async def sent(self, copy_id: str, answer: str, *, segments: int | None = None,
                   provider_ref: str | None = None) -> bool:
        """The gateway or relay accepted the copy (SENDING -> SENT): its answer, an SMS's segments, an
        e-mail's Message-ID. A delivery report that came first keeps its state. Whether it moved."""
        def work(s: Session) -> bool:
            extra = {k: v for k, v in (("segments", segments), ("provider_ref", provider_ref)) if v is not None}
            moved = self._move(s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.SENT, sent_at=self.clock(),
                               detail=answer[:DETAIL_CHARS], **extra)
            if not moved and extra:
                self._move(s, copy_id, tuple(CopyStatus), **extra)
            return moved
        return await self.tx(work)

    async def failed(self, copy_id: str, detail: str, *, final: bool = False) -> CopyStatus | None:
        """The hand-over failed: for a passing reason the copy is QUEUED again, to be taken after a
        pause (``retry_pause``: 30 s, doubling, at most 10 min), until ``retry_for_s`` after it was
        queued or ``max_tries`` hand-overs; then (or when ``final``) FAILED. Returns its new status
        (``None``: it was no longer SENDING, e.g. a delivery report settled it meanwhile)."""
        def work(s: Session) -> CopyStatus | None:
            row = s.get(TextCopy, copy_id)
            if row is None:
                return None
            now = self.clock()
            again = not final and row.tries < self.rules.max_tries and now < self._give_up_at(s, row)
            if again:
                return CopyStatus.QUEUED if self._move(
                    s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.QUEUED, detail=detail[:DETAIL_CHARS],
                    retry_at=now + retry_pause(row.tries)) else None
            return CopyStatus.FAILED if self._move(
                s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.FAILED, detail=detail[:DETAIL_CHARS],
                failed_at=now) else None
        return await self.tx(work)

    async def bounced(self, copy_id: str, detail: str) -> bool:
        """The relay refused the e-mail for good (a bounce): BOUNCED, the refusal kept."""
        def work(s: Session) -> bool:
            return self._move(s, copy_id, (CopyStatus.SENDING, CopyStatus.SENT), status=CopyStatus.BOUNCED,
                              failed_at=self.clock(), detail=detail[:DETAIL_CHARS])
        return await self.tx(work)

    async def delivery_report(self, copy_id: str, dlr_type: int, at: dt.datetime,
                              detail: str = "") -> CopyStatus | None:
        """Kannel's delivery report for an SMS copy: 1 -> DELIVERED, 2 and 16 -> FAILED, 4 and 8 -> SENT
        (Kannel has it: proof the hand-over happened, so it is not sent again). A final state never
        moves back; an unknown copy or type is logged and ignored. Returns the state it moved to."""
        moves: dict[int, tuple[tuple[CopyStatus, ...], dict[str, object]]] = {
            DLR_DELIVERED: ((CopyStatus.QUEUED, CopyStatus.SENDING, CopyStatus.SENT),
                            {"status": CopyStatus.DELIVERED, "delivered_at": at}),
            DLR_UNDELIVERED: ((CopyStatus.QUEUED, CopyStatus.SENDING, CopyStatus.SENT),
                              {"status": CopyStatus.FAILED, "failed_at": at}),
            DLR_REJECTED: ((CopyStatus.QUEUED, CopyStatus.SENDING, CopyStatus.SENT),
                           {"status": CopyStatus.FAILED, "failed_at": at}),
            DLR_SMSC: ((CopyStatus.QUEUED, CopyStatus.SENDING), {"status": CopyStatus.SENT, "sent_at": at}),
            DLR_QUEUED: ((CopyStatus.QUEUED, CopyStatus.SENDING), {"status": CopyStatus.SENT, "sent_at": at}),
        }

        def work(s: Session) -> CopyStatus | None:
            row = s.get(TextCopy, copy_id)
            if row is None or row.channel is not Channel.SMS:
                log.warning("delivery report %d for unknown SMS copy %r ignored", dlr_type, copy_id[:64])
                return None
            if dlr_type not in moves:
                log.warning("copy %s: delivery report of unknown type %d ignored", copy_id, dlr_type)
                return None
            from_, values = moves[dlr_type]
            said = f"dlr {dlr_type} {_DLR_WORDS[dlr_type]}" + (f": {detail}" if detail else "")
            if self._move(s, copy_id, from_, detail=said[:DETAIL_CHARS], **values):
                return values["status"]  # type: ignore[return-value]
            # Already further on (or final): only a later, better report's words are kept.
            return None
        return await self.tx(work)

    # -- members' replies ---------------------------------------------------------------------
    async def take_reply(self, from_e164: str, to: str, text: str, gateway_ref: str | None,
                         at: dt.datetime) -> str:
        """Store a member's SMS reply once (a retried callback with the same ``gateway_ref`` is taken
        once) and act on it: ``confirm`` the newest campaign (48 h) that handed an SMS copy to that
        very number or called it (``_confirm_by_sms``), ``stop`` / ``start`` the SMS copies of those
        whose SMS go to that number (their first mobile). ``at`` is when the member sent it (Kannel's
        time, else when it came). Returns the action (``reply_action``), or the stored one for a reply
        taken before."""
        action = reply_action(text)

        def work(s: Session) -> str:
            if gateway_ref:
                before = s.scalar(select(SmsReply.action).where(SmsReply.gateway_ref == gateway_ref))
                if before is not None:
                    return before
            reply = SmsReply(at=at, from_e164=from_e164[:20], text=text[:160], action=action,
                             gateway_ref=gateway_ref[:64] if gateway_ref else None)
            s.add(reply)
            s.flush()
            # Who sent it is known by the sender's number alone (which an SMS can fake, if less easily
            # than a caller ID): the audit says so.
            actor = f"sms:{mask(from_e164)}"
            if action == "confirm":
                reply.campaign_id = self._confirm_by_sms(s, from_e164, actor, at)
            elif action in ("stop", "start"):
                # Only those whose SMS go to this number: a member who lists it as a second number
                # (a partner's mobile) keeps getting theirs on their own.
                listing = set(s.scalars(select(PhoneNumber.person_id).where(PhoneNumber.e164 == from_e164)))
                people = sorted(pid for pid, contact in load_contacts(s, listing).items()
                                if contact.sms_number == from_e164)
                for pid in people:
                    if action == "stop":
                        self._sms_opt_out(s, pid, at, actor)
                        continue
                    person = s.get_one(Person, pid)
                    if person.sms_opt_out_at is not None:
                        person.sms_opt_out_at = None
                        audit.record(s, actor, "member.sms_opt_in", f"person:{pid}", via="sms")
            if to:
                log.debug("SMS reply to %s: %s", to[:20], action)
            return action
        try:
            return await self.tx(work)
        except IntegrityError:
            # The same reply taken by a concurrent callback (the unique gateway_ref: that one acted, and
            # the lookup above now finds it), or the member's confirmation stored meanwhile by a call:
            # taken again, once.
            return await self.tx(work)

    def _confirm_by_sms(self, s: Session, from_e164: str, actor: str, at: dt.datetime) -> int | None:
        """Confirm, for the members reached on ``from_e164``, the newest campaign that (a) handed them an
        SMS copy on exactly that number before ``at`` (SENT or DELIVERED), or (b) called them on it in
        its current round (an ENDED attempt), within ``REPLY_WINDOW``. The confirmation is unverified
        (the sender's number is all that says who it is): audited ``verified=False``."""
        since = at - REPLY_WINDOW
        # "Before the reply": before the later of Kannel's time and ours (an SMSC clock that runs behind
        # must not make a real "1" come before its copy); Kannel's is in whole seconds, hence the second.
        received = max(at, self.clock())
        until = received + dt.timedelta(seconds=1)
        handed = func.coalesce(TextCopy.sent_at, TextCopy.delivered_at)
        texted = s.execute(select(TextCopy.campaign_id, TextCopy.person_id).where(
            TextCopy.address == from_e164, TextCopy.channel == Channel.SMS, TextCopy.status.in_(RECEIVED_COPIES),
            handed < until, handed >= since)).tuples().all()
        called = s.execute(select(CallAttempt.campaign_id, CallAttempt.person_id)
                           .join(Campaign, Campaign.id == CallAttempt.campaign_id).where(
            CallAttempt.e164 == from_e164, CallAttempt.status == AttemptStatus.ENDED,
            func.coalesce(CallAttempt.round, 1) == func.coalesce(Campaign.round, 1),
            CallAttempt.ended_at <= received, CallAttempt.ended_at >= since)).tuples().all()
        candidates: dict[int, set[int]] = {}
        for campaign_id, pid in [*texted, *called]:
            candidates.setdefault(campaign_id, set()).add(pid)
        if not candidates:
            log.info("SMS reply 'confirm' from %s: no campaign sent that number a copy or called it", actor)
            return None
        campaign_id = max(candidates)  # the newest
        confirmed = set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == campaign_id)))
        for pid in sorted(candidates[campaign_id] - confirmed):
            s.add(Confirmation(attempt_id=None, campaign_id=campaign_id, person_id=pid, confirmed_at=at, via="sms"))
            s.flush()
            audit.record(s, actor, "confirmation.stored", f"campaign:{campaign_id}", person=pid, via="sms",
                         verified=False)
        return campaign_id

    def _sms_opt_out(self, s: Session, person_id: int, at: dt.datetime, actor: str) -> None:
        person = s.get_one(Person, person_id)
        newly = person.sms_opt_out_at is None
        if newly:
            person.sms_opt_out_at = at
        cancelled = s.execute(update(TextCopy).where(
            TextCopy.person_id == person_id, TextCopy.channel == Channel.SMS, TextCopy.status == CopyStatus.QUEUED)
            .values(status=CopyStatus.CANCELLED, failed_at=at, detail="member opted out of sms (STOP)")
            .execution_options(synchronize_session=False))
        count = int(getattr(cancelled, "rowcount", 0) or 0)
        if newly or count:
            audit.record(s, actor, "member.sms_opt_out", f"person:{person_id}", cancelled=count, again=not newly,
                         via="sms")


def load_contacts(s: Session, person_ids: Collection[int]) -> dict[int, Contact]:
    """What the channel decisions need of each person: their choice, numbers (primary first), e-mail
    and opt-outs. A stored choice that cannot be read counts as none (the zone's default), logged."""
    ids = list(person_ids)
    phones: dict[int, list[tuple[int, str]]] = {}
    for pid, rank, e164 in s.execute(select(PhoneNumber.person_id, PhoneNumber.rank, PhoneNumber.e164)
                                     .where(PhoneNumber.person_id.in_(ids))):
        phones.setdefault(pid, []).append((0 if rank is PhoneRank.PRIMARY else 1, e164))
    out: dict[int, Contact] = {}
    for row in s.execute(select(Person.id, Person.channels, Person.email, Person.calls_opt_out_at,
                                Person.sms_opt_out_at, Person.email_opt_out_at).where(Person.id.in_(ids))):
        chosen = None
        if row.channels:
            try:
                chosen = parse_channels(row.channels)
            except InvalidChannels:
                log.warning("person %d: stored channels %r cannot be read: the zone's default is used",
                            row.id, row.channels)
        out[row.id] = Contact(row.id, chosen, tuple(e164 for _, e164 in sorted(phones.get(row.id, []))), row.email,
                              row.calls_opt_out_at is not None, row.sms_opt_out_at is not None,
                              row.email_opt_out_at is not None)
    return out


def _has_words(s: Session, campaign_id: int) -> bool:
    """Whether the campaign's message has a typed text or its sent take a transcript (yet)."""
    message = s.scalar(select(Message).join(Campaign, Campaign.message_id == Message.id)
                       .where(Campaign.id == campaign_id))
    if message is None or message.text:
        return True
    return s.scalar(select(Transcript.id).join(Recording, Recording.id == Transcript.recording_id).where(
        Recording.message_id == message.id, Recording.take == message.submitted_take).limit(1)) is not None


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


def _retracted_campaigns() -> Select[tuple[int]]:
    """The campaigns whose message has a retraction that stands (``ivr.delivery.control.live_retraction``:
    a cancellation follow-up not rejected or cancelled)."""
    retractions = select(Message.follow_up_of_id).where(
        Message.kind == MessageKind.CANCELLATION, Message.follow_up_of_id.is_not(None),
        Message.status.not_in((MessageStatus.REJECTED, MessageStatus.CANCELLED)))
    return select(Campaign.id).where(Campaign.message_id.in_(retractions))


def _written_address(contact: Contact, channel: Channel) -> str | None:
    """Where a copy on ``channel`` goes to now (``None``: nowhere, or the member opted out of it)."""
    if channel is Channel.SMS:
        return None if contact.sms_opted_out else contact.sms_number
    if channel is Channel.EMAIL:
        return None if contact.email_opted_out else contact.email
    return None
