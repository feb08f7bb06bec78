"""The AMI connection heals itself: Asterisk killed and restarted, or frozen (half-open link)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import PhoneScript
from ivr.telephony.ami import AmiUnavailable
from ivr.telephony.events import AmiEvent, FullyBooted
from tests.integration.conftest import listen_for_key, until

pytestmark = pytest.mark.integration


async def test_asterisk_killed_and_restarted_ami_returns_and_calls_work(lab: PhoneLab) -> None:
    heard = listen_for_key(lab)
    booted: list[AmiEvent] = []
    lab.ami.subscribe(lambda e: booted.append(e) if isinstance(e, FullyBooted) else None)
    lab.network.script("+3291000001", PhoneScript.answers(keys=((3.0, "1"),)))
    assert lab.ami.logins == 1

    await asyncio.to_thread(lab.asterisk.kill)
    await until(lambda: not lab.ami.connected, 10)
    with pytest.raises(AmiUnavailable):  # nothing is sent into the void while Asterisk is down
        await lab.call("+3291000001")

    await asyncio.to_thread(lab.asterisk.start)
    await lab.ami.wait_connected(20)
    assert lab.ami.logins == 2 and lab.ami.disconnects == 1
    await until(lambda: len(booted) >= 1, 5)

    result = await lab.call("+3291000001")
    assert result.success
    assert (await asyncio.wait_for(heard.get(), 10)).digit == "1"


async def test_half_open_connection_is_detected_and_reopened(lab: PhoneLab) -> None:
    pid = lab.asterisk.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the TCP link stays up, but nothing answers any more
    try:
        # Target A8: found and closed within 15 s.
        await until(lambda: lab.ami.watchdog_aborts >= 1, 15)
    finally:
        os.kill(pid, signal.SIGCONT)
    await lab.ami.wait_connected(20)
    assert lab.ami.logins >= 2
    listen_for_key(lab)
    lab.network.script("+3291000002", PhoneScript.silent())
    assert (await lab.call("+3291000002")).success


async def test_failing_event_subscriber_does_not_break_the_connection(
    lab: PhoneLab, caplog: pytest.LogCaptureFixture
) -> None:
    heard = listen_for_key(lab)
    seen: list[AmiEvent] = []

    def broken(event: AmiEvent) -> None:
        raise RuntimeError("a bug in some subscriber")

    async def broken_async(event: AmiEvent) -> None:
        raise RuntimeError("a bug in some async subscriber")

    lab.ami.subscribe(broken)
    lab.ami.subscribe(broken_async)
    lab.ami.subscribe(seen.append)
    lab.network.script("+3291000003", PhoneScript.answers(keys=((3.0, "1"),)))
    assert (await lab.call("+3291000003")).success
    assert (await asyncio.wait_for(heard.get(), 10)).digit == "1"
    await until(lambda: len(seen) > 0, 5)
    assert lab.ami.connected and lab.ami.disconnects == 0
    # The failures are not swallowed: both kinds are logged.
    await until(lambda: "a bug in some async subscriber" in caplog.text, 5)
    assert "a bug in some subscriber" in caplog.text
