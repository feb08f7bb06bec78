"""The AMI gateway against a scripted AMI server: panoramisk's traps stay closed.

A real Asterisk cannot be made to drop the link at an exact protocol step; this server can.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ivr.asterisk.instance import AmiCredentials
from ivr.telephony.ami import AmiGateway, AmiUnavailable, OriginateOutcomeUnknown, OriginateRefused


class ScriptedAmi:
    """A minimal AMI server: logs in anyone with the right secret and records every action."""

    def __init__(self, on_action: Callable[["ScriptedAmi", dict[str, str], asyncio.StreamWriter], None]) -> None:
        self.on_action = on_action
        self.actions: list[dict[str, str]] = []
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    @staticmethod
    def send(writer: asyncio.StreamWriter, **headers: str) -> None:
        writer.write(("".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line)
                self.actions.append(action)
                if action["Action"] == "Login":
                    ok = action.get("Secret") == "s3cret"
                    self.send(writer, Response="Success" if ok else "Error", ActionID=action["ActionID"],
                              Message="Authentication accepted" if ok else "Authentication failed")
                    if ok:
                        self.send(writer, Event="FullyBooted", Privilege="system,all", Status="Fully Booted")
                    continue
                self.on_action(self, action, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


def _gateway(port: int, secret: str = "s3cret") -> AmiGateway:
    return AmiGateway(AmiCredentials("127.0.0.1", port, "binfoon", secret),
                      ping_interval_s=0.2, ping_timeout_s=0.2, reconnect_s=0.1, login_timeout_s=1.0)


def _originates(ami: ScriptedAmi) -> list[dict[str, str]]:
    return [a for a in ami.actions if a["Action"] == "Originate"]


async def test_originate_lost_with_the_link_is_never_resent() -> None:
    def drop_on_originate(ami: ScriptedAmi, action: dict[str, str], writer: asyncio.StreamWriter) -> None:
        if action["Action"] == "Originate" and ami.connections == 1:
            writer.close()  # Asterisk got it; the link breaks before any reply
        elif action["Action"] == "Ping":
            ami.send(writer, Response="Success", ActionID=action["ActionID"], Ping="Pong")

    ami = ScriptedAmi(drop_on_originate)
    await ami.start()
    gateway = _gateway(ami.port)
    await gateway.connect()
    with pytest.raises(OriginateOutcomeUnknown):
        await gateway.originate("attempt-1", "Local/1@sim-phone", context="binfoon-member")
    await gateway.wait_connected(5)
    await asyncio.sleep(0.5)  # panoramisk sends its awaiting actions on FullyBooted: there must be none
    assert gateway.logins == 2
    assert len(_originates(ami)) == 1
    sent = _originates(ami)[0]
    assert sent["ChannelId"] == sent["ActionID"] == "attempt-1" and sent["Async"] == "true"
    await gateway.close()
    await ami.stop()


async def test_originate_outcome_and_late_hangup_cause() -> None:
    def busy(ami: ScriptedAmi, action: dict[str, str], writer: asyncio.StreamWriter) -> None:
        if action["Action"] == "Originate":
            ami.send(writer, Response="Success", ActionID=action["ActionID"], Message="Originate successfully queued")
            ami.send(writer, Event="OriginateResponse", ActionID=action["ActionID"], Response="Failure",
                     Channel=action["Channel"], Reason="0", Uniqueid=action["ChannelId"])
            ami.send(writer, Event="Hangup", Uniqueid=action["ChannelId"], Channel="PJSIP/trunk-01", Cause="17",
                     **{"Cause-txt": "User busy"})

    ami = ScriptedAmi(busy)
    await ami.start()
    gateway = _gateway(ami.port)
    await gateway.connect()
    result = await gateway.originate("attempt-2", "PJSIP/+3291234567@trunk", context="binfoon-member")
    assert (result.success, result.reason, result.cause) == (False, 0, 17)
    await gateway.close()
    await ami.stop()


async def test_half_open_link_is_aborted_and_reopened() -> None:
    def silent(ami: ScriptedAmi, action: dict[str, str], writer: asyncio.StreamWriter) -> None:
        if action["Action"] == "Ping" and ami.connections > 1:
            ami.send(writer, Response="Success", ActionID=action["ActionID"], Ping="Pong")
        # first connection: pings go unanswered, as on a half-open link

    ami = ScriptedAmi(silent)
    await ami.start()
    gateway = _gateway(ami.port)
    await gateway.connect()
    for _ in range(100):
        if gateway.watchdog_aborts and gateway.logins >= 2:
            break
        await asyncio.sleep(0.05)
    assert gateway.watchdog_aborts == 1 and gateway.logins == 2 and ami.connections == 2
    await asyncio.sleep(1.0)  # now pings are answered: no further abort
    assert gateway.watchdog_aborts == 1
    await gateway.close()
    await ami.stop()


async def test_wrong_secret_is_a_clear_error_and_nothing_is_sent() -> None:
    ami = ScriptedAmi(lambda *a: None)
    await ami.start()
    gateway = _gateway(ami.port, secret="wrong")
    with pytest.raises(AmiUnavailable, match="no AMI login"):
        await gateway.connect(timeout_s=1.0)
    with pytest.raises(AmiUnavailable):
        await gateway.originate("attempt-3", "Local/1@x", context="c")
    assert not _originates(ami)
    await ami.stop()


async def test_an_originate_asterisk_refuses_raises_refused_and_lists_channels() -> None:
    def shutting_down(ami: ScriptedAmi, action: dict[str, str], writer: asyncio.StreamWriter) -> None:
        if action["Action"] == "Originate":
            # What Asterisk answers every action while it stops gracefully (manager.c).
            ami.send(writer, Response="Error", ActionID=action["ActionID"], Message="Asterisk is shutting down")
        elif action["Action"] == "CoreShowChannels":
            ami.send(writer, Response="Success", ActionID=action["ActionID"], EventList="start",
                     Message="Channels will follow")
            for unique_id in ("attempt-7", "attempt-8-2"):
                ami.send(writer, Event="CoreShowChannel", ActionID=action["ActionID"], Uniqueid=unique_id,
                         Channel=f"Local/1@sim-phone-{unique_id}")
            ami.send(writer, Event="CoreShowChannelsComplete", ActionID=action["ActionID"], EventList="Complete",
                     ListItems="2")

    ami = ScriptedAmi(shutting_down)
    await ami.start()
    gateway = _gateway(ami.port)
    await gateway.connect()
    with pytest.raises(OriginateRefused, match="Asterisk is shutting down"):
        await gateway.originate("attempt-6", "Local/1@sim-phone", context="binfoon-member")
    assert await gateway.live_channel_ids() == {"attempt-7", "attempt-8-2"}
    await gateway.close()
    await ami.stop()
    with pytest.raises(AmiUnavailable):
        await gateway.live_channel_ids()
