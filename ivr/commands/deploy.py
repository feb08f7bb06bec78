"""``binfoon deploy users|systemd``: put BINfoon into service on a Debian server (issue 13 item 6).

- ``users``: the host accounts: Asterisk's own (``asterisk_host_user``, mapped into the embedded
  root) and the service's (``service_user``, a member of Asterisk's group to share the spool).
- ``systemd``: installs the project into ``--prefix`` (a venv with the package), writes
  ``/etc/binfoon/binfoon.toml`` and two hardened units (the embedded Asterisk, root only to enter
  its chroot; the service as ``service_user``), and a local PostgreSQL database with peer
  authentication. ``--output DIR`` (or ``--dry-run``) only writes the files into DIR: nothing is
  installed, no account created.

The unit texts are pure functions of a ``Layout``: the tests verify them with ``systemd-analyze
verify`` and run each ``ExecStart`` as its ``User=`` would.
"""

from __future__ import annotations

import argparse
import grp
import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ivr.asterisk.install import (
    AsteriskInstallError,
    SystemAccount,
    ensure_system_account,
    find_runtime,
    host_account,
    map_asterisk_account,
)
from ivr.asterisk.instance import AsteriskInstance
from ivr.commands.common import CommandError, refuse_overwrite
from ivr.config import Settings

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
#: What is copied into the prefix (the package reads its templates, dialplan and prompts beside it).
PROJECT_PARTS = ("ivr", "storage", "asterisk-conf", "dialplan", "prompts", "pyproject.toml", "README.md")
ASTERISK_UNIT = "binfoon-asterisk.service"
SERVICE_UNIT = "binfoon.service"
#: Root reloads Asterisk's PJSIP config when the service rewrites the officers' SIP accounts.
OFFICERS_PATH_UNIT = "binfoon-officers.path"
OFFICERS_RELOAD_UNIT = "binfoon-officers.service"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon deploy``."""
    parser = sub.add_parser("deploy", help="put BINfoon into service on this server (users, systemd units)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("users", help="create the service and Asterisk host accounts").set_defaults(func=cmd_users)
    p = actions.add_parser("systemd", help="install into a prefix, write systemd units, create the database")
    p.add_argument("--prefix", type=Path, default=Path("/opt/binfoon"), help="install here (default /opt/binfoon)")
    p.add_argument("--output", type=Path, help="only write the units and binfoon.toml into this directory")
    p.add_argument("--dry-run", action="store_true", help="print the units and binfoon.toml; change nothing")
    p.add_argument("--force", action="store_true", help="with --output: replace files already there")
    p.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql",
                   help="a local PostgreSQL database with peer authentication (default), or SQLite")
    p.set_defaults(func=cmd_systemd)


# -- least privilege: who owns what (issue 13 item 5) ------------------------------------------------
def service_account(settings: Settings) -> SystemAccount | None:
    """The account ``binfoon serve`` (started as root) runs as; ``None`` for ``service_user = "root"``.
    A missing user is refused with how to create it."""
    if settings.service_user == "root":
        log.warning("service_user = root: the web console, uploads, TTS and transcription run as root")
        return None
    account = host_account(settings.service_user)
    if account is None:
        raise CommandError(
            f"binfoon serve does not run as root, and its service user {settings.service_user!r} does not exist. "
            f"Create it with `sudo binfoon deploy users` (or: `sudo useradd --system --user-group --no-create-home "
            f"--home-dir /nonexistent --shell /usr/sbin/nologin {settings.service_user}`), "
            f"or set service_user = \"root\" in binfoon.toml for a development lab")
    if account.uid == 0:
        raise CommandError(f"service_user {settings.service_user!r} has uid 0: choose an unprivileged user")
    return account


def asterisk_group(instance: AsteriskInstance) -> int:
    """The gid Asterisk runs with: the service shares the spool with it through this group."""
    if instance.runtime.root is not None:
        return instance.runtime.asterisk_user()[1]
    try:
        return grp.getgrnam("asterisk").gr_gid
    except KeyError:
        raise CommandError("the system Asterisk has no 'asterisk' group; install Debian's asterisk package") from None


#: The files at the top of data_dir that only the service may read (``apply_ownership`` fixes those that exist).
SERVICE_KEY_FILES = ("pin-pepper.key", "audit.key", "recordings.key", "web-session.key", "binfoon.db.anchors",
                     "audit.anchors")


def ownership_plan(data_dir: Path, run_dir: Path, database_file: Path | None, service: tuple[int, int],
                   asterisk_gid: int) -> list[tuple[Path, int, int, int | None, bool]]:
    """What the service user must own before it runs: ``(path, uid, gid, mode or None, recursive)``.

    Pure: the data directory (database, recordings store) is the service's alone (0700, the
    database 0600); the AMI secret file is the service's (0600); the spool is shared with
    Asterisk through its group (setgid, so what either side creates stays in that group); the
    sounds the service hands to Asterisk and the recordings Asterisk writes for it are the
    service's, in Asterisk's group.
    """
    uid, gid = service
    spool = run_dir / "spool"
    # A system Asterisk keeps its instances inside data_dir: Asterisk must still pass through it.
    inside = run_dir.is_relative_to(data_dir)
    plan: list[tuple[Path, int, int, int | None, bool]] = [
        (data_dir, uid, asterisk_gid if inside else gid, 0o710 if inside else 0o700, not inside),
    ]
    if database_file is not None:
        plan += [(database_file.with_name(database_file.name + suffix), uid, gid, 0o600, False)
                 for suffix in ("", "-wal", "-shm")]
    # The keys the service keeps in data_dir (the PIN pepper, the audit chain's key and anchors, the
    # recordings' sealing key, the web session key): a command run as root may have made one first.
    plan += [(data_dir / name, uid, gid, 0o600, False) for name in SERVICE_KEY_FILES]
    plan += [
        (run_dir / "ami.secret", uid, gid, 0o600, False),
        (spool, -1, asterisk_gid, 0o2770, False),
        (spool / "binfoon-sounds", uid, asterisk_gid, None, True),
        (spool / "binfoon-recordings", uid, asterisk_gid, 0o2770, True),
        # The officers' SIP accounts: written by the service, read by Asterisk (its group), reloaded by root.
        (run_dir / "etc" / "officers", uid, asterisk_gid, 0o2750, True),
    ]
    return plan


def apply_ownership(settings: Settings, instance: AsteriskInstance, account: SystemAccount) -> int:
    """As root: apply ``ownership_plan`` (what exists of it); returns Asterisk's gid. Run by
    ``binfoon serve`` before it drops to the service user, and by ``binfoon asterisk run``
    (systemd), where the service starts unprivileged."""
    url = settings.resolved_database_url
    database_file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (instance.run_dir / "etc" / "officers").mkdir(parents=True, exist_ok=True)
    gid_asterisk = asterisk_group(instance)
    for path, uid, gid, mode, recursive in ownership_plan(
            settings.data_dir, instance.run_dir, database_file, (account.uid, account.gid), gid_asterisk):
        if not path.exists():
            continue
        for target in walk_tree(path) if recursive else [path]:
            os.lchown(target, uid, gid)
        if mode is not None:
            os.chmod(path, mode)
    return gid_asterisk


def walk_tree(path: Path) -> list[Path]:
    """``path`` and everything below it (symbolic links themselves, never followed)."""
    found = [path]
    if path.is_dir() and not path.is_symlink():
        for current, dirs, files in os.walk(path):
            found += [Path(current) / name for name in dirs + files]
    return found



# -- accounts -----------------------------------------------------------------------------------
def ensure_users(settings: Settings) -> tuple[SystemAccount, SystemAccount]:
    """(Asterisk's host account, the service's), created if missing; Asterisk's mapped into the
    embedded root. The service user joins Asterisk's group: the spool is shared through it."""
    try:
        runtime = find_runtime(settings)
        if runtime.root is not None:
            asterisk = map_asterisk_account(runtime, settings.asterisk_host_user)
        else:
            asterisk = ensure_system_account("asterisk")
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from exc
    if settings.service_user == "root":
        raise CommandError('service_user = "root" has no account to create: set an unprivileged user')
    group = grp.getgrgid(asterisk.gid).gr_name
    service = ensure_system_account(settings.service_user, extra_groups=(group,))
    return asterisk, service


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    """Create (or show) the two accounts."""
    if os.geteuid() != 0:
        raise CommandError("creating system users needs root: sudo binfoon deploy users")
    asterisk, service = ensure_users(settings)
    print(f"Asterisk runs as {asterisk.name} (uid {asterisk.uid}); the service as {service.name} (uid {service.uid})")
    return 0


# -- systemd ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where a deployment puts things, and who runs what."""

    prefix: Path = Path("/opt/binfoon")
    config_file: Path = Path("/etc/binfoon/binfoon.toml")
    data_dir: Path = Path("/var/lib/binfoon")
    cache_dir: Path = Path("/var/cache/binfoon")
    service_user: str = "binfoon"
    asterisk_user: str = "binfoon-asterisk"
    instance: str = "default"
    asterisk_suite: str = "testing"
    #: SQLAlchemy URL written into binfoon.toml ("" = SQLite in data_dir).
    database_url: str = "postgresql+psycopg:///binfoon?host=/var/run/postgresql"

    @property
    def app_dir(self) -> Path:
        """The copied project (the package reads asterisk-conf/, dialplan/, prompts/ beside it)."""
        return self.prefix / "app"

    @property
    def binfoon(self) -> Path:
        """The ``binfoon`` command of the deployment's venv."""
        return self.prefix / "venv" / "bin" / "binfoon"

    @property
    def instance_dir(self) -> Path:
        """The instance's run directory (inside the embedded root, where Asterisk sees it)."""
        return self.cache_dir / f"asterisk-root-{self.asterisk_suite}" / "srv" / "binfoon" / self.instance


def render_config(layout: Layout) -> str:
    """/etc/binfoon/binfoon.toml for the layout (settings only; secrets live in their own files)."""
    lines = [
        "# Written by `binfoon deploy systemd`. Every setting: ivr/config.py; the carrier trunk: README.",
        f'data_dir = "{layout.data_dir}"',
        f'cache_dir = "{layout.cache_dir}"',
        f'service_user = "{layout.service_user}"',
        f'asterisk_host_user = "{layout.asterisk_user}"',
        f'asterisk_suite = "{layout.asterisk_suite}"',
    ]
    if layout.database_url:
        lines.append(f'database_url = "{layout.database_url}"  # peer authentication over the local socket')
    return "\n".join(lines) + "\n"


def render_units(layout: Layout) -> dict[str, str]:
    """The two units: Asterisk (root only to enter its chroot and mount namespace; Asterisk itself
    runs as ``asterisk_user``), and the service (``service_user``, no capabilities at all)."""
    env = f"Environment=BINFOON_CONFIG={layout.config_file}"
    asterisk = f"""\
[Unit]
Description=BINfoon's Asterisk 22 (embedded Debian root, runs as {layout.asterisk_user})
Documentation=file://{layout.app_dir}/README.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=root
{env}
# Root only to mount /proc in a private namespace and enter the chroot; Asterisk runs as {layout.asterisk_user}.
ExecStart={layout.binfoon} asterisk run --name {layout.instance}
Restart=on-failure
RestartSec=2
TimeoutStopSec=20
UMask=0027
CapabilityBoundingSet=CAP_SYS_ADMIN CAP_SYS_CHROOT CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths={layout.cache_dir} {layout.data_dir}
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""
    service = f"""\
[Unit]
Description=BINfoon service: police line, review, member calls, web console
Documentation=file://{layout.app_dir}/README.md
After=network-online.target {ASTERISK_UNIT} postgresql.service
Wants=network-online.target {ASTERISK_UNIT}

[Service]
Type=simple
User={layout.service_user}
Group={layout.service_user}
# Asterisk's group: the spool (sounds out, recordings in) is shared through it.
SupplementaryGroups={layout.asterisk_user}
{env}
ExecStart={layout.binfoon} serve --name {layout.instance} --external-asterisk
Restart=on-failure
RestartSec=2
TimeoutStopSec=30
UMask=0027
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ReadWritePaths={layout.data_dir} {layout.instance_dir}/spool {layout.instance_dir}/etc/officers {layout.app_dir}/prompts/rendered
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
PrivateMounts=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""
    officers_path = f"""\
[Unit]
Description=Reload BINfoon's Asterisk when the officers' SIP accounts or the SIP ban list change

[Path]
PathChanged={layout.instance_dir}/etc/officers/pjsip-officers.conf
PathChanged={layout.instance_dir}/etc/officers/pjsip-bans.conf
Unit={OFFICERS_RELOAD_UNIT}

[Install]
WantedBy=multi-user.target
"""
    # The service writes the accounts but may not reach Asterisk's control socket: root reloads.
    officers_reload = f"""\
[Unit]
Description=BINfoon: Asterisk re-reads the officers' SIP accounts
After={ASTERISK_UNIT}

[Service]
Type=oneshot
User=root
{env}
ExecStart={layout.binfoon} asterisk reload-pjsip --name {layout.instance}
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_DAC_OVERRIDE
ProtectSystem=strict
ReadWritePaths={layout.instance_dir}/run
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
RestrictAddressFamilies=AF_UNIX
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
SystemCallArchitectures=native
"""
    return {ASTERISK_UNIT: asterisk, SERVICE_UNIT: service, OFFICERS_PATH_UNIT: officers_path,
            OFFICERS_RELOAD_UNIT: officers_reload}


def parse_unit(text: str) -> dict[str, list[str]]:
    """``key -> values`` of a unit's [Service] section (repeated keys kept in order)."""
    section = ""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#") and "=" in line and section == "Service":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def _run(command: list[str], **kwargs: object) -> None:
    """Run a step of the installation, showing it; a failure stops the deployment with its output."""
    print("+ " + shlex.join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise CommandError(f"{shlex.join(command)} failed (exit {result.returncode}):\n"
                           f"{(result.stdout + result.stderr).strip()[-2000:]}")


def _write(path: Path, text: str, mode: int, group: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    if group is not None:
        os.chown(tmp, 0, grp.getgrnam(group).gr_gid)
    os.replace(tmp, path)
    print(f"wrote {path}", flush=True)


DEB_PACKAGES = ("python3", "python3-venv", "debootstrap", "espeak-ng", "libespeak-ng1", "sox", "ffmpeg",
                "postgresql", "util-linux")


def cmd_systemd(settings: Settings, args: argparse.Namespace) -> int:
    """Deploy (see module docstring); ``--output``/``--dry-run`` only render."""
    prefix = args.prefix.resolve()
    layout = Layout(prefix=prefix, service_user=settings.service_user, asterisk_user=settings.asterisk_host_user,
                    asterisk_suite=settings.asterisk_suite,
                    database_url=Layout.database_url if args.database == "postgresql" else "")
    files = {**render_units(layout), "binfoon.toml": render_config(layout)}
    if args.dry_run:
        for name, text in files.items():
            print(f"# --- {name}\n{text}")
        return 0
    if args.output is not None:
        for name in files:
            refuse_overwrite(args.output / name, args.force)  # all checked before one is written
        for name, text in files.items():
            _write(args.output / name, text, 0o644)
        return 0
    if os.geteuid() != 0:
        raise CommandError("deploying needs root: sudo binfoon deploy systemd (or --output DIR to see the files)")
    install_all(layout)
    return 0


def install_all(layout: Layout) -> None:
    """The whole deployment on this machine, idempotent: packages, the copy and its venv, Asterisk
    and the accounts, the directories, the database, the units."""
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    missing = [p for p in DEB_PACKAGES if "ok installed" not in subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True, check=False).stdout]
    if missing:
        _run(["apt-get", "update", "-q"], env=apt_env)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=apt_env)
    for part in PROJECT_PARTS:
        source, target = PROJECT_DIR / part, layout.app_dir / part
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    if not (layout.prefix / "venv" / "bin" / "python").exists():
        _run([python, "-m", "venv", str(layout.prefix / "venv")])
    # Editable: the package finds asterisk-conf/, dialplan/ and prompts/ in the copy beside it.
    _run([str(layout.prefix / "venv" / "bin" / "pip"), "install", "-q", "-e", str(layout.app_dir)])
    if layout.config_file.exists():
        print(f"kept {layout.config_file} (the operator's: trunk settings live there)", flush=True)
    else:
        _write(layout.config_file, render_config(layout), 0o640, group=None)
    env = {**os.environ, "BINFOON_CONFIG": str(layout.config_file)}
    _run([str(layout.binfoon), "asterisk", "install"], env=env)   # also maps Asterisk's own account
    _run([str(layout.binfoon), "deploy", "users"], env=env)
    service = host_account(layout.service_user)
    assert service is not None
    os.chown(layout.config_file, 0, service.gid)   # the service reads its settings, never rewrites them
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    os.chown(layout.data_dir, service.uid, service.gid)
    os.chmod(layout.data_dir, 0o700)
    rendered = layout.app_dir / "prompts" / "rendered"
    rendered.mkdir(parents=True, exist_ok=True)
    for path in walk_tree(rendered):
        os.lchown(path, service.uid, service.gid)
    if layout.database_url.startswith("postgresql"):
        _create_database(layout.service_user)
    _run(["runuser", "-u", layout.service_user, "--", str(layout.binfoon), "db", "upgrade"], env=env)
    _run([str(layout.binfoon), "asterisk", "render", "--name", layout.instance], env=env)
    for name, text in render_units(layout).items():
        _write(Path("/etc/systemd/system") / name, text, 0o644)
    if Path("/run/systemd/system").exists():
        _run(["systemctl", "daemon-reload"])
        _run(["systemctl", "enable", "--now", ASTERISK_UNIT, SERVICE_UNIT, OFFICERS_PATH_UNIT])
        print("BINfoon is running: systemctl status binfoon; journalctl -u binfoon -f")
    else:
        print("systemd is not running on this machine: the units are installed for the next boot")


def _create_database(user: str) -> None:
    """A local PostgreSQL role and database named after the service user (peer authentication:
    no password exists; only that system user connects)."""
    def exists(sql: str) -> bool:
        out = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-tAc", sql],
                             capture_output=True, text=True, check=False)
        return out.stdout.strip() == "1"

    _ensure_postgres_running()
    if not exists(f"SELECT 1 FROM pg_roles WHERE rolname = '{user}'"):
        _run(["runuser", "-u", "postgres", "--", "createuser", user])
    if not exists(f"SELECT 1 FROM pg_database WHERE datname = '{user}'"):
        _run(["runuser", "-u", "postgres", "--", "createdb", "--owner", user, user])


def _ensure_postgres_running() -> None:
    """Debian's PostgreSQL cluster up: systemd starts it; without systemd, pg_ctlcluster does."""
    if subprocess.run(["pg_isready", "-q"], check=False).returncode == 0:
        return
    if Path("/run/systemd/system").exists():
        _run(["systemctl", "enable", "--now", "postgresql"])
        return
    clusters = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False).stdout
    for line in clusters.splitlines():
        version, name, _port, status, *_rest = line.split()
        if status == "down":
            _run(["pg_ctlcluster", version, name, "start"])
