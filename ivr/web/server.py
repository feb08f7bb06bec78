"""Serving the console from ``binfoon serve``: uvicorn on the service's own asyncio loop.

Rules: the socket is bound here (a port in use is a clear error, never uvicorn's ``sys.exit``);
uvicorn must not take over the process's signals (``binfoon serve`` owns SIGINT/SIGTERM); the
session key is a secret kept in a 0600 file under ``data_dir``, never in the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from ivr.config import Settings
from ivr.web.console import Console
from ivr.web.routes import create_app

if TYPE_CHECKING:
    from ivr.app import BinfoonApp

log = logging.getLogger(__name__)


class WebStartError(RuntimeError):
    """The console could not listen (the message says where and why)."""


def session_key(settings: Settings) -> str:
    """The key that signs session cookies: made once, kept in ``data_dir/web-session.key`` (0600)."""
    path = Path(settings.data_dir) / "web-session.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_urlsafe(48))
    return path.read_text(encoding="ascii").strip()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling: the service that embeds it decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn releases
        pass


class WebConsole:
    """The console listening on ``host:port`` until ``stop``."""

    def __init__(self, console: Console, host: str, port: int) -> None:
        self.console = console
        self.host = host
        self.port = port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where a browser reaches it."""
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> str:
        """Bind, serve in a task on this loop, return the address once it accepts connections."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise WebStartError(f"web console cannot listen on {self.host}:{self.port}: {exc.strerror} "
                                "(set web_port, or 0 to turn the console off)") from None
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        app = create_app(self.console, session_key(self.console.settings),
                         secure_cookies=self.console.settings.web_secure_cookies)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3, proxy_headers=False)
        self._server = _EmbeddedServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]), name="binfoon-web")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what went wrong
                raise WebStartError("web console stopped at start")
            await asyncio.sleep(0.02)
        return self.url

    async def stop(self) -> None:
        """Stop accepting, end live streams, wait for requests in progress (a few seconds at most)."""
        await self.console.aclose()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)


async def start_web_console(app: BinfoonApp, port: int | None = None) -> WebConsole | None:
    """The console of a running service on ``web_host:web_port`` (``None`` when ``web_port`` is 0).

    ``port`` overrides the setting (0: any free port, as tests and the demo use).
    """
    settings = app.settings
    if port is None:
        if settings.web_port == 0:
            return None
        port = settings.web_port
    web = WebConsole(Console.from_app(app), settings.web_host, port)
    await web.start()
    return web
