"""The archive page: search by words, BIN, zone, dates, urgency (searches are audited by the archive)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ivr.archive.browse import browse
from ivr.archive.store import Archive, ArchiveError
from ivr.web.i18n import tr
from ivr.web.pages.base import PageBase
from ivr.domain.vocabulary import Urgency


class ArchivePages(PageBase):
    """The archive's one page."""

    async def archive(self, request: Request) -> Response:
        """Search by words, BIN, zone, dates, urgency (searches are audited by the archive)."""
        viewer = await self.viewer(request)
        lang = self.language(request)
        q = request.query_params
        values = {k: q.get(k, "").strip() for k in ("q", "bin", "zone", "from", "to", "urgency")}
        errors: list[str] = []
        bin_number = None
        if values["bin"]:
            if values["bin"].isdigit():
                bin_number = int(values["bin"])
            else:
                errors.append(tr("archive_error_bin", lang))
        dates: dict[str, dt.datetime | None] = {"from": None, "to": None}
        for key in dates:
            if values[key]:
                try:
                    day = dt.date.fromisoformat(values[key])
                except ValueError:
                    errors.append(tr("archive_error_date", lang, value=values[key]))
                    continue
                local = dt.datetime.combine(day, dt.time(), self.settings.tz)
                dates[key] = local if key == "from" else local + dt.timedelta(days=1)
        urgency = {"urgent": Urgency.URGENT, "preventive": Urgency.PREVENTIVE}.get(values["urgency"])
        if values["urgency"] and urgency is None:
            errors.append(tr("send_error_urgency", lang))
        searched = any(values.values())
        entries: list[Any] = []
        if searched and not errors:
            archive = Archive(self.console.engine, self.console.desk.store, operator="web")
            try:
                entries = await asyncio.to_thread(browse, archive, viewer, values["q"], bin_number, values["zone"],
                                                  dates["from"], dates["to"], urgency)
            except ArchiveError as exc:
                errors.append(str(exc))
        return self.render(request, "archive.html", 400 if errors else 200, viewer=viewer, values=values,
                           entries=entries, errors=errors, searched=searched)
