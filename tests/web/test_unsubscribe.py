"""The unsubscribe link of e-mail copies: the page, its button, RFC 8058 one-click, bad tokens
(in-process console on SQLite, the copies key in the site's data folder)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from ivr.copies.tokens import load_copies_key, unsubscribe_token
from ivr.domain.vocabulary import CampaignStatus, Channel, CopyReason, CopyStatus, Language, MessageStatus
from storage.db import session_scope
from storage.models import AuditEntry, Campaign, Message, Person, TextCopy
from tests.web.conftest import Site, dump

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _token(site: Site, person_id: int) -> str:
    return unsubscribe_token(load_copies_key(site.settings.copies_key_path), person_id)


def _queued_copies(site: Site) -> dict[tuple[int, Channel], str]:
    """A running campaign with queued copies: the first member's e-mail and SMS, the second's e-mail.
    Returns (person, channel) -> copy id."""
    message_id = site.message()
    first, second = site.members
    with session_scope(site.engine) as s:
        s.get_one(Message, message_id).status = MessageStatus.DELIVERING
        campaign = Campaign(message_id=message_id, status=CampaignStatus.RUNNING)
        s.add(campaign)
        s.flush()
        copies = {(first, Channel.EMAIL): "lid1@example.be", (first, Channel.SMS): "+32470000001",
                  (second, Channel.EMAIL): "lid2@example.be"}
        rows = {key: TextCopy(campaign_id=campaign.id, person_id=key[0], channel=key[1], reason=CopyReason.CHOICE,
                              address=address, status=CopyStatus.QUEUED) for key, address in copies.items()}
        s.add_all(rows.values())
        s.flush()
        return {key: row.id for key, row in rows.items()}


def _statuses(site: Site, ids: dict[tuple[int, Channel], str]) -> dict[tuple[int, Channel], CopyStatus]:
    with session_scope(site.engine) as s:
        return {key: s.get_one(TextCopy, copy_id).status for key, copy_id in ids.items()}


def _opt_outs(site: Site) -> list[AuditEntry]:
    with session_scope(site.engine) as s:
        entries = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "member.email_opt_out")
                                 .order_by(AuditEntry.id)))
        s.expunge_all()
        return entries


def _opted_out_at(site: Site, person_id: int) -> dt.datetime | None:
    with session_scope(site.engine) as s:
        return s.get_one(Person, person_id).email_opt_out_at


def test_the_page_asks_first_and_the_button_unsubscribes_once(site: Site) -> None:
    ids = _queued_copies(site)
    member, other = site.members
    token = _token(site, member)
    client = site.client()  # nobody signed in: the token is the authority
    before = dump(site.engine)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert 'id="unsubscribe-button"' in page.text and f'action="/unsubscribe/{token}"' in page.text
    assert "Geen e-mails meer" in page.text and "oproepen" in page.text  # the member's language (Dutch)
    assert dump(site.engine) == before  # looking (or a mail scanner following the link) changes nothing

    done = client.post(f"/unsubscribe/{token}")
    assert done.status_code == 200 and 'id="unsubscribed"' in done.text
    since = _opted_out_at(site, member)
    assert since is not None
    [entry] = _opt_outs(site)
    assert (entry.actor, entry.subject) == ("member (unsubscribe link)", f"person:{member}")
    assert entry.details == {"via": "page", "cancelled": 1, "again": False}
    assert _statuses(site, ids) == {(member, Channel.EMAIL): CopyStatus.CANCELLED,
                                    (member, Channel.SMS): CopyStatus.QUEUED,       # only the e-mail stops
                                    (other, Channel.EMAIL): CopyStatus.QUEUED}      # and only theirs
    assert _opted_out_at(site, other) is None

    # Again (a reload, a second click, the one-click as well): nothing more is written.
    after_first = dump(site.engine)
    assert client.post(f"/unsubscribe/{token}").status_code == 200
    assert site.client().post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 200
    assert dump(site.engine) == after_first
    page = client.get(f"/unsubscribe/{token}")
    assert 'id="already"' in page.text and 'id="unsubscribe-button"' not in page.text


def test_a_mail_providers_one_click_post_unsubscribes_without_a_cookie(site: Site) -> None:
    ids = _queued_copies(site)
    member = site.members[0]
    response = site.client().post(f"/unsubscribe/{_token(site, member)}", data=ONE_CLICK)
    assert response.status_code == 200
    assert _opted_out_at(site, member) is not None
    [entry] = _opt_outs(site)
    assert entry.details == {"via": "one-click", "cancelled": 1, "again": False}
    assert _statuses(site, ids)[(member, Channel.EMAIL)] is CopyStatus.CANCELLED


def test_one_click_as_multipart_is_one_click_too(site: Site) -> None:
    member = site.members[1]
    body = (b'--xyz\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--xyz--\r\n')
    response = site.client().post(f"/unsubscribe/{_token(site, member)}", content=body,
                                  headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 200
    [entry] = _opt_outs(site)
    assert entry.details == {"via": "one-click", "cancelled": 0, "again": False}


def test_a_token_that_does_not_verify_is_not_found_and_nothing_is_written(site: Site) -> None:
    _queued_copies(site)
    member = site.members[0]
    good = _token(site, member)
    forged = [
        good[:-2] + ("AA" if good[-2:] != "AA" else "BB"),       # a changed MAC
        unsubscribe_token(bytes(32), member),                    # signed with another key
        _token(site, 999_999),                                   # signed, but nobody has that id
        "not-a-token",
        "A" * 300,
    ]
    before = dump(site.engine)
    client = site.client()
    for token in forged:
        assert client.get(f"/unsubscribe/{token}").status_code == 404, token
        response = client.post(f"/unsubscribe/{token}", data=ONE_CLICK)
        assert response.status_code == 404, token
        assert "Deze pagina bestaat niet" in response.text
    assert dump(site.engine) == before


def test_a_large_body_is_refused_before_anything_is_written(site: Site) -> None:
    member = site.members[0]
    before = dump(site.engine)
    response = site.client().post(f"/unsubscribe/{_token(site, member)}", content=b"x" * 100_000,
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert dump(site.engine) == before


def test_the_page_speaks_the_members_language(site: Site) -> None:
    member = site.members[1]
    with session_scope(site.engine) as s:
        s.get_one(Person, member).language = Language.FR
    token = _token(site, member)
    client = site.client()
    page = client.get(f"/unsubscribe/{token}")
    assert "Ne plus recevoir d&#39;e-mails" in page.text and '<html lang="fr">' in page.text
    done = client.post(f"/unsubscribe/{token}")
    assert "Vous êtes désinscrit" in done.text
