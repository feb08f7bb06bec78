"""A farm node's claim, checked where it matters: in the transaction that begins a call (issue 18)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


#: An attempt in these states may be up (the stored values of ``AttemptStatus``): SQL of the farm's checks.
OPEN_STATES = "('queued', 'dialing', 'answered')"


def node_may_claim(session: Session, claim: tuple[int, int], e164: str) -> bool:
    """In the caller's transaction: the node's claim still holds (same epoch, lease not run out, by
    the database's clock) and no call of the farm is open on ``e164`` (one call per number, B4, across
    nodes). The node's row is share-locked: a takeover (which locks it for update) waits for this
    transaction, then closes what it began; after a takeover the epoch no longer matches."""
    node_id, epoch = claim
    holds = session.execute(text(
        "SELECT 1 FROM cluster_nodes WHERE id = :id AND epoch = :epoch AND left_at IS NULL "
        "AND lease_until > clock_timestamp() FOR SHARE"), {"id": node_id, "epoch": epoch}).first()
    if holds is None:
        return False
    busy = session.execute(text(
        f"SELECT 1 FROM call_attempts WHERE e164 = :e164 AND status IN {OPEN_STATES} LIMIT 1"),
        {"e164": e164}).first()
    return busy is None
