"""The live board: messages in progress with their stage, campaign bar and written copies, also as JSON and
a stream."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ivr.directory.accounts import load_viewer
from ivr.delivery.report import COPY_CHANNELS, REACH_STATES
from ivr.delivery.states import BAR
from ivr.delivery.store import delivery_pause
from ivr.domain.vocabulary import CopyStatus
from ivr.web.i18n import tr
from ivr.web.pages.base import PageBase

#: A stream replaced by a newer one of its session tells its browser to retry only after this
#: (two tabs of one session then take turns instead of replacing each other every 2 s).
REPLACED_RETRY_MS = 30000


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


#: Every stage ``ivr.delivery.board.stage_of`` gives (the live board's script words them).
STAGES = ("with_coordinators", "scheduled", "delivering", "done", "rejected", "cancelled", "draft")


def copy_words(language: str) -> dict[str, list[list[str]]]:
    """The words of a copies line in ``language``, in the order it says them (lists: a JSON object's
    keys would be sorted on the way to the page's script)."""
    return {"channels": [[c.value, tr(f"copies_{c.value}", language)] for c in COPY_CHANNELS],
            "statuses": [[s.value, tr(f"copy_status_{s.value}", language)] for s in CopyStatus],
            "extra": [[key, tr(f"copies_{key}", language)]
                      for key in ("ladder", "ladder_waiting", *REACH_STATES)]}


def copies_text(copies: dict[str, Any] | None, words: dict[str, list[list[str]]]) -> str:
    """A campaign's written copies in one line, e.g. "Sms: 10 afgeleverd, 1 mislukt · E-mail: 8 verstuurd
    · contactladder: 3 · enkel tekst: 2" (``CampaignReport.copy_summary``; "" when there is nothing to
    say). ``board.js`` writes the same line from the same words when the board changes."""
    if not copies:
        return ""
    parts = []
    for channel, name in words["channels"]:
        by_status = copies.get(channel) or {}
        said = ", ".join(f"{by_status[status]} {word}" for status, word in words["statuses"]
                         if by_status.get(status))
        if said:
            parts.append(f"{name}: {said}")
    parts += [f"{word}: {copies[key]}" for key, word in words["extra"] if copies.get(key)]
    return " · ".join(parts)


def with_pause(console: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark the messages being delivered with why delivery is paused (the trunk is down), if it is:
    ``paused`` is the dialer's reason and since when, or ``None`` (blocking)."""
    pause = console.run(delivery_pause)
    text = None if pause is None else f"{pause.reason} ({pause.since:%H:%M:%S} UTC)"
    for item in items:
        item["paused"] = text if item.get("stage") == "delivering" else None
    return items


class BoardPages(PageBase):
    """The board, its state, its server-sent events."""

    async def board(self, request: Request) -> Response:
        """Messages in progress with their stage and live campaign bar."""
        viewer = await self.viewer(request)
        items = await self.console.read(lambda: with_pause(self.console, self.console.board(viewer)))
        lang = self.language(request)
        stage_texts = {stage: tr(f"stage_{stage}", lang) for stage in STAGES}
        empty_bar = {"members": 0, **{segment: 0 for segment in BAR}}
        words = copy_words(lang)
        copy_lines = {item["id"]: copies_text(item.get("copies"), words) for item in items}
        return self.render(request, "board.html", viewer=viewer, items=items, segments=list(BAR),
                           stage_texts=stage_texts, empty_bar=empty_bar, copy_words=words, copy_lines=copy_lines)

    async def board_state(self, request: Request) -> Response:
        """The board as JSON (what the live stream sends)."""
        viewer = await self.viewer(request)
        return JSONResponse(await self.console.read(lambda: with_pause(self.console, self.console.board(viewer))))

    async def board_events(self, request: Request) -> Response:
        """Server-sent events: the board whenever it changes (a comment every 15 s keeps proxies open).

        The stream is not activity: it ends when the session would idle out (or reach its maximum),
        and the browser's automatic reconnection then finds no session. The account is checked
        again on every round: a disabled account or a new password ends the stream, and a change
        of roles changes what it shows.

        One stream per session: a second one (a reload, another tab) ends the first, which tells its
        browser to come back only after ``REPLACED_RETRY_MS``; past ``web_max_streams`` open streams
        a new one is refused (503). The polling runs on the console's own reading threads.
        """
        viewer = await self.viewer(request, touch=False)
        console = self.console
        stream_key = hashlib.sha256(self.csrf_token(request).encode()).hexdigest()
        replaced = self.streams.start(stream_key)
        if replaced is None:
            return Response("too many live streams", 503, media_type="text/plain", headers={"Retry-After": "30"})
        now = self.now
        session = request.session
        ends_at = min(float(session["seen"]) + self.settings.web_session_idle_s,
                      float(session["since"]) + self.settings.web_session_max_s)
        account_id, epoch = viewer.account_id, viewer.epoch

        def board_now() -> list[dict[str, Any]] | None:
            current = console.run(lambda s: load_viewer(s, account_id))
            if current is None or current.epoch != epoch:
                return None
            return with_pause(console, console.board(current))

        async def events() -> AsyncIterator[str]:
            last = None
            quiet_since = now()
            try:
                yield "retry: 2000\n\n"
                while not console.closing.is_set() and now() < ends_at:
                    if replaced.is_set():
                        yield f"retry: {REPLACED_RETRY_MS}\n\n"
                        return  # the session's newer stream goes on
                    board = await console.read(board_now)
                    if board is None:
                        return  # signed out everywhere: the reconnection meets the sign-in
                    state = json.dumps(board, sort_keys=True)
                    if state != last:
                        last = state
                        quiet_since = now()
                        yield f"event: board\ndata: {state}\n\n"
                    elif now() - quiet_since > 15:
                        quiet_since = now()
                        yield ": still here\n\n"
                    try:
                        async with asyncio.timeout(1.0):
                            await _first_of(console.closing, replaced)
                    except TimeoutError:
                        pass
            finally:
                self.streams.end(stream_key, replaced)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
