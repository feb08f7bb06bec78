"""The Kamailio edge's configuration, rendered from an EdgePlan (pure: no Kamailio runs here)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from ivr.cluster.kamailio import CFG_NAME, DISPATCHER_NAME, EdgePlan, render_kamailio

LAB = EdgePlan(listen=("127.0.0.1", 5060), nodes=(("127.0.0.1", 5071), ("127.0.0.1", 5072), ("127.0.0.1", 5073)),
               carrier=("127.0.0.1", 5080), max_channels=30, max_cps=7)
PRODUCTION = EdgePlan(listen=("192.0.2.10", 5060), nodes=(("10.0.0.11", 5060), ("10.0.0.12", 5060)),
                      carrier=("198.51.100.5", 5060), max_channels=90, max_cps=10, expose=True)


def test_the_nodes_are_the_dispatcher_set_in_plan_order() -> None:
    files = render_kamailio(LAB)
    entries = [line.split() for line in files[DISPATCHER_NAME].splitlines() if not line.startswith("#")]
    assert entries == [["1", "sip:127.0.0.1:5071", "0", "0"], ["1", "sip:127.0.0.1:5072", "0", "0"],
                       ["1", "sip:127.0.0.1:5073", "0", "0"]]
    cfg = files[CFG_NAME]
    assert f'modparam("dispatcher", "list_file", "{LAB.config_dir}/{DISPATCHER_NAME}")' in cfg
    assert 'ds_select_dst("1", "4")' in cfg
    assert 'modparam("dispatcher", "ds_ping_interval", 1)' in cfg
    assert 'modparam("dispatcher", "ds_probing_mode", 1)' in cfg


def test_the_caps_and_the_carrier_address_are_in_the_config() -> None:
    cfg = render_kamailio(LAB)[CFG_NAME]
    assert 'pl_check("carrier-cps", "TAILDROP", 7)' in cfg
    assert "if ($var(channels) >= 30) {" in cfg
    assert '$rd = "127.0.0.1";' in cfg and "$rp = 5080;" in cfg
    assert "listen=udp:127.0.0.1:5060" in cfg
    assert "{{" not in cfg and "}}" not in cfg


def test_a_shared_lab_address_is_told_apart_by_port() -> None:
    cfg = render_kamailio(LAB)[CFG_NAME]
    assert 'if (($si == "127.0.0.1" && $sp == 5080)) {' in cfg
    assert ('($si == "127.0.0.1" && $sp == 5071) || ($si == "127.0.0.1" && $sp == 5072) || '
            '($si == "127.0.0.1" && $sp == 5073)') in cfg


def test_production_addresses_of_their_own_are_matched_by_ip_alone() -> None:
    cfg = render_kamailio(PRODUCTION)[CFG_NAME]
    assert 'if ($si == "198.51.100.5") {' in cfg
    assert '} else if ($si == "10.0.0.11" || $si == "10.0.0.12") {' in cfg
    assert "listen=udp:192.0.2.10:5060" in cfg


def test_pike_only_ever_sees_sources_that_are_neither_nodes_nor_carrier() -> None:
    cfg = render_kamailio(LAB)[CFG_NAME]
    route = cfg[cfg.index("request_route {"):cfg.index("\nroute[CLASSIFY] {")]
    # The one pike_check_req() call sits inside the "other" branch, which ends in 403.
    assert route.count("pike_check_req()") == 1
    other = route[route.index('if ($var(side) == "other") {'):]
    assert other.index("pike_check_req()") < other.index('sl_send_reply("403", "Forbidden")')


@pytest.mark.parametrize(("change", "message"), [
    ({"nodes": ()}, "nodes: at least one"),
    ({"max_channels": 0}, "max_channels: must be at least 1"),
    ({"max_cps": 0}, "max_cps: must be at least 1"),
    ({"listen": ("192.0.2.10", 5060)}, "listen: 192.0.2.10 is not loopback; set expose=True"),
    ({"carrier": ("carrier.example", 5060)}, "carrier: 'carrier.example' is not an IP address"),
    ({"nodes": (("127.0.0.1", 5071), ("127.0.0.1", 5071))}, "nodes: listed twice"),
    ({"nodes": (("127.0.0.1", 5080),)}, "carrier: ('127.0.0.1', 5080) is also a node"),
    ({"listen": ("127.0.0.1", 5071)}, "listen: ('127.0.0.1', 5071) is already"),
    ({"nodes": (("127.0.0.1", 70000),)}, "nodes[0]: port 70000"),
    ({"carrier": ("2001:db8::1", 5060)}, "carrier: 2001:db8::1 is IPv6"),
    ({"ctl_socket": "/tmp/" + "x" * 120}, "ctl_socket: longer than"),
    ({"config_dir": "/etc/kam ailio"}, "config_dir: an absolute path"),
    ({"ping_interval_s": 0}, "ping_interval_s"),
])
def test_a_bad_plan_is_refused_with_what_to_fix(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        render_kamailio(dataclasses.replace(LAB, **change))  # type: ignore[arg-type]
