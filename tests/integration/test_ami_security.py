"""The application's AMI user has only the rights it needs, on loopback only (RELIABILITY A1–A5), and
never sees the keys a caller types (issue 14 item 10, RELIABILITY A12)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from ivr.asterisk.instance import AmiCredentials
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.phones import PhoneScript
from ivr.telephony.agi import AgiCall
from tests.integration.conftest import add_test_ami_user, eventually

pytestmark = pytest.mark.integration


def _refused(response: dict[str, str]) -> bool:
    return response.get("Response") == "Error"


async def test_command_is_refused(lab: PhoneLab) -> None:
    response = await lab.ami.action({"Action": "Command", "Command": "core show version"})
    assert _refused(response) and "Permission denied" in response.get("Message", "")


@pytest.mark.parametrize("action", ["GetConfig", "GetConfigJSON", "UpdateConfig", "CreateConfig"])
async def test_config_actions_are_refused(lab: PhoneLab, action: str) -> None:
    headers = {"Action": action, "Filename": "manager.conf"}
    if action == "UpdateConfig":
        headers.update({"SrcFilename": "manager.conf", "DstFilename": "manager.conf", "Action-000000": "Append",
                        "Cat-000000": "binfoon", "Var-000000": "write", "Value-000000": "all"})
    response = await lab.ami.action(headers)
    assert _refused(response) and "Permission denied" in response.get("Message", "")


async def test_originate_to_system_is_refused(lab: PhoneLab) -> None:
    marker = lab.asterisk.runtime.host_path("/tmp/binfoon-pwned")
    marker.unlink(missing_ok=True)
    for app, data in (("System", "touch /tmp/binfoon-pwned"), ("Exec", "System(touch /tmp/binfoon-pwned)")):
        response = await lab.ami.action({
            "Action": "Originate", "Channel": "Local/+3299000001@sim-phone", "Application": app,
            "Data": data, "Async": "true",
        })
        assert _refused(response), (app, response)
    assert not marker.exists()


async def test_shell_function_is_refused(lab: PhoneLab) -> None:
    response = await lab.ami.action({"Action": "GetVar", "Variable": "SHELL(echo pwned)"})
    assert response.get("Value", "") in ("", "(null)") and "pwned" not in str(response)
    # Two guards stand behind that empty answer: the running Asterisk has no SHELL() at all, and it
    # was told never to run dangerous functions from AMI even if a module brought one in.
    check = await lab.ami.action({"Action": "ModuleCheck", "Module": "func_shell"})
    assert check.get("Response") == "Error", check
    conf = (lab.asterisk.run_dir / "etc" / "asterisk.conf").read_text()
    assert re.search(r"^\s*live_dangerously\s*=\s*no\s*$", conf, re.MULTILINE), conf


async def test_wrong_secret_is_refused(lab: PhoneLab) -> None:
    creds = lab.asterisk.ami
    with socket.create_connection((creds.host, creds.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(f"Action: Login\r\nUsername: {creds.username}\r\nSecret: wrong\r\n\r\n".encode())
        block = []
        while (line := reader.readline().strip()):
            block.append(line.decode())
    assert "Response: Error" in block


def _listening(port: int) -> list[str]:
    """Local addresses (hex, from /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(address)
    return found


def _non_loopback_address() -> str | None:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    return next((a for a in out if not a.startswith("127.") and ":" not in a), None)


async def test_ami_listens_on_loopback_only(lab: PhoneLab) -> None:
    port = lab.asterisk.ami.port
    assert _listening(port) == ["0100007F"]  # 127.0.0.1, nothing else
    other = _non_loopback_address()
    if other is not None:  # a machine with a network address: it must be refused there
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=2).close()


async def test_asterisk_runs_unprivileged_and_secret_is_private(lab: PhoneLab) -> None:
    pid = lab.asterisk.pid
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert all(int(u) != 0 for u in uids), uids
    secret_file = lab.asterisk.run_dir / "ami.secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = lab.asterisk.ami.secret
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    # The secret is not in the project's files.
    project = Path(__file__).resolve().parents[2]
    tracked = subprocess.run(["git", "-C", str(project), "grep", "-l", secret], capture_output=True, text=True)
    assert tracked.stdout == ""
    # Asterisk cannot rewrite its own configuration.
    manager_conf = lab.asterisk.run_dir / "etc" / "manager.conf"
    assert manager_conf.stat().st_uid == 0 and not (manager_conf.stat().st_mode & stat.S_IWGRP)
    assert os.access(manager_conf, os.R_OK)


class RawAmiSession:
    """An AMI session read as Asterisk writes it: every event's headers, none parsed or dropped by us."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.events: list[dict[str, str]] = []
        self._pump = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def login(cls, creds: AmiCredentials) -> RawAmiSession:
        reader, writer = await asyncio.open_connection(creds.host, creds.port)
        await reader.readline()  # the banner
        writer.write(f"Action: Login\r\nUsername: {creds.username}\r\nSecret: {creds.secret}\r\n"
                     "Events: on\r\n\r\n".encode())
        session = cls(reader, writer)
        logged_in = await eventually(lambda: session.events, lambda b: any("Response" in x for x in b), 5)
        assert any(x.get("Response") == "Success" for x in logged_in), logged_in
        return session

    async def _read(self) -> None:
        block: dict[str, str] = {}
        while line := await self.reader.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            if text:
                name, _, value = text.partition(":")
                block[name.strip()] = value.strip()
            elif block:
                self.events.append(block)
                block = {}

    def named(self, *names: str) -> list[dict[str, str]]:
        """The events of these names received so far."""
        return [e for e in self.events if e.get("Event") in names]

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        self.writer.close()


async def test_the_application_user_never_sees_the_keys_a_caller_types(lab: PhoneLab) -> None:
    """A caller types a PIN: the tests' own AMI user sees every key (so keys did travel as DTMF), the
    application's user sees no DTMFBegin/DTMFEnd, no VarSet and no digit of it (A12)."""
    pin = "482915"
    typed: asyncio.Queue[str] = asyncio.Queue()

    async def read_pin(call: AgiCall) -> None:
        # Read() as a PIN prompt does: the digits land in a channel variable (a VarSet Asterisk emits).
        await call.exec("Read", "PIN,,8,,1,10")
        await typed.put(await call.get_variable("PIN") or "")

    lab.app.add_route("member_call", read_pin)
    application = await RawAmiSession.login(lab.asterisk.ami)
    tests_user = await RawAmiSession.login(add_test_ami_user(lab))
    try:
        lab.network.script("+3291000042", PhoneScript.answers(keys=((3.0, pin + "#"),)))
        result = await lab.call("+3291000042")
        assert result.success
        assert await asyncio.wait_for(typed.get(), 20) == pin
        keys = await eventually(lambda: [e.get("Digit") for e in tests_user.named("DTMFEnd")
                                         if e.get("Uniqueid") == result.channel_id],
                                lambda seen: len(seen) >= len(pin) + 1, 10)
        assert keys[-len(pin) - 1:] == list(pin + "#"), keys
        # Both sessions were open for the whole call (the hang-up reached both).
        await eventually(lambda: application.named("Hangup"), bool, 10)
        assert application.named("Hangup"), "the application's session saw nothing of the call"
        assert application.named("DTMFBegin", "DTMFEnd", "VarSet") == []
        assert not [e for e in application.events if pin in str(e) or e.get("Digit")], application.events
        # Nor do Asterisk's own logs at our verbosity (messages, security, the console) hold the keys.
        logs = {p.name: p.read_text(errors="replace") for p in (lab.asterisk.run_dir / "log").glob("*.log")}
        assert "messages.log" in logs, sorted(logs)
        assert not [name for name, text in logs.items() if pin in text or "DTMF" in text], sorted(logs)
    finally:
        await application.close()
        await tests_user.close()
