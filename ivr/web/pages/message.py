"""One message: its page, its recording (every play audited), its campaign as CSV, its CAP export.

Rules:
- a message outside the viewer's BINs/zones is "not found" (its existence is not revealed);
- every play of a recording is audited before a byte is sent (``MessageDesk.recording_to_play``);
  a piece fetched by range counts as the same play only if this session's play of it was audited
  within ``PLAY_WINDOW_S``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ivr.archive.message_view import (
    audited_csv_export,
    message_view,
    verified_take_path,
    visible_message,
    web_replay_refusal,
)
from ivr.archive.at_rest import alert_refused_recording
from ivr.archive.store import AccessDenied, Archive, ArchiveError
from ivr.delivery.report import campaign_report
from ivr.web.pages.control import control_flags
from ivr.directory.accounts import Viewer
from ivr.web.charts import confirmations_svg
from ivr.delivery.states import BAR
from ivr.web.console import bar_of
from ivr.web.i18n import tr
from ivr.web.pages.base import PageBase, PageError
from ivr.web.pages.board import copies_text, copy_words
from storage.models import Message
from storage.recordings import RecordingCorrupted

#: A range request continues this session's play of a recording audited this recently (else: a new play).
PLAY_WINDOW_S = 900.0


class MessagePages(PageBase):
    """The message page and what can be fetched from it."""

    @staticmethod
    def _visible_message(s: Session, viewer: Viewer, message_id: int) -> Message:
        message = visible_message(s, viewer, message_id)
        if message is None:
            raise PageError(404, "error_not_found")
        return message

    async def message(self, request: Request) -> Response:
        """Recording, transcript, decision, members' outcomes, confirmations over time."""
        viewer = await self.viewer(request)
        message_id = int(request.path_params["id"])
        console = self.console
        def view(s: Session) -> dict[str, Any]:
            message = self._visible_message(s, viewer, message_id)
            return {**message_view(s, viewer, message), "control": control_flags(s, viewer, message)}
        data = await console.tx(view)
        delivery = data["report"]["delivery"]
        members: list[Any] = []
        chart = ""
        bar = None
        stopped = None
        copies = ""
        if delivery:
            now = console.clock()
            campaign = await asyncio.to_thread(campaign_report, console.engine, delivery["campaign"],
                                               console.policies, now, self.settings)
            members = campaign.members
            copies = copies_text(campaign.copy_summary(), copy_words(self.language(request)))
            if campaign.stopped_at is not None:
                stopped = {"at": campaign.stopped_at, "by": campaign.stopped_by, "now": campaign.status == "stopped"}
            bar = {"members": len(campaign.members), **bar_of(campaign)}
            start, times = await asyncio.to_thread(console.confirmations_over_time, delivery["campaign"])
            chart = confirmations_svg(start, times, len(campaign.members),
                                      label=tr("message_chart", self.language(request)))
        return self.render(request, "message.html", viewer=viewer, members=members, chart=chart, bar=bar,
                           segments=list(BAR), stopped=stopped, copies=copies, **data)

    async def message_audio(self, request: Request) -> Response:
        """The original recording, streamed (ranges allowed); each play is audited before a byte is sent."""
        viewer = await self.viewer(request)
        message_id = int(request.path_params["id"])
        range_header = request.headers.get("range", "")
        # A browser asks for the rest of a file it is already playing with "bytes=N-" (N > 0):
        # one play is one audit row, however many pieces it is fetched in. A range is only the
        # rest of a play this session was audited for, recently; else it is a play of its own
        # (otherwise "bytes=1-" would fetch the whole recording without an audit row).
        now = self.now()
        played = {key: at for key, at in dict(request.session.get("played", {})).items()
                  if now - float(at) < PLAY_WINDOW_S}
        continues = (bool(range_header) and not range_header.replace(" ", "").startswith("bytes=0-")
                     and str(message_id) in played)
        new_play = not continues

        def check(s: Session) -> str | None:
            # The archive's one replay rule, whatever the way in: admins and the zone's police.
            message = self._visible_message(s, viewer, message_id)
            return web_replay_refusal(s, viewer, message, audit_refusal=new_play)

        if await self.console.tx(check) is not None:
            raise PageError(403, "error_no_replay")  # after the refusal was committed
        if new_play:
            try:
                path = await self.console.desk.recording_to_play(message_id, viewer.actor)
            except LookupError:
                raise PageError(404, "error_no_recording") from None
            except RecordingCorrupted as exc:
                await asyncio.to_thread(alert_refused_recording, self.console.engine, f"message:{message_id}",
                                        str(exc))
                raise PageError(500, "error_recording_corrupted") from None
            played[str(message_id)] = now
            request.session["played"] = played
        else:
            try:
                path = await self.console.tx(lambda s: self._verified_take(s, message_id))
            except RecordingCorrupted as exc:
                await asyncio.to_thread(alert_refused_recording, self.console.engine, f"message:{message_id}",
                                        str(exc))
                raise PageError(500, "error_recording_corrupted") from None
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    def _verified_take(self, s: Session, message_id: int) -> Path:
        path = verified_take_path(s, self.console.desk.store, message_id)
        if path is None:
            raise PageError(404, "error_no_recording")
        return path

    async def message_csv(self, request: Request) -> Response:
        """The campaign report as CSV (numbers masked), audited."""
        viewer = await self.viewer(request)
        message_id = int(request.path_params["id"])

        def work(s: Session) -> int:
            self._visible_message(s, viewer, message_id)
            campaign_id = audited_csv_export(s, viewer.actor, message_id)
            if campaign_id is None:
                raise PageError(404, "error_no_campaign")
            return campaign_id

        campaign_id = await self.console.tx(work)
        report = await asyncio.to_thread(campaign_report, self.console.engine, campaign_id, self.console.policies,
                                         self.console.clock(), self.settings)
        return Response(report.to_csv(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="binfoon-message-{message_id}.csv"'})

    async def message_cap(self, request: Request) -> Response:
        """The message as CAP 1.2 with its audio inside (``Archive.export``: same rule as replay, audited)."""
        viewer = await self.viewer(request)
        message_id = int(request.path_params["id"])
        await self.console.tx(lambda s: self._visible_message(s, viewer, message_id))
        archive = Archive(self.console.engine, self.console.desk.store, operator="web")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                result = await asyncio.to_thread(archive.export, message_id, f"person:{viewer.person_id}", Path(tmp),
                                                 self.settings.tz)
            except AccessDenied:
                raise PageError(403, "error_no_replay") from None
            except ArchiveError:
                raise PageError(404, "error_no_recording") from None
            data = await asyncio.to_thread(result.cap_file.read_bytes)
        return Response(data, media_type="application/xml", headers={
            "Content-Disposition": f'attachment; filename="binfoon-message-{message_id}.cap.xml"'})
