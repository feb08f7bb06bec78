"""SQLAlchemy 2 models: the database is the single source of truth for every state that matters.

Rules: UTC timezone-aware datetimes (``UtcDateTime``: every datetime read back is aware UTC);
enums (the vocabulary of ``ivr.domain.vocabulary``) stored as their values, strings (portable
between SQLite and PostgreSQL, readable in dumps); a call attempt's id is a UUID string that is
also the Asterisk Originate ChannelId, so every AMI event maps back to the row written before the
call was placed.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Enum,
    Index,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The vocabulary lives in the pure domain; it is re-exported here, where the columns use it.
from ivr.domain.vocabulary import (
    AttemptOutcome,
    AttemptStatus,
    CampaignStatus,
    Channel,
    CopyReason,
    CopyStatus,
    Decision,
    Escalation,
    Language,
    MessageKind,
    MessageSource,
    MessageStatus,
    PhoneRank,
    PinOutcome,
    ReviewMode,
    Role,
    Urgency,
    WebRole,
)


def utcnow() -> dt.datetime:
    """Now, in UTC, timezone-aware."""
    return dt.datetime.now(dt.timezone.utc)


def new_id() -> str:
    """A fresh UUID string (used where the id must exist before the row is written)."""
    return str(uuid.uuid4())


# Named constraints: Alembic can then alter them on PostgreSQL and SQLite (batch mode) alike.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with the project's naming convention."""

    metadata = MetaData(naming_convention=NAMING)


def _enum(kind: type[enum.Enum]) -> Enum:
    return Enum(kind, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e],
                validate_strings=True)


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime: a naive one is taken to be UTC already (how it is stored)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """``DateTime(timezone=True)`` that always hands back aware UTC datetimes.

    The column type (and so the schema and what is stored) is exactly ``DateTime(timezone=True)``:
    SQLite keeps the UTC wall time as text and hands it back naive, PostgreSQL keeps the instant and
    hands it back in the session's zone; both come back here as UTC. Aware values are converted to
    UTC before they are written (SQLite would otherwise keep another zone's wall time as if UTC).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Aware values to UTC; naive ones are UTC already and are written unchanged."""
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Whatever the database hands back, as an aware UTC datetime."""
        return None if value is None else as_utc(value)


#: Every datetime column of the chain.
Timestamp = UtcDateTime()


class PoliceZone(Base):
    """A local police zone (politiezone), which owns BINs."""

    __tablename__ = "police_zones"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    review_mode: Mapped[ReviewMode] = mapped_column(_enum(ReviewMode), default=ReviewMode.SEQUENTIAL)
    urgent_escalation: Mapped[Escalation] = mapped_column(_enum(Escalation), default=Escalation.AUTO_FORWARD)
    #: Simultaneous member calls for this zone's campaigns (``None``: only the global limit applies).
    max_channels: Mapped[int | None] = mapped_column(Integer)
    #: New member calls a second for this zone's campaigns (``None``: only the trunk's pace applies).
    max_cps: Mapped[float | None] = mapped_column(Float)
    #: Urgent messages that go out without a coordinator's review wait for a second police officer's yes.
    second_approver: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: Review rounds of a waiting preventive message before the author is told (``None``: the setting).
    review_max_rounds: Mapped[int | None] = mapped_column(Integer)
    #: The channels of a member who chose none, per urgency ("voice+sms"; ``None``: the setting,
    #: ``copy_channels_urgent`` / ``copy_channels_preventive``; ``ivr.domain.channels``).
    urgent_channels: Mapped[str | None] = mapped_column(String(40))
    preventive_channels: Mapped[str | None] = mapped_column(String(40))
    #: The contact ladder: an SMS copy to a member who has not confirmed this long after their last
    #: call (``ladder_after_s``; ``None``: the settings ``ladder_sms`` / ``ladder_after_s``).
    ladder_sms: Mapped[bool | None] = mapped_column(Boolean)
    ladder_after_s: Mapped[float | None] = mapped_column(Float)
    bins: Mapped[list[Bin]] = relationship(back_populates="zone")


class Bin(Base):
    """A neighbourhood information network (buurtinformatienetwerk)."""

    __tablename__ = "bins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    name: Mapped[str] = mapped_column(String(200))
    zone_id: Mapped[int] = mapped_column(ForeignKey("police_zones.id"))
    language: Mapped[Language] = mapped_column(_enum(Language), default=Language.NL)
    #: "1 niveau": police messages go straight to the members; the coordinators are told afterwards.
    one_level: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    zone: Mapped[PoliceZone] = relationship(back_populates="bins")
    streets: Mapped[list[BinStreet]] = relationship(back_populates="bin", cascade="all, delete-orphan")


class BinStreet(Base):
    """A street a BIN covers."""

    __tablename__ = "bin_streets"
    __table_args__ = (UniqueConstraint("bin_id", "street"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bin_id: Mapped[int] = mapped_column(ForeignKey("bins.id", ondelete="CASCADE"))
    street: Mapped[str] = mapped_column(String(200))
    bin: Mapped[Bin] = relationship(back_populates="streets")


class Person(Base):
    """A person in the chain: officer, coordinator, member household or admin."""

    __tablename__ = "people"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    language: Mapped[Language] = mapped_column(_enum(Language), default=Language.NL)
    street: Mapped[str | None] = mapped_column(String(200))
    #: scrypt hash (``storage.pins``); never the PIN itself.
    pin_hash: Mapped[str | None] = mapped_column(String(200))
    #: An admin reset or unlocked the PIN: failed attempts before this time no longer lock it.
    pin_reset_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: A member's own window for preventive calls, local "HH:MM" (both or neither).
    call_window_start: Mapped[str | None] = mapped_column(String(5))
    call_window_end: Mapped[str | None] = mapped_column(String(5))
    #: A holiday pause: no preventive calls from ``pause_from`` to ``pause_until`` (dates, inclusive).
    pause_from: Mapped[dt.date | None] = mapped_column(Date)
    pause_until: Mapped[dt.date | None] = mapped_column(Date)
    #: Written copies go here (a member's e-mail address; ``None``: none).
    email: Mapped[str | None] = mapped_column(String(254))
    #: The member's own channels ("voice+sms", "sms+email" for text only; ``None``: the zone's
    #: defaults for the message's urgency). ``ivr.domain.channels`` reads and writes it.
    channels: Mapped[str | None] = mapped_column(String(40))
    #: Opt-outs, each with its moment: calls (on the BIN call-back line), SMS ("STOP"), e-mail
    #: (List-Unsubscribe). ``None``: not opted out. Back in clears it.
    calls_opt_out_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    sms_opt_out_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    email_opt_out_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    phones: Mapped[list[PhoneNumber]] = relationship(back_populates="person", cascade="all, delete-orphan")
    roles: Mapped[list[RoleAssignment]] = relationship(back_populates="person", cascade="all, delete-orphan")


class RoleAssignment(Base):
    """A role of a person, scoped to a BIN (coordinator, member) or a zone (police), or global (admin)."""

    __tablename__ = "role_assignments"
    __table_args__ = (UniqueConstraint("person_id", "role", "bin_id", "zone_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    role: Mapped[Role] = mapped_column(_enum(Role))
    bin_id: Mapped[int | None] = mapped_column(ForeignKey("bins.id", ondelete="CASCADE"))
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("police_zones.id", ondelete="CASCADE"))
    #: Coordinators are called in this order (lowest first).
    priority: Mapped[int] = mapped_column(Integer, default=0)
    person: Mapped[Person] = relationship(back_populates="roles")


class PhoneNumber(Base):
    """A person's phone number in E.164 form."""

    __tablename__ = "phone_numbers"
    __table_args__ = (UniqueConstraint("person_id", "rank"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    rank: Mapped[PhoneRank] = mapped_column(_enum(PhoneRank))
    e164: Mapped[str] = mapped_column(String(20), index=True)
    person: Mapped[Person] = relationship(back_populates="phones")


class Message(Base):
    """A police message for one BIN."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bin_id: Mapped[int] = mapped_column(ForeignKey("bins.id"))
    urgency: Mapped[Urgency] = mapped_column(_enum(Urgency))
    status: Mapped[MessageStatus] = mapped_column(_enum(MessageStatus), default=MessageStatus.DRAFT)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    #: A follow-up or cancellation points at the message it updates.
    follow_up_of_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    text: Mapped[str | None] = mapped_column(Text)
    deliver_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    source: Mapped[MessageSource] = mapped_column(_enum(MessageSource), default=MessageSource.PHONE)
    kind: Mapped[MessageKind] = mapped_column(_enum(MessageKind), default=MessageKind.ALERT)
    #: When the officer pressed "send" (or the text was given): the message left the officer's hands.
    submitted_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: The take that was sent (members hear this very recording).
    submitted_take: Mapped[int | None] = mapped_column(Integer)
    #: A drill ("Testbericht BIN-foon"): every prompt says it is a test; kept out of real statistics.
    drill: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: The second police officer who approved an urgent message sent without review (zone option).
    second_approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    second_approved_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    recordings: Mapped[list[Recording]] = relationship(back_populates="message", order_by="Recording.take")
    bin: Mapped[Bin] = relationship()


class Recording(Base):
    """The original audio of a message, exactly as recorded (members hear this very file)."""

    __tablename__ = "recordings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    duration_s: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer, default=8000)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    #: 1 for the first recording of a message, 2 after "speak again", ...
    take: Mapped[int] = mapped_column(Integer, default=1)
    #: Seconds of speech in it (first to last non-silent frame); 0 for a silent take.
    speech_s: Mapped[float] = mapped_column(Float, default=0.0)
    #: Why recording stopped: dtmf, silence, max_duration, hangup, or text (synthesised).
    end_reason: Mapped[str] = mapped_column(String(20), default="")
    message: Mapped[Message] = relationship(back_populates="recordings")


class OutboundCallRow:
    """What every outbound call's row holds, review call or member attempt: one shape, one life.

    QUEUED/DIALING (written before it is dialled; its id is the Originate ChannelId) -> ANSWERED
    -> ENDED, or DIALING -> ENDED when dialling failed. Times are set once."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    e164: Mapped[str] = mapped_column(String(20))
    status: Mapped[AttemptStatus] = mapped_column(_enum(AttemptStatus), default=AttemptStatus.QUEUED)
    #: How the dialling ended (answered, busy, no_answer, rejected, congestion, invalid_number, failed).
    dial_outcome: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    dialled_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    answered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    ended_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    hangup_cause: Mapped[int | None] = mapped_column(Integer)

    def mark_dialled(self, dial_outcome: str, cause: int | None, now: dt.datetime) -> bool:
        """Dialling ended: answered (returns True) or not (the call is over)."""
        self.dial_outcome = dial_outcome
        self.hangup_cause = cause
        if dial_outcome == "answered":
            self.mark_answered(now)
            return True
        self.mark_ended(now)
        return False

    def mark_answered(self, now: dt.datetime) -> None:
        """Somebody (or something) answered."""
        self.answered_at = self.answered_at or now
        if self.status in (AttemptStatus.QUEUED, AttemptStatus.DIALING):
            self.status = AttemptStatus.ANSWERED

    def mark_ended(self, now: dt.datetime) -> None:
        """The call is over."""
        self.status = AttemptStatus.ENDED
        self.ended_at = self.ended_at or now


class ReviewCall(OutboundCallRow, Base):
    """One call to a coordinator (or approver) about a message; written before it is dialled."""

    __tablename__ = "review_calls"
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    #: Review rounds: 1 for the first, higher when a waiting message is tried again.
    round: Mapped[int] = mapped_column(Integer, default=1)
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.COORDINATOR)
    #: Why the call is made: ``review`` (decide), ``notice`` (one-level: a message went out),
    #: ``approval`` (second approver), ``escalation`` (the author: nobody reviewed).
    purpose: Mapped[str] = mapped_column(String(20), default="review", server_default="review")


class ReviewDecision(Base):
    """The one decision about a message: who (``None``: the zone's policy), what, and when it was made
    (when to deliver is the message's own ``deliver_at``)."""

    __tablename__ = "review_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    review_call_id: Mapped[str | None] = mapped_column(ForeignKey("review_calls.id"))
    decision: Mapped[Decision] = mapped_column(_enum(Decision))
    #: phone (a coordinator's keys), escalation (the zone's policy), or cli.
    via: Mapped[str] = mapped_column(String(20), default="phone")
    decided_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    person: Mapped[Person | None] = relationship()


class PinAttempt(Base):
    """One PIN typed on the police line (the PIN itself is never stored)."""

    __tablename__ = "pin_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    caller_id: Mapped[str] = mapped_column(String(32), index=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), index=True)
    outcome: Mapped[PinOutcome] = mapped_column(_enum(PinOutcome))
    #: The line it was typed on (police, admin_line; ``None``: before migration 0008, the police line);
    #: ``unlock`` marks an admin's ``binfoon person unlock`` (``ivr.directory.pin_gate``).
    line: Mapped[str | None] = mapped_column(String(20), index=True)


class LineCall(Base):
    """One call to a line that knows its callers by caller ID only (the BIN call-back line, the report
    line): the rate limits per caller ID and per line read these, so a restart does not reset them."""

    __tablename__ = "line_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    line: Mapped[str] = mapped_column(String(20), index=True)
    #: The caller ID as lockouts count it (``ivr.directory.pin_gate.pin_key``).
    caller_id: Mapped[str] = mapped_column(String(32), index=True)
    #: Whether the number was someone's on that line (never told to the caller).
    known: Mapped[bool] = mapped_column(Boolean)


class Campaign(Base):
    """The delivery of one message to its BIN's members."""

    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    status: Mapped[CampaignStatus] = mapped_column(_enum(CampaignStatus), default=CampaignStatus.SCHEDULED)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Quiet hours: a preventive campaign is not dialled before this time.
    not_before: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Stopped by a person: no new call starts after this instant (calls up finish their sentence).
    stopped_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    stopped_by: Mapped[str | None] = mapped_column(String(200))
    #: Re-notify rounds: 1 at first; "call again everyone who has not confirmed" starts the next.
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    round_started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: When its copies at the start (``ivr.copies``) were written: they are planned once, with the
    #: members of that moment; after it only the contact ladder is planned (migration 0013).
    copies_planned_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    message: Mapped[Message] = relationship()


class CallAttempt(OutboundCallRow, Base):
    """One call to one number; written before it is dialled, its id is the Originate ChannelId."""

    __tablename__ = "call_attempts"
    __table_args__ = (UniqueConstraint("campaign_id", "person_id", "attempt_no"),
                      Index("ix_call_attempts_e164", "e164"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    attempt_no: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[AttemptOutcome | None] = mapped_column(_enum(AttemptOutcome))
    rank: Mapped[PhoneRank] = mapped_column(_enum(PhoneRank), default=PhoneRank.PRIMARY)
    #: The answering machine detector's verdict (HUMAN, MACHINE, NOTSURE) on answered calls.
    amd_status: Mapped[str | None] = mapped_column(String(16))
    #: The campaign's round this attempt belongs to (``Campaign.round``).
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: In a farm: the node that began it and its epoch then (the claim's fencing token; NULL: one node).
    node_id: Mapped[int | None] = mapped_column(Integer, index=True)
    fence: Mapped[int | None] = mapped_column(Integer)


class Checkpoint(Base):
    """How far an input that is read incrementally (Asterisk's CEL file) has been taken in."""

    __tablename__ = "checkpoints"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class DrillSchedule(Base):
    """A BIN's recurring drill ("Testbericht BIN-foon"), fired by the persistent alarm clock."""

    __tablename__ = "drill_schedules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bin_id: Mapped[int] = mapped_column(ForeignKey("bins.id", ondelete="CASCADE"), unique=True)
    #: Months between drills (3: quarterly).
    every_months: Mapped[int] = mapped_column(Integer)
    #: When the next drill goes (UTC); moved on by ``every_months`` each time one is sent.
    next_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    bin: Mapped[Bin] = relationship()


class Confirmation(Base):
    """A member pressed 1: stored before they hear "thank you"."""

    __tablename__ = "confirmations"
    __table_args__ = (UniqueConstraint("campaign_id", "person_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The call on which 1 was pressed (``None`` when the member called back in).
    attempt_id: Mapped[str | None] = mapped_column(ForeignKey("call_attempts.id"), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    confirmed_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    #: call (the app heard the key), cel (recovered from Asterisk's durable record), callback.
    via: Mapped[str] = mapped_column(String(20), default="call")


class TextCopy(Base):
    """One SMS or e-mail copy of a campaign's message to one member: written (QUEUED) before it is
    sent, its id the idempotency key towards Kannel and the SMTP relay; at most one per member and
    channel in a campaign, so a crash or a second node can never send a copy twice."""

    __tablename__ = "text_copies"
    __table_args__ = (UniqueConstraint("campaign_id", "person_id", "channel"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    reason: Mapped[CopyReason] = mapped_column(_enum(CopyReason))
    #: The mobile number (E.164) or e-mail address it goes to.
    address: Mapped[str] = mapped_column(String(254))
    status: Mapped[CopyStatus] = mapped_column(_enum(CopyStatus), default=CopyStatus.QUEUED, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    #: When it was handed to the gateway (SENDING), accepted (SENT), reported delivered, or failed.
    sending_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    sent_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    failed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Hand-overs tried (a passing failure is tried again, with a growing pause, for a bounded time).
    tries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: A QUEUED copy is not taken before this time (``None``: at once): the pause after a passing
    #: failure, or the end of the quiet hours for a preventive message's SMS. On a SENDING SMS not yet
    #: stamped ``sending_at`` (waiting for the SMS pace), when it was claimed.
    retry_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: Kannel's answer / the last delivery report, or the relay's refusal (bounce), cut short.
    detail: Mapped[str | None] = mapped_column(String(200))
    #: Segments of an SMS (1 or 2); the Message-ID of an e-mail.
    segments: Mapped[int | None] = mapped_column(Integer)
    provider_ref: Mapped[str | None] = mapped_column(String(200))


class SmsReply(Base):
    """An SMS a member sent back (Kannel's MO): "1"/"OK" confirms, "STOP" opts out, "START" back in."""

    __tablename__ = "sms_replies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    from_e164: Mapped[str] = mapped_column(String(20), index=True)
    #: The text as received, cut to 160 characters (it is the member's, not trusted).
    text: Mapped[str] = mapped_column(String(160))
    #: confirm, stop, start, or unknown (``ivr.domain.channels.reply_action``).
    action: Mapped[str] = mapped_column(String(20))
    #: The campaign a confirmation counted for (``None``: none was open for that number).
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    #: Kannel's own id for the message (%I), so a retried callback is taken once.
    gateway_ref: Mapped[str | None] = mapped_column(String(64), unique=True)


class Transcript(Base):
    """What offline speech recognition made of a recording."""

    __tablename__ = "transcripts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), unique=True)
    #: Sealed (``storage.sealed.seal_transcript``: text and words together); plaintext only in rows
    #: stored before sealing existed, until the service seals them at start.
    text: Mapped[str] = mapped_column(Text)
    #: Empty once sealed (the words are inside ``text``).
    words: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    confidence: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(200))
    #: Which recogniser made it: ``"vosk"`` or ``"whisper"`` (migration 0010).
    engine: Mapped[str] = mapped_column(String(20), default="vosk", server_default="vosk")
    #: The language the recogniser was told (the BIN's: nl, fr, de); ``None`` for older rows.
    language: Mapped[str | None] = mapped_column(String(5))
    #: The output looked like a repetition loop, or was cut at the time cap: kept, not trusted.
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class TranscriptTerm(Base):
    """One distinct word of a sealed transcript as a blind-index token (``storage.sealed.term_token``:
    an HMAC, never the word): search finds transcripts by these."""

    __tablename__ = "transcript_terms"
    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id", ondelete="CASCADE"),
                                               primary_key=True)
    token: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)


class AuditEntry(Base):
    """Append-only, hash-chained record of who did what (see ``storage.audit``)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class WebAccount(Base):
    """A web console sign-in for a person of the directory (argon2 hash, never the password)."""

    __tablename__ = "web_accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), unique=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[WebRole] = mapped_column(_enum(WebRole))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    #: Bumped when the password changes or the account is disabled: older sessions stop working.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    person: Mapped[Person] = relationship()


class WebSignInAttempt(Base):
    """One web sign-in attempt (the password is never stored); rate limits read these."""

    __tablename__ = "web_sign_in_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    #: The name typed (lower-cased), whether or not such an account exists.
    username: Mapped[str] = mapped_column(String(100), index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("web_accounts.id", ondelete="CASCADE"))
    #: ok, wrong, or locked (refused unchecked), as on the police line.
    outcome: Mapped[PinOutcome] = mapped_column(_enum(PinOutcome))


class OfficerSipAccount(Base):
    """A police officer's own SIP account (optional): the username and the digest HA1 only, never the
    password; the authenticated identity replaces caller ID as the police line's first factor."""

    __tablename__ = "officer_sip_accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), unique=True)
    #: Also the PJSIP endpoint's name (``ivr.asterisk.officers``).
    username: Mapped[str] = mapped_column(String(32), unique=True)
    #: md5(username:realm:password) in hex.
    ha1: Mapped[str] = mapped_column(String(32))
    realm: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    person: Mapped[Person] = relationship()


class ClusterNode(Base):
    """One ``binfoon serve`` of a farm. Its ``epoch`` is the fencing token: bumped when it (re)joins
    and when another node takes its work over after its lease ran out, so a node that was paused
    cannot renew, nor begin a call, under the claim it held."""

    __tablename__ = "cluster_nodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Stable across restarts (``cluster_node``): a restarted node recovers its own claims.
    name: Mapped[str] = mapped_column(String(64), unique=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    joined_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    #: The database's clock: past it, the others may take the node's work over.
    lease_until: Mapped[dt.datetime] = mapped_column(Timestamp)
    #: Member calls up on the node at its last heartbeat (the channel budget's bookkeeping).
    live_calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Set when it stopped cleanly or was taken over (``left_why``); cleared when it joins again.
    left_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    left_why: Mapped[str | None] = mapped_column(String(40))


class ClusterLeader(Base):
    """The one row (id 1) naming the node that runs the farm's single duties, under its own lease."""

    __tablename__ = "cluster_leader"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int | None] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
