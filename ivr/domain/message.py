"""A message's life: the allowed status transitions (h11 style: a table, and an error otherwise)."""

from __future__ import annotations

from ivr.domain.vocabulary import MessageStatus as S


class InvalidTransition(ValueError):
    """A status change the message's life does not allow."""


#: status -> the statuses it may move to.
TRANSITIONS: dict[S, frozenset[S]] = {
    S.DRAFT: frozenset({S.RECORDED, S.CANCELLED}),
    S.RECORDED: frozenset({S.WITH_COORDINATORS, S.AWAITING_APPROVAL, S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.WITH_COORDINATORS: frozenset({S.AWAITING_APPROVAL, S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.APPROVED: frozenset({S.DELIVERING, S.CANCELLED}),
    S.DELIVERING: frozenset({S.DONE, S.CANCELLED}),
    S.REJECTED: frozenset(),
    # A re-notify ("call again everyone who has not confirmed") delivers a finished or stopped
    # message again (``ivr.delivery.control.renotify``: only a message that has a campaign).
    S.DONE: frozenset({S.DELIVERING}),
    S.CANCELLED: frozenset({S.DELIVERING}),
}


def check_transition(current: S, new: S) -> None:
    """Raise ``InvalidTransition`` unless ``current -> new`` is allowed."""
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"a message cannot go from {current.value} to {new.value}")
