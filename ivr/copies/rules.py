"""What the copies' desk needs beyond the database: the settings' defaults and timings, and the pause
between a copy's tries (issue 17). Pure: no SQL."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ivr.delivery.policy import RetryPolicy, Window, next_allowed, retry_policies
from ivr.domain.channels import LadderRules

if TYPE_CHECKING:
    from ivr.config import Settings

#: The pause after a copy's first passing failure; it doubles with each further one, up to the cap.
RETRY_FIRST = dt.timedelta(seconds=30)
RETRY_CAP = dt.timedelta(minutes=10)


def retry_pause(tries: int) -> dt.timedelta:
    """How long a copy waits after its ``tries``-th hand-over failed for a passing reason: 30 s,
    1 min, 2 min, ... at most 10 min (a gateway that is down is not hammered, and the copy still goes
    within minutes of its coming back)."""
    doublings = min(max(tries, 1) - 1, 16)
    return min(RETRY_FIRST * (2 ** doublings), RETRY_CAP)


@dataclass(frozen=True)
class CopyRules:
    """What the desk needs beyond the database: the settings' defaults (a zone may set its own) and
    timings."""

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
    #: it is done at once) is still planned this long after it finished; and a campaign that handed a
    #: copy over this recently still owes its follow-ups theirs in writing (``CopyPlan._owing``).
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
        quiet_start, quiet_end = settings.quiet_hours.split("-")
        return cls(settings.copy_channels_urgent, settings.copy_channels_preventive,
                   LadderRules(settings.ladder_sms, settings.ladder_after_s), retry_policies(settings),
                   retry_for_s=settings.copy_retry_for_s, max_tries=settings.copy_max_tries,
                   allowed_hours=Window.parse(f"{quiet_end}-{quiet_start}"), tz=settings.tz,
                   attach_audio=settings.email_attach_audio)


    def sms_allowed_from(self, at: dt.datetime) -> dt.datetime:
        """The first moment at or after ``at`` inside the allowed hours (a preventive message's SMS)."""
        local = next_allowed(at.astimezone(self.tz), [self.allowed_hours])
        return local.astimezone(dt.timezone.utc)
