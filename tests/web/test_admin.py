"""The admin's tools on the web (issue 16 item 6): persons and zones for admins only, POST forms with
the CSRF token, a reset PIN shown once and stored nowhere, the audit log searched with checked GET
filters and pages, and the member test call that asks for 1 and stores what happened."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
from sqlalchemy import select

from ivr.directory.accounts import Viewer
from ivr.directory.test_calls import last_result
from ivr.domain.vocabulary import Role, WebRole
from ivr.telephony.dialer import Dialled
from ivr.telephony.events import UserEventReceived
from ivr.telephony.outcomes import DialOutcome
from storage import audit
from storage.db import session_scope
from storage.models import AuditEntry, Bin, Person, PoliceZone, RoleAssignment
from storage.pins import verify_pin
from tests.web.conftest import Site, csrf_of, dump


def _entries(site: Site, action: str) -> list[AuditEntry]:
    with session_scope(site.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def _person_id(site: Site, name: str) -> int:
    with session_scope(site.engine) as s:
        return s.scalars(select(Person.id).where(Person.name == name)).one()


@pytest.mark.parametrize("username", ["police", "coord12"])
@pytest.mark.parametrize(("method", "path"), [
    ("get", "/admin/people"), ("get", "/admin/people/1"), ("post", "/admin/people/1"),
    ("get", "/admin/zones"), ("get", "/admin/zones/5415"), ("post", "/admin/zones/5415")])
def test_only_admins_reach_the_admin_pages(site: Site, username: str, method: str, path: str) -> None:
    client = site.signed_in(username)
    token = csrf_of(client.get("/bins").text)
    before = dump(site.engine)
    data = {"csrf": token, "do": "deactivate", "max_channels": "1"} if method == "post" else None
    response = client.post(path, data=data) if method == "post" else client.get(path)
    assert response.status_code == 403
    assert dump(site.engine) == before
    assert "/admin/people" not in client.get("/").text  # no link either


def test_anonymous_visitors_go_to_the_signin(site: Site) -> None:
    response = site.client().get("/admin/people")
    assert response.status_code == 303 and response.headers["location"].startswith("/signin")


def test_the_persons_list_is_filtered_and_bad_filters_are_explained(site: Site) -> None:
    client = site.signed_in("admin")
    page = client.get("/admin/people", params={"role": "member", "bin": "12"})
    assert page.status_code == 200
    assert re.findall(r'data-person="(\d+)"', page.text) == [str(m) for m in site.members]
    assert "+3293000001" not in page.text  # numbers masked
    assert 'href="/admin/people"' in page.text  # the admin's navigation
    bad = client.get("/admin/people", params={"role": "king", "bin": "twaalf", "state": "x"})
    assert bad.status_code == 400
    assert "Onbekende rol" in bad.text and "Een BIN-nummer is een getal" in bad.text
    assert "data-person" not in bad.text
    unknown = client.get("/admin/people", params={"zone": "0000"})
    assert unknown.status_code == 400 and "no police zone" in unknown.text


def test_deactivating_a_person_ends_their_session_and_needs_the_csrf_token(site: Site) -> None:
    police = site.signed_in("police")
    assert police.get("/").status_code == 200
    client = site.signed_in("admin")
    officer = site.world.officer_id
    page = client.get(f"/admin/people/{officer}")
    assert page.status_code == 200 and "Inspecteur Peeters" in page.text
    before = dump(site.engine)
    assert client.post(f"/admin/people/{officer}", data={"do": "deactivate"}).status_code == 403
    assert client.post(f"/admin/people/{officer}", data={"csrf": "forged", "do": "deactivate"}).status_code == 403
    assert dump(site.engine) == before
    token = csrf_of(page.text)
    response = client.post(f"/admin/people/{officer}", data={"csrf": token, "do": "deactivate"})
    assert response.status_code == 303
    assert 'id="inactive"' in client.get(f"/admin/people/{officer}").text
    assert police.get("/").status_code == 303  # signed out at once
    [row] = _entries(site, "person.deactivated")
    admin_id = _person_id(site, "Beheerder Admin")
    assert (row.actor, row.subject) == (f"web:person:{admin_id}", f"person:{officer}")
    # The admin cannot deactivate themselves (the backend says why; nothing written).
    before = dump(site.engine)
    mine = client.post(f"/admin/people/{admin_id}", data={"csrf": token, "do": "deactivate"})
    assert mine.status_code == 400 and "yourself" in mine.text
    assert dump(site.engine) == before
    assert client.post(f"/admin/people/{officer}", data={"csrf": token, "do": "fly"}).status_code == 400


def test_roles_are_added_and_removed_and_edits_are_checked(site: Site) -> None:
    client = site.signed_in("admin")
    member = site.members[0]
    token = csrf_of(client.get(f"/admin/people/{member}").text)
    added = client.post(f"/admin/people/{member}", data={"csrf": token, "do": "role_add", "role": "coordinator",
                                                          "bin": "12", "zone": "", "priority": ""})
    assert added.status_code == 303
    page = client.get(f"/admin/people/{member}").text
    assert re.search(r"coördinator · BIN 12 · #\d", page)
    bad = client.post(f"/admin/people/{member}", data={"csrf": token, "do": "role_add", "role": "coordinator",
                                                        "bin": "twaalf"})
    assert bad.status_code == 400 and "Kies een rol" in bad.text
    removed = client.post(f"/admin/people/{member}", data={"csrf": token, "do": "role_remove",
                                                            "role": "coordinator", "bin": "12"})
    assert removed.status_code == 303
    assert [e.details["role"] for e in _entries(site, "person.role_removed")] == ["coordinator"]
    before = dump(site.engine)
    empty = client.post(f"/admin/people/{member}", data={"csrf": token, "do": "edit", "name": " ", "language": "nl"})
    assert empty.status_code == 400 and "cannot be empty" in empty.text
    assert dump(site.engine) == before
    assert client.post(f"/admin/people/{member}", data={"csrf": token, "do": "edit", "name": "Huishouden Een",
                                                         "language": "fr"}).status_code == 303
    assert client.get("/admin/people/999999").status_code == 404


def test_a_pin_reset_shows_the_pin_once_and_stores_only_its_hash(site: Site) -> None:
    client = site.signed_in("admin")
    officer = site.world.officer_id
    token = csrf_of(client.get(f"/admin/people/{officer}").text)
    response = client.post(f"/admin/people/{officer}", data={"csrf": token, "do": "pin_reset"})
    assert response.status_code == 200  # the answer itself: never a redirect that carries it
    assert "no-store" in response.headers["cache-control"]
    match = re.search(r'id="one-time-pin">.*?<code[^>]*>(\d+)</code>', response.text, re.DOTALL)
    assert match is not None
    pin = match.group(1)
    assert pin not in client.get(f"/admin/people/{officer}").text  # shown once
    assert all(pin not in str(v) for v in client.cookies.values())
    with session_scope(site.engine) as s:
        person = s.get_one(Person, officer)
        from storage.pins import load_pepper

        assert verify_pin(pin, person.pin_hash, load_pepper(site.settings.pin_pepper_path))
        assert not any(pin in repr(e.details) or pin in e.subject for e in s.scalars(select(AuditEntry)))
    assert [e.subject for e in _entries(site, "person.pin_reset")] == [f"person:{officer}"]
    assert client.post(f"/admin/people/{officer}", data={"csrf": token, "do": "unlock"}).status_code == 303
    assert len(_entries(site, "person.unlocked")) == 2  # the reset unlocks too


def test_a_zone_is_edited_with_its_bins_one_level_mode(site: Site) -> None:
    client = site.signed_in("admin")
    listing = client.get("/admin/zones")
    assert listing.status_code == 200 and 'href="/admin/zones/5415"' in listing.text
    page = client.get("/admin/zones/5415")
    token = csrf_of(page.text)
    assert 'name="one_level_12"' in page.text
    form = {"csrf": token, "name": "Gent", "max_channels": "4", "max_cps": "0,5", "review_max_rounds": "",
            "review_mode": "parallel", "urgent_escalation": "wait", "second_approver": "on", "one_level_12": "on"}
    refused = client.post("/admin/zones/5415", data=form)  # one police officer: nobody to approve second
    assert refused.status_code == 400 and "at least 2" in refused.text
    with session_scope(site.engine) as s:
        zone_id = s.scalars(select(PoliceZone.id).where(PoliceZone.code == "5415")).one()
        colleague = Person(name="Inspecteur Collega")
        colleague.roles.append(RoleAssignment(role=Role.POLICE_APPROVER, zone_id=zone_id))
        s.add(colleague)
    assert client.post("/admin/zones/5415", data=form).status_code == 303
    with session_scope(site.engine) as s:
        zone = s.scalars(select(PoliceZone).where(PoliceZone.code == "5415")).one()
        assert (zone.max_channels, zone.max_cps, zone.review_max_rounds, zone.second_approver) == (4, 0.5, None, True)
        assert s.scalars(select(Bin.one_level).where(Bin.number == 12)).one() is True
    before = dump(site.engine)
    for bad, why in [({"max_channels": "0"}, "max_channels"), ({"max_channels": "vier"}, "Gelijktijdige oproepen"),
                     ({"max_cps": "-1"}, "max_cps"), ({"review_mode": "random"}, "review_mode"),
                     ({"name": ""}, "cannot be empty")]:
        response = client.post("/admin/zones/5415", data={**form, **bad, "one_level_12": ""})
        assert response.status_code == 400 and why in response.text
    assert dump(site.engine) == before  # one-level stays on: nothing of a refused form is written
    assert client.get("/admin/zones/nope").status_code == 404


# -- the audit log ---------------------------------------------------------------------------------
def test_the_audit_log_is_searched_with_checked_filters(site: Site) -> None:
    with session_scope(site.engine) as s:
        for i in range(3):
            audit.record(s, "cli:root", "zone.edited", "zone:5415", max_channels=[None, i])
    client = site.signed_in("admin")
    page = client.get("/audit", params={"action": "zone.*", "q": "max_channels"})
    assert page.status_code == 200
    assert len(re.findall(r"<td>zone.edited</td>", page.text)) == 3 and "web.sign_in_ok" not in page.text
    bad = client.get("/audit", params={"from": "morgen", "to": "2026-01-01", "actor": "x" * 201})
    assert bad.status_code == 400
    assert "geen datum" in bad.text and "hoogstens 200 tekens" in bad.text
    assert client.get("/audit", params={"before": "abc"}).status_code == 400
    viewed = _entries(site, "audit.viewed")
    assert viewed[0].details == {"alerts_only": False, "filters": {"action": "zone.*", "text": "max_channels"}}


def test_the_audit_log_pages_back(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.web.pages import audit as audit_page

    monkeypatch.setattr(audit_page, "LATEST", 2)
    with session_scope(site.engine) as s:
        for i in range(5):
            audit.record(s, "cli:root", "bin.add", f"bin:{i}")
    client = site.signed_in("admin")
    first = client.get("/audit", params={"action": "bin.add"})
    assert re.findall(r"<td>(bin:\d)</td>", first.text) == ["bin:4", "bin:3"]
    older = re.search(r'href="(/audit\?[^"]+)" id="older"', first.text)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&"))
    assert re.findall(r"<td>(bin:\d)</td>", second.text) == ["bin:2", "bin:1"]


# -- the member test call --------------------------------------------------------------------------
class FakeCalls:
    """The outbound calls' life cycle, answering as told; the key is sent as the dialplan would."""

    def __init__(self, ami: FakeAmi, outcome: DialOutcome, key: str | None) -> None:
        self.ami, self.outcome, self.key = ami, outcome, key
        self.dialled: list[dict[str, Any]] = []
        self.released: list[str] = []

    async def acquire(self, call_id: str, kind: object) -> None:
        pass

    async def dial(self, call_id: str, number: str, **kwargs: Any) -> Dialled:
        self.dialled.append({"call_id": call_id, "number": number, **kwargs})
        return Dialled(self.outcome)

    async def ended(self, call_id: str, timeout_s: float) -> None:
        if self.key == "1":  # the dialplan's BinfoonConfirm for this call (and one for another call)
            self.ami.send(UserEventReceived("BinfoonConfirm", "chan", {"Attempt": "some-other-call"}))
            self.ami.send(UserEventReceived("BinfoonConfirm", "chan", {"Attempt": call_id}))

    def release(self, call_id: str) -> None:
        self.released.append(call_id)


class FakeAmi:
    def __init__(self) -> None:
        self.subscribers: list[Any] = []

    def subscribe(self, callback: Any) -> Any:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def send(self, event: object) -> None:
        for callback in list(self.subscribers):
            callback(event)


class FakeVoice:
    async def prompt(self, prompt_id: str, language: str) -> str:
        return f"prompts/{language}/{prompt_id}"


@dataclasses.dataclass
class FakeApp:
    ami: FakeAmi
    calls: FakeCalls
    voice: FakeVoice


@pytest.mark.parametrize(("outcome", "key", "stored"), [
    (DialOutcome.ANSWERED, "1", "confirmed"), (DialOutcome.ANSWERED, None, "answered_no_key"),
    (DialOutcome.BUSY, None, "busy"), (DialOutcome.INVALID_NUMBER, None, "invalid_number")])
def test_the_test_call_asks_for_1_and_stores_what_happened(site: Site, outcome: DialOutcome, key: str | None,
                                                           stored: str) -> None:
    ami = FakeAmi()
    calls = FakeCalls(ami, outcome, key)
    console = dataclasses.replace(site.console, app=FakeApp(ami, calls, FakeVoice()))  # type: ignore[arg-type]
    member = site.members[0]
    viewer = Viewer(1, 1, "Beheerder", "admin", WebRole.ADMIN, "nl", 0, None, None)

    async def place() -> str:
        call_id = await console.test_call(viewer, member)
        await asyncio.gather(*console._tasks)
        return call_id

    call_id = asyncio.run(place())
    [dialled] = calls.dialled
    assert dialled["exten"] == "fallback" and dialled["context"] == "binfoon-member"
    variables = dialled["variables"]
    assert variables["BINFOON_ATTEMPT"] == call_id  # the key's event names this call
    assert variables["BINFOON_HEADER"].endswith("member_header_drill")  # every prompt says it is a test
    assert variables["BINFOON_KEYS"].endswith("member_keys_drill")
    assert calls.released == [call_id] and ami.subscribers == []
    assert console.test_results() == {member: stored}
    result = console.last_test_call(member)
    assert result is not None and (result.outcome, result.call_id) == (stored, call_id)
    with session_scope(site.engine) as s:
        assert last_result(s, site.members[1]) is None
    [placed] = _entries(site, "member.test_call")
    assert placed.details == {"call": call_id}


def test_the_member_page_shows_the_last_test_call_when_given_it(site: Site) -> None:
    from ivr.web.pages.base import PageBase

    pages = PageBase(site.console, "k")
    with session_scope(site.engine) as s:
        from ivr.directory.test_calls import record_result

        record_result(s, site.members[0], "call-1", "confirmed")
    template = pages.env.get_template("member.html")
    html = template.render(t=lambda key, default=None, **v: key, csrf="x", viewer=None, flashes=[], request=None,
                           member={"id": 1, "name": "X", "phone": "", "second_phone": "", "street": "",
                                   "language": "nl"}, bin={"number": 12, "name": "K"},
                           last_test_call=site.console.last_test_call(site.members[0]), lang="nl", languages=[])
    assert 'data-outcome="confirmed"' in html and "dial_confirmed" in html
