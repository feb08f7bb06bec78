"""``binfoon health``: is this installation able to carry a message now?

One check per part, each a line (or ``--json``): the service (its FastAGI port answers), Asterisk
(running, and an AMI login succeeds), the trunk's registration (when there is a trunk), the database
(reachable and at the code's schema revision), the speech model (installed, checksums verified) and
the free disk space of ``data_dir``. Exit 1 when any check fails. Reads only: it never renders,
starts, creates or migrates anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ivr.config import Settings

#: Below this much free space on ``data_dir`` recordings may not fit: the disk check fails.
MIN_FREE_BYTES = 1 << 30


@dataclass(frozen=True)
class Check:
    """One health check's result: ``ok`` is ``None`` when it does not apply (no trunk, say)."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        """``OK   database: ...`` as the terminal shows it."""
        mark = {True: "OK  ", False: "FAIL", None: "--  "}[self.ok]
        return f"{mark} {self.name}: {self.detail}"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon health``."""
    p = sub.add_parser("health", help="check service, Asterisk, trunk, database, speech model, disk; exit 1 "
                                      "if any fails")
    p.add_argument("--name", default="default", help="Asterisk instance name (default: default)")
    p.add_argument("--instance-dir", type=Path, help="where the instance lives (default: the standard place)")
    p.add_argument("--json", action="store_true", help="the checks as JSON")
    p.set_defaults(func=cmd_health)


def _port_answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_service(settings: Settings) -> Check:
    """The service is up when its FastAGI server (the calls' way in) accepts a connection."""
    if _port_answers("127.0.0.1", settings.agi_port):
        return Check("service", True, f"binfoon serve answers on 127.0.0.1:{settings.agi_port} (FastAGI)")
    return Check("service", False, f"nothing answers on 127.0.0.1:{settings.agi_port}: is `binfoon serve` "
                                   "running (systemctl status binfoon)?")


def ami_login(host: str, port: int, username: str, secret: str, timeout_s: float = 3.0) -> str | None:
    """Log in to AMI and off again: ``None`` on success, else why not (one line)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            reader = sock.makefile("rb")
            reader.readline()  # banner
            sock.sendall(f"Action: Login\r\nUsername: {username}\r\nSecret: {secret}\r\nEvents: off\r\n\r\n"
                         .encode())
            block: dict[str, str] = {}
            while True:
                raw = reader.readline()
                if not raw:
                    return "AMI closed the connection"
                text = raw.decode("utf-8", "replace").strip()
                if text:
                    key, _, value = text.partition(":")
                    block[key.strip().lower()] = value.strip()
                    continue
                if "response" in block:
                    break
                block = {}
            sock.sendall(b"Action: Logoff\r\n\r\n")
    except OSError as exc:
        return f"AMI on {host}:{port} did not answer ({exc})"
    if block.get("response", "").lower() != "success":
        return f"AMI login refused: {block.get('message', 'no reason given')}"
    return None


def check_asterisk(settings: Settings, name: str, base_dir: Path | None) -> tuple[Check, Check]:
    """Asterisk (running, AMI login) and the trunk registration; read-only (no render)."""
    from ivr.asterisk.instance import AsteriskStartError
    from ivr.commands.asterisk import instance_for
    from ivr.commands.common import CommandError

    no_trunk = Check("trunk", None, "no trunk configured (simulated phones)")
    try:
        instance = instance_for(settings, name, base_dir)
    except CommandError as exc:
        return Check("asterisk", False, str(exc)), no_trunk
    trunk = instance.options.the_trunk
    unknown_trunk = no_trunk if trunk is None else Check("trunk", False, f"{trunk.host}: unknown (Asterisk is down)")
    if not instance.is_running():
        return Check("asterisk", False, f"instance {name!r} is not running ({instance.run_dir})"), unknown_trunk
    try:
        state = json.loads((instance.run_dir / "instance.json").read_text(encoding="utf-8"))
        secret = (instance.run_dir / "ami.secret").read_text(encoding="utf-8").strip()
    except (OSError, ValueError) as exc:
        return Check("asterisk", False, f"cannot read the instance's AMI settings: {exc}"), unknown_trunk
    from ivr.asterisk.instance import AMI_USER

    problem = ami_login("127.0.0.1", int(state["ami_port"]), AMI_USER, secret)
    if problem is not None:
        return Check("asterisk", False, problem), unknown_trunk
    asterisk = Check("asterisk", True, f"instance {name!r} running (pid {instance.pid}), AMI login on "
                                       f"127.0.0.1:{state['ami_port']}")
    if trunk is None:
        return asterisk, no_trunk
    try:
        report = instance.registration()
    except (OSError, AsteriskStartError) as exc:
        return asterisk, Check("trunk", False, f"{trunk.host}: AMI did not answer ({exc})")
    if report is None or report.state == "not configured":
        return asterisk, Check("trunk", None, f"{trunk.host}: no registration configured")
    return asterisk, Check("trunk", report.state == "registered", f"{trunk.host}: {report.message}")


def check_database(settings: Settings) -> Check:
    """Reachable, and at the schema revision this code expects (never created or migrated here)."""
    from storage.db import DatabaseUnavailable, check_reachable, current_revision, head_revision, shown_url

    url = settings.resolved_database_url
    try:
        check_reachable(url, create=False)
        revision = current_revision(url)
    except DatabaseUnavailable as exc:
        return Check("database", False, str(exc))
    except Exception as exc:  # noqa: BLE001 - any driver error is this check's failure, said in one line
        return Check("database", False, f"{shown_url(url)}: {str(exc).splitlines()[0]}")
    head = head_revision()
    if revision != head:
        return Check("database", False, f"{shown_url(url)} is at revision {revision or 'none (empty)'}, the code "
                                        f"needs {head}: run `binfoon db upgrade`")
    return Check("database", True, f"{shown_url(url)} at revision {head}")


def check_speech(settings: Settings) -> Check:
    """The configured speech model is installed and every file matches its manifest."""
    from ivr.asr.models import checksum_state, configured_model_path, model_problem

    path = configured_model_path(settings)
    problem = model_problem(path)
    if problem is not None:
        return Check("speech model", False, f"{problem} (`binfoon models install nl`); recordings stay "
                                            "untranscribed")
    state = checksum_state(path)
    if state.manifest is None:
        return Check("speech model", False, f"{path}: no manifest, its files cannot be verified")
    if state.problems:
        return Check("speech model", False, f"{path}: {len(state.problems)} file(s) do not match the "
                                            f"{state.manifest}: {state.problems[0]}")
    return Check("speech model", True, f"{path}: all {state.files} files match the {state.manifest}")


def check_disk(settings: Settings, free: Callable[[Path], int] | None = None) -> Check:
    """Free space where recordings and the SQLite database are written."""
    folder = settings.data_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # data_dir not made yet: the disk it will be on
    available = free(folder) if free is not None else shutil.disk_usage(folder).free
    gib = available / (1 << 30)
    ok = available >= MIN_FREE_BYTES
    return Check("disk", ok, f"{gib:.1f} GiB free on {settings.data_dir}" +
                 ("" if ok else f" (less than {MIN_FREE_BYTES >> 30} GiB: recordings may not fit)"))


def health_checks(settings: Settings, name: str = "default", base_dir: Path | None = None) -> list[Check]:
    """Every check, in the order a call needs them."""
    asterisk, trunk = check_asterisk(settings, name, base_dir)
    return [check_service(settings), asterisk, trunk, check_database(settings), check_speech(settings),
            check_disk(settings)]


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """Print every check; exit 1 when one failed."""
    checks = health_checks(settings, args.name, args.instance_dir)
    if args.json:
        print(json.dumps({"ok": all(c.ok is not False for c in checks), "checks": [asdict(c) for c in checks]},
                         indent=2))
    else:
        for check in checks:
            print(check.line())
    return 0 if all(c.ok is not False for c in checks) else 1
