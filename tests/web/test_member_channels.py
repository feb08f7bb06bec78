"""Issue 17 on the web console: a member's channels and e-mail address in the member forms, their
opt-outs shown and cleared (audited), and a zone's default channels and contact ladder for admins."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select

from ivr.domain.vocabulary import Role
from storage.db import session_scope
from storage.models import AuditEntry, Person, PoliceZone, RoleAssignment
from tests.web.conftest import Site, csrf_of, dump

OPTED_OUT_AT = dt.datetime(2026, 12, 6, 14, 3, tzinfo=dt.timezone.utc)


def _form(token: str, **changes: object) -> dict[str, object]:
    form: dict[str, object] = {"csrf": token, "name": "Huishouden Een", "phone": "+3293000001",
                               "second_phone": "0470 99 88 77", "street": "", "language": "nl", "email": ""}
    form.update(changes)
    return form


def _person(site: Site, person_id: int) -> Person:
    with session_scope(site.engine) as s:
        person = s.get_one(Person, person_id)
        s.expunge(person)
        return person


def _audit(site: Site, action: str) -> list[AuditEntry]:
    with session_scope(site.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def _checked(html: str) -> list[str]:
    """The channel boxes ticked on a member form."""
    return re.findall(r'<input type="checkbox" name="channels" value="([a-z]+)" checked>', html)


def test_a_member_s_channels_and_email_round_trip(site: Site) -> None:
    client = site.signed_in("coord12")
    member = site.members[0]
    page = client.get(f"/members/{member}")
    assert page.status_code == 200 and _checked(page.text) == [] and 'name="email"' in page.text
    # Nothing ticked: the zone's defaults, which the form names (the settings': call + SMS, call + e-mail).
    assert "Niets aangevinkt: wat de zone kiest (dringend: Oproep + Sms; preventief: Oproep + E-mail)" in page.text
    token = csrf_of(page.text)
    saved = client.post(f"/members/{member}", data=_form(token, channels=["sms", "voice"],
                                                         email="Huis.Een@Voorbeeld.BE"))
    assert saved.status_code == 303
    person = _person(site, member)
    assert (person.channels, person.email) == ("voice+sms", "Huis.Een@voorbeeld.be")
    assert _audit(site, "member.edit")[-1].details["channels"] == [None, "voice+sms"]
    assert _audit(site, "member.edit")[-1].details["email"] == [None, "H***@voorbeeld.be"]
    again = client.get(f"/members/{member}")
    assert _checked(again.text) == ["voice", "sms"] and 'value="Huis.Een@voorbeeld.be"' in again.text
    # Text only (a deaf member): no call, SMS and e-mail.
    assert client.post(f"/members/{member}", data=_form(token, channels=["sms", "email"],
                                                        email="huis.een@voorbeeld.be")).status_code == 303
    assert _person(site, member).channels == "sms+email"
    # No box ticked and no address: back to the zone's defaults.
    assert client.post(f"/members/{member}", data=_form(token)).status_code == 303
    person = _person(site, member)
    assert (person.channels, person.email) == (None, None)


def test_channels_a_member_cannot_receive_are_refused_and_nothing_is_written(site: Site) -> None:
    client = site.signed_in("admin")
    member = site.members[0]
    token = csrf_of(client.get(f"/members/{member}").text)
    before = dump(site.engine)
    cases = [(_form(token, second_phone="", channels=["voice", "sms"]), "geen van de nummers is een gsm-nummer"),
             (_form(token, channels=["email"]), "E-mail is aangevinkt, maar er is geen e-mailadres"),
             (_form(token, email="huis@"), "Dit is geen e-mailadres")]
    for form, why in cases:
        edited = client.post(f"/members/{member}", data=form)
        added = client.post("/bins/12/members", data=form)
        assert [edited.status_code, added.status_code] == [400, 400], why
        assert why in edited.text and why in added.text, why
        assert _checked(edited.text) == list(form.get("channels", []))  # the form keeps what was ticked
    assert dump(site.engine) == before


def test_a_member_is_added_with_channels_and_email(site: Site) -> None:
    client = site.signed_in("coord12")
    page = client.get("/bins/12")
    assert 'name="channels" value="sms"' in page.text  # the add form has the boxes too
    form = {"csrf": csrf_of(page.text), "name": "Doof Huishouden", "phone": "0470 55 66 77", "second_phone": "",
            "street": "", "language": "fr", "email": "doof@voorbeeld.be", "channels": ["sms", "email"]}
    assert client.post("/bins/12/members", data=form).status_code == 303
    with session_scope(site.engine) as s:
        person = s.scalars(select(Person).where(Person.name == "Doof Huishouden")).one()
        assert (person.channels, person.email) == ("sms+email", "doof@voorbeeld.be")
        [added] = s.scalars(select(AuditEntry).where(AuditEntry.action == "member.add")).all()
        assert (added.details["channels"], added.details["email"]) == ("sms+email", "d***@voorbeeld.be")


def test_opt_outs_are_shown_and_an_editor_takes_the_member_back_in_audited(site: Site) -> None:
    member = site.members[0]
    with session_scope(site.engine) as s:
        person = s.get_one(Person, member)
        person.calls_opt_out_at = OPTED_OUT_AT
        person.email_opt_out_at = OPTED_OUT_AT
    client = site.signed_in("coord12")
    page = client.get(f"/members/{member}")
    assert "Oproepen: afgemeld op 06/12/2026 15:03 (via de BIN-lijn)" in page.text  # local time
    assert "E-mail: afgemeld op 06/12/2026 15:03" in page.text
    assert 'name="clear_opt_out" value="voice"' in page.text
    token = csrf_of(page.text)
    # The button posts only the channel: nothing else of the member changes.
    before = _person(site, member)
    response = client.post(f"/members/{member}", data={"csrf": token, "clear_opt_out": "voice"})
    assert response.status_code == 303 and response.headers["location"] == f"/members/{member}"
    after = _person(site, member)
    assert after.calls_opt_out_at is None and after.email_opt_out_at == OPTED_OUT_AT
    assert (after.name, after.channels, after.email) == (before.name, before.channels, before.email)
    [cleared] = _audit(site, "member.opt_out_cleared")
    assert cleared.subject == f"person:{member}" and cleared.actor.startswith("web:")
    assert cleared.details == {"channel": "voice", "since": OPTED_OUT_AT.isoformat()}
    assert "Het lid is opnieuw aangemeld: Oproep." in client.get(f"/members/{member}").text
    # Again, or a channel that is none: nothing more is written.
    assert client.post(f"/members/{member}", data={"csrf": token, "clear_opt_out": "voice"}).status_code == 303
    assert client.post(f"/members/{member}", data={"csrf": token, "clear_opt_out": "fax"}).status_code == 400
    assert len(_audit(site, "member.opt_out_cleared")) == 1
    # The police see the BIN but change no member; another BIN's coordinator does not even see them.
    police, elsewhere = site.signed_in("police"), site.signed_in("coord99")
    tokens = [csrf_of(police.get("/").text), csrf_of(elsewhere.get("/").text)]
    before_all = dump(site.engine)
    refused = police.post(f"/members/{member}", data={"csrf": tokens[0], "clear_opt_out": "email"})
    hidden = elsewhere.post(f"/members/{member}", data={"csrf": tokens[1], "clear_opt_out": "email"})
    assert (refused.status_code, hidden.status_code) == (403, 404)
    assert dump(site.engine) == before_all


def test_a_zone_s_default_channels_and_ladder_on_the_admin_page(site: Site) -> None:
    client = site.signed_in("admin")
    page = client.get("/admin/zones/5415")
    assert page.status_code == 200
    # Empty: the settings' values, named in the first choice.
    assert '<option value="" selected>algemeen: Oproep + Sms</option>' in page.text
    assert '<option value="" selected>algemeen: Oproep + E-mail</option>' in page.text
    assert 'placeholder="algemeen: 900"' in page.text
    token = csrf_of(page.text)
    with session_scope(site.engine) as s:  # the zone page saves a second approver only with two police
        zone_id = s.scalars(select(PoliceZone.id).where(PoliceZone.code == "5415")).one()
        colleague = Person(name="Inspecteur Collega")
        colleague.roles.append(RoleAssignment(role=Role.POLICE_APPROVER, zone_id=zone_id))
        s.add(colleague)
    form = {"csrf": token, "name": "Gent", "max_channels": "", "max_cps": "", "review_max_rounds": "",
            "review_mode": "sequential", "urgent_escalation": "auto_forward", "urgent_channels": "voice+sms+email",
            "preventive_channels": "voice", "ladder_sms": "no", "ladder_after_s": "600"}
    assert client.post("/admin/zones/5415", data=form).status_code == 303
    with session_scope(site.engine) as s:
        zone = s.scalars(select(PoliceZone).where(PoliceZone.code == "5415")).one()
        assert (zone.urgent_channels, zone.preventive_channels, zone.ladder_sms, zone.ladder_after_s) == (
            "voice+sms+email", "voice", False, 600.0)
    page = client.get("/admin/zones/5415").text
    assert '<option value="voice+sms+email" selected>' in page and '<option value="no" selected>' in page
    assert 'name="ladder_after_s" inputmode="decimal" value="600"' in page
    assert _audit(site, "zone.edited")[-1].details["urgent_channels"] == [None, "voice+sms+email"]
    before = dump(site.engine)
    # The form offers no default without calls (voice always, unless a member opted out or chose text
    # only); a forged one is refused all the same. A delay below 0 is said in the page's language.
    assert '<option value="voice+sms+email"' in page and '<option value="sms' not in page
    assert '<option value="email"' not in page
    for bad, why in [({"urgent_channels": "voice+fax"}, "fax&#39; is not a channel"),
                     ({"preventive_channels": "sms+email"}, "sms+email leaves out calls"),
                     ({"ladder_sms": "maybe"}, "ladder_sms: yes or no"),
                     ({"ladder_after_s": "-1"}, "Die sms na (seconden na de laatste oproep): een aantal seconden"),
                     ({"ladder_after_s": "nan"}, "Die sms na (seconden na de laatste oproep): een aantal seconden"),
                     ({"ladder_after_s": "tien"}, "Die sms na")]:
        response = client.post("/admin/zones/5415", data={**form, **bad})
        assert response.status_code == 400 and why in response.text, why
    assert dump(site.engine) == before
    # Emptied: the settings apply again.
    cleared = {**form, "urgent_channels": "", "preventive_channels": "", "ladder_sms": "", "ladder_after_s": ""}
    assert client.post("/admin/zones/5415", data=cleared).status_code == 303
    with session_scope(site.engine) as s:
        zone = s.scalars(select(PoliceZone).where(PoliceZone.code == "5415")).one()
        assert (zone.urgent_channels, zone.preventive_channels, zone.ladder_sms, zone.ladder_after_s) == (
            None, None, None, None)
