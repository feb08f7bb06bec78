"""What a call flow may do with a call: the small interface between conversations and telephony.

Flows speak in prompt ids and keys; ``ivr.telephony.channel.AsteriskCall`` carries them out over
FastAGI, ``tests``' ``FakeCall`` from a script. A hang-up raises ``CallHungUp`` from any step,
except ``record``, which reports it, so that what was recorded is always kept first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ivr.telephony.agi import CallHungUp

__all__ = ["Call", "CallHungUp", "Recorded", "choose"]

#: Every key of a telephone keypad: any of them interrupts a prompt.
ALL_KEYS = "0123456789*#"


@dataclass(frozen=True)
class Recorded:
    """What ``Call.record`` captured: a host file (possibly empty) and why recording stopped."""

    path: Path
    #: dtmf (# pressed), silence, max_duration, or hangup.
    end_reason: str

    @property
    def hung_up(self) -> bool:
        """True when the caller hung up while speaking."""
        return self.end_reason == "hangup"


class Call(Protocol):
    """One live phone call, as a flow sees it."""

    #: The language prompts are spoken in (nl, fr, de); a flow sets it once it knows the person.
    language: str

    @property
    def caller_id(self) -> str:
        """The caller's number as the network gave it (may be empty or anonymous)."""

    async def say(self, prompt_id: str, **values: object) -> str | None:
        """Play a prompt; a key pressed during it stops it and is returned."""

    async def ask(self, prompt_id: str, timeout_s: float, **values: object) -> str | None:
        """Play a prompt, then wait up to ``timeout_s`` for one key; ``None`` if none came."""

    async def read_digits(self, prompt_id: str, max_digits: int, timeout_s: float) -> str | None:
        """Play a prompt and collect digits until #, ``max_digits`` or ``timeout_s`` of quiet."""

    async def play_audio(self, wav: Path) -> str | None:
        """Play a stored 8 kHz WAV as it is; a key stops it and is returned."""

    async def beep(self) -> None:
        """The tone after which the caller speaks."""

    async def record(self, max_s: int, silence_s: int) -> Recorded:
        """Record the caller until #, ``silence_s`` of silence, ``max_s``, or hang-up (never raises it)."""

    async def hangup(self) -> None:
        """End the call."""


async def choose(call: Call, prompt_id: str, keys: str, timeout_s: float, tries: int = 3,
                 **values: object) -> str | None:
    """Ask until one of ``keys`` is pressed; a wrong key hears ``invalid_choice``. ``None`` after ``tries``."""
    for _ in range(tries):
        key = await call.ask(prompt_id, timeout_s, **values)
        if key is not None and key in keys:
            return key
        if key is not None:
            await call.say("invalid_choice")
    return None
