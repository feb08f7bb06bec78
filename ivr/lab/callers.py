"""The simulated callers of the lab network: the steps of a caller's script (listen, press, speak,
wait, hang up) and what happened on a call a simulated caller placed (``OutgoingCall``).

``ivr.lab.network.PhoneNetwork`` places these calls and plays the scripts; tests import the names from there.
"""

from __future__ import annotations

import asyncio
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from ivr.lab.phones import finished_wav
from ivr.telephony.events import OriginateResult

#: Consecutive sound that counts as "heard something" for a Listen step (3 frames of 20 ms).
LISTEN_NOISE_MS = 60
#: How long each simulated key press lasts.
DTMF_DURATION_MS = 120
#: The quiet time Asterisk's SendDTMF keeps before the first key it sends.
DTMF_QUIET_MS = 100
#: How long an answered-then-hung-up caller's call waits for its FastAGI session before it is closed.
CALLER_AGI_GRACE_S = 3.0


@dataclass(frozen=True)
class Listen:
    """Hear the next prompt to its end: wait until something is heard, then until nothing has been
    heard for ``min_silence_ms``, rounded up to whole seconds (WaitForNoise's timeout unit).

    With the default the step ends about 1 s after the prompt's last sound (measured: 0.96 s, on
    one Asterisk and across the trunk alike). A pause inside a prompt that long ends it early;
    sound that ended before the step started is not waited for (a ``Press`` ends as its last key
    is released, so the prompt that key triggers is heard). ``timeout_s`` bounds the whole step;
    a step that ran out is logged as ``listen (nothing heard)`` or ``listen (timeout)``.
    """

    min_silence_ms: int = 900
    timeout_s: float = 30.0

    @property
    def label(self) -> str:
        return "listen"


@dataclass(frozen=True)
class Press:
    """Press keys (RFC 4733 over the trunk), each held 120 ms, ``gap_ms`` (at least 100) between two.

    The step ends as the last key is released: a prompt it triggers is heard by the next Listen.
    """

    digits: str
    gap_ms: int = 250

    def __post_init__(self) -> None:
        if not self.digits or any(d not in "0123456789*#ABCD" for d in self.digits):
            raise ValueError(f"Press: {self.digits!r} is not a string of DTMF keys")

    @property
    def label(self) -> str:
        return f"press {self.digits}"


@dataclass(frozen=True)
class Speak:
    """Say something: play an 8 kHz, 16-bit mono WAV into the call (to its end)."""

    wav: Path

    @property
    def label(self) -> str:
        return f"speak {self.wav.name}"


@dataclass(frozen=True)
class Wait:
    """Say and press nothing for ``seconds`` (the line carries silence, as a phone's does)."""

    seconds: float

    @property
    def label(self) -> str:
        return f"wait {self.seconds:g}"


@dataclass(frozen=True)
class HangUp:
    """Hang up (a script that does not end with it hangs up anyway after its last step)."""

    @property
    def label(self) -> str:
        return "hang up"


Step = Union[Listen, Press, Speak, Wait, HangUp]


@dataclass(frozen=True)
class CallerScript:
    """What a simulated caller does once the call is answered, step by step."""

    steps: tuple[Step, ...]

    @classmethod
    def of(cls, *steps: Step) -> "CallerScript":
        """``CallerScript.of(Listen(), Press("1234#"), Speak(path))``."""
        return cls(tuple(steps))


@dataclass
class OutgoingCall:
    """What happened on one call placed by a simulated caller. Times are ``time.monotonic()``."""

    call_id: str
    #: The number dialled (the DID) and the number presented (the caller's CALLERID(num)).
    number: str
    caller_number: str
    script: CallerScript
    #: The Originate dial string; Asterisk's name of the caller's channel once answered.
    channel: str
    started_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    #: ``caller`` when the script hung up (explicitly or after its last step), ``callee`` when
    #: BINfoon hung up first or never answered.
    hung_up_by: str | None = None
    #: (seconds after answer, step label) for every step that finished, in order.
    steps_done: list[tuple[float, str]] = field(default_factory=list)
    #: Steps not played because the callee hung up first (or the call was never answered).
    steps_skipped: int = 0
    #: Host paths of the WAVs the caller spoke (or began to speak), in order.
    spoken: list[Path] = field(default_factory=list)
    #: Host path of the recording of what the caller heard (``None`` if never answered).
    heard_path: Path | None = None
    #: The Originate outcome (Q.850 cause of a refused call in ``result.cause``).
    result: OriginateResult | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _agi_started: bool = field(default=False, init=False, repr=False, compare=False)
    #: Where the dialplan records what the caller hears, from the moment of answer.
    _recording: Path | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def answered(self) -> bool:
        """True when the callee answered."""
        return self.answered_at is not None

    async def wait(self, timeout_s: float = 60.0) -> "OutgoingCall":
        """Wait until the call has ended (script played or cut short); returns the call."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.done.wait()
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"call {self.caller_number} -> {self.number} not over after {timeout_s:g} s "
                f"(steps done: {[label for _, label in self.steps_done]})"
            ) from None
        return self

    def _step_done(self, label: str) -> None:
        self.steps_done.append((time.monotonic() - (self.answered_at or self.started_at), label))

    def heard_audio(self, timeout_s: float = 5.0) -> Path:
        """The finished recording of what the caller heard (blocking; use a thread)."""
        if self.heard_path is None:
            raise ValueError(f"the call {self.caller_number} -> {self.number} was never answered")
        return finished_wav(self.heard_path, timeout_s)


def check_telephone_wav(path: Path) -> None:
    """Asterisk plays a ``.wav`` only as 8 kHz 16-bit mono PCM: refuse anything else up front."""
    try:
        with wave.open(str(path), "rb") as w:
            shape = (w.getframerate(), w.getsampwidth(), w.getnchannels())
    except (OSError, wave.Error, EOFError) as exc:
        raise ValueError(f"Speak: cannot read {path} as a WAV: {exc}") from exc
    if shape != (8000, 2, 1):
        raise ValueError(f"Speak: {path} must be 8 kHz 16-bit mono PCM, not {shape[0]} Hz, "
                         f"{8 * shape[1]}-bit, {shape[2]} channel(s)")
