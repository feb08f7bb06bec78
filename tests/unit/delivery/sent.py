"""A message the police sent, with its campaign, for the fast tests of the member conversations.

Only the police line's own first steps (draft, stored take) go through its desk; the rest (sent,
reviewed, campaign started) is written directly, so these tests do not depend on the review."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ivr.delivery.store import DeliveryDesk
from ivr.police_line.store import Officer
from ivr.telephony.call import Recorded
from storage.db import session_scope
from storage.models import Campaign, Message
from ivr.domain.vocabulary import CampaignStatus, MessageStatus, Urgency
from tests.conftest import SHARED_DIR
from tests.world import World

#: The police's recording of a first and of a second message.
CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
OTHER_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "05.wav"


@dataclass(frozen=True)
class Sent:
    """A sent message of the world's BIN and its running campaign."""

    message_id: int
    campaign_id: int


async def sent_message(world: World, tmp_path: Path, clip: Path = CLIP,
                       urgency: Urgency = Urgency.URGENT) -> Sent:
    """Record ``clip`` as the message of BIN 12, send it, and start its campaign (at the desk's clock)."""
    desk = world.desk
    officer = Officer(world.officer_id, "Peeters", "nl", None)
    message_id = await desk.create_draft(officer, world.bin_id, urgency)
    spool = tmp_path / f"spool-{message_id}.wav"
    spool.write_bytes(clip.read_bytes())
    await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    now: dt.datetime = desk.clock()
    with session_scope(world.engine) as s:
        message = s.get_one(Message, message_id)
        message.status, message.submitted_take, message.submitted_at = MessageStatus.DELIVERING, 1, now
        campaign = Campaign(message_id=message_id, status=CampaignStatus.RUNNING, created_at=now,
                            started_at=now)
        s.add(campaign)
        s.flush()
        return Sent(message_id, campaign.id)


def delivery_desk(world: World) -> DeliveryDesk:
    """The delivery desk on the world's database, recordings and clock."""
    return DeliveryDesk(world.engine, world.desk.store, clock=world.desk.clock)
