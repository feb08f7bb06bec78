"""One rule for "is this message due"."""

import datetime as dt

from ivr.domain.schedule import due

NOW = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def test_a_message_without_a_time_is_due_at_once() -> None:
    assert due(None, NOW)


def test_a_message_is_due_at_its_time_and_after_never_before() -> None:
    assert due(NOW, NOW)
    assert due(NOW - dt.timedelta(seconds=5), NOW)
    assert not due(NOW + dt.timedelta(milliseconds=1), NOW)
