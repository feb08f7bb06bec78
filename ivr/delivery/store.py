"""The delivery desk: every database step of BINFOON 2 (campaigns, call attempts, confirmations).

Rules:
- an attempt row is committed before its number is dialled (its id is the Originate ChannelId),
  and the unique (campaign, member, attempt number) makes a double dial impossible;
- a confirmation is committed before the member hears "thank you"; a confirmation Asterisk wrote
  durably while the app was down (CEL) is taken in on start, exactly once;
- members who share a phone number are called once (``ivr.delivery.members``); a confirmation on it
  counts for all of them;
- the plan is always rebuilt from the database: the dialer keeps no state it could lose;
- a pause of all delivery (the trunk is down) is stored too, so ``campaign watch`` and the web
  board (other processes) show it: one row, ``PAUSE_KEY``, present while paused;
- a stopped campaign starts no new call: ``begin_attempt`` checks the campaign in the attempt's own
  transaction (locking its row, as ``ivr.delivery.control.stop_campaign`` does), so a stop from
  another process and an attempt are serialised; calls already up finish and keep their outcome;
- a re-notify is a new round (``Campaign.round``): attempts carry their round, and the plan shows
  the policy only the current round's (and any call still up from an earlier one);
- every play of a recording is audited (``recording.played``) in the transaction that opens it, so the
  row is committed before the path is handed back to be played.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.delivery.lines_store import CallerLines
from ivr.delivery.members import (DIALLING, Member, campaign_members, first_call_still_up, member_contacts,
                                  message_defaults, reach_of)
from ivr.delivery.outcome import answered_outcome
from ivr.domain.message import check_transition
from ivr.domain.schedule import due
from ivr.domain.vocabulary import (
    AttemptOutcome, AttemptStatus, CampaignStatus, MessageStatus, PhoneRank, Role, Urgency,
)
from storage import audit
from storage.claims import node_may_claim
from storage.models import (
    CallAttempt, Campaign, Checkpoint, Confirmation, Message, Person, PhoneNumber, RoleAssignment, utcnow,
)
from storage.recordings import RecordingCorrupted, RecordingStore

log = logging.getLogger(__name__)

#: The row (in ``checkpoints``: a small named value with its time) that says delivery is paused and why.
PAUSE_KEY = "delivery.paused"


@dataclass(frozen=True)
class Pause:
    """Delivery is paused (the trunk is down): why, and since when."""

    reason: str
    since: dt.datetime


def _not_called_states(s: Session, campaign: Campaign, message: Message, copy_channels: tuple[str, str]) -> list[str]:
    """How each member the dialer does not call ends (``ivr.delivery.report.reach_state``'s words):
    ``confirmed`` (by SMS reply), ``text_only`` (written copies reach them) or ``no_channel``."""
    members = [m for m in campaign_members(s, campaign, message) if not m.called]
    contacts = member_contacts(s, [m.view.person_id for m in members])
    reach = reach_of(s, message, members, contacts, message_defaults(message, *copy_channels))
    return ["confirmed" if m.view.confirmed else "text_only" if reach[m.view.person_id] else "no_channel"
            for m in members]


def delivery_pause(s: Session) -> Pause | None:
    """The stored pause of all delivery, if any."""
    row = s.get(Checkpoint, PAUSE_KEY)
    return None if row is None else Pause(row.value, row.updated_at)


@dataclass(frozen=True)
class OpenCall:
    """A member call a previous process left up in Asterisk: it is waited for, never dialled over."""

    attempt_id: str
    campaign_id: int
    zone_id: int
    e164: str


@dataclass(frozen=True)
class CampaignPlan:
    """A running campaign and its members, as the database says now."""

    campaign_id: int
    message_id: int
    urgent: bool
    zone_id: int
    zone_max_channels: int | None
    #: When the campaign (or its current re-notify round) started: preventive members expire from here.
    created_at: dt.datetime
    not_before: dt.datetime | None
    recording: Path
    recording_sha256: str
    members: list[Member] = field(default_factory=list)
    #: A drill ("Testbericht BIN-foon"): every prompt of its calls says it is a test.
    drill: bool = False
    #: The campaign's round (a re-notify starts the next one).
    round: int = 1
    #: New member calls a second for the zone's campaigns (``None``: only the trunk's pace applies).
    zone_max_cps: float | None = None


@dataclass(frozen=True)
class CampaignHead:
    """A campaign to dial, before its members are read: its id, round and urgency."""

    campaign_id: int
    round: int
    urgent: bool


@dataclass(frozen=True)
class MemberBrief:
    """What the member call needs once answered."""

    attempt_id: str
    campaign_id: int
    person_id: int
    language: str
    urgent: bool
    recording: Path
    confirmed: bool
    #: A drill: every prompt of the call says it is a test.
    drill: bool = False


@dataclass(frozen=True)
class CampaignStart:
    """A due message's campaign: its id, and whether this call created it (or found it)."""

    campaign_id: int
    created: bool


class DeliveryDesk(CallerLines):
    """The database side of campaigns (and, from ``CallerLines``, of the lines people call in on)."""

    def __init__(self, engine: Engine, store: RecordingStore, clock: Callable[[], dt.datetime] = utcnow,
                 copy_channels: tuple[str, str] = ("voice+sms", "voice+email")) -> None:
        super().__init__(engine)
        #: In a farm: this node's (id, epoch) to stamp on the attempts it begins, checked against its
        #: row under a shared lock (a node taken over cannot begin one). ``None``: one node.
        self.claim: Callable[[], tuple[int, int] | None] | None = None
        self.store = store
        self.clock = clock
        #: The settings' channels of a member who chose none, urgent and preventive
        #: (``copy_channels_urgent``/``_preventive``): ``finish`` counts the members not called with them.
        self.copy_channels = copy_channels

    # -- the hand-off from review -----------------------------------------------------------------
    async def start_campaign(self, message_id: int) -> CampaignStart | None:
        """An approved message that is due gets its campaign, exactly once; ``None`` if it is not to be
        delivered (now). Two callers at once get the same campaign: the unique row decides."""
        def existing(s: Session) -> int | None:
            return s.scalar(select(Campaign.id).where(Campaign.message_id == message_id))

        def work(s: Session) -> CampaignStart | None:
            found = existing(s)
            if found is not None:
                return CampaignStart(found, created=False)
            message = s.get_one(Message, message_id, with_for_update=True)
            if message.status is not MessageStatus.APPROVED or not due(message.deliver_at, self.clock()):
                # Another caller may have made the campaign between the two reads (SQLite reads outside a
                # write transaction see each commit): theirs is the one. Else not approved, or an alarm
                # woke early: it comes again.
                found = existing(s)
                return None if found is None else CampaignStart(found, created=False)
            campaign = Campaign(message_id=message_id, status=CampaignStatus.SCHEDULED, created_at=self.clock())
            s.add(campaign)
            s.flush()
            # SQLite: under the write lock now, the message as committed last (a cancel from another
            # process, ``ivr.delivery.control.cancel_message``, wins over this start).
            s.refresh(message)
            if message.status is not MessageStatus.APPROVED:
                raise _Stopped
            check_transition(message.status, MessageStatus.DELIVERING)
            message.status = MessageStatus.DELIVERING
            s.flush()
            audit.record(s, "system", "message.delivering", f"message:{message_id}", campaign=campaign.id)
            return CampaignStart(campaign.id, created=True)
        try:
            return await self.tx(work)
        except _Stopped:
            return None  # cancelled meanwhile
        except IntegrityError:
            found = await self.tx(existing)
            return None if found is None else CampaignStart(found, created=False)

    # -- the plan -----------------------------------------------------------------------------
    async def plans(self) -> list[CampaignPlan]:
        """Every campaign to work on (scheduled ones become running), urgent first, oldest first."""
        plans = []
        for head in await self.campaign_heads():
            plan = await self.plan(head.campaign_id)
            if plan is not None:
                plans.append(plan)
        return plans

    async def campaign_heads(self) -> list[CampaignHead]:
        """The campaigns to dial, in the order they are dialled (urgent first, oldest first): one small
        query, so the dialer reads a campaign's members only when it may dial one of them (and, polled,
        tells it that another process started, stopped or re-notified one)."""
        def work(s: Session) -> list[CampaignHead]:
            rows = s.execute(select(Campaign.id, Campaign.round, Message.urgency)
                             .join(Message, Campaign.message_id == Message.id)
                             .where(Campaign.status.in_(DIALLING)))
            heads = [CampaignHead(cid, rnd or 1, urgency is Urgency.URGENT) for cid, rnd, urgency in rows]
            return sorted(heads, key=lambda h: (not h.urgent, h.campaign_id))
        return await self.tx(work)

    async def plan(self, campaign_id: int) -> CampaignPlan | None:
        """One campaign to work on with its members (a scheduled one becomes running); ``None`` if it
        is no longer to be dialled or its recording cannot be played."""
        return await self.tx(lambda s: self._plan(s, campaign_id))

    def _plan(self, s: Session, campaign_id: int) -> CampaignPlan | None:
        campaign = s.get(Campaign, campaign_id)
        if campaign is None or campaign.status not in DIALLING:
            return None
        message = campaign.message
        if campaign.status is CampaignStatus.SCHEDULED:
            # Only if still scheduled as committed now: a stop (``control.stop_campaign``) committed
            # since the read above must not be overwritten with RUNNING.
            s.execute(update(Campaign).where(Campaign.id == campaign.id,
                                             Campaign.status == CampaignStatus.SCHEDULED)
                      .values(status=CampaignStatus.RUNNING, started_at=self.clock())
                      .execution_options(synchronize_session=False))
            s.refresh(campaign)
            if campaign.status not in DIALLING:
                return None  # stopped meanwhile
        take = next((r for r in message.recordings if r.take == message.submitted_take), None)
        if take is None:
            log.error("campaign %d: message %d has no recording to deliver", campaign.id, message.id)
            return None
        try:  # the sealed recording, opened for Asterisk (a plaintext copy in the store's private folder)
            recording = self.store.open_verified(Path(take.path), take.sha256)
        except RecordingCorrupted as exc:
            log.error("campaign %d: message %d: recording unusable: %s", campaign.id, message.id, exc)
            return None
        plan = CampaignPlan(campaign.id, message.id, message.urgency is Urgency.URGENT, message.bin.zone_id,
                            message.bin.zone.max_channels,
                            campaign.round_started_at or campaign.created_at or self.clock(),
                            campaign.not_before, recording, take.sha256, drill=message.drill,
                            round=campaign.round or 1, zone_max_cps=message.bin.zone.max_cps)
        # Only the members it calls: one who is not (text only, opted out) is neither dialled nor waited for.
        plan.members.extend(m for m in campaign_members(s, campaign, message) if m.called)
        return plan

    # -- attempts -----------------------------------------------------------------------------
    async def begin_attempt(self, campaign_id: int, person_id: int, e164: str, rank: str,
                            attempt_no: int) -> str | None:
        """Write the attempt (DIALING) before it is dialled; ``None`` if it exists already (never dial twice)
        or the member confirmed since the dialer read its plan (B5: the call is dropped, not placed)."""
        claim = self.claim() if self.claim is not None else None

        def work(s: Session) -> str | None:
            if claim is not None and not node_may_claim(s, claim, e164):
                return None
            # PostgreSQL: the campaign's row is locked, so a stop (which locks it too) waits for this
            # attempt or this attempt sees the stop.
            if s.scalar(select(Campaign.status).where(Campaign.id == campaign_id).with_for_update()) \
                    not in DIALLING:
                return None
            if s.scalar(select(Confirmation.id).where(Confirmation.campaign_id == campaign_id,
                                                      Confirmation.person_id == person_id)) is not None:
                return None
            attempt = CallAttempt(campaign_id=campaign_id, person_id=person_id, e164=e164, attempt_no=attempt_no,
                                  rank=PhoneRank(rank), status=AttemptStatus.DIALING, dialled_at=self.clock())
            if claim is not None:
                attempt.node_id, attempt.fence = claim
            s.add(attempt)
            s.flush()
            # SQLite ignores FOR UPDATE and reads outside a transaction; after the insert this
            # transaction holds the database's write lock, so this read sees any stop committed
            # before it, and no stop can commit until this attempt has.
            campaign = s.execute(select(Campaign.status, Campaign.round).where(Campaign.id == campaign_id)).one()
            if campaign.status not in DIALLING:
                raise _Stopped
            attempt.round = campaign.round
            return attempt.id
        try:
            return await self.tx(work)
        except (IntegrityError, _Stopped):
            return None

    async def attempt_dialled(self, attempt_id: str, dial_outcome: str, cause: int | None,
                              outcome: str | None = None) -> None:
        """How dialling ended: answered (the member call runs) or a final outcome for this attempt
        (``outcome``, by default the dial outcome itself)."""
        def work(s: Session) -> None:
            attempt = s.get_one(CallAttempt, attempt_id)
            if not attempt.mark_dialled(dial_outcome, cause, self.clock()) and attempt.outcome is None:
                attempt.outcome = AttemptOutcome(outcome or dial_outcome)
        await self.tx(work)

    async def uncharge(self, attempt_ids: list[str]) -> int:
        """These failed attempts were the trunk's failure, not the member's: they cost no try
        (``interrupted``; the dial outcome and cause stay as Asterisk reported them). Returns how many."""
        def work(s: Session) -> int:
            changed = 0
            for attempt in s.scalars(select(CallAttempt).where(CallAttempt.id.in_(attempt_ids))):
                if attempt.outcome in _CHARGED_FAILURES:
                    attempt.outcome = AttemptOutcome.INTERRUPTED
                    changed += 1
            return changed
        return await self.tx(work) if attempt_ids else 0

    async def open_call_ended(self, attempt_id: str, flow_end: str | None) -> AttemptOutcome:
        """A call a previous process left up has ended: confirmed if a key is stored for it, the flow's
        end if this process's flow ran it, else ``interrupted`` (dialled again, at no cost)."""
        def work(s: Session) -> AttemptOutcome:
            attempt = s.get_one(CallAttempt, attempt_id)
            attempt.mark_ended(self.clock())
            if attempt.outcome is None:
                confirmed = s.scalar(select(Confirmation.id).where(Confirmation.attempt_id == attempt_id))
                attempt.outcome = (answered_outcome(flow_end, confirmed=confirmed is not None)
                                   if flow_end is not None or confirmed is not None else AttemptOutcome.INTERRUPTED)
            return attempt.outcome
        return await self.tx(work)

    async def set_pause(self, reason: str | None) -> None:
        """Store that all delivery is paused (``reason``), or that it runs again (``None``); the start
        and the end of a pause are audited."""
        def work(s: Session) -> None:
            row = s.get(Checkpoint, PAUSE_KEY)
            if reason is None:
                if row is not None:
                    s.delete(row)
                    audit.record(s, "system", "delivery.resumed", "trunk", paused_for=row.value)
                return
            if row is None:
                s.add(Checkpoint(name=PAUSE_KEY, value=reason[:200], updated_at=self.clock()))
                audit.record(s, "system", "delivery.paused", "trunk", reason=reason[:200])
            else:
                row.value = reason[:200]
        await self.tx(work)

    async def pause(self) -> Pause | None:
        """The stored pause of all delivery, if any."""
        return await self.tx(delivery_pause)

    async def attempt_ended(self, attempt_id: str, flow_end: str | None, *, failed: bool = False) -> AttemptOutcome:
        """The answered call is over: its outcome (``answered_outcome``) is stored once and returned;
        an attempt that already has one keeps it."""
        def work(s: Session) -> AttemptOutcome:
            attempt = s.get_one(CallAttempt, attempt_id)
            attempt.mark_ended(self.clock())
            if attempt.outcome is None:
                confirmed = s.scalar(select(Confirmation.id).where(Confirmation.attempt_id == attempt_id))
                attempt.outcome = answered_outcome(flow_end, confirmed=confirmed is not None, failed=failed)
            return attempt.outcome
        return await self.tx(work)

    async def member_brief(self, attempt_id: str, amd_status: str | None = None) -> MemberBrief:
        """The member answered: what they hear (the recording is checked against its checksum)."""
        def work(s: Session) -> MemberBrief:
            attempt = s.get_one(CallAttempt, attempt_id)
            attempt.mark_answered(self.clock())
            attempt.amd_status = amd_status or attempt.amd_status
            campaign = s.get_one(Campaign, attempt.campaign_id)
            message = campaign.message
            take = next(r for r in message.recordings if r.take == message.submitted_take)
            person = s.get_one(Person, attempt.person_id)
            confirmed = s.scalar(select(Confirmation.id).where(Confirmation.campaign_id == campaign.id,
                                                               Confirmation.person_id == person.id))
            audit.record(s, f"attempt:{attempt_id}", "recording.played", f"message:{message.id}",
                         take=take.take, to=f"person:{person.id}")
            return MemberBrief(attempt_id, campaign.id, person.id, person.language.value,
                               message.urgency is Urgency.URGENT,
                               self.store.open_verified(Path(take.path), take.sha256), confirmed is not None,
                               message.drill)
        return await self.tx(work)

    async def confirm(self, attempt_id: str, via: str = "call", at: dt.datetime | None = None) -> bool:
        """Store that the member pressed 1 (and members sharing the number); ``False`` if already stored."""
        def work(s: Session) -> bool:
            attempt = s.get(CallAttempt, attempt_id)
            if attempt is None:
                log.warning("confirmation for unknown attempt %s ignored", attempt_id)
                return False
            when = at or self.clock()
            existing = set(s.scalars(select(Confirmation.person_id).where(
                Confirmation.campaign_id == attempt.campaign_id)))
            sharing = set(s.scalars(select(PhoneNumber.person_id).where(PhoneNumber.e164 == attempt.e164)))
            campaign = s.get_one(Campaign, attempt.campaign_id)
            bin_members = set(s.scalars(select(RoleAssignment.person_id).where(
                RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == campaign.message.bin_id)))
            people = ({attempt.person_id} | (sharing & bin_members)) - existing
            if attempt.person_id in existing:
                if via == "call":
                    # The poller may take Asterisk's durable row in the moment between the flow writing
                    # it and storing the key; the app did hear the key, so the record says so.
                    mine = s.scalar(select(Confirmation).where(Confirmation.attempt_id == attempt_id))
                    if mine is not None and mine.via == "cel":
                        mine.via = "call"
                return False
            for person_id in sorted(people):
                s.add(Confirmation(attempt_id=attempt_id if person_id == attempt.person_id else None,
                                   campaign_id=attempt.campaign_id, person_id=person_id, confirmed_at=when,
                                   via=via if person_id == attempt.person_id else "shared"))
            if attempt.outcome is None or attempt.outcome is AttemptOutcome.INTERRUPTED:
                attempt.outcome = AttemptOutcome.CONFIRMED
            return True
        try:
            return await self.tx(work)
        except IntegrityError:
            if via != "call":
                return False
        # The CEL poller stored the same key in the same moment (its row won the unique constraint):
        # read again, so the key the flow heard is recorded as heard on the call.
        try:
            return await self.tx(work)
        except IntegrityError:
            return False

    async def finish(self, campaign_id: int, finals: dict[int, str], round_: int | None = None) -> None:
        """Every member has a final outcome: the campaign and its message are done. Not when the
        campaign was stopped, or re-notified (a round after ``round_``), since the plan was read."""
        def work(s: Session) -> None:
            campaign = s.scalars(select(Campaign).where(Campaign.id == campaign_id).with_for_update()).one()
            if campaign.status not in DIALLING or (round_ is not None and (campaign.round or 1) != round_):
                return
            if first_call_still_up(s, campaign.message):
                # A follow-up (a retraction) goes to whoever received the first message: a call of it
                # still up at its stop may yet make one more recipient, who must not be left out.
                return
            campaign.status = CampaignStatus.DONE
            campaign.finished_at = self.clock()
            message = campaign.message
            if message.status is MessageStatus.DELIVERING:
                check_transition(message.status, MessageStatus.DONE)
                message.status = MessageStatus.DONE
            counts: dict[str, int] = {}
            for outcome in finals.values():
                counts[outcome] = counts.get(outcome, 0) + 1
            # The members the dialer does not call are in no final outcome: counted as the report shows
            # them (confirmed by SMS, text only, or nothing reaches them: no channel).
            for state in _not_called_states(s, campaign, message, self.copy_channels):
                counts[state] = counts.get(state, 0) + 1
            audit.record(s, "system", "campaign.done", f"campaign:{campaign_id}", **counts)
        await self.tx(work)

    async def interrupt_in_flight(self, still_up: set[str] | None = None, *,
                                  node_id: int | None = None) -> tuple[list[str], list[OpenCall]]:
        """On start: attempts that were open when the app or Asterisk died. Those whose channel is still
        up in Asterisk (``still_up``: channel ids) stay open, to be waited for; the others are over
        (``interrupted``: dialled again at no cost). Returns (ids closed, calls still up).

        In a farm (``node_id``) only this node's own attempts: another node's live calls are its own
        (a node that stopped is taken over by the others after its lease, ``ivr.cluster.lease``)."""
        up = still_up or set()

        def work(s: Session) -> tuple[list[str], list[OpenCall]]:
            closed: list[str] = []
            kept: list[OpenCall] = []
            query = select(CallAttempt).where(
                CallAttempt.status.in_((AttemptStatus.QUEUED, AttemptStatus.DIALING, AttemptStatus.ANSWERED)))
            if node_id is not None:
                query = query.where(CallAttempt.node_id == node_id)
            for attempt in s.scalars(query):
                if attempt.id in up or f"{attempt.id}-2" in up:
                    campaign = s.get_one(Campaign, attempt.campaign_id)
                    kept.append(OpenCall(attempt.id, attempt.campaign_id, campaign.message.bin.zone_id, attempt.e164))
                    continue
                attempt.status = AttemptStatus.ENDED
                attempt.ended_at = self.clock()
                if attempt.outcome is None:
                    attempt.outcome = AttemptOutcome.INTERRUPTED
                closed.append(attempt.id)
            return closed, kept
        return await self.tx(work)

    # -- checkpoints --------------------------------------------------------------------------
    async def checkpoint(self, name: str) -> str | None:
        """The stored position of an incremental input."""
        def work(s: Session) -> str | None:
            row = s.get(Checkpoint, name)
            return row.value if row else None
        return await self.tx(work)

    async def set_checkpoint(self, name: str, value: str) -> None:
        """Store the position of an incremental input."""
        def work(s: Session) -> None:
            row = s.get(Checkpoint, name)
            if row is None:
                s.add(Checkpoint(name=name, value=value, updated_at=self.clock()))
            else:
                row.value = value
                row.updated_at = self.clock()
        await self.tx(work)


class _Stopped(Exception):
    """The campaign was stopped while an attempt was being written: the attempt is rolled back."""


#: Failures that cost a member a try (``uncharge`` gives it back when the trunk was to blame).
_CHARGED_FAILURES = (AttemptOutcome.CONGESTION, AttemptOutcome.FAILED, AttemptOutcome.REJECTED)
