"""A farm's nodes on one real PostgreSQL (issue 18 items 1-2; RELIABILITY E1-E3, E6 in-process).

Claims, fencing, start-up recovery and the lead, each against the database; then whole campaigns
dialled by three nodes at once (the fake dialer of the campaign tests stands in for Asterisk: the
farm with real Asterisks and Kamailio is ``tests/integration/test_farm.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.cluster.budget import Budget, Peer, node_budget
from ivr.cluster.lease import Fenced, NodeLease
from ivr.cluster.node import FarmNode
from ivr.delivery.store import DeliveryDesk
from ivr.domain.vocabulary import AttemptOutcome, AttemptStatus
from storage.db import session_scope
from storage.models import CallAttempt, Campaign, ClusterNode, Confirmation
from tests.pg import _create_database
from tests.unit.delivery.test_campaign_runner import FakeDialer, _add_members, _approved, _runner, _until_done
from tests.world import World, build_world

pytestmark = pytest.mark.postgres


@pytest.fixture
def world(postgres_server: tuple[str, int], tmp_path: Path) -> World:
    return build_world(_create_database(postgres_server), tmp_path / "store")


def _lease(world: World, name: str, lease_s: float = 15.0, heartbeat_s: float = 0.2) -> NodeLease:
    return NodeLease(world.engine, name, lease_s=lease_s, heartbeat_s=heartbeat_s)


async def _campaign(world: World, tmp_path: Path, members: int) -> int:
    _add_members(world, members)
    message_id = await _approved(world, tmp_path)
    with session_scope(world.engine) as s:
        return s.scalars(select(Campaign.id).where(Campaign.message_id == message_id)).one()


def _person_ids(world: World) -> list[int]:
    from storage.models import Person, RoleAssignment
    from ivr.domain.vocabulary import Role

    with session_scope(world.engine) as s:
        return list(s.scalars(select(Person.id).join(RoleAssignment).where(RoleAssignment.role == Role.MEMBER)))


# -- the budget (pure) -----------------------------------------------------------------------------
def test_the_carriers_limits_are_shared_and_add_up_to_the_whole() -> None:
    peers = [Peer(1, 0), Peer(2, 0), Peer(3, 0)]
    shares = [node_budget(91, 9.0, me, peers, settled=True) for me in (1, 2, 3)]
    assert [b.channels for b in shares] == [31, 30, 30] and sum(b.cps for b in shares) == pytest.approx(9.0)
    # A newcomer fills only what the others do not hold (they keep their calls until they end).
    assert node_budget(90, 9.0, 3, [Peer(1, 45), Peer(2, 40), Peer(3, 0)], settled=True) == Budget(5, 3.0)
    # ... and nothing at all before the others have seen it.
    assert node_budget(90, 9.0, 3, [Peer(1, 0), Peer(3, 0)], settled=False) == Budget(0, 0.0)
    assert node_budget(90, 9.0, 1, [Peer(1, 7)], settled=True) == Budget(90, 9.0)


# -- E1: claims --------------------------------------------------------------------------------------
async def test_eight_claimers_racing_for_the_same_members_never_hold_the_same_claim(world: World,
                                                                                    tmp_path: Path) -> None:
    campaign_id = await _campaign(world, tmp_path, 40)
    people = _person_ids(world)
    leases = [_lease(world, f"n{i}") for i in range(8)]
    for lease in leases:
        lease.join()
    desks = []
    for lease in leases:
        desk = DeliveryDesk(world.engine, world.desk.store)
        desk.claim = lambda lease=lease: lease.claim  # type: ignore[misc]
        desks.append(desk)
    barrier = threading.Barrier(8)

    def claimer(desk: DeliveryDesk) -> list[str | None]:
        barrier.wait()
        got = []
        for person_id in people:  # everybody goes for the same members in the same order
            got.append(asyncio.run(desk.begin_attempt(campaign_id, person_id, f"+3294{person_id:06d}", "primary", 1)))
        return got

    results: list[list[str | None]] = []
    # Threads of their own: the loop's default pool has fewer workers than 8 on 2 cores.
    threads = [threading.Thread(target=lambda d=d: results.append(claimer(d))) for d in desks]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join)
    assert len(results) == 8
    won = [a for r in results for a in r if a is not None]
    assert len(won) == len(people)  # every member claimed, by exactly one node
    with session_scope(world.engine) as s:
        rows = s.scalars(select(CallAttempt)).all()
        assert Counter(a.person_id for a in rows) == Counter(people)
        assert all(a.node_id is not None and a.fence is not None for a in rows)
        assert len({a.node_id for a in rows}) > 1  # really raced, not one claimer first


# -- E2: fencing ---------------------------------------------------------------------------------------
async def test_a_node_paused_past_its_lease_is_fenced_and_cannot_claim_or_renew(world: World,
                                                                                tmp_path: Path) -> None:
    campaign_id = await _campaign(world, tmp_path, 2)
    first, second = _person_ids(world)
    paused, survivor = _lease(world, "paused", lease_s=1.0), _lease(world, "survivor", lease_s=1.0)
    paused.join()
    survivor.join()
    desk = DeliveryDesk(world.engine, world.desk.store)
    desk.claim = lambda: paused.claim
    up = await desk.begin_attempt(campaign_id, first, "+3294000001", "primary", 1)
    assert up is not None
    time.sleep(1.3)  # "paused": no heartbeat past its lease
    survivor.beat(0)
    taken = survivor.take_over_expired()  # no hold here: fenced, then its calls closed at once
    assert {t.node for t in taken} == {"paused"} and [a for t in taken for a in t.attempts] == [up]
    # Woken up: its own clock says the lease is gone, the database refuses its claims and its heartbeat.
    assert not paused.valid()
    assert await desk.begin_attempt(campaign_id, second, "+3294000002", "primary", 1) is None
    with pytest.raises(Fenced):
        paused.beat(0)
    with session_scope(world.engine) as s:
        attempt = s.get_one(CallAttempt, up)
        assert attempt.status is AttemptStatus.ENDED and attempt.outcome is AttemptOutcome.INTERRUPTED
        assert s.scalar(select(ClusterNode.left_why).where(ClusterNode.name == "paused")) == "taken over by survivor"
    # Joining again gives a new epoch under which it may claim again.
    old_epoch = paused.epoch
    paused.join()
    assert paused.epoch > old_epoch
    assert await desk.begin_attempt(campaign_id, second, "+3294000002", "primary", 1) is not None


async def test_a_fenced_nodes_calls_stay_its_own_and_count_against_the_farm_until_the_hold_is_over(
        world: World, tmp_path: Path) -> None:
    campaign_id = await _campaign(world, tmp_path, 1)
    (person,) = _person_ids(world)
    paused = _lease(world, "paused", lease_s=1.0)
    survivor = NodeLease(world.engine, "survivor", lease_s=1.0, heartbeat_s=0.2, hold_s=2.0)
    paused.join()
    survivor.join()
    desk = DeliveryDesk(world.engine, world.desk.store)
    desk.claim = lambda: paused.claim
    up = await desk.begin_attempt(campaign_id, person, "+3294000001", "primary", 1)
    time.sleep(1.3)
    assert survivor.beat(0).held_elsewhere == 1
    assert [t.attempts for t in survivor.take_over_expired()] == [[]]  # fenced; its call may still be up
    with session_scope(world.engine) as s:
        assert s.get_one(CallAttempt, up).status is AttemptStatus.DIALING  # its member is not called again yet
    assert survivor.beat(0).held_elsewhere == 1  # and its channel still counts
    time.sleep(2.1)
    assert [t.attempts for t in survivor.take_over_expired()] == [[up]]
    assert survivor.beat(0).held_elsewhere == 0
    with session_scope(world.engine) as s:
        assert s.get_one(CallAttempt, up).outcome is AttemptOutcome.INTERRUPTED


# -- E3: start-up recovery ----------------------------------------------------------------------------
async def test_start_up_recovery_touches_only_the_nodes_own_calls(world: World, tmp_path: Path) -> None:
    campaign_id = await _campaign(world, tmp_path, 2)
    first, second = _person_ids(world)
    a, b = _lease(world, "a"), _lease(world, "b")
    a.join()
    b.join()
    desk_a, desk_b = DeliveryDesk(world.engine, world.desk.store), DeliveryDesk(world.engine, world.desk.store)
    desk_a.claim, desk_b.claim = (lambda: a.claim), (lambda: b.claim)
    on_a = await desk_a.begin_attempt(campaign_id, first, "+3294000001", "primary", 1)
    on_b = await desk_b.begin_attempt(campaign_id, second, "+3294000002", "primary", 1)
    assert on_a and on_b
    # b restarts (its Asterisk has no calls up): it closes its own open call, never a's live one.
    b.join()
    closed, kept = await desk_b.interrupt_in_flight(set(), node_id=b.node_id)
    assert closed == [on_b] and kept == []
    with session_scope(world.engine) as s:
        assert s.get_one(CallAttempt, on_a).status is AttemptStatus.DIALING


# -- the lead -------------------------------------------------------------------------------------------
def test_one_node_leads_and_another_takes_the_lead_when_it_stops_heart_beating(world: World) -> None:
    nodes = [_lease(world, f"l{i}", lease_s=1.0) for i in range(3)]
    for node in nodes:
        node.join()
    leaders = [n.name for n in nodes if n.beat(0).leader]
    assert len(leaders) == 1
    others = [n for n in nodes if n.name != leaders[0]]
    for _ in range(2):  # the leader stops heart-beating; the others go on
        time.sleep(0.3)
        for n in others:
            assert not n.beat(0).leader  # the lead's lease holds until it runs out
    time.sleep(0.5)
    for n in others:
        n.take_over_expired()
    new = [n.name for n in others if n.beat(0).leader]
    assert len(new) == 1 and new[0] != leaders[0]
    old = next(n for n in nodes if n.name == leaders[0])
    with pytest.raises(Fenced):  # it was taken over: it cannot renew, nor lead
        old.beat(0)
    assert not old.leads()


# -- whole campaigns on three nodes (E1, E4, E6 with a fake PBX) ----------------------------------------
class _Trunk:
    """Counts the farm's calls up at once, across every node's fake dialer."""

    def __init__(self) -> None:
        self.up = 0
        self.peak = 0

    def wrap(self, dialer: FakeDialer) -> None:
        original = dialer.dial

        async def dial(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            self.up += 1
            self.peak = max(self.peak, self.up)
            try:
                return await original(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                self.up -= 1
        dialer.dial = dial  # type: ignore[method-assign]


async def _farm(world: World, count: int, trunk: _Trunk, *, channels: int, cps: float, call_s: float = 0.15,
                lease_s: float = 15.0):  # type: ignore[no-untyped-def]
    nodes = []
    for i in range(count):
        dialer = FakeDialer(world.desk, {}, call_s=call_s)  # type: ignore[arg-type]
        trunk.wrap(dialer)
        runner = _runner(world, dialer, max_channels=channels, max_cps=cps)
        lease = _lease(world, f"node-{i}", lease_s=lease_s, heartbeat_s=0.2)
        farm = FarmNode(lease, total_channels=channels, total_cps=cps, live_calls=lambda r=runner: r.calls.busy,
                        set_budget=lambda b, r=runner: r.calls.set_limits(b.channels, b.cps),
                        gained_lead=_nothing, lost_lead=_nothing, took_over=runner.wake, fenced=_nothing)
        runner.desk.claim = lambda lease=lease: lease.claim  # type: ignore[misc]
        runner.lease_valid = lease.valid
        await farm.join()
        runner.node_id = lease.node_id
        await runner.start()
        await farm.run()
        nodes.append((runner, farm, dialer))
    return nodes


async def _nothing() -> None:
    return None


async def test_three_nodes_dial_one_campaign_once_each_within_the_farms_limits(world: World,
                                                                              tmp_path: Path) -> None:
    await _campaign(world, tmp_path, 60)
    trunk = _Trunk()
    nodes = await _farm(world, 3, trunk, channels=6, cps=60.0)
    try:
        await _until_done(world, 60.0)
    finally:
        for runner, farm, _ in nodes:
            await runner.stop()
            await farm.stop()
    with session_scope(world.engine) as s:
        attempts = s.scalars(select(CallAttempt)).all()
        confirmed = s.scalars(select(Confirmation.person_id)).all()
    dialled = Counter(n for _, _, d in nodes for _, n in d.dialled)
    assert len(dialled) == 60 and max(dialled.values()) == 1  # everybody once, nobody twice
    assert len(confirmed) == 60
    assert trunk.peak <= 6  # the farm's channels, never one node's
    assert len({a.node_id for a in attempts}) == 3  # the work was shared


async def test_a_node_that_dies_mid_campaign_is_taken_over_nobody_confirmed_is_called_again(
        world: World, tmp_path: Path) -> None:
    await _campaign(world, tmp_path, 60)
    trunk = _Trunk()
    nodes = await _farm(world, 3, trunk, channels=6, cps=30.0, call_s=0.3, lease_s=1.5)
    dead_runner, dead_farm, dead_dialer = nodes[0]
    try:
        while len(dead_dialer.dialled) < 5:
            await asyncio.sleep(0.02)
        # SIGKILL, in-process: its loops stop where they are; its open calls stay open in the database.
        for task in [dead_runner._task, dead_farm._task, *dead_runner._calls.values()]:
            if task is not None:
                task.cancel()
        await _until_done(world, 90.0)
    finally:
        for runner, farm, _ in nodes[1:]:
            await runner.stop()
            await farm.stop()
    with session_scope(world.engine) as s:
        confirmed_at = {c.person_id: c.confirmed_at for c in s.scalars(select(Confirmation))}
        attempts = s.scalars(select(CallAttempt)).all()
        dead = s.scalars(select(ClusterNode).where(ClusterNode.name == "node-0")).one()
    assert dead.left_why is not None and dead.left_why.startswith("taken over by")
    assert len(confirmed_at) == 60  # nobody skipped
    # Nobody is called again after confirming.
    again = [a for a in attempts if a.person_id in confirmed_at and a.dialled_at is not None
             and a.dialled_at > confirmed_at[a.person_id]]
    assert again == []
    assert trunk.peak <= 6
