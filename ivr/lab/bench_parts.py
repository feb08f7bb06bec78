"""What the campaign benches share: the scripted message, the answering check's allowance, the ideal
campaign and the peak of calls up at once (``bench campaign`` and ``bench cluster``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


#: A recording as an officer leaves it: the speech starts a moment after the beep and ends at the end of a
#: word, then the silence before the key that stops it. It also keeps both seams of the recording (after
#: the header, before the keys prompt) on silence: when Asterisk's playback pauses at a seam (an AGI round
#: trip), a saturated lab's recorder at the phone loses or spoils the 20-40 ms of audio before and after
#: it (measured: the ears of the unconfirmed calls of a 3,000-member benchmark, whose recording was cut
#: mid-word at exactly 10 s). A member's own phone plays them; only the lab's ear misses them.
LEAD_S = 0.25
TRAIL_S = 0.5
#: A pause between words: this many 20 ms frames quieter than 1 % of the loudest one.
WORD_GAP_FRAMES = 2


def _speech_of(seconds: float, target: Path) -> Path:
    """An 8 kHz recording of exactly ``seconds``: ``LEAD_S`` of silence, Dutch speech (espeak-ng) cut at
    the last pause between words that leaves at least ``TRAIL_S`` of silence after it, then silence."""
    from pydub import AudioSegment

    from ivr.media.tts import synthesize

    sentence = "Opgelet. Er zijn inbrekers actief in de Kerkstraat en de Molenstraat. Sluit uw ramen en deuren. "
    synthesize(sentence * max(1, int(seconds // 5) + 1), "nl", target)
    speech = AudioSegment.from_wav(target).set_frame_rate(8000).set_channels(1).set_sample_width(2)
    cut_ms = speech_cut_ms(np.array(speech.get_array_of_samples(), dtype=np.int16),
                           int((seconds - LEAD_S - TRAIL_S) * 1000))
    audio = AudioSegment.silent(duration=int(LEAD_S * 1000), frame_rate=8000) + speech[:cut_ms]
    audio = audio + AudioSegment.silent(duration=max(0, int(seconds * 1000) - len(audio)), frame_rate=8000)
    audio[: int(seconds * 1000)].set_frame_rate(8000).set_channels(1).set_sample_width(2).export(target, format="wav")
    return target


def speech_cut_ms(samples: np.ndarray, limit_ms: int) -> int:
    """Where to end 8 kHz ``samples`` of speech at most ``limit_ms`` in: at the start of the last pause between
    words (``WORD_GAP_FRAMES`` quiet frames) before it, or at ``limit_ms`` when there is none."""
    frames = len(samples) // 160
    x = samples[: frames * 160].astype(np.float64).reshape(frames, 160)
    rms = np.sqrt(np.mean(x * x, axis=1))
    quiet = rms < 0.01 * (rms.max() if frames else 0.0)
    last = min(frames, limit_ms // 20)
    for f in range(min(last, frames - WORD_GAP_FRAMES), 0, -1):
        if quiet[f: f + WORD_GAP_FRAMES].all() and not quiet[f - 1]:
            return f * 20
    return max(0, limit_ms)


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
