"""``binfoon edge config``: the Kamailio edge of a farm, rendered from the settings (issue 18 item 3).

The carrier is the trunk's (``trunk_host``, ``trunk_port``: an IP address, since the edge tells the
carrier from the nodes by address), the caps are the farm's (``max_channels``; ``max_cps`` times the
INVITEs a call costs at the edge: a carrier that challenges every INVITE with a digest sees each call
twice), the nodes and the address the edge listens on are given. It writes ``kamailio.cfg`` and
``dispatcher.list`` into ``--out`` (Debian's ``/etc/kamailio`` by default), whole or not at all, and
replaces existing files only with ``--force``. No secret is in them.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from ivr.cluster.kamailio import EdgePlan, render_kamailio
from ivr.commands.common import CommandError
from ivr.config import Settings


def _address(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{raw!r}: write it as IP:PORT, e.g. 10.0.0.11:5060")
    return host, int(port)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon edge config``."""
    edge = sub.add_parser("edge", help="a farm's Kamailio SIP edge")
    actions = edge.add_subparsers(dest="action", required=True)
    p = actions.add_parser("config", help="write the edge's kamailio.cfg and dispatcher.list from the settings")
    p.add_argument("--listen", type=_address, required=True, help="IP:PORT the edge listens on (the carrier's peer)")
    p.add_argument("--node", type=_address, action="append", required=True, dest="nodes",
                   help="IP:PORT of a node's Asterisk (repeat for every node)")
    p.add_argument("--out", type=Path, default=Path("/etc/kamailio"), help="where to write (default /etc/kamailio)")
    p.add_argument("--invites-per-call", type=int, default=2, choices=(1, 2),
                   help="INVITEs a call costs at the edge (2: the carrier challenges every INVITE)")
    p.add_argument("--force", action="store_true", help="replace files that exist")
    p.set_defaults(func=cmd_config)


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    """Render and write the edge's files; errors name the setting or option to fix."""
    if not settings.trunk_host:
        raise CommandError("trunk_host is not set: the edge needs the carrier's address (trunk_host, trunk_port)")
    plan = EdgePlan(listen=args.listen, nodes=tuple(args.nodes), carrier=(settings.trunk_host, settings.trunk_port),
                    max_channels=settings.max_channels,
                    max_cps=max(1, math.ceil(settings.max_cps * args.invites_per_call)),
                    expose=True, config_dir=str(args.out))
    try:
        files = render_kamailio(plan)
    except ValueError as exc:
        raise CommandError(f"the edge's plan is refused: {exc}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    existing = [name for name in files if (args.out / name).exists()]
    if existing and not args.force:
        raise CommandError(f"{', '.join(str(args.out / n) for n in existing)} exist(s): --force replaces them")
    for name, text in files.items():  # each file whole: written beside, then renamed over
        fd, tmp = tempfile.mkstemp(dir=args.out, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.out / name)
    print(f"wrote {', '.join(str(args.out / n) for n in files)}: {len(plan.nodes)} node(s), carrier "
          f"{plan.carrier[0]}:{plan.carrier[1]}, at most {plan.max_channels} channels and {plan.max_cps} "
          f"INVITEs a second; check it with `kamailio -c -f {args.out / 'kamailio.cfg'}`")
    return 0
