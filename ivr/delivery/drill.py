"""Drills: a "Testbericht BIN-foon" to every member of a BIN, now or on a schedule, and its reach report.

Rules:
- a drill is a message like any other (``Message.drill``): spoken by espeak-ng from the prompt
  catalogue's ``drill_message`` (or a given text) in the BIN's language, stored sealed, and approved at
  once (it needs no review: an admin, a coordinator of the BIN or the zone's police start it); the
  running service delivers it (``Chain.reconcile`` finds every approved, due message);
- a drill is preventive, never urgent: its calls respect quiet hours like any preventive campaign,
  and every prompt of its calls says it is a test (``policy.member_prompts``);
- a schedule is one row per BIN (``drill_schedules``); when its alarm fires, ``next_at`` moves on
  and the drill is created in the same transaction (persist first, then act): two processes, or an
  alarm that fires twice, make one drill (the date moves by a conditional UPDATE: only the process
  whose UPDATE changed the row makes the drill); drills missed while the service was down make one drill,
  not one per missed date;
- one drill of a BIN at a time: while one is approved or delivering, another is refused (the BIN's
  row is locked while this is checked); a scheduled drill due then is skipped, its date moving on;
- who starts or schedules a drill is checked here (not only in the web page) and audited;
- the reach report is read from the campaign's attempts and confirmations alone: *reached* means
  the message was heard (confirmed, answered without a key, or left on an answering machine), a
  *wrong number* is a number that can never ring (``invalid_number``: Q.850 causes 1, 2, 3, 22, 28, or
  refused by the destination policy, ``barred``); a failed or congested call is the network's, not the
  number's, and is only "not reached"; a member the drill never calls (``Member.called``: text only,
  opted out of calls, no number) is ``not_called``, counted apart from the phone figures (reached,
  not reached, pending) unless they confirmed or heard it all the same.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from ivr.delivery.members import campaign_members
from ivr.domain.actor import Actor
from ivr.domain.message import check_transition
from ivr.domain.phone import mask
from ivr.domain.vocabulary import (
    AttemptOutcome,
    Decision,
    MessageKind,
    MessageSource,
    MessageStatus,
    Role,
    Urgency,
)
from ivr.media.prompts import text as prompt_text
from ivr.media.tts import synthesize
from storage import audit
from storage.db import session_scope
from storage.models import (
    Bin,
    CallAttempt,
    Campaign,
    Confirmation,
    DrillSchedule,
    Message,
    Person,
    Recording,
    ReviewDecision,
    utcnow,
)
from storage.recordings import RecordingStore

#: The persistent alarm of a BIN's scheduled drill (keyed by the BIN's id, not a message's).
DRILL_ALARM = "drill"
#: How a drill's decision names its way (``review_decisions.via``): no coordinator decided.
VIA = "drill"
#: A drill's own text is spoken like a written message: at most this many characters (as ``message send``).
MAX_TEXT_CHARS = 2000
#: At most a drill a month, at least one every two years.
EVERY_MONTHS = range(1, 25)
#: The zone's local time, in which "every 3 months at 10:00" keeps its hour across summer time.
BRUSSELS = ZoneInfo("Europe/Brussels")

#: Outcomes of an attempt by which the member heard the message.
HEARD = frozenset({AttemptOutcome.CONFIRMED, AttemptOutcome.ANSWERED_NO_KEY, AttemptOutcome.VOICEMAIL})
#: Outcomes that say the number itself is wrong (it can never ring).
WRONG_NUMBER = frozenset({AttemptOutcome.INVALID_NUMBER})


class DrillError(ValueError):
    """A drill that cannot be started or scheduled as asked (no such BIN, bad text, bad schedule)."""


class DrillRefused(PermissionError):
    """The person may not start or schedule a drill for this BIN."""


# -- who may ------------------------------------------------------------------------------------
def may_drill(s: Session, actor: Actor, bin_: Bin) -> bool:
    """Admins (and the operator), the BIN's coordinators and the zone's police may drill a BIN."""
    if actor.admin:
        return True
    if actor.person_id is None:
        return False
    person = s.get(Person, actor.person_id)
    if person is None or not person.active:
        return False
    for role in person.roles:
        if role.role is Role.ADMIN:
            return True
        if role.role is Role.COORDINATOR and role.bin_id == bin_.id:
            return True
        if role.role in (Role.POLICE_OFFICER, Role.POLICE_APPROVER) and role.zone_id in (None, bin_.zone_id):
            return True
    return False


def _bin_for(s: Session, bin_number: int, actor: Actor) -> Bin:
    bin_ = s.scalars(select(Bin).where(Bin.number == bin_number)).first()
    if bin_ is None:
        raise DrillError(f"no BIN number {bin_number}")
    if not may_drill(s, actor, bin_):
        raise DrillRefused(f"{actor.label} may not drill BIN {bin_number}: only admins, its coordinators "
                           f"and the zone's police may")
    return bin_


def drill_text(language: str, text: str | None = None) -> str:
    """The words of a drill: ``text`` (whitespace tidied, checked), or the catalogue's test message."""
    if text is None:
        return prompt_text("drill_message", language)
    words = " ".join(text.split())
    if not words:
        raise DrillError("the drill's text is empty: give the words to speak, or leave --text out")
    if len(words) > MAX_TEXT_CHARS:
        raise DrillError(f"the drill's text has {len(words)} characters; at most {MAX_TEXT_CHARS} can be spoken")
    return words


# -- a drill now --------------------------------------------------------------------------------
#: A drill in these states is still going out: a second drill of the same BIN waits for it to end.
RUNNING = (MessageStatus.APPROVED, MessageStatus.DELIVERING)


def running_drill(s: Session, bin_id: int) -> int | None:
    """The message id of the BIN's drill still going out (approved or delivering), or ``None``.

    Locks the BIN's row first (PostgreSQL; SQLite serialises its writers), so that two starts of a
    drill of one BIN -- a double click, the web and the command line -- are taken one after the other
    and the second sees the first's drill."""
    s.execute(select(Bin.id).where(Bin.id == bin_id).with_for_update())
    return s.scalars(select(Message.id).where(Message.bin_id == bin_id, Message.drill.is_(True),
                                              Message.status.in_(RUNNING))
                     .order_by(Message.id).limit(1)).first()


def _refuse_a_second_drill(s: Session, bin_id: int) -> None:
    running = running_drill(s, bin_id)
    if running is not None:
        number = s.get_one(Bin, bin_id).number
        raise DrillError(f"BIN {number} has a drill still going out (drill message {running}): wait until it is "
                         "done, or stop it, before starting another")


def create_drill(s: Session, store: RecordingStore, bin_id: int, text: str, audio: Path, actor_label: str,
                 author_id: int | None, now: dt.datetime, *, custom: bool) -> int:
    """The drill message of ``bin_id``, spoken into ``audio``: stored, and approved for delivery now, in
    the caller's transaction (the service's next reconciliation starts its campaign). Returns its id.

    ``text`` is the spoken words; ``custom`` says whether they were given (else the catalogue's).
    Raises ``DrillError`` while another drill of the BIN is still going out (``running_drill``)."""
    _refuse_a_second_drill(s, bin_id)
    message = Message(bin_id=bin_id, urgency=Urgency.PREVENTIVE, status=MessageStatus.DRAFT, text=text,
                      source=MessageSource.TEXT, kind=MessageKind.ALERT, created_at=now, created_by_id=author_id,
                      drill=True)
    s.add(message)
    s.flush()
    stored = store.store(audio, message.id, 1)
    s.add(Recording(message_id=message.id, path=str(stored.path), sha256=stored.sha256,
                    duration_s=stored.duration_s, sample_rate=stored.sample_rate, take=1,
                    end_reason="text", created_at=now))
    audit.record(s, actor_label, "recording.stored", f"message:{message.id}", take=1, sha256=stored.sha256,
                 seconds=round(stored.duration_s, 2), end_reason="text")
    for status in (MessageStatus.RECORDED, MessageStatus.APPROVED):
        check_transition(message.status, status)
        message.status = status
    message.submitted_at = now
    message.submitted_take = 1
    message.deliver_at = now
    s.add(ReviewDecision(message_id=message.id, person_id=author_id, decision=Decision.FORWARD_NOW, via=VIA,
                         decided_at=now))
    s.flush()
    audit.record(s, actor_label, "drill.started", f"message:{message.id}", bin_id=bin_id,
                 text="custom" if custom else "catalogue")
    return message.id


def start_drill(engine: Engine, store: RecordingStore, bin_number: int, actor: Actor, *,
                text: str | None = None, clock: Callable[[], dt.datetime] = utcnow) -> int:
    """A drill of BIN ``bin_number`` now, by ``actor`` (checked): the test message is spoken in the BIN's
    language, stored and approved; the running service calls every member. Returns the message id
    (blocking: espeak-ng speaks it here). Raises ``DrillError`` or ``DrillRefused``."""
    with session_scope(engine) as s:
        bin_ = _bin_for(s, bin_number, actor)
        bin_id, language = bin_.id, bin_.language.value
        _refuse_a_second_drill(s, bin_id)  # at once, before espeak-ng speaks (``create_drill`` checks again)
    words = drill_text(language, text)
    with tempfile.TemporaryDirectory() as tmp:
        audio = synthesize(words, language, Path(tmp) / "drill.wav")
        with session_scope(engine) as s:
            bin_ = _bin_for(s, bin_number, actor)  # still there, still allowed, after speaking
            return create_drill(s, store, bin_id, words, audio, actor.label, actor.person_id, clock(),
                                custom=text is not None)


# -- on a schedule --------------------------------------------------------------------------------
def add_months(when: dt.datetime, months: int, tz: dt.tzinfo = BRUSSELS) -> dt.datetime:
    """``when`` plus ``months`` calendar months at the same local hour (the day clamped to the month's
    last: 31 January + 1 month is 28 or 29 February), in UTC."""
    local = when.astimezone(tz)
    index = local.month - 1 + months
    year, month = local.year + index // 12, index % 12 + 1
    last_day = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    moved = local.replace(tzinfo=None).replace(year=year, month=month, day=min(local.day, last_day))
    return moved.replace(tzinfo=tz).astimezone(dt.timezone.utc)


def next_drill_at(next_at: dt.datetime, every_months: int, now: dt.datetime, tz: dt.tzinfo = BRUSSELS) -> dt.datetime:
    """The schedule's next date once the drill due at ``next_at`` goes: the first date after ``now``
    (dates missed while the service was down are skipped: one drill goes for them all)."""
    step = 1
    later = add_months(next_at, every_months, tz)
    while later <= now:
        step += 1
        later = add_months(next_at, every_months * step, tz)
    return later


def schedule_drill(s: Session, bin_number: int, every_months: int, first_at: dt.datetime, actor: Actor,
                   now: dt.datetime | None = None) -> DrillSchedule:
    """Drill BIN ``bin_number`` every ``every_months`` months from ``first_at`` (UTC, in the future);
    replaces the BIN's schedule if it had one. The running service sets the alarm (its reconciliation)."""
    bin_ = _bin_for(s, bin_number, actor)
    if every_months not in EVERY_MONTHS:
        raise DrillError(f"every {every_months} months is not a schedule: give 1 to {EVERY_MONTHS[-1]}")
    if first_at.tzinfo is None:
        raise DrillError("the first drill's time needs its time zone")
    now = now or utcnow()
    if first_at <= now:
        raise DrillError(f"the first drill ({first_at.isoformat(timespec='minutes')}) is in the past")
    schedule = s.scalars(select(DrillSchedule).where(DrillSchedule.bin_id == bin_.id)).first()
    if schedule is None:
        schedule = DrillSchedule(bin_id=bin_.id, created_at=now)
        s.add(schedule)
    schedule.every_months = every_months
    schedule.next_at = first_at
    schedule.created_by = actor.label[:200]
    s.flush()
    audit.record(s, actor.label, "drill.scheduled", f"bin:{bin_number}", every_months=every_months,
                 next_at=first_at.isoformat(timespec="minutes"))
    return schedule


def cancel_drill_schedule(s: Session, bin_number: int, actor: Actor) -> bool:
    """Remove the BIN's drill schedule; ``False`` if it had none (the service's alarm then does nothing)."""
    bin_ = _bin_for(s, bin_number, actor)
    schedule = s.scalars(select(DrillSchedule).where(DrillSchedule.bin_id == bin_.id)).first()
    if schedule is None:
        return False
    s.delete(schedule)
    audit.record(s, actor.label, "drill.unscheduled", f"bin:{bin_number}", every_months=schedule.every_months)
    return True


@dataclass(frozen=True)
class ScheduleLine:
    """One BIN's drill schedule, as the list shows it."""

    bin_number: int
    bin_name: str
    every_months: int
    next_at: dt.datetime
    created_by: str


def drill_schedules(s: Session, bin_number: int | None = None) -> list[ScheduleLine]:
    """Every drill schedule (or one BIN's), by BIN number."""
    query = select(DrillSchedule, Bin).join(Bin, Bin.id == DrillSchedule.bin_id).order_by(Bin.number)
    if bin_number is not None:
        query = query.where(Bin.number == bin_number)
    return [ScheduleLine(b.number, b.name, d.every_months, _utc(d.next_at), d.created_by)
            for d, b in s.execute(query).all()]


def schedule_times(s: Session) -> dict[int, dt.datetime]:
    """BIN id -> when its next scheduled drill goes (for the service's alarms)."""
    return {bin_id: _utc(at) for bin_id, at in s.execute(select(DrillSchedule.bin_id, DrillSchedule.next_at))}


def fire_scheduled_drill(engine: Engine, store: RecordingStore, bin_id: int, now: dt.datetime,
                         tz: dt.tzinfo = BRUSSELS) -> tuple[int | None, dt.datetime | None]:
    """The drill alarm of ``bin_id`` fired: if its schedule is due, the schedule moves on and the drill is
    made, in one transaction. Returns (the drill's message id or ``None``, the schedule's next date or
    ``None`` when there is no schedule). Blocking (espeak-ng)."""
    with session_scope(engine) as s:
        schedule = s.scalars(select(DrillSchedule).where(DrillSchedule.bin_id == bin_id)).first()
        if schedule is None:
            return None, None
        if _utc(schedule.next_at) > now:
            return None, _utc(schedule.next_at)  # woke early, or the schedule moved: its alarm comes again
        language = schedule.bin.language.value
    words = drill_text(language)
    with tempfile.TemporaryDirectory() as tmp:
        audio = synthesize(words, language, Path(tmp) / "drill.wav")
        with session_scope(engine) as s:
            schedule = s.scalars(select(DrillSchedule).where(DrillSchedule.bin_id == bin_id)).first()
            if schedule is None or _utc(schedule.next_at) > now:  # removed, or another process went first
                return None, None if schedule is None else _utc(schedule.next_at)
            schedule_id, bin_number, stored_at = schedule.id, schedule.bin.number, schedule.next_at
            due_at = _utc(stored_at)
            next_at = next_drill_at(due_at, schedule.every_months, now, tz)
            # The date moves on only if nobody moved it since it was read: the read above is not locked, and
            # two processes (or an alarm that fired twice) may both have found the drill due. The loser
            # changes no row (PostgreSQL re-checks the condition once the winner commits) and makes no drill.
            moved = s.execute(update(DrillSchedule)
                              .where(DrillSchedule.id == schedule_id, DrillSchedule.next_at == stored_at)
                              .values(next_at=next_at).execution_options(synchronize_session=False))
            if moved.rowcount != 1:
                later = s.scalar(select(DrillSchedule.next_at).where(DrillSchedule.id == schedule_id))
                return None, None if later is None else _utc(later)
            s.expire(schedule)
            running = running_drill(s, bin_id)
            if running is not None:
                # The date moves on all the same: the members are being called for a drill already.
                audit.record(s, "system", "drill.schedule_skipped", f"bin:{bin_number}", running=running,
                             due_at=due_at.isoformat(timespec="minutes"),
                             next_at=next_at.isoformat(timespec="minutes"))
                return None, next_at
            message_id = create_drill(s, store, bin_id, words, audio, f"schedule:{schedule_id}", None, now,
                                      custom=False)
            audit.record(s, "system", "drill.schedule_fired", f"bin:{bin_number}", message=message_id,
                         due_at=due_at.isoformat(timespec="minutes"),
                         next_at=next_at.isoformat(timespec="minutes"))
            return message_id, next_at


# -- the reach report -----------------------------------------------------------------------------
@dataclass(frozen=True)
class WrongNumber:
    """A member's number that can never ring, found by the drill."""

    person_id: int
    name: str
    number: str
    rank: str
    #: ``invalid_number`` (the network said so: Q.850 ``cause``) or ``barred`` (our destination policy).
    why: str
    cause: int | None


@dataclass(frozen=True)
class ReachLine:
    """One member in a reach report."""

    person_id: int
    name: str
    number: str
    #: ``confirmed``, ``reached`` (heard it, no key), ``machine`` (left on an answering machine),
    #: ``not_reached``, ``pending`` (the campaign still runs and may yet reach them) or ``not_called``
    #: (the drill does not call them: text only, opted out of calls, no number).
    state: str
    #: The last outcome of a call to them (``busy``, ``no_answer``...), empty if never called.
    last_outcome: str
    attempts: int


@dataclass(frozen=True)
class ReachReport:
    """Who a drill reached, and the wrong numbers it found."""

    bin_number: int
    bin_name: str
    message_id: int
    campaign_id: int | None
    status: str
    members: list[ReachLine] = field(default_factory=list)
    reached: int = 0
    confirmed: int = 0
    not_reached: int = 0
    #: Members still being called (a running campaign).
    pending: int = 0
    #: Members the drill does not call (text only, opted out of calls): in no phone figure.
    not_called: int = 0
    wrong_numbers: list[WrongNumber] = field(default_factory=list)
    created_at: dt.datetime | None = None

    def counts(self) -> dict[str, int]:
        """The figures: members, reached (confirmed included), confirmed, not reached, pending, not called
        (reached + not reached + pending + not called = members), wrong numbers."""
        return {"members": len(self.members), "reached": self.reached, "confirmed": self.confirmed,
                "not_reached": self.not_reached, "pending": self.pending, "not_called": self.not_called,
                "wrong_numbers": len(self.wrong_numbers)}

    def to_json(self) -> dict[str, object]:
        """The report as plain data (numbers masked)."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat(timespec="seconds") if self.created_at else None
        data["counts"] = self.counts()
        return data


def reach_report(s: Session, message_id: int) -> ReachReport:
    """The reach report of drill ``message_id`` (``LookupError`` if there is no such drill)."""
    message = s.get(Message, message_id)
    if message is None or not message.drill:
        raise LookupError(f"no drill with message id {message_id}")
    bin_ = message.bin
    campaign = s.scalars(select(Campaign).where(Campaign.message_id == message_id)).first()
    if campaign is None:
        return ReachReport(bin_.number, bin_.name, message_id, None, message.status.value,
                           created_at=_utc(message.created_at))
    members = campaign_members(s, campaign, message)
    attempts = s.scalars(select(CallAttempt).where(CallAttempt.campaign_id == campaign.id)
                         .order_by(CallAttempt.person_id, CallAttempt.attempt_no)).all()
    confirmed = set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == campaign.id)))
    names = {p.id: p.name for p in s.scalars(select(Person).where(
        Person.id.in_([m.view.person_id for m in members])))}
    by_person: dict[int, list[CallAttempt]] = {}
    for a in attempts:
        by_person.setdefault(a.person_id, []).append(a)
    running = campaign.status.value in ("scheduled", "running")
    states = {m.view.person_id: _reach_state(m.view.person_id in confirmed, by_person.get(m.view.person_id, []),
                                             running) for m in members}
    lines: list[ReachLine] = []
    wrong: list[WrongNumber] = []
    for m in members:
        pid = m.view.person_id
        own = by_person.get(pid, [])
        state = states[pid]
        if m.covered_by is not None and state in ("not_reached", "pending") and not own:
            state = states.get(m.covered_by, state)  # shares the number of a member who was called
        if not m.called and state in ("not_reached", "pending"):
            state = "not_called"  # nobody waits for their call: they are no phone figure
        number = m.view.numbers[0][1] if m.view.numbers else ""
        last = next((a.outcome.value for a in reversed(own) if a.outcome is not None), "")
        lines.append(ReachLine(pid, names.get(pid, ""), mask(number) if number else "-", state, last, len(own)))
        seen: set[str] = set()
        for a in own:
            if a.outcome in WRONG_NUMBER and a.e164 not in seen:
                seen.add(a.e164)
                wrong.append(WrongNumber(pid, names.get(pid, ""), mask(a.e164), a.rank.value,
                                         "barred" if a.dial_outcome == "barred" else "invalid_number",
                                         a.hangup_cause))
    return ReachReport(
        bin_.number, bin_.name, message_id, campaign.id, campaign.status.value, members=lines,
        reached=sum(1 for line in lines if line.state in ("confirmed", "reached", "machine")),
        confirmed=sum(1 for line in lines if line.state == "confirmed"),
        not_reached=sum(1 for line in lines if line.state == "not_reached"),
        pending=sum(1 for line in lines if line.state == "pending"),
        not_called=sum(1 for line in lines if line.state == "not_called"),
        wrong_numbers=wrong, created_at=_utc(message.created_at))


def _reach_state(confirmed: bool, attempts: list[CallAttempt], running: bool) -> str:
    if confirmed:
        return "confirmed"
    outcomes = {a.outcome for a in attempts}
    if AttemptOutcome.ANSWERED_NO_KEY in outcomes:
        return "reached"
    if AttemptOutcome.VOICEMAIL in outcomes:
        return "machine"
    return "pending" if running else "not_reached"


def latest_drills(s: Session, bin_number: int, limit: int = 5) -> list[int]:
    """The message ids of the BIN's latest drills, newest first."""
    return list(s.scalars(select(Message.id).join(Bin, Bin.id == Message.bin_id)
                          .where(Bin.number == bin_number, Message.drill.is_(True))
                          .order_by(Message.id.desc()).limit(limit)))


def campaign_is_drill(s: Session, campaign_id: int) -> bool:
    """Whether the campaign delivers a drill (its calls say it is a test)."""
    return bool(s.scalar(select(Message.drill).join(Campaign, Campaign.message_id == Message.id)
                         .where(Campaign.id == campaign_id)))


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
