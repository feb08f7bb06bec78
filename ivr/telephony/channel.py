"""``AsteriskCall``: the ``ivr.telephony.call.Call`` interface carried out over FastAGI."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable

from ivr.telephony.call import ALL_KEYS, Recorded
from ivr.media.voice import Voice
from ivr.telephony.agi import AgiCall, CallHungUp

#: Asterisk's RECORD_STATUS -> why the recording stopped.
_RECORD_END = {"DTMF": "dtmf", "SILENCE": "silence", "TIMEOUT": "max_duration", "HANGUP": "hangup",
               "SKIP": "dtmf", "CANCEL": "dtmf"}


class AsteriskCall:
    """A live Asterisk channel, spoken to in prompt ids."""

    def __init__(self, agi: AgiCall, voice: Voice, record_dir: Path, inner_path: Callable[[Path], str],
                 language: str = "nl") -> None:
        self.agi = agi
        self.voice = voice
        self.record_dir = record_dir
        self.inner_path = inner_path
        self.language = language

    @property
    def caller_id(self) -> str:
        """The caller's number as Asterisk received it."""
        return self.agi.caller_id

    async def say(self, prompt_id: str, **values: object) -> str | None:
        """Play a prompt; a key stops it and is returned."""
        return await self.agi.play(await self.voice.prompt(prompt_id, self.language, **values), ALL_KEYS)

    async def ask(self, prompt_id: str, timeout_s: float, **values: object) -> str | None:
        """Play a prompt, then wait for one key."""
        key = await self.say(prompt_id, **values)
        return key if key is not None else await self.agi.wait_for_digit(timeout_s)

    async def read_digits(self, prompt_id: str, max_digits: int, timeout_s: float) -> str | None:
        """GET DATA: the prompt, then digits until #, ``max_digits`` or quiet."""
        sound = await self.voice.prompt(prompt_id, self.language)
        result = await self.agi.command(f"GET DATA {sound} {int(timeout_s * 1000)} {max_digits}")
        digits = str(result.get("result", ("", ""))[0])
        return digits if digits and digits != "-1" else None

    async def play_audio(self, wav: Path) -> str | None:
        """Play a stored WAV byte for byte."""
        return await self.agi.play(await self.voice.audio(wav), ALL_KEYS)

    async def beep(self) -> None:
        """The tone before recording."""
        await self.agi.play(await self.voice.beep())

    async def record(self, max_s: int, silence_s: int) -> Recorded:
        """Record into the spool (k: kept on hang-up); the caller's hang-up is reported, not raised."""
        self.record_dir.mkdir(parents=True, exist_ok=True)
        path = self.record_dir / f"{uuid.uuid4().hex}.wav"
        inner = self.inner_path(path)
        try:
            await self.agi.exec("Record", inner, str(silence_s), str(max_s), "qk")
            status = await self.agi.get_variable("RECORD_STATUS") or ""
        except CallHungUp:
            return Recorded(path, "hangup")
        return Recorded(path, _RECORD_END.get(status.upper(), status.lower() or "dtmf"))

    async def hangup(self) -> None:
        """End the call."""
        await self.agi.hangup()

    async def mark_confirmed(self, attempt_id: str) -> None:
        """A durable Asterisk-side record of the confirmation (CEL user event), then an AMI event."""
        await self.agi.exec("CELGenUserEvent", "BINFOON_CONFIRM", attempt_id)

    async def mark_done(self) -> None:
        """The application handled the call: the dialplan must not fall back to playing it itself."""
        await self.agi.set_variable("BINFOON_DONE", "1")

    async def pause(self, seconds: float) -> None:
        """Keep the line open for ``seconds`` of silence, played as audio so the far end hears
        (and a machine records) it: a Wait sends no frames to a Local channel (see Voice.silence)."""
        await self.agi.play(await self.voice.silence(seconds))
