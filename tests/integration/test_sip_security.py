"""Failed SIP authentications reach the service as security events, and repeated ones ban their address
(RELIABILITY A10), against the real Asterisk: an officer's SIP account is attacked from a second loopback
address (127.0.0.2) with real digest REGISTERs and INVITEs, while the same account keeps working from
127.0.0.1 (the lab carrier's loopback, which is never banned).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import socket
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.asterisk.bans import bans_path, read_bans
from ivr.directory.sip_accounts import add_sip_account
from ivr.lab.phone_lab import PhoneLab
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import AuditEntry
from tests.integration.binfoon import Binfoon, start_binfoon
from tests.integration.conftest import eventually, until
from tests.world import World, build_world

pytestmark = pytest.mark.integration

RIGHT, WRONG = "right-password-0123456789", "wrong-password-0123456789"
ATTACKER = "127.0.0.2"
UNAUTHORIZED, OK, FORBIDDEN = "SIP/2.0 401 Unauthorized", "SIP/2.0 200 OK", "SIP/2.0 403 Forbidden"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sip_request(source: str, server_port: int, method: str, username: str, password: str | None,
                to: str | None = None) -> list[str]:
    """A SIP client in a few lines: ``method`` (REGISTER or INVITE) from ``source`` (any loopback address)
    to Asterisk on 127.0.0.1, as ``username``, answering a digest challenge (RFC 2617, MD5, qop=auth) once
    with ``password`` (``None``: never). Returns each final status line it got."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        call_id, tag, target = f"{uuid.uuid4().hex}@{source}", uuid.uuid4().hex[:8], to or username
        uri = f"sip:127.0.0.1:{server_port}" if method == "REGISTER" else f"sip:{target}@127.0.0.1:{server_port}"
        finals: list[str] = []
        authorization: list[str] = []
        for cseq in (1, 2):
            request = [
                f"{method} {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-{uuid.uuid4().hex};rport",
                "Max-Forwards: 70",
                f"From: <sip:{username}@127.0.0.1>;tag={tag}",
                f"To: <sip:{target}@127.0.0.1>",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} {method}",
                f"Contact: <sip:{username}@{source}:{port}>",
                *(["Expires: 60"] if method == "REGISTER" else []),
                *authorization,
                "Content-Length: 0", "", ""]
            sock.sendto("\r\n".join(request).encode(), ("127.0.0.1", server_port))
            while (reply := sock.recv(65536).decode(errors="replace")).startswith("SIP/2.0 1"):
                pass  # provisional answers (100 Trying)
            finals.append(reply.split("\r\n", 1)[0])
            challenge = re.search(r"^WWW-Authenticate: Digest (.*)$", reply, re.MULTILINE | re.IGNORECASE)
            if password is None or challenge is None or not finals[-1].startswith("SIP/2.0 401"):
                break
            fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.group(1)))
            cnonce = uuid.uuid4().hex[:16]
            ha1, ha2 = _md5(f"{username}:{fields['realm']}:{password}"), _md5(f"{method}:{uri}")
            response = _md5(f"{ha1}:{fields['nonce']}:00000001:{cnonce}:auth:{ha2}")
            opaque = f', opaque="{fields["opaque"]}"' if "opaque" in fields else ""
            authorization = [(f'Authorization: Digest username="{username}", realm="{fields["realm"]}", '
                              f'nonce="{fields["nonce"]}", uri="{uri}", response="{response}", algorithm=MD5, '
                              f'qop=auth, nc=00000001, cnonce="{cnonce}"{opaque}')]
        return finals


async def _register(lab: PhoneLab, source: str, username: str, password: str) -> list[str]:
    return await asyncio.to_thread(sip_request, source, lab.asterisk.options.sip_port, "REGISTER", username,
                                   password)


def _officer_account(tmp_path: Path) -> tuple[World, str]:
    world = build_world(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path / "var" / "recordings")
    with session_scope(world.engine) as s:
        add_sip_account(s, world.officer_id, RIGHT, "test")
    return world, f"officer-{world.officer_id}"


def _alerts(binfoon: Binfoon) -> list[AuditEntry]:
    with session_scope(binfoon.world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == "security.alert")))


async def test_wrong_passwords_ban_the_address_and_only_it(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer, caplog: pytest.LogCaptureFixture) -> None:
    world, username = _officer_account(tmp_path)
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=world, sip_ban_max_failures=3,
                                  sip_ban_window_s=60.0, sip_ban_s=3600.0)
    guard = binfoon.app.sip_guard
    assert guard is not None
    caplog.set_level(logging.WARNING, logger="ivr.telephony.security")
    try:
        # One wrong password: refused, and exactly one failure reaches the monitor, parsed.
        assert await _register(lab, ATTACKER, username, WRONG) == [UNAUTHORIZED, UNAUTHORIZED]
        seen = await eventually(lambda: list(guard.seen), bool, 10)
        assert [(e.kind, e.account, e.address, e.transport) for e in seen] == [
            ("ChallengeResponseFailed", username, ATTACKER, "UDP")]
        # Below the limit the right password still works from there.
        assert await _register(lab, ATTACKER, username, RIGHT) == [UNAUTHORIZED, OK]

        # Two more: a wrong INVITE to the police line, a wrong REGISTER (3 failures within the window).
        invite = await asyncio.to_thread(sip_request, ATTACKER, lab.asterisk.options.sip_port, "INVITE", username,
                                         WRONG, lab.police_line)
        assert invite == [UNAUTHORIZED, UNAUTHORIZED]
        assert await _register(lab, ATTACKER, username, WRONG) == [UNAUTHORIZED, UNAUTHORIZED]
        third = time.monotonic()
        # Banned within 60 s (the alert is written once Asterisk has the ban): then even the right
        # password is refused (403), before any challenge.
        await until(lambda: _alerts(binfoon), 60, "the ban of 127.0.0.2")
        print(f"\nSIP ban in force {time.monotonic() - third:.2f} s after the third failure")
        assert await _register(lab, ATTACKER, username, RIGHT) == [FORBIDDEN]
        assert len(guard.seen) == 3, list(guard.seen)  # one event per failure, none for the 403s
        # The same account from another address still works.
        assert await _register(lab, "127.0.0.1", username, RIGHT) == [UNAUTHORIZED, OK]

        # One alert for the admins and one WARNING line, naming the address, never a password.
        [alert] = _alerts(binfoon)
        assert alert.subject == f"sip:{ATTACKER}" and alert.details["kind"] == "sip_ban", alert.details
        assert alert.details["failures"] == 3 and alert.details["accounts"] == [username]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len([w for w in warnings if ATTACKER in w and "banned" in w]) == 1, warnings
        assert not [w for w in warnings if WRONG in w or RIGHT in w]

        # Loopback, where the lab's carrier sends from, is never banned, however many failures it has.
        for _ in range(4):
            assert await _register(lab, "127.0.0.1", username, WRONG) == [UNAUTHORIZED, UNAUTHORIZED]
        await until(lambda: len(guard.seen) == 7, 10, "the loopback failures seen")
        assert set(guard.bans) == {ATTACKER}
        assert await _register(lab, "127.0.0.1", username, RIGHT) == [UNAUTHORIZED, OK]

        # The ban survives a restart of the service: the ban file is its state.
        await binfoon.app.stop()
        binfoon = await start_binfoon(lab, tmp_path, renderer, world=world, sip_ban_max_failures=3)
        assert binfoon.app.sip_guard is not None and set(binfoon.app.sip_guard.bans) == {ATTACKER}
        assert await _register(lab, ATTACKER, username, RIGHT) == [FORBIDDEN]
    finally:
        await binfoon.app.stop()


async def test_a_ban_expires(lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    world, username = _officer_account(tmp_path)
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=world, sip_ban_max_failures=2, sip_ban_s=3.0)
    guard = binfoon.app.sip_guard
    assert guard is not None
    try:
        for _ in range(2):
            assert await _register(lab, ATTACKER, username, WRONG) == [UNAUTHORIZED, UNAUTHORIZED]
        await until(lambda: _alerts(binfoon), 10, "the ban")  # written once Asterisk has it
        assert ATTACKER in read_bans(lab.asterisk.run_dir)
        assert await _register(lab, ATTACKER, username, RIGHT) == [FORBIDDEN]
        # After its time the ban is lifted from the file and from Asterisk: the right password works again.
        await until(lambda: ATTACKER not in read_bans(lab.asterisk.run_dir), 15, "the ban lifted")
        assert "deny" not in bans_path(lab.asterisk.run_dir).read_text()
        assert await _register(lab, ATTACKER, username, RIGHT) == [UNAUTHORIZED, OK]
        assert len(_alerts(binfoon)) == 1
    finally:
        await binfoon.app.stop()
