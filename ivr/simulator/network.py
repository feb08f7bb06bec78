"""A simulated public phone network: numbers whose behaviour is scripted.

The phones are reached exactly like real ones: through the dial template (``Local/${NUMBER}@sim-phone``
on the same Asterisk, or ``PJSIP/${NUMBER}@trunk`` into a second Asterisk that plays the network).
Either way the call lands in the ``sim-phone`` dialplan context, which hands it over FastAGI to
``PhoneNetwork.handle``; that coroutine *is* the phone: it rings, answers, presses keys, hangs up,
or plays an answering machine, and it records what it heard so a test can check the audio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ivr.telephony.agi import AgiCall, CallHungUp

log = logging.getLogger(__name__)


class Behaviour(enum.Enum):
    """What a simulated phone does when it is called."""

    ANSWER = "answer"                        # rings N times, answers, presses keys, may hang up
    NO_ANSWER = "no_answer"                  # rings until the caller gives up
    BUSY = "busy"                            # line busy (Q.850 17, SIP 486)
    CONGESTION = "congestion"                # network congestion (Q.850 34, SIP 503)
    UNREACHABLE = "unreachable"              # number not in service (Q.850 1, SIP 404)
    ANSWERING_MACHINE = "answering_machine"  # greeting, beep, then records the message


@dataclass(frozen=True)
class KeyPress:
    """Keys pressed ``at_s`` seconds after the phone answered."""

    at_s: float
    digits: str


@dataclass(frozen=True)
class PhoneScript:
    """The scripted behaviour of one number."""

    behaviour: Behaviour
    rings: int = 1
    keys: tuple[KeyPress, ...] = ()
    #: Hang up this many seconds after answering (``None``: wait for the caller to hang up).
    hangup_after_s: float | None = None
    #: Longest message an answering machine records.
    record_max_s: int = 180

    @classmethod
    def answers(cls, rings: int = 1, keys: tuple[tuple[float, str], ...] = (),
                hangup_after_s: float | None = None) -> "PhoneScript":
        """Answers after ``rings`` rings and presses ``keys`` as (seconds after answer, digits)."""
        return cls(Behaviour.ANSWER, rings, tuple(KeyPress(t, d) for t, d in keys), hangup_after_s)

    @classmethod
    def silent(cls, rings: int = 1) -> "PhoneScript":
        """Answers and says nothing, presses nothing, until the caller hangs up."""
        return cls(Behaviour.ANSWER, rings)

    @classmethod
    def hangs_up_after(cls, seconds: float, rings: int = 1) -> "PhoneScript":
        """Answers, then hangs up in the middle of the message."""
        return cls(Behaviour.ANSWER, rings, hangup_after_s=seconds)

    @classmethod
    def never_answers(cls) -> "PhoneScript":
        """Rings until the caller gives up."""
        return cls(Behaviour.NO_ANSWER)

    @classmethod
    def busy(cls) -> "PhoneScript":
        """The line is busy."""
        return cls(Behaviour.BUSY, rings=0)

    @classmethod
    def congested(cls) -> "PhoneScript":
        """The network is congested / the destination unreachable for now."""
        return cls(Behaviour.CONGESTION, rings=0)

    @classmethod
    def unreachable(cls) -> "PhoneScript":
        """The number is not in service."""
        return cls(Behaviour.UNREACHABLE, rings=0)

    @classmethod
    def answering_machine(cls, rings: int = 3, record_max_s: int = 180) -> "PhoneScript":
        """Rings, answers with a greeting and a beep, then records what it hears."""
        return cls(Behaviour.ANSWERING_MACHINE, rings, record_max_s=record_max_s)


@dataclass
class SimulatedCall:
    """What happened on one call to a simulated phone."""

    number: str
    script: PhoneScript
    channel: str
    started_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    #: ``phone`` when the simulated phone hung up, ``caller`` when the other side did.
    ended_by: str | None = None
    keys_sent: list[tuple[float, str]] = field(default_factory=list)
    #: Host path of the recording of what the phone heard (``None`` if it never answered).
    heard_path: Path | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def heard_audio(self, timeout_s: float = 5.0) -> Path:
        """The finished recording of what the phone heard (waits for Asterisk to close the file)."""
        if self.heard_path is None:
            raise ValueError(f"the phone {self.number} never answered: it heard nothing")
        deadline = time.monotonic() + timeout_s
        last = -1
        while time.monotonic() < deadline:
            if self.heard_path.exists():
                size = self.heard_path.stat().st_size
                # A finished WAV's RIFF size field equals the file size minus 8.
                with open(self.heard_path, "rb") as f:
                    header = f.read(8)
                if len(header) == 8 and int.from_bytes(header[4:8], "little") == size - 8 and size == last:
                    return self.heard_path
                last = size
            time.sleep(0.1)
        raise TimeoutError(f"the recording {self.heard_path} was not finished in {timeout_s} s")


class PhoneNetwork:
    """Scripted phones, served to Asterisk as the FastAGI route ``phone``."""

    def __init__(
        self,
        recordings_dir: Path,
        inner_path: Callable[[Path], str],
        *,
        ring_s: float = 4.0,
        owner: tuple[int, int] | None = None,
    ) -> None:
        """``recordings_dir`` is a host directory Asterisk can write; ``inner_path`` maps it to
        Asterisk's view. ``ring_s`` is one ring cycle (Belgium: 1 s tone + 3 s pause)."""
        self.recordings_dir = recordings_dir
        self.inner_path = inner_path
        self.ring_s = ring_s
        self._owner = owner
        self._scripts: dict[str, PhoneScript] = {}
        self.calls: list[SimulatedCall] = []
        self._changed = asyncio.Condition()
        self._greeting: Path | None = None

    def script(self, number: str, script: PhoneScript) -> None:
        """Give ``number`` a behaviour (numbers without one are not in service)."""
        self._scripts[number] = script

    def calls_to(self, number: str) -> list[SimulatedCall]:
        """Every call that reached ``number``, oldest first."""
        return [c for c in self.calls if c.number == number]

    async def wait_for_calls(self, number: str, count: int = 1, timeout_s: float = 30.0) -> list[SimulatedCall]:
        """Wait until ``count`` calls to ``number`` have ended; returns them."""
        async def ended() -> list[SimulatedCall]:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len([c for c in self.calls_to(number) if c.done.is_set()]) >= count
                )
            return self.calls_to(number)
        return await asyncio.wait_for(ended(), timeout_s)

    async def prepare(self) -> None:
        """Create the recordings directory and render the answering machine's greeting and beep."""
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        if self._owner is not None and os.geteuid() == 0:
            os.chown(self.recordings_dir, *self._owner)
        greeting = self.recordings_dir / "greeting.wav"
        beep = self.recordings_dir / "beep.wav"
        loop = asyncio.get_running_loop()
        # Speech synthesis is CPU work: never on the event loop.
        with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
            await loop.run_in_executor(pool, _render_machine_audio, greeting, beep)
        self._greeting = greeting

    async def handle(self, call: AgiCall) -> None:
        """The FastAGI route: be the phone that was dialled."""
        number = call.args[0] if call.args else ""
        script = self._scripts.get(number, PhoneScript.unreachable())
        sim = SimulatedCall(number=number, script=script, channel=call.channel, started_at=time.monotonic())
        self.calls.append(sim)
        try:
            await self._behave(call, sim)
            if not call.hung_up:
                sim.ended_by = "phone"
        except CallHungUp:
            sim.ended_by = "caller"
        finally:
            sim.ended_at = time.monotonic()
            sim.done.set()
            async with self._changed:
                self._changed.notify_all()

    async def _behave(self, call: AgiCall, sim: SimulatedCall) -> None:
        script = sim.script
        behaviour = script.behaviour
        if behaviour is Behaviour.BUSY:
            await call.exec("Busy", "10")
            return
        if behaviour is Behaviour.CONGESTION:
            await call.exec("Congestion", "10")
            return
        if behaviour is Behaviour.UNREACHABLE:
            await call.exec("Hangup", "1")
            return
        await call.exec("Ringing")
        if behaviour is Behaviour.NO_ANSWER:
            await call.exec("Wait", "86400")
            return
        await call.exec("Wait", f"{max(script.rings, 1) * self.ring_s:.3f}")
        await call.answer()
        sim.answered_at = time.monotonic()
        stem = f"{number_stem(sim.number)}-{len(self.calls)}-{int(time.time() * 1000)}"
        heard = self.recordings_dir / f"{stem}-heard.wav"
        sim.heard_path = heard
        if behaviour is Behaviour.ANSWERING_MACHINE:
            assert self._greeting is not None, "PhoneNetwork.prepare() was not awaited"
            await call.play(self.inner_path(self._greeting.with_suffix("")))
            await call.play(self.inner_path(self._greeting.with_name("beep")))
            # k: keep what was recorded when the caller hangs up (that is how messages end).
            await call.exec("Record", f"{self.inner_path(heard)},0,{script.record_max_s},qk")
            return
        # Record only what reaches the phone (the "receive" direction of this channel).
        await call.exec(
            "MixMonitor", f"{self.inner_path(heard.with_name(stem + '-both.wav'))},r({self.inner_path(heard)})"
        )
        events: list[tuple[float, str]] = [(k.at_s, k.digits) for k in script.keys]
        if script.hangup_after_s is not None:
            events.append((script.hangup_after_s, ""))
        for at_s, digits in sorted(events, key=lambda e: e[0]):
            delay = sim.answered_at + at_s - time.monotonic()
            if delay > 0:
                await call.exec("Wait", f"{delay:.3f}")
            if not digits:
                await call.hangup()
                return
            # Logged before sending: the caller may hang up as soon as the key arrives.
            sim.keys_sent.append((time.monotonic() - sim.answered_at, digits))
            await call.exec("SendDTMF", digits, "250", "120")
        await call.exec("Wait", "86400")  # listen until the caller hangs up


def number_stem(number: str) -> str:
    """A file-name-safe form of a phone number."""
    return "".join(ch for ch in number if ch.isdigit()) or "unknown"


def _render_machine_audio(greeting: Path, beep: Path) -> None:
    from pydub.generators import Sine

    from ivr.media.speech import TELEPHONE_RATE_HZ, synthesize

    if not greeting.exists():
        synthesize("Hallo, u bent verbonden met het antwoordapparaat. Spreek uw bericht in na de toon.",
                   "nl", greeting)
    if not beep.exists():
        tone = Sine(1000, sample_rate=TELEPHONE_RATE_HZ).to_audio_segment(duration=500, volume=-6.0)
        tone.set_channels(1).set_sample_width(2).export(beep, format="wav")
    for path in (greeting, beep):
        os.chmod(path, 0o644)
