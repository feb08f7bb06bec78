"""The copy desk: every database step of the SMS and e-mail copies (issue 17), each one transaction.

Rules:
- a copy is written (QUEUED) before it is sent, its id the idempotency key towards Kannel and the
  SMTP relay; the unique (campaign, member, channel) makes a second copy impossible, whichever
  process or restart plans it;
- the plan is always rebuilt from the database (``plan``): copies by choice and a text-only member's
  go when the campaign starts, the ladder's SMS ``after_s`` after a called member's calls are over
  and unconfirmed (``ivr.domain.channels``); a follow-up goes to those who received the first message,
  by call or by a copy; a preventive message's SMS keeps the quiet hours, as its calls do;
- a stopped campaign's queued copies are cancelled (and queued again if a re-notify runs it again);
- a copy moves by conditional UPDATEs only (``claim``: QUEUED -> SENDING; a delivery report never
  moves a final state back), so two senders never take the same copy and a late answer never undoes
  a later one;
- the recording attached to an e-mail is audited (``recording.emailed``) in the transaction that
  opens it, so the row is committed before the path is handed back;
- a member's SMS reply is taken once (unique ``gateway_ref``): "1"/"OK" confirms their latest
  campaign (``Confirmation``, which the dialer reads: their calls stop), "STOP"/"START" set or clear
  their SMS opt-out; each is audited.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.delivery.members import DIALLING, campaign_members, received, recipients
from ivr.delivery.policy import RetryPolicy, Verdict, Window, next_allowed, next_step
from ivr.domain.channels import (
    Contact,
    InvalidChannels,
    LadderRules,
    copies_at_start,
    ladder_due,
    parse_channels,
    reply_action,
    zone_defaults,
)
from ivr.domain.phone import mask
from ivr.domain.vocabulary import (
    AttemptOutcome,
    CampaignStatus,
    Channel,
    CopyReason,
    CopyStatus,
    MessageKind,
    PhoneRank,
    Role,
    Urgency,
)
from storage import audit
from storage.db import Desk
from storage.models import (
    Campaign,
    Confirmation,
    Message,
    Person,
    PhoneNumber,
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
#: Copies a member received (a follow-up goes to them too).
RECEIVED = (CopyStatus.SENT, CopyStatus.DELIVERED)
#: The ``detail`` of a copy cancelled by its campaign's stop (a re-notify queues it again).
STOPPED_DETAIL = "campaign stopped"
#: Kannel's delivery report types (``%d``): 1 delivered to the phone, 2 undelivered, 4 queued on the
#: SMSC, 8 delivered to the SMSC, 16 rejected by the SMSC.
DLR_DELIVERED, DLR_UNDELIVERED, DLR_QUEUED, DLR_SMSC, DLR_REJECTED = 1, 2, 4, 8, 16
_DLR_WORDS = {DLR_DELIVERED: "delivered", DLR_UNDELIVERED: "undelivered", DLR_QUEUED: "queued on the SMSC",
              DLR_SMSC: "delivered to the SMSC", DLR_REJECTED: "rejected by the SMSC"}
#: How long after it was sent (or its member was called) an SMS reply "1" still confirms a campaign.
REPLY_WINDOW = dt.timedelta(hours=48)
#: Copies that reached the gateway: a reply may answer them.
_HANDED_OVER = (CopyStatus.SENDING, CopyStatus.SENT, CopyStatus.DELIVERED)
DETAIL_CHARS = 200


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
    #: A copy whose hand-over failed for a passing reason is tried this many times in all.
    max_tries: int = 5
    #: A finished campaign is still planned this long (its ladder SMS, copies a restart has not made yet).
    recent_s: float = 24 * 3600.0
    #: Local hours in which a preventive message's SMS may go (its calls keep the same).
    allowed_hours: Window = Window(dt.time(8), dt.time(21))
    tz: dt.tzinfo = dt.timezone.utc

    @classmethod
    def from_settings(cls, settings: Settings) -> CopyRules:
        """The rules of ``settings``."""
        from ivr.delivery.policy import retry_policies

        quiet_start, quiet_end = settings.quiet_hours.split("-")
        return cls(settings.copy_channels_urgent, settings.copy_channels_preventive,
                   LadderRules(settings.ladder_sms, settings.ladder_after_s), retry_policies(settings),
                   settings.copy_max_tries, allowed_hours=Window.parse(f"{quiet_end}-{quiet_start}"), tz=settings.tz)


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
        cancel the queued copies of stopped campaigns. Returns when the next copy falls due, if any
        is known (a ladder's delay, a preventive SMS waiting for the morning)."""
        now = self.clock()
        campaign_ids = await self.tx(lambda s: self._campaigns_to_plan(s, now))
        soonest: dt.datetime | None = None
        for campaign_id in campaign_ids:
            try:
                at = await self.tx(lambda s, cid=campaign_id: self._plan_campaign(s, cid, set(channels_on), now))
            except IntegrityError:
                # Another process wrote one of these copies between our read and our insert: the unique
                # row decided, and the next pass plans from what is stored.
                log.info("campaign %d: copies planned by another process meanwhile; planned again", campaign_id)
                at = now
            if at is not None:
                soonest = at if soonest is None else min(soonest, at)
        return soonest

    def _campaigns_to_plan(self, s: Session, now: dt.datetime) -> list[int]:
        stopped = select(Campaign.id).where(Campaign.status == CampaignStatus.CANCELLED)
        cancelled = s.execute(update(TextCopy).where(TextCopy.status == CopyStatus.QUEUED,
                                                     TextCopy.campaign_id.in_(stopped))
                              .values(status=CopyStatus.CANCELLED, failed_at=now, detail=STOPPED_DETAIL)
                              .execution_options(synchronize_session=False))
        if getattr(cancelled, "rowcount", 0):
            log.info("%d queued copies cancelled: their campaigns were stopped", cancelled.rowcount)
        # A re-notify runs a stopped campaign again: its copies cancelled by the stop go again (the
        # claim checks opt-outs, so nobody who opted out since gets one).
        running = select(Campaign.id).where(Campaign.status.in_(DIALLING))
        s.execute(update(TextCopy).where(TextCopy.status == CopyStatus.CANCELLED,
                                         TextCopy.detail == STOPPED_DETAIL, TextCopy.campaign_id.in_(running))
                  .values(status=CopyStatus.QUEUED, failed_at=None, detail=None)
                  .execution_options(synchronize_session=False))
        since = now - dt.timedelta(seconds=self.rules.recent_s)
        return list(s.scalars(select(Campaign.id).where(or_(
            Campaign.status.in_(DIALLING),
            and_(Campaign.status == CampaignStatus.DONE, Campaign.finished_at >= since))).order_by(Campaign.id)))

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
        people = self._copy_recipients(s, message)
        contacts = load_contacts(s, people)
        # A preventive message's SMS keeps the quiet hours (a phone buzzes as a call rings); e-mail does not.
        sms_from = now if urgent else self._allowed(now)
        soonest: dt.datetime | None = None

        def write(contact: Contact, channel: Channel, reason: CopyReason, address: str) -> None:
            nonlocal soonest
            if channel not in channels_on or (contact.person_id, channel) in existing:
                return
            if channel is Channel.SMS and sms_from > now:
                soonest = sms_from if soonest is None else min(soonest, sms_from)
                return
            s.add(TextCopy(campaign_id=campaign_id, person_id=contact.person_id, channel=channel, reason=reason,
                           address=address, status=CopyStatus.QUEUED, created_at=now))
            existing.add((contact.person_id, channel))

        for pid in people:
            for channel, reason, address in copies_at_start(contacts[pid], message.urgency, defaults):
                write(contacts[pid], channel, reason, address)
        if ladder.sms and Channel.SMS in channels_on:
            for pid, due_at in self._ladder(s, campaign, message, contacts, ladder, existing, now).items():
                if due_at <= now:
                    number = contacts[pid].sms_number
                    assert number is not None  # ladder_due says so
                    write(contacts[pid], Channel.SMS, CopyReason.LADDER, number)
                else:
                    soonest = due_at if soonest is None else min(soonest, due_at)
        s.flush()
        return soonest

    def _defaults(self, urgent: str | None, preventive: str | None, zone: str) -> dict[Urgency, frozenset[Channel]]:
        try:
            return zone_defaults(urgent, preventive, self.rules.urgent_channels, self.rules.preventive_channels)
        except InvalidChannels as exc:
            log.error("zone %s: its default channels cannot be read (%s): the settings' are used", zone, exc)
            return zone_defaults(None, None, self.rules.urgent_channels, self.rules.preventive_channels)

    def _copy_recipients(self, s: Session, message: Message) -> list[int]:
        """Who gets copies: the BIN's active members; for a follow-up, those who received the first
        message by call or by a copy (SENT or DELIVERED)."""
        if message.kind is MessageKind.ALERT or message.follow_up_of_id is None:
            return recipients(s, message)
        first = s.scalar(select(Campaign.id).where(Campaign.message_id == message.follow_up_of_id))
        if first is None:
            return []
        members = s.scalars(select(Person.id).join(RoleAssignment).where(
            RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == message.bin_id, Person.active.is_(True))
            .order_by(Person.id).distinct())
        got = received(s, first) | set(s.scalars(select(TextCopy.person_id).where(
            TextCopy.campaign_id == first, TextCopy.status.in_(RECEIVED))))
        return [pid for pid in members if pid in got]

    def _ladder(self, s: Session, campaign: Campaign, message: Message, contacts: dict[int, Contact],
                ladder: LadderRules, existing: set[tuple[int, Channel]], now: dt.datetime) -> dict[int, dt.datetime]:
        """When each called, unconfirmed member's ladder SMS falls due (members it never does for left out)."""
        policy = self.rules.policies[message.urgency is Urgency.URGENT]
        members = [m for m in campaign_members(s, campaign, message) if m.called]
        views = {m.view.person_id: m.view for m in members}
        out: dict[int, dt.datetime] = {}
        for member in members:
            pid = member.view.person_id
            contact = contacts.get(pid)
            if contact is None:
                continue
            # A member covered by a housemate on the same line was called through the housemate's calls.
            calls = views.get(member.covered_by, member.view) if member.covered_by is not None else member.view
            tried = [a for a in calls.attempts if a.outcome is not None and a.outcome != AttemptOutcome.INTERRUPTED]
            over = campaign.status is CampaignStatus.DONE or next_step(calls, policy, now).verdict is Verdict.DONE
            ended = max((a.ended_at for a in tried if a.ended_at is not None), default=None)
            due_at = ladder_due(ladder, contact, called=bool(tried), confirmed=member.view.confirmed, calls_over=over,
                                last_call_ended=ended, has_sms_copy=(pid, Channel.SMS) in existing)
            if due_at is not None:
                out[pid] = due_at  # a preventive one keeps the quiet hours when it is written (``sms_from``)
        return out

    def _allowed(self, at: dt.datetime) -> dt.datetime:
        """The first moment at or after ``at`` inside the allowed hours (a preventive message's SMS)."""
        local = next_allowed(at.astimezone(self.rules.tz), [self.rules.allowed_hours])
        return local.astimezone(dt.timezone.utc)

    # -- sending ------------------------------------------------------------------------------
    async def orphans(self) -> list[Orphan]:
        """Copies left SENDING (by a process that died during the hand-over): read once at start."""
        def work(s: Session) -> list[Orphan]:
            return [Orphan(cid, channel, at) for cid, channel, at in s.execute(
                select(TextCopy.id, TextCopy.channel, TextCopy.sending_at).where(
                    TextCopy.status == CopyStatus.SENDING).order_by(TextCopy.sending_at))]
        return await self.tx(work)

    async def claim(self, limit: int, *, channels: Collection[Channel] = (Channel.SMS, Channel.EMAIL),
                    orphans: Collection[str] = (), text_wait_s: float = 120.0) -> list[CopyJob]:
        """Take up to ``limit`` copies to send (SENDING, ``tries`` + 1), each by a conditional UPDATE
        so no two senders take the same: first the ``orphans`` given (copies left SENDING by a previous
        process, still SENDING: no delivery report came for them), then QUEUED copies on ``channels``
        of campaigns not stopped, oldest first. A copy whose message has neither typed text nor a
        transcript yet waits up to ``text_wait_s`` after it was queued; a copy whose member opted out
        of its channel since is cancelled instead."""
        def work(s: Session) -> list[CopyJob]:
            now = self.clock()
            jobs: list[CopyJob] = []
            for copy_id in orphans:
                if len(jobs) >= limit:
                    break
                row = s.get(TextCopy, copy_id)
                if row is None or row.status is not CopyStatus.SENDING:
                    continue
                if row.tries >= self.rules.max_tries:
                    self._move(s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.FAILED, failed_at=now,
                               detail=f"no answer from the gateway ({row.tries} tries, the last cut by a restart)")
                    continue
                if self._move(s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.SENDING, sending_at=now,
                              tries=TextCopy.tries + 1):
                    job = self._job(s, copy_id, resumed=True)
                    if job is not None:
                        jobs.append(job)
            if len(jobs) >= limit:
                return jobs
            queued = (TextCopy.status == CopyStatus.QUEUED, TextCopy.channel.in_(list(channels)),
                      TextCopy.campaign_id.not_in(select(Campaign.id).where(
                          Campaign.status == CampaignStatus.CANCELLED)))
            # Copies of a message with no words yet wait (its transcript may come), without holding up
            # the copies of other campaigns behind them.
            waiting = [cid for cid in s.scalars(select(TextCopy.campaign_id).where(*queued).distinct())
                       if not _has_words(s, cid)]
            waited = now - dt.timedelta(seconds=text_wait_s)
            candidates = s.execute(select(TextCopy.id, TextCopy.channel, TextCopy.person_id).where(
                *queued, or_(TextCopy.campaign_id.not_in(waiting), TextCopy.created_at <= waited))
                .order_by(TextCopy.created_at, TextCopy.id).limit(max(4 * limit, 50))).all()
            for copy_id, channel, person_id in candidates:
                if len(jobs) >= limit:
                    break
                if self._opted_out(s, person_id, channel):
                    self._move(s, copy_id, (CopyStatus.QUEUED,), status=CopyStatus.CANCELLED, failed_at=now,
                               detail=f"member opted out of {channel.value}")
                    continue
                if self._move(s, copy_id, (CopyStatus.QUEUED,), status=CopyStatus.SENDING, sending_at=now,
                              tries=TextCopy.tries + 1):
                    job = self._job(s, copy_id, resumed=False)
                    if job is not None:
                        jobs.append(job)
            return jobs
        return await self.tx(work)

    @staticmethod
    def _opted_out(s: Session, person_id: int, channel: Channel) -> bool:
        column = Person.sms_opt_out_at if channel is Channel.SMS else Person.email_opt_out_at
        return s.scalar(select(column).where(Person.id == person_id)) is not None

    def _job(self, s: Session, copy_id: str, *, resumed: bool) -> CopyJob | None:
        """What the claimed copy needs to be composed; ``None`` (the copy failed for good) when the
        e-mail's recording cannot be opened."""
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
        if row.channel is Channel.EMAIL and take is not None:
            try:
                recording = self.recordings.open_verified(Path(take.path), take.sha256)
            except RecordingCorrupted as exc:
                log.error("copy %s: message %d's recording is unusable: %s", copy_id, message.id, exc)
                self._move(s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.FAILED, failed_at=self.clock(),
                           detail=f"recording unusable: {exc}"[:DETAIL_CHARS])
                return None
            # The recording leaves for a member's mailbox: audited before its path is handed back.
            audit.record(s, f"copy:{copy_id}", "recording.emailed", f"message:{message.id}", take=take.take,
                         to=f"person:{person.id}")
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
        """The hand-over failed: for a passing reason the copy is QUEUED again until it has had
        ``max_tries``, then (or when ``final``) FAILED. Returns its new status (``None``: it was no
        longer SENDING, e.g. a delivery report settled it meanwhile)."""
        def work(s: Session) -> CopyStatus | None:
            row = s.get(TextCopy, copy_id)
            if row is None:
                return None
            again = not final and row.tries < self.rules.max_tries
            status = CopyStatus.QUEUED if again else CopyStatus.FAILED
            moved = self._move(s, copy_id, (CopyStatus.SENDING,), status=status, detail=detail[:DETAIL_CHARS],
                               **({} if again else {"failed_at": self.clock()}))
            return status if moved else None
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
        once) and act on it: ``confirm`` the latest campaign (48 h) that sent the number an SMS copy or
        calls its member, ``stop`` / ``start`` the SMS copies of everyone with that number. Returns
        the action (``reply_action``), or the stored one for a reply taken before."""
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
            people = sorted(set(s.scalars(select(PhoneNumber.person_id).where(PhoneNumber.e164 == from_e164))))
            # Who sent it is known by the sender's number alone (which an SMS can fake, if less easily
            # than a caller ID): the audit says so.
            actor = f"sms:{mask(from_e164)}"
            if action == "confirm" and people:
                reply.campaign_id = self._confirm_by_sms(s, people, actor, at)
            elif action == "stop":
                for pid in people:
                    self._sms_opt_out(s, pid, at, actor)
            elif action == "start":
                for pid in people:
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

    def _confirm_by_sms(self, s: Session, people: list[int], actor: str, at: dt.datetime) -> int | None:
        since = at - REPLY_WINDOW
        texted = s.execute(select(TextCopy.campaign_id, TextCopy.person_id).join(Campaign).where(
            TextCopy.person_id.in_(people), TextCopy.channel == Channel.SMS, TextCopy.status.in_(_HANDED_OVER),
            Campaign.created_at >= since)).all()
        candidates: dict[int, set[int]] = {}
        for campaign_id, pid in texted:
            candidates.setdefault(campaign_id, set()).add(pid)
        for campaign in s.scalars(select(Campaign).join(Message).join(
                RoleAssignment, and_(RoleAssignment.bin_id == Message.bin_id, RoleAssignment.role == Role.MEMBER))
                .where(RoleAssignment.person_id.in_(people), Campaign.status.in_(DIALLING),
                       Campaign.created_at >= since).distinct()):
            called = {m.view.person_id for m in campaign_members(s, campaign, campaign.message) if m.called}
            theirs = called & set(people)
            if theirs:
                candidates.setdefault(campaign.id, set()).update(theirs)
        if not candidates:
            log.info("SMS reply 'confirm' from %s: no campaign sent it a copy or calls it", actor)
            return None
        campaign_id = max(candidates)
        confirmed = set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == campaign_id)))
        for pid in sorted(candidates[campaign_id] - confirmed):
            s.add(Confirmation(attempt_id=None, campaign_id=campaign_id, person_id=pid, confirmed_at=at, via="sms"))
            s.flush()
            audit.record(s, actor, "confirmation.stored", f"campaign:{campaign_id}", person=pid, via="sms")
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
