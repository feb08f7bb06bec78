"""Kannel's callbacks into the service: delivery reports of SMS copies and members' SMS replies.

A tiny Starlette app served by uvicorn on the service's own loop, on 127.0.0.1 only
(``sms_callback_port``): smsbox runs beside the service and fetches
- ``GET /kannel/dlr?copy=<copy id>&type=<%d>&sig=<signature of the copy id>`` for every report, and
- ``GET /kannel/mo?from=<%p>&to=<%P>&text=<%a>&id=<%I>&sig=<the installation's reply token>`` for
  every SMS a member sends (``ivr.copies.kannel`` writes both URLs); with ``&ts=<%T>`` the reply keeps
  the time Kannel took it (a reply retried after the service was down is not made later).

Rules: whatever reaches the socket is hostile until its signature says otherwise. Every request's
``sig`` is checked first, in constant time (``ivr.copies.tokens.verify``): a wrong or missing one is
403 and nothing is written. Then every parameter is bounded (lengths, digits, a copy id's alphabet):
anything else is 400, nothing written. A reply must carry Kannel's id (``%I``, a UUID): the reply is
stored once per id, so a reply URL seen once cannot be replayed into a second one. A good request is
stored (``CopyDesk``) and answered at once with 200 "ok"; a failure to store is 500, which Kannel
retries (``http-request-retry``), and storing the same report or reply twice changes nothing.
Refusals are logged at most once a minute with their count (a flood does not flood the log), and
the listener serves ``max_connections`` at once (beyond: 503, which Kannel retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ivr.copies.kannel import DLR_PURPOSE, MO_PURPOSE
from ivr.copies.store import CopyDesk
from ivr.copies.tokens import verify
from ivr.domain.phone import InvalidPhoneNumber, mask, normalize_phone
from storage.models import utcnow

log = logging.getLogger(__name__)

#: The value Kannel's reply token signs (``ivr.copies.kannel.mo_token``).
MO_SIGNED = "kannel"
_COPY_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_DLR_TYPE = re.compile(r"^[0-9]{1,3}$")
#: A sender or receiver as Kannel gives it: a number, with or without +, or an 11-character name.
_ADDRESS = re.compile(r"^\+?[0-9]{3,20}$|^[A-Za-z0-9 ]{1,11}$")
#: Kannel's id of a reply (``%I``): a UUID.
_KANNEL_ID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\Z")
#: When Kannel took a reply (``%T``): Unix seconds, after 2001.
_UNIX_TIME = re.compile(r"^[1-9][0-9]{9,10}\Z")
#: The longest reply taken (a concatenated SMS of 10 parts); what is stored is cut to 160.
MAX_TEXT_CHARS = 1600
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class CallbackStartError(RuntimeError):
    """The callback listener could not listen (the message says where and why)."""


class Throttled:
    """A warning logged at most once every ``every_s`` seconds, saying how many times it happened since
    the last line: requests from the socket cannot flood the log."""

    def __init__(self, message: str, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.message = message
        self.every_s = every_s
        self.clock = clock
        self._count = 0
        self._said_at: float | None = None

    def __call__(self) -> None:
        self._count += 1
        now = self.clock()
        if self._said_at is None or now - self._said_at >= self.every_s:
            log.warning("%s (%d since the last such line)", self.message, self._count)
            self._count, self._said_at = 0, now


def _ok() -> PlainTextResponse:
    return PlainTextResponse("ok")


def _refused(status: int, why: str) -> PlainTextResponse:
    return PlainTextResponse(why, status_code=status)


def member_number(raw: str) -> str | None:
    """A reply's sender as E.164 (``None``: it is no phone number). SMSCs give it as ``+32470...``,
    ``32470...`` (international without the plus), ``0470...`` or ``0032470...``."""
    text = raw.strip()
    for candidate in (text, f"+{text}") if text.isdigit() and not text.startswith("0") else (text,):
        try:
            return normalize_phone(candidate)
        except InvalidPhoneNumber:
            continue
    return None


def kannel_time(raw: str, now: dt.datetime) -> dt.datetime | None:
    """When Kannel took a reply (``%T``, Unix seconds), never later than ``now`` (a clock ahead);
    ``None``: not given. ``ValueError``: not a time."""
    if not raw:
        return None
    if not _UNIX_TIME.match(raw):
        raise ValueError(f"not a Unix time: {raw[:20]!r}")
    try:
        return min(dt.datetime.fromtimestamp(int(raw), dt.timezone.utc), now)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"not a Unix time: {raw!r}") from exc


def callback_app(desk: CopyDesk, key: bytes, *, on_confirmed: Callable[[], None] | None = None,
                 clock: Callable[[], dt.datetime] = utcnow, warn_every_s: float = 60.0) -> Starlette:
    """The ASGI app of Kannel's callbacks. ``on_confirmed`` is told when a reply confirmed a campaign
    (the dialer then stops calling that member at once, rather than at its next plan). Refusals are
    logged at most once every ``warn_every_s`` seconds per kind."""
    forged_dlr = Throttled("delivery reports with a bad signature refused", warn_every_s)
    forged_mo = Throttled("SMS replies with a bad signature refused", warn_every_s)
    bad = Throttled("signed callbacks with bad parameters refused (400)", warn_every_s)

    async def dlr(request: Request) -> PlainTextResponse:
        params = request.query_params
        copy_id, sig, kind = params.get("copy", ""), params.get("sig", ""), params.get("type", "")
        if len(copy_id) > 64 or not verify(key, DLR_PURPOSE, copy_id, sig):
            forged_dlr()
            return _refused(403, "forbidden")
        if not _COPY_ID.match(copy_id) or not _DLR_TYPE.match(kind):
            bad()
            return _refused(400, "bad request")
        moved = await desk.delivery_report(copy_id, int(kind), clock())
        log.debug("delivery report %s for copy %s: %s", kind, copy_id, moved)
        return _ok()

    async def mo(request: Request) -> PlainTextResponse:
        params = request.query_params
        if not verify(key, MO_PURPOSE, MO_SIGNED, params.get("sig", "")):
            forged_mo()
            return _refused(403, "forbidden")
        sender, to, text, ref, ts = (params.get(name, "") for name in ("from", "to", "text", "id", "ts"))
        number = member_number(sender) if _ADDRESS.match(sender) else None
        now = clock()
        try:
            at = kannel_time(ts, now) or now
        except ValueError:
            at = None
        # Kannel's id is required: a reply is taken once per id, so a URL seen once is no second reply.
        if number is None or (to and not _ADDRESS.match(to)) or len(text) > MAX_TEXT_CHARS \
                or not _KANNEL_ID.match(ref) or at is None:
            bad()
            return _refused(400, "bad request")
        text = _CONTROL.sub(" ", text)
        action = await desk.take_reply(number, to, text, ref.lower(), at)
        log.info("SMS reply from %s: %s", mask(number), action)
        if action == "confirm" and on_confirmed is not None:
            on_confirmed()
        return _ok()

    return Starlette(routes=[Route("/kannel/dlr", dlr, methods=["GET"]), Route("/kannel/mo", mo, methods=["GET"])])


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling: the service that embeds it decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn releases
        pass


class KannelCallbacks:
    """The callback app listening on ``127.0.0.1:port`` until ``stop`` (port 0: any free port), serving
    ``max_connections`` at once (beyond: 503, which Kannel retries)."""

    HOST = "127.0.0.1"

    def __init__(self, app: Starlette, port: int, max_connections: int = 32) -> None:
        self.app = app
        self.port = port
        self.max_connections = max_connections
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        """Where Kannel reaches it (``http://127.0.0.1:<port>``)."""
        return f"http://{self.HOST}:{self.port}"

    async def start(self) -> str:
        """Bind (a port in use is a clear error), serve on this loop, return the base URL once it accepts."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.HOST, self.port))
        except OSError as exc:
            sock.close()
            raise CallbackStartError(f"Kannel's callback listener cannot listen on {self.HOST}:{self.port}: "
                                     f"{exc.strerror} (set sms_callback_port)") from None
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3, proxy_headers=False,
                                limit_concurrency=self.max_connections)
        self._server = _EmbeddedServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]),
                                                            name="kannel-callbacks")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise CallbackStartError("Kannel's callback listener stopped at start")
            await asyncio.sleep(0.02)
        return self.base

    async def stop(self) -> None:
        """Stop accepting; requests in progress finish (a few seconds at most)."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
            self._server = self._task = None
