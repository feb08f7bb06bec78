"""What the campaign benches share: the scripted message, the answering check's allowance, the ideal
campaign and the peak of calls up at once (``bench campaign`` and ``bench cluster``)."""

from __future__ import annotations

from pathlib import Path


def _speech_of(seconds: float, target: Path) -> Path:
    """An 8 kHz recording of about ``seconds`` of Dutch speech (espeak-ng), cut or padded to length."""
    from pydub import AudioSegment

    from ivr.media.tts import synthesize

    sentence = "Opgelet. Er zijn inbrekers actief in de Kerkstraat en de Molenstraat. Sluit uw ramen en deuren. "
    synthesize(sentence * max(1, int(seconds // 5) + 1), "nl", target)
    audio = AudioSegment.from_wav(target)[: int(seconds * 1000)]
    audio = audio + AudioSegment.silent(duration=max(0, int(seconds * 1000) - len(audio)), frame_rate=8000)
    audio.set_frame_rate(8000).set_channels(1).set_sample_width(2).export(target, format="wav")
    return target


#: From the answer to AMD's verdict for a member who says "Hallo?" (0.4 s) and then listens: AMD
#: waits for 1 s of silence after the greeting (amd.conf); measured 1.4 s (test_member_dialplan).
AMD_ALLOWANCE_S = 1.5


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one instant; an end at the same instant as a start
    frees its channel first (a line is reused, not doubled)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    peak = open_now = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def ideal_campaign_s(members: int, channels: int, cps: float, call_s: float) -> float:
    """The shortest possible campaign: ceil(N/C) waves of the scripted call, or the pace's bound."""
    import math

    return max(math.ceil(members / channels) * call_s, members / cps)
