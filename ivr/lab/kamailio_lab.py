"""The lab's SIP edge: a real Kamailio (Debian's ``kamailio``) run from ``render_kamailio``, and SIPp
endpoints (Debian's ``sip-tester``) to put calls through it.

``KamailioEdge`` writes the rendered files into a work directory (the control socket and the
dispatcher list there too, never /etc/kamailio or /run/kamailio), runs ``kamailio -DD -E`` in the
foreground as a child in its own session (it runs as root as well; it needs no privilege), and returns
once the edge answers a SIP request (it answers a stranger's OPTIONS with 403). ``stop`` ends its process group; an interpreter that dies
outright takes it along (``PR_SET_PDEATHSIG``).

SIPp plays both ends: ``SippUas`` answers calls (an Asterisk node, or the carrier), answers the edge's
OPTIONS probes, and puts its own port in the Contact of its answers; ``run_uac`` places calls (the
carrier calling in, or a node calling out) and reads back from SIPp's message log, per call, who
answered (the Contact port) or which cap refused it (``X-BINfoon-Cap``).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ivr.cluster.kamailio import CFG_NAME, EdgePlan, render_kamailio
from ivr.lab.ports import free_ports

KAMAILIO = Path("/usr/sbin/kamailio")
KAMCMD = Path("/usr/sbin/kamcmd")
SIPP = Path("/usr/bin/sipp")
SCENARIO_DIR = Path(__file__).resolve().parents[2] / "kamailio-conf"
UAS_SCENARIO = SCENARIO_DIR / "sipp-uas.xml"
UAC_SCENARIO = SCENARIO_DIR / "sipp-uac.xml"
HOST = "127.0.0.1"

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def free_udp_ports(count: int) -> list[int]:
    """``count`` different loopback UDP ports free now (held open together, so never the same one)."""
    return free_ports(count, udp=True)


def _dies_with_parent() -> None:
    """``preexec_fn``: the child is told SIGTERM when the process that started it dies."""
    _LIBC.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM), ctypes.c_ulong(0),
                ctypes.c_ulong(0), ctypes.c_ulong(0))


def _end(process: subprocess.Popen[bytes] | asyncio.subprocess.Process | None, grace_s: float) -> None:
    """SIGTERM the process's group, SIGKILL it after ``grace_s``; nothing if it already ended."""
    if process is None or process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(process.pid, os.WNOHANG)[0] != 0:
                return
        except ChildProcessError:
            return
        time.sleep(0.05)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def sip_request(target: tuple[str, int], method: str, *, local_port: int = 0, contact_user: str = "probe",
                timeout_s: float = 0.3) -> str | None:
    """Send one out-of-dialog request (``OPTIONS``, ``REGISTER``) from ``HOST:local_port`` (0: any) to
    ``target``; the first final reply as text, or None when none came within ``timeout_s``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, local_port))
        sock.settimeout(timeout_s)
        port = sock.getsockname()[1]
        call_id = uuid.uuid4().hex
        host, target_port = target
        request = (f"{method} sip:{host}:{target_port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{call_id[:16]};rport\r\n"
                   f"From: <sip:{contact_user}@{host}>;tag={call_id[:8]}\r\nTo: <sip:{contact_user}@{host}>\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:{contact_user}@{HOST}:{port}>\r\n"
                   f"Expires: 60\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        sock.sendto(request.encode(), target)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                reply = sock.recv(4096).decode(errors="replace")
            except OSError:
                return None
            if reply.startswith("SIP/2.0 ") and not reply.startswith("SIP/2.0 1"):
                return reply
        return None
    finally:
        sock.close()


class KamailioEdge:
    """A private Kamailio edge for the lab and the tests: ``await start(plan, work_dir)``, ``await stop()``."""

    def __init__(self) -> None:
        self.plan: EdgePlan | None = None
        self.work_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self, plan: EdgePlan, work_dir: Path, timeout_s: float = 10.0) -> None:
        """Write the edge's files into ``work_dir`` (control socket and dispatcher list there too), run
        Kamailio in the foreground, and return once it answers SIP on ``plan.listen``."""
        work_dir.mkdir(parents=True, exist_ok=True)
        self.plan = dataclasses.replace(plan, ctl_socket=str(work_dir / "ctl.sock"), config_dir=str(work_dir))
        self.work_dir = work_dir
        for name, text in render_kamailio(self.plan).items():
            (work_dir / name).write_text(text, encoding="utf-8")
        self._process = self._spawn(work_dir)
        deadline = time.monotonic() + timeout_s
        while await asyncio.to_thread(sip_request, self.plan.listen, "OPTIONS") is None:
            if self._process.poll() is not None:
                raise RuntimeError(f"kamailio exited ({self._process.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"kamailio did not answer on {self.plan.listen} within {timeout_s} s")

    @staticmethod
    def _spawn(work_dir: Path) -> subprocess.Popen[bytes]:
        """Run Kamailio on the files in ``work_dir``, from this thread (the death signal follows the thread
        that forks: never from a worker thread that ends)."""
        with (work_dir / "kamailio.log").open("ab") as log:
            # Small memory pools: the lab machine is shared; -DD -E: no fork into the background, log to stderr.
            return subprocess.Popen(
                [str(KAMAILIO), "-f", str(work_dir / CFG_NAME), "-Y", str(work_dir), "-DD", "-E", "-m", "32", "-M", "8"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_dies_with_parent)  # noqa: PLW1509

    def log_tail(self, lines: int = 20) -> str:
        """The end of Kamailio's log (for error messages)."""
        if self.work_dir is None or not (self.work_dir / "kamailio.log").exists():
            return ""
        text = (self.work_dir / "kamailio.log").read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def rpc(self, *command: str) -> str:
        """A ``kamcmd`` command on the edge's control socket; its output."""
        if self.plan is None:
            raise RuntimeError("the edge is not started")
        process = await asyncio.create_subprocess_exec(
            str(KAMCMD), "-s", f"unix:{self.plan.ctl_socket}", *command,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"kamcmd {' '.join(command)}: {out.decode(errors='replace')}")
        return out.decode()

    async def node_states(self) -> dict[str, str]:
        """Each node's dispatcher flags, by URI: ``AP`` active (probed), ``IP`` inactive, ``TP`` trying."""
        text = await self.rpc("dispatcher.list")
        return dict(re.findall(r"URI: (\S+)\s+FLAGS: (\S+)", text))

    async def wait_nodes(self, done: Callable[[dict[str, str]], bool], timeout_s: float) -> dict[str, str]:
        """Poll ``node_states`` until ``done`` holds for them or the deadline; the last states either way."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = await self.node_states()
            if done(states) or time.monotonic() > deadline:
                return states
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """End Kamailio (its whole process group); idempotent."""
        await asyncio.to_thread(_end, self._process, 5.0)
        self._process = None


class SippUas:
    """A SIPp that answers calls on ``HOST:port``: a node or the carrier. ``kill()`` ends it abruptly."""

    def __init__(self, port: int, work_dir: Path) -> None:
        self.port = port
        self.log = work_dir / f"uas-{port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start answering (returns at once; SIPp binds its port before it reads the scenario's first message)."""
        self._process = subprocess.Popen(
            [str(SIPP), "-sf", str(UAS_SCENARIO), "-i", HOST, "-p", str(self.port), "-nostdin",
             "-trace_msg", "-message_file", str(self.log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_dies_with_parent)  # noqa: PLW1509

    def kill(self) -> None:
        """SIGKILL: the node dies without a word (no reply to anything from now on)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def stop(self) -> None:
        """End it; idempotent."""
        _end(self._process, 2.0)
        if self._process is not None:
            self._process.wait()


@dataclass
class UacResult:
    """What the calling side saw, per call: answered (by which port) or refused (by which cap)."""

    answered_by: Counter[int] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    #: Final INVITE responses that are neither 200 nor a cap's 503, by code.
    other: Counter[int] = field(default_factory=Counter)
    #: Seconds between the first and the last INVITE sent (from SIPp's own log).
    send_span_s: float = 0.0
    exit_code: int = 0

    @property
    def answered(self) -> int:
        """Calls answered (200 OK)."""
        return sum(self.answered_by.values())


async def run_uac(target: tuple[str, int], local_port: int, work_dir: Path, *, calls: int, rate: int,
                  hold_ms: int = 0, number: str = "0475000001", timeout_s: float = 30.0) -> UacResult:
    """Place ``calls`` calls from ``HOST:local_port`` to ``target``, ``rate`` new calls a second, each held
    ``hold_ms`` once answered, and read back how each ended."""
    log = work_dir / f"uac-{local_port}-{uuid.uuid4().hex[:6]}.log"
    process = await asyncio.create_subprocess_exec(
        str(SIPP), "-sf", str(UAC_SCENARIO), "-i", HOST, "-p", str(local_port), "-s", number,
        "-m", str(calls), "-r", str(rate), "-d", str(hold_ms), "-nostdin", "-timeout", f"{int(timeout_s)}s",
        "-trace_msg", "-message_file", str(log), f"{target[0]}:{target[1]}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True)
    exit_code = await process.wait()
    result = read_uac_log(log.read_text(encoding="utf-8", errors="replace") if log.exists() else "")
    result.exit_code = exit_code
    return result


_ENTRY = re.compile(r"^-{40,} (\S+ \S+)\n(UDP message (?:sent|received)).*?\n\n(.*?)(?=^-{40,} |\Z)", re.MULTILINE | re.DOTALL)


def read_uac_log(text: str) -> UacResult:
    """The calls' endings from a SIPp message log (final responses to INVITE, one per Call-ID)."""
    result = UacResult()
    sent_at: list[datetime] = []
    finals: dict[str, str] = {}
    for stamp, kind, message in _ENTRY.findall(text):
        first = message.split("\r\n", 1)[0]
        if kind.endswith("sent") and first.startswith("INVITE "):
            sent_at.append(datetime.fromisoformat(stamp))
        elif kind.endswith("received") and re.search(r"^CSeq: *\d+ INVITE", message, re.MULTILINE):
            code = int(first.split()[1])
            call_id = re.search(r"^Call-ID: *(\S+)", message, re.MULTILINE)
            if code >= 200 and call_id:
                finals.setdefault(call_id.group(1), message)
    for message in finals.values():
        code = int(message.split()[1])
        cap = re.search(r"^X-BINfoon-Cap: *(\S+)", message, re.MULTILINE)
        contact = re.search(r"^Contact: *<sip:[^>]*?:(\d+)[;>]", message, re.MULTILINE)
        if code == 200 and contact:
            result.answered_by[int(contact.group(1))] += 1
        elif code == 503 and cap and re.search(r"^Reason: *Q\.850;cause=47\b", message, re.MULTILINE):
            # A cap refusal counts only with its Reason: the node's dialer reads the cause from it.
            result.refused[cap.group(1)] += 1
        else:
            result.other[code] += 1
    if sent_at:
        result.send_span_s = (max(sent_at) - min(sent_at)).total_seconds()
    return result


def calls_received(log: Path) -> int:
    """Distinct calls (INVITE Call-IDs) a ``SippUas`` received, from its message log (SIPp writes each
    message as it goes)."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    call_ids = set()
    for _stamp, kind, message in _ENTRY.findall(text):
        if kind.endswith("received") and message.startswith("INVITE "):
            found = re.search(r"^Call-ID: *(\S+)", message, re.MULTILINE)
            if found:
                call_ids.add(found.group(1))
    return len(call_ids)
