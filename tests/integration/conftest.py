"""Helpers for conversations against the real Asterisk."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

from ivr.asterisk.instance import AmiCredentials
from ivr.asterisk.officers import asterisk_cli
from ivr.lab.phone_lab import PhoneLab
from ivr.telephony.agi import AgiCall
from ivr.telephony.ami import AmiGateway

pytestmark = pytest.mark.integration

T = TypeVar("T")


async def eventually(read: Callable[[], T], done: Callable[[T], object], timeout_s: float,
                     poll_s: float = 0.05) -> T:
    """``read()`` again until ``done`` holds for what it returns, or the deadline; the last value either
    way, for the caller to assert on. Facts that another socket or process delivers (AMI events, rows
    the app writes, Asterisk's files) can come a moment after the thing the test awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(poll_s)


async def until(predicate: Callable[[], object], timeout_s: float, what: str = "the condition",
                poll_s: float = 0.05) -> None:
    """Wait until ``predicate()`` holds; fail the test if it does not within ``timeout_s``."""
    if not await eventually(predicate, bool, timeout_s, poll_s):
        raise AssertionError(f"{what} not reached in {timeout_s} s")


@dataclass(frozen=True)
class KeyHeard:
    """What the app-side call flow saw: the channel's id, the AGI arguments and the key pressed."""

    unique_id: str
    args: list[str]
    digit: str | None


def listen_for_key(lab: PhoneLab, prompt: str | None = None, wait_s: float = 8.0) -> "asyncio.Queue[KeyHeard]":
    """Serve ``member_call`` with a tiny flow: play ``prompt`` (if any), then wait for one key."""
    heard: asyncio.Queue[KeyHeard] = asyncio.Queue()

    async def member_call(call: AgiCall) -> None:
        if prompt is not None:
            await call.play(prompt)
        digit = await call.wait_for_digit(wait_s)
        await heard.put(KeyHeard(call.unique_id, call.args, digit))

    lab.app.add_route("member_call", member_call)
    return heard


#: The tests' own AMI user: it may read DTMF, which the application's user may not (issue 14 item 10).
TEST_AMI_USER = "binfoon-test"


def add_test_ami_user(lab: PhoneLab) -> AmiCredentials:
    """Give the lab's Asterisk an AMI user for tests that watch keys (``dtmf`` read right), in the file
    ``manager.conf`` includes only if it exists (``etc/tests/``: root's, never written in production),
    and reload the manager. Returns its credentials."""
    instance = lab.asterisk
    folder = instance.run_dir / "etc" / "tests"
    folder.mkdir(mode=0o750, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    path = folder / "manager-tests.conf"
    path.write_text("\n".join([
        f"[{TEST_AMI_USER}]", f"secret = {secret}", "deny = 0.0.0.0/0.0.0.0", "permit = 127.0.0.1/255.255.255.255",
        "read = call,dtmf,user", ""]))
    os.chmod(path, 0o640)
    if os.geteuid() == 0:  # as the instance's own files: root's, readable by Asterisk's group
        gid = instance.runtime.asterisk_user()[1]
        os.chown(folder, 0, gid)
        os.chown(path, 0, gid)
    asterisk_cli(instance.run_dir, "manager reload")
    return AmiCredentials(instance.ami.host, instance.ami.port, TEST_AMI_USER, secret)


@pytest.fixture
async def dtmf_ami(lab: PhoneLab) -> AsyncIterator[AmiGateway]:
    """An AMI session as the tests' own user (it sees DTMF events; the application's user does not)."""
    gateway = AmiGateway(add_test_ami_user(lab))
    await gateway.connect()
    try:
        yield gateway
    finally:
        await gateway.close()
