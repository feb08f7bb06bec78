"""The SIP ban policy: N failures from one address within the window ban it for a while (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from ivr.domain.sip_bans import Ban, BanRules, canonical_address, decide, expire, is_exempt, parse_networks

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)
RULES = BanRules(max_failures=3, window_s=60.0, ban_s=600.0, exempt=parse_networks(["127.0.0.1", "192.0.2.0/28"]))


def _at(*seconds: float) -> list[dt.datetime]:
    return [T0 + dt.timedelta(seconds=s) for s in seconds]


def test_the_nth_failure_within_the_window_bans_the_address_for_ban_s() -> None:
    assert decide("198.51.100.7", _at(0, 10), {}, T0 + dt.timedelta(seconds=10), RULES) is None
    ban = decide("198.51.100.7", _at(0, 10, 20), {}, T0 + dt.timedelta(seconds=20), RULES)
    assert ban == Ban("198.51.100.7", T0 + dt.timedelta(seconds=620), 3)


def test_failures_older_than_the_window_do_not_count() -> None:
    # One try every 40 s: never three inside a 60 s window.
    now = T0 + dt.timedelta(seconds=80)
    assert decide("198.51.100.7", _at(0, 40, 80), {}, now, RULES) is None


def test_exempt_networks_and_non_addresses_are_never_banned() -> None:
    for address in ("127.0.0.1", "192.0.2.9", "::ffff:127.0.0.1", "not-an-address"):
        assert decide(address, _at(0, 1, 2, 3), {}, T0 + dt.timedelta(seconds=3), RULES) is None, address
    assert is_exempt("192.0.2.15", RULES.exempt) and not is_exempt("192.0.2.16", RULES.exempt)
    # Another loopback address is not exempt unless listed (the tests attack from 127.0.0.2).
    assert decide("127.0.0.2", _at(0, 1, 2), {}, T0 + dt.timedelta(seconds=2), RULES) is not None


def test_a_banned_address_is_not_banned_again_until_its_ban_ended() -> None:
    now = T0 + dt.timedelta(seconds=2)
    current = {"198.51.100.7": Ban("198.51.100.7", T0 + dt.timedelta(seconds=600), 3)}
    assert decide("198.51.100.7", _at(0, 1, 2), current, now, RULES) is None
    later = T0 + dt.timedelta(seconds=700)
    assert decide("198.51.100.7", _at(698, 699, 700), current, later, RULES) is not None


def test_expire_splits_bans_in_force_from_ended_ones() -> None:
    bans = {"198.51.100.7": Ban("198.51.100.7", T0 + dt.timedelta(seconds=10), 3),
            "2001:db8::1": Ban("2001:db8::1", T0 + dt.timedelta(seconds=100), 5)}
    kept, ended = expire(bans, T0 + dt.timedelta(seconds=10))
    assert list(kept) == ["2001:db8::1"] and [b.address for b in ended] == ["198.51.100.7"]


def test_addresses_have_one_written_form() -> None:
    assert canonical_address("::ffff:127.0.0.2") == "127.0.0.2"
    assert canonical_address("[2001:DB8::1]") == "2001:db8::1"
    assert canonical_address("example.org") is None


def test_rules_and_networks_are_checked() -> None:
    with pytest.raises(ValueError, match="max_failures"):
        BanRules(max_failures=0)
    with pytest.raises(ValueError, match="'sip.example' is not an IP address or CIDR"):
        parse_networks(["sip.example"])
