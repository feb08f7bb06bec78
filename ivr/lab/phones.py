"""The simulated phones' side of the lab network: what a dialled number does (``PhoneScript``) and
what happened on a call to it (``SimulatedCall``), plus the audio a phone plays (greeting, beep, "Hallo?").

``ivr.lab.network.PhoneNetwork`` serves these phones to Asterisk; tests import the names from there.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np


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
class Listening:
    """A member who listens: presses ``key`` ``after_s`` after hearing ``reference`` played to its end
    (ivr.lab.listening); hangs up without pressing if that end is not heard ``timeout_s`` after answering."""

    reference: Path
    key: str = "1"
    after_s: float = 0.3
    timeout_s: float = 120.0


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
    #: Says "Hallo?" right after answering, as people do (so that answering-machine detection
    #: hears a person). Keys and hang-up stay timed from the answer: one due while "Hallo?" is
    #: still being said follows right after it.
    says_hallo: bool = False
    #: Presses its key only after hearing this recording to its end (``PhoneScript.listens``).
    listening: Listening | None = None
    #: Keeps a recording of what it heard (``SimulatedCall.heard_audio``) for a test to check. A
    #: benchmark's thousands of listening phones keep only their ear: each recording costs the
    #: network's Asterisk a thread woken for every 20 ms frame.
    keeps_audio: bool = True

    @classmethod
    def answers(cls, rings: int = 1, keys: tuple[tuple[float, str], ...] = (),
                hangup_after_s: float | None = None, says_hallo: bool = True) -> "PhoneScript":
        """Answers after ``rings`` rings, says "Hallo?" (unless ``says_hallo`` is False) and presses
        ``keys`` as (seconds after answer, digits)."""
        return cls(Behaviour.ANSWER, rings, tuple(KeyPress(t, d) for t, d in keys), hangup_after_s,
                   says_hallo=says_hallo)

    @classmethod
    def listens(cls, reference: Path, rings: int = 1, key: str = "1", after_s: float = 0.3,
                timeout_s: float = 120.0, says_hallo: bool = True, keeps_audio: bool = True) -> "PhoneScript":
        """Answers, says "Hallo?", listens, and presses ``key`` ``after_s`` after it has heard the
        recording ``reference`` (8 kHz mono WAV) played to its end; then waits until hung up. Never
        heard to its end within ``timeout_s`` of answering: hangs up without pressing. Without
        ``keeps_audio`` it listens only (no recording of the call to check afterwards)."""
        return cls(Behaviour.ANSWER, rings, says_hallo=says_hallo,
                   listening=Listening(reference, key, after_s, timeout_s), keeps_audio=keeps_audio)

    @classmethod
    def silent(cls, rings: int = 1) -> "PhoneScript":
        """Answers and says nothing, presses nothing, until the caller hangs up."""
        return cls(Behaviour.ANSWER, rings)

    @classmethod
    def hangs_up_after(cls, seconds: float, rings: int = 1, says_hallo: bool = True) -> "PhoneScript":
        """Answers, says "Hallo?", then hangs up ``seconds`` after answering, in the middle of the message."""
        return cls(Behaviour.ANSWER, rings, hangup_after_s=seconds, says_hallo=says_hallo)

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
    #: The caller ID presented to the phone: number and name, as a member's display shows them.
    caller_id: str = ""
    caller_id_name: str = ""
    #: Host path of the recording of what the phone heard (``None`` if it never answered).
    heard_path: Path | None = None
    #: A listening phone (``PhoneScript.listens``): when it had heard the recording to its end
    #: (monotonic), and where that end is in the audio it heard (seconds from its first sample).
    end_heard_at: float | None = None
    end_heard_audio_s: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def end_heard_s(self) -> float | None:
        """Seconds from the answer until the phone had heard the recording to its end."""
        if self.end_heard_at is None or self.answered_at is None:
            return None
        return self.end_heard_at - self.answered_at

    def heard_audio(self, timeout_s: float = 5.0) -> Path:
        """The finished recording of what the phone heard (waits for Asterisk to close the file)."""
        if self.heard_path is None:
            raise ValueError(f"the phone {self.number} kept no recording: it never answered, or its "
                             "script listens only (keeps_audio=False)")
        return finished_wav(self.heard_path, timeout_s)


def finished_wav(path: Path, timeout_s: float = 5.0) -> Path:
    """Wait until Asterisk has finished writing the WAV at ``path`` (blocking; use a thread)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        if path.exists():
            size = path.stat().st_size
            # A finished WAV's RIFF size field equals the file size minus 8.
            with open(path, "rb") as f:
                header = f.read(8)
            if len(header) == 8 and int.from_bytes(header[4:8], "little") == size - 8 and size == last:
                return path
            last = size
        time.sleep(0.1)
    raise TimeoutError(f"the recording {path} was not finished in {timeout_s} s")


#: A listening phone's ear: raw 16-bit samples at 48 kHz (see sim-pick-up in binfoon-simulator.conf).
EAR_SUFFIX = ".sln48"
#: 48 kHz to the 8 kHz the detection works at: Asterisk's resampler low-passed the 8 kHz call audio
#: on the way up, so every 6th sample is the call's audio again (no further filter needed).
EAR_DECIMATION = 6
#: Asterisk writes every recording through a 32 KiB stdio buffer: the ear file grows in steps of this.
EAR_FLUSH_S = 32768 / (48000 * 2)


class Ear:
    """Reads what a listening phone has heard so far, as Asterisk flushes it to the ear file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._rest = b""
        self._samples = 0

    def read(self) -> np.ndarray:
        """The 8 kHz samples heard since the last read (none while the file does not exist yet)."""
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 (kept open: read on as it grows)
            except FileNotFoundError:
                return np.zeros(0, dtype=np.int16)
        data = self._rest + self._file.read()
        whole = len(data) - len(data) % 2
        self._rest = data[whole:]
        samples = np.frombuffer(data[:whole], dtype="<i2")
        # Keep the decimation's phase across reads: every 6th sample of the whole stream.
        picked = samples[(-self._samples) % EAR_DECIMATION::EAR_DECIMATION]
        self._samples += len(samples)
        return picked

    def close(self) -> None:
        """Stop reading and remove the file (Asterisk writes on into the unlinked file until the hang-up)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


def number_stem(number: str) -> str:
    """A file-name-safe form of a phone number."""
    return "".join(ch for ch in number if ch.isdigit()) or "unknown"


def render_machine_audio(greeting: Path, beep: Path) -> None:
    """Render the answering machine's greeting and beep (CPU work: run it in a process pool)."""
    from pydub.generators import Sine

    from ivr.media.tts import TELEPHONE_RATE_HZ, synthesize

    if not greeting.exists():
        synthesize("Hallo, u bent verbonden met het antwoordapparaat. Spreek uw bericht in na de toon.",
                   "nl", greeting)
    if not beep.exists():
        tone = Sine(1000, sample_rate=TELEPHONE_RATE_HZ).to_audio_segment(duration=500, volume=-6.0)
        tone.set_channels(1).set_sample_width(2).export(beep, format="wav")
    for path in (greeting, beep):
        os.chmod(path, 0o644)


#: What a simulated person says on answering (PhoneScript.says_hallo).
HALLO_TEXT = "Hallo?"


def render_hallo(hallo: Path) -> None:
    """Render what a person says on answering (CPU work: run it in a process pool)."""
    from ivr.media.tts import synthesize

    if not hallo.exists():
        synthesize(HALLO_TEXT, "nl", hallo)
    os.chmod(hallo, 0o644)
