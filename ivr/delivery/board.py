"""The live board's read model: messages still moving (or finished within a day), and their stage.

The console adds each campaign's live bar (``ivr.delivery.report.campaign_report``) to these rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Bin, Campaign, Message
from ivr.domain.vocabulary import MessageStatus, Urgency

if TYPE_CHECKING:
    from ivr.directory.accounts import Viewer

#: Messages shown on the live board: still moving, or finished within this window.
BOARD_RECENT = dt.timedelta(hours=24)
IN_PROGRESS = (MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS, MessageStatus.APPROVED,
               MessageStatus.DELIVERING)
#: The board shows at most this many messages (the viewer's newest).
BOARD_SIZE = 50


@dataclass(frozen=True)
class BoardRow:
    """One message on the board, as stored (times as the database gives them)."""

    message_id: int
    bin_number: int
    bin_name: str
    urgency: Urgency
    status: MessageStatus
    deliver_at: dt.datetime | None
    created_at: dt.datetime
    text: str | None
    campaign_id: int | None


def stage_of(status: MessageStatus, deliver_at: dt.datetime | None, now: dt.datetime) -> str:
    """The board's stage for a message (text ids ``stage_*``)."""
    if status in (MessageStatus.RECORDED, MessageStatus.WITH_COORDINATORS):
        return "with_coordinators"
    if status is MessageStatus.APPROVED:
        return "scheduled" if deliver_at is not None and deliver_at > now else "delivering"
    return str(status.value)  # delivering, done, rejected, cancelled, draft


def board_rows(s: Session, viewer: Viewer, now: dt.datetime) -> list[BoardRow]:
    """Messages in progress (and finished in the last day) this viewer sees, newest first."""
    query = (select(Message, Bin, Campaign.id).join(Bin, Bin.id == Message.bin_id)
             .outerjoin(Campaign, Campaign.message_id == Message.id)
             .where((Message.status.in_(IN_PROGRESS)) | (Message.created_at >= now - BOARD_RECENT))
             .where(Message.status != MessageStatus.DRAFT))
    # The scope is part of the query: the 50 newest are the viewer's 50 newest, not the
    # chain's (a coordinator's one message must not drop out behind other BINs' ones).
    if viewer.bin_ids is not None:
        query = query.where(Message.bin_id.in_(viewer.bin_ids))
    if viewer.zone_ids is not None:
        query = query.where(Bin.zone_id.in_(viewer.zone_ids))
    rows = s.execute(query.order_by(Message.id.desc()).limit(BOARD_SIZE)).all()
    return [BoardRow(m.id, b.number, b.name, m.urgency, m.status, m.deliver_at, m.created_at, m.text, c)
            for m, b, c in rows if viewer.sees_bin(b.id, b.zone_id)]
