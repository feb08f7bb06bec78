"""The console stays available under attack (issue 14 item 9).

- Behind the TLS proxy every request comes from the proxy's address: with ``web_trusted_proxies``
  the client is the right-most address of X-Forwarded-For that is not a proxy, so one client's wrong
  passwords lock that client, not everyone; a forged X-Forwarded-For from anyone else is ignored.
- Password checks (argon2) run on their own bounded threads: while a sign-in flood holds every one
  of them, a PIN check of the phone path (a desk step on the shared pool) still completes.
- One live stream per session: a second stream of the same session replaces the first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from starlette.testclient import TestClient

from ivr.web.console import Console
from ivr.web.routes import create_app
from ivr.web.server import WebConsole, session_key
from storage.db import session_scope
from storage.models import AuditEntry
from tests.integration.conftest import until
from tests.web.conftest import PASSWORD, Site, csrf_of, sign_in
from tests.world import OFFICER_PHONE, OFFICER_PIN

PROXY = "10.0.0.5"


def _behind_proxy(site: Site, **settings: Any) -> Console:
    return Console.standalone(dataclasses.replace(site.settings, web_trusted_proxies=PROXY, **settings), site.engine)


def _browser(console: Console, peer: str, forwarded_for: str | None = None) -> TestClient:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    return TestClient(create_app(console, "test-secret-key"), follow_redirects=False, client=(peer, 40000),
                      headers=headers)


def test_client_address_is_the_rightmost_untrusted_hop() -> None:
    from ivr.web.pages.base import client_address

    proxies = dataclasses.replace(_settings(), web_trusted_proxies="10.0.0.0/8, ::1").trusted_proxies
    assert client_address("10.0.0.5", "203.0.113.7", proxies) == "203.0.113.7"
    # A client sending its own X-Forwarded-For: the proxy appends the real address, which wins.
    assert client_address("10.0.0.5", "1.2.3.4, 203.0.113.7", proxies) == "203.0.113.7"
    assert client_address("10.0.0.5", "203.0.113.7, 10.1.1.1", proxies) == "203.0.113.7"  # two proxies
    assert client_address("198.51.100.1", "203.0.113.7", proxies) == "198.51.100.1"  # not from a proxy
    assert client_address("10.0.0.5", None, proxies) == "10.0.0.5"
    assert client_address("10.0.0.5", "10.2.2.2", proxies) == "10.2.2.2"  # only proxies: the first
    assert client_address("10.0.0.5", "203.0.113.7", ()) == "10.0.0.5"  # no proxies configured


def _settings():  # type: ignore[no-untyped-def]
    from ivr.config import Settings

    return Settings()


def test_behind_the_proxy_one_clients_failures_do_not_lock_out_another(site: Site) -> None:
    console = _behind_proxy(site)
    attacker = _browser(console, PROXY, "203.0.113.7")
    for i in range(site.settings.web_ip_max_failures):  # the last one locks the address
        assert sign_in(attacker, f"nobody{i}", "wrong password").status_code in (401, 429)  # type: ignore[attr-defined]
    assert sign_in(attacker, "admin", PASSWORD).status_code == 429  # type: ignore[attr-defined]
    colleague = _browser(console, PROXY, "198.51.100.9")
    response = sign_in(colleague, "admin", PASSWORD)
    assert response.status_code == 303, "a colleague behind the same proxy was locked out"  # type: ignore[attr-defined]
    # Admins are alerted, naming the client's address (not the proxy's).
    with session_scope(site.engine) as s:
        alerts = s.scalars(select(AuditEntry).where(AuditEntry.action == "security.alert")).all()
    assert [(a.details["kind"], a.details["address"]) for a in alerts] == [("web_signin_locked", "203.0.113.7")]


def test_forwarded_for_from_anyone_but_a_proxy_is_ignored(site: Site) -> None:
    console = _behind_proxy(site)
    for i in range(site.settings.web_ip_max_failures):
        spoofer = _browser(console, "198.51.100.66", f"203.0.113.{i}")  # a new "address" each time
        assert sign_in(spoofer, f"nobody{i}", "wrong password").status_code in (401, 429)  # type: ignore[attr-defined]
    spoofer = _browser(console, "198.51.100.66", "203.0.113.200")
    assert sign_in(spoofer, "admin", PASSWORD).status_code == 429  # type: ignore[attr-defined]


class GatedHasher(PasswordHasher):
    """argon2, held at a gate: the test decides when the flood's password checks may finish."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.inside = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._lock:
            self.inside += 1
        self.gate.wait()
        return super().verify(hash, password)


def _hash_threads(console: Console) -> int:
    """How many password checks may run at once: the console's own threads, else asyncio's default pool."""
    hashing = getattr(console, "hashing", None)
    return hashing._max_workers if hashing is not None else min(32, (os.cpu_count() or 1) + 4)


async def test_a_signin_flood_does_not_delay_a_pin_check(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = GatedHasher()
    monkeypatch.setattr("ivr.directory.accounts.HASHER", hasher)
    console = site.console
    transport = httpx.ASGITransport(app=create_app(console, "test-secret-key"), client=("203.0.113.7", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
        csrf = csrf_of((await browser.get("/signin")).text)
        flood = [asyncio.ensure_future(browser.post("/signin", data={
            "csrf": csrf, "username": f"user{i}", "password": "wrong password", "next": "/"})) for i in range(40)]
        try:
            # Every thread that checks passwords is held by the flood ...
            await until(lambda: hasher.inside >= _hash_threads(console), 30, "the flood holding the hashing threads")
            # ... and the police line's PIN check (a desk step, on the call flows' pool) still completes.
            pin_check = asyncio.ensure_future(site.world.desk.check_pin(OFFICER_PHONE, OFFICER_PIN))
            await until(pin_check.done, 30, "the PIN check during the sign-in flood")
            assert hasher.gate.is_set() is False  # completed while the flood was still held
            assert pin_check.result().officer is not None
        finally:
            hasher.gate.set()
            responses = await asyncio.gather(*flood)
    statuses = {r.status_code for r in responses}
    assert statuses <= {401, 429, 503}, statuses  # wrong, then the address locked, or busy
    # Beyond the queue a sign-in is refused at once (busy) rather than waiting behind the flood.
    assert sum(r.status_code == 503 for r in responses) == 40 - _hash_threads(console) - console.settings.web_signin_queue


async def _rest(lines: Any) -> list[str]:
    return [line async for line in lines]


def _session_cookie(console: Console, username: str) -> dict[str, str]:
    signed = TestClient(create_app(console, session_key(console.settings)), follow_redirects=False)
    assert sign_in(signed, username, PASSWORD).status_code == 303  # type: ignore[attr-defined]
    return {"binfoon_session": signed.cookies["binfoon_session"]}


async def test_a_second_stream_of_a_session_replaces_the_first(site: Site) -> None:
    """Over a real socket (uvicorn, as ``binfoon serve`` runs it): a stream ends only when told."""
    web = WebConsole(site.console, "127.0.0.1", 0)
    await web.start()
    try:
        cookies = _session_cookie(site.console, "coord12")
        async with httpx.AsyncClient(base_url=web.url, cookies=cookies, timeout=30) as browser, \
                browser.stream("GET", "/board/events") as first:
            assert first.status_code == 200
            lines = first.aiter_lines()
            assert await anext(lines) == "retry: 2000"
            async with browser.stream("GET", "/board/events") as second:
                assert second.status_code == 200
                second_lines = second.aiter_lines()
                assert await anext(second_lines) == "retry: 2000"
                # The first stream is told to come back later, and ends; the second goes on.
                ended = asyncio.ensure_future(_rest(lines))
                await until(ended.done, 30, "the first stream ending")
                assert "retry: 30000" in ended.result()
    finally:
        await web.stop()


async def test_streams_past_the_limit_are_refused(site: Site) -> None:
    console = Console.standalone(dataclasses.replace(site.settings, web_max_streams=1), site.engine)
    web = WebConsole(console, "127.0.0.1", 0)
    await web.start()
    try:
        async with httpx.AsyncClient(base_url=web.url, cookies=_session_cookie(console, "coord12"),
                                     timeout=30) as one, \
                httpx.AsyncClient(base_url=web.url, cookies=_session_cookie(console, "police"), timeout=30) as two, \
                one.stream("GET", "/board/events") as first:
            assert first.status_code == 200
            lines = first.aiter_lines()  # kept: a dropped iterator closes the stream
            assert await anext(lines) == "retry: 2000"
            refused = await two.get("/board/events")
            assert refused.status_code == 503
    finally:
        await web.stop()
