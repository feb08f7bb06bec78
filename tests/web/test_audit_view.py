"""The audit view (issue 14 item 8): admins see the chain's state, its last anchor, the latest entries
and the security alerts; nobody else does; looking is audited; the session cookie is SameSite=Strict
so no other site can make a signed-in browser fetch an audited page."""

from __future__ import annotations

import re
import shutil

import pytest
from sqlalchemy import delete, func, select

from storage import audit
from storage.db import session_scope
from storage.models import AuditEntry
from tests.web.conftest import Site, Template


@pytest.fixture
def audited(site: Site, template: Template) -> Site:
    # The copied directory's rows were keyed with the template's key: the copy gets the key and the
    # anchors too (as a restore does).
    shutil.copyfile(template.db.parent / "audit.key", site.tmp / "audit.key")
    shutil.copyfile(template.db.parent / "binfoon.db.anchors", site.tmp / "binfoon.db.anchors")
    with session_scope(site.engine) as s:
        audit.record(s, "system", "security.alert", "line:police", kind="pin_line_limit", failures=30)
        audit.record(s, "cli:root", "bin.add", "bin:7")
    return site


def test_an_admin_sees_the_intact_chain_and_the_alerts(audited: Site) -> None:
    page = audited.signed_in("admin").get("/audit")
    assert page.status_code == 200
    assert 'data-state="intact"' in page.text
    assert "security.alert" in page.text and "kind=pin_line_limit" in page.text
    assert re.search(r'id="alert-count">1<', page.text)
    alerts = audited.signed_in("admin").get("/audit?alerts=1")
    assert "security.alert" in alerts.text and "bin.add" not in alerts.text
    with session_scope(audited.engine) as s:
        viewed = s.scalars(select(AuditEntry).where(AuditEntry.action == "audit.viewed")).all()
    assert [v.details for v in viewed] == [{"alerts_only": False}, {"alerts_only": True}]


def test_a_broken_chain_shows_the_first_bad_entry(audited: Site) -> None:
    with session_scope(audited.engine) as s:
        assert audit.anchor(s) is not None
        newest = s.scalar(select(func.max(AuditEntry.id)))
    with session_scope(audited.engine) as s:
        s.execute(delete(AuditEntry).where(AuditEntry.id == newest))
    page = audited.signed_in("admin").get("/audit")
    assert 'data-state="broken"' in page.text
    # Signing in wrote on: the anchored entry is gone (or its id was taken again by another row).
    assert re.search(rf"<li>entry {newest}: (missing, but anchored|differs from anchor line)", page.text)


@pytest.mark.parametrize("username", ["police", "coord12"])
def test_only_admins_see_the_audit_log(audited: Site, username: str) -> None:
    page = audited.signed_in(username).get("/audit")
    assert page.status_code == 403
    assert "security.alert" not in page.text


def test_anonymous_visitors_go_to_the_signin(audited: Site) -> None:
    page = audited.client().get("/audit")
    assert page.status_code == 303 and page.headers["location"].startswith("/signin")


def test_the_session_cookie_is_same_site_strict(audited: Site) -> None:
    client = audited.client()
    cookie = client.get("/signin").headers["set-cookie"].lower()
    assert "samesite=strict" in cookie
    # The sign-in's own redirect still lands signed in (same site: the cookie goes along).
    assert audited.signed_in("admin").get("/").status_code == 200
