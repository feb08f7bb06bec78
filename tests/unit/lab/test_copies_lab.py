"""The lab's callback port: reserved from the moment Kannel is told it until the lab stops, yet free for
the service's own listener (``KannelCallbacks``, SO_REUSEADDR), also after the service restarts."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from starlette.applications import Starlette

from ivr.copies.callbacks import KannelCallbacks
from ivr.lab.copies_lab import CopiesLab


def bind_plainly(port: int) -> None:
    """Bind ``port`` as any other program would (no SO_REUSEADDR); ``OSError`` when it is taken."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


async def test_the_callback_port_is_kept_for_the_service(tmp_path: Path) -> None:
    texts = CopiesLab(tmp_path / "var")
    port = texts.callback_port
    try:
        with pytest.raises(OSError, match="in use"):
            bind_plainly(port)  # nobody else takes it meanwhile
        for _ in range(2):  # the service, and the service again after a restart
            listener = KannelCallbacks(Starlette(), port)
            assert await listener.start() == f"http://127.0.0.1:{port}"
            try:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with pytest.raises(urllib.error.HTTPError, match="404"):  # the service answers
                    await asyncio.to_thread(opener.open, f"http://127.0.0.1:{port}/kannel/none", timeout=10)
            finally:
                await listener.stop()
            with pytest.raises(OSError, match="in use"):
                bind_plainly(port)
    finally:
        texts.stop()


def test_the_port_is_given_up_when_the_lab_stops(tmp_path: Path) -> None:
    texts = CopiesLab(tmp_path / "var")
    with pytest.raises(OSError, match="in use"):
        bind_plainly(texts.callback_port)
    texts.stop()
    bind_plainly(texts.callback_port)
    texts.stop()  # a second stop does nothing
