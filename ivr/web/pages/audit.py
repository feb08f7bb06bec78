"""The audit view (admins only): the chain's state, its last anchor, the entries found and the alerts.

The entries are searched with GET parameters (``actor``, ``action``, ``subject``, ``from``, ``to``:
local dates, ``q``: text, ``alerts=1``: only ``security.alert``, ``before``: the page after an
entry), each checked: a bad one shows the page with the reason (400) and no entries. Looking is
itself audited (``audit.viewed``, with the filters) before anything is shown. The check reads the
whole chain: it runs on the console's reading threads, never on the call flows' pool.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from starlette.requests import Request
from starlette.responses import Response

from ivr.web.i18n import tr
from ivr.web.pages.base import PageBase, PageError
from storage import audit
from storage.models import AuditEntry

#: Entries shown a page (newest first).
LATEST = 100
ALERT = "security.alert"
#: The longest filter text taken.
FILTER_MAX_CHARS = 200
TEXT_FILTERS = {"actor": "audit_filter_actor", "action": "audit_filter_action", "subject": "audit_filter_subject",
                "q": "audit_filter_text"}


class AuditPages(PageBase):
    """The audit log's one page."""

    def _query(self, request: Request, lang: str) -> tuple[audit.AuditQuery, dict[str, str], list[str]]:
        """The search the GET parameters ask for, the values to show in the form, and what is wrong."""
        params = request.query_params
        raw = {k: params.get(k, "").strip() for k in ("actor", "action", "subject", "q", "from", "to", "before")}
        errors = []
        for key, label in TEXT_FILTERS.items():
            if len(raw[key]) > FILTER_MAX_CHARS:
                errors.append(tr("audit_error_too_long", lang, field=tr(label, lang)))
                raw[key] = raw[key][:FILTER_MAX_CHARS]
        dates: dict[str, dt.datetime | None] = {}
        for key, label in (("from", "audit_filter_from"), ("to", "audit_filter_to")):
            dates[key] = None
            if raw[key]:
                try:
                    day = dt.date.fromisoformat(raw[key][:10]) if len(raw[key]) == 10 else None
                except ValueError:
                    day = None
                if day is None:
                    errors.append(tr("audit_error_date", lang, field=tr(label, lang)))
                    raw[key] = raw[key][:10]
                    continue
                # Local days: "to" includes its whole day.
                day += dt.timedelta(days=1 if key == "to" else 0)
                dates[key] = dt.datetime.combine(day, dt.time(), tzinfo=self.settings.tz).astimezone(dt.UTC)
        since, until = dates["from"], dates["to"]
        if since is not None and until is not None and until <= since:
            errors.append(tr("audit_error_range", lang))
        before = None
        if raw["before"]:
            if raw["before"].isdigit() and len(raw["before"]) <= 12:
                before = int(raw["before"])
            else:
                raise PageError(400, "error_bad_request")
        action = ALERT if params.get("alerts") == "1" else (raw["action"] or None)
        query = audit.AuditQuery(actor=raw["actor"] or None, action=action, subject=raw["subject"] or None,
                                 since=since, until=until, text=raw["q"] or None, before_id=before, limit=LATEST)
        return query, raw, errors

    async def audit_log(self, request: Request) -> Response:
        """The chain's verdict (first bad entry and why), the last anchor, the entries the filters find
        (``?alerts=1``: only ``security.alert``), a page at a time."""
        viewer = await self.viewer(request)
        if not viewer.is_admin:
            raise PageError(403, "error_forbidden")
        lang = self.language(request)
        alerts_only = request.query_params.get("alerts") == "1"
        query, raw, errors = self._query(request, lang)
        filters = query.filters()
        if alerts_only:
            filters.pop("action", None)
        own = await self.console.tx(lambda s: audit.record(
            s, viewer.actor, "audit.viewed", "audit_log", alerts_only=alerts_only,
            **({"filters": filters} if filters else {})).id)
        # The view's own row is not among the entries it finds.
        query = dataclasses.replace(query, before_id=min(query.before_id or own, own))

        def look() -> tuple[audit.ChainCheck, list[AuditEntry], int]:
            result = self.console.run(audit.check)
            entries = [] if errors else self.console.run(lambda s: audit.search(s, query))
            alerts = self.console.run(lambda s: len(audit.latest(s, LATEST, ALERT)))
            return result, entries, alerts

        result, entries, alerts = await self.console.read(look)
        older = entries[-1].id if len(entries) == LATEST else None
        keep = {k: v for k, v in raw.items() if v and k != "before"}
        if alerts_only:
            keep["alerts"] = "1"
        return self.render(request, "audit.html", 400 if errors else 200, viewer=viewer, check=result,
                           entries=entries, alerts_only=alerts_only, alerts=alerts, alert_action=ALERT,
                           latest=LATEST, filters=raw, errors=errors, older=older, keep=keep,
                           paged=bool(raw["before"]))
