"""Kamailio at the SIP edge, with real processes: Debian's Kamailio run from ``render_kamailio``, SIPp
(``sip-tester``) as the Asterisk nodes, the carrier, and the calls.

Counted from both ends: the calling side's SIPp log says who answered each call (the node's port in
the Contact) or which cap refused it (``X-BINfoon-Cap``); the carrier's SIPp log says how many calls
reached it; Kamailio's own log and ``dispatcher.list`` say which failovers happened and which nodes
are inactive. Figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from ivr.cluster.kamailio import EdgePlan
from ivr.lab.kamailio_lab import (
    HOST,
    KamailioEdge,
    SippUas,
    calls_received,
    free_udp_ports,
    run_uac,
    sip_request,
)

pytestmark = pytest.mark.integration


def _plan(listen: int, carrier: int, nodes: list[int], *, max_channels: int, max_cps: int) -> EdgePlan:
    return EdgePlan(listen=(HOST, listen), nodes=tuple((HOST, port) for port in nodes), carrier=(HOST, carrier),
                    max_channels=max_channels, max_cps=max_cps)


def _failovers(work_dir: Path) -> int:
    return (work_dir / "kamailio.log").read_text(encoding="utf-8", errors="replace").count("node failed")


async def test_carrier_calls_are_spread_over_the_nodes_and_avoid_a_killed_node(tmp_path: Path) -> None:
    listen, carrier, *node_ports = free_udp_ports(5)
    nodes = [SippUas(port, tmp_path) for port in node_ports]
    edge = KamailioEdge()
    try:
        for node in nodes:
            node.start()
        await edge.start(_plan(listen, carrier, node_ports, max_channels=100, max_cps=100), tmp_path)
        dead_uri = f"sip:{HOST}:{node_ports[2]}"

        all_up = await run_uac((HOST, listen), carrier, tmp_path, calls=12, rate=20)
        print(f"\n3 nodes up: answered by port {dict(all_up.answered_by)}, other {dict(all_up.other)}")
        assert all_up.answered == 12
        assert set(all_up.answered_by) == set(node_ports)

        nodes[2].kill()
        killed_at = time.monotonic()
        right_after = await run_uac((HOST, listen), carrier, tmp_path, calls=6, rate=20)
        failovers = _failovers(tmp_path)
        print(f"just after the kill: answered by port {dict(right_after.answered_by)}, "
              f"other {dict(right_after.other)}, failovers {failovers}")
        assert right_after.answered == 6
        assert node_ports[2] not in right_after.answered_by
        assert failovers >= 1  # the calls sent to the silent node went on to the next one

        states = await edge.wait_nodes(lambda s: s.get(dead_uri, "").startswith("I"), timeout_s=10)
        print(f"dispatcher states: {states}, {time.monotonic() - killed_at:.1f} s after the kill")
        assert states[dead_uri].startswith("I")
        later = await run_uac((HOST, listen), carrier, tmp_path, calls=6, rate=20)
        print(f"node marked inactive: answered by port {dict(later.answered_by)}, "
              f"failovers since {_failovers(tmp_path) - failovers}")
        assert later.answered == 6
        assert set(later.answered_by) <= set(node_ports[:2])
    finally:
        await edge.stop()
        for node in nodes:
            node.stop()


async def test_the_third_concurrent_outbound_call_gets_503_under_a_cap_of_two(tmp_path: Path) -> None:
    listen, carrier_port, node = free_udp_ports(3)
    carrier = SippUas(carrier_port, tmp_path)
    edge = KamailioEdge()
    try:
        carrier.start()
        await edge.start(_plan(listen, carrier_port, [node], max_channels=2, max_cps=100), tmp_path)

        # Three calls within ~0.1 s, each held 3 s once answered: the third finds both channels taken.
        held = await run_uac((HOST, listen), node, tmp_path, calls=3, rate=30, hold_ms=3000)
        reached = calls_received(carrier.log)
        print(f"\nmax_channels=2, 3 calls: answered {held.answered}, refused {dict(held.refused)}, "
              f"other {dict(held.other)}, calls at the carrier {reached}")
        assert held.answered == 2
        assert held.refused == {"channels": 1}
        assert reached == 2

        # Hung up (BYE through the edge): the channels are free again.
        size = await edge.rpc("dlg.profile_get_size", "carrier")
        after = await run_uac((HOST, listen), node, tmp_path, calls=2, rate=10)
        print(f"after the hang-ups: profile size {size.strip()!r}, then answered {after.answered}")
        assert after.answered == 2
    finally:
        await edge.stop()
        carrier.stop()


async def test_calls_beyond_the_cps_cap_get_503(tmp_path: Path) -> None:
    listen, carrier_port, node = free_udp_ports(3)
    carrier = SippUas(carrier_port, tmp_path)
    edge = KamailioEdge()
    max_cps = 5
    try:
        carrier.start()
        await edge.start(_plan(listen, carrier_port, [node], max_channels=100, max_cps=max_cps), tmp_path)

        burst = await run_uac((HOST, listen), node, tmp_path, calls=20, rate=50)
        reached = calls_received(carrier.log)
        # TAILDROP counts per 1 s interval: a burst sent over S seconds touches at most ceil(S) + 1 intervals.
        bound = max_cps * (math.ceil(burst.send_span_s) + 1)
        print(f"\nmax_cps={max_cps}, 20 calls at 50/s sent over {burst.send_span_s:.2f} s: answered "
              f"{burst.answered} (bound {bound}), refused {dict(burst.refused)}, other {dict(burst.other)}, "
              f"calls at the carrier {reached}")
        assert burst.answered + burst.refused["cps"] == 20
        assert burst.refused["cps"] >= 1
        assert 1 <= burst.answered <= bound
        assert reached == burst.answered
    finally:
        await edge.stop()
        carrier.stop()


async def test_a_node_registers_at_the_carrier_through_the_edge_with_the_edge_as_contact(tmp_path: Path) -> None:
    listen, carrier_port, node, stranger = free_udp_ports(4)
    carrier = SippUas(carrier_port, tmp_path)
    edge = KamailioEdge()
    try:
        carrier.start()
        await edge.start(_plan(listen, carrier_port, [node], max_channels=2, max_cps=5), tmp_path)

        reply = await asyncio.to_thread(sip_request, (HOST, listen), "REGISTER", local_port=node,
                                        contact_user="binfoon", timeout_s=5.0)
        refused = await asyncio.to_thread(sip_request, (HOST, listen), "REGISTER", local_port=stranger,
                                          contact_user="binfoon", timeout_s=5.0)
        print(f"\nnode's REGISTER: {reply.splitlines()[0] if reply else None}; "
              f"a stranger's: {refused.splitlines()[0] if refused else None}")
        assert reply is not None and reply.startswith("SIP/2.0 200")
        # The carrier answered with the Contact it was given: the edge's address, not the node's.
        assert f"<sip:binfoon@{HOST}:{listen}>" in reply
        assert refused is not None and refused.startswith("SIP/2.0 403")
    finally:
        await edge.stop()
        carrier.stop()
