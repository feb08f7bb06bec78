"""Rate limits of the lines that know their callers by caller ID alone (BIN call-back, report line).

Rules (issue 14 item 2):
- every call is counted (``LineCall`` rows, so a restart resets nothing), known number or not:
  a caller ID that called ``caller_max_calls`` times within ``caller_window_s`` is limited;
- calls from numbers that are nobody's on the line count towards the line: ``unknown_max_calls``
  of them within ``window_s`` close the line for ``lock_s`` (an enumeration in progress), and
  the admins get a ``security.alert`` at once;
- a limited caller, a closed line and an unknown number get the same answer as a member with no
  message (the flows say the same prompts): calling learns nothing about who is a member.
The decision (``line_verdict``) is pure; ``admit_call`` is its SQL edge, run inside the desk's
transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ivr.config import Settings
from ivr.directory.pin_gate import security_alert
from ivr.domain.phone import mask
from ivr.domain.pin import Attempt, PinPolicy, locked_until
from storage import audit
from storage.models import LineCall

#: How a callback confirmation is stored (``Confirmation.via``) and how its audit row words it.
UNVERIFIED_VIA = "callback-unverified"
UNVERIFIED_TEXT = "callback (caller ID, unverified)"


@dataclass(frozen=True)
class LineLimits:
    """Calls per caller ID, and calls from unknown numbers per line, within their windows."""

    caller_max_calls: int = 5
    caller_window_s: float = 3600.0
    unknown_max_calls: int = 50
    window_s: float = 3600.0
    lock_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LineLimits:
        """The limits of ``settings`` (``line_*``)."""
        return cls(settings.line_caller_max_calls, settings.line_caller_window_s, settings.line_unknown_max_calls,
                   settings.line_window_s, settings.line_lock_s)

    @property
    def line_policy(self) -> PinPolicy:
        """Unknown numbers' calls as the lockout rule counts wrong PINs (a closed line does not grow)."""
        return PinPolicy(self.unknown_max_calls, self.window_s, self.lock_s, growth=1.0)


class LineVerdict(enum.Enum):
    """Whether one call may be served."""

    OPEN = "open"
    CALLER_LIMITED = "caller_limited"
    LINE_CLOSED = "line_closed"


def line_verdict(caller_calls: list[dt.datetime], unknown_calls: list[dt.datetime], limits: LineLimits,
                 now: dt.datetime) -> LineVerdict:
    """The verdict for a call at ``now``, given the earlier calls of this caller ID and the earlier
    calls from unknown numbers on this line."""
    if locked_until([Attempt(at, "wrong") for at in unknown_calls], limits.line_policy, now) is not None:
        return LineVerdict.LINE_CLOSED
    recent = [at for at in caller_calls if now - at < dt.timedelta(seconds=limits.caller_window_s)]
    return LineVerdict.CALLER_LIMITED if len(recent) >= limits.caller_max_calls else LineVerdict.OPEN


def admit_call(s: Session, line: str, caller_key: str, known: bool, limits: LineLimits,
               now: dt.datetime) -> LineVerdict:
    """Count one call to ``line`` from ``caller_key`` and say whether it may be served; a refusal is
    audited, a line that closes with this call alerts the admins."""
    horizon = now - dt.timedelta(seconds=max(limits.caller_window_s, limits.line_policy.horizon_s))
    earlier = s.execute(select(LineCall.at, LineCall.caller_id, LineCall.known)
                        .where(LineCall.line == line, LineCall.at >= horizon)).all()
    caller_calls = [at for at, key, _known in earlier if key == caller_key]
    unknown_calls = [at for at, _key, was_known in earlier if not was_known]
    verdict = line_verdict(caller_calls, unknown_calls, limits, now)
    # Older rows can no longer matter: the table holds a few hours of calls, never a call history.
    s.execute(delete(LineCall).where(LineCall.line == line, LineCall.at < horizon))
    s.add(LineCall(at=now, line=line, caller_id=caller_key[:32], known=known))
    s.flush()
    if verdict is not LineVerdict.OPEN:
        audit.record(s, f"caller:{mask(caller_key)}", f"{line}.call_limited", f"line:{line}", reason=verdict.value)
    elif not known and line_verdict([], unknown_calls + [now], limits, now + dt.timedelta(microseconds=1)) \
            is LineVerdict.LINE_CLOSED:
        security_alert(s, "line_enumeration", f"line:{line}", line=line, unknown_calls=len(unknown_calls) + 1,
                       window_s=limits.window_s)
    return verdict
