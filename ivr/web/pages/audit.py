"""The audit view (admins only): the chain's state, its last anchor, the latest entries and alerts.

Looking is itself audited (``audit.viewed``) before anything is shown. The check reads the whole
chain: it runs on the console's reading threads, never on the call flows' pool.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ivr.web.pages.base import PageBase, PageError
from storage import audit
from storage.models import AuditEntry

#: Entries shown (newest first).
LATEST = 100
ALERT = "security.alert"


class AuditPages(PageBase):
    """The audit log's one page."""

    async def audit_log(self, request: Request) -> Response:
        """The chain's verdict (first bad entry and why), the last anchor, the latest entries
        (``?alerts=1``: only ``security.alert``)."""
        viewer = await self.viewer(request)
        if not viewer.is_admin:
            raise PageError(403, "error_forbidden")
        alerts_only = request.query_params.get("alerts") == "1"
        await self.console.tx(lambda s: audit.record(s, viewer.actor, "audit.viewed", "audit_log",
                                                     alerts_only=alerts_only))

        def look() -> tuple[audit.ChainCheck, list[AuditEntry], int]:
            result = self.console.run(audit.check)
            entries = self.console.run(lambda s: audit.latest(s, LATEST, ALERT if alerts_only else None))
            alerts = self.console.run(lambda s: len(audit.latest(s, LATEST, ALERT)))
            return result, entries, alerts

        result, entries, alerts = await self.console.read(look)
        return self.render(request, "audit.html", viewer=viewer, check=result, entries=entries,
                           alerts_only=alerts_only, alerts=alerts, alert_action=ALERT, latest=LATEST)
