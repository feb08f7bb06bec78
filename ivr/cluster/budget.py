"""The carrier's limits shared by a farm's live nodes (issue 18 item 2): a pure decision.

The farm's ``max_channels`` and ``max_cps`` are the carrier's, for all nodes together. Each live node
takes an equal share (the remainder of the channels goes to the lowest ids, so the shares add up to
the whole), and never more than the channels the others do not hold: a node that shrank keeps its
calls until they end, and a newcomer fills only what they free. A node that has just joined takes
nothing until the others have had time to see it (``settled``): their shares shrink first.
Kamailio caps the farm again at the SIP edge, as a safety net for what a lease cannot see (a node
paused with calls up in its Asterisk).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    """A live node as its last heartbeat left it."""

    node_id: int
    live_calls: int


@dataclass(frozen=True)
class Budget:
    """What one node may use now: calls up at once, and new calls a second."""

    channels: int
    cps: float


def node_budget(total_channels: int, total_cps: float, me: int, peers: list[Peer], *, settled: bool,
                held_elsewhere: int = 0) -> Budget:
    """This node's share of the farm's limits. ``peers``: every live node, this one included or not;
    ``held_elsewhere``: calls the database has open on other nodes (a fenced node's still count)."""
    others = [p for p in peers if p.node_id != me]
    ids = sorted([me, *(p.node_id for p in others)])
    if not settled:
        return Budget(0, 0.0)
    n = len(ids)
    channels = total_channels // n + (1 if ids.index(me) < total_channels % n else 0)
    held_by_others = max(sum(max(0, p.live_calls) for p in others), held_elsewhere)
    channels = max(0, min(channels, total_channels - held_by_others))
    return Budget(channels, total_cps / n)
