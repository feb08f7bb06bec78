"""The console's pages: a Starlette app over ``Console`` (server-rendered, Dutch first).

Rules:
- every page but the sign-in needs a session; anonymous requests are redirected to the sign-in;
- a session ends after ``web_session_idle_s`` without a request, after ``web_session_max_s`` in
  any case, and when the account's ``session_epoch`` changes (password reset, disabled);
- every form carries the session's CSRF token; a POST without it changes nothing (403);
- a form with bad input is shown again with a clear message and nothing is written;
- a message outside the viewer's BINs/zones is "not found" (its existence is not revealed);
  an action the role does not allow is "forbidden";
- every play of a recording is audited before a byte is sent (``MessageDesk.recording_to_play``);
  a piece fetched by range counts as the same play only if this session's play of it was audited
  within ``PLAY_WINDOW_S``;
- a request body is counted while it streams in: past its limit the request is refused (413),
  whatever ``Content-Length`` said or did not say;
- no inline script (the CSP forbids it): scripts are the fixed files of ``static/``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from ivr.archive.store import AccessDenied, Archive, ArchiveError, bin_replay_refusal
from ivr.commands.message import MAX_TEXT_CHARS
from ivr.directory.store import LANGUAGES as CSV_LANGUAGES
from ivr.directory.store import CsvImportError, import_members, parse_member_csv
from ivr.domain.phone import InvalidPhoneNumber, mask, normalize_phone
from ivr.police_line.store import describe
from ivr.delivery.report import campaign_report
from ivr.web.auth import SignInLimits, Viewer, bins_in_scope, load_viewer, sign_in, sign_out_everywhere
from ivr.web.charts import confirmations_svg
from ivr.web.console import (
    BAR,
    Console,
    ConsoleUnavailable,
    NotAudio,
    bar_of,
    convert_upload,
    member_bin,
    members_of,
    phone_of,
    phone_taken,
    resolve_bins,
)
from ivr.web.i18n import DEFAULT_LANGUAGE, LANGUAGES, tr
from storage import audit
from storage.models import (
    Bin,
    BinStreet,
    Language,
    Message,
    Person,
    PhoneNumber,
    PhoneRank,
    Recording,
    Role,
    RoleAssignment,
    Transcript,
    Urgency,
)
from storage.recordings import RecordingCorrupted

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
#: The only files ``/static/`` serves (a fixed list: no path from the request reaches the disk).
SCRIPTS = ("board.js", "message.js", "send.js")
SESSION_COOKIE = "binfoon_session"
#: Every form but an upload is small: a larger body is refused while it streams in.
FORM_MAX_BYTES = 256 * 1024
#: Room for the fields and multipart framing around an upload.
UPLOAD_OVERHEAD_BYTES = 64 * 1024
#: A range request continues this session's play of a recording audited this recently (else: a new play).
PLAY_WINDOW_S = 900.0
#: Every stage ``console.stage_of`` gives (the live board's script words them).
STAGES = ("with_coordinators", "scheduled", "delivering", "done", "rejected", "cancelled", "draft")


class SignInRequired(Exception):
    """No valid session: the handler sends the browser to the sign-in page."""


class BodyTooLarge(Exception):
    """The request body went past its limit while it was read (nothing of it is used)."""


class PageError(Exception):
    """Forbidden (403) or not found (404), shown as a page in the viewer's language."""

    def __init__(self, status: int, text_id: str) -> None:
        super().__init__(text_id)
        self.status = status
        self.text_id = text_id


def _now() -> float:
    return time.time()


def safe_target(target: str) -> str:
    """A local path to go to after signing in or switching language; anything else is ``/``.

    Browsers read ``/\\host`` as ``//host``, and drop tabs and newlines: only a plain path of
    this site passes.
    """
    if not target.startswith("/") or "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7f for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return "/"
    return target


def _limited(receive: Any, max_bytes: int) -> Any:
    """``receive`` that raises ``BodyTooLarge`` once the body passes ``max_bytes``."""
    seen = 0

    async def receive_limited() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise BodyTooLarge()
        return message

    return receive_limited


class Pages:
    """The request handlers, bound to one console."""

    def __init__(self, console: Console, secret_key: str) -> None:
        self.console = console
        self.settings = console.settings
        self.secret_key = secret_key
        self.limits = SignInLimits(self.settings.web_signin_max_failures, self.settings.web_ip_max_failures,
                                   self.settings.web_signin_lock_s)
        # Every template is escaped, whatever its name ends with.
        self.env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
        self.env.filters["local"] = self._local_time
        self.env.filters["marked"] = marked

    # -- plumbing ------------------------------------------------------------------------------
    def _local_time(self, value: dt.datetime | str | None, fmt: str = "%d/%m/%Y %H:%M") -> str:
        if value is None or value == "":
            return "-"
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(self.settings.tz).strftime(fmt)

    @staticmethod
    def language(request: Request) -> str:
        """The session's interface language (Dutch unless chosen)."""
        lang = request.session.get("lang", DEFAULT_LANGUAGE)
        return lang if lang in LANGUAGES else DEFAULT_LANGUAGE

    @staticmethod
    def csrf_token(request: Request) -> str:
        """The session's CSRF token (made on first use)."""
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = secrets.token_urlsafe(32)
        return str(token)

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A page from ``templates/`` with the viewer, texts, CSRF token and pending notices."""
        lang = self.language(request)
        flashes = request.session.pop("flash", [])

        def t(key: str, default: str | None = None, **values: object) -> str:
            # ``default``: for words that come from the data (a dial outcome) and may have no text.
            try:
                return tr(key, lang, **values)
            except KeyError:
                if default is None:
                    raise
                return default

        html = self.env.get_template(name).render(
            request=request, t=t, lang=lang, languages=LANGUAGES, csrf=self.csrf_token(request),
            viewer=context.pop("viewer", None), flashes=flashes, **context)
        return HTMLResponse(html, status_code=status)

    @staticmethod
    def flash(request: Request, text: str, kind: str = "ok") -> None:
        """A notice shown on the next page."""
        request.session.setdefault("flash", []).append({"kind": kind, "text": text})

    async def viewer(self, request: Request, touch: bool = True) -> Viewer:
        """The signed-in viewer, or ``SignInRequired`` (also when the session has expired).

        ``touch``: the request counts as activity (a live stream reconnecting by itself does not).
        """
        session = request.session
        account_id = session.get("account")
        if account_id is None:
            raise SignInRequired()
        now = _now()
        if now - float(session.get("seen", 0)) > self.settings.web_session_idle_s or \
                now - float(session.get("since", 0)) > self.settings.web_session_max_s:
            session.clear()
            self.flash(request, tr("signin_expired", self.language(request)), "warn")
            raise SignInRequired()
        viewer = await self.console.tx(lambda s: load_viewer(s, int(account_id)))
        if viewer is None or viewer.epoch != session.get("epoch"):
            session.clear()
            raise SignInRequired()
        if touch:
            session["seen"] = now
        return viewer

    async def form(self, request: Request, max_bytes: int = FORM_MAX_BYTES) -> Any:
        """The posted form, once its CSRF token matched the session's (else 403, nothing done).

        The body is counted as it streams in (``BodyTooLarge`` past ``max_bytes``): an upload is
        never spooled beyond its limit, with or without a ``Content-Length``.
        """
        limited = Request(request.scope, _limited(request.receive, max_bytes))
        form = await limited.form(max_part_size=FORM_MAX_BYTES)
        sent = form.get("csrf")
        expected = request.session.get("csrf")
        if not expected or not isinstance(sent, str) or not secrets.compare_digest(sent, str(expected)):
            raise PageError(403, "error_csrf")
        return form

    # -- sign-in -------------------------------------------------------------------------------
    async def signin_page(self, request: Request) -> Response:
        """The only page open to anonymous visitors."""
        return self.render(request, "signin.html", next=request.query_params.get("next", "/"))

    async def signin(self, request: Request) -> Response:
        """Check the name and password (rate limited, audited); a new session on success."""
        form = await self.form(request)
        username = str(form.get("username", ""))
        password = str(form.get("password", ""))
        target = safe_target(str(form.get("next", "/")))  # never redirect elsewhere
        lang = self.language(request)
        if not username.strip() or not password:
            return self.render(request, "signin.html", 400, error=tr("signin_missing", lang), next=target)
        ip = request.client.host if request.client else "unknown"
        result = await self.console.tx(lambda s: sign_in(s, username, password, ip, self.limits))
        if result.viewer is None:
            if result.locked_until is not None:
                error = tr("signin_locked", lang, time=self._local_time(result.locked_until, "%H:%M"))
                return self.render(request, "signin.html", 429, error=error, next=target)
            return self.render(request, "signin.html", 401, error=tr("signin_wrong", lang), next=target)
        viewer = result.viewer
        # A fresh session (no fixation): new CSRF token, the account's epoch, the clock starts.
        request.session.clear()
        now = _now()
        request.session.update({"account": viewer.account_id, "epoch": viewer.epoch, "since": now, "seen": now,
                                "lang": lang, "csrf": secrets.token_urlsafe(32)})
        return RedirectResponse(target, 303)

    async def signout(self, request: Request) -> Response:
        """End the session: the account's epoch moves on, so no copy of this cookie stays valid.

        Sessions are signed cookies: clearing this browser's copy alone would leave a copied
        cookie (a shared terminal, a proxy log) usable until it expires.
        """
        viewer = await self.viewer(request)
        await self.form(request)
        await self.console.tx(lambda s: sign_out_everywhere(s, viewer.account_id, viewer.actor))
        request.session.clear()
        return RedirectResponse("/signin", 303)

    async def set_language(self, request: Request) -> Response:
        """Switch the interface language (kept in the session)."""
        lang = request.path_params["lang"]
        if lang in LANGUAGES:
            request.session["lang"] = lang
        back = urlsplit(request.headers.get("referer", "/"))
        path = back.path + (f"?{back.query}" if back.query else "")
        return RedirectResponse(safe_target(path), 303)

    # -- the live board ------------------------------------------------------------------------
    async def board(self, request: Request) -> Response:
        """Messages in progress with their stage and live campaign bar."""
        viewer = await self.viewer(request)
        items = await asyncio.to_thread(self.console.board, viewer)
        lang = self.language(request)
        stage_texts = {stage: tr(f"stage_{stage}", lang) for stage in STAGES}
        empty_bar = {"members": 0, **{segment: 0 for segment in BAR}}
        return self.render(request, "board.html", viewer=viewer, items=items, segments=list(BAR),
                           stage_texts=stage_texts, empty_bar=empty_bar)

    async def board_state(self, request: Request) -> Response:
        """The board as JSON (what the live stream sends)."""
        viewer = await self.viewer(request)
        return JSONResponse(await asyncio.to_thread(self.console.board, viewer))

    async def board_events(self, request: Request) -> Response:
        """Server-sent events: the board whenever it changes (a comment every 15 s keeps proxies open).

        The stream is not activity: it ends when the session would idle out (or reach its maximum),
        and the browser's automatic reconnection then finds no session. The account is checked
        again on every round: a disabled account or a new password ends the stream, and a change
        of roles changes what it shows.
        """
        viewer = await self.viewer(request, touch=False)
        console = self.console
        session = request.session
        ends_at = min(float(session["seen"]) + self.settings.web_session_idle_s,
                      float(session["since"]) + self.settings.web_session_max_s)
        account_id, epoch = viewer.account_id, viewer.epoch

        def board_now() -> list[dict[str, Any]] | None:
            current = console.run(lambda s: load_viewer(s, account_id))
            if current is None or current.epoch != epoch:
                return None
            return console.board(current)

        async def events() -> AsyncIterator[str]:
            last = None
            quiet_since = _now()
            yield "retry: 2000\n\n"
            while not console.closing.is_set() and _now() < ends_at:
                board = await asyncio.to_thread(board_now)
                if board is None:
                    return  # signed out everywhere: the reconnection meets the sign-in
                state = json.dumps(board, sort_keys=True)
                if state != last:
                    last = state
                    quiet_since = _now()
                    yield f"event: board\ndata: {state}\n\n"
                elif _now() - quiet_since > 15:
                    quiet_since = _now()
                    yield ": still here\n\n"
                try:
                    async with asyncio.timeout(1.0):
                        await console.closing.wait()
                except TimeoutError:
                    pass

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- the message page ----------------------------------------------------------------------
    def _visible_message(self, s: Session, viewer: Viewer, message_id: int) -> Message:
        message = s.get(Message, message_id)
        if message is None or not viewer.sees_bin(message.bin_id, message.bin.zone_id):
            raise PageError(404, "error_not_found")
        return message

    async def message(self, request: Request) -> Response:
        """Recording, transcript, decision, members' outcomes, confirmations over time."""
        viewer = await self.viewer(request)
        message_id = int(request.path_params["id"])
        console = self.console

        def work(s: Session) -> dict[str, Any]:
            message = self._visible_message(s, viewer, message_id)
            report = describe(s, message_id)
            take = next((r for r in message.recordings if r.take == message.submitted_take), None)
            transcript = None
            if take is not None:
                transcript = s.scalars(select(Transcript).where(Transcript.recording_id == take.id)).first()
            creator = s.get(Person, message.created_by_id) if message.created_by_id else None
            may_play = bin_replay_refusal(s, s.get(Person, viewer.person_id), message.bin) is None
            return {"message": message, "report": report, "take": take, "transcript": transcript,
                    "creator": creator.name if creator else None, "bin": message.bin, "may_play": may_play}

        data = await console.tx(work)
        delivery = data["report"]["delivery"]
        members: list[Any] = []
        chart = ""
        bar = None
        if delivery:
            now = console.clock()
            campaign = await asyncio.to_thread(campaign_report, console.engine, delivery["campaign"],
                                               console.policies, now)
            members = campaign.members
            bar = {"members": len(campaign.members), **bar_of(campaign)}
            start, times = await asyncio.to_thread(console.confirmations_over_time, delivery["campaign"])
            chart = confirmations_svg(start, times, len(campaign.members),
                                      label=tr("message_chart", self.language(request)))
        return self.render(request, "message.html", viewer=viewer, members=members, chart=chart, bar=bar,
                           segments=list(BAR), **data)

    async def message_audio(self, request: Request) -> Response:
        """The original recording, streamed (ranges allowed); each play is audited before a byte is sent."""
        viewer = await self.viewer(request)
        message_id = int(request.path_params["id"])
        range_header = request.headers.get("range", "")
        # A browser asks for the rest of a file it is already playing with "bytes=N-" (N > 0):
        # one play is one audit row, however many pieces it is fetched in. A range is only the
        # rest of a play this session was audited for, recently; else it is a play of its own
        # (otherwise "bytes=1-" would fetch the whole recording without an audit row).
        now = _now()
        played = {key: at for key, at in dict(request.session.get("played", {})).items()
                  if now - float(at) < PLAY_WINDOW_S}
        continues = (bool(range_header) and not range_header.replace(" ", "").startswith("bytes=0-")
                     and str(message_id) in played)
        new_play = not continues

        def check(s: Session) -> str | None:
            message = self._visible_message(s, viewer, message_id)
            # The archive's one replay rule, whatever the way in: admins and the zone's police.
            refusal = bin_replay_refusal(s, s.get(Person, viewer.person_id), message.bin)
            if refusal is not None and new_play:
                audit.record(s, viewer.actor, "recording.play_refused", f"message:{message_id}", reason=refusal,
                             via="web")
            return refusal

        if await self.console.tx(check) is not None:
            raise PageError(403, "error_no_replay")  # after the refusal was committed
        if new_play:
            try:
                path = await self.console.desk.recording_to_play(message_id, viewer.actor)
            except LookupError:
                raise PageError(404, "error_no_recording") from None
            except RecordingCorrupted:
                raise PageError(500, "error_recording_corrupted") from None
            played[str(message_id)] = now
            request.session["played"] = played
        else:
            try:
                path = await self.console.tx(lambda s: _verified_take(self.console, s, message_id))
            except RecordingCorrupted:
                raise PageError(500, "error_recording_corrupted") from None
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    async def message_csv(self, request: Request) -> Response:
        """The campaign report as CSV (numbers masked), audited."""
        viewer = await self.viewer(request)
        message_id = int(request.path_params["id"])

        def work(s: Session) -> int:
            self._visible_message(s, viewer, message_id)
            delivery = describe(s, message_id)["delivery"]
            if not delivery:
                raise PageError(404, "error_no_campaign")
            audit.record(s, viewer.actor, "campaign.exported", f"message:{message_id}", format="csv")
            return int(delivery["campaign"])  # type: ignore[index]

        campaign_id = await self.console.tx(work)
        report = await asyncio.to_thread(campaign_report, self.console.engine, campaign_id, self.console.policies,
                                         self.console.clock())
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

    # -- send ----------------------------------------------------------------------------------
    async def _send_page(self, request: Request, viewer: Viewer, status: int = 200, **context: Any) -> Response:
        bins = await self.console.tx(lambda s: [(b.number, b.name, [st.street for st in b.streets])
                                                for b in bins_in_scope(s, viewer)])
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
        bins, bin_errors = await self.console.tx(lambda s: resolve_bins(s, viewer, values["bins"]))
        errors += [tr(key, lang, value=value) for key, value in bin_errors]
        if not bins and not bin_errors:
            errors.append(tr("send_error_no_bin", lang))
        text = " ".join(values["text"].split())
        upload = form.get("audio")
        has_audio = isinstance(upload, UploadFile) and bool(upload.filename)
        if text and has_audio:
            errors.append(tr("send_error_both", lang))
        elif not text and not has_audio:
            errors.append(tr("send_error_empty", lang))
        elif len(text) > MAX_TEXT_CHARS:
            errors.append(tr("send_error_too_long", lang, count=len(text), max=MAX_TEXT_CHARS))
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
        bins, _ = await self.console.tx(lambda s: resolve_bins(s, viewer, request.query_params.get("bins", "")))
        language = bins[0].language.value if bins else "nl"
        data = await self.console.spoken(text, language)
        return Response(data, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    # -- archive -------------------------------------------------------------------------------
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
                if values["q"]:
                    found = await asyncio.to_thread(archive.search, [values["q"]], viewer.actor, limit=500)
                    entries = [e for e in found if
                               (bin_number is None or e.bin_number == bin_number)
                               and (not values["zone"] or e.zone_code == values["zone"])
                               and (dates["from"] is None or e.created_at >= dates["from"])
                               and (dates["to"] is None or e.created_at < dates["to"])
                               and (urgency is None or e.urgency is urgency)]
                else:
                    entries = await asyncio.to_thread(archive.list, bin_number, values["zone"] or None,
                                                      dates["from"], dates["to"], urgency, limit=500)
            except ArchiveError as exc:
                errors.append(str(exc))
            visible = await self.console.tx(lambda s: {b.number for b in bins_in_scope(s, viewer)})
            entries = [e for e in entries if e.bin_number in visible]
        return self.render(request, "archive.html", 400 if errors else 200, viewer=viewer, values=values,
                           entries=entries, errors=errors, searched=searched)

    # -- BINs and members ----------------------------------------------------------------------
    async def bins(self, request: Request) -> Response:
        """The BINs the viewer sees, with zone, streets and member count."""
        viewer = await self.viewer(request)

        def work(s: Session) -> list[dict[str, Any]]:
            out = []
            for b in bins_in_scope(s, viewer):
                count = s.scalar(select(func.count()).select_from(RoleAssignment).where(
                    RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == b.id)) or 0
                out.append({"number": b.number, "name": b.name, "zone": b.zone.name, "language": b.language.value,
                            "streets": [st.street for st in b.streets], "members": count,
                            "editable": viewer.may_edit_members(b.id)})
            return out

        return self.render(request, "bins.html", viewer=viewer, bins=await self.console.tx(work))

    def _bin(self, s: Session, viewer: Viewer, number: int) -> Bin:
        bin_ = s.scalars(select(Bin).where(Bin.number == number)).first()
        if bin_ is None or not viewer.sees_bin(bin_.id, bin_.zone_id):
            raise PageError(404, "error_not_found")
        return bin_

    def _bin_context(self, viewer: Viewer, number: int) -> dict[str, Any]:
        def work(s: Session) -> dict[str, Any]:
            bin_ = self._bin(s, viewer, number)
            people = members_of(s, bin_.id)
            rows = [{"id": p.id, "name": p.name, "street": p.street or "", "language": p.language.value,
                     "numbers": [mask(ph.e164) for ph in sorted(p.phones, key=lambda ph: ph.rank.value)]}
                    for p in people]
            return {"bin": {"number": bin_.number, "name": bin_.name, "zone": bin_.zone.name,
                            "language": bin_.language.value, "streets": [st.street for st in bin_.streets]},
                    "members": rows, "editable": viewer.may_edit_members(bin_.id)}
        return dict(self.console.run(work))

    async def bin_page(self, request: Request) -> Response:
        """One BIN: its details, members (numbers masked), CSV import, test calls."""
        viewer = await self.viewer(request)
        context = await asyncio.to_thread(self._bin_context, viewer, int(request.path_params["number"]))
        return self.render(request, "bin.html", viewer=viewer, test_calls=self.console.test_results(),
                           can_call=self.console.app is not None, **context)

    async def _editable_bin(self, request: Request) -> tuple[Viewer, int]:
        viewer = await self.viewer(request)
        number = int(request.path_params["number"])
        bin_id = await self.console.tx(lambda s: self._bin(s, viewer, number).id)
        if not viewer.may_edit_members(bin_id):
            raise PageError(403, "error_forbidden")
        return viewer, number

    async def bin_edit(self, request: Request) -> Response:
        """Name, language and streets of a BIN."""
        viewer, number = await self._editable_bin(request)
        form = await self.form(request)
        lang = self.language(request)
        name = " ".join(str(form.get("name", "")).split())
        language = str(form.get("language", ""))
        streets = list(dict.fromkeys(" ".join(line.split()) for line in str(form.get("streets", "")).splitlines()
                                     if line.strip()))
        errors = []
        if not name:
            errors.append(tr("bin_error_name", lang))
        if language not in ("nl", "fr", "de"):
            errors.append(tr("error_language", lang))
        if errors:
            context = await asyncio.to_thread(self._bin_context, viewer, number)
            return self.render(request, "bin.html", 400, viewer=viewer, errors=errors, test_calls={},
                               can_call=self.console.app is not None, **context)

        def work(s: Session) -> None:
            bin_ = self._bin(s, viewer, number)
            bin_.name = name
            bin_.language = Language(language)
            keep = {st.street: st for st in bin_.streets}
            bin_.streets = [keep.get(street) or BinStreet(street=street) for street in streets]
            audit.record(s, viewer.actor, "bin.edit", f"bin:{number}", name=name, language=language,
                         streets=len(streets))

        await self.console.tx(work)
        self.flash(request, tr("saved", lang))
        return RedirectResponse(f"/bins/{number}", 303)

    async def members_import(self, request: Request) -> Response:
        """Replace the BIN's members with a CSV file: the command line's parser and its line-numbered errors."""
        viewer, number = await self._editable_bin(request)
        lang = self.language(request)
        limit = self.settings.web_upload_max_bytes
        length = request.headers.get("content-length", "")
        errors: list[str] = []
        data = b""
        form = None
        if not (length.isdigit() and int(length) > limit + UPLOAD_OVERHEAD_BYTES):
            try:
                form = await self.form(request, limit + UPLOAD_OVERHEAD_BYTES)
            except BodyTooLarge:
                pass
        if form is None:
            errors.append(tr("send_error_too_big", lang, mb=limit // 1_000_000))
        else:
            upload = form.get("file")
            if not isinstance(upload, UploadFile) or not upload.filename:
                errors.append(tr("import_error_no_file", lang))
            else:
                data = await upload.read(self.settings.web_upload_max_bytes + 1)
                if len(data) > self.settings.web_upload_max_bytes:
                    errors.append(tr("send_error_too_big", lang, mb=self.settings.web_upload_max_bytes // 1_000_000))
        if not errors:
            try:
                rows = await asyncio.to_thread(parse_member_csv, data)
            except CsvImportError as exc:
                errors = [tr("import_refused", lang, count=len(exc.errors))] + [str(e) for e in exc.errors]
        if errors:
            context = await asyncio.to_thread(self._bin_context, viewer, number)
            return self.render(request, "bin.html", 400, viewer=viewer, import_errors=errors, test_calls={},
                               can_call=self.console.app is not None, **context)
        result = await self.console.tx(lambda s: import_members(s, self._bin(s, viewer, number), rows, viewer.actor))
        self.flash(request, tr("import_done", lang, added=result.added, updated=result.updated,
                               removed=result.removed, count=len(rows)))
        return RedirectResponse(f"/bins/{number}", 303)

    def _member_context(self, s: Session, viewer: Viewer, person_id: int) -> tuple[Person, Bin]:
        person = s.get(Person, person_id)
        bin_ = member_bin(s, person_id) if person is not None else None
        if person is None or bin_ is None or not viewer.sees_bin(bin_.id, bin_.zone_id):
            raise PageError(404, "error_not_found")
        return person, bin_

    async def member_page(self, request: Request) -> Response:
        """Edit one member household (full numbers shown to editors: audited)."""
        viewer = await self.viewer(request)
        person_id = int(request.path_params["id"])

        def work(s: Session) -> dict[str, Any]:
            person, bin_ = self._member_context(s, viewer, person_id)
            if not viewer.may_edit_members(bin_.id):
                raise PageError(403, "error_forbidden")
            audit.record(s, viewer.actor, "member.opened", f"person:{person_id}")
            second = phone_of(person, PhoneRank.SECONDARY)
            primary = phone_of(person, PhoneRank.PRIMARY)
            return {"member": {"id": person.id, "name": person.name, "street": person.street or "",
                               "language": person.language.value, "phone": primary.e164 if primary else "",
                               "second_phone": second.e164 if second else ""},
                    "bin": {"number": bin_.number, "name": bin_.name}}

        return self.render(request, "member.html", viewer=viewer, **await self.console.tx(work))

    async def member_save(self, request: Request) -> Response:
        """Save a member's name, numbers, street and language; bad input writes nothing."""
        viewer = await self.viewer(request)
        person_id = int(request.path_params["id"])
        lang = self.language(request)

        def check(s: Session) -> Bin:
            _person, bin_ = self._member_context(s, viewer, person_id)
            if not viewer.may_edit_members(bin_.id):
                raise PageError(403, "error_forbidden")
            return bin_

        bin_ = await self.console.tx(check)
        form = await self.form(request)
        values = {k: " ".join(str(form.get(k, "")).split()) for k in ("name", "phone", "second_phone", "street",
                                                                      "language")}
        errors, phone, second = self._member_errors(values, lang)
        if not errors and await self.console.tx(lambda s: phone_taken(s, bin_.id, phone, person_id)):
            errors.append(tr("member_error_phone_taken", lang, bin=bin_.number))
        if errors:
            return self.render(request, "member.html", 400, viewer=viewer, errors=errors,
                               member={"id": person_id, **values}, bin={"number": bin_.number, "name": bin_.name})

        def work(s: Session) -> None:
            person = s.get_one(Person, person_id)
            person.name = values["name"]
            person.street = values["street"] or None
            person.language = CSV_LANGUAGES[values["language"]]
            _set_phone(person, PhoneRank.PRIMARY, phone)
            _set_phone(person, PhoneRank.SECONDARY, second)
            audit.record(s, viewer.actor, "member.edit", f"person:{person_id}", phone=mask(phone))

        await self.console.tx(work)
        self.flash(request, tr("saved", lang))
        return RedirectResponse(f"/bins/{bin_.number}", 303)

    async def member_add(self, request: Request) -> Response:
        """Add one member household to a BIN."""
        viewer, number = await self._editable_bin(request)
        lang = self.language(request)
        form = await self.form(request)
        values = {k: " ".join(str(form.get(k, "")).split()) for k in ("name", "phone", "second_phone", "street",
                                                                      "language")}
        errors, phone, second = self._member_errors(values, lang)
        if not errors and await self.console.tx(lambda s: phone_taken(s, self._bin(s, viewer, number).id, phone)):
            # The import keys households by their first number: one number, one household.
            errors.append(tr("member_error_phone_taken", lang, bin=number))
        if errors:
            context = await asyncio.to_thread(self._bin_context, viewer, number)
            return self.render(request, "bin.html", 400, viewer=viewer, member_errors=errors, new_member=values,
                               test_calls={}, can_call=self.console.app is not None, **context)

        def work(s: Session) -> int:
            bin_ = self._bin(s, viewer, number)
            person = Person(name=values["name"], street=values["street"] or None,
                            language=CSV_LANGUAGES[values["language"]])
            person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
            _set_phone(person, PhoneRank.PRIMARY, phone)
            _set_phone(person, PhoneRank.SECONDARY, second)
            s.add(person)
            s.flush()
            audit.record(s, viewer.actor, "member.add", f"person:{person.id}", bin=number, phone=mask(phone))
            return person.id

        await self.console.tx(work)
        self.flash(request, tr("saved", lang))
        return RedirectResponse(f"/bins/{number}", 303)

    @staticmethod
    def _member_errors(values: dict[str, str], lang: str) -> tuple[list[str], str, str | None]:
        errors = []
        phone, second = "", None
        if not values["name"]:
            errors.append(tr("member_error_name", lang))
        try:
            phone = normalize_phone(values["phone"])
        except InvalidPhoneNumber as exc:
            errors.append(tr("member_error_phone", lang, why=str(exc)))
        if values["second_phone"]:
            try:
                second = normalize_phone(values["second_phone"])
            except InvalidPhoneNumber as exc:
                errors.append(tr("member_error_second_phone", lang, why=str(exc)))
        if second is not None and second == phone:
            errors.append(tr("member_error_same_phone", lang))
        if values["language"] not in CSV_LANGUAGES:
            errors.append(tr("error_language", lang))
        return errors, phone, second

    async def member_test_call(self, request: Request) -> Response:
        """Call one member with the spoken test message (the start of a BIN)."""
        viewer = await self.viewer(request)
        person_id = int(request.path_params["id"])
        lang = self.language(request)

        def check(s: Session) -> tuple[int, str]:
            person, bin_ = self._member_context(s, viewer, person_id)
            if not viewer.may_edit_members(bin_.id):
                raise PageError(403, "error_forbidden")
            return bin_.number, person.name

        number, name = await self.console.tx(check)
        await self.form(request)
        try:
            await self.console.test_call(viewer, person_id)
        except ConsoleUnavailable:
            self.flash(request, tr("test_call_unavailable", lang), "warn")
        except LookupError:
            self.flash(request, tr("test_call_no_phone", lang, name=name), "warn")
        else:
            self.flash(request, tr("test_call_started", lang, name=name))
        return RedirectResponse(f"/bins/{number}", 303)


def marked(snippet: str | None) -> Markup:
    """An archive snippet with the found words (between ``[`` and ``]``) in ``<mark>``, all else escaped."""
    out = []
    for i, part in enumerate(re.split(r"\[([^\[\]]*)\]", snippet or "")):
        out.append(Markup("<mark>{}</mark>").format(part) if i % 2 else escape(part))
    return Markup("").join(out)


def _save_upload(upload: UploadFile, target: Path) -> int:
    """Copy an upload (already bounded while it streamed in) to ``target``; its size (blocking)."""
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 16)
        return out.tell()


def _verified_take(console: Console, s: Session, message_id: int) -> Path:
    message = s.get_one(Message, message_id)
    take: Recording | None = next((r for r in message.recordings if r.take == message.submitted_take), None)
    if take is None:
        raise PageError(404, "error_no_recording")
    return console.desk.store.open_verified(Path(take.path), take.sha256)


def _set_phone(person: Person, rank: PhoneRank, e164: str | None) -> None:
    current = phone_of(person, rank)
    if e164 is None:
        if current is not None:
            person.phones.remove(current)
    elif current is None:
        person.phones.append(PhoneNumber(rank=rank, e164=e164))
    else:
        current.e164 = e164


def create_app(console: Console, secret_key: str, secure_cookies: bool = False) -> Starlette:
    """The console as an ASGI app.

    ``secure_cookies``: the session cookie is only sent over HTTPS (and browsers are told to keep
    to HTTPS); turn it on whenever the console is reached through TLS.
    """
    pages = Pages(console, secret_key)

    async def script(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in SCRIPTS:
            return Response("not found", 404, media_type="text/plain")
        return FileResponse(STATIC / name, media_type="text/javascript; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target)}", 303)

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        viewer = None
        if request.session.get("account") is not None:
            viewer = await console.tx(lambda s: load_viewer(s, int(request.session["account"])))
        lang = pages.language(request)
        return pages.render(request, "error.html", exc.status, viewer=viewer, message=tr(exc.text_id, lang))

    async def body_too_large(request: Request, exc: Exception) -> Response:
        return pages.render(request, "error.html", 413, message=tr("error_too_large", pages.language(request)))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        lang = pages.language(request)
        return pages.render(request, "error.html", exc.status_code, message=tr("error_bad_request", lang)
                            if exc.status_code < 500 else str(exc.detail))

    routes = [
        Route("/signin", pages.signin_page, methods=["GET"]),
        Route("/signin", pages.signin, methods=["POST"]),
        Route("/signout", pages.signout, methods=["POST"]),
        Route("/lang/{lang}", pages.set_language, methods=["GET"]),
        Route("/", pages.board, methods=["GET"]),
        Route("/board/state", pages.board_state, methods=["GET"]),
        Route("/board/events", pages.board_events, methods=["GET"]),
        Route("/messages/{id:int}", pages.message, methods=["GET"]),
        Route("/messages/{id:int}/audio", pages.message_audio, methods=["GET"]),
        Route("/messages/{id:int}/report.csv", pages.message_csv, methods=["GET"]),
        Route("/messages/{id:int}/cap.xml", pages.message_cap, methods=["GET"]),
        Route("/send", pages.send_page, methods=["GET"]),
        Route("/send", pages.send, methods=["POST"]),
        Route("/send/preview", pages.send_preview, methods=["GET"]),
        Route("/archive", pages.archive, methods=["GET"]),
        Route("/bins", pages.bins, methods=["GET"]),
        Route("/bins/{number:int}", pages.bin_page, methods=["GET"]),
        Route("/bins/{number:int}", pages.bin_edit, methods=["POST"]),
        Route("/bins/{number:int}/import", pages.members_import, methods=["POST"]),
        Route("/bins/{number:int}/members", pages.member_add, methods=["POST"]),
        Route("/members/{id:int}", pages.member_page, methods=["GET"]),
        Route("/members/{id:int}", pages.member_save, methods=["POST"]),
        Route("/members/{id:int}/test-call", pages.member_test_call, methods=["POST"]),
        # Scripts hold no data (it comes from the page or the server): open to all, like the sign-in.
        Route("/static/{name}", script, methods=["GET"]),
    ]
    middleware = [Middleware(SecurityHeaders, hsts=secure_cookies),
                  Middleware(SessionMiddleware, secret_key=secret_key, session_cookie=SESSION_COOKIE,
                             max_age=int(console.settings.web_session_max_s), same_site="lax",
                             https_only=secure_cookies)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={
        SignInRequired: sign_in_required, PageError: page_error, BodyTooLarge: body_too_large,
        HTTPException: http_error})


class SecurityHeaders:
    """Pages are never framed, sniffed or cached (pure ASGI: streams stay streams).

    Scripts come only from this site's files, never inline (an injected ``<script>`` does not
    run); styles may be inline (the pages' ``style`` attributes carry no data). Police data is
    never kept in a browser's or proxy's cache: every response without its own ``Cache-Control``
    gets ``no-store``.
    """

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
        (b"content-security-policy",
         (b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
          b"img-src 'self' data:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
          b"frame-ancestors 'none'; form-action 'self'"))]
    HSTS: ClassVar[tuple[bytes, bytes]] = (b"strict-transport-security", b"max-age=31536000")

    def __init__(self, app: Any, hsts: bool = False) -> None:
        self.app = app
        self.headers = self.HEADERS + ([self.HSTS] if hsts else [])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers + self.headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

