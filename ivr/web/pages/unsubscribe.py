"""The unsubscribe link of every e-mail copy: ``/unsubscribe/<token>``.

Rules:
- the token (``ivr.copies.tokens``, signed with the copies key) is the only authority: no sign-in,
  no CSRF token (a mail provider's RFC 8058 one-click POST comes without a cookie, and whoever could
  forge the request already holds the token); a token that does not verify, or names nobody, is a
  404 and nothing is written;
- GET only shows the page with its button (mail scanners open links: a GET never unsubscribes);
  POST unsubscribes, by the button or by one-click (``List-Unsubscribe=One-Click``), and is
  idempotent (``ivr.copies.unsubscribe.unsubscribe_email``);
- the page speaks the member's language (unless the visitor chose another) and shows nothing
  personal: the link may have been forwarded.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response

from ivr.copies.tokens import load_copies_key, person_of_token
from ivr.copies.unsubscribe import subscription, unsubscribe_email
from ivr.web.i18n import LANGUAGES
from ivr.web.pages.base import BodyTooLarge, PageBase, PageError

#: A one-click POST carries one short field; a button press none.
BODY_MAX_BYTES = 4096


class UnsubscribePages(PageBase):
    """The page behind the unsubscribe link of e-mail copies."""

    _copies_key: bytes | None = None

    async def _person(self, request: Request) -> int:
        """The person the path's token names (``PageError`` 404 for anything else)."""
        if self._copies_key is None:
            self._copies_key = await asyncio.to_thread(load_copies_key, self.settings.copies_key_path)
        person_id = person_of_token(self._copies_key, request.path_params["token"])
        if person_id is None:
            raise PageError(404, "error_not_found")
        return person_id

    def _speak(self, request: Request, language: str) -> None:
        # The member's language, unless this browser already chose one.
        if request.session.get("lang") not in LANGUAGES and language in LANGUAGES:
            request.session["lang"] = language

    async def unsubscribe_page(self, request: Request) -> Response:
        """The page with the button (or: already unsubscribed)."""
        person_id = await self._person(request)
        found = await self.console.tx(lambda s: subscription(s, person_id))
        if found is None:
            raise PageError(404, "error_not_found")
        self._speak(request, found.language)
        return self.render(request, "unsubscribe.html", token=request.path_params["token"], done=False,
                           since=found.opted_out_at)

    async def unsubscribe(self, request: Request) -> Response:
        """Unsubscribe from e-mail copies (the page's button, or a mail provider's one-click POST)."""
        person_id = await self._person(request)
        via = "one-click" if await _one_click(request) else "page"
        now = self.console.clock()
        done, found = await self.console.tx(
            lambda s: (unsubscribe_email(s, person_id, now, via), subscription(s, person_id)))
        if done is None or found is None:
            raise PageError(404, "error_not_found")
        self._speak(request, found.language)
        return self.render(request, "unsubscribe.html", token=request.path_params["token"], done=True,
                           since=found.opted_out_at)


async def _one_click(request: Request) -> bool:
    """Whether the POST is RFC 8058's ``List-Unsubscribe=One-Click`` (form-encoded or multipart); the
    body is read at most ``BODY_MAX_BYTES`` far (``BodyTooLarge`` beyond)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_MAX_BYTES:
            raise BodyTooLarge()
    sent = False

    async def replay() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=0, max_fields=8)
    except (HTTPException, MultiPartException, ValueError):
        # A malformed body is no one-click request; the token in the path still unsubscribes.
        return False
    return form.get("List-Unsubscribe") == "One-Click"
