"""Does one recording contain another? Normalised cross-correlation after alignment.

Used to prove that the audio a phone heard (or an officer spoke) is the audio stored or played,
across codecs (G.711) and networks (RTP), which shift it in time and change it slightly.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Match:
    """Where ``reference`` best aligns inside ``recording`` and how well (1.0 = identical shape).

    ``lag_s`` is where the reference starts in the recording (negative: before the recording began).
    """

    lag_s: float
    peak_ncc: float
    reference_s: float
    recording_s: float


def read_wav_mono(path: Path) -> tuple[np.ndarray, int]:
    """Samples as float64 in [-1, 1] and the sample rate, from a 16-bit PCM WAV."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
        channels = w.getnchannels()
        if channels > 1:
            data = data.reshape(-1, channels).mean(axis=1)
        return data, w.getframerate()


def locate(reference: np.ndarray, recording: np.ndarray, rate_hz: int, overhang_s: float = 0.1) -> Match:
    """Slide ``reference`` over ``recording``; the peak of the normalised cross-correlation.

    Each lag is normalised by the energy of the recording window it covers, so silence padding
    around the match does not lower the score and loud noise does not raise it.
    """
    ref = reference - reference.mean()
    m = len(ref)
    if m == 0 or len(recording) == 0:
        raise ValueError("empty audio")
    # Let the reference hang over either end by up to ``overhang_s``: a call leg may lose its very
    # first 20 ms RTP frame, and a recording may stop just before the last one.
    pad = min(m, int(overhang_s * rate_hz))
    rec = np.concatenate([np.zeros(pad), recording.astype(np.float64), np.zeros(max(pad, m - len(recording)))])
    n = len(rec)
    size = 1 << int(np.ceil(np.log2(n + m)))
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)[: n - m + 1]
    # Sliding sums by running totals: O(n), where np.convolve with a box of m samples is O(n*m)
    # (minutes for a 40 s call against a 7 s clip).
    window_sum = _sliding_sum(rec, m)
    window_sq = _sliding_sum(rec * rec, m)
    window_energy = np.maximum(window_sq - window_sum**2 / m, 1e-12)
    ncc = corr / (np.sqrt(window_energy) * np.sqrt(float(np.dot(ref, ref))) + 1e-12)
    best = int(np.argmax(ncc))
    return Match(lag_s=(best - pad) / rate_hz, peak_ncc=float(ncc[best]), reference_s=m / rate_hz,
                 recording_s=len(recording) / rate_hz)


def _sliding_sum(values: np.ndarray, width: int) -> np.ndarray:
    """Sums of every ``width`` consecutive values (``np.convolve(values, ones(width), "valid")``)."""
    totals = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return totals[width:] - totals[:-width]


def _read_pair(reference: Path, recording: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Both WAV files' samples and their common sample rate."""
    ref, ref_rate = read_wav_mono(reference)
    rec, rec_rate = read_wav_mono(recording)
    if ref_rate != rec_rate:
        raise ValueError(f"sample rates differ: {ref_rate} Hz and {rec_rate} Hz")
    return ref, rec, ref_rate


def locate_file(reference: Path, recording: Path) -> Match:
    """``locate`` for two WAV files of the same sample rate."""
    return locate(*_read_pair(reference, recording))


def speech_span(samples: np.ndarray, rate_hz: int, frame_ms: int = 20,
                threshold_db: float = -40.0) -> tuple[float, float] | None:
    """(start, end) in seconds of the speech: the first to the last frame louder than ``threshold_db``
    (dBFS RMS); ``None`` when no frame is. Recordings carry silence around speech, so whole files
    are never compared, only their speech spans (see shared ASTERISK.md)."""
    frame = max(1, int(rate_hz * frame_ms / 1000))
    count = len(samples) // frame
    if count == 0:
        return None
    frames = np.asarray(samples[: count * frame], dtype=np.float64).reshape(count, frame)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-10)) > threshold_db)
    if len(loud) == 0:
        return None
    return loud[0] * frame / rate_hz, (loud[-1] + 1) * frame / rate_hz


def locate_speech_file(reference: Path, recording: Path) -> Match:
    """``locate_file`` with the reference cut to its speech span: the silence a clip carries after its
    last word is not what a caller's ``#`` or the silence detector keeps, so it must not count."""
    ref, rec, ref_rate = _read_pair(reference, recording)
    span = speech_span(ref, ref_rate)
    if span is None:
        raise ValueError(f"{reference} holds no speech")
    return locate(ref[int(span[0] * ref_rate): int(span[1] * ref_rate)], rec, ref_rate)


@dataclass(frozen=True)
class Hearing:
    """Whether a reference's speech was heard whole in a recording, checked piece by piece.

    ``lag_s`` is where the reference starts in the recording (``None``: no piece was heard clearly);
    ``missing`` holds the pieces (start and end in the reference, and their best match) not heard;
    ``spread_s`` is how far the pieces' offsets differ (one playback: a few lost frames at most).
    """

    lag_s: float | None
    missing: tuple[tuple[float, float, Match], ...]
    spread_s: float

    @property
    def whole(self) -> bool:
        """Every piece heard, all as one playback."""
        return self.lag_s is not None and not self.missing and self.spread_s <= 0.25


def hear(reference: np.ndarray, recording: np.ndarray, rate_hz: int, piece_s: float = 0.5) -> Hearing:
    """Is all of ``reference``'s speech in ``recording``, as one playback?

    Piece by piece (``piece_s`` each) rather than in one correlation, for two reasons. A whole-clip
    correlation stays above 0.9 with a fifth of the speech's energy gone, so it cannot tell that a
    word was cut. And a call's recording may lose a 20 ms frame now and then (a loaded machine),
    which shifts everything after it and fails a whole-clip correlation although every word was
    heard: a piece that straddles such a loss counts as heard when its two sides are, each where
    the rest of the clip was heard.
    """
    span = speech_span(reference, rate_hz)
    if span is None:
        raise ValueError("the reference holds no speech")
    # Search near where the whole clip fits best: a recording may hold it twice (a replay).
    coarse = locate(reference, recording, rate_hz)
    first = max(0, int((coarse.lag_s - 1.0) * rate_hz))
    window = recording[first:int((coarse.lag_s + coarse.reference_s + 1.0) * rate_hz)]
    clear: list[float] = []
    blurred: list[tuple[float, float, Match]] = []
    count = max(1, round((span[1] - span[0]) / piece_s))
    edges = np.linspace(span[0], span[1], count + 1)
    for start, end in zip(edges[:-1].tolist(), edges[1:].tolist()):
        piece = reference[int(start * rate_hz):int(end * rate_hz)]
        if speech_span(piece, rate_hz) is None:
            continue  # a pause between words: nothing to hear
        match = locate(piece, window, rate_hz)
        if match.peak_ncc >= 0.9:
            clear.append(match.lag_s - start)
        else:
            blurred.append((start, end, match))
    if not clear:
        return Hearing(None, tuple(blurred), 0.0)
    usual = float(np.median(clear))
    missing = tuple((start, end, match) for start, end, match in blurred
                    if not _across_one_gap(reference[int(start * rate_hz):int(end * rate_hz)], window,
                                            rate_hz, usual + start))
    return Hearing(first / rate_hz + usual, missing, max(clear) - min(clear))


def _across_one_gap(piece: np.ndarray, window: np.ndarray, rate_hz: int, expected_s: float,
                     part_s: float = 0.1, slack_s: float = 0.1) -> bool:
    """``piece`` is in ``window`` as two parts either side of a gap, each within ``slack_s`` of
    ``expected_s`` (where the piece should start). The gap is a lost 20 ms frame (its audio is not
    in the window) or a late one (silence between the parts). A part under ``part_s`` is not checked."""
    low = max(0, int((expected_s - slack_s - 0.05) * rate_hz))
    near = window[low:int((expected_s + len(piece) / rate_hz + slack_s + 0.05) * rate_hz)]
    if len(near) == 0:
        return False
    edge = int(part_s * rate_hz)
    frame = rate_hz // 50
    for cut in range(edge, len(piece) - edge + 1, max(1, rate_hz // 400)):
        for lost in (0, frame):
            parts = ((piece[:cut], 0), (piece[cut + lost:], cut + lost))
            if all(_found_near(part, near, rate_hz, (low - offset) / rate_hz, expected_s, slack_s)
                   for part, offset in parts):
                return True
    return False


def _found_near(part: np.ndarray, near: np.ndarray, rate_hz: int, shift_s: float, expected_s: float,
                slack_s: float) -> bool:
    if speech_span(part, rate_hz) is None:
        return True  # quiet: nothing to hear
    match = locate(part, near, rate_hz)
    # shift_s maps the part's lag in ``near`` to where its piece would start in the window.
    return match.peak_ncc >= 0.9 and abs(match.lag_s + shift_s - expected_s) <= slack_s


def hear_twice(reference: np.ndarray, recording: np.ndarray, rate_hz: int) -> tuple[Hearing, Hearing | None]:
    """``reference`` heard whole (where it fits best), and heard whole again before or after that
    (``None``: nowhere else). The second hearing's ``lag_s`` counts from the start of its stretch."""
    first = hear(reference, recording, rate_hz)
    if first.lag_s is None:
        return first, None
    start = int(first.lag_s * rate_hz)
    rests = [rest for rest in (recording[:max(0, start)], recording[start + len(reference):]) if len(rest)]
    again = [hearing for hearing in (hear(reference, rest, rate_hz) for rest in rests) if hearing.whole]
    return first, (again[0] if again else None)


def hear_file(reference: Path, recording: Path) -> Hearing:
    """``hear`` for two WAV files of the same sample rate."""
    return hear(*_read_pair(reference, recording))
