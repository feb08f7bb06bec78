"""What every page shares: templates, the viewer, forms with their CSRF check, notices, errors.

Rules (the whole console's; see ``ivr.web.routes`` for the app around them):
- every page but the sign-in needs a session; anonymous requests are redirected to the sign-in;
- the client is the peer, or behind a proxy of ``web_trusted_proxies`` the right-most address of
  X-Forwarded-For that is not a proxy (``client_address``): the sign-in limit counts per client;
- a session ends after ``web_session_idle_s`` without a request, after ``web_session_max_s`` in
  any case, and when the account's ``session_epoch`` changes (password reset, disabled);
- every form carries the session's CSRF token; a POST without it changes nothing (403);
- a request body is counted while it streams in: past its limit the request is refused (413),
  whatever ``Content-Length`` said or did not say.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
import secrets
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ivr.directory.accounts import SignInLimits, Viewer, load_viewer
from ivr.web.console import Console
from ivr.web.i18n import DEFAULT_LANGUAGE, LANGUAGES, tr

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
#: Every form but an upload is small: a larger body is refused while it streams in.
FORM_MAX_BYTES = 256 * 1024
#: Room for the fields and multipart framing around an upload.
UPLOAD_OVERHEAD_BYTES = 64 * 1024


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


def _trusted(address: str, proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str, forwarded_for: str | None,
                   proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """Who is asking: the peer, unless the peer is a trusted proxy; then the right-most address of
    X-Forwarded-For that is not a proxy (each proxy appends the address it saw: what a client wrote
    itself stands further left and is never believed). Only proxies in it: the left-most."""
    if not forwarded_for or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop[:64]
    return hops[0][:64] if hops else peer


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


def marked(snippet: str | None) -> Markup:
    """An archive snippet with the found words (between ``[`` and ``]``) in ``<mark>``, all else escaped."""
    out = []
    for i, part in enumerate(re.split(r"\[([^\[\]]*)\]", snippet or "")):
        out.append(Markup("<mark>{}</mark>").format(part) if i % 2 else escape(part))
    return Markup("").join(out)


class LiveStreams:
    """The open live streams, one per session (session key -> the event that ends it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, asyncio.Event] = {}

    def start(self, session_key: str) -> asyncio.Event | None:
        """Register a session's stream: the event ends it. A stream the session already had is ended
        (a reload, a second tab: the newest wins); ``None`` when ``limit`` streams are open."""
        older = self.open.pop(session_key, None)
        if older is not None:
            older.set()
        elif len(self.open) >= self.limit:
            return None
        ended = self.open[session_key] = asyncio.Event()
        return ended

    def end(self, session_key: str, ended: asyncio.Event) -> None:
        """A stream is over (unless a newer one of the session took its place)."""
        if self.open.get(session_key) is ended:
            del self.open[session_key]


class PageBase:
    """The plumbing every page area uses, bound to one console."""

    def __init__(self, console: Console, secret_key: str) -> None:
        self.console = console
        self.settings = console.settings
        self.secret_key = secret_key
        self.limits = SignInLimits(self.settings.web_signin_max_failures, self.settings.web_ip_max_failures,
                                   self.settings.web_signin_lock_s)
        self.proxies = self.settings.trusted_proxies
        self.streams = LiveStreams(self.settings.web_max_streams)
        # Every template is escaped, whatever its name ends with.
        self.env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
        self.env.filters["local"] = self._local_time
        self.env.filters["marked"] = marked

    @staticmethod
    def now() -> float:
        """Seconds since the epoch (sessions' idle and maximum times, plays' window)."""
        return _now()

    def _local_time(self, value: dt.datetime | str | None, fmt: str = "%d/%m/%Y %H:%M") -> str:
        if value is None or value == "":
            return "-"
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(self.settings.tz).strftime(fmt)

    def client(self, request: Request) -> str:
        """The client's address (``client_address`` over ``web_trusted_proxies``): what the sign-in limit counts."""
        peer = request.client.host if request.client else "unknown"
        forwarded = ",".join(request.headers.getlist("x-forwarded-for")) or None
        return client_address(peer, forwarded, self.proxies)

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
        now = self.now()
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
