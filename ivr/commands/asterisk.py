"""``binfoon asterisk install|start|stop|status``: the embedded (or system) Asterisk."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ivr.asterisk.install import AsteriskInstallError, find_runtime, install
from ivr.asterisk.instance import AsteriskInstance, AsteriskStartError, InstanceOptions, instances_dir
from ivr.asterisk.trunk import RegistrationReport, TrunkError, from_settings
from ivr.commands.common import CommandError
from ivr.config import Settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``asterisk`` commands."""
    parser = sub.add_parser("asterisk", help="install, start, stop the PBX")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("install", help="make Asterisk 22 available (system or embedded Debian root)").set_defaults(
        func=cmd_install)
    for name, func, text in (("render", cmd_render, "write an instance's configuration without starting it"),
                             ("start", cmd_start, "start an instance in the background"),
                             ("stop", cmd_stop, "stop an instance"),
                             ("status", cmd_status, "show an instance's state"),
                             ("run", cmd_run, "render and run an instance in the foreground (systemd)"),
                             ("reload-pjsip", cmd_reload_pjsip, "re-read the officers' SIP accounts (systemd's path unit)")):
        p = actions.add_parser(name, help=text)
        p.add_argument("--name", default="default", help="instance name (default: default)")
        p.set_defaults(func=func)


def instance_for(settings: Settings, name: str, base_dir: Path | None = None) -> AsteriskInstance:
    """The named instance, configured from the settings (under ``base_dir`` if given): its trunk, SIP
    bind address and port, RTP ports, NAT and codecs. Invalid trunk settings are refused here, naming
    the setting, before anything is written or started."""
    try:
        trunk, edge = from_settings(settings)
    except TrunkError as exc:
        raise CommandError(f"invalid setting {exc}") from exc
    try:
        runtime = find_runtime(settings)
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from exc
    options = InstanceOptions(
        name=name,
        agi_port=settings.agi_port,
        sim_agi_port=settings.sim_agi_port if settings.uses_simulator else 0,
        caller_id_number=settings.caller_id_number,
        police_line=settings.police_line_number,
        report_line=settings.report_line_number,
        admin_line=settings.admin_line_number,
        trunk=trunk,
        edge=edge,
        sip_port=settings.sip_port,
        rtp_start=settings.rtp_port_start,
        rtp_end=settings.rtp_port_end,
    )
    return AsteriskInstance(runtime, options, base_dir or instances_dir(runtime, settings.data_dir))


def cmd_install(settings: Settings, args: argparse.Namespace) -> int:
    """Install (or find) Asterisk and say which one is used."""
    try:
        runtime = install(settings)
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from exc
    where = f"embedded Debian root {runtime.root}" if runtime.root else "the system"
    print(f"Asterisk {runtime.version} from {where}")
    return 0


def cmd_render(settings: Settings, args: argparse.Namespace) -> int:
    """Render the configuration (for an Asterisk started by something else, e.g. a container)."""
    instance = instance_for(settings, args.name)
    try:
        instance.render()
    except TrunkError as exc:
        raise CommandError(f"invalid setting {exc}") from exc
    print(f"configuration of instance {args.name!r} written to {instance.run_dir / 'etc'}")
    return 0


def cmd_start(settings: Settings, args: argparse.Namespace) -> int:
    """Start the instance and wait until it is fully booted."""
    instance = instance_for(settings, args.name)
    try:
        instance.start()
    except TrunkError as exc:
        raise CommandError(f"invalid setting {exc}") from exc
    except AsteriskStartError as exc:
        raise CommandError(str(exc)) from exc
    print(f"Asterisk instance {args.name!r} running (pid {instance.pid}); "
          f"AMI on 127.0.0.1:{instance.options.ami_port}, "
          f"SIP on {instance.options.edge.bind_address}:{instance.options.sip_port}")
    return 0


def cmd_stop(settings: Settings, args: argparse.Namespace) -> int:
    """Stop the instance (gracefully, then forcefully)."""
    instance = instance_for(settings, args.name)
    was_running = instance.is_running()
    instance.stop()
    print(f"Asterisk instance {args.name!r} {'stopped' if was_running else 'was not running'}")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the instance's state as JSON (never a secret): with a trunk, its registration state and
    the last SIP response the carrier gave (a refusal is also logged); exit 1 when stopped."""
    instance = instance_for(settings, args.name)
    running = instance.is_running()
    state = {
        "name": args.name,
        "running": running,
        "pid": instance.pid,
        "asterisk_version": instance.runtime.version,
        "run_dir": str(instance.run_dir),
    }
    if (instance.run_dir / "instance.json").exists():
        o = instance.ami
        state.update({"ami": f"{o.host}:{o.port}", "sip_port": instance.options.sip_port})
    trunk = instance.options.the_trunk
    if trunk is not None:
        try:
            report = instance.registration() if running else None
        except (OSError, AsteriskStartError) as exc:
            report = RegistrationReport("unknown", message=f"AMI did not answer: {exc}")
        state["trunk"] = {"host": trunk.host, "port": trunk.port, "transport": trunk.transport,
                          "username": trunk.username or None,
                          "registration": report.as_json() if report is not None else None}
        if report is not None and report.state in ("refused", "failing"):
            log.warning("trunk %s: %s", trunk.host, report.message)
    print(json.dumps(state, indent=2))
    return 0 if running else 1


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Render the instance and become its Asterisk in the foreground (systemd's main process; root
    only to enter the chroot and mount namespace). The service user is given what it shares with
    Asterisk first (AMI secret, spool, data directory), since the service starts unprivileged."""
    import os

    from ivr.commands.deploy import apply_ownership, service_account

    instance = instance_for(settings, args.name)
    if instance.is_running():
        raise CommandError(f"Asterisk instance {args.name!r} is already running (pid {instance.pid})")
    account = service_account(settings) if os.geteuid() == 0 else None
    instance.render()
    if account is not None:
        apply_ownership(settings, instance, account)
    (instance.run_dir / "run" / "asterisk.pid").unlink(missing_ok=True)
    command = instance.command()
    os.execvp(command[0], command)



def cmd_reload_pjsip(settings: Settings, args: argparse.Namespace) -> int:
    """Have the running instance re-read its PJSIP configuration (the officers' SIP accounts the service
    wrote). Root's (or Asterisk's) job: systemd's ``binfoon-officers.path`` runs it when the file changes."""
    from ivr.asterisk.officers import ReloadError, reload_pjsip

    instance = instance_for(settings, args.name)
    if not instance.is_running():
        raise CommandError(f"Asterisk instance {args.name!r} is not running")
    try:
        print(reload_pjsip(instance.run_dir).strip())
    except ReloadError as exc:
        raise CommandError(str(exc)) from exc
    return 0
