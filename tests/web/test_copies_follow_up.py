"""The written copies on the console (issue 17): the live board's copies line (page, JSON, stream), the
message page's columns per member, the CSV export; a text-only member is shown as such, not as waiting.

Rows of ``text_copies`` are written here as ``ivr.copies`` writes them; the console only reads them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ivr.domain.vocabulary import CampaignStatus, Channel, CopyReason, CopyStatus, MessageStatus, PhoneRank
from ivr.web.pages.board import copies_text, copy_words
from ivr.web.server import WebConsole
from storage.db import session_scope
from storage.models import Campaign, Confirmation, Message, Person, PhoneNumber, TextCopy
from tests.web.conftest import PASSWORD, Site, csrf_of


def _delivering_with_copies(site: Site) -> tuple[int, int, int, int]:
    """A campaign under way in BIN 12: the first household called, with the ladder's SMS on its mobile;
    the second text only (e-mail), its copy sent. Returns (message, campaign, called, text only)."""
    message_id = site.message()
    called, text_only = site.members
    with session_scope(site.engine) as s:
        s.get_one(Message, message_id).status = MessageStatus.DELIVERING
        campaign = Campaign(message_id=message_id, status=CampaignStatus.RUNNING)
        s.add(campaign)
        s.add(PhoneNumber(person_id=called, rank=PhoneRank.SECONDARY, e164="+32470000777"))
        deaf = s.get_one(Person, text_only)
        deaf.email, deaf.channels = "huis2@example.be", "email"
        s.flush()
        s.add_all([
            TextCopy(campaign_id=campaign.id, person_id=called, channel=Channel.SMS, reason=CopyReason.LADDER,
                     address="+32470000777", status=CopyStatus.DELIVERED),
            TextCopy(campaign_id=campaign.id, person_id=text_only, channel=Channel.EMAIL,
                     reason=CopyReason.TEXT_ONLY, address="huis2@example.be", status=CopyStatus.SENT)])
        return message_id, campaign.id, called, text_only


def _row(html: str, person_id: int) -> str:
    match = re.search(rf'<tr data-state="[a-z_]+" data-person="{person_id}">.*?</tr>', html, re.DOTALL)
    assert match is not None, f"no row for person {person_id}"
    return match.group(0)


def test_the_board_shows_each_campaigns_copies(site: Site) -> None:
    message_id, _, _, _ = _delivering_with_copies(site)
    client = site.signed_in("coord12")
    [item] = [i for i in client.get("/board/state").json() if i["id"] == message_id]
    assert item["copies"]["sms"]["delivered"] == 1 and item["copies"]["email"]["sent"] == 1
    assert sum(item["copies"]["sms"].values()) + sum(item["copies"]["email"].values()) == 2
    assert (item["copies"]["ladder"], item["copies"]["text_only"], item["copies"]["no_channel"]) == (1, 1, 0)
    # The text-only member is no one waiting for a call: a segment of their own, so the bar adds up.
    assert item["progress"] == {"members": 2, "confirmed": 0, "answering_machine": 0, "failed": 0,
                                "text_only": 1, "waiting": 1}
    page = client.get("/").text
    row = page[page.index(f'data-id="{message_id}"'):]
    assert 'data-seg="text_only" style="width:50.0%"' in row and 'data-count="text_only">1<' in row
    assert "enkel tekst (niet gebeld)" in row
    page = client.get("/").text
    assert "Sms: 1 afgeleverd · E-mail: 1 verstuurd · contactladder: 1 · enkel tekst: 1" in page
    client.get("/lang/fr", headers={"referer": "http://testserver/"})
    assert "SMS: 1 remis · E-mail: 1 envoyé · échelle de contact: 1 · texte seulement: 1" in client.get("/").text


def test_a_board_without_copies_says_nothing_of_them(site: Site) -> None:
    message_id = site.message()
    client = site.signed_in("coord12")
    [item] = [i for i in client.get("/board/state").json() if i["id"] == message_id]
    assert item["copies"] is None  # no campaign yet
    assert 'data-copies hidden></div>' in client.get("/").text


def test_the_message_page_and_its_csv_list_each_members_copies(site: Site) -> None:
    message_id, campaign_id, called, text_only = _delivering_with_copies(site)
    with session_scope(site.engine) as s:  # the first household replied "1" to the ladder's SMS
        s.add(Confirmation(campaign_id=campaign_id, person_id=called, via="sms"))
    client = site.signed_in("coord12")
    page = client.get(f"/messages/{message_id}").text
    assert 'id="copies">Geschreven kopieën: Sms: 1 afgeleverd · E-mail: 1 verstuurd · contactladder: 1' in page
    deaf = _row(page, text_only)
    assert 'data-state="text_only"' in deaf and "enkel tekst (niet gebeld)" in deaf
    assert '<td data-channels="email">E-mail</td>' in deaf
    assert 'data-copy="email" data-status="sent"' in deaf and "verstuurd" in deaf
    assert re.search(r'data-copy="sms"\s*>–</td>', deaf)
    first = _row(page, called)
    assert 'data-state="confirmed"' in first and "(per sms)" in first
    assert '<td data-channels="voice+sms">Oproep + Sms</td>' in first
    assert 'data-copy="sms" data-status="delivered"' in first and "afgeleverd <small>(contactladder)</small>" in first
    assert "huis2@example.be" not in page and "+32470000777" not in page

    export = client.get(f"/messages/{message_id}/report.csv")
    assert export.status_code == 200
    rows = {int(r["person_id"]): r for r in csv.DictReader(io.StringIO(export.text))}
    assert [rows[text_only][k] for k in ("state", "channels", "email", "email_reason", "sms")] == [
        "text_only", "email", "sent", "text_only", ""]
    assert (rows[called]["confirmed_via"], rows[called]["sms"], rows[called]["sms_reason"]) == (
        "sms", "delivered", "ladder")
    assert "huis2@example.be" not in export.text


async def test_the_live_stream_sends_a_copy_as_it_changes(site: Site) -> None:
    """Over a real socket: the stream's next board carries the copy's new status."""
    message_id, campaign_id, _, text_only = _delivering_with_copies(site)
    web = WebConsole(site.console, "127.0.0.1", 0)
    url = await web.start()
    try:
        async with httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=30) as client:
            page = await client.get("/signin")
            await client.post("/signin", data={"csrf": csrf_of(page.text), "username": "coord12",
                                               "password": PASSWORD, "next": "/"})

            async def boards() -> list[dict[str, object]]:
                seen = []
                async with client.stream("GET", "/board/events") as stream:
                    async for line in stream.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        [item] = [i for i in json.loads(line[len("data: "):]) if i["id"] == message_id]
                        seen.append(item["copies"])
                        if len(seen) == 1:  # the relay refuses the e-mail after all
                            with session_scope(site.engine) as s:
                                s.scalars(select(TextCopy).where(TextCopy.campaign_id == campaign_id,
                                                                 TextCopy.person_id == text_only)).one().status = \
                                    CopyStatus.BOUNCED
                        else:
                            return seen
                return seen

            first, second = await asyncio.wait_for(boards(), 30)
    finally:
        await web.stop()
    assert (first["email"]["sent"], first["email"]["bounced"]) == (1, 0)  # type: ignore[index]
    assert (second["email"]["sent"], second["email"]["bounced"]) == (0, 1)  # type: ignore[index]


def test_the_boards_script_writes_the_copies_line_as_the_server_does() -> None:
    """The live board rewrites the line from each streamed board: the very words the page came with."""
    script = (Path(__file__).parents[2] / "ivr" / "web" / "static" / "board.js").read_text(encoding="utf-8")
    function = script[script.index("  function copiesText"):script.index("  function update")]
    words = copy_words("fr")
    cases = [None, {"sms": {"queued": 1, "sent": 2, "delivered": 10, "failed": 1}, "email": {"sent": 8, "bounced": 1},
                    "ladder": 3, "text_only": 2, "no_channel": 0},
             {"sms": {}, "email": {"cancelled": 1}, "ladder": 0, "text_only": 0, "no_channel": 4}]
    program = (f"const copyWords = {json.dumps(words, sort_keys=True)};\n{function}\n"
               f"for (const c of {json.dumps(cases, sort_keys=True)}) console.log(JSON.stringify(copiesText(c)));")
    ran = subprocess.run(["node", "-e", program], capture_output=True, text=True, timeout=60, check=True)
    assert [json.loads(line) for line in ran.stdout.splitlines()] == [copies_text(c, words) for c in cases]
    assert copies_text(cases[2], words) == "E-mail: 1 annulé · aucun canal: 4"
