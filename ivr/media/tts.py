"""Text to speech with pyttsx3 (espeak-ng), converted with pydub to what Asterisk plays.

Asterisk's ``format_wav`` plays 8 kHz, mono, 16-bit PCM ``.wav`` without transcoding, so every
prompt and every synthesised message is stored in exactly that form.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydub import AudioSegment

#: espeak-ng voice per language of the prompt catalogue (Dutch first).
VOICES = {"nl": "gmw/nl", "fr": "roa/fr", "de": "gmw/de", "en": "gmw/en"}

TELEPHONE_RATE_HZ = 8000


def to_telephone_wav(source: Path, target: Path) -> Path:
    """Convert any audio file pydub can read into 8 kHz mono 16-bit PCM WAV."""
    audio = AudioSegment.from_file(source)
    audio = audio.set_channels(1).set_frame_rate(TELEPHONE_RATE_HZ).set_sample_width(2)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part.wav")
    audio.export(tmp, format="wav")
    os.replace(tmp, target)  # readers never see a half-written file
    return target


_engine_rate_hz: int | None = None


def _espeak_pcm(text: str, voice: str, rate_wpm: int) -> tuple[bytes, int]:
    """Synthesise with espeak-ng through pyttsx3's binding, synchronously.

    pyttsx3's own ``save_to_file``/``runAndWait`` loop loses utterances at random (its polling
    loop races the synthesis callback: measured here, about half of the longer sentences came
    back empty). The binding itself is sound, so it is used directly in synchronous mode.
    """
    import ctypes

    from pyttsx3.drivers import _espeak

    global _engine_rate_hz
    if _engine_rate_hz is None:
        rate = _espeak.Initialize(_espeak.AUDIO_OUTPUT_SYNCHRONOUS, 500)
        if rate <= 0:
            raise RuntimeError("could not initialise espeak-ng")
        _engine_rate_hz = int(rate)
    chunks: list[bytes] = []

    def collect(wav: object, numsamples: int, events: object) -> int:
        if numsamples > 0:
            chunks.append(ctypes.string_at(wav, numsamples * 2))  # type: ignore[call-overload]
        return 0

    _espeak.SetSynthCallback(collect)
    if _espeak.SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"espeak-ng has no voice {voice!r}")
    _espeak.SetParameter(_espeak.RATE, rate_wpm, 0)
    _espeak.Synth(text.encode("utf-8"), flags=_espeak.CHARS_UTF8 | _espeak.ENDPAUSE)
    _espeak.Synchronize()
    return b"".join(chunks), _engine_rate_hz


def synthesize(text: str, language: str, target: Path, rate_wpm: int = 150) -> Path:
    """Speak ``text`` in ``language`` into ``target`` (8 kHz telephone WAV). Blocking: run it in a pool."""
    if not text.strip():
        raise ValueError("nothing to say: the text is empty")
    voice = VOICES.get(language)
    if voice is None:
        raise ValueError(f"no voice for language {language!r}; known: {', '.join(VOICES)}")
    pcm, rate_hz = _espeak_pcm(text, voice, rate_wpm)
    if not pcm:
        raise RuntimeError(f"espeak-ng produced no audio for {text[:40]!r}")
    audio = AudioSegment(data=pcm, sample_width=2, frame_rate=rate_hz, channels=1)
    audio = audio.set_frame_rate(TELEPHONE_RATE_HZ)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part.wav")
    audio.export(tmp, format="wav")
    os.replace(tmp, target)
    return target
