"""A BINfoon farm on one machine (issue 18): N nodes, each an Asterisk and a ``binfoon serve`` process,
on one private PostgreSQL, behind a Kamailio edge, calling the simulated phone network.

    network Asterisk (carrier + phones, FastAGI to ``PhoneNetwork`` in this process)
            ^  SIP (one carrier account; the edge is its registered contact)
    Kamailio edge (``KamailioEdge``: carrier caps farm-wide, dispatcher over the nodes for calls in)
            ^  each node's PJSIP trunk points at the edge
    node-0 .. node-N-1: Asterisk instance + ``binfoon serve`` (``cluster_node=node-<i>``)
            |
    private PostgreSQL (``PrivatePostgres``): the farm's one database

``with_edge=False`` points the nodes' trunks straight at the network Asterisk (no Kamailio).

Media (RTP) flows between a node and the network Asterisk directly: the edge carries signalling only.
Each call is INVITEd twice through the edge (the carrier challenges every INVITE with a digest), so
the edge's calls-per-second cap is twice the farm's; the channel cap is the farm's.

The nodes share what a farm shares in production: the database, the recordings' key (each node's
``data_dir/recordings.key`` is a copy of the farm's) and the audit chain's key (``audit_key_file``).

Faults for the tests: ``kill_service``/``restart_service`` (SIGKILL, then a new process, as systemd's
``Restart=always``), ``kill_asterisk``/``restart_asterisk``, ``pause_service``/``resume_service``
(SIGSTOP/SIGCONT of the service's process group).
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from ivr.asterisk.install import AsteriskRuntime
from ivr.asterisk.instance import AsteriskInstance, InstanceOptions
from ivr.asterisk.trunk import DEFAULT_RTP_PORTS, Trunk
from ivr.cluster.kamailio import EdgePlan
from ivr.lab.farm_world import FarmWorld
from ivr.lab.kamailio_lab import HOST, KamailioEdge, free_udp_ports
from ivr.lab.network import TRUNK_INBOUND_TEMPLATE, PhoneNetwork
from ivr.lab.phone_lab import LAB_TRUNK_USERNAME, TRUNK_TEMPLATE, wait_registered, write_secret
from ivr.lab.postgres import PrivatePostgres
from ivr.telephony.agi import AgiServer
from ivr.telephony.ami import AmiGateway
from ivr.lab.ports import free_ports
from storage import audit
from storage.db import open_database

PROJECT_DIR = Path(__file__).resolve().parents[2]
#: What the service's log says once it serves (``binfoon serve``).
SERVING = b"BINfoon serving"
#: Quick lab timings (the same as the single-node fault tests'); ``Farm.start(settings=...)`` overrides.
LAB_SETTINGS = {"member_ring_timeout_s": "5", "review_ring_timeout_s": "1", "urgent_retry_after_s": "1",
                "no_key_retry_after_s": "1", "key_timeout_s": "6", "caller_id_number": "+3250000000"}


def _free_tcp_port() -> int:
    return free_ports(1)[0]


@dataclass
class Node:
    """One node of the farm: its Asterisk and its service process."""

    index: int
    name: str
    asterisk: AsteriskInstance
    agi_port: int
    data_dir: Path
    log: Path
    env: dict[str, str] = field(repr=False)
    process: subprocess.Popen[bytes] | None = None
    #: Where the log stood when the service was last started (its "serving" line comes after).
    log_mark: int = 0

    @property
    def sip_port(self) -> int:
        """The node's Asterisk SIP port (UDP, loopback)."""
        return self.asterisk.options.sip_port


class Farm:
    """``await Farm.start(runtime, base_dir, nodes=3, channels=12, cps=6)``; ``await farm.stop()``."""

    def __init__(self) -> None:
        self.postgres = PrivatePostgres()
        self.database_url = ""
        self.engine: Engine | None = None
        self.network_asterisk: AsteriskInstance | None = None
        self.network: PhoneNetwork | None = None
        self.edge: KamailioEdge | None = None
        self.edge_address: tuple[str, int] | None = None
        self.nodes: list[Node] = []
        self.world: FarmWorld | None = None
        self.channels = 0
        self.cps = 0.0
        self._sim: AgiServer | None = None
        self._network_ami: AmiGateway | None = None
        self._shared: Path | None = None

    # -- start and stop ---------------------------------------------------------------------------
    @classmethod
    async def start(cls, runtime: AsteriskRuntime, base_dir: Path, *, nodes: int, channels: int, cps: float,
                    ring_s: float = 0.5, with_edge: bool = True, name: str | None = None,
                    settings: dict[str, str] | None = None) -> Farm:
        """Start the database, the network, the edge and ``nodes`` nodes; returns once every node's trunk
        is registered and every service serves. ``settings``: extra ``BINFOON_*`` values for every node
        (``{"cluster_lease_s": "4"}``). On failure everything started is stopped again."""
        farm = cls()
        farm.channels, farm.cps = channels, cps
        name = name or f"farm-{uuid.uuid4().hex[:6]}"
        try:
            await farm._start(runtime, base_dir, name, nodes, ring_s, with_edge, settings or {})
        except BaseException:
            await farm.stop()
            raise
        return farm

    async def _start(self, runtime: AsteriskRuntime, base_dir: Path, name: str, count: int, ring_s: float,
                     with_edge: bool, settings: dict[str, str]) -> None:
        await asyncio.to_thread(self.postgres.start)
        self.database_url = self.postgres.create_database()
        self.engine = await asyncio.to_thread(open_database, self.database_url)
        self._shared = base_dir / f"{name}-shared"
        self._shared.mkdir(parents=True, exist_ok=True)
        # The farm's audit key: written by this process's first audit row (the seeding), read by every node.
        audit.configure(self.engine.url, self._shared)
        self.world = FarmWorld(self.engine, self._shared / "recordings")
        self.world.recordings.key()  # the farm's recordings key, copied to every node below

        self._sim = AgiServer(port=0)
        await self._sim.start()
        net = AsteriskInstance(runtime, InstanceOptions(
            name=f"{name}-net", agi_port=self._sim.port, sim_agi_port=self._sim.port, carrier_match=HOST,
            carrier_username=LAB_TRUNK_USERNAME,
            # Every call of the farm reaches this one Asterisk: 200 RTP ports (100 calls) ran out at
            # 90 channels (calls being torn down hold theirs), and the network answered 488.
            rtp_ports=max(DEFAULT_RTP_PORTS, 2 * (2 * self.channels + 50))), base_dir)
        self.network_asterisk = net
        net_sip = net.allocate_ports().sip_port
        carrier_secret = net.run_dir / "carrier.secret"
        write_secret(carrier_secret, secrets.token_urlsafe(24))
        net.options.carrier_secret_file = str(carrier_secret)
        await asyncio.to_thread(net.start)

        trunk_port = net_sip
        node_instances = []
        for i in range(count):
            instance = AsteriskInstance(runtime, InstanceOptions(name=f"{name}-node-{i}"), base_dir)
            instance.allocate_ports()
            node_instances.append(instance)
        if with_edge:
            (edge_port,) = free_udp_ports(1)
            self.edge = KamailioEdge()
            # Two INVITEs a call (the carrier's digest challenge): the edge's cps cap is twice the farm's.
            plan = EdgePlan(listen=(HOST, edge_port), nodes=tuple((HOST, i.options.sip_port) for i in node_instances),
                            carrier=(HOST, net_sip), max_channels=self.channels, max_cps=max(1, math.ceil(2 * self.cps)))
            await self.edge.start(plan, base_dir / f"{name}-edge")
            self.edge_address = (HOST, edge_port)
            trunk_port = edge_port
        for i, instance in enumerate(node_instances):
            instance.run_dir.mkdir(parents=True, exist_ok=True)
            trunk_secret = instance.run_dir / "trunk.secret"
            write_secret(trunk_secret, carrier_secret.read_text().strip())
            agi_port = _free_tcp_port()
            instance.options.agi_port = agi_port
            instance.options.caller_id_number = settings.get("caller_id_number", LAB_SETTINGS["caller_id_number"])
            instance.options.trunk = Trunk(host=HOST, port=trunk_port, username=LAB_TRUNK_USERNAME,
                                           secret_file=str(trunk_secret))
            data_dir = base_dir / f"{name}-data-{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.world.recordings.key_file, data_dir / "recordings.key")
            node = Node(i, f"node-{i}", instance, agi_port, data_dir, base_dir / f"{name}-node-{i}.log",
                        self._env(f"node-{i}", instance, agi_port, data_dir, settings))
            self.nodes.append(node)
        for node in self.nodes:
            await asyncio.to_thread(node.asterisk.start)
        for node in self.nodes:
            await asyncio.to_thread(wait_registered, node.asterisk, 20.0)

        self._network_ami = AmiGateway(net.ami)
        await self._network_ami.connect()
        owner = runtime.asterisk_user() if runtime.root is not None else None
        self.network = PhoneNetwork(net.spool_dir / "sim", runtime.inner_path, ring_s=ring_s, owner=owner,
                                    caller_ami=self._network_ami, inbound_template=TRUNK_INBOUND_TEMPLATE)
        await self.network.prepare()
        self._sim.add_route("phone", self.network.handle)
        self._sim.add_route("caller", self.network.handle_caller)
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            await self.wait_serving(node.index)

    def _env(self, node_name: str, instance: AsteriskInstance, agi_port: int, data_dir: Path,
             extra: dict[str, str]) -> dict[str, str]:
        assert self._shared is not None
        values = {**LAB_SETTINGS, "database_url": self.database_url, "data_dir": str(data_dir),
                  "agi_port": str(agi_port), "dial_template": TRUNK_TEMPLATE, "web_port": "0",
                  "cluster_node": node_name, "max_channels": str(self.channels), "max_cps": str(self.cps),
                  "service_user": "root", "speech_model_path": str(data_dir / "no-speech-model"),
                  "audit_key_file": str(self._shared / "audit.key"), "quiet_hours": _quiet_hours_away(),
                  **extra}
        return {**os.environ, "BINFOON_CONFIG": os.devnull,
                **{f"BINFOON_{key.upper()}": value for key, value in values.items()}}

    def _spawn(self, node: Node) -> None:
        """``binfoon serve`` on the node's (running) Asterisk, output appended to its log. It runs as root:
        the lab pulls the plug on it; running as the service user is tests/integration/test_privileges.py's."""
        node.log_mark = node.log.stat().st_size if node.log.exists() else 0
        with node.log.open("ab") as out:
            node.process = subprocess.Popen(
                [sys.executable, "-m", "ivr", "serve", "--name", node.asterisk.options.name,
                 "--instance-dir", str(node.asterisk.run_dir.parent)],
                cwd=PROJECT_DIR, env=node.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def wait_serving(self, i: int, timeout_s: float = 60.0) -> None:
        """Wait until node ``i``'s service has said it serves since its last start."""
        node = self.nodes[i]
        mark = node.log_mark
        deadline = time.monotonic() + timeout_s
        while True:
            text = node.log.read_bytes()[mark:] if node.log.exists() else b""
            if SERVING in text:
                return
            if node.process is not None and node.process.poll() is not None:
                raise RuntimeError(f"{node.name}'s service exited ({node.process.returncode}):\n"
                                   f"{text[-3000:].decode(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name}'s service did not serve within {timeout_s} s: {node.log}")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        """Stop the services (SIGTERM, SIGCONT first for a paused one), the Asterisks, the edge, the network
        and the database, deleting their files; idempotent and safe after a failed start."""
        for node in self.nodes:
            await asyncio.to_thread(_stop_process, node.process)
            node.process = None
        if self.network is not None:
            await self.network.close()
            self.network = None
        if self._network_ami is not None:
            await self._network_ami.close()
            self._network_ami = None
        for node in self.nodes:
            await asyncio.to_thread(node.asterisk.destroy)
        if self.edge is not None:
            await self.edge.stop()
            self.edge = None
        if self.network_asterisk is not None:
            await asyncio.to_thread(self.network_asterisk.destroy)
            self.network_asterisk = None
        if self._sim is not None:
            await self._sim.stop()
            self._sim = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
        await asyncio.to_thread(self.postgres.stop)
        if self._shared is not None:
            shutil.rmtree(self._shared, ignore_errors=True)
        for node in self.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)

    # -- faults -----------------------------------------------------------------------------------
    def kill_service(self, i: int) -> None:
        """SIGKILL node ``i``'s service (its whole process group), as a crash would."""
        process = self.nodes[i].process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    async def restart_service(self, i: int, wait: bool = True) -> None:
        """Start node ``i``'s service again (systemd's ``Restart=always``); waits until it serves."""
        node = self.nodes[i]
        self._spawn(node)
        if wait:
            await self.wait_serving(i)

    def pause_service(self, i: int) -> None:
        """SIGSTOP node ``i``'s service: it neither beats nor dials nor answers FastAGI until resumed."""
        process = self.nodes[i].process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGSTOP)

    def resume_service(self, i: int) -> None:
        """SIGCONT node ``i``'s service."""
        process = self.nodes[i].process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)

    async def kill_asterisk(self, i: int) -> None:
        """SIGKILL node ``i``'s Asterisk (its calls vanish without a BYE)."""
        await asyncio.to_thread(self.nodes[i].asterisk.kill)

    async def restart_asterisk(self, i: int) -> None:
        """Start node ``i``'s Asterisk again; returns once its trunk is registered again."""
        instance = self.nodes[i].asterisk
        await asyncio.to_thread(instance.start)
        await asyncio.to_thread(wait_registered, instance, 20.0)

    # -- figures ----------------------------------------------------------------------------------
    async def node_states(self) -> dict[str, str]:
        """The edge's view of the nodes (dispatcher flags by URI); empty without an edge."""
        return await self.edge.node_states() if self.edge is not None else {}


def _stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGCONT (a paused process cannot act on SIGTERM), SIGTERM, then SIGKILL after 20 s."""
    if process is None or process.poll() is not None:
        return
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _quiet_hours_away() -> str:
    """Quiet hours that hold no call while the lab runs (they start three hours from now)."""
    import datetime as dt

    hour = dt.datetime.now().astimezone().hour
    return f"{(hour + 3) % 24:02d}:00-{(hour + 4) % 24:02d}:00"
