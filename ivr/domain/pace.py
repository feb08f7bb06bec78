"""The trunk's pace: carriers cap new calls per second. A pure token bucket; the clock is passed in."""

from __future__ import annotations


class TokenBucket:
    """Carriers cap calls per second: at most ``rate`` a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def borrow(self, now: float) -> None:
        """Take one token now, into debt if there is none: the calls after it wait the longer.

        For a call somebody waits on (a coordinator's review call): it goes at once, and the average
        pace still holds because later calls repay the debt (a parallel review wave of N coordinators
        does go out at once, as N review calls always did)."""
        self._refill(now)
        self._tokens -= 1.0

    def wait_s(self, now: float) -> float:
        """Seconds until a token is available."""
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate
