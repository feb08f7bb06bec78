"""The copy desk: every database step of the SMS and e-mail copies (issue 17), each one transaction.
This module holds a copy's life once it is written: its claim, hand-over, the gateway's answer and
delivery reports; ``CopyDesk`` also plans the copies (``ivr.copies.plan``) and takes the members'
SMS replies (``ivr.copies.replies``).

Rules:
- a copy is written (QUEUED) before it is sent, its id the idempotency key towards Kannel and the
  SMTP relay; the unique (campaign, member, channel) makes a second copy impossible, whichever
  process or restart plans it;
- a copy moves by conditional UPDATEs only (``claim``: QUEUED -> SENDING; a delivery report never
  moves a final state back), so two senders never take the same copy and a late answer never undoes
  a later one; the claim checks again what may have changed since the copy was written (an opt-out,
  a member who left the BIN, a confirmation that makes a ladder SMS pointless, a retraction);
- a preventive message's SMS is not taken inside the quiet hours (it stays QUEUED until they end);
- a passing failure is tried again after a growing pause (30 s, doubling, at most 10 min) until
  ``retry_for_s`` after the copy was queued (or ``max_tries`` hand-overs), so an outage of the
  gateway or relay is waited out;
- the recording attached to an e-mail is audited (``recording.emailed``) in the transaction that
  opens it, so the row is committed before the path is handed back.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from ivr.copies.plan import RETRACTED_DETAIL, CopyPlan, retracted_campaigns
from ivr.copies.replies import SmsReplies
from ivr.copies.rules import CopyRules, retry_pause
from ivr.domain.channels import mask_email
from ivr.domain.vocabulary import CampaignStatus, Channel, CopyReason, CopyStatus, MessageKind, Role, Urgency
from storage import audit
from storage.models import (
    Campaign,
    Confirmation,
    Message,
    Person,
    Recording,
    RoleAssignment,
    TextCopy,
    Transcript,
    utcnow,
)
from storage.recordings import RecordingCorrupted, RecordingStore
from storage.sealed import SealError, open_transcript

__all__ = ["CopyDesk", "CopyJob", "CopyRules", "Orphan"]

log = logging.getLogger(__name__)

#: Kannel's delivery report types (``%d``): 1 delivered to the phone, 2 undelivered, 4 queued on the
#: SMSC, 8 delivered to the SMSC, 16 rejected by the SMSC.
DLR_DELIVERED, DLR_UNDELIVERED, DLR_QUEUED, DLR_SMSC, DLR_REJECTED = 1, 2, 4, 8, 16
_DLR_WORDS = {DLR_DELIVERED: "delivered", DLR_UNDELIVERED: "undelivered", DLR_QUEUED: "queued on the SMSC",
              DLR_SMSC: "delivered to the SMSC", DLR_REJECTED: "rejected by the SMSC"}
#: A copy's ``detail`` (the gateway's answer, why it failed) is cut to this length.
DETAIL_CHARS = 200


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



class CopyDesk(CopyPlan, SmsReplies):
    """The database side of the written copies: their plan (``CopyPlan``), their sending (here) and
    the members' SMS replies (``SmsReplies``)."""

    def __init__(self, engine: Engine, recordings: RecordingStore, clock: Callable[[], dt.datetime] = utcnow,
                 rules: CopyRules | None = None) -> None:
        super().__init__(engine)
        self.recordings = recordings
        self.clock = clock
        self.rules = rules or CopyRules()

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
                quiet = self._keeps_quiet_hours(s, row)
                if row.tries >= self.rules.max_tries or now >= self._give_up_at(row, quiet):
                    self._move(s, copy_id, (CopyStatus.SENDING,), status=CopyStatus.FAILED, failed_at=now,
                               detail=f"no answer from the gateway ({row.tries} tries, the last cut short)")
                    continue
                if quiet:
                    allowed_from = allowed_from or self.rules.sms_allowed_from(now)
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
                    allowed_from = allowed_from or self.rules.sms_allowed_from(now)
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
        retracted = set(s.scalars(retracted_campaigns().where(
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

    def _give_up_at(self, row: TextCopy, quiet: bool) -> dt.datetime:
        """When a copy's passing failures are no longer tried again: ``retry_for_s`` after it was
        queued, or, when it keeps the quiet hours (``quiet``: a preventive message's SMS waits for
        them), after the quiet hours it was queued in."""
        start = self.rules.sms_allowed_from(row.created_at) if quiet else row.created_at
        return start + dt.timedelta(seconds=self.rules.retry_for_s)

    @staticmethod
    def _keeps_quiet_hours(s: Session, row: TextCopy) -> bool:
        """Whether the copy waits out the quiet hours: an SMS of a message that is not urgent."""
        return row.channel is Channel.SMS and s.scalar(
            select(Message.urgency).join(Campaign, Campaign.message_id == Message.id)
            .where(Campaign.id == row.campaign_id)) is not Urgency.URGENT

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
            again = not final and row.tries < self.rules.max_tries and now < self._give_up_at(
                row, self._keeps_quiet_hours(s, row))
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


def _has_words(s: Session, campaign_id: int) -> bool:
    """Whether the campaign's message has a typed text or its sent take a transcript (yet)."""
    message = s.scalar(select(Message).join(Campaign, Campaign.message_id == Message.id)
                       .where(Campaign.id == campaign_id))
    if message is None or message.text:
        return True
    return s.scalar(select(Transcript.id).join(Recording, Recording.id == Transcript.recording_id).where(
        Recording.message_id == message.id, Recording.take == message.submitted_take).limit(1)) is not None
