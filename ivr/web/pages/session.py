"""Signing in and out, and the interface language."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ivr.directory.accounts import sign_in, sign_out_everywhere
from ivr.web.console import ConsoleBusy
from ivr.web.i18n import LANGUAGES, tr
from ivr.web.pages.base import PageBase, safe_target


class SessionPages(PageBase):
    """The sign-in page, signing in and out, switching language."""

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
        ip = self.client(request)  # behind a trusted proxy: the client it forwards for
        try:
            # On the password threads: a flood of sign-ins never takes the call flows' threads.
            result = await self.console.signin_tx(lambda s: sign_in(s, username, password, ip, self.limits))
        except ConsoleBusy:
            return self.render(request, "signin.html", 503, error=tr("signin_busy", lang), next=target)
        if result.viewer is None:
            if result.locked_until is not None:
                error = tr("signin_locked", lang, time=self._local_time(result.locked_until, "%H:%M"))
                return self.render(request, "signin.html", 429, error=error, next=target)
            return self.render(request, "signin.html", 401, error=tr("signin_wrong", lang), next=target)
        viewer = result.viewer
        # A fresh session (no fixation): new CSRF token, the account's epoch, the clock starts.
        request.session.clear()
        now = self.now()
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
