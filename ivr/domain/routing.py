"""Where a submitted police message goes: to the coordinators' review, or past it.

One rule for the review rounds (``ivr.review.rounds``, which act on it) and the police line
(``ivr.police_line.flow``, which tells the officer what happens): it lives here, below both.

- a one-level BIN ("1 niveau") sends the police message straight to its members; its coordinators
  are only told (a short notice call each);
- an urgent message that would go out without any coordinator's review (a one-level BIN, or the
  zone's auto-forward escalation) first waits for a second police officer's yes when the zone asks
  for one (``police_zones.second_approver``); a preventive one never does (it was not urgent enough
  to skip a second look in the first place: the one-level BIN chose that).
"""

from __future__ import annotations

import enum


class Route(enum.Enum):
    """What happens to a message that nobody (or no coordinator) reviews."""

    REVIEW = "review"                    # the coordinators are called to decide
    STRAIGHT = "straight"                # to the members now (one-level: the coordinators get a notice)
    SECOND_APPROVAL = "second_approval"  # to the members after a second police officer approves


def without_review(urgent: bool, second_approver: bool) -> Route:
    """A message about to go out without any coordinator's review: straight, or after a second officer."""
    return Route.SECOND_APPROVAL if urgent and second_approver else Route.STRAIGHT


def route_of_submitted(one_level: bool, urgent: bool, second_approver: bool) -> Route:
    """Where a freshly submitted message goes: one-level BINs skip the review, the others are reviewed."""
    if not one_level:
        return Route.REVIEW
    return without_review(urgent, second_approver)
