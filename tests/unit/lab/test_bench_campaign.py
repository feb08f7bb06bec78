"""``binfoon bench campaign``'s arithmetic: the ideal is the scripted call's, concurrency is counted at the phones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ivr.lab.bench import ideal_campaign_s, peak_overlap
from ivr.lab.bench_parts import LEAD_S, TRAIL_S, _speech_of, speech_cut_ms
from ivr.lab.listening import sound_span
from ivr.media.compare import read_wav_mono


def test_ideal_is_waves_of_the_scripted_call_or_the_pace() -> None:
    assert ideal_campaign_s(500, 100, 50.0, 22.37) == 5 * 22.37
    assert ideal_campaign_s(501, 100, 50.0, 20.0) == 6 * 20.0  # a last, partial wave is a whole call long
    assert ideal_campaign_s(500, 100, 2.0, 20.0) == 250.0       # a slow pace is the bound


def test_peak_concurrent_calls_at_the_phones() -> None:
    assert peak_overlap([]) == 0
    assert peak_overlap([(0.0, 10.0), (1.0, 2.0), (1.5, 3.0), (2.5, 4.0)]) == 3
    # A line freed as another call starts is reused, not doubled.
    assert peak_overlap([(0.0, 5.0), (5.0, 9.0)]) == 1


def test_the_benches_recording_ends_at_a_pause_between_words() -> None:
    # 20 ms frames: a word (loud) to frame 10, a pause of 3 frames, a word from 13 to 40, a pause, a word.
    frames = [3000.0] * 10 + [0.0] * 3 + [3000.0] * 27 + [0.0] * 2 + [3000.0] * 20
    samples = np.concatenate([np.full(160, level, dtype=np.int16) * np.resize([1, -1], 160).astype(np.int16)
                              for level in frames])
    assert speech_cut_ms(samples, 41 * 20) == 40 * 20   # the pause after the second word
    assert speech_cut_ms(samples, 39 * 20) == 10 * 20   # the second word would be cut: the pause before it
    assert speech_cut_ms(samples, 9 * 20) == 9 * 20     # no pause that early: cut where asked


def test_the_benches_recording_is_its_length_with_silence_at_both_seams(tmp_path: Path) -> None:
    # The seams (after the header, before the keys prompt) fall on silence: see bench_parts.LEAD_S.
    samples, rate = read_wav_mono(_speech_of(10.0, tmp_path / "message.wav"))
    start, end = sound_span(samples, rate)
    assert rate == 8000 and len(samples) == 80000
    assert start >= LEAD_S * rate and end <= len(samples) - TRAIL_S * rate
    assert end > 8 * rate  # mostly speech
    # It ends at the end of a word: the speech fades out before it (no word cut off at full level).
    tail = samples[end - 160: end].astype(np.float64)
    assert np.sqrt(np.mean(tail * tail)) < 0.5 * np.abs(samples).max()
