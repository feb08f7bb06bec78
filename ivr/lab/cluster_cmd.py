"""``binfoon cluster up``: a farm on this machine (issue 18) for trying things out and for demos.

It starts a private PostgreSQL, the simulated phone network (its own Asterisk), a Kamailio edge and
``--nodes`` nodes (an Asterisk and a ``binfoon serve`` process each, ``cluster_node=node-<i>``), prints
where everything listens, and runs until SIGINT or SIGTERM; then it stops everything and deletes
what it made (``ivr.lab.farm.Farm``). It never touches the configured database or Asterisk instances.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
from pathlib import Path

from ivr.commands.common import CommandError, positive_int
from ivr.config import Settings


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{raw} must be above 0")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon cluster up``."""
    cluster = sub.add_parser("cluster", help="a farm of BINfoon nodes on this machine (lab)")
    actions = cluster.add_subparsers(dest="action", required=True)
    p = actions.add_parser("up", help="start a farm (private PostgreSQL, Kamailio edge, simulated phones, "
                                      "N nodes) and run it until Ctrl-C")
    p.add_argument("--nodes", type=positive_int, default=3, help="how many nodes (default 3)")
    p.add_argument("--channels", type=positive_int, default=30, help="the carrier's channels for the whole farm (30)")
    p.add_argument("--cps", type=_positive_float, default=10.0, help="the carrier's new calls a second, farm-wide (10)")
    p.add_argument("--no-edge", action="store_true", help="the nodes' trunks go straight to the network, no Kamailio")
    p.add_argument("--lease", type=_positive_float, help="cluster_lease_s for every node (default: the setting's)")
    p.set_defaults(func=cmd_up)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Run a farm until SIGINT or SIGTERM."""
    from ivr.asterisk.install import AsteriskInstallError, find_runtime
    from ivr.asterisk.instance import instances_dir

    try:
        runtime = find_runtime(settings)
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from None
    parent = instances_dir(runtime, settings.data_dir)
    parent.mkdir(parents=True, exist_ok=True)
    extra = {"cluster_lease_s": str(args.lease), "cluster_heartbeat_s": str(max(0.5, args.lease / 4))} \
        if args.lease else {}
    try:
        asyncio.run(_up(runtime, parent, args.nodes, args.channels, args.cps, not args.no_edge, extra))
    except RuntimeError as exc:
        raise CommandError(f"the farm did not start: {exc}") from None
    return 0


async def _up(runtime: object, parent: Path, nodes: int, channels: int, cps: float, with_edge: bool,
              extra: dict[str, str]) -> None:
    import shutil

    from ivr.lab.farm import Farm
    from storage.db import shown_url

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    base = Path(tempfile.mkdtemp(prefix="cluster-", dir=parent))
    base.chmod(0o755)  # Asterisk (its own user) reads its run directories under it
    try:
        farm = await Farm.start(runtime, base, nodes=nodes, channels=channels, cps=cps,  # type: ignore[arg-type]
                                with_edge=with_edge, settings=extra)
        try:
            print(f"farm up: {nodes} nodes, {channels} channels, {cps:g} calls/s for the whole farm", flush=True)
            print(f"  database: {shown_url(farm.database_url)}")
            edge = f"udp:{farm.edge_address[0]}:{farm.edge_address[1]}" if farm.edge_address else "none (direct trunks)"
            print(f"  edge (Kamailio): {edge}")
            assert farm.network_asterisk is not None
            print(f"  phone network (carrier) Asterisk: SIP udp:127.0.0.1:{farm.network_asterisk.options.sip_port}")
            for node in farm.nodes:
                pid = node.process.pid if node.process else None
                print(f"  {node.name}: Asterisk SIP udp:127.0.0.1:{node.sip_port}, FastAGI 127.0.0.1:{node.agi_port}, "
                      f"service pid {pid}, log {node.log}")
            print("Ctrl-C stops the farm.", flush=True)
            await stop.wait()
            print("stopping the farm ...", flush=True)
        finally:
            await farm.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("farm stopped", flush=True)
