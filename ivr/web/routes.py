"""The console as a Starlette app over ``Console`` (server-rendered, Dutch first): routes, errors, headers.

The pages themselves are ``ivr.web.pages`` (one module per area). Rules kept here:
- an anonymous request is sent to the sign-in; a ``PageError`` is shown as a page in the viewer's
  language; a body past its limit is refused (413);
- no inline script (the CSP forbids it): scripts are the fixed files of ``static/``;
- nothing is cached by a browser or proxy unless the response says so;
- the session cookie is ``SameSite=Strict``: a link or form on another site never carries it, so
  no audited GET (a replay, an export, the audit view) can be set off from elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from ivr.directory.accounts import load_viewer
from ivr.web.console import Console
from ivr.web.i18n import tr
from ivr.web.pages import BodyTooLarge, PageError, Pages, SignInRequired
from ivr.web.pages.base import TEMPLATES
from ivr.web.pages.unsubscribe import UnsubscribePages

__all__ = ["SCRIPTS", "SESSION_COOKIE", "STATIC", "TEMPLATES", "SecurityHeaders", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
#: The only files ``/static/`` serves (a fixed list: no path from the request reaches the disk).
SCRIPTS = ("board.js", "message.js", "send.js")
SESSION_COOKIE = "binfoon_session"


def create_app(console: Console, secret_key: str, secure_cookies: bool = False) -> Starlette:
    """The console as an ASGI app.

    ``secure_cookies``: the session cookie is only sent over HTTPS (and browsers are told to keep
    to HTTPS); turn it on whenever the console is reached through TLS.
    """
    pages = Pages(console, secret_key)
    unsubscribe = UnsubscribePages(console, secret_key)  # e-mail copies' link (issue 17): no sign-in

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
        Route("/audit", pages.audit_log, methods=["GET"]),
        Route("/bins", pages.bins, methods=["GET"]),
        Route("/bins/{number:int}", pages.bin_page, methods=["GET"]),
        Route("/bins/{number:int}", pages.bin_edit, methods=["POST"]),
        Route("/bins/{number:int}/import", pages.members_import, methods=["POST"]),
        Route("/bins/{number:int}/members", pages.member_add, methods=["POST"]),
        Route("/members/{id:int}", pages.member_page, methods=["GET"]),
        Route("/members/{id:int}", pages.member_save, methods=["POST"]),
        Route("/members/{id:int}/test-call", pages.member_test_call, methods=["POST"]),
        # -- campaign control (issue 16) --
        Route("/messages/{id:int}/stop", pages.message_stop, methods=["POST"]),
        Route("/messages/{id:int}/renotify", pages.message_renotify, methods=["POST"]),
        Route("/messages/{id:int}/cancel", pages.message_cancel, methods=["POST"]),
        Route("/messages/{id:int}/retract", pages.message_retract, methods=["POST"]),
        # -- drills (issue 16) --
        Route("/bins/{number:int}/drill", pages.bin_drill, methods=["POST"]),
        # -- the admin's tools (issue 16) --
        Route("/admin/people", pages.admin_people, methods=["GET"]),
        Route("/admin/people/{id:int}", pages.admin_person, methods=["GET"]),
        Route("/admin/people/{id:int}", pages.admin_person_change, methods=["POST"]),
        Route("/admin/zones", pages.admin_zones, methods=["GET"]),
        Route("/admin/zones/{code}", pages.admin_zone, methods=["GET"]),
        Route("/admin/zones/{code}", pages.admin_zone_save, methods=["POST"]),
        # -- the unsubscribe link of e-mail copies (issue 17): the signed token is the authority --
        Route("/unsubscribe/{token}", unsubscribe.unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", unsubscribe.unsubscribe, methods=["POST"]),
        # Scripts hold no data (it comes from the page or the server): open to all, like the sign-in.
        Route("/static/{name}", script, methods=["GET"]),
    ]
    middleware = [Middleware(SecurityHeaders, hsts=secure_cookies),
                  Middleware(SessionMiddleware, secret_key=secret_key, session_cookie=SESSION_COOKIE,
                             # Strict: no request from another site carries the session, so no audited
                             # GET (a replay, an export, the audit view) can be set off cross-site.
                             max_age=int(console.settings.web_session_max_s), same_site="strict",
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

