"""A private Asterisk instance: configuration rendered from ``asterisk-conf/`` and ``dialplan/``.

Rules:
- everything an instance writes lives in its own run directory (config, AstDB, spool, logs,
  control socket), with its own ports, so several instances run side by side;
- Asterisk runs as the unprivileged ``asterisk`` user; it is started as root only to enter its
  chroot and a private mount namespace (for ``/proc``), never to run;
- the AMI secret is generated for the instance (32 random bytes) and kept in files readable only
  by their owner; it is never printed or committed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ivr.asterisk.install import AsteriskRuntime

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONF_TEMPLATES = PROJECT_DIR / "asterisk-conf"
DIALPLAN_DIR = PROJECT_DIR / "dialplan"
AMI_USER = "binfoon"

#: Dialplan files every instance loads; the simulator's only where the instance hosts simulated phones.
CORE_DIALPLAN = ("binfoon-member.conf", "binfoon-inbound.conf", "binfoon-review.conf")
SIMULATOR_DIALPLAN = ("binfoon-simulator.conf",)


class AsteriskStartError(RuntimeError):
    """The instance did not come up; the message includes the end of its log."""


@dataclass(frozen=True)
class AmiCredentials:
    """How the application reaches this instance's AMI."""

    host: str
    port: int
    username: str
    secret: str = field(repr=False)


@dataclass
class InstanceOptions:
    """What an instance is for. Ports left at 0 are chosen free at first start and then kept."""

    name: str
    #: The application's FastAGI server (loopback).
    agi_port: int = 4573
    #: The simulated phone network's FastAGI server; 0 when the instance hosts no simulated phones.
    sim_agi_port: int = 0
    #: Outbound SIP trunk ``(host, port)``; ``None`` for no trunk.
    trunk: tuple[str, int] | None = None
    #: Act as the public phone network: accept calls from this address into the simulated phones.
    carrier_match: str | None = None
    #: As the public phone network: where calls placed by simulated callers are delivered
    #: (``PJSIP/<number>@carrier-in``), i.e. the BINfoon instance's SIP ``(host, port)``.
    carrier_contact: tuple[str, int] | None = None
    #: The number presented on outbound calls (E.164).
    caller_id_number: str = ""
    #: The police line's DID (E.164): inbound calls to it reach the police intake (``POLICE_LINE``).
    police_line: str = "+3250000100"
    #: The coordinators' report line's DID (``REPORT_LINE``).
    report_line: str = "+3250000200"
    #: The admin line's DID (``ADMIN_LINE``): replay of a BIN's latest messages.
    admin_line: str = "+3250000300"
    ami_port: int = 0
    sip_port: int = 0
    rtp_start: int = 0


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_rtp_block(size: int = 200) -> int:
    """An even port with ``size`` UDP ports above it that are free now."""
    for _ in range(50):
        start = 2 * (secrets.randbelow((60000 - 20000) // 2)) + 20000
        try:
            for port in (start, start + size // 2, start + size - 1):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
    raise AsteriskStartError("no free block of RTP ports found")


class AsteriskInstance:
    """One private Asterisk: render its configuration, start it, wait for it, stop it."""

    RTP_PORTS = 200

    def __init__(self, runtime: AsteriskRuntime, options: InstanceOptions, base_dir: Path) -> None:
        self.runtime = runtime
        self.options = options
        #: Host path of the run directory.
        self.run_dir = base_dir / options.name
        self._process: subprocess.Popen[bytes] | None = None

    # -- paths ------------------------------------------------------------------------------
    @property
    def inner_dir(self) -> str:
        """The run directory as Asterisk sees it."""
        return self.runtime.inner_path(self.run_dir)

    def host_path(self, inner: str | Path) -> Path:
        """Host path of a file Asterisk names (a recording, say)."""
        return self.runtime.host_path(inner)

    @property
    def spool_dir(self) -> Path:
        """Host path of the spool, where recordings made in dialplan land."""
        return self.run_dir / "spool"

    @property
    def log_file(self) -> Path:
        """Host path of the instance's Asterisk log."""
        return self.run_dir / "log" / "messages.log"

    # -- configuration ----------------------------------------------------------------------
    def _state_file(self) -> Path:
        return self.run_dir / "instance.json"

    def allocate_ports(self) -> InstanceOptions:
        """Choose the instance's ports now (before it starts), e.g. so that another instance can be
        pointed at its SIP port first; they are kept for later starts. Returns the options."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._load_or_allocate()
        return self.options

    def _load_or_allocate(self) -> None:
        state = self._state_file()
        if state.exists():
            saved = json.loads(state.read_text(encoding="utf-8"))
            for key in ("ami_port", "sip_port", "rtp_start"):
                if not getattr(self.options, key):
                    setattr(self.options, key, int(saved[key]))
        if not self.options.ami_port:
            self.options.ami_port = _free_port(socket.SOCK_STREAM)
        if not self.options.sip_port:
            self.options.sip_port = _free_port(socket.SOCK_DGRAM)
        if not self.options.rtp_start:
            self.options.rtp_start = _free_rtp_block(self.RTP_PORTS)
        data = asdict(self.options)
        state.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def _secret(self) -> str:
        path = self.run_dir / "ami.secret"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
        return path.read_text(encoding="utf-8").strip()

    @property
    def ami(self) -> AmiCredentials:
        """The AMI address and the generated credentials of this instance."""
        self._load_or_allocate()
        return AmiCredentials("127.0.0.1", self.options.ami_port, AMI_USER, self._secret())

    def render(self) -> None:
        """Write the whole configuration into the run directory (overwriting the previous one)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        self._load_or_allocate()
        uid, gid = self.runtime.asterisk_user() if self.runtime.root is not None else (os.getuid(), os.getgid())
        inner = self.inner_dir
        dirs = {name: f"{inner}/{name}" for name in ("etc", "lib", "spool", "run", "log", "cache")}
        for name in dirs:
            path = self.run_dir / name
            path.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                os.chown(path, 0 if name == "etc" else uid, gid)
        os.chmod(self.run_dir / "etc", 0o750)
        (self.run_dir / "lib" / "agi-bin").mkdir(exist_ok=True)

        o = self.options
        includes = list(CORE_DIALPLAN) + (list(SIMULATOR_DIALPLAN) if o.sim_agi_port else [])
        values = {
            "etc_dir": dirs["etc"], "lib_dir": dirs["lib"], "spool_dir": dirs["spool"],
            "run_dir": dirs["run"], "log_dir": dirs["log"], "cache_dir": dirs["cache"],
            "module_dir": self.runtime.module_dir,
            "ami_port": str(o.ami_port), "ami_user": AMI_USER, "ami_secret": self._secret(),
            "sip_bind": "127.0.0.1", "sip_port": str(o.sip_port),
            "rtp_start": str(o.rtp_start), "rtp_end": str(o.rtp_start + self.RTP_PORTS - 1),
            "agi_port": str(o.agi_port), "sim_agi_port": str(o.sim_agi_port or o.agi_port),
            "caller_id_number": o.caller_id_number or "anonymous",
            "trunk_host": o.trunk[0] if o.trunk else "", "trunk_port": str(o.trunk[1]) if o.trunk else "",
            "carrier_match": o.carrier_match or "",
            "carrier_contact": (f"contact = sip:{o.carrier_contact[0]}:{o.carrier_contact[1]}"
                                if o.carrier_contact else "; no contact: calls no BINfoon instance"),
            "police_line": o.police_line, "report_line": o.report_line, "admin_line": o.admin_line,
            "dialplan_includes": "\n".join(f"#include dialplan/{name}" for name in includes),
        }
        etc = self.run_dir / "etc"
        for stale in etc.glob("*.conf"):
            stale.unlink()
        for template in sorted(CONF_TEMPLATES.iterdir()):
            if template.suffix == ".tmpl":
                wanted = {"pjsip-trunk.conf.tmpl": o.trunk is not None,
                          "pjsip-network.conf.tmpl": o.carrier_match is not None}[template.name]
                if not wanted:
                    continue
                target = etc / template.name.removesuffix(".tmpl")
            elif template.suffix == ".conf":
                target = etc / template.name
            else:
                continue
            text = string.Template(template.read_text(encoding="utf-8")).substitute(values)
            self._write_private(target, text, gid)
        dialplan = etc / "dialplan"
        dialplan.mkdir(exist_ok=True)
        for name in includes:
            # Dialplan is copied verbatim: its ${...} are Asterisk's own variables.
            self._write_private(dialplan / name, (DIALPLAN_DIR / name).read_text(encoding="utf-8"), gid)

    @staticmethod
    def _write_private(path: Path, text: str, gid: int) -> None:
        path.write_text(text, encoding="utf-8")
        # Readable by the asterisk group, writable by nobody but root: Asterisk cannot rewrite its config.
        os.chmod(path, 0o640)
        if os.geteuid() == 0:
            os.chown(path, 0, gid)

    # -- process ----------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The command line that runs this instance in the foreground."""
        conf = f"{self.inner_dir}/etc/asterisk.conf"
        if self.runtime.root is None:
            cmd = ["/usr/sbin/asterisk", "-f", "-n", "-C", conf]
            if os.geteuid() == 0:
                cmd += ["-U", "asterisk", "-G", "asterisk"]
            return cmd
        uid, gid = self.runtime.asterisk_user()
        root = str(self.runtime.root)
        # A private mount namespace: /proc is mounted for this instance only and vanishes with it.
        script = (
            'mount -t proc proc "$1/proc" && '
            'exec chroot --userspec="$2" --groups="$3" "$1" /usr/sbin/asterisk -f -n -C "$4"'
        )
        return [
            "unshare", "--mount", "--propagation", "private", "--fork", "--kill-child",
            "/bin/sh", "-c", script, "binfoon-asterisk", root, f"{uid}:{gid}", str(gid), conf,
        ]

    @property
    def pid(self) -> int | None:
        """PID of the running Asterisk process (host view), if any."""
        path = self.run_dir / "run" / "asterisk.pid"
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        # A recycled PID is not ours: check that it is an Asterisk.
        try:
            if b"asterisk" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return None
        except OSError:
            return None
        return pid

    def is_running(self) -> bool:
        """True while the Asterisk process is alive."""
        return self.pid is not None

    def start(self, timeout_s: float = 30.0) -> None:
        """Render the configuration, start Asterisk in the background and wait until fully booted."""
        if self.is_running():
            raise AsteriskStartError(f"instance {self.options.name} is already running (pid {self.pid})")
        self.render()
        pid_file = self.run_dir / "run" / "asterisk.pid"
        pid_file.unlink(missing_ok=True)
        console = open(self.run_dir / "log" / "console.log", "ab")
        try:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            console.close()
        try:
            self.wait_fully_booted(timeout_s)
        except Exception:
            self.stop()
            raise

    def wait_fully_booted(self, timeout_s: float = 30.0) -> float:
        """Block until AMI reports FullyBooted; returns the seconds waited."""
        started = time.monotonic()
        creds = self.ami
        last_error: Exception | None = None
        while time.monotonic() - started < timeout_s:
            if self._process is not None and self._process.poll() is not None:
                raise AsteriskStartError(f"Asterisk exited with {self._process.returncode}\n{self.log_tail()}")
            try:
                if _ami_fully_booted(creds, timeout_s=max(0.5, timeout_s - (time.monotonic() - started))):
                    return time.monotonic() - started
            except OSError as exc:
                last_error = exc
            time.sleep(0.05)
        raise AsteriskStartError(f"Asterisk not fully booted after {timeout_s:.0f} s ({last_error})\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        """The end of the instance's console and message logs, for error messages."""
        out = []
        for path in (self.run_dir / "log" / "console.log", self.log_file):
            if path.exists():
                out.extend(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), then forcefully after ``timeout_s``."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while self.pid is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.pid is not None:
                os.kill(pid, signal.SIGKILL)
        self._reap()

    def kill(self) -> None:
        """SIGKILL Asterisk, as a crash would (fault tests)."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            if self._process.poll() is None and self.pid is None:
                # Asterisk never wrote its pid (failed start): end the wrapper, which ends its child.
                self._process.kill()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            self._process = None
        # The pid file is Asterisk's; a SIGKILL leaves it behind.
        (self.run_dir / "run" / "asterisk.pid").unlink(missing_ok=True)

    def destroy(self) -> None:
        """Stop the instance and delete its run directory."""
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def instances_dir(runtime: AsteriskRuntime, data_dir: Path) -> Path:
    """Where named instances live: inside the embedded root (Asterisk sees only that), else ``data_dir``."""
    if runtime.root is not None:
        return runtime.root / "srv" / "binfoon"
    return data_dir / "asterisk"


def _ami_fully_booted(creds: AmiCredentials, timeout_s: float) -> bool:
    """Log in over AMI and wait for the FullyBooted event (Asterisk sends it once booted)."""
    with socket.create_connection((creds.host, creds.port), timeout=min(timeout_s, 5.0)) as sock:
        sock.settimeout(min(timeout_s, 5.0))
        reader = sock.makefile("rb")
        reader.readline()  # banner
        sock.sendall(
            (f"Action: Login\r\nActionID: boot\r\nUsername: {creds.username}\r\n"
             f"Secret: {creds.secret}\r\nEvents: system\r\n\r\n").encode()
        )
        deadline = time.monotonic() + timeout_s
        block: dict[str, str] = {}
        while time.monotonic() < deadline:
            line = reader.readline()
            if not line:
                return False
            text = line.decode("utf-8", "replace").strip()
            if text:
                key, _, value = text.partition(":")
                block[key.strip().lower()] = value.strip()
                continue
            if block.get("response") == "Error":
                raise AsteriskStartError(f"AMI login refused: {block.get('message')}")
            if block.get("event") == "FullyBooted":
                sock.sendall(b"Action: Logoff\r\n\r\n")
                return True
            block = {}
    return False
