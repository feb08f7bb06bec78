"""Officers' own SIP accounts against the real Asterisk and a real softphone (Debian's baresip).

The softphone registers with the officer's credentials on BINfoon's SIP port (loopback), calls the
police line and types the PIN as RFC 4733 DTMF; the flow recognises the officer by the account, not by
any caller ID, and still asks the PIN. A wrong password gets a 401 and never reaches the dialplan.
An account stored while the service is down reaches Asterisk when the service starts; it is rotated
and removed with the real ``binfoon person sip-account`` command, which makes the running Asterisk
reload its PJSIP configuration at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ivr.asterisk.officers import asterisk_cli
from ivr.cli import main
from ivr.directory.sip_accounts import add_sip_account
from ivr.lab.phone_lab import PhoneLab
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import AuditEntry, Message, PinAttempt
from tests.integration.binfoon import Binfoon, start_binfoon
from tests.integration.conftest import until
from tests.world import OFFICER_PHONE, OFFICER_PIN, build_world

pytestmark = pytest.mark.integration

BARESIP = "/usr/bin/baresip"
MODULES = Path("/usr/lib/baresip/modules")


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _silence(path: Path, seconds: int) -> Path:
    """8 kHz mono silence: the softphone's microphone (it sends DTMF only while its source runs)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 8000 * seconds)
    return path


@dataclass
class Softphone:
    """baresip, headless, with one account; driven over its ``ctrl_tcp`` module (netstring JSON)."""

    work_dir: Path
    username: str
    password: str
    sip_port: int
    events: list[dict[str, Any]] = field(default_factory=list)
    _process: subprocess.Popen[bytes] | None = None
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _pump: asyncio.Task[None] | None = None
    _responses: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    @property
    def registrar(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    async def start(self) -> Softphone:
        """Start baresip, connect to its control port and add the account (which registers at once)."""
        if not Path(BARESIP).exists():
            pytest.fail("baresip is missing: `make test` installs it (Makefile DEB_PACKAGES)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        control = _free_tcp_port()
        source = _silence(self.work_dir / "silence.wav", 120)
        (self.work_dir / "config").write_text("\n".join([
            f"module_path {MODULES}",
            "poll_method epoll",
            "sip_listen 127.0.0.1:0",
            "sip_transports udp",
            # Contact and SDP on loopback (the machine's other addresses are not the lab's).
            "net_interface 127.0.0.1",
            f"audio_source aufile,{source}",
            "audio_player aubridge,sink",
            "audio_alert aubridge,alert",
            "module g711.so",
            "module aufile.so",
            "module aubridge.so",
            "module_app account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{control}",
            "",
        ]))
        # No account at start: it is added over the control port, so that its registration's events are seen.
        (self.work_dir / "accounts").write_text("")
        (self.work_dir / "contacts").write_text("")
        self._process = await asyncio.to_thread(self._spawn)
        for _ in range(100):
            try:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", control)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"baresip's control port never opened:\n{self.log()}")
        self._pump = asyncio.get_running_loop().create_task(self._read())
        await self.command("uanew", f"<sip:{self.username}@{self.registrar};transport=udp>;"
                                    f"auth_pass={self.password};regint=600;audio_codecs=PCMA,PCMU")
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.work_dir / "baresip.log", "wb") as log:
            return subprocess.Popen([BARESIP, "-f", str(self.work_dir)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            size = await self._reader.readuntil(b":")
            body = await self._reader.readexactly(int(size[:-1]))
            await self._reader.readexactly(1)  # the netstring's ","
            message = json.loads(body)
            if message.get("response"):
                await self._responses.put(message)
            elif message.get("event"):
                self.events.append(message)

    async def command(self, name: str, params: str = "") -> dict[str, Any]:
        """Run one baresip command; its response."""
        assert self._writer is not None
        body = json.dumps({"command": name, "params": params, "token": name}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()
        return await asyncio.wait_for(self._responses.get(), 10)

    def saw(self, kind: str) -> list[dict[str, Any]]:
        """The events of this type so far (REGISTER_OK, REGISTER_FAIL, CALL_ESTABLISHED, CALL_CLOSED...)."""
        return [e for e in self.events if e.get("type") == kind]

    async def dial(self, number: str) -> None:
        """Call ``number`` at BINfoon's Asterisk."""
        await self.command("dial", f"sip:{number}@{self.registrar}")

    async def press(self, keys: str) -> None:
        """Type keys one at a time, with real gaps (RFC 4733 events)."""
        for key in keys:
            await self.command("sndcode", key)
            await asyncio.sleep(0.25)

    def log(self) -> str:
        path = self.work_dir / "baresip.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def stop(self) -> None:
        """End baresip by its PID (its ``quit`` waits for open transactions)."""
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self._process.wait, 3)
            except subprocess.TimeoutExpired:
                self._process.kill()
                await asyncio.to_thread(self._process.wait, 3)


def _invite_without_auth(sip_port: int, from_user: str, to: str) -> str:
    """Send a bare INVITE claiming ``From: from_user`` (no Authorization header) from loopback; the
    status line of Asterisk's final answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        request = "\r\n".join([
            f"INVITE sip:{to}@127.0.0.1:{sip_port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:{from_user}@127.0.0.1>;tag={uuid.uuid4().hex[:8]}",
            f"To: <sip:{to}@127.0.0.1>",
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1",
            "CSeq: 1 INVITE",
            f"Contact: <sip:{from_user}@127.0.0.1:{port}>",
            "Content-Length: 0", "", ""])
        sock.sendto(request.encode(), ("127.0.0.1", sip_port))
        while True:
            status = sock.recv(65536).decode(errors="replace").split("\r\n", 1)[0]
            if not status.startswith("SIP/2.0 1"):
                return status


def _cli(binfoon: Binfoon, lab: PhoneLab, *argv: str) -> int:
    """The real ``binfoon`` command line, on the test's database and the lab's running Asterisk."""
    instance = lab.asterisk
    return main([*argv, "--name", instance.options.name, "--instance-dir", str(instance.run_dir.parent)])


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_DATABASE_URL", f"sqlite:///{tmp_path / 'binfoon.db'}")


def _password_file(tmp_path: Path, name: str, password: str) -> str:
    path = tmp_path / name
    path.write_text(password + "\n")
    os.chmod(path, 0o600)
    return str(path)


def _audit(binfoon: Binfoon, action: str) -> list[AuditEntry]:
    with session_scope(binfoon.world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def _heard(binfoon: Binfoon) -> list[str]:
    """Observe (not change) which prompts the application asks for, to answer each when it is asked."""
    heard: list[str] = []
    voice = binfoon.app.voice
    prompt = voice.prompt

    async def observed(prompt_id: str, language: str, **values: object) -> str:
        heard.append(prompt_id)
        return await prompt(prompt_id, language, **values)

    voice.prompt = observed  # type: ignore[method-assign]
    return heard


async def test_an_officer_calls_from_a_softphone_and_is_known_by_the_account(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer, cli_env: None) -> None:
    right, wrong = "right-password-0123456789", "wrong-password-0123456789"
    # The account is stored while the service is down: the service gives it to Asterisk when it starts.
    world = build_world(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path / "var" / "recordings")
    officer = world.officer_id
    username = f"officer-{officer}"
    with session_scope(world.engine) as s:
        add_sip_account(s, officer, right, "test")
    assert f"Endpoint:  {username}" not in asterisk_cli(lab.asterisk.run_dir, "pjsip show endpoints")
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=world)
    phones: list[Softphone] = []
    try:
        endpoint = asterisk_cli(lab.asterisk.run_dir, f"pjsip show endpoint {username}")
        assert f"Endpoint:  {username}" in endpoint and "auth_username" in endpoint

        # A wrong password: 401, no registration, and its call never reaches the dialplan.
        intruder = await Softphone(tmp_path / "intruder", username, wrong, lab.asterisk.options.sip_port).start()
        phones.append(intruder)
        await until(lambda: intruder.saw("REGISTER_FAIL"), 10, "the wrong password refused")
        assert "401" in intruder.saw("REGISTER_FAIL")[0].get("param", ""), intruder.events
        assert not intruder.saw("REGISTER_OK")
        await intruder.dial(binfoon.lab.police_line)
        await until(lambda: intruder.saw("CALL_CLOSED"), 10, "the intruder's call refused")
        assert not intruder.saw("CALL_ESTABLISHED")
        assert f"{username}/sip:" not in asterisk_cli(lab.asterisk.run_dir, f"pjsip show aor {username}")
        # Claiming the account (or the officer's own number) in From without a digest: challenged, no more.
        for claimed in (username, OFFICER_PHONE):
            status = await asyncio.to_thread(_invite_without_auth, lab.asterisk.options.sip_port, claimed,
                                             lab.police_line)
            assert status.startswith("SIP/2.0 401"), status

        # The right password: registered, the call reaches the police line, the PIN is still asked.
        heard = _heard(binfoon)
        phone = await Softphone(tmp_path / "officer", username, right, lab.asterisk.options.sip_port).start()
        phones.append(phone)
        await until(lambda: phone.saw("REGISTER_OK"), 10, "the officer registered")
        aor = asterisk_cli(lab.asterisk.run_dir, f"pjsip show aor {username}")
        assert f"Contact:  {username}/sip:" in aor, aor
        await phone.dial(binfoon.lab.police_line)
        await until(lambda: phone.saw("CALL_ESTABLISHED"), 10, "the police line answered")
        await until(lambda: "police_enter_pin" in heard, 10, "the PIN asked")
        await phone.press(OFFICER_PIN + "#")
        await until(lambda: "police_enter_bin" in heard, 15, "the BIN asked (PIN accepted)")
        with session_scope(binfoon.world.engine) as s:
            attempts = [(a.caller_id, a.person_id, a.outcome.value) for a in s.scalars(select(PinAttempt))]
        # Known by the account (the softphone's own caller ID is nobody's number) and the PIN.
        assert attempts == [(f"sip:{username}", officer, "ok")]
        await phone.press(f"{binfoon.world.bin_number}#")
        await until(lambda: "police_bin_chosen" in heard, 10, "the BIN read back")
        await phone.press("1")
        await until(lambda: "police_choose_urgency" in heard, 10, "the urgency asked")
        await phone.press("1")

        def drafts() -> list[int]:
            with session_scope(binfoon.world.engine) as s:
                return [m.created_by_id for m in s.scalars(select(Message))]
        await until(drafts, 10, "the message created")
        assert drafts() == [officer]
        await phone.command("hangup")
        await until(lambda: phone.saw("CALL_CLOSED"), 10, "the call ended")

        # Only the police line: any other number from the account is refused, nothing is dialled.
        calls_before = len(phone.saw("CALL_CLOSED"))
        await phone.dial(binfoon.world.coordinators[0][1])
        await until(lambda: len(phone.saw("CALL_CLOSED")) > calls_before, 10, "the other number refused")
        assert len(phone.saw("CALL_ESTABLISHED")) == 1

        # Rotated with the command line: the old password stops working at once (the next REGISTER is refused).
        newer = "rotated-password-0123456789"
        assert _cli(binfoon, lab, "person", "sip-account", "rotate", str(officer),
                    "--password-file", _password_file(tmp_path, "sip2.secret", newer)) == 0
        await phone.command("uadel", f"sip:{username}@{phone.registrar}")
        stale = await Softphone(tmp_path / "stale", username, right, lab.asterisk.options.sip_port).start()
        phones.append(stale)
        await until(lambda: stale.saw("REGISTER_FAIL"), 10, "the old password refused after rotation")
        fresh = await Softphone(tmp_path / "fresh", username, newer, lab.asterisk.options.sip_port).start()
        phones.append(fresh)
        await until(lambda: fresh.saw("REGISTER_OK"), 10, "the new password registered")

        # Removed with the command line: the endpoint is gone from Asterisk.
        assert _cli(binfoon, lab, "person", "sip-account", "remove", str(officer)) == 0
        assert f"Endpoint:  {username}" not in asterisk_cli(lab.asterisk.run_dir, "pjsip show endpoints")
        gone = await Softphone(tmp_path / "gone", username, newer, lab.asterisk.options.sip_port).start()
        phones.append(gone)
        await until(lambda: gone.saw("REGISTER_FAIL"), 10, "a removed account refused")
        assert [e.subject for e in _audit(binfoon, "sip_account.removed")] == [f"person:{officer}"]
    finally:
        for softphone in phones:
            await softphone.stop()
        await binfoon.app.stop()

