"""The web member import (review of issue 16): merge by default; replace removes people only once the
coordinator confirmed exactly who; a number that belongs to another member is a 400 with its line."""

from __future__ import annotations

import re

from httpx import Response
from sqlalchemy import select
from starlette.testclient import TestClient

from ivr.domain.vocabulary import Role
from storage.db import session_scope
from storage.models import AuditEntry, Person, RoleAssignment
from tests.web.conftest import Site, csrf_of, dump

NEW_ONLY = b"naam,telefoon\nAn Peeters,0470 11 12 22\n"
BOTH_AND_NEW = b"naam,telefoon\nHuishouden 1,+3293000001\nHuishouden 2,+3293000002\nAn Peeters,0470 11 12 22\n"


def _members(site: Site) -> list[str]:
    with session_scope(site.engine) as s:
        return sorted(s.scalars(select(Person.name).join(RoleAssignment).where(
            RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == site.world.bin_id)))


def _post(client: TestClient, token: str, data: bytes | None, **fields: str) -> Response:
    files = {"file": ("leden.csv", data, "text/csv")} if data is not None else None
    return client.post("/bins/12/import", data={"csrf": token, **fields}, files=files)


def _imports(site: Site) -> list[dict[str, object]]:
    with session_scope(site.engine) as s:
        return [dict(e.details or {}) for e in s.scalars(select(AuditEntry).where(
            AuditEntry.action == "members.import").order_by(AuditEntry.id))]


def test_merge_is_the_default_and_removes_nobody(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    response = _post(client, token, NEW_ONLY)
    assert response.status_code == 303
    assert _members(site) == ["An Peeters", "Huishouden 1", "Huishouden 2"]
    assert "1 leden: 1 toegevoegd, 0 bijgewerkt, 0 verwijderd." in client.get("/bins/12").text
    assert [(i["mode"], i["removed"]) for i in _imports(site)] == [("merge", 0)]


def test_the_form_offers_both_modes_with_merge_checked(site: Site) -> None:
    page = site.signed_in("coord12").get("/bins/12").text
    assert 'name="mode" value="merge" checked' in page and 'name="mode" value="replace"' in page


def test_replace_lists_who_would_go_and_writes_nothing_until_confirmed(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    before = dump(site.engine)
    asked = _post(client, token, NEW_ONLY, mode="replace")
    assert asked.status_code == 200, asked.text
    removed = re.search(r'<ul id="import-removed">(.*?)</ul>', asked.text, re.DOTALL)
    assert removed and "Huishouden 1" in removed.group(1) and "Huishouden 2" in removed.group(1)
    assert "+3293000001" not in asked.text  # numbers masked
    assert "Deze 2 leden staan niet in het bestand" in asked.text
    assert 'name="confirm_remove" value="yes"' in asked.text
    assert dump(site.engine) == before
    removing = re.search(r'name="removing" value="([^"]*)"', asked.text)
    assert removing and removing.group(1) == ",".join(str(i) for i in sorted(site.members))
    # Sent again without the tick: still nothing written, and told why.
    unticked = _post(client, token, NEW_ONLY, mode="replace", removing=removing.group(1))
    assert unticked.status_code == 400 and "Vink aan dat deze leden" in unticked.text
    assert dump(site.engine) == before
    # Ticked: written.
    done = _post(client, token, NEW_ONLY, mode="replace", removing=removing.group(1), confirm_remove="yes")
    assert done.status_code == 303
    assert _members(site) == ["An Peeters"]
    assert "1 leden: 1 toegevoegd, 0 bijgewerkt, 2 verwijderd." in client.get("/bins/12").text
    assert [(i["mode"], i["removed"]) for i in _imports(site)] == [("replace", 2)]


def test_a_confirmation_for_other_people_confirms_nothing(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    before = dump(site.engine)
    # Ticked for one household, but the file removes two: the list changed since it was shown.
    response = _post(client, token, NEW_ONLY, mode="replace", removing=str(site.members[0]), confirm_remove="yes")
    assert response.status_code == 400 and "is veranderd sinds" in response.text
    assert dump(site.engine) == before


def test_replace_that_removes_nobody_needs_no_confirmation(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    assert _post(client, token, BOTH_AND_NEW, mode="replace").status_code == 303
    assert _members(site) == ["An Peeters", "Huishouden 1", "Huishouden 2"]


def test_a_number_of_another_member_is_refused_with_its_line(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    before = dump(site.engine)
    data = b"naam,telefoon,tweede telefoon\nHuishouden 1,+3293000001,+3293000002\n"
    for mode in ("merge", "replace"):
        response = _post(client, token, data, mode=mode)
        assert response.status_code == 400, response.text
        text = response.text
        assert "er is niets geïmporteerd" in text and "line 2: second phone" in text, text
        assert "is already the number of member" in text
    assert dump(site.engine) == before


def test_an_unknown_mode_or_a_missing_csrf_token_writes_nothing(site: Site) -> None:
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    before = dump(site.engine)
    wipe = _post(client, token, NEW_ONLY, mode="wipe")
    assert wipe.status_code == 400 and "Kies hoe de lijst" in wipe.text
    forged = client.post("/bins/12/import", data={"mode": "replace", "removing": ",".join(map(str, site.members)),
                                                  "confirm_remove": "yes"},
                         files={"file": ("leden.csv", NEW_ONLY, "text/csv")})
    assert forged.status_code == 403
    assert dump(site.engine) == before


def test_a_coordinator_of_another_bin_cannot_confirm_a_removal(site: Site) -> None:
    client = site.signed_in("coord99")
    token = csrf_of(client.get("/").text)
    before = dump(site.engine)
    response = _post(client, token, NEW_ONLY, mode="replace", removing=",".join(map(str, sorted(site.members))),
                     confirm_remove="yes")
    assert response.status_code in (403, 404)
    assert dump(site.engine) == before


def test_a_person_already_known_keeps_their_own_channels_and_is_told_so(site: Site) -> None:
    """Issue 17: the file's channels for someone already in the directory with a choice of their own are
    not applied; the coordinator is told whose (a warning beside the import's figures)."""
    from ivr.domain.vocabulary import PhoneRank
    from storage.models import Bin, PhoneNumber
    from tests.world import OTHER_ZONE_BIN

    with session_scope(site.engine) as s:
        known = Person(name="Jan Buur", channels="voice")
        known.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164="+32470998877"))
        elsewhere = s.scalars(select(Bin.id).where(Bin.number == OTHER_ZONE_BIN)).one()
        known.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=elsewhere))
        s.add(known)
        s.flush()
        known_id = known.id
    client = site.signed_in("coord12")
    token = csrf_of(client.get("/bins/12").text)
    assert _post(client, token, b"naam,telefoon,kanalen\nJan,0470 99 88 77,sms\n").status_code == 303
    page = client.get("/bins/12").text
    assert 'class="notice warn"' in page and "voor Jan zijn de waarden uit het bestand niet overgenomen" in page  # as the file names him
    with session_scope(site.engine) as s:
        assert s.get_one(Person, known_id).channels == "voice"
