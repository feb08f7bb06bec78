"""``binfoon serve``: the long-running service (police line, coordinator review, delivery hand-off)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from ivr.asterisk.instance import AsteriskStartError
from ivr.commands.asterisk import instance_for
from ivr.commands.common import CommandError
from ivr.config import Settings
from storage.db import open_database

if TYPE_CHECKING:
    from ivr.app import BinfoonApp
    from ivr.web.server import WebConsole

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon serve``."""
    p = sub.add_parser("serve", help="run the service on an Asterisk instance (started if it is not running)")
    p.add_argument("--name", default="default", help="Asterisk instance name (default: default)")
    p.add_argument("--instance-dir", type=Path, help="where the instance lives (default: the standard place)")
    p.add_argument("--external-asterisk", action="store_true",
                   help="Asterisk runs elsewhere (another container) on this rendered configuration: only connect")
    p.set_defaults(func=cmd_serve)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run until SIGINT or SIGTERM."""
    instance = instance_for(settings, args.name, args.instance_dir)
    if not args.external_asterisk and not instance.is_running():
        try:
            instance.start()
        except AsteriskStartError as exc:
            raise CommandError(str(exc)) from exc
    asyncio.run(_serve(settings, instance))
    return 0


async def _serve(settings: Settings, instance: object) -> None:
    from ivr.app import BinfoonApp
    from ivr.telephony.agi import AgiServer
    from ivr.telephony.ami import AmiGateway

    engine = open_database(settings.resolved_database_url)
    agi = AgiServer(port=settings.agi_port)
    await agi.start()
    ami = AmiGateway(instance.ami)  # type: ignore[attr-defined]
    await ami.connect()
    app = BinfoonApp.on_instance(settings, engine, instance, ami, agi)  # type: ignore[arg-type]
    await app.start()
    print(f"BINfoon serving: police line {settings.police_line_number}, FastAGI 127.0.0.1:{agi.port}, "
          f"calls through {settings.dial_template}", flush=True)
    try:
        web = await _start_web(app)
    except CommandError:
        await app.stop()
        await ami.close()
        await agi.stop()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if web is not None:
        await web.stop()
    await app.stop()
    await ami.close()
    await agi.stop()


async def _start_web(app: "BinfoonApp") -> "WebConsole | None":
    """The web console on the same loop (``web_port`` 0: none); a port in use stops the service clearly."""
    from ivr.web.server import WebStartError, start_web_console

    try:
        web = await start_web_console(app)
    except WebStartError as exc:
        raise CommandError(str(exc)) from None
    if web is not None:
        print(f"web console: {web.url}", flush=True)
    return web
