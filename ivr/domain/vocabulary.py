"""The chain's vocabulary: every closed set of words a row, a decision or a report uses.

Pure (no project, no SQLAlchemy imports): ``storage.models`` maps these enums to columns (by
value, as strings), the pure policies and the reports use them directly. ``AttemptOutcome`` is a
``StrEnum``: its members are the very strings stored in the database, so a pure decision can
compare an attempt's outcome whether it holds the member or its stored string.
"""

from __future__ import annotations

import enum


class Language(enum.Enum):
    """The languages prompts are spoken in (Belgium's three)."""

    NL = "nl"
    FR = "fr"
    DE = "de"


class Role(enum.Enum):
    """What a person does in the chain."""

    POLICE_OFFICER = "police_officer"
    COORDINATOR = "coordinator"
    MEMBER = "member"
    ADMIN = "admin"
    #: A police officer who decides on urgent messages that no coordinator took (zone escalation).
    POLICE_APPROVER = "police_approver"


class PhoneRank(enum.Enum):
    """Which of a person's numbers: dialled first, or when the first fails."""

    PRIMARY = "primary"
    SECONDARY = "secondary"


class Urgency(enum.Enum):
    """dringend (red) or preventief (green)."""

    URGENT = "urgent"
    PREVENTIVE = "preventive"


class MessageStatus(enum.Enum):
    """Where a police message stands."""

    DRAFT = "draft"                  # recorded, not (yet) submitted; never sent
    RECORDED = "recorded"            # submitted by the officer
    WITH_COORDINATORS = "with_coordinators"
    #: An urgent message that goes out without review waits for a second police officer (zone option).
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"            # to be delivered now or at a set time
    REJECTED = "rejected"
    DELIVERING = "delivering"
    DONE = "done"
    CANCELLED = "cancelled"


class ReviewMode(enum.Enum):
    """How a zone calls a BIN's coordinators about a new message."""

    SEQUENTIAL = "sequential"  # one after the other, in priority order
    PARALLEL = "parallel"      # all at once; the first decision counts


class Escalation(enum.Enum):
    """What happens to an urgent message that no coordinator decided on."""

    AUTO_FORWARD = "auto_forward"        # delivered to the members without a decision
    POLICE_APPROVER = "police_approver"  # the zone's police approvers are called, then it waits
    WAIT = "wait"                        # it waits, like a preventive message


class Decision(enum.Enum):
    """What a coordinator (or the zone's policy) decided about a message."""

    FORWARD_NOW = "forward_now"
    FORWARD_LATER = "forward_later"
    REJECT = "reject"


class MessageKind(enum.Enum):
    """A new alert, or feedback on an earlier one (sent only to those who received the first)."""

    ALERT = "alert"
    UPDATE = "update"
    CANCELLATION = "cancellation"


class MessageSource(enum.Enum):
    """How the police gave the message."""

    PHONE = "phone"  # spoken on the police line
    TEXT = "text"    # typed, then spoken by espeak-ng


class PinOutcome(enum.Enum):
    """One PIN attempt on the police line."""

    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"  # refused unchecked: the account or caller ID was locked


class CampaignStatus(enum.Enum):
    """The delivery of one message to a BIN's members."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class AttemptStatus(enum.Enum):
    """One call attempt's life: written before dialling, ended exactly once."""

    QUEUED = "queued"
    DIALING = "dialing"
    ANSWERED = "answered"
    ENDED = "ended"


class AttemptOutcome(enum.StrEnum):
    """The closed set of terminal outcomes of an attempt (RELIABILITY B6)."""

    CONFIRMED = "confirmed"
    ANSWERED_NO_KEY = "answered_no_key"
    VOICEMAIL = "voicemail"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    CONGESTION = "congestion"
    FAILED = "failed"
    INVALID_NUMBER = "invalid_number"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    #: The call was up when the application or Asterisk went down: retried by the policy.
    INTERRUPTED = "interrupted"


class WebRole(enum.Enum):
    """What a web console account may do (derived from the person's roles when it is created)."""

    POLICE = "police"            # send alerts and follow them, for the zones of the person's police roles
    COORDINATOR = "coordinator"  # the person's own BINs: their messages and member lists
    ADMIN = "admin"              # everything


class Channel(enum.StrEnum):
    """How a member is reached: a call (the original recording), or a written copy (issue 17)."""

    VOICE = "voice"
    SMS = "sms"
    EMAIL = "email"


class CopyStatus(enum.StrEnum):
    """The life of one SMS or e-mail copy (``storage.models.TextCopy``), written before it is sent.

    QUEUED (written) -> SENDING (handed to Kannel / the SMTP relay, answer pending) -> SENT (accepted)
    -> DELIVERED (an SMS delivery report said so); FAILED, BOUNCED and CANCELLED are final too."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    CANCELLED = "cancelled"


class CopyReason(enum.StrEnum):
    """Why a member gets a written copy."""

    CHOICE = "choice"        # the member (or the zone's default for the urgency) chose it beside the call
    TEXT_ONLY = "text_only"  # the member is not called (deaf, or opted out of calls): copies at once
    LADDER = "ladder"        # the member did not confirm the call: the SMS copy follows (contact ladder)
