"""``binfoon serve``: the long-running service (police line, coordinator review, delivery hand-off)."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from ivr.asterisk.install import SystemAccount
from ivr.asterisk.secrets import AgiSecretMissing
from ivr.asterisk.instance import AMI_USER, AmiCredentials, AsteriskInstance, AsteriskStartError
from ivr.commands.asterisk import instance_for
from ivr.commands.common import CommandError
from ivr.commands.deploy import apply_ownership, service_account
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
    p.add_argument("--init", action="store_true",
                   help="create the database if the configured database_url names a SQLite file that does "
                        "not exist yet (otherwise refused: a mistyped path must not become an empty directory)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run until SIGINT or SIGTERM. Started as root: start Asterisk, then run as ``service_user``."""
    instance = instance_for(settings, args.name, args.instance_dir)
    account = service_account(settings) if os.geteuid() == 0 else None
    if not args.external_asterisk and not instance.is_running():
        try:
            instance.start()
        except AsteriskStartError as exc:
            raise CommandError(str(exc)) from exc
    credentials = ami_credentials(instance)
    if account is not None:
        # Before the database, the web console or any worker exists: none of them ever runs as root.
        drop_privileges(settings, instance, account)
    asyncio.run(_serve(settings, instance, credentials))
    return 0


# -- least privilege (issue 13 item 5) ---------------------------------------------------------------
def drop_privileges(settings: Settings, instance: AsteriskInstance, account: SystemAccount) -> None:
    """As root: give the service user what it needs (``ownership_plan``), then become it for good
    (all uids and gids, supplementary groups, no new privileges). Refuses clearly if it cannot
    reach its directories (say a data directory under /root)."""
    gid_asterisk = apply_ownership(settings, instance, account)
    needed = [(settings.data_dir, os.R_OK | os.W_OK | os.X_OK), (instance.run_dir / "ami.secret", os.R_OK),
              (instance.run_dir / "agi.secret", os.R_OK), (instance.spool_dir, os.R_OK | os.W_OK | os.X_OK)]
    groups = sorted(set(os.getgrouplist(settings.service_user, account.gid)) | {gid_asterisk})
    os.setgroups(groups)
    os.setresgid(account.gid, account.gid, account.gid)
    os.setresuid(account.uid, account.uid, account.uid)
    os.umask(0o027)
    _no_new_privileges()
    os.environ.update(HOME=str(settings.data_dir), USER=settings.service_user, LOGNAME=settings.service_user)
    for path, mode in needed:
        if not os.access(path, mode):
            raise CommandError(
                f"the service user {settings.service_user!r} cannot reach {path} (a parent directory is private?): "
                "put data_dir and cache_dir where it can, e.g. /var/lib/binfoon and /var/cache/binfoon "
                "(`binfoon deploy systemd` does)")
    log.info("running as %s (uid %d, groups %s)", settings.service_user, account.uid, groups)


def _no_new_privileges() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): no setuid program run by the service (or its workers) gains rights."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # 38 = PR_SET_NO_NEW_PRIVS
        log.warning("could not set no_new_privs (errno %d)", ctypes.get_errno())


def ami_credentials(instance: AsteriskInstance) -> AmiCredentials:
    """The instance's AMI credentials. As root, the instance's own; as the service user, read only
    (its run directory is root's: the service may read the state and its secret, never rewrite them)."""
    if os.geteuid() == 0:
        return instance.ami
    try:
        state = json.loads((instance.run_dir / "instance.json").read_text(encoding="utf-8"))
        secret = (instance.run_dir / "ami.secret").read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CommandError(f"cannot read the Asterisk instance's AMI settings as {os.getuid()}: {exc} "
                           "(is the instance rendered, e.g. by `binfoon asterisk run`, and is ami.secret "
                           "owned by the service user?)") from None
    return AmiCredentials("127.0.0.1", int(state["ami_port"]), AMI_USER, secret)


async def _serve(settings: Settings, instance: AsteriskInstance, credentials: AmiCredentials) -> None:
    from ivr.app import BinfoonApp
    from ivr.telephony.agi import AgiServer
    from ivr.telephony.ami import AmiGateway

    engine = open_database(settings.resolved_database_url)
    agi = AgiServer(port=settings.agi_port)
    await agi.start()
    ami = AmiGateway(credentials)
    await ami.connect()
    try:
        app = BinfoonApp.on_instance(settings, engine, instance, ami, agi)
    except AgiSecretMissing as exc:  # an instance rendered by an older version: say so, no traceback
        raise CommandError(str(exc)) from None
    await app.start()
    # Before the line that says we serve: a stop asked for from then on is a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"BINfoon serving: police line {settings.police_line_number}, FastAGI 127.0.0.1:{agi.port}, "
          f"calls through {settings.dial_template}", flush=True)
    try:
        web = await _start_web(app)
    except CommandError:
        await app.stop()
        await ami.close()
        await agi.stop()
        raise
    await stop.wait()
    if web is not None:
        await web.stop()
    await app.stop()
    await ami.close()
    await agi.stop()


async def _start_web(app: BinfoonApp) -> WebConsole | None:
    """The web console on the same loop (``web_port`` 0: none); a port in use stops the service clearly."""
    from ivr.web.server import WebStartError, start_web_console

    try:
        web = await start_web_console(app)
    except WebStartError as exc:
        raise CommandError(str(exc)) from None
    if web is not None:
        print(f"web console: {web.url}", flush=True)
    return web
