"""``binfoon bench campaign``'s arithmetic: the ideal is the scripted call's, concurrency is counted at the phones."""

from __future__ import annotations

from ivr.lab.bench import ideal_campaign_s, peak_overlap


def test_ideal_is_waves_of_the_scripted_call_or_the_pace() -> None:
    assert ideal_campaign_s(500, 100, 50.0, 22.37) == 5 * 22.37
    assert ideal_campaign_s(501, 100, 50.0, 20.0) == 6 * 20.0  # a last, partial wave is a whole call long
    assert ideal_campaign_s(500, 100, 2.0, 20.0) == 250.0       # a slow pace is the bound


def test_peak_concurrent_calls_at_the_phones() -> None:
    assert peak_overlap([]) == 0
    assert peak_overlap([(0.0, 10.0), (1.0, 2.0), (1.5, 3.0), (2.5, 4.0)]) == 3
    # A line freed as another call starts is reused, not doubled.
    assert peak_overlap([(0.0, 5.0), (5.0, 9.0)]) == 1
