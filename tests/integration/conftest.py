"""Helpers for conversations against the real Asterisk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

from ivr.lab.phone_lab import PhoneLab
from ivr.telephony.agi import AgiCall

pytestmark = pytest.mark.integration

T = TypeVar("T")


async def eventually(read: Callable[[], T], done: Callable[[T], object], timeout_s: float,
                     poll_s: float = 0.05) -> T:
    """``read()`` again until ``done`` holds for what it returns, or the deadline; the last value either
    way, for the caller to assert on. Facts that another socket or process delivers (AMI events, rows
    the app writes, Asterisk's files) can come a moment after the thing the test awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(poll_s)


async def until(predicate: Callable[[], object], timeout_s: float, what: str = "the condition",
                poll_s: float = 0.05) -> None:
    """Wait until ``predicate()`` holds; fail the test if it does not within ``timeout_s``."""
    if not await eventually(predicate, bool, timeout_s, poll_s):
        raise AssertionError(f"{what} not reached in {timeout_s} s")


@dataclass(frozen=True)
class KeyHeard:
    """What the app-side call flow saw: the channel's id, the AGI arguments and the key pressed."""

    unique_id: str
    args: list[str]
    digit: str | None


def listen_for_key(lab: PhoneLab, prompt: str | None = None, wait_s: float = 8.0) -> "asyncio.Queue[KeyHeard]":
    """Serve ``member_call`` with a tiny flow: play ``prompt`` (if any), then wait for one key."""
    heard: asyncio.Queue[KeyHeard] = asyncio.Queue()

    async def member_call(call: AgiCall) -> None:
        if prompt is not None:
            await call.play(prompt)
        digit = await call.wait_for_digit(wait_s)
        await heard.put(KeyHeard(call.unique_id, call.args, digit))

    lab.app.add_route("member_call", member_call)
    return heard
