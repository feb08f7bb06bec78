"""A scripted fake of ``ivr.telephony.call.Call``: conversations as fast unit tests.

The script is what the person on the phone does, in order: a key (``"1"``), digits (``"1234"``),
``None`` for silence, ``Speak(wav)`` for what they say when recorded, ``HANG_UP`` to hang up.
``say`` consumes nothing (the person listens); ``ask``, ``read_digits`` and ``record`` each consume
one entry. When the script is spent the person hangs up.
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
        return None

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
        self.hung_up = True
