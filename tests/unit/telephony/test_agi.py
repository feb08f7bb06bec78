"""The FastAGI server against a scripted Asterisk on a socket: robust where panoramisk is not."""

from __future__ import annotations

import asyncio

import pytest

from ivr.telephony.agi import AgiCall, AgiError, AgiServer, CallHungUp

ENV = b"agi_network: yes\nagi_network_script: flow\nagi_channel: Local/1@x-1;2\nagi_uniqueid: u-1\nagi_arg_1: a1\n\n"


async def _server(route) -> AgiServer:  # type: ignore[no-untyped-def]
    server = AgiServer(port=0)
    server.add_route("flow", route)
    await server.start()
    return server


async def _asterisk(server: AgiServer, answers: list[bytes], env: bytes = ENV) -> list[str]:
    """Play Asterisk: send the environment, answer each command from ``answers``; returns commands."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(env)
    commands = []
    for answer in answers:
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line:
            break
        commands.append(line.decode().strip())
        if answer:
            writer.write(answer)
        else:
            writer.write_eof()  # Asterisk went away
    await asyncio.wait_for(reader.read(), 5)  # the server closes when the flow ends
    writer.close()
    return commands


async def test_plain_function_route_is_refused() -> None:
    server = AgiServer(port=0)
    with pytest.raises(TypeError, match="async def"):
        server.add_route("flow", lambda call: None)  # type: ignore[arg-type,return-value]


async def test_a_flow_reads_keys_and_variables() -> None:
    seen: dict[str, object] = {}

    async def flow(call: AgiCall) -> None:
        seen["args"] = call.args
        seen["id"] = call.unique_id
        seen["digit"] = await call.wait_for_digit(2)
        seen["none"] = await call.wait_for_digit(2)
        seen["var"] = await call.get_variable("CALLERID(num)")

    server = await _server(flow)
    commands = await _asterisk(server, [b"200 result=49\n", b"200 result=0\n", b"200 result=1 (+3291234567)\n"])
    await server.stop()
    assert commands == ["WAIT FOR DIGIT 2000", "WAIT FOR DIGIT 2000", "GET VARIABLE CALLERID(num)"]
    assert seen == {"args": ["a1"], "id": "u-1", "digit": "1", "none": None, "var": "+3291234567"}


@pytest.mark.parametrize("answer", [b"200 result=-1\n", b"511 Command Not Permitted on a dead channel\n",
                                    b"HANGUP\n200 result=-1\n", b""])
async def test_every_kind_of_hangup_is_one_exception(answer: bytes) -> None:
    outcome: list[str] = []

    async def flow(call: AgiCall) -> None:
        try:
            await call.wait_for_digit(5)
        except CallHungUp:
            outcome.append("hung up")
            raise

    server = await _server(flow)
    await _asterisk(server, [answer])
    await server.stop()
    assert outcome == ["hung up"]


async def test_usage_error_is_reported_not_hung_up() -> None:
    errors: list[Exception] = []

    async def flow(call: AgiCall) -> None:
        try:
            await call.command("WAIT FOR DIGIT soon")
        except AgiError as exc:
            errors.append(exc)

    server = await _server(flow)
    await _asterisk(server, [b"520-Invalid command syntax.  Proper usage follows:\nUsage: WAIT FOR DIGIT\n"
                             b"520 End of proper usage.\n"])
    await server.stop()
    assert len(errors) == 1


async def test_a_connection_that_closes_before_its_environment_does_not_hang() -> None:
    async def flow(call: AgiCall) -> None:
        raise AssertionError("must not run")

    server = await _server(flow)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network: yes\n")  # no blank line, then gone
    writer.close()
    await asyncio.sleep(0.2)
    assert not server._calls  # the handler has finished
    await server.stop()
