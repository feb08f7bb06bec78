"""The lab's SMS network: a real Kannel (Debian's bearerbox and smsbox) with fake SMSCs, for the tests and
the demo.

It is production's Kannel (``ivr.copies.kannel_config.gateway_groups``: the same core, smsbox, sendsms
account and reply service) with the operator's SMPP account replaced by two fake SMSC groups:
- ``lab-mt``: a long-running ``fakesmsc`` is connected to it and receives every SMS sent; its output
  lines become ``ReceivedSms`` (``ivr.lab.fakesmsc``);
- ``lab-mo``: members' replies come in on it (``send_mo``: a ``fakesmsc -m 1`` that is ended once
  bearerbox counted the message). Nothing is ever routed out through it (``allowed-smsc-id`` names
  an id no SMS carries), so every SMS goes to ``lab-mt``.

Everything is private: its own run directory, configuration, passwords (admin, status, sendsms) and
random free loopback ports (never /etc/kannel, never a system bearerbox's 13000-13013). Each process runs
in its own session and is ended by its process group; ``stop`` is idempotent, ``with KannelLab(...) as
kannel:`` starts and stops it, and labs still running when the interpreter exits are stopped then. An
interpreter killed outright (a pytest-xdist worker, SIGKILL) leaves nothing either: every process is
told SIGTERM when it dies (``PR_SET_PDEATHSIG``). The boxes log at info level (debug would dump every
message whole) to ``log/`` in the run directory.

Why a reply may come late, seen while building this: smsbox fetches callbacks over kept-alive
connections, several at once, so a receiver that serves one connection at a time stalls the others
(a threading or asyncio server is needed); any answer but 200/202 is fetched again every
``http_queue_delay`` s (a 404 or 204 means duplicates later); and a reply injected before smsbox is
connected waits in bearerbox (``start`` returns only once smsbox is connected).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, Self

from ivr.copies.kannel import KannelGateway
from ivr.copies.kannel_config import Group, KannelSetup, gateway_groups, render
from ivr.lab.fakesmsc import Inbox, ReceivedSms
from ivr.lab.ports import free_ports

BEARERBOX = Path("/usr/sbin/bearerbox")
SMSBOX = Path("/usr/sbin/smsbox")
FAKESMSC = Path("/usr/lib/kannel/test/fakesmsc")
HOST = "127.0.0.1"
MT_SMSC, MO_SMSC = "lab-mt", "lab-mo"
#: An SMSC id no SMS carries: the only one the reply SMSC would take SMS for.
_NOT_ROUTED = "never-routed-here"

_RCVD = re.compile(r"rcvd: sms (\d+)")
_PORT_TAKEN = "Address already in use"
#: Kannel's log levels: 0 debug, 1 info, 2 warning. Info: what the lab's post-mortems need.
LOG_LEVEL = 1
#: prctl(2): the signal a child gets when the thread that started it ends.
_PR_SET_PDEATHSIG = 1
#: Loaded before any fork: the child only calls into it between fork and exec.
_LIBC = ctypes.CDLL(None, use_errno=True)


class KannelLabError(RuntimeError):
    """The lab's Kannel did not start or a reply could not be injected; the message ends with the logs' tail."""


class _PortTaken(KannelLabError):
    """A port drawn for the lab was taken by another process in the meantime: drawn again."""


def _free_ports(count: int) -> list[int]:
    """``count`` different loopback TCP ports free now (all held open together, so never the same one)."""
    return free_ports(count)


def _dies_with(parent: int) -> Callable[[], None]:
    """The ``preexec_fn`` that makes a child end (SIGTERM) when ``parent``, this process, ends however."""

    def preexec() -> None:
        _LIBC.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM), ctypes.c_ulong(0),
                    ctypes.c_ulong(0), ctypes.c_ulong(0))
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class _Spawner:
    """Starts the lab's processes from one thread that lives as long as the interpreter: a child's
    PR_SET_PDEATHSIG fires when the *thread* that forked it ends, and labs are started from worker
    threads (``asyncio.to_thread``) that end with their event loop, long before the lab is stopped."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[subprocess.Popen[bytes]], list[str], dict[str, Any]]] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, command: list[str], **options: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(command, **options)``, forked from the spawner's thread, ending with us."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kannel-lab-spawner", daemon=True)
                self._thread.start()
        started: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((started, command, options))
        return started.result()

    def _run(self) -> None:
        while True:
            started, command, options = self._jobs.get()
            try:
                # Between fork and exec the child only calls prctl, through a libc loaded before any fork.
                started.set_result(subprocess.Popen(command, preexec_fn=_dies_with(os.getpid()),  # noqa: PLW1509
                                                    **options))
            except Exception as exc:  # noqa: BLE001 - whatever it is, the caller raises it (never a hang)
                started.set_exception(exc)


_spawner = _Spawner()
_running: weakref.WeakSet[KannelLab] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Stop the labs a test or a demo left running (a process exit never leaves Kannel behind)."""
    for lab in list(_running):
        lab.stop()


class KannelLab:
    """A private Kannel with fake SMSCs: what is sent arrives in ``messages``; ``send_mo`` replies."""

    def __init__(self, callback_base: str, mo_token: str, *, run_dir: Path | None = None,
                 start_timeout_s: float = 60.0, http_queue_delay_s: int = 1, http_request_retry: int = 120) -> None:
        """``callback_base``: where smsbox sends delivery reports and replies (the service's
        ``sms_callback_port`` listener, ``http://127.0.0.1:<port>``); ``mo_token``: the reply URL's
        ``sig``. ``run_dir``: where its configuration, queue and logs go (default: a new temporary
        directory, removed by ``stop``). A callback not answered with 200/202 is fetched again every
        ``http_queue_delay_s`` s, ``http_request_retry`` times (production waits 10 s)."""
        self.callback_base = callback_base
        self.mo_token = mo_token
        self.start_timeout_s = start_timeout_s
        self.http_queue_delay_s = http_queue_delay_s
        self.http_request_retry = http_request_retry
        self.username = "binfoon-lab"
        # Hex: never the word Kannel's configuration takes for a directive.
        self.password = secrets.token_hex(16)
        self._admin_password = secrets.token_hex(16)
        #: What bearerbox's status pages ask for (``/status``, ``/store-status``).
        self.status_password = secrets.token_hex(16)
        self._given_dir = run_dir
        self.run_dir: Path | None = None
        self.admin_port = self.smsbox_port = self.sendsms_port = self.mt_port = self.mo_port = 0
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._reader: threading.Thread | None = None
        self._inbox = Inbox()
        self._mo_lock = threading.Lock()
        self._life = threading.Lock()

    # -- what the service is given -----------------------------------------------------------------------
    @property
    def sendsms_url(self) -> str:
        """smsbox's sendsms URL (``sms_sendsms_url``)."""
        return f"http://{HOST}:{self.sendsms_port}/cgi-bin/sendsms"

    def gateway(self, sign: Callable[[str], str], **overrides: Any) -> KannelGateway:
        """A ``KannelGateway`` for this lab, as the service makes one (reports to ``callback_base``)."""
        options: dict[str, Any] = {"sendsms_url": self.sendsms_url, "username": self.username,
                                   "password": self.password, "callback_base": self.callback_base, "sign": sign}
        options.update(overrides)
        return KannelGateway(**options)

    # -- life ----------------------------------------------------------------------------------------------
    def config(self) -> str:
        """The lab's Kannel configuration (production's groups, fake SMSCs instead of the SMPP account)."""
        assert self.run_dir is not None
        setup = KannelSetup(admin_password=self._admin_password, status_password=self.status_password,
                            username=self.username, password=self.password,
                            callback_base=self.callback_base, mo_token=self.mo_token,
                            spool_dir=self.run_dir / "spool", log_dir=self.run_dir / "log",
                            admin_port=self.admin_port, smsbox_port=self.smsbox_port, sendsms_port=self.sendsms_port,
                            http_request_retry=self.http_request_retry, http_queue_delay=self.http_queue_delay_s,
                            bearerbox_log_level=LOG_LEVEL, smsbox_log_level=LOG_LEVEL)
        fake = (("smsc", "fake"), ("our-host", HOST), ("connect-allow-ip", HOST))
        groups = gateway_groups(setup)
        groups[1:1] = [Group("smsc", (*fake, ("smsc-id", MT_SMSC), ("port", self.mt_port))),
                       Group("smsc", (*fake, ("smsc-id", MO_SMSC), ("port", self.mo_port),
                                      ("allowed-smsc-id", _NOT_ROUTED)))]
        return render(groups, "BINfoon's lab Kannel (ivr/lab/kannel.py): fake SMSCs, loopback only.")

    def start(self) -> Self:
        """Start bearerbox, the MT fake SMSC and smsbox, and wait until the SMSC is online and smsbox is
        connected and takes sendsms requests (a second start does nothing). ``KannelLabError`` with the
        logs' tail when that does not happen within ``start_timeout_s``."""
        with self._life:
            if self._processes:
                return self
            for binary in (BEARERBOX, SMSBOX, FAKESMSC):
                if not binary.exists():
                    raise KannelLabError(f"{binary} is missing: install Debian's kannel and kannel-extras "
                                         "(make installs them)")
            if self.run_dir is None:
                self.run_dir = self._given_dir or Path(tempfile.mkdtemp(prefix="binfoon-kannel-lab-"))
            _running.add(self)
            try:
                for attempt in range(3):
                    try:
                        self._start_once()
                        break
                    except _PortTaken:
                        # Another process took a drawn port between the draw and the bind: draw again.
                        self._end_processes()
                        if attempt == 2:
                            raise
            except BaseException:
                self._stop_locked()
                raise
            return self

    def _start_once(self) -> None:
        assert self.run_dir is not None
        (self.admin_port, self.smsbox_port, self.sendsms_port,
         self.mt_port, self.mo_port) = _free_ports(5)
        # A new log each attempt: a port taken in an earlier one is no news.
        shutil.rmtree(self.run_dir / "log", ignore_errors=True)
        for folder in ("spool", "spool/dlr", "log"):
            (self.run_dir / folder).mkdir(parents=True, exist_ok=True)
        conf = self.run_dir / "kannel.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(self.config())
        deadline = time.monotonic() + self.start_timeout_s

        self._spawn("bearerbox", [str(BEARERBOX), "-v", "2", str(conf)])
        self._wait(lambda: self._status() is not None, deadline, "bearerbox's admin interface to answer")
        self._spawn("fakesmsc-mt", [str(FAKESMSC), "-H", HOST, "-r", str(self.mt_port), "-m", "0",
                                    "0 0 text never-sent"], reader=True)
        self._wait(lambda: self._smsc_online(MT_SMSC), deadline, f"the {MT_SMSC} fake SMSC to be online")
        self._spawn("smsbox", [str(SMSBOX), "-v", "2", str(conf)])
        self._wait(lambda: self._smsbox_connected() and self._sendsms_answers(), deadline,
                   "smsbox to connect and answer sendsms requests")

    def stop(self, keep_files: bool = False) -> None:
        """End every process of the lab (process groups; a second stop does nothing) and remove the run
        directory it made (``keep_files``: leave it, for a post-mortem)."""
        with self._life:
            self._stop_locked(keep_files)

    def _stop_locked(self, keep_files: bool = False) -> None:
        self._end_processes()
        _running.discard(self)
        if self.run_dir is not None and self._given_dir is None and not keep_files:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the lab's processes are up."""
        return bool(self._processes) and all(p.poll() is None for p in self._processes.values())

    # -- what arrived --------------------------------------------------------------------------------------
    @property
    def messages(self) -> list[ReceivedSms]:
        """The SMS the fake SMSC received so far, oldest first (a copy: the reader keeps appending)."""
        with self._inbox.changed:
            return list(self._inbox.messages)

    def to(self, number: str) -> list[ReceivedSms]:
        """The SMS received for ``number``."""
        return [sms for sms in self.messages if sms.receiver == number]

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[ReceivedSms]:
        """The SMS once at least ``count`` have arrived (``TimeoutError`` after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        with self._inbox.changed:
            while len(self._inbox.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._inbox.messages)} of {count} SMS arrived within {timeout_s:.0f} s")
                self._inbox.changed.wait(left)
            return list(self._inbox.messages)

    # -- replies -------------------------------------------------------------------------------------------
    def send_mo(self, from_e164: str, to_e164: str, text: str, timeout_s: float = 30.0) -> None:
        """A member's SMS ``text`` from ``from_e164`` to ``to_e164``, in through the reply SMSC; returns once
        bearerbox counted it (smsbox then fetches the reply URL). One at a time (the fake SMSC serves one
        connection). ``ValueError`` for a number with a space or a text with a line break (the fake
        SMSC's protocol is one line); ``KannelLabError`` when bearerbox did not take it in time."""
        for number in (from_e164, to_e164):
            if not re.fullmatch(r"\+?[0-9A-Za-z]{1,20}", number):
                raise ValueError(f"not a number for the fake SMSC: {number!r}")
        if not text or re.search(r"[\x00-\x1f\x7f]", text):
            raise ValueError("a reply's text must be one line without control characters")
        if not self.running:
            raise KannelLabError("the lab's Kannel is not running")
        with self._mo_lock:
            before = self._mo_count()
            deadline = time.monotonic() + timeout_s
            process = _spawner.popen(
                [str(FAKESMSC), "-H", HOST, "-r", str(self.mo_port), "-m", "1", "-i", "0",
                 f"{from_e164} {to_e164} text {text}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
            try:
                while self._mo_count() <= before:
                    if time.monotonic() > deadline:
                        raise KannelLabError(f"bearerbox did not take the reply within {timeout_s:.0f} s\n"
                                             f"{self._tail(process)}")
                    if process.poll() is not None:
                        raise KannelLabError(f"fakesmsc ended ({process.returncode}) before bearerbox took the "
                                             f"reply\n{self._tail(process)}")
                    time.sleep(0.05)
            finally:
                # It never ends by itself: it waits for answers that do not come.
                _end(process)

    def _tail(self, process: subprocess.Popen[bytes]) -> str:
        _end(process)
        said = process.stdout.read().decode("utf-8", "replace") if process.stdout else ""
        return "fakesmsc (reply): " + "\n".join(said.splitlines()[-10:]) + "\n" + self.log_tail()

    # -- bearerbox's view ----------------------------------------------------------------------------------
    def status(self) -> str:
        """bearerbox's status page (text), ``""`` when it does not answer."""
        return self._status() or ""

    def _status(self) -> str | None:
        url = f"http://{HOST}:{self.admin_port}/status.txt?password={self._admin_password}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=5) as answer:
                return str(answer.read(256 * 1024).decode("utf-8", "replace"))
        except OSError:
            return None

    def _smsc_line(self, smsc_id: str) -> str:
        for line in self.status().splitlines():
            if line.strip().startswith(f"{smsc_id}["):
                return line
        return ""

    def _smsc_online(self, smsc_id: str) -> bool:
        return "(online" in self._smsc_line(smsc_id)

    def _mo_count(self) -> int:
        found = _RCVD.search(self._smsc_line(MO_SMSC))
        return int(found.group(1)) if found else 0

    def _smsbox_connected(self) -> bool:
        boxes = self.status().partition("Box connections:")[2].partition("SMSC connections:")[0]
        return any("smsbox" in line and "on-line" in line for line in boxes.splitlines())

    def _sendsms_answers(self) -> bool:
        """smsbox answers a sendsms request (one without an account: refused, nothing sent)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.sendsms_url, timeout=5) as answer:
                return bool(answer.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code == 403
        except OSError:
            return False

    # -- processes -----------------------------------------------------------------------------------------
    def _spawn(self, name: str, command: list[str], reader: bool = False) -> None:
        assert self.run_dir is not None
        out_path = self.run_dir / "log" / f"{name}.out"
        if reader:
            process = _spawner.popen(command, cwd=self.run_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            assert process.stdout is not None
            self._reader = threading.Thread(target=self._read, args=(process.stdout, out_path),
                                            name=f"kannel-lab-{name}", daemon=True)
            self._reader.start()
        else:
            with out_path.open("ab") as out:
                process = _spawner.popen(command, cwd=self.run_dir, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self._processes[name] = process

    def _read(self, stream: IO[bytes], copy_to: Path) -> None:
        with copy_to.open("ab") as copy:
            for raw in iter(stream.readline, b""):
                copy.write(raw)
                copy.flush()
                self._inbox.line(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _wait(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while not ready():
            for name, process in self._processes.items():
                if process.poll() is not None:
                    tail = self.log_tail()
                    error = _PortTaken if _PORT_TAKEN in tail else KannelLabError
                    raise error(f"{name} ended ({process.returncode}) while waiting for {what}\n{tail}")
            if _PORT_TAKEN in self.log_tail():
                raise _PortTaken(f"a port of the lab was taken while waiting for {what}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise KannelLabError(f"no {what} within {self.start_timeout_s:.0f} s\n{self.log_tail()}")
            time.sleep(0.05)

    def _end_processes(self) -> None:
        for name in ("smsbox", "fakesmsc-mt", "bearerbox"):
            process = self._processes.pop(name, None)
            if process is not None:
                _end(process)
        for process in self._processes.values():
            _end(process)
        self._processes.clear()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None

    def log_tail(self, lines: int = 15) -> str:
        """The end of each box's output and log, for error messages."""
        if self.run_dir is None:
            return ""
        out = []
        for path in sorted((self.run_dir / "log").glob("*")):
            try:
                with path.open("rb") as log:
                    log.seek(max(0, log.seek(0, os.SEEK_END) - 64 * 1024))
                    text = log.read().decode("utf-8", "replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def _end(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """End ``process`` and its group: SIGTERM, then SIGKILL after ``grace_s``; reaped either way."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)
