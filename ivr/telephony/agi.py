"""FastAGI: Asterisk hands a call to a Python coroutine (panoramisk's Application, made robust).

Gaps of panoramisk 1.4's FastAGI that this module closes:
- ``add_route`` wraps plain functions with ``asyncio.coroutine``, which Python 3.11 removed:
  routes must be ``async def`` and anything else is refused at registration;
- the request reader loops forever if Asterisk closes the socket before the blank line, and
  ``_read_result`` crashes on end-of-file: both are read here with limits and timeouts;
- hang-ups come back as several different answers (``HANGUP``, ``result=-1``, ``511``, EOF):
  they all become one ``CallHungUp`` exception, so a flow is plain code between awaits.

Trust (issue 14 item 4): any local process can connect to a loopback port and claim any caller ID,
channel or argument. Once the server knows the instance's secret (``require_secret``), it runs a
flow only for a request whose script is ``<secret>/<route>`` (compared in constant time), which
only the rendered dialplan knows; anything else is logged (without the secret) and closed. Routes
see the route's name only. An outbound call's flow further checks ``is_originated_channel``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from typing import Any, Awaitable, Callable

from panoramisk.fast_agi import Application, Request
from panoramisk.utils import parse_agi_result

log = logging.getLogger(__name__)


class CallHungUp(Exception):
    """The caller (or callee) hung up: the conversation is over."""


class AgiError(RuntimeError):
    """Asterisk refused an AGI command (bad syntax, unknown application...)."""


#: What a FastAGI secret looks like: long enough, and safe as one segment of an AGI URL.
_SECRET_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,}")


def route_of(script: str, secret: str) -> str | None:
    """The route a request names when its script is ``<secret>/<route>``; ``None`` for any other
    script. The secret is compared in constant time (its length is no secret)."""
    given, slash, route = script.partition("/")
    if not slash or not route:
        return None
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode("ascii")):
        return None
    return route


def is_originated_channel(unique_id: str, call_id: str) -> bool:
    """Is the channel whose Uniqueid is ``unique_id`` the one we originated for ``call_id``? Our
    Originate gives the call's own id as the ``ChannelId`` (``ivr.telephony.ami``), so that channel's
    Uniqueid is the id itself; the other half of a Local channel (``<id>-2``) and every other channel
    are not. The one rule for member calls and review calls."""
    return bool(call_id) and unique_id == call_id


def _quote(arg: str) -> str:
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AgiCall:
    """One live call handed to us over FastAGI: the edge a call flow talks to."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.headers: dict[str, str] = dict(request.headers)
        self.hung_up = False

    @property
    def channel(self) -> str:
        """Asterisk's channel name."""
        return self.headers.get("agi_channel", "")

    @property
    def unique_id(self) -> str:
        """The channel's Uniqueid (our call-attempt id for originated calls)."""
        return self.headers.get("agi_uniqueid", "")

    @property
    def caller_id(self) -> str:
        """The caller's number as Asterisk received it."""
        return self.headers.get("agi_callerid", "")

    @property
    def caller_id_name(self) -> str:
        """The caller's name as Asterisk received it."""
        return self.headers.get("agi_calleridname", "")

    @property
    def args(self) -> list[str]:
        """The arguments given to AGI() in the dialplan after the URL."""
        out = []
        i = 1
        while f"agi_arg_{i}" in self.headers:
            out.append(self.headers[f"agi_arg_{i}"])
            i += 1
        return out

    async def command(self, line: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Send one AGI command; returns panoramisk's parsed result. Raises ``CallHungUp``."""
        if self.hung_up:
            raise CallHungUp(self.channel)
        writer = self._request.writer
        writer.write((line + "\n").encode(self._request.encoding))
        await writer.drain()
        while True:
            async with asyncio.timeout(timeout_s):
                raw = await self._request.reader.readline()
            if not raw:
                self.hung_up = True
                raise CallHungUp(self.channel)
            text = raw.decode(self._request.encoding, "replace").rstrip("\r\n")
            if text == "HANGUP":  # asynchronous notice; the real answer follows
                self.hung_up = True
                continue
            result = parse_agi_result(text)
            if result.get("status_code") == 100:
                continue
            break
        if result.get("status_code") == 520:
            # The usage text follows on further lines until "520 End of proper usage."
            while True:
                more = await self._request.reader.readline()
                if not more or more.startswith(b"520 "):
                    break
            raise AgiError(f"{line!r}: {result.get('msg', '').strip()}")
        if result.get("status_code") == 511 or result.get("error") in ("AGIResultHangup", "AGIAppError"):
            self.hung_up = True
            raise CallHungUp(self.channel)
        if result.get("error"):
            raise AgiError(f"{line!r}: {result}")
        return result

    @staticmethod
    def _value(result: dict[str, Any]) -> str:
        return str(result.get("result", ("", ""))[0])

    async def answer(self) -> None:
        """Answer the call (a callee picking up)."""
        await self.command("ANSWER")

    async def hangup(self) -> None:
        """Hang up this call; a call already gone is fine."""
        try:
            await self.command("HANGUP")
        except CallHungUp:
            pass
        self.hung_up = True

    async def exec(self, application: str, *args: str) -> int:
        """Run a dialplan application on the channel; returns its result code."""
        arg = ",".join(args)
        result = await self.command(f"EXEC {application} {_quote(arg)}" if args else f"EXEC {application}")
        value = int(self._value(result) or 0)
        if value == -2:
            raise AgiError(f"application {application} is not loaded")
        return value

    async def gosub(self, context: str, exten: str, priority: int, *args: str) -> None:
        """Run a dialplan subroutine (several applications without a round trip between them)."""
        line = f"GOSUB {context} {exten} {priority}"
        await self.command(f"{line} {_quote(','.join(args))}" if args else line)

    async def play(self, sound: str, escape_digits: str = "") -> str | None:
        """Play a sound file (path without extension); returns the key that interrupted it, if any."""
        result = await self.command(f"STREAM FILE {sound} {_quote(escape_digits)}")
        code = int(self._value(result) or 0)
        endpos = result.get("endpos", ("", ""))[0]
        if code == 0 and endpos == "0":
            raise AgiError(f"cannot play {sound!r}: missing or unreadable sound file")
        return chr(code) if code > 0 else None

    async def wait_for_digit(self, timeout_s: float) -> str | None:
        """Wait for one key; ``None`` on timeout."""
        result = await self.command(f"WAIT FOR DIGIT {int(timeout_s * 1000)}")
        code = int(self._value(result) or 0)
        return chr(code) if code > 0 else None

    async def get_variable(self, name: str) -> str | None:
        """A channel variable or dialplan function value; ``None`` when unset."""
        result = await self.command(f"GET VARIABLE {name}")
        if self._value(result) != "1":
            return None
        return str(result["result"][1])

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable."""
        await self.command(f"SET VARIABLE {name} {_quote(value)}")


Route = Callable[[AgiCall], Awaitable[None]]


class AgiServer(Application):  # type: ignore[misc]
    """A FastAGI server on loopback running one coroutine per call. The application's server requires
    the instance's secret (``require_secret``); only the lab's simulated phones are served without one."""

    HEADER_TIMEOUT_S = 5.0

    def __init__(self, host: str = "127.0.0.1", port: int = 4573) -> None:
        super().__init__(default_encoding="utf-8", loop=asyncio.get_running_loop())
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._calls: set[asyncio.Task[Any]] = set()
        self._secret: str | None = None

    def require_secret(self, secret: str) -> None:
        """From now on, serve only requests whose script starts with ``secret`` (the instance's
        FastAGI secret, ``<secret>/<route>``). A server keeps the one secret it was given."""
        if not _SECRET_SHAPE.fullmatch(secret):
            raise ValueError("FastAGI secret: at least 32 URL-safe characters (letters, digits, - and _)")
        if self._secret is not None and not hmac.compare_digest(self._secret, secret):
            raise ValueError("this FastAGI server already requires another FastAGI secret")
        self._secret = secret

    @property
    def requires_secret(self) -> bool:
        """True once the server serves only requests that carry a secret."""
        return self._secret is not None

    def _route_name(self, script: str) -> str | None:
        """The route a request may run: without a secret (the lab's simulated phones) the script
        itself; with one, only what follows the secret."""
        if self._secret is None:
            return script
        return route_of(script, self._secret)

    def add_route(self, path: str, endpoint: Route) -> None:
        """Serve ``agi://host:port/<path>`` with ``endpoint(call)``; it must be ``async def``."""
        if not asyncio.iscoroutinefunction(endpoint):
            raise TypeError(f"FastAGI route {path!r} must be an async def function")
        super().add_route(path, endpoint)

    def remove_route(self, path: str) -> None:
        """Stop serving ``path`` (no error if it was not served)."""
        self._route.pop(path, None)

    async def start(self) -> None:
        """Listen on loopback."""
        self._server = await asyncio.start_server(self.handler, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("FastAGI listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and end the calls in progress."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One FastAGI session: read the AGI environment, run the route, close."""
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)
        try:
            try:
                async with asyncio.timeout(self.HEADER_TIMEOUT_S):
                    raw = await reader.readuntil(b"\n\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                log.warning("FastAGI: no complete AGI environment received")
                return
            headers = dict(
                line.split(": ", 1) for line in raw.decode("utf-8", "replace").splitlines() if ": " in line
            )
            script = self._route_name(headers.get("agi_network_script", ""))
            if script is None:
                # Not from our dialplan: a local process. Nothing it sent is trusted or echoed (a
                # channel name can hold a phone number); the secret is never logged.
                log.warning("FastAGI: request without this instance's secret refused (from %s)", _peer(writer))
                return
            if self._secret is not None:
                headers["agi_network_script"] = script
                headers["agi_request"] = headers.get("agi_request", "").replace(f"/{self._secret}/", "/")
            route = self._route.get(script)
            if route is None:
                log.error("FastAGI: no route for %r", script)
                return
            call = AgiCall(Request(app=self, headers=headers, reader=reader, writer=writer))
            try:
                await route(call)
            except CallHungUp:
                log.debug("call %s hung up during %s", call.channel, script)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("FastAGI route %r failed on %s", script, call.channel)
        finally:
            if task is not None:
                self._calls.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


def _peer(writer: asyncio.StreamWriter) -> str:
    """The connecting side's address, for the log."""
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
