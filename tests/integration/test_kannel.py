"""The SMS edge against the real Kannel (Debian's bearerbox and smsbox, with fakesmsc as the SMSCs):
what ``KannelGateway`` sends arrives with its exact text and numbers, in the parts we count; delivery
reports and members' replies come back to a loopback receiver, signed; Kannel away or refusing the
account is ``SendFailed``, no answer once the request went ``SendUncertain``; the status pages need their
password; the lab leaves no process behind even when its interpreter is killed; and the production
configuration is one the real bearerbox reads."""

from __future__ import annotations

import asyncio
import http.server
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ivr.config import load_settings
from ivr.copies.gateways import SendFailed, SendUncertain, SmsCopy
from ivr.copies.kannel import DLR_PURPOSE, dlr_signer, mo_token
from ivr.copies.kannel_config import kannel_config
from ivr.copies.sms_text import SmsContent, SmsText, compose_sms, count_segments
from ivr.copies.tokens import verify
from ivr.domain.vocabulary import Urgency
from ivr.lab.kannel import BEARERBOX, SMSBOX, KannelLab
from tests.integration.conftest import until

KEY = bytes(range(32))
MO_TOKEN = mo_token(KEY)
SENDER = "+3250000000"


@dataclass(frozen=True)
class Callback:
    """One GET smsbox made to the receiver."""

    path: str
    query: dict[str, str]


class Receiver:
    """The service's callback listener as Kannel sees it: loopback HTTP, one thread per connection (smsbox
    keeps connections alive and calls several at once), 200 to everything; what came, in order."""

    def __init__(self, bound: socket.socket | None = None) -> None:
        """``bound``: a socket bound to the port to listen on (held until now, so nobody took it)."""
        self.calls: list[Callback] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                with receiver._lock:
                    receiver.calls.append(Callback(parts.path, dict(urllib.parse.parse_qsl(parts.query))))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=bound is None)
        if bound is not None:
            self.server.socket.close()
            self.server.socket = bound
            self.server.server_address = bound.getsockname()
            self.server.server_activate()
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def of(self, path: str) -> list[Callback]:
        with self._lock:
            return [call for call in self.calls if call.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    listener = Receiver()
    yield listener
    listener.close()


@pytest.fixture
def kannel(receiver: Receiver) -> Iterator[KannelLab]:
    with KannelLab(receiver.base, MO_TOKEN) as lab:
        yield lab


def sms_text(text: str, language: str = "nl", urgency: Urgency = Urgency.URGENT) -> SmsText:
    return compose_sms(SmsContent(language=language, bin_name="Gent-Centrum", urgency=urgency, drill=False,
                                  callback_number="+3292000000", text=text))


async def test_copies_arrive_exactly_and_their_delivery_reports_come_back_signed(
        kannel: KannelLab, receiver: Receiver) -> None:
    gateway = kannel.gateway(dlr_signer(KEY))
    short = sms_text("Verdachte wagen in de Kerkstraat.")
    long = sms_text("Inbraakpoging {achterdeur} [Kerkstraat 12] ~ 23u; signalement: 1m80, grijze jas, zwarte "
                    "rugzak, vlucht per fiets richting station. Wees waakzaam, sluit ramen en deuren, meld "
                    "verdachte zaken aan de politie (101) en niet via sociale media. Dank u! " * 2)
    unicode = sms_text("Водитель белого фургона… «красный» 🚓", language="fr")
    # Letters GSM-7 has no code for are written as their look-alikes: French stays GSM-7.
    french = sms_text("Fête à l'hôtel: façade brûlée, cœur du quartier, l'île et la forêt fermées.", language="fr")
    assert (short.segments, short.unicode) == (1, False)
    assert (long.segments, long.unicode) == (2, False) and "{" in long.text and "€" not in long.text
    assert unicode.unicode is True
    assert french.unicode is False and "Fete à l'hotel: facade brulée, coeur" in french.text
    sent = {"copy-short": ("+32470000001", short), "copy-long": ("+32470000002", long),
            "copy-ucs2": ("+32470000003", unicode), "copy-french": ("+32470000004", french)}
    for copy_id, (to, text) in sent.items():
        answer = await gateway.send(SmsCopy(copy_id=copy_id, to=to, sender=SENDER, text=text.text,
                                            unicode=text.unicode))
        assert answer == "0: Accepted for delivery"

    arrived = await asyncio.to_thread(kannel.wait_for, len(sent), 60)
    by_number = {sms.receiver: sms for sms in arrived}
    assert len(arrived) == len(sent) and set(by_number) == {to for to, _ in sent.values()}
    for to, text in sent.values():
        got = by_number[to]
        assert got.sender == SENDER
        assert got.text == text.text
        assert (got.parts, got.unicode) == (text.segments, text.unicode)

    # Every copy gets "accepted by the SMSC" (8) and "delivered" (1); Kannel makes the two GETs at once,
    # so their order is not fixed. Each names its copy and carries that copy's signature.
    def reports() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for call in receiver.of("/kannel/dlr"):
            assert verify(KEY, DLR_PURPOSE, call.query["copy"], call.query["sig"])
            found.setdefault(call.query["copy"], set()).add(call.query["type"])
        return found

    await until(lambda: reports() == {copy_id: {"8", "1"} for copy_id in sent}, 60, "two reports per copy")
    await asyncio.sleep(0.5)
    assert len(receiver.of("/kannel/dlr")) == 2 * len(sent)  # one of each per copy, a 2-part SMS included


@pytest.mark.parametrize(("text", "parts", "unicode"), [
    ("x" * 160, 1, False),
    ("x" * 161, 2, False),
    ("x" * 300 + "{€}", 2, False),                      # 306 septets exactly
    ("x" * 152 + "€" + "x" * 151, 2, False),            # the euro may not straddle the parts
    ("ő" * 70, 1, True),
    ("ő" * 134, 2, True),
    ("ő" * 65 + "🚓" + "ő" * 66, 2, True),              # a surrogate pair, 134 units
])
async def test_kannel_splits_as_we_count(kannel: KannelLab, text: str, parts: int, unicode: bool) -> None:
    assert count_segments(text, unicode) == parts
    gateway = kannel.gateway(dlr_signer(KEY))
    await gateway.send(SmsCopy(copy_id="copy-1", to="+32470000009", sender=SENDER, text=text, unicode=unicode))
    (got,) = await asyncio.to_thread(kannel.wait_for, 1, 60)
    assert (got.text, got.parts, got.unicode) == (text, parts, unicode)


async def test_a_members_reply_reaches_the_service_promptly(kannel: KannelLab, receiver: Receiver) -> None:
    await asyncio.to_thread(kannel.send_mo, "+32470000001", SENDER, "OK dank u, ontvangen é")
    await until(lambda: receiver.of("/kannel/mo"), 30, "the reply's callback")
    (reply,) = receiver.of("/kannel/mo")
    assert reply.query["from"] == "+32470000001"
    assert reply.query["to"] == SENDER
    assert reply.query["text"] == "OK dank u, ontvangen é"
    assert reply.query["sig"] == MO_TOKEN
    assert len(reply.query["id"]) == 36  # Kannel's id of the SMS: a retried callback carries the same
    await asyncio.to_thread(kannel.send_mo, "+32470000002", SENDER, "STOP")
    await until(lambda: len(receiver.of("/kannel/mo")) == 2, 30, "the second reply")
    assert receiver.of("/kannel/mo")[1].query["text"] == "STOP"
    assert kannel.messages == []  # smsbox answered nobody (max-messages = 0)


async def test_a_reply_waits_out_the_service_being_away() -> None:
    # The service's port, bound but not listening: smsbox's calls are refused, as with the service down.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    late: Receiver | None = None
    try:
        with KannelLab(base, MO_TOKEN) as lab:
            await asyncio.to_thread(lab.send_mo, "+32470000001", SENDER, "1")
            assert lab.run_dir is not None
            smsbox_log = lab.run_dir / "log" / "smsbox.log"
            failed = f"Couldn't fetch <{base}/kannel/mo"
            await until(lambda: smsbox_log.read_text(errors="replace").count(failed) >= 2, 30,
                        "smsbox to find the service away twice")
            late = Receiver(sock)
            await until(lambda: late is not None and late.of("/kannel/mo"), 30, "the retried reply")
            assert late.of("/kannel/mo")[0].query["text"] == "1"
    finally:
        if late is not None:
            late.close()
        sock.close()


async def test_kannel_away_is_a_passing_failure(receiver: Receiver) -> None:
    lab = KannelLab(receiver.base, MO_TOKEN).start()
    gateway = lab.gateway(dlr_signer(KEY), timeout=5)
    lab.stop()
    lab.stop()  # a second stop does nothing
    with pytest.raises(SendFailed, match="smsbox 127.0.0.1"):
        await gateway.send(SmsCopy(copy_id="copy-1", to="+32470000001", sender=SENDER, text="Hallo"))


async def test_a_refused_account_is_a_passing_failure(kannel: KannelLab) -> None:
    # A wrong sendsms password refuses every copy alike: the gateway's state, not this copy's.
    gateway = kannel.gateway(dlr_signer(KEY), password="not-the-password")
    with pytest.raises(SendFailed, match="403.*Authorization failed"):
        await gateway.send(SmsCopy(copy_id="copy-1", to="+32470000001", sender=SENDER, text="Hallo"))
    assert kannel.messages == []


async def test_no_answer_once_the_request_went_is_uncertain_and_the_sms_may_go(kannel: KannelLab) -> None:
    bearerbox = kannel._processes["bearerbox"]
    gateway = kannel.gateway(dlr_signer(KEY), timeout=2)
    # smsbox takes the request and hands it to bearerbox, which does not answer (yet): nor does smsbox.
    os.kill(bearerbox.pid, signal.SIGSTOP)
    try:
        with pytest.raises(SendUncertain, match="no answer after the request was sent"):
            await gateway.send(SmsCopy(copy_id="copy-1", to="+32470000001", sender=SENDER, text="Hallo"))
    finally:
        os.kill(bearerbox.pid, signal.SIGCONT)
    # The SMS goes after all: sending it again at once would have sent two.
    (got,) = await asyncio.to_thread(kannel.wait_for, 1, 60)
    assert (got.receiver, got.text) == ("+32470000001", "Hallo")


def test_the_status_pages_need_their_password(kannel: KannelLab) -> None:
    base = f"http://127.0.0.1:{kannel.admin_port}"
    for page in ("store-status.txt", "status.txt", "store-status.xml"):
        for query in ("", "?password=wrong", f"?password={kannel.status_password[:-1]}"):
            status, shown = _get(f"{base}/{page}{query}")
            assert "Denied" in shown and len(shown) < 80, (page, query)
    status, shown = _get(f"{base}/store-status.txt?password={kannel.status_password}")
    assert status == 200 and "Denied" not in shown
    assert _get(f"{base}/status.txt?password={kannel.status_password}")[1].startswith("Kannel bearerbox version")
    # The status password reads; it does not command.
    assert "Denied" in _get(f"{base}/shutdown?password={kannel.status_password}")[1]
    assert kannel.running


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie nobody reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def test_a_killed_interpreter_leaves_no_kannel_behind(receiver: Receiver) -> None:
    # Started from a thread that has ended by then (as asyncio.to_thread does), in an interpreter that
    # is then killed outright (as a pytest-xdist worker may be): its atexit never runs.
    script = (
        "import sys, threading, time\n"
        "from ivr.lab.kannel import KannelLab\n"
        f"lab = KannelLab({receiver.base!r}, {MO_TOKEN!r})\n"
        "starter = threading.Thread(target=lab.start)\n"
        "starter.start(); starter.join()\n"
        "assert lab.status()\n"
        "print(' '.join(str(p.pid) for p in lab._processes.values()), flush=True)\n"
        "time.sleep(600)\n"
    )
    python = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.PIPE,
                                                  cwd=Path(__file__).parents[2])
    try:
        assert python.stdout is not None
        line = await asyncio.wait_for(python.stdout.readline(), 90)
        pids = [int(pid) for pid in line.split()]
        assert len(pids) == 3 and not any(_gone(pid) for pid in pids)  # the starting thread's end ended nothing
    finally:
        python.kill()
        await python.wait()
    await until(lambda: all(_gone(pid) for pid in pids), 60, "bearerbox, smsbox and fakesmsc to end")


def test_the_lab_leaves_no_process_behind(receiver: Receiver) -> None:
    lab = KannelLab(receiver.base, MO_TOKEN)
    with pytest.raises(RuntimeError, match="boom"), lab:
        pids = [process.pid for process in lab._processes.values()]
        assert len(pids) == 3 and lab.running
        raise RuntimeError("boom")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not lab.running and lab.run_dir is None


# -- the production configuration, read by the real Kannel ----------------------------------------------------
def _free_ports(count: int) -> list[int]:
    held = [socket.socket() for _ in range(count)]
    try:
        for sock in held:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def _get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_the_production_configuration_is_read_by_the_real_bearerbox(tmp_path: Path, receiver: Receiver) -> None:
    admin, smsbox_port, sendsms_port, smpp = _free_ports(4)  # nothing listens on smpp: the operator is away
    settings = replace(load_settings(environ={"BINFOON_CONFIG": os.devnull, "BINFOON_DATA_DIR": str(tmp_path)}),
                       smpp_host="127.0.0.1", smpp_port=smpp, smpp_system_id="binfoon01",
                       sms_sendsms_url=f"http://127.0.0.1:{sendsms_port}/cgi-bin/sendsms")
    # Quotes, backslashes, '#', '=' and spaces: the sendsms answer proves Kannel read it back exactly.
    password = f'p"a\\ss #=; w{secrets.token_hex(4)}\\'
    admin_password, status_password = secrets.token_hex(8), secrets.token_hex(8)
    (tmp_path / "spool" / "dlr").mkdir(parents=True)
    (tmp_path / "log").mkdir()
    conf = tmp_path / "kannel.conf"
    conf.write_text(kannel_config(settings, password, 'pw"with\\odd=chars', int(receiver.base.rsplit(":", 1)[1]),
                                  MO_TOKEN, admin_password=admin_password, status_password=status_password,
                                  spool_dir=tmp_path / "spool",
                                  log_dir=tmp_path / "log", admin_port=admin, smsbox_port=smsbox_port))
    boxes: list[subprocess.Popen[bytes]] = []
    status_url = f"http://127.0.0.1:{admin}/status.txt?password={status_password}"

    def wait(ready: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + 60
        while not ready(status := _get(status_url)[1]):
            logs = "\n".join(path.read_text() for path in sorted((tmp_path / "log").glob("*.out")))
            assert all(box.poll() is None for box in boxes), logs
            assert time.monotonic() < deadline, f"{status}\n{logs}"
            time.sleep(0.1)
        return status

    def start(box: Path) -> None:
        with (tmp_path / "log" / f"{box.name}.out").open("wb") as out:
            boxes.append(subprocess.Popen([str(box), "-v", "2", str(conf)], cwd=tmp_path, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start(BEARERBOX)
        wait(lambda status: "operator[operator]" in status)
        start(SMSBOX)  # after bearerbox listens, as Debian's init script does: smsbox does not wait for it
        status = wait(lambda status: "on-line" in status.partition("Box connections:")[2])
        assert f"SMPP:127.0.0.1:{smpp}/{smpp}:binfoon01:" in status  # one transceiver bind, the account's
        assert "(online" not in status.partition("SMSC connections:")[2]
        def sendsms(password: str) -> tuple[int, str]:
            query = urllib.parse.urlencode({"username": "binfoon", "password": password, "from": SENDER,
                                            "to": "+32470000001", "text": "Hallo", "charset": "UTF-8"})
            return _get(f"http://127.0.0.1:{sendsms_port}/cgi-bin/sendsms?{query}")

        # The operator's link is down: smsbox takes the SMS and bearerbox keeps it (its store) for later.
        assert sendsms(password) == (202, "3: Queued for later delivery")
        assert (tmp_path / "spool" / "binfoon.store").exists()
        assert sendsms(password[:-1])[0] == 403
        # The queue's numbers and texts are for the status password only.
        assert _get(f"http://127.0.0.1:{admin}/store-status.txt")[1].strip() == "Denied"
        assert "+32470000001" in _get(f"http://127.0.0.1:{admin}/store-status.txt?password={status_password}")[1]
    finally:
        for box in reversed(boxes):
            if box.poll() is None:
                os.killpg(box.pid, signal.SIGTERM)
                try:
                    box.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(box.pid, signal.SIGKILL)
                    box.wait(timeout=10)
