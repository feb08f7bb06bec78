"""A scripted fake of ``ivr.telephony.call.Call``: conversations as fast unit tests.

The script is what the person on the phone does, in order: a key (``"1"``), digits (``"1234"``),
``None`` for silence, ``Speak(wav)`` for what they say when recorded, ``HANG_UP`` to hang up, and
``WhilePlaying("1")`` (or ``WhilePlaying(HANG_UP)``) for what they do while a recording plays.
``say`` consumes nothing (the person listens); ``ask``, ``read_digits`` and ``record`` each consume
one entry; ``play_audio`` consumes one only if it is a ``WhilePlaying`` (else the recording plays to
its end). When the script is spent the person hangs up.

``FakeCall`` also stands for the channel of an outbound member call (``DurableMark``: the marks
Asterisk keeps). ``timeline`` lists everything the system did, in order, for order checks.
"""

from __future__ import annotations

import shutil
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ivr.telephony.call import CallHungUp, Recorded

HANG_UP = object()


@dataclass(frozen=True)
class WhilePlaying:
    """While a recording plays the person presses ``action`` (a key) or hangs up (``HANG_UP``)."""

    action: object


@dataclass(frozen=True)
class Speak:
    """The person speaks ``wav`` and the recording ends for ``end_reason`` (dtmf, silence, max_duration, hangup)."""

    wav: Path
    end_reason: str = "dtmf"


class FakeCall:
    """A call whose other end follows a script; records what the system said and played."""

    def __init__(self, script: Iterable[object], work_dir: Path, caller_id: str = "+3291000000",
                 language: str = "nl") -> None:
        self.script = deque(script)
        self.work_dir = work_dir
        self._caller_id = caller_id
        self.language = language
        self.said: list[str] = []
        self.values: list[dict[str, object]] = []
        self.played: list[Path] = []
        self.hung_up = False
        #: ("say", prompt id), ("play", wav), ("mark_confirmed", attempt id), ("mark_done", ""),
        #: ("pause", seconds), ("hangup", ""): what the system did, in order.
        self.timeline: list[tuple[str, object]] = []

    @property
    def caller_id(self) -> str:
        return self._caller_id

    def _next(self) -> object:
        if self.hung_up or not self.script:
            self.hung_up = True
            raise CallHungUp("fake")
        item = self.script.popleft()
        if item is HANG_UP:
            self.hung_up = True
            raise CallHungUp("fake")
        return item

    def _check(self) -> None:
        if self.hung_up:
            raise CallHungUp("fake")

    async def say(self, prompt_id: str, **values: object) -> str | None:
        self._check()
        self.said.append(prompt_id)
        self.values.append(values)
        self.timeline.append(("say", prompt_id))
        return None

    async def ask(self, prompt_id: str, timeout_s: float, **values: object) -> str | None:
        await self.say(prompt_id, **values)
        item = self._next()
        assert item is None or isinstance(item, str), f"{prompt_id}: the script gives {item!r}, not a key"
        return item

    async def read_digits(self, prompt_id: str, max_digits: int, timeout_s: float) -> str | None:
        await self.say(prompt_id)
        item = self._next()
        assert item is None or isinstance(item, str), f"{prompt_id}: the script gives {item!r}, not digits"
        return item

    async def play_audio(self, wav: Path) -> str | None:
        self._check()
        self.played.append(wav)
        self.timeline.append(("play", wav))
        if not self.script or not isinstance(self.script[0], WhilePlaying):
            return None
        action = self.script.popleft().action  # type: ignore[union-attr]
        if action is HANG_UP:
            self.hung_up = True
            raise CallHungUp("fake")
        assert isinstance(action, str), f"while playing: the script gives {action!r}, not a key"
        return action

    async def beep(self) -> None:
        self._check()
        self.said.append("(beep)")

    async def record(self, max_s: int, silence_s: int) -> Recorded:
        self._check()
        target = self.work_dir / f"{uuid.uuid4().hex}.wav"
        if not self.script or self.script[0] is HANG_UP:
            self.hung_up = True
            return Recorded(target, "hangup")
        item = self.script.popleft()
        assert isinstance(item, Speak), f"recording: the script gives {item!r}, not Speak(...)"
        shutil.copyfile(item.wav, target)
        if item.end_reason == "hangup":
            self.hung_up = True
        return Recorded(target, item.end_reason)

    async def hangup(self) -> None:
        self.timeline.append(("hangup", ""))
        self.hung_up = True

    # -- DurableMark: what Asterisk keeps on an outbound member call -----------------------------
    async def mark_confirmed(self, attempt_id: str) -> None:
        self._check()
        self.timeline.append(("mark_confirmed", attempt_id))

    async def mark_done(self) -> None:
        self._check()
        self.timeline.append(("mark_done", ""))

    async def pause(self, seconds: float) -> None:
        self._check()
        self.timeline.append(("pause", seconds))
        if self.script and self.script[0] is HANG_UP:  # the other end hangs up in the silence
            self._next()
