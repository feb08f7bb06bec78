"""The FastAGI secret (issue 14 item 4): a request runs a flow only when its script starts with the
instance's secret, and an outbound call's flow only on the channel we originated for it."""

from __future__ import annotations

import asyncio
import logging
import secrets

import pytest

from ivr.delivery.member_call import MemberCallStart, member_call_start
from ivr.review.flow import review_call_start
from ivr.telephony.agi import AgiCall, AgiServer, is_originated_channel, route_of

SECRET = secrets.token_urlsafe(32)


def _env(script: str, unique_id: str = "u-1", *args: str) -> bytes:
    lines = ["agi_network: yes", f"agi_network_script: {script}", f"agi_request: agi://127.0.0.1:4573/{script}",
             "agi_channel: Local/1@x-1;1", f"agi_uniqueid: {unique_id}"]
    lines += [f"agi_arg_{i}: {arg}" for i, arg in enumerate(args, start=1)]
    return ("\n".join(lines) + "\n\n").encode()


async def _request(server: AgiServer, env: bytes) -> bytes:
    """Play Asterisk: send the environment, answer any command with a key press ('1'), and return
    everything the server sent before it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(env)
    sent = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line:
            break
        sent += line
        writer.write(b"200 result=49 endpos=100\n")
    writer.close()
    return sent


def test_route_of_takes_only_the_secret_prefix() -> None:
    assert route_of(f"{SECRET}/police_intake", SECRET) == "police_intake"
    assert route_of("police_intake", SECRET) is None
    assert route_of(f"{SECRET[:-1]}x/police_intake", SECRET) is None
    assert route_of(f"{SECRET}police_intake", SECRET) is None
    assert route_of(f"{SECRET}/", SECRET) is None
    assert route_of(f"/{SECRET}/police_intake", SECRET) is None
    assert route_of(f"x{SECRET}/police_intake", SECRET) is None
    assert route_of("", SECRET) is None
    assert route_of("é/police_intake", SECRET) is None  # not ASCII: refused, never an exception


async def test_a_secret_too_short_or_not_url_safe_is_refused() -> None:
    server = AgiServer(port=0)
    for bad in ("", "short", "a/b" * 20, "x" * 31, "x" * 40 + " "):
        with pytest.raises(ValueError, match="FastAGI secret"):
            server.require_secret(bad)


async def test_a_request_without_the_secret_runs_no_flow(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    async def flow(call: AgiCall) -> None:
        ran.append(call.channel)
        await call.answer()

    server = AgiServer(port=0)
    server.add_route("police_intake", flow)
    server.require_secret(SECRET)
    await server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ivr.telephony.agi"):
            for script in ("police_intake", "wrong-secret-0123456789012345678901234567890/police_intake",
                           f"{SECRET[:-2]}/police_intake", "/police_intake"):
                assert await _request(server, _env(script)) == b""
    finally:
        await server.stop()
    assert ran == []
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 4 and all(r.levelno == logging.WARNING for r in refusals)
    assert SECRET not in caplog.text


async def test_with_the_secret_the_flow_sees_only_its_route(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict[str, str]] = []

    async def flow(call: AgiCall) -> None:
        seen.append(dict(call.headers))
        await call.answer()

    server = AgiServer(port=0)
    server.add_route("police_intake", flow)
    server.require_secret(SECRET)
    await server.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="ivr.telephony.agi"):
            assert await _request(server, _env(f"{SECRET}/police_intake")) == b"ANSWER\n"
            # A right secret with a route nobody serves: refused too, and the log names the route only.
            assert await _request(server, _env(f"{SECRET}/no_such_route")) == b""
    finally:
        await server.stop()
    [headers] = seen
    assert headers["agi_network_script"] == "police_intake"
    assert headers["agi_request"] == "agi://127.0.0.1:4573/police_intake"
    assert SECRET not in "".join(headers.values())
    assert "no_such_route" in caplog.text and SECRET not in caplog.text


async def test_a_server_that_knows_a_secret_keeps_it() -> None:
    server = AgiServer(port=0)
    server.require_secret(SECRET)
    server.require_secret(SECRET)  # the same one again (lab and application both set it): fine
    with pytest.raises(ValueError, match="another FastAGI secret"):
        server.require_secret(secrets.token_urlsafe(32))


def test_only_the_originated_channel_is_ours() -> None:
    assert is_originated_channel("3f2a-attempt", "3f2a-attempt")
    assert not is_originated_channel("3f2a-attempt-2", "3f2a-attempt")  # the ;2 half of a Local channel
    assert not is_originated_channel("1733490000.17", "3f2a-attempt")
    assert not is_originated_channel("", "")


def test_the_member_call_starts_only_on_its_attempts_channel() -> None:
    assert member_call_start(["a-1", "HUMAN"], "a-1") == MemberCallStart("a-1", "HUMAN")
    assert member_call_start(["a-1"], "a-1") == MemberCallStart("a-1", "")
    assert member_call_start(["a-1", "HUMAN"], "b-2") is None
    assert member_call_start(["a-1", "HUMAN"], "a-1-2") is None
    assert member_call_start([], "a-1") is None  # no attempt named: nothing to act on


def test_the_review_call_starts_only_on_its_own_channel() -> None:
    assert review_call_start(["r-1"], "r-1") == "r-1"
    assert review_call_start(["r-1"], "1733490000.17") is None
    assert review_call_start([], "r-1") is None
