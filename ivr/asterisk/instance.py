"""A private Asterisk instance: configuration rendered from ``asterisk-conf/`` and ``dialplan/``.

Rules:
- everything an instance writes lives in its own run directory (config, AstDB, spool, logs,
  control socket), with its own ports, so several instances run side by side;
- Asterisk runs as the unprivileged ``asterisk`` user; it is started as root only to enter its
  chroot and a private mount namespace (for ``/proc``), never to run;
- the AMI secret and the FastAGI secret are generated for the instance (32 random bytes, see
  ``ivr.asterisk.secrets``) and kept in files only their users can read; never printed or committed.
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
from ivr.asterisk.secrets import ami_secret, read_agi_secret, read_secret_file, render_agi_secret
from ivr.asterisk.trunk import (
    DEFAULT_RTP_PORTS,
    RegistrationReport,
    SipEdge,
    Trunk,
    TrunkError,
    check_edge,
    check_ports,
    check_trunk,
    registration_report,
    transport_sections,
    trunk_sections,
)

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONF_TEMPLATES = PROJECT_DIR / "asterisk-conf"
DIALPLAN_DIR = PROJECT_DIR / "dialplan"
AMI_USER = "binfoon"

#: Dialplan files every instance loads; the simulator's only where the instance hosts simulated phones.
CORE_DIALPLAN = ("binfoon-member.conf", "binfoon-inbound.conf", "binfoon-review.conf")
SIMULATOR_DIALPLAN = ("binfoon-simulator.conf",)
#: Rendered files that hold a secret (the carrier's digest, the lab carrier's, the FastAGI secret in the
#: dialplan's ``BINFOON_AGI``): Asterisk's user's alone.
SECRET_CONFIG = frozenset({"pjsip-trunk.conf", "pjsip-network.conf", "extensions.conf"})


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
    #: The carrier trunk (a ``(host, port)`` pair is a trunk without auth); ``None`` for no trunk.
    trunk: Trunk | tuple[str, int] | None = None
    #: Bind address, NAT and codecs of the SIP edge.
    edge: SipEdge = field(default_factory=SipEdge)
    #: Act as the public phone network: accept calls from this address into the simulated phones.
    carrier_match: str | None = None
    #: As the public phone network: a static contact for calls placed by simulated callers
    #: (``PJSIP/<number>@carrier-in``), i.e. the BINfoon instance's SIP ``(host, port)``. Without it
    #: calls go to the contact BINfoon registered (with ``carrier_username``) or nowhere.
    carrier_contact: tuple[str, int] | None = None
    #: As the public phone network: BINfoon's account, which must REGISTER and answer a digest
    #: challenge on every INVITE; its secret is read from ``carrier_secret_file`` (0600).
    carrier_username: str = ""
    carrier_secret_file: str = ""
    #: As the public phone network: the transport BINfoon reaches it with (udp, tcp, tls), and for
    #: tls its certificate, key and CA list (PEM paths).
    carrier_transport: str = "udp"
    carrier_tls_files: tuple[str, ...] = ()
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
    #: Last RTP port (inclusive); 0: ``rtp_start`` + ``rtp_ports`` - 1.
    rtp_end: int = 0
    #: How many RTP ports to take when none are given (0: ``DEFAULT_RTP_PORTS``, 100 calls): two a call
    #: (RTP, RTCP), and room for calls still being torn down.
    rtp_ports: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.trunk, tuple):
            host, port = self.trunk
            self.trunk = Trunk(host=host, port=int(port))

    @property
    def the_trunk(self) -> Trunk | None:
        """The trunk, as a ``Trunk``."""
        return self.trunk if isinstance(self.trunk, Trunk) else None


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

    RTP_PORTS = DEFAULT_RTP_PORTS

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
            self.options.rtp_start = _free_rtp_block(self.options.rtp_ports or self.RTP_PORTS)
        text = json.dumps(asdict(self.options), indent=2, default=str) + "\n"
        # Written only when it changes: the unprivileged service reads it but may not rewrite it.
        if not state.exists() or state.read_text(encoding="utf-8") != text:
            state.write_text(text, encoding="utf-8")

    @property
    def ami(self) -> AmiCredentials:
        """The AMI address and the generated credentials of this instance."""
        self._load_or_allocate()
        return AmiCredentials("127.0.0.1", self.options.ami_port, AMI_USER, ami_secret(self.run_dir))

    @property
    def agi_secret(self) -> str:
        """The FastAGI secret the rendered dialplan sends with every AGI request (``ivr.asterisk.secrets``);
        the service's FastAGI server requires it. Raises ``AgiSecretMissing`` before the first render."""
        return read_agi_secret(self.run_dir)

    def check(self) -> dict[str, str]:
        """Validate the SIP settings and read the secrets; returns the pjsip values. Raises ``TrunkError``
        (naming the setting) before anything is written."""
        o = self.options
        check_ports(o.sip_port, o.rtp_start, o.rtp_end)
        check_edge(o.edge)
        trunk = o.the_trunk
        values: dict[str, str] = {}
        if trunk is not None:
            check_trunk(trunk)
            secret = read_secret_file("trunk_secret_file", trunk.secret_file) if trunk.authenticates else ""
            for setting, path in (("trunk_tls_cert_file", trunk.tls_cert_file), ("trunk_tls_key_file", trunk.tls_key_file),
                                  ("trunk_tls_ca_file", trunk.tls_ca_file)):
                if path and not Path(path).is_file():
                    raise TrunkError(f"{setting}: {path} does not exist")
            values.update(trunk_sections(trunk, secret=secret, caller_id_number=o.caller_id_number,
                                         codecs=o.edge.codecs))
        values.update(self._carrier_values())
        return values

    def _carrier_values(self) -> dict[str, str]:
        """The lab carrier's side (``pjsip-network.conf.tmpl``)."""
        o = self.options
        contact = (f"contact = sip:{o.carrier_contact[0]}:{o.carrier_contact[1]}" if o.carrier_contact
                   else "; no static contact: calls go to the contact BINfoon registered\nmax_contacts = 1\n"
                        "remove_existing = yes")
        values = {"carrier_match": o.carrier_match or "", "carrier_contact": contact,
                  "carrier_transport": f"transport-{o.carrier_transport}",
                  "carrier_aor": "carrier-in", "carrier_endpoint_extra": "", "carrier_sections": ""}
        if o.carrier_username:
            secret = read_secret_file("carrier_secret_file", o.carrier_secret_file)
            values.update({
                "carrier_aor": o.carrier_username,
                # Challenge every request from BINfoon (REGISTER and INVITE), as a carrier does.
                "carrier_endpoint_extra": "auth = carrier-in-auth",
                "carrier_sections": "\n".join(["[carrier-in-auth]", "type = auth", "auth_type = userpass",
                                                f"username = {o.carrier_username}", f"password = {secret}", ""]),
            })
        return values

    def render(self) -> None:
        """Write the whole configuration into the run directory (overwriting the previous one)."""
        sip_values = self.check()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        self._load_or_allocate()
        # Root renders for Asterisk's own user (embedded root or system package); others for themselves.
        uid, gid = self.runtime.asterisk_user() if os.geteuid() == 0 else (os.getuid(), os.getgid())
        inner = self.inner_dir
        dirs = {name: f"{inner}/{name}" for name in ("etc", "lib", "spool", "run", "log", "cache")}
        for name in dirs:
            path = self.run_dir / name
            path.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                os.chown(path, 0 if name == "etc" else uid, gid)
        os.chmod(self.run_dir / "etc", 0o750)
        # Asterisk's warnings may name an AGI URL (and so the FastAGI secret): its logs are its group's only.
        os.chmod(self.run_dir / "log", 0o750)
        # The spool is shared with the service (a member of Asterisk's group, ``binfoon serve``):
        # it writes the sounds Asterisk plays and reads the recordings Asterisk makes; setgid keeps
        # what either side creates in that group.
        os.chmod(self.run_dir / "spool", 0o2770)
        (self.run_dir / "lib" / "agi-bin").mkdir(exist_ok=True)

        o = self.options
        trunk = o.the_trunk
        tls_files: dict[str, str] = {}
        keys = self.run_dir / "etc" / "keys"
        shutil.rmtree(keys, ignore_errors=True)
        protocols = tuple(p for p in (trunk.transport if trunk else "", o.carrier_transport if o.carrier_match else "")
                          if p)
        pem = ((trunk.tls_cert_file, trunk.tls_key_file, trunk.tls_ca_file) if trunk is not None
               else tuple(o.carrier_tls_files))
        if "tls" in protocols:
            # Asterisk may live in a chroot: it reads copies inside its own run directory.
            keys.mkdir()
            for kind, path in zip(("cert", "key", "ca"), pem, strict=True):
                self._write_private(keys / f"trunk-{kind}.pem", Path(path).read_text(encoding="utf-8"), gid,
                                    secret_of=uid if kind == "key" else None)
                tls_files[kind] = f"{dirs['etc']}/keys/trunk-{kind}.pem"
        includes = list(CORE_DIALPLAN) + (list(SIMULATOR_DIALPLAN) if o.sim_agi_port else [])
        values = {
            "etc_dir": dirs["etc"], "lib_dir": dirs["lib"], "spool_dir": dirs["spool"],
            "run_dir": dirs["run"], "log_dir": dirs["log"], "cache_dir": dirs["cache"],
            "module_dir": self.runtime.module_dir,
            "ami_port": str(o.ami_port), "ami_user": AMI_USER, "ami_secret": ami_secret(self.run_dir),
            "agi_secret": render_agi_secret(self.run_dir, gid if os.geteuid() == 0 else None),
            "sip_transports": transport_sections(o.edge, sip_port=o.sip_port, protocols=protocols, tls_files=tls_files),
            "rtp_start": str(o.rtp_start), "rtp_end": str(o.rtp_end or o.rtp_start + (o.rtp_ports or self.RTP_PORTS) - 1),
            "agi_port": str(o.agi_port), "sim_agi_port": str(o.sim_agi_port or o.agi_port),
            "caller_id_number": o.caller_id_number or "anonymous",
            **sip_values,
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
            self._write_private(target, text, gid, secret_of=uid if target.name in SECRET_CONFIG else None)
        dialplan = etc / "dialplan"
        dialplan.mkdir(exist_ok=True)
        for name in includes:
            # Dialplan is copied verbatim: its ${...} are Asterisk's own variables.
            self._write_private(dialplan / name, (DIALPLAN_DIR / name).read_text(encoding="utf-8"), gid)

    @staticmethod
    def _write_private(path: Path, text: str, gid: int, secret_of: int | None = None) -> None:
        """Readable by Asterisk's group, writable by nobody but root: Asterisk cannot rewrite its config.
        A file holding a secret (``secret_of``: Asterisk's uid) is that user's alone, 0400: the service is a
        member of Asterisk's group (the spool is shared through it) and must not read the carrier's secret."""
        path.write_text(text, encoding="utf-8")
        os.chmod(path, 0o400 if secret_of is not None else 0o640)
        if os.geteuid() == 0:
            os.chown(path, *((secret_of, 0) if secret_of is not None else (0, gid)))

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
        except PermissionError:
            pass  # alive, another user's (the service looks at Asterisk's pid without root)
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

    def registration(self, timeout_s: float = 5.0) -> RegistrationReport | None:
        """The trunk's registration (state and last SIP response), from AMI and the instance's log;
        ``None`` when the instance has no trunk."""
        if self.options.the_trunk is None:
            return None
        details = _ami_list(self.ami, "PJSIPShowRegistrationsOutbound", "OutboundRegistrationDetail", timeout_s)
        detail = next((d for d in details if d.get("ObjectName") == "trunk"), None)
        lines = (self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
                 if self.log_file.exists() else [])
        return registration_report(detail, lines)

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


def _ami_list(creds: AmiCredentials, action: str, event: str, timeout_s: float) -> list[dict[str, str]]:
    """Run a list action over a short AMI session (no event stream) and return its ``event`` blocks."""
    with socket.create_connection((creds.host, creds.port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        reader = sock.makefile("rb")
        reader.readline()  # banner
        sock.sendall((f"Action: Login\r\nActionID: login\r\nUsername: {creds.username}\r\n"
                      f"Secret: {creds.secret}\r\nEvents: off\r\n\r\n"
                      f"Action: {action}\r\nActionID: list\r\n\r\n").encode())
        found: list[dict[str, str]] = []
        block: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = reader.readline()
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text:
                key, _, value = text.partition(":")
                block[key.strip()] = value.strip()
                continue
            if block.get("Response") == "Error":
                if block.get("ActionID") == "login":
                    raise AsteriskStartError(f"AMI login refused: {block.get('Message')}")
                return found  # e.g. the module is not loaded: no registrations
            if block.get("Event") == event:
                found.append(block)
            elif block.get("EventList") == "Complete":
                sock.sendall(b"Action: Logoff\r\n\r\n")
                return found
            block = {}
        return found


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
