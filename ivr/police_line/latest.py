"""The latest police messages, newest first (``binfoon message list``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Bin, Message


def latest_messages(s: Session, limit: int, bin_number: int | None = None) -> list[Message]:
    """At most ``limit`` messages (of one BIN when given), newest first."""
    query = select(Message).order_by(Message.id.desc()).limit(limit)
    if bin_number is not None:
        query = query.join(Bin).where(Bin.number == bin_number)
    return list(s.scalars(query))
