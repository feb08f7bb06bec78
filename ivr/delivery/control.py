"""The brakes: stop a campaign, cancel a "later" message, retract a message, call the unconfirmed again.

One permission rule for all four, whatever the way in (command line, web console, report line):
the message's author, its BIN's coordinators, admins (in scope) and the server's operator at the
command line (``Actor.operator``) may; nobody else. A refusal is audited (and committed) before
``ControlError`` says why.

Rules:
- a stop locks the campaign's row, as ``DeliveryDesk.begin_attempt`` does, so no call starts after
  it; calls already up finish their sentence (no hang-up) and keep their outcome; the stop's time
  is never before the last attempt it let through;
- a cancelled "later" message is never delivered: ``DeliveryDesk.start_campaign`` only starts an
  approved message, and re-reads it under the write lock (its alarm still fires, and does nothing);
- a retraction (``MessageKind.CANCELLATION``) goes to exactly those who received the first message
  (``ivr.delivery.members.recipients``) and goes WITHOUT review: the person retracting may already
  stop the first message, it can only reach people who heard that one, and every minute counts
  (Hawaii 2018: 38 minutes to correct a false alert). A first campaign still running is stopped
  in the retraction's own transaction, so nobody gets the first message after its retraction;
- a re-notify is a new round of the same campaign (``Campaign.round``): everyone who has not
  confirmed is called again with fresh retries; a finished or stopped campaign runs again (a stop
  is undone by a re-notify, which is audited like the stop).
Functions run in the caller's transaction (``Session``), except ``submit_retraction`` (its own).
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ivr.delivery.lines_store import caller_and_latest_campaign
from ivr.delivery.members import recipients
from ivr.delivery.outcome import placed
from ivr.directory.pin_gate import PinRules, check_pin, pin_key
from ivr.domain.actor import Actor
from ivr.domain.message import check_transition
from ivr.domain.vocabulary import CampaignStatus, Decision, MessageKind, MessageSource, MessageStatus, Role
from ivr.media.prompts import text as prompt_text
from storage import audit
from storage.db import session_scope
from storage.models import (
    CallAttempt, Campaign, Confirmation, Message, Person, Recording, ReviewDecision, RoleAssignment,
)
from storage.recordings import RecordingStore

log = logging.getLogger(__name__)

#: Message statuses a "later" message can be cancelled in (before any campaign exists).
CANCELLABLE = (MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS, MessageStatus.AWAITING_APPROVAL,
               MessageStatus.APPROVED)
#: Campaign statuses in which calls may still start (a stop ends them).
RUNNING = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)
#: The longest typed retraction (as a typed message: ``ivr.police_line.written.MAX_TEXT_CHARS``).
MAX_TEXT_CHARS = 2000
#: The report line's name in PIN attempts and their audit rows.
REPORT_LINE = "report"


class ControlError(Exception):
    """A refusal the person asking sees: not allowed, unknown, or not in a state for it (says why)."""


@dataclass(frozen=True)
class StopResult:
    """A campaign was stopped: when, and where its members stood."""

    campaign_id: int
    message_id: int
    stopped_at: dt.datetime
    members: int
    confirmed: int
    #: Members no call was ever placed to (the stop came first).
    never_called: int


@dataclass(frozen=True)
class Renotified:
    """A new round of a campaign started: its number, and how many members it calls again."""

    campaign_id: int
    round: int
    members: int


# -- who may ------------------------------------------------------------------------------------
def may_control(s: Session, actor: Actor, message_id: int) -> bool:
    """May ``actor`` stop, cancel, retract or re-notify message ``message_id``? (``ControlError`` if
    there is no such message.)"""
    return _refusal(s, actor, _message(s, message_id)) is None


def _refusal(s: Session, actor: Actor, message: Message) -> str | None:
    if actor.person_id is None:
        return None if actor.admin else "not a known person"  # the server's operator
    person = s.get(Person, actor.person_id)
    if person is None or not person.active:
        return f"person {actor.person_id} is not an active person"
    if message.created_by_id == person.id:
        return None
    zone_id = message.bin.zone_id
    for role in s.scalars(select(RoleAssignment).where(RoleAssignment.person_id == person.id)):
        if role.role is Role.COORDINATOR and role.bin_id == message.bin_id:
            return None
        if role.role is Role.ADMIN and role.zone_id in (None, zone_id) and role.bin_id in (None, message.bin_id):
            return None
    return "only the message's author, its BIN's coordinators and admins may"


def _require(s: Session, actor: Actor, message: Message, action: str) -> None:
    """Refuse (audited and committed first: the refusal must outlive the caller's rollback)."""
    why = _refusal(s, actor, message)
    if why is None:
        return
    audit.record(s, actor.label, f"{action}.refused", f"message:{message.id}", why=why)
    s.commit()
    raise ControlError(f"{action} of message {message.id} refused: {why}")


def _message(s: Session, message_id: int, lock: bool = False) -> Message:
    message = s.get(Message, message_id, with_for_update=lock)
    if message is None:
        raise ControlError(f"no message {message_id}")
    return message


def _campaign(s: Session, campaign_id: int) -> Campaign:
    # PostgreSQL: the row is locked, so a concurrent attempt (``begin_attempt``) or stop waits.
    campaign = s.scalars(select(Campaign).where(Campaign.id == campaign_id).with_for_update()).first()
    if campaign is None:
        raise ControlError(f"no campaign {campaign_id}")
    return campaign


# -- stop ---------------------------------------------------------------------------------------
def stop_campaign(s: Session, campaign_id: int, actor: Actor, now: dt.datetime) -> StopResult:
    """Stop a running (or scheduled) campaign: no new call starts; calls up finish."""
    campaign = _campaign(s, campaign_id)
    message = campaign.message
    _require(s, actor, message, "campaign.stop")
    if campaign.status not in RUNNING:
        raise ControlError(f"campaign {campaign_id} is {_status_word(campaign.status)}: nothing to stop")
    campaign.status = CampaignStatus.CANCELLED
    campaign.stopped_by = actor.label
    # SQLite: this write takes the database's lock, so the attempts read next are all there will be.
    s.flush()
    last_dialled = s.scalar(select(func.max(CallAttempt.dialled_at)).where(CallAttempt.campaign_id == campaign_id))
    stopped_at = now if last_dialled is None else max(now, last_dialled)
    campaign.stopped_at = stopped_at
    if message.status is MessageStatus.DELIVERING:
        check_transition(message.status, MessageStatus.CANCELLED)
        message.status = MessageStatus.CANCELLED
    members = recipients(s, message)
    confirmed = len(set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == campaign_id))))
    called = {pid for pid, dial in s.execute(select(CallAttempt.person_id, CallAttempt.dial_outcome).where(
        CallAttempt.campaign_id == campaign_id)) if placed(dial)}
    never_called = sum(1 for pid in members if pid not in called)
    audit.record(s, actor.label, "campaign.stopped", f"campaign:{campaign_id}", message=message.id,
                 members=len(members), confirmed=confirmed, never_called=never_called)
    return StopResult(campaign_id, message.id, stopped_at, len(members), confirmed, never_called)


def _status_word(status: CampaignStatus) -> str:
    return "stopped" if status is CampaignStatus.CANCELLED else status.value


# -- cancel a "later" message --------------------------------------------------------------------
def cancel_message(s: Session, message_id: int, actor: Actor, now: dt.datetime) -> None:
    """Cancel a message before it goes (approved for later, or still with the coordinators)."""
    message = _message(s, message_id, lock=True)
    _require(s, actor, message, "message.cancel")
    campaign_id = s.scalar(select(Campaign.id).where(Campaign.message_id == message_id))
    if campaign_id is not None:
        raise ControlError(f"message {message_id} is being delivered: stop its campaign instead "
                           f"(binfoon campaign stop {campaign_id})")
    if message.status not in CANCELLABLE:
        raise ControlError(f"message {message_id} is {message.status.value}: it can no longer be cancelled")
    previous = message.status
    check_transition(message.status, MessageStatus.CANCELLED)
    message.status = MessageStatus.CANCELLED
    s.flush()  # SQLite: the write lock; a campaign started meanwhile by the service shows now
    if s.scalar(select(Campaign.id).where(Campaign.message_id == message_id)) is not None:
        raise ControlError(f"message {message_id} started its delivery just now: stop its campaign instead")
    audit.record(s, actor.label, "message.cancelled", f"message:{message_id}", was=previous.value,
                 deliver_at=message.deliver_at.isoformat() if message.deliver_at else None, at=now.isoformat())


def live_retraction(s: Session, message_id: int) -> int | None:
    """The id of the retraction of ``message_id`` that stands (not rejected or cancelled), if any: a
    retracted message is neither retracted again nor sent again (re-notify)."""
    return s.scalar(select(Message.id).where(
        Message.follow_up_of_id == message_id, Message.kind == MessageKind.CANCELLATION,
        Message.status.not_in((MessageStatus.REJECTED, MessageStatus.CANCELLED))).order_by(Message.id).limit(1))


# -- re-notify ----------------------------------------------------------------------------------
def renotify(s: Session, campaign_id: int, actor: Actor, now: dt.datetime) -> Renotified:
    """A new round: everyone who has not confirmed is called again (a done or stopped campaign runs again)."""
    campaign = _campaign(s, campaign_id)
    message = campaign.message
    _require(s, actor, message, "campaign.renotify")
    if campaign.status is CampaignStatus.SCHEDULED:
        raise ControlError(f"campaign {campaign_id} has not started yet: its members are all still to be called")
    retraction = live_retraction(s, message.id)
    if retraction is not None:
        raise ControlError(f"campaign {campaign_id}: message {message.id} is retracted (message {retraction}): "
                           f"it is not sent again")
    confirmed = set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == campaign_id)))
    again = [pid for pid in recipients(s, message) if pid not in confirmed]
    if not again:
        raise ControlError(f"campaign {campaign_id}: every member has confirmed, nobody to call again")
    was = campaign.status
    campaign.round = (campaign.round or 1) + 1
    campaign.round_started_at = now
    campaign.status = CampaignStatus.RUNNING
    campaign.finished_at = None
    if message.status is not MessageStatus.DELIVERING:
        check_transition(message.status, MessageStatus.DELIVERING)
        message.status = MessageStatus.DELIVERING
    audit.record(s, actor.label, "campaign.renotified", f"campaign:{campaign_id}", round=campaign.round,
                 members=len(again), was=_status_word(was))
    return Renotified(campaign_id, campaign.round, len(again))


# -- retraction ---------------------------------------------------------------------------------
def retraction_text(language: str) -> str:
    """The prepared retraction ("Vergeet het vorige bericht ...") in ``language`` (nl, fr, de)."""
    return prompt_text("retraction_default", language)


def submit_retraction(engine: Engine, store: RecordingStore, message_id: int, actor: Actor, *,
                      text: str | None = None, audio: Path | None = None) -> int:
    """Retract ``message_id``: a cancellation (typed ``text``, spoken ``audio``, or the prepared
    text) that goes, approved at once, to exactly those who received it. Returns the new message's id.

    One transaction: the retraction, its recording, its approval and the stop of a first campaign
    still running are all written, or none (the sealed file of a failed one is left unreferenced)."""
    from ivr.media.tts import synthesize, to_telephone_wav

    if text is not None and audio is not None:
        raise ControlError("give the retraction as text or as audio, not both")
    if text is not None:
        text = " ".join(text.split())
        if not text:
            raise ControlError("the retraction's text is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise ControlError(f"the retraction has {len(text)} characters; at most {MAX_TEXT_CHARS} can be spoken")
    if audio is not None and not audio.is_file():
        raise ControlError(f"{audio}: no such file")
    with session_scope(engine) as s:
        first = _retractable(s, message_id, actor)
        language = first.bin.language.value
    if text is None and audio is None:
        text = retraction_text(language)
    with tempfile.TemporaryDirectory() as tmp:
        spoken = Path(tmp) / "retraction.wav"
        if audio is not None:
            try:
                to_telephone_wav(audio, spoken)
            except Exception as exc:  # noqa: BLE001 - pydub/ffmpeg say little more than "cannot decode"
                raise ControlError(f"{audio}: not an audio file that can be read ({exc.__class__.__name__})") from None
        else:
            assert text is not None
            synthesize(text, language, spoken)
        now = dt.datetime.now(dt.timezone.utc)
        with session_scope(engine) as s:
            first = _retractable(s, message_id, actor)  # again, in the writing transaction
            return _write_retraction(s, store, first, actor, text if audio is None else None, spoken, now)


def _retractable(s: Session, message_id: int, actor: Actor) -> Message:
    """The message to retract, if ``actor`` may and it can be (else ``ControlError``)."""
    first = _message(s, message_id)
    _require(s, actor, first, "message.retract")
    if first.kind is MessageKind.CANCELLATION:
        raise ControlError(f"message {message_id} is itself a retraction")
    if s.scalar(select(Campaign.id).where(Campaign.message_id == message_id)) is None:
        raise ControlError(f"message {message_id} was never delivered: cancel it instead "
                           f"(binfoon message cancel {message_id})")
    earlier = live_retraction(s, message_id)
    if earlier is not None:
        raise ControlError(f"message {message_id} is retracted already (message {earlier})")
    return first


def _write_retraction(s: Session, store: RecordingStore, first: Message, actor: Actor, text: str | None,
                      spoken: Path, now: dt.datetime) -> int:
    """The retraction's message, sealed recording and approval (no review), after stopping the first."""
    from ivr.media.compare import read_wav_mono, speech_span

    campaign_id = s.scalars(select(Campaign.id).where(Campaign.message_id == first.id)).one()
    if s.scalar(select(Campaign.status).where(Campaign.id == campaign_id)) in RUNNING:
        stop_campaign(s, campaign_id, actor, now)  # nobody may get the first message after its retraction
    message = Message(bin_id=first.bin_id, urgency=first.urgency, status=MessageStatus.DRAFT, text=text,
                      source=MessageSource.TEXT, created_at=now, follow_up_of_id=first.id,
                      kind=MessageKind.CANCELLATION, created_by_id=actor.person_id)
    s.add(message)
    s.flush()
    stored = store.store(spoken, message.id, 1)
    samples, rate = read_wav_mono(spoken)
    span = speech_span(samples, rate)
    s.add(Recording(message_id=message.id, path=str(stored.path), sha256=stored.sha256, duration_s=stored.duration_s,
                    sample_rate=stored.sample_rate, take=1, speech_s=round(0.0 if span is None else span[1] - span[0], 3),
                    end_reason="text", created_at=now))
    audit.record(s, actor.label, "recording.stored", f"message:{message.id}", take=1, sha256=stored.sha256,
                 seconds=round(stored.duration_s, 2), end_reason="text")
    for status in (MessageStatus.RECORDED, MessageStatus.APPROVED):
        check_transition(message.status, status)
        message.status = status
    message.submitted_at, message.submitted_take, message.deliver_at = now, 1, None
    # No review (see the module's rules): the decision is stored like a coordinator's, by the retractor.
    s.add(ReviewDecision(message_id=message.id, person_id=actor.person_id, decision=Decision.FORWARD_NOW,
                         via="retraction", decided_at=now))
    audit.record(s, actor.label, "message.submitted", f"message:{message.id}", take=1, source="text")
    audit.record(s, actor.label, "message.retraction", f"message:{message.id}", retracts=first.id,
                 review="none (a retraction goes at once)")
    return message.id


# -- the report line's stop key -----------------------------------------------------------------
def stop_with_pin(s: Session, caller_e164: str, campaign_id: int, pin: str, rules: PinRules,
                  now: dt.datetime) -> bool:
    """A coordinator on the report line stops ``campaign_id`` with their PIN (checked, counted and locked
    out like every PIN line: ``ivr.directory.pin_gate``; the caller ID alone can be spoofed). ``False``
    if not stopped (wrong PIN, locked, not allowed, no longer running)."""
    found = caller_and_latest_campaign(s, caller_e164, Role.COORDINATOR)
    person = found[0] if isinstance(found, tuple) else None
    verdict = check_pin(s, rules, pin_key(caller_e164), person, pin, now, line=REPORT_LINE)
    if verdict.person is None:
        return False
    try:
        stop_campaign(s, campaign_id, Actor(f"phone:person:{verdict.person.id}", verdict.person.id), now)
    except ControlError as exc:
        log.info("report line: campaign %d not stopped: %s", campaign_id, exc)
        return False
    return True
