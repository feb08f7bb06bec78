"""Audio matching: finds a clip inside a longer, shifted, noisy recording; rejects other audio."""

import numpy as np

from ivr.media.compare import locate

RATE = 8000


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(int(seconds * RATE))
    envelope = np.abs(np.sin(np.linspace(0, 12 * np.pi, noise.size)))  # syllable-like bursts
    return 0.3 * noise * envelope


def test_finds_the_clip_and_its_delay() -> None:
    clip = _speechlike(2.0, 1)
    recording = np.concatenate([np.zeros(int(0.75 * RATE)), clip, np.zeros(RATE)])
    recording += 0.01 * np.random.default_rng(2).standard_normal(recording.size)
    match = locate(clip, recording, RATE)
    assert abs(match.lag_s - 0.75) < 1 / RATE
    assert match.peak_ncc > 0.99


def test_a_clip_whose_first_frame_was_lost_still_matches() -> None:
    clip = _speechlike(2.0, 3)
    recording = clip[160:]  # the first 20 ms never arrived
    match = locate(clip, recording, RATE)
    assert abs(match.lag_s + 0.02) < 1 / RATE and match.peak_ncc > 0.99


def test_other_audio_does_not_match() -> None:
    assert locate(_speechlike(2.0, 4), _speechlike(4.0, 5), RATE).peak_ncc < 0.2


def test_a_clip_cut_in_half_scores_low() -> None:
    clip = _speechlike(2.0, 6)
    assert locate(clip, clip[: RATE], RATE).peak_ncc < 0.9
