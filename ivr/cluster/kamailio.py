"""Kamailio at the SIP edge of a BINfoon farm: its configuration, rendered from an ``EdgePlan``.

Pure: ``render_kamailio(plan)`` returns the files (name -> text) and reads nothing but the template
``kamailio-conf/kamailio.cfg.tmpl``; ``ivr.lab.kamailio_lab.KamailioEdge`` runs them.

What the rendered edge does (Debian 12's Kamailio 5.6, no database):
- the carrier's calls (requests from the carrier's address) are dispatched to the Asterisk nodes
  (``dispatcher``, round robin, OPTIONS probes every ``ping_interval_s``, failover to the next node on
  5xx/408/timeout); the carrier's own OPTIONS are answered by the edge; record-route keeps ACK, BYE and
  re-INVITEs on the edge, so the carrier sees one address;
- the nodes' calls go to the carrier under the carrier's caps, farm-wide: at most ``max_channels``
  dialogs at once (``dialog`` profile, checked and counted under one lock) and at most ``max_cps`` new
  INVITEs a second (``pipelimit`` TAILDROP pipe over 1 s intervals); beyond either, 503 with
  ``X-BINfoon-Cap: channels`` or ``cps`` (congestion, never a member's failure);
- the nodes' REGISTERs go to the carrier with their Contact rewritten to the edge;
- any other source gets 403, behind a ``pike`` flood check that only ever sees those other sources
  (in the lab everything is 127.0.0.1: the farm itself is told apart by port and never blocked).

Why ``pipelimit`` rather than ``ratelimit``: its pipes are named and created by ``pl_check`` from the
script (limit and algorithm next to the check that uses them), with no numbered ``pipe``/``queue``
modparams; both count in shared memory for all workers, both are a fixed-interval TAILDROP, so a
burst straddling an interval boundary may see up to 2 x ``max_cps`` within one sliding second (the
app's own token bucket paces below the cap; this is the safety net).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
TEMPLATE = PROJECT_DIR / "kamailio-conf" / "kamailio.cfg.tmpl"
CFG_NAME = "kamailio.cfg"
DISPATCHER_NAME = "dispatcher.list"
#: The dispatcher set of the Asterisk nodes.
NODE_SET = 1
#: A unix socket path longer than this does not fit ``sun_path`` (108 bytes with its NUL).
MAX_SOCKET_PATH = 100

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_PATH = re.compile(r"^/[A-Za-z0-9_./+\-]+$")

Address = tuple[str, int]


@dataclass(frozen=True)
class EdgePlan:
    """Where the edge listens, the nodes behind it, the carrier in front, and the carrier's caps."""

    listen: Address
    #: The Asterisk nodes (IP, SIP port), in dispatcher order.
    nodes: tuple[Address, ...]
    #: The carrier's signalling address (IP, port); its requests are recognised by it.
    carrier: Address
    #: The carrier's channels for the whole farm.
    max_channels: int
    #: The carrier's new calls per second for the whole farm.
    max_cps: int
    #: Listening beyond loopback is production: say so explicitly.
    expose: bool = False
    #: OPTIONS probes to every node, every this many seconds.
    ping_interval_s: int = 1
    #: Failed probes in a row that make a node inactive.
    probing_threshold: int = 1
    #: A node (or probe) with no reply within this time has failed (tm ``fr_timer``).
    reply_timeout_ms: int = 2000
    #: A dialog whose BYE never came stops counting against the channels after this.
    dialog_timeout_s: int = 7200
    #: The control socket (``kamcmd -s unix:PATH``): dispatcher states, dialog counts.
    ctl_socket: str = "/run/kamailio/binfoon-ctl.sock"
    #: Where the dispatcher list is read from (the file rendered beside the cfg).
    config_dir: str = "/etc/kamailio"
    children: int = 4
    log_level: int = 1


def check_plan(plan: EdgePlan) -> None:
    """Raise ``ValueError`` naming what to fix when the plan cannot make a working, safe edge."""
    if not plan.nodes:
        raise ValueError("nodes: at least one Asterisk node is needed behind the edge")
    for name in ("max_channels", "max_cps"):
        if getattr(plan, name) < 1:
            raise ValueError(f"{name}: must be at least 1 (the carrier's cap), not {getattr(plan, name)}")
    _check_address("listen", plan.listen)
    _check_address("carrier", plan.carrier)
    for index, node in enumerate(plan.nodes):
        _check_address(f"nodes[{index}]", node)
    if len(set(plan.nodes)) != len(plan.nodes):
        raise ValueError(f"nodes: listed twice: {sorted({n for n in plan.nodes if plan.nodes.count(n) > 1})}")
    if plan.carrier in plan.nodes:
        raise ValueError(f"carrier: {plan.carrier} is also a node; they are told apart by address")
    if plan.listen in plan.nodes or plan.listen == plan.carrier:
        raise ValueError(f"listen: {plan.listen} is already the carrier's or a node's address")
    if not ipaddress.ip_address(plan.listen[0]).is_loopback and not plan.expose:
        raise ValueError(f"listen: {plan.listen[0]} is not loopback; set expose=True to listen on the network")
    if not 1 <= plan.ping_interval_s <= 60:
        raise ValueError("ping_interval_s: 1 to 60 seconds")
    if not 1 <= plan.probing_threshold <= 10:
        raise ValueError("probing_threshold: 1 to 10 failed probes")
    if not 200 <= plan.reply_timeout_ms <= 32000:
        raise ValueError("reply_timeout_ms: 200 to 32000 ms")
    if plan.dialog_timeout_s < 60:
        raise ValueError("dialog_timeout_s: at least 60 s (a member call lasts longer)")
    for name in ("ctl_socket", "config_dir"):
        if not _PATH.match(getattr(plan, name)):
            raise ValueError(f"{name}: an absolute path of plain characters, not {getattr(plan, name)!r}")
    if len(plan.ctl_socket) > MAX_SOCKET_PATH:
        raise ValueError(f"ctl_socket: longer than {MAX_SOCKET_PATH} characters (a unix socket path)")


def _check_address(name: str, address: Address) -> None:
    host, port = address
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{name}: {host!r} is not an IP address (requests are recognised by source IP)") from None
    if parsed.version != 4:
        raise ValueError(f"{name}: {host} is IPv6; the edge is rendered for IPv4 only")
    if not 1 <= port <= 65535:
        raise ValueError(f"{name}: port {port} is not 1-65535")


def source_match(addresses: tuple[Address, ...], shared_hosts: set[str]) -> str:
    """A cfg condition true for a request from one of ``addresses``.

    The port is compared only for a host that others share (the lab: all on 127.0.0.1); a host of its
    own is matched by IP alone, since a carrier or a node may send from another port than it listens on.
    """
    terms = []
    for host, port in addresses:
        if host in shared_hosts:
            terms.append(f'($si == "{host}" && $sp == {port})')
        else:
            terms.append(f'$si == "{host}"')
    return " || ".join(terms)


def shared_hosts(plan: EdgePlan) -> set[str]:
    """Hosts that appear more than once among the listen address, the carrier and the nodes."""
    hosts = [plan.listen[0], plan.carrier[0], *(host for host, _ in plan.nodes)]
    return {host for host in hosts if hosts.count(host) > 1}


def dispatcher_list(plan: EdgePlan) -> str:
    """The dispatcher list file: the nodes as set 1, in plan order."""
    lines = ["# setid destination flags priority attributes (rendered by ivr/cluster/kamailio.py)"]
    for host, port in plan.nodes:
        lines.append(f"{NODE_SET} sip:{host}:{port} 0 0")
    return "\n".join(lines) + "\n"


def render_kamailio(plan: EdgePlan) -> dict[str, str]:
    """The edge's files, name -> text: ``kamailio.cfg`` and ``dispatcher.list`` (written side by side
    in ``plan.config_dir``). Raises ``ValueError`` for a plan ``check_plan`` refuses."""
    check_plan(plan)
    shared = shared_hosts(plan)
    values = {
        "log_level": str(plan.log_level), "children": str(plan.children),
        "listen_host": plan.listen[0], "listen_port": str(plan.listen[1]),
        "ctl_socket": plan.ctl_socket, "dispatcher_list": f"{plan.config_dir}/{DISPATCHER_NAME}",
        "reply_timeout_ms": str(plan.reply_timeout_ms), "dialog_timeout_s": str(plan.dialog_timeout_s),
        "ping_interval_s": str(plan.ping_interval_s), "probing_threshold": str(plan.probing_threshold),
        "carrier_match": source_match((plan.carrier,), shared),
        "node_match": source_match(plan.nodes, shared),
        "carrier_host": plan.carrier[0], "carrier_port": str(plan.carrier[1]),
        "max_cps": str(plan.max_cps), "max_channels": str(plan.max_channels),
    }

    def fill(match: re.Match[str]) -> str:
        return values[match.group(1)]  # a KeyError here is a template bug, not a plan error

    cfg = _PLACEHOLDER.sub(fill, TEMPLATE.read_text(encoding="utf-8"))
    return {CFG_NAME: cfg, DISPATCHER_NAME: dispatcher_list(plan)}
