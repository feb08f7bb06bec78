"""Members' SMS replies to their copies: "1"/"OK" confirms, "STOP"/"START" (issue 17). ``SmsReplies``
is a part of ``ivr.copies.store.CopyDesk``.

Rules:
- a member's SMS reply is taken once (unique ``gateway_ref``): "1"/"OK" confirms the newest campaign
  that sent that very number an SMS copy or called it (``Confirmation``, which the dialer reads: their
  calls stop; unverified: a sender's number can be faked), "STOP"/"START" set or clear the SMS opt-out
  of whoever gets their SMS on that number; each is audited.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.copies.contacts import load_contacts
from ivr.delivery.members import RECEIVED_COPIES
from ivr.domain.channels import reply_action
from ivr.domain.phone import mask
from ivr.domain.vocabulary import AttemptStatus, Channel, CopyStatus
from storage import audit
from storage.db import Desk
from storage.models import CallAttempt, Campaign, Confirmation, Person, PhoneNumber, SmsReply, TextCopy

log = logging.getLogger(__name__)

#: How long after it was sent (or its member was called) an SMS reply "1" still confirms a campaign.
REPLY_WINDOW = dt.timedelta(hours=48)


class SmsReplies(Desk):
    """The SMS replies of ``ivr.copies.store.CopyDesk``."""

    clock: Callable[[], dt.datetime]

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
        """A "STOP": the member's SMS opt-out (its first moment kept) and their queued SMS copies
        cancelled; audited when either changed something."""
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
