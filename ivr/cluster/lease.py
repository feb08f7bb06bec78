"""A node's claims on the farm's shared PostgreSQL (issue 18 item 1): its lease, its fencing token,
the takeover of nodes that stopped heart-beating, and the farm's lead.

All times that decide a lease are the database's (``clock_timestamp()``): nodes on different servers
do not have to agree on the time. A node also keeps a local deadline on its monotonic clock, taken
*before* each heartbeat was sent, so it stops believing in its lease before the database lets
anybody else take it: a node paused past its lease (SIGSTOP, a stalled VM) finds its deadline passed
when it wakes and dials nothing until a heartbeat renews it — which fails once it was taken over
(its ``epoch`` moved on), so it re-joins under a new epoch with nothing left to do.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, text

from ivr.cluster.budget import Peer
from storage import audit
from storage.claims import OPEN_STATES
from storage.db import Desk

log = logging.getLogger(__name__)


class Fenced(Exception):
    """The node's claim is gone: another node took its work over (its lease ran out)."""


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learnt: the live nodes, and whether this node leads the farm."""

    peers: list[Peer]
    leader: bool
    #: Member calls open on other nodes, as the database has them (fenced nodes' included).
    held_elsewhere: int = 0


@dataclass(frozen=True)
class Takeover:
    """A node whose lease ran out, fenced by this one, and the calls of it that were closed."""

    node: str
    attempts: list[str]


class NodeLease(Desk):
    """This node's row in ``cluster_nodes`` and what it may do under it."""

    def __init__(self, engine: Engine, name: str, *, lease_s: float, heartbeat_s: float, hold_s: float = 0.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(engine)
        self.name = name
        self.lease_s = lease_s
        #: How long a fenced node's open calls are left to it (they may still be up) before they are closed.
        self.hold_s = hold_s
        self.heartbeat_s = heartbeat_s
        self._monotonic = monotonic
        self.node_id: int | None = None
        self.epoch = 0
        #: Local deadlines (monotonic): the node's lease, and its lead.
        self._valid_until = 0.0
        self._leads_until = 0.0
        self._joined_at = 0.0

    # -- the claim --------------------------------------------------------------------------------
    @property
    def claim(self) -> tuple[int, int] | None:
        """(node id, epoch) to stamp on what this node begins; ``None`` before it joined."""
        return None if self.node_id is None else (self.node_id, self.epoch)

    def valid(self, margin_s: float = 0.0) -> bool:
        """True while this node's lease holds (by its own clock, which errs early) for ``margin_s`` more."""
        return self.node_id is not None and self._monotonic() + margin_s < self._valid_until

    def leads(self) -> bool:
        """True while this node holds the farm's lead (by its own clock)."""
        return self.valid() and self._monotonic() < self._leads_until

    def settled(self) -> bool:
        """True once the other nodes have had two heartbeats to see this one (their shares shrank)."""
        return self._monotonic() - self._joined_at >= 2 * self.heartbeat_s

    # -- heartbeat --------------------------------------------------------------------------------
    def join(self) -> None:
        """(Re)join the farm under a new epoch; the node's row is made on its first start."""
        sent = self._monotonic()
        lease = dt.timedelta(seconds=self.lease_s)

        def work(s) -> tuple[int, int]:  # type: ignore[no-untyped-def]
            row = s.execute(text(
                "INSERT INTO cluster_nodes (name, epoch, joined_at, heartbeat_at, lease_until, live_calls) "
                "VALUES (:name, 1, clock_timestamp(), clock_timestamp(), clock_timestamp() + :lease, 0) "
                "ON CONFLICT (name) DO UPDATE SET epoch = cluster_nodes.epoch + 1, joined_at = clock_timestamp(), "
                "heartbeat_at = clock_timestamp(), lease_until = clock_timestamp() + :lease, live_calls = 0, "
                "left_at = NULL, left_why = NULL RETURNING id, epoch"), {"name": self.name, "lease": lease}).one()
            audit.record(s, "system", "cluster.join", f"node:{self.name}", epoch=row.epoch)
            return row.id, row.epoch
        self.node_id, self.epoch = self.run(work)
        self._valid_until = sent + self.lease_s
        self._joined_at = sent
        self._leads_until = 0.0
        log.info("node %s joined the farm (id %d, epoch %d)", self.name, self.node_id, self.epoch)

    def beat(self, live_calls: int) -> Beat:
        """Renew the lease (``Fenced`` if it was taken over), try for the lead, and read the live nodes."""
        if self.node_id is None:
            raise RuntimeError("join() first")
        sent = self._monotonic()
        lease = dt.timedelta(seconds=self.lease_s)
        me, epoch = self.node_id, self.epoch

        def work(s) -> tuple[bool, bool, list[Peer], int]:  # type: ignore[no-untyped-def]
            renewed = s.execute(text(
                "UPDATE cluster_nodes SET heartbeat_at = clock_timestamp(), lease_until = clock_timestamp() + :lease, "
                "live_calls = :live WHERE id = :me AND epoch = :epoch AND left_at IS NULL RETURNING id"),
                {"lease": lease, "live": live_calls, "me": me, "epoch": epoch}).first()
            if renewed is None:
                return False, False, [], 0
            s.execute(text("INSERT INTO cluster_leader (id, epoch) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"))
            led = s.execute(text(
                "UPDATE cluster_leader SET node_id = :me, epoch = :epoch, lease_until = clock_timestamp() + :lease "
                "WHERE id = 1 AND ((node_id = :me AND epoch = :epoch) OR node_id IS NULL "
                "OR lease_until IS NULL OR lease_until < clock_timestamp()) RETURNING node_id"),
                {"me": me, "epoch": epoch, "lease": lease}).first()
            peers = [Peer(r.id, r.live_calls) for r in s.execute(text(
                "SELECT id, live_calls FROM cluster_nodes WHERE left_at IS NULL AND lease_until > clock_timestamp()"))]
            # Calls the database says are open on other nodes (a fenced node's included, until closed).
            held = s.execute(text(f"SELECT count(*) FROM call_attempts WHERE node_id <> :me AND status IN {OPEN_STATES}"),
                             {"me": me}).scalar_one()
            return True, led is not None, peers, held
        renewed, leader, peers, held = self.run(work)
        if not renewed:
            self._valid_until = self._leads_until = 0.0
            raise Fenced(f"node {self.name} (epoch {epoch}) was taken over")
        self._valid_until = sent + self.lease_s
        was_leader = self._leads_until > 0
        self._leads_until = sent + self.lease_s if leader else 0.0
        if leader and not was_leader:
            log.warning("node %s leads the farm (alarms, reviews, copies run here)", self.name)
        return Beat(peers, leader, held)

    def take_over_expired(self) -> list[Takeover]:
        """Fence every node whose lease ran out (its epoch moves on: it can neither renew nor claim), and
        close the open calls of nodes fenced ``hold_s`` ago (``interrupted``: dialled again at no cost).

        Two steps, because a node that stops heart-beating may still have calls up in its Asterisk
        (its service paused, or killed while the calls play on): until the hold is over its members
        stay in flight, so nobody calls them a second time, and their channels still count against the
        farm's (``beat``). A paused node that wakes within the hold finishes its calls itself and their
        outcomes (a key pressed meanwhile) count. ``SKIP LOCKED``: two nodes never take the same one."""
        me, hold = self.node_id, dt.timedelta(seconds=self.hold_s)

        def work(s) -> list[Takeover]:  # type: ignore[no-untyped-def]
            taken: list[Takeover] = []
            for node in s.execute(text(
                    "SELECT id, name, epoch FROM cluster_nodes WHERE id <> :me AND left_at IS NULL "
                    "AND lease_until < clock_timestamp() FOR UPDATE SKIP LOCKED"), {"me": me}).all():
                s.execute(text("UPDATE cluster_nodes SET epoch = epoch + 1, left_at = clock_timestamp(), "
                               "left_why = :why WHERE id = :id"),
                          {"id": node.id, "why": f"taken over by {self.name}"[:40]})
                audit.record(s, "system", "cluster.takeover", f"node:{node.name}", by=self.name, epoch=node.epoch)
                taken.append(Takeover(node.name, []))
            for node in s.execute(text(
                    f"SELECT n.id, n.name FROM cluster_nodes n WHERE n.id <> :me AND n.left_at IS NOT NULL "
                    f"AND n.left_at < clock_timestamp() - :hold AND EXISTS (SELECT 1 FROM call_attempts a "
                    f"WHERE a.node_id = n.id AND a.status IN {OPEN_STATES}) FOR UPDATE SKIP LOCKED"),
                    {"me": me, "hold": hold}).all():
                closed = [r.id for r in s.execute(text(
                    f"UPDATE call_attempts SET status = 'ended', ended_at = clock_timestamp(), "
                    f"outcome = COALESCE(outcome, 'interrupted') WHERE node_id = :id AND status IN {OPEN_STATES} "
                    f"RETURNING id"), {"id": node.id})]
                s.execute(text("UPDATE cluster_nodes SET live_calls = 0 WHERE id = :id"), {"id": node.id})
                audit.record(s, "system", "cluster.calls_closed", f"node:{node.name}", by=self.name,
                             calls_closed=len(closed))
                taken.append(Takeover(node.name, closed))
            return taken
        taken = self.run(work)
        for t in taken:
            if t.attempts:
                log.warning("node %s: %d open call(s) closed as interrupted by %s after the hold", t.node,
                            len(t.attempts), self.name)
            else:
                log.warning("node %s stopped heart-beating: fenced by %s (its calls are closed after %.0f s)",
                            t.node, self.name, self.hold_s)
        return taken

    def leave(self) -> None:
        """A clean stop: the others stop counting this node at once (its open calls stay its own: it
        recovers them when it comes back, or the others after its lease)."""
        if self.node_id is None:
            return
        me, epoch = self.node_id, self.epoch

        def work(s) -> None:  # type: ignore[no-untyped-def]
            s.execute(text("UPDATE cluster_leader SET node_id = NULL, lease_until = NULL "
                           "WHERE id = 1 AND node_id = :me AND epoch = :epoch"), {"me": me, "epoch": epoch})
            open_calls = s.execute(text(f"SELECT count(*) FROM call_attempts WHERE node_id = :me "
                                        f"AND status IN {OPEN_STATES}"), {"me": me}).scalar_one()
            if open_calls == 0:
                s.execute(text("UPDATE cluster_nodes SET left_at = clock_timestamp(), left_why = 'stopped' "
                               "WHERE id = :me AND epoch = :epoch"), {"me": me, "epoch": epoch})
        self.run(work)
        self._valid_until = self._leads_until = 0.0
