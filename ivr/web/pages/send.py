"""Sending an alert from the console: typed (spoken like ``binfoon message send``) or uploaded audio.

Rules: everything is checked first (urgency, BINs, text or audio, sizes); with any error the form
comes back with every message and nothing is written; BINs chosen by street (a street matches every
BIN with a street starting with the typed word) are shown, with their streets, and sent to only once
the sender ticked them (a second POST with ``confirm_bins``: ids of BINs that street matched, nothing
else); else one message per BIN is submitted.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ivr.directory.accounts import Viewer
from ivr.directory.store import bin_choices, resolve_bins
from ivr.police_line.written import MAX_TEXT_CHARS
from ivr.web.console import NotAudio, convert_upload
from ivr.web.i18n import tr
from ivr.web.pages.base import UPLOAD_OVERHEAD_BYTES, BodyTooLarge, PageBase, PageError
from ivr.domain.vocabulary import Urgency
from storage.models import Bin


def _save_upload(upload: UploadFile, target: Path) -> int:
    """Copy an upload (already bounded while it streamed in) to ``target``; its size (blocking)."""
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 16)
        return out.tell()


def _confirmed(bins: list[Bin], by_street: dict[int, list[str]], ticked: list[str]
               ) -> tuple[list[Bin], list[tuple[str, str]]]:
    """The BINs to send to: those named by number, and those found by street that the sender ticked;
    errors for a tick that names no BIN the street found (a forged form) or for no BIN at all."""
    street_bins = {str(b.id): b for b in bins if b.id in by_street}
    errors = [("send_error_confirm_other", value) for value in ticked if value not in street_bins]
    chosen = [b for b in bins if b.id not in by_street or str(b.id) in ticked]
    if not chosen:
        errors.append(("send_error_confirm_none", ""))
    return chosen, errors


class SendPages(PageBase):
    """The send form, sending, and the spoken preview."""

    async def _send_page(self, request: Request, viewer: Viewer, status: int = 200, **context: Any) -> Response:
        bins = await self.console.tx(lambda s: bin_choices(s, viewer))
        values = {"bins": "", "text": "", "urgency": "urgent", **context.pop("values", {})}
        return self.render(request, "send.html", status, viewer=viewer, bin_list=bins, values=values,
                           max_chars=MAX_TEXT_CHARS, **context)

    async def send_page(self, request: Request) -> Response:
        """The send form (police and admins)."""
        viewer = await self.viewer(request)
        if not viewer.may_send:
            raise PageError(403, "error_forbidden")
        return await self._send_page(request, viewer)

    async def send(self, request: Request) -> Response:
        """Validate everything first; then submit one message per BIN; else the form again, nothing written."""
        viewer = await self.viewer(request)
        if not viewer.may_send:
            raise PageError(403, "error_forbidden")
        lang = self.language(request)
        limit = self.settings.web_upload_max_bytes
        too_big = [tr("send_error_too_big", lang, mb=limit // 1_000_000)]
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit + UPLOAD_OVERHEAD_BYTES:
            # Refused before reading it: the body is far larger than any allowed upload.
            return await self._send_page(request, viewer, 413, errors=too_big)
        try:
            form = await self.form(request, limit + UPLOAD_OVERHEAD_BYTES)
        except BodyTooLarge:
            return await self._send_page(request, viewer, 413, errors=too_big)
        values = {"bins": str(form.get("bins", "")), "text": str(form.get("text", "")),
                  "urgency": str(form.get("urgency", ""))}
        errors: list[str] = []
        urgency = {"urgent": Urgency.URGENT, "preventive": Urgency.PREVENTIVE}.get(values["urgency"])
        if urgency is None:
            errors.append(tr("send_error_urgency", lang))
        bins, bin_errors, by_street = await self.console.tx(lambda s: resolve_bins(s, viewer, values["bins"]))
        errors += [tr(key, lang, value=value) for key, value in bin_errors]
        if not bins and not bin_errors:
            errors.append(tr("send_error_no_bin", lang))
        confirming = [str(v) for v in form.getlist("confirm_bins")]
        text = " ".join(values["text"].split())
        upload = form.get("audio")
        has_audio = isinstance(upload, UploadFile) and bool(upload.filename)
        if text and has_audio:
            errors.append(tr("send_error_both", lang))
        elif not text and not has_audio:
            errors.append(tr("send_error_empty", lang))
        elif len(text) > MAX_TEXT_CHARS:
            errors.append(tr("send_error_too_long", lang, count=len(text), max=MAX_TEXT_CHARS))
        if by_street and not errors:
            if not confirming:
                # Nothing is sent before the sender saw which BINs the street chose.
                matched = [{"id": b.id, "number": b.number, "name": b.name, "streets": by_street[b.id]}
                           for b in bins if b.id in by_street]
                return await self._send_page(request, viewer, 200, values=values, confirm=matched,
                                             audio_again=has_audio)
            bins, confirm_errors = _confirmed(bins, by_street, confirming)
            errors += [tr(key, lang, value=value) for key, value in confirm_errors]
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "upload.wav"
            if has_audio and not errors:
                assert isinstance(upload, UploadFile)
                raw = Path(tmp) / "upload.bin"
                size = await asyncio.to_thread(_save_upload, upload, raw)
                if size > limit:
                    errors.append(tr("send_error_too_big", lang, mb=limit // 1_000_000))
                else:
                    try:
                        await asyncio.to_thread(convert_upload, raw, wav, float(self.settings.record_max_s))
                    except NotAudio as exc:
                        errors.append(tr("send_error_not_audio", lang, why=str(exc)))
            if errors:
                return await self._send_page(request, viewer, 400, errors=errors, values=values)
            assert urgency is not None
            if has_audio:
                ids = await self.console.send_audio(viewer, [b.id for b in bins], urgency, wav)
            else:
                ids = await self.console.send_text(viewer, [(b.number, b.language.value) for b in bins], urgency, text)
        self.flash(request, tr("send_done", lang, count=len(ids), bins=", ".join(str(b.number) for b in bins)))
        return RedirectResponse(f"/messages/{ids[0]}" if len(ids) == 1 else "/", 303)

    async def send_preview(self, request: Request) -> Response:
        """The typed text spoken as the members will hear it (BIN's language, else Dutch)."""
        viewer = await self.viewer(request)
        if not viewer.may_send:
            raise PageError(403, "error_forbidden")
        text = " ".join(request.query_params.get("text", "").split())
        lang = self.language(request)
        if not text or len(text) > MAX_TEXT_CHARS:
            return Response(tr("send_error_empty" if not text else "send_error_too_long", lang, count=len(text),
                               max=MAX_TEXT_CHARS), status_code=400, media_type="text/plain; charset=utf-8")
        bins, _, _ = await self.console.tx(lambda s: resolve_bins(s, viewer, request.query_params.get("bins", "")))
        language = bins[0].language.value if bins else "nl"
        data = await self.console.spoken(text, language)
        return Response(data, media_type="audio/wav", headers={"Cache-Control": "no-store"})
