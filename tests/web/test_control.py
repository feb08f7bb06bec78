"""The message page's control buttons: stop, re-notify, retract, cancel (in-process console, SQLite)."""

from __future__ import annotations

from sqlalchemy import select

from ivr.domain.vocabulary import CampaignStatus, MessageKind, MessageStatus
from storage.db import session_scope
from storage.models import AuditEntry, Campaign, Message
from tests.web.conftest import Site, csrf_of


def _delivering(site: Site) -> tuple[int, int]:
    message_id = site.message()
    with session_scope(site.engine) as s:
        s.get_one(Message, message_id).status = MessageStatus.DELIVERING
        campaign = Campaign(message_id=message_id, status=CampaignStatus.RUNNING)
        s.add(campaign)
        s.flush()
        return message_id, campaign.id


def _actions(site: Site, action: str) -> list[AuditEntry]:
    with session_scope(site.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_a_coordinator_stops_then_calls_again_then_retracts(site: Site) -> None:
    message_id, campaign_id = _delivering(site)
    client = site.signed_in("coord12")
    page = client.get(f"/messages/{message_id}")
    assert 'id="stop"' in page.text and 'id="cancel"' not in page.text
    assert "Vergeet het vorige bericht" in page.text  # the prepared retraction, in the BIN's language
    response = client.post(f"/messages/{message_id}/stop", data={"csrf": csrf_of(page.text)})
    assert response.status_code == 303 and response.headers["location"] == f"/messages/{message_id}"
    coordinator = site.world.coordinators[0][0]
    with session_scope(site.engine) as s:
        campaign = s.get_one(Campaign, campaign_id)
        assert campaign.status is CampaignStatus.CANCELLED and campaign.stopped_by == f"web:person:{coordinator}"
    page = client.get(f"/messages/{message_id}")
    assert "Versturen gestopt" in page.text and 'id="stopped"' in page.text and 'id="stop"' not in page.text
    assert client.post(f"/messages/{message_id}/renotify", data={"csrf": csrf_of(page.text)}).status_code == 303
    with session_scope(site.engine) as s:
        assert s.get_one(Campaign, campaign_id).round == 2
    page = client.get(f"/messages/{message_id}")
    response = client.post(f"/messages/{message_id}/retract",
                           data={"csrf": csrf_of(page.text), "text": "Vergeet het vorige bericht, alles is veilig."})
    assert response.status_code == 303
    with session_scope(site.engine) as s:
        retraction = s.scalars(select(Message).where(Message.kind == MessageKind.CANCELLATION)).one()
        assert response.headers["location"] == f"/messages/{retraction.id}"
        assert retraction.text == "Vergeet het vorige bericht, alles is veilig."
        assert retraction.status is MessageStatus.APPROVED and retraction.created_by_id == coordinator
        assert s.get_one(Campaign, campaign_id).status is CampaignStatus.CANCELLED  # stopped again first


def test_others_are_refused_and_nothing_changes(site: Site) -> None:
    message_id, campaign_id = _delivering(site)
    # Another zone's coordinator does not even see the message.
    other = site.signed_in("coord99")
    assert other.post(f"/messages/{message_id}/stop", data={"csrf": csrf_of(other.get("/").text)}).status_code == 404
    # The zone's officer, not its author: no button, and a post is refused (audited).
    police = site.signed_in("police")
    page = police.get(f"/messages/{message_id}")
    assert 'id="stop"' not in page.text and 'id="control"' not in page.text
    assert police.post(f"/messages/{message_id}/stop", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert "refused" in police.get(f"/messages/{message_id}").text
    assert [e.actor for e in _actions(site, "campaign.stop.refused")] == [f"web:person:{site.world.officer_id}"]
    # A forged token does nothing.
    client = site.signed_in("coord12")
    assert client.post(f"/messages/{message_id}/stop", data={"csrf": "forged"}).status_code == 403
    with session_scope(site.engine) as s:
        assert s.get_one(Campaign, campaign_id).status is CampaignStatus.RUNNING
    assert _actions(site, "campaign.stopped") == []


def test_an_admin_cancels_a_message_before_it_goes(site: Site) -> None:
    message_id = site.message()
    client = site.signed_in("admin")
    page = client.get(f"/messages/{message_id}")
    assert 'id="cancel"' in page.text and 'id="stop"' not in page.text and 'id="retract"' not in page.text
    assert client.post(f"/messages/{message_id}/cancel", data={"csrf": csrf_of(page.text)}).status_code == 303
    with session_scope(site.engine) as s:
        assert s.get_one(Message, message_id).status is MessageStatus.CANCELLED
    assert len(_actions(site, "message.cancelled")) == 1
    assert 'id="control"' not in client.get(f"/messages/{message_id}").text
