"""The application's AMI user has only the rights it needs, on loopback only (RELIABILITY A1–A5)."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from ivr.lab.phone_lab import PhoneLab

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
