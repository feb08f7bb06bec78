"""Issue 14 items 5 and 6 on the web console: where calls may go, test-call limits, and who steers alerts.

A coordinator must not turn BINfoon into a toll-fraud dialler (premium, satellite and far-away numbers
are refused wherever they come in; test calls are limited), nor steer police alerts to their BIN
(streets and names are the admins'; sending by street shows the BINs matched and asks to confirm).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import threading

import anyio

import pytest
from sqlalchemy import select

from storage.db import session_scope
from storage.models import AuditEntry, Bin, Message
from tests.web.conftest import Site, csrf_of, dump

MEMBER = {"name": "Huishouden X", "second_phone": "", "street": "", "language": "nl"}


# -- item 5: destinations -------------------------------------------------------------------------
@pytest.mark.parametrize(("phone", "why"), [
    ("+882 16 123456", "+882"),
    ("00881 612 345 67", "satellite"),
    ("+44 7700 900123", "outside the countries"),
])
def test_a_member_with_a_premium_satellite_or_far_away_number_is_refused(site: Site, phone: str, why: str) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    before = dump(site.engine)
    added = client.post("/bins/12/members", data={"csrf": token, **MEMBER, "phone": phone})
    assert added.status_code == 400, added.text
    assert why in added.text
    second = client.post("/bins/12/members", data={"csrf": token, **MEMBER, "phone": "+3293555001",
                                                   "second_phone": phone})
    assert second.status_code == 400
    edited = client.post(f"/members/{site.members[0]}", data={"csrf": token, **MEMBER, "phone": phone})
    assert edited.status_code == 400
    assert dump(site.engine) == before


def test_a_member_file_with_a_premium_number_is_refused_by_line(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    before = dump(site.engine)
    data = b"name,phone\nAn,+3293555001\nBart,+88216123456\nCis,+3190012345\n"
    response = client.post("/bins/12/import", data={"csrf": token}, files={"file": ("leden.csv", data, "text/csv")})
    assert response.status_code == 400
    assert re.search(r"line 3: phone: \+88216… is an international network", response.text), response.text
    assert "line 4: phone: +31900… is a Dutch 090x premium-rate number" in response.text
    assert dump(site.engine) == before


def _placing(site: Site, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The members whose test call reached the console (no real call is placed)."""
    placed: list[int] = []

    async def test_call(viewer: object, person_id: int) -> str:
        placed.append(person_id)
        return f"call-{len(placed)}"

    monkeypatch.setattr(site.console, "test_call", test_call)
    return placed


def test_test_calls_are_limited_per_member_and_per_person(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    placed = _placing(site, monkeypatch)
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    first = site.members[0]
    for _ in range(5):
        assert client.post(f"/members/{first}/test-call", data={"csrf": token}).status_code == 303
    assert placed == [first] * site.settings.test_calls_per_member_hour  # 3 an hour for one member
    page = client.get("/bins/12").text
    assert "Te veel testoproepen" in page
    with session_scope(site.engine) as s:
        alerts = s.scalars(select(AuditEntry).where(AuditEntry.action == "security.alert")).all()
    assert [a.details["kind"] for a in alerts] == ["test-call-limit"] * 2
    assert all(str(first) in a.subject for a in alerts)


def test_test_calls_are_limited_per_person_over_all_members(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    placed = _placing(site, monkeypatch)
    site.console.settings = dataclasses.replace(site.settings, test_calls_per_member_hour=20,
                                                test_calls_per_person_hour=4)
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    for member in site.members:
        for _ in range(3):
            client.post(f"/members/{member}/test-call", data={"csrf": token})
    assert len(placed) == 4
    # Another coordinator's own budget is untouched by this one's (admins included).
    admin = site.signed_in("admin")
    admin.post(f"/members/{site.members[1]}/test-call", data={"csrf": csrf_of(admin.get("/bins/12").text)})
    assert len(placed) == 5


def test_test_calls_sent_at_once_are_limited_too(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the limit was checked before the call and counted after it, so requests sent
    at once all passed the check while the first calls were still being placed."""
    placed: list[int] = []
    asked = threading.Semaphore(0)

    async def test_call(viewer: object, person_id: int) -> str:
        asked.release()
        # Hold the call until every request is in (or a while has passed: with the fix only 3 come).
        for _ in range(200):
            if asked._value >= 5:  # noqa: SLF001 - how many requests reached this point
                break
            await anyio.sleep(0.01)
        placed.append(person_id)
        return f"call-{len(placed)}"

    monkeypatch.setattr(site.console, "test_call", test_call)
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    first = site.members[0]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:  # each request on its own event loop
        codes = list(pool.map(lambda _: client.post(f"/members/{first}/test-call", data={"csrf": token}).status_code,
                              range(5)))
    assert codes == [303] * 5
    assert placed == [first] * site.settings.test_calls_per_member_hour


# -- item 6: who steers alerts --------------------------------------------------------------------
def test_a_coordinator_can_no_longer_rename_the_bin_or_change_its_streets(site: Site) -> None:
    client = site.signed_in("coord12")
    page = client.get("/bins/12").text
    assert 'name="streets"' not in page and 'name="name"' not in page.split("/bins/12/members")[0]
    token = csrf_of(page)
    before = dump(site.engine)
    for forged in ({"name": "Kerkwijk", "language": "nl", "streets": "Kerkstraat\nStationsstraat"},
                   {"name": "Andere naam", "language": "nl"},
                   {"language": "nl", "streets": "Kerkstraat\nMarkt"}):
        response = client.post("/bins/12", data={"csrf": token, **forged})
        assert response.status_code == 403, forged
        assert "Uw rol laat dit niet toe" in response.text
    assert dump(site.engine) == before
    # The BIN's language is still theirs.
    assert client.post("/bins/12", data={"csrf": token, "language": "fr"}).status_code == 303
    with session_scope(site.engine) as s:
        bin12 = s.scalars(select(Bin).where(Bin.number == 12)).one()
        assert bin12.language.value == "fr" and [st.street for st in bin12.streets] == ["Kerkstraat"]


def test_an_admin_still_renames_the_bin_and_sets_its_streets(site: Site) -> None:
    client = site.signed_in("admin")
    page = client.get("/bins/12").text
    assert 'name="streets"' in page
    response = client.post("/bins/12", data={"csrf": csrf_of(page), "name": "Kerkwijk-Noord", "language": "nl",
                                             "streets": "Kerkstraat\nMolenstraat"})
    assert response.status_code == 303


def test_sending_by_street_shows_the_bins_matched_and_sends_only_when_confirmed(site: Site) -> None:
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    form = {"csrf": token, "bins": "kerk", "urgency": "preventive", "text": "Opgelet: fietsdiefstallen."}
    before = dump(site.engine)
    asked = client.post("/send", data=form)
    assert asked.status_code == 200, asked.text
    assert dump(site.engine) == before  # nothing sent yet
    assert re.search(r'name="confirm_bins" value="(\d+)"', asked.text)
    assert "BIN 12" in asked.text and "Kerkstraat" in asked.text
    with session_scope(site.engine) as s:
        bin12 = s.scalars(select(Bin).where(Bin.number == 12)).one().id
        bin99 = s.scalars(select(Bin).where(Bin.number == 99)).one().id
    # A forged confirmation naming a BIN the street did not match sends nothing.
    forged = client.post("/send", data={**form, "confirm_bins": [str(bin12), str(bin99)]})
    assert forged.status_code == 400 and dump(site.engine) == before
    sent = client.post("/send", data={**form, "confirm_bins": str(bin12)})
    assert sent.status_code == 303, sent.text
    with session_scope(site.engine) as s:
        assert [m.bin.number for m in s.scalars(select(Message))] == [12]


def test_sending_by_number_needs_no_confirmation(site: Site) -> None:
    client = site.signed_in("police")
    token = csrf_of(client.get("/send").text)
    sent = client.post("/send", data={"csrf": token, "bins": "12", "urgency": "preventive",
                                      "text": "Opgelet: fietsdiefstallen."})
    assert sent.status_code == 303
