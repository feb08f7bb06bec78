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


def locate_file(reference: Path, recording: Path) -> Match:
    """``locate`` for two WAV files of the same sample rate."""
    ref, ref_rate = read_wav_mono(reference)
    rec, rec_rate = read_wav_mono(recording)
    if ref_rate != rec_rate:
        raise ValueError(f"sample rates differ: {ref_rate} Hz and {rec_rate} Hz")
    return locate(ref, rec, ref_rate)


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
    ref, ref_rate = read_wav_mono(reference)
    rec, rec_rate = read_wav_mono(recording)
    if ref_rate != rec_rate:
        raise ValueError(f"sample rates differ: {ref_rate} Hz and {rec_rate} Hz")
    span = speech_span(ref, ref_rate)
    if span is None:
        raise ValueError(f"{reference} holds no speech")
    return locate(ref[int(span[0] * ref_rate): int(span[1] * ref_rate)], rec, ref_rate)
