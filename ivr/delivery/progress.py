"""A campaign's confirmations over time (the console's chart on the message page)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Campaign, Confirmation


def confirmation_times(s: Session, campaign_id: int) -> tuple[dt.datetime | None, list[dt.datetime]]:
    """(when the campaign started, every confirmation time in order), as the database gives them."""
    campaign = s.get_one(Campaign, campaign_id)
    times = list(s.scalars(select(Confirmation.confirmed_at).where(Confirmation.campaign_id == campaign_id)
                           .order_by(Confirmation.confirmed_at)))
    return campaign.started_at or campaign.created_at, times
