"""Helpers for conversations against the real Asterisk."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from ivr.simulator.lab import PhoneLab
from ivr.telephony.agi import AgiCall

pytestmark = pytest.mark.integration


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
