"""Where a submitted message goes, read for the police line (the officer is told before hanging up).

The rule itself is ``ivr.domain.routing`` (the review rounds act on the same rule)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ivr.domain.routing import Route, route_of_submitted
from ivr.domain.vocabulary import Urgency
from storage.models import Message

#: What the officer hears after "send", by route.
SENT_PROMPT = {Route.REVIEW: "police_sent", Route.STRAIGHT: "police_sent_one_level",
               Route.SECOND_APPROVAL: "police_sent_awaiting_approval"}


def submitted_route(s: Session, message_id: int) -> Route:
    """Where ``message_id`` goes now that it is submitted: its BIN's level, its urgency, its zone's rule."""
    message = s.get_one(Message, message_id)
    return route_of_submitted(message.bin.one_level, message.urgency is Urgency.URGENT,
                              message.bin.zone.second_approver)

#: The same, in a line for the command line and the console (``binfoon message send``).
SENT_TEXT = {Route.REVIEW: "submitted: its BIN's coordinators are called to review it",
             Route.STRAIGHT: "submitted: one-level BIN, it goes straight to the members (the coordinators get a notice)",
             Route.SECOND_APPROVAL: "submitted: urgent, without review, it waits for a second police officer's approval"}
