"""Audio matching: finds a clip inside a longer, shifted, noisy recording; rejects other audio."""

import numpy as np
import pytest

from ivr.media.compare import hear, locate, read_wav_mono, speech_span
from tests.conftest import SHARED_DIR

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


# -- hear: the whole of a clip's speech, piece by piece -------------------------------------------
def _clip() -> tuple[np.ndarray, int]:
    return read_wav_mono(SHARED_DIR / "audio" / "espeak-nl" / "02.wav")


def _lose_frames(samples: np.ndarray, rate: int, at_s: list[float]) -> np.ndarray:
    """The samples with one 20 ms frame dropped at each of ``at_s`` (what a loaded call leg does)."""
    keep = np.ones(samples.size, dtype=bool)
    for at in at_s:
        keep[int(at * rate):int(at * rate) + rate // 50] = False
    return samples[keep]


def _delay_frames(samples: np.ndarray, rate: int, at_s: list[float]) -> np.ndarray:
    """The samples with 20 ms of silence before each of ``at_s`` (a frame that came late)."""
    pieces, last = [], 0
    for at in at_s:
        pieces += [samples[last:int(at * rate)], np.zeros(rate // 50)]
        last = int(at * rate)
    return np.concatenate([*pieces, samples[last:]])


@pytest.mark.parametrize("damage", [_lose_frames, _delay_frames])
def test_a_clip_that_lost_frames_is_heard_whole_where_one_correlation_fails(damage: object) -> None:
    clip, rate = _clip()
    span = speech_span(clip, rate)
    assert span is not None
    damaged = damage(clip, rate, [span[0] + 0.25, (span[0] + span[1]) / 2, span[1] - 0.3])  # type: ignore[operator]
    recording = np.concatenate([np.zeros(3 * rate), damaged, np.zeros(rate)])
    assert locate(clip, recording, rate).peak_ncc < 0.9  # what the old check said
    hearing = hear(clip, recording, rate)
    assert hearing.whole, hearing
    assert hearing.lag_s is not None and abs(hearing.lag_s - 3.0) < 0.05


@pytest.mark.parametrize("cut, seconds", [("start", 0.5), ("middle", 0.5), ("end", 0.5), ("start", 0.1),
                                          ("loudest", 0.1)])
def test_a_clip_missing_some_speech_is_not_heard_whole(cut: str, seconds: float) -> None:
    """(100 ms of the quietest speech can go unnoticed: what the check weighs is the sound's energy.)"""
    clip, rate = _clip()
    span = speech_span(clip, rate)
    assert span is not None
    frames = clip[:clip.size // 800 * 800].reshape(-1, 800)
    loudest = int(np.argmax((frames * frames).sum(axis=1))) * 0.1
    at = {"start": span[0], "middle": (span[0] + span[1]) / 2, "end": span[1] - seconds, "loudest": loudest}[cut]
    damaged = clip.copy()
    damaged[int(at * rate):int((at + seconds) * rate)] = 0.0
    recording = np.concatenate([np.zeros(rate), damaged, np.zeros(rate)])
    assert not hear(clip, recording, rate).whole


def test_a_clip_played_twice_is_heard_whole_and_other_speech_is_not() -> None:
    clip, rate = _clip()
    other, _ = read_wav_mono(SHARED_DIR / "audio" / "espeak-nl" / "01.wav")
    twice = np.concatenate([np.zeros(rate), clip, np.zeros(rate), clip])
    assert hear(clip, twice, rate).whole
    assert not hear(clip, np.concatenate([np.zeros(rate), other]), rate).whole
