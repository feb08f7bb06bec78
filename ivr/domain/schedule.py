"""When a message is due: one rule for the alarm, the start-up sweep, the poll and the campaign's creation."""

from __future__ import annotations

import datetime as dt


def due(deliver_at: dt.datetime | None, now: dt.datetime) -> bool:
    """True if a message to be delivered at ``deliver_at`` (``None``: at once) is due at ``now``.

    No tolerance: an alarm that fires a moment early finds the message not yet due and the next
    sweep (every second) delivers it, never before its time."""
    return deliver_at is None or deliver_at <= now
