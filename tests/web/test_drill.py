"""The drill button and the drills' reach reports on a BIN's page (in-process console, SQLite)."""

from __future__ import annotations

from sqlalchemy import select

from ivr.domain.vocabulary import AttemptOutcome, AttemptStatus, CampaignStatus, PhoneRank
from storage.db import session_scope
from storage.models import AuditEntry, CallAttempt, Campaign, Message, PhoneNumber
from tests.web.conftest import Site, csrf_of, dump


def _drills(site: Site) -> list[Message]:
    with session_scope(site.engine) as s:
        return list(s.scalars(select(Message).where(Message.drill.is_(True))))


def test_a_coordinator_starts_a_drill_and_reads_its_reach_report(site: Site) -> None:
    client = site.signed_in("coord12")
    page = client.get("/bins/12")
    assert 'action="/bins/12/drill"' in page.text and 'id="drill-reports"' not in page.text
    response = client.post("/bins/12/drill", data={"csrf": csrf_of(page.text)})
    assert response.status_code == 303 and response.headers["location"] == "/bins/12"
    [drill] = _drills(site)
    coordinator_id = site.world.coordinators[0][0]
    assert drill.created_by_id == coordinator_id and drill.status.value == "approved"
    with session_scope(site.engine) as s:
        [started] = s.scalars(select(AuditEntry).where(AuditEntry.action == "drill.started")).all()
        assert started.actor == f"web:person:{coordinator_id}" and started.subject == f"message:{drill.id}"
        # The service delivered it: one member confirmed, the other's number does not exist.
        campaign = Campaign(message_id=drill.id, status=CampaignStatus.DONE)
        s.add(campaign)
        s.flush()
        first, second = site.members
        numbers = {p.person_id: p.e164 for p in s.scalars(select(PhoneNumber).where(
            PhoneNumber.person_id.in_(site.members)))}
        s.add_all([CallAttempt(campaign_id=campaign.id, person_id=first, e164=numbers[first], attempt_no=1,
                               rank=PhoneRank.PRIMARY, status=AttemptStatus.ENDED, outcome=AttemptOutcome.VOICEMAIL,
                               dial_outcome="answered"),
                   CallAttempt(campaign_id=campaign.id, person_id=second, e164=numbers[second], attempt_no=1,
                               rank=PhoneRank.PRIMARY, status=AttemptStatus.ENDED,
                               outcome=AttemptOutcome.INVALID_NUMBER, dial_outcome="invalid_number", hangup_cause=1)])
    page = client.get("/bins/12")
    assert f'data-drill="{drill.id}"' in page.text and "Testbericht" in page.text  # the flash
    assert "Foute nummers" in page.text and "nummer bestaat niet" in page.text
    assert numbers[second] not in page.text  # masked
    row = page.text.split(f'data-drill="{drill.id}"')[1].split("</tr>")[0]
    assert "<td>2</td><td>1</td><td>0</td><td>1</td><td>0</td>" in row  # members, reached, confirmed, not, pending


def test_only_the_bins_coordinators_and_admins_may_start_one(site: Site) -> None:
    before = dump(site.engine)
    for username, status in (("coord99", 404), ("police", 403)):
        client = site.signed_in(username)
        token = csrf_of(client.get("/bins").text)
        assert client.post("/bins/12/drill", data={"csrf": token}).status_code == status
    client = site.signed_in("coord12")
    assert client.post("/bins/12/drill", data={"csrf": "forged"}).status_code == 403
    assert "/bins/12/drill" not in site.signed_in("police").get("/bins/12").text  # no button either
    after = dump(site.engine)
    for table in ("messages", "recordings", "review_decisions", "campaigns"):
        assert after[table] == before[table], table  # nothing written for a refusal
    admin = site.signed_in("admin")
    token = csrf_of(admin.get("/bins/12").text)
    assert admin.post("/bins/12/drill", data={"csrf": token}).status_code == 303
    assert len(_drills(site)) == 1
