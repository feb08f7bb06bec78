"""No other site can make a signed-in browser fetch an audited page (issue 14 item 8).

Debian's Chromium (Playwright): an admin signs in to the console (``http://127.0.0.1:P``), then opens
a page of another site (``http://localhost:Q``) whose link leads to the audit view. With a Lax cookie
that top-level navigation carried the session and wrote an ``audit.viewed`` row in the admin's name;
with SameSite=Strict it reaches the sign-in page and nothing is audited.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.async_api import async_playwright
from sqlalchemy import func, select

from ivr.web.server import WebConsole
from storage.db import session_scope
from storage.models import AuditEntry
from tests.web.conftest import PASSWORD, Site
from tests.web.test_e2e import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.integration


def _viewed(site: Site) -> int:
    with session_scope(site.engine) as s:
        return s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "audit.viewed")) or 0


@pytest.mark.timeout(180)
async def test_a_link_on_another_site_does_not_carry_the_session(site: Site, tmp_path: Path) -> None:
    web = WebConsole(site.console, "127.0.0.1", 0)
    await web.start()
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "lure.html").write_text(f'<a id="go" href="{web.url}audit">prize</a>', encoding="utf-8")
    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler,
                                                                          directory=str(other)))
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            await page.goto(web.url + "signin")
            await page.fill("#username", "admin")
            await page.fill("#password", PASSWORD)
            await page.click("form[action=\"/signin\"] button[type=submit]")
            await page.wait_for_url(web.url)
            # Signed in: the admin's own visit to the audit view works and is audited.
            await page.goto(web.url + "audit")
            assert "/signin" not in page.url
            assert _viewed(site) == 1
            # Another site's link (localhost is another site than 127.0.0.1): no session goes along.
            await page.goto(f"http://localhost:{elsewhere.server_address[1]}/lure.html")
            await page.click("#go")
            await page.wait_for_url("**/signin?next=/audit")
            assert _viewed(site) == 1
            await browser.close()
    finally:
        elsewhere.shutdown()
        await web.stop()
