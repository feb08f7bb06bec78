"""The console served for real (uvicorn on the test's loop): address, port in use, live stream, demo."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from types import SimpleNamespace

import httpx
import pytest

from ivr.web.console import Console
from ivr.lab.web_demo import DEMO_USER, demo_console
from ivr.web.server import WebConsole, WebStartError, session_key
from tests.web.conftest import PASSWORD, Site, csrf_of


async def _sign_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    page = await client.get("/signin")
    return await client.post("/signin", data={"csrf": csrf_of(page.text), "username": username,
                                              "password": password, "next": "/"})


async def test_served_console_streams_the_board_and_stops_promptly(site: Site) -> None:
    message_id = site.message()
    web = WebConsole(Console.standalone(site.settings, site.engine), "127.0.0.1", 0)
    url = await web.start()
    assert web.port != 0 and url == f"http://127.0.0.1:{web.port}/"
    try:
        async with httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=10) as client:
            anonymous = await client.get("/")
            assert anonymous.status_code == 303 and anonymous.headers["location"] == "/signin?next=/"
            assert (await _sign_in(client, "police", PASSWORD)).status_code == 303
            async with client.stream("GET", "/board/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        assert f'"id": {message_id}' in line
                        break
                began = time.monotonic()
                await web.stop()  # the open stream must not hold the service's shutdown
                assert time.monotonic() - began < 5.0
    finally:
        await web.stop()


async def test_a_port_in_use_is_a_clear_error(site: Site) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        web = WebConsole(Console.standalone(site.settings, site.engine), "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(WebStartError, match="cannot listen on 127.0.0.1"):
            await web.start()
    finally:
        taken.close()


def test_the_session_key_is_a_private_file_kept_across_starts(site: Site) -> None:
    first = session_key(site.settings)
    assert session_key(site.settings) == first and len(first) >= 48
    mode = stat.S_IMODE(os.stat(site.settings.data_dir / "web-session.key").st_mode)
    assert mode == 0o600


async def test_the_demo_console_gets_an_admin_whose_password_is_in_a_private_file(site: Site) -> None:
    app = SimpleNamespace(settings=site.settings, engine=site.engine, desk=site.console.desk, clock=site.console.clock,
                          chain=None)
    said: list[str] = []
    web = await demo_console(app, said.append)  # type: ignore[arg-type]
    assert web is not None
    try:
        secret = site.settings.data_dir / "web-password.txt"
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
        assert said == [(f"web console: {web.url} (sign in as {DEMO_USER}, password in {secret}; "
                         "open while the demo runs)")]
        async with httpx.AsyncClient(base_url=web.url, follow_redirects=False, timeout=10) as client:
            assert (await _sign_in(client, DEMO_USER, "wrong password")).status_code == 401
            assert (await _sign_in(client, DEMO_USER, secret.read_text().strip())).status_code == 303
            board = await client.get("/")
            assert board.status_code == 200 and "beheerder" in board.text
    finally:
        await web.stop()
    await asyncio.sleep(0)
