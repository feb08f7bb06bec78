"""The database side of the lines people call in on: the member call-back and the coordinator's report line.

Rules:
- the caller ID is the only key (it can be spoofed): every call is counted against the caller's and
  the line's limits (``ivr.delivery.line_limits``) before anything is read, and what is told or
  stored is audited as told to, or said by, an unverified caller;
- a call-back confirmation is stored as unverified (``line_limits.UNVERIFIED_VIA``);
- a member's opt-out of calls (and back in) on the call-back line is written with its moment and
  audited as the member's, by caller ID (unverified): a coordinator sees it and can undo it. The
  number is all the line knows, so it acts on every active member whose number it is (as an SMS
  "STOP" does), leaving out those whose own channels have no calls (text only: nothing to stop);
  the way back is offered only when all of them opted out;
- a replay on the report line checks again that the caller coordinates the message's BIN, and is
  audited (``recording.played``) in the transaction that opens the recording, so the row is
  committed before the path is handed back to be played;
- the stop is offered only to a coordinator with a PIN, while the campaign runs.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.delivery.line_limits import UNVERIFIED_TEXT, UNVERIFIED_VIA, LineLimits, LineVerdict, admit_call
from ivr.delivery.members import DIALLING, campaign_members
from ivr.domain.channels import InvalidChannels, parse_channels
from ivr.domain.vocabulary import Channel, Role, Urgency
from storage import audit
from storage.db import Desk
from storage.models import Campaign, Confirmation, Message, Person, PhoneNumber, RoleAssignment
from storage.recordings import RecordingCorrupted, RecordingStore

log = logging.getLogger(__name__)

#: How the report line is named in the audit: the coordinator is known by caller ID only.
REPORT_LINE_VIA = "report line (caller ID, unverified)"
#: Who the audit names for an opt-out of calls (or back in) made on the BIN call-back line.
CALLBACK_MEMBER_ACTOR = "member (call-back line)"


@dataclass(frozen=True)
class CoordinatorReport:
    """What the report line tells a coordinator about their BIN's latest campaign, and what it needs
    to replay that campaign's message."""

    person_id: int
    message_id: int
    language: str
    confirmed: int
    members: int
    urgent: bool
    #: A drill: its replay is announced as a test.
    drill: bool


class ReplayRefused(PermissionError):
    """The caller may not replay this message on the report line (the refusal is already audited)."""


class CallerLines(Desk):
    """The call-back and report line steps of ``ivr.delivery.store.DeliveryDesk``."""

    store: RecordingStore
    clock: Callable[[], dt.datetime]

    # -- the member call-back -------------------------------------------------------------------
    async def latest_for_caller(self, caller_e164: str, limits: LineLimits = LineLimits()
                                ) -> tuple[int, int, str, Path, bool] | None | str:
        """For a member calling in: (campaign id, person id, language, recording, urgent) of their BIN's
        latest delivered message; ``"unknown"`` if the number is no member's, ``None`` if there is none,
        ``"limited"`` when this caller ID or the line is over its limits (``ivr.delivery.line_limits``;
        the call is counted before anything is read)."""
        def work(s: Session) -> tuple[int, int, str, Path, bool] | None | str:
            found = caller_and_latest_campaign(s, caller_e164, Role.MEMBER)
            if admit_call(s, "callback", caller_e164, found != "unknown", limits, self.clock()) \
                    is not LineVerdict.OPEN:
                return "limited"
            if not isinstance(found, tuple):
                return found
            person, campaign = found
            message = campaign.message
            take = next(r for r in message.recordings if r.take == message.submitted_take)
            audit.record(s, f"caller:{person.id}", "recording.played", f"message:{message.id}", via=UNVERIFIED_TEXT)
            return (campaign.id, person.id, person.language.value,
                    self.store.open_verified(Path(take.path), take.sha256), message.urgency is Urgency.URGENT)
        return await self.tx(work)

    async def confirm_callback(self, campaign_id: int, person_id: int) -> bool:
        """A member who called in confirmed the latest message: known by caller ID alone, which can be
        spoofed, so it is stored and audited as unverified (``line_limits.UNVERIFIED_VIA``)."""
        def work(s: Session) -> bool:
            if s.scalar(select(Confirmation.id).where(Confirmation.campaign_id == campaign_id,
                                                      Confirmation.person_id == person_id)):
                return False
            s.add(Confirmation(attempt_id=None, campaign_id=campaign_id, person_id=person_id,
                               confirmed_at=self.clock(), via=UNVERIFIED_VIA))
            s.flush()
            audit.record(s, f"caller:{person_id}", "confirmation.stored", f"campaign:{campaign_id}",
                         person=person_id, via=UNVERIFIED_TEXT)
            return True
        try:
            return await self.tx(work)
        except IntegrityError:
            return False

    async def calls_opted_out(self, caller_e164: str) -> bool | None:
        """What the call-back line offers the caller about BIN calls: ``False`` to stop them (a member
        whose number it is is still called), ``True`` to take them again (every such member opted
        out), ``None`` nothing (each one's own channels leave calls out: text only)."""
        def work(s: Session) -> bool | None:
            people = callable_members_on(s, caller_e164)
            return all(p.calls_opt_out_at is not None for p in people) if people else None
        return await self.tx(work)

    async def set_calls_opt_out(self, caller_e164: str, opted_out: bool) -> int:
        """A member on the call-back line, twice confirmed, stops BIN calls (``opted_out``) or takes
        them again, for every active member whose number ``caller_e164`` is (``callable_members_on``):
        written with its moment and audited per member (``member.calls_opt_out`` /
        ``member.calls_opt_in``) as said by the member, known by caller ID alone. Returns how many
        changed (0: each already was so)."""
        def work(s: Session) -> int:
            now = self.clock()
            changed = 0
            for person in callable_members_on(s, caller_e164, lock=True):
                if (person.calls_opt_out_at is not None) == opted_out:
                    continue
                person.calls_opt_out_at = now if opted_out else None
                audit.record(s, CALLBACK_MEMBER_ACTOR, "member.calls_opt_out" if opted_out else "member.calls_opt_in",
                             f"person:{person.id}", via=UNVERIFIED_TEXT, at=now.isoformat())
                changed += 1
            return changed
        return await self.tx(work)

    # -- the report line ------------------------------------------------------------------------
    async def report_for_coordinator(self, caller_e164: str, limits: LineLimits = LineLimits()
                                     ) -> CoordinatorReport | None | str:
        """For a coordinator calling in: the counts of their BIN's latest campaign and its message;
        ``"unknown"`` if the number is no coordinator's, ``None`` if there is no campaign yet,
        ``"limited"`` when this caller ID or the line is over its limits (counted first)."""
        def work(s: Session) -> CoordinatorReport | None | str:
            found = caller_and_latest_campaign(s, caller_e164, Role.COORDINATOR)
            if admit_call(s, "report", caller_e164, found != "unknown", limits, self.clock()) \
                    is not LineVerdict.OPEN:
                return "limited"
            if not isinstance(found, tuple):
                return found
            person, campaign = found
            members = len(campaign_members(s, campaign, campaign.message))
            confirmed = len(set(s.scalars(select(Confirmation.person_id).where(
                Confirmation.campaign_id == campaign.id))))
            audit.record(s, f"person:{person.id}", "campaign.report_heard", f"campaign:{campaign.id}",
                         via=REPORT_LINE_VIA)
            message = campaign.message
            return CoordinatorReport(person.id, message.id, person.language.value, confirmed, members,
                                     message.urgency is Urgency.URGENT, bool(message.drill))
        return await self.tx(work)

    async def replay_for_coordinator(self, person_id: int, message_id: int) -> Path:
        """The sent recording of a message, checksum verified, for a coordinator on the report line;
        ``recording.played`` is committed before the path is handed back.

        Raises ``ReplayRefused`` (the refusal audited) unless ``person_id`` is an active coordinator of
        the message's BIN (checked here, not only by the line that found the message),
        ``LookupError`` if the message has no sent recording, ``RecordingCorrupted`` (a security alert
        raised) if its file is missing or altered.
        """
        actor = f"person:{person_id}"

        def work(s: Session) -> Path | None:
            message = s.get(Message, message_id)
            refusal = _report_replay_refusal(s, person_id, message)
            if refusal is not None:
                audit.record(s, actor, "recording.play_refused", f"message:{message_id}", reason=refusal,
                             via=REPORT_LINE_VIA)
                return None
            take = next((r for r in message.recordings if r.take == message.submitted_take), None)
            if take is None:
                raise LookupError(f"message {message_id} has no sent recording")
            # Audited in the same transaction: if the file does not open, neither row nor play.
            audit.record(s, actor, "recording.played", f"message:{message_id}", take=take.take,
                         sha256=take.sha256, to="phone", via=REPORT_LINE_VIA)
            return self.store.open_verified(Path(take.path), take.sha256)
        try:
            found = await self.tx(work)
        except RecordingCorrupted as exc:
            # The same security alert the archive raises for a refused recording (its own committed row).
            reason = str(exc)
            log.warning("security alert: message:%d: stored recording refused: %s", message_id, reason)
            await self.tx(lambda s: audit.record(s, "system", "security.alert", f"message:{message_id}",
                                                 kind="recording_refused", reason=reason))
            raise
        if found is None:
            raise ReplayRefused(f"person {person_id} may not replay message {message_id} on the report line")
        return found

    async def stoppable_for_coordinator(self, caller_e164: str) -> int | None:
        """The campaign a coordinator calling the report line may be offered to stop: their BIN's
        latest, while it runs, and only if they have a PIN (the caller ID alone can be spoofed)."""
        def work(s: Session) -> int | None:
            found = caller_and_latest_campaign(s, caller_e164, Role.COORDINATOR)
            if not isinstance(found, tuple):
                return None
            person, campaign = found
            return campaign.id if campaign.status in DIALLING and person.pin_hash else None
        return await self.tx(work)


def caller_and_latest_campaign(s: Session, caller_e164: str, role: Role) -> tuple[Person, Campaign] | None | str:
    """The active person with ``role`` calling from ``caller_e164`` and the latest campaign of their
    BINs; ``"unknown"`` if the number is nobody's with that role, ``None`` if the BINs have no
    campaign yet. Should the number be more than one person's, the latest campaign of any of their
    BINs is the one, and the person the first (by id) of that campaign's BIN."""
    rows = s.execute(select(Person, RoleAssignment.bin_id).join(PhoneNumber).join(RoleAssignment).where(
        PhoneNumber.e164 == caller_e164, RoleAssignment.role == role, Person.active.is_(True))
        .order_by(Person.id, RoleAssignment.bin_id)).all()
    if not rows:
        return "unknown"
    campaign = s.scalars(select(Campaign).join(Message).where(Message.bin_id.in_({bin_id for _, bin_id in rows}))
                         .order_by(Campaign.id.desc()).limit(1)).first()
    if campaign is None:
        return None
    person = next(p for p, bin_id in rows if bin_id == campaign.message.bin_id)
    return person, campaign


def callable_members_on(s: Session, e164: str, *, lock: bool = False) -> list[Person]:
    """Every active member (of any BIN) whose number (first or second) ``e164`` is and whose own
    channels do not leave calls out, by id: whom an opt-out of calls by that number concerns. A
    stored choice that cannot be read counts as none (called, as the dialer counts it)."""
    query = select(Person).where(Person.active.is_(True), Person.id.in_(
        select(PhoneNumber.person_id).where(PhoneNumber.e164 == e164)), Person.id.in_(
        select(RoleAssignment.person_id).where(RoleAssignment.role == Role.MEMBER))).order_by(Person.id)
    return [p for p in s.scalars(query.with_for_update() if lock else query) if _may_be_called(p.channels)]


def _may_be_called(channels: str | None) -> bool:
    try:
        return channels is None or Channel.VOICE in parse_channels(channels)
    except InvalidChannels:
        return True


def is_coordinator_of(s: Session, person_id: int, bin_id: int) -> bool:
    """Whether the person is active and a coordinator of the BIN."""
    return s.scalar(select(RoleAssignment.id).join(Person).where(
        RoleAssignment.person_id == person_id, RoleAssignment.role == Role.COORDINATOR,
        RoleAssignment.bin_id == bin_id, Person.active.is_(True)).limit(1)) is not None


def _report_replay_refusal(s: Session, person_id: int, message: Message | None) -> str | None:
    """Why the person may not hear the message on the report line; ``None`` if they may: only an
    active coordinator of the message's BIN, and only a message that went out (it has a campaign)."""
    if message is None or not is_coordinator_of(s, person_id, message.bin_id):
        return "not a coordinator of the message's BIN"
    if s.scalar(select(Campaign.id).where(Campaign.message_id == message.id).limit(1)) is None:
        return "not sent"
    return None
