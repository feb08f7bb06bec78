"""The destination policy: households in Belgium and its neighbours, never a paid or satellite range."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ivr.config import ConfigError, load_settings
from ivr.domain.destinations import DEFAULT_DESTINATIONS, DestinationPolicy, RefusedDestination, TestCallLog
from ivr.domain.phone import InvalidPhoneNumber


@pytest.mark.parametrize("number", [
    "+3292000001", "+32475000001", "+31201234567", "+33142000000", "+4930123456", "+352621123456",
])
def test_households_in_belgium_and_its_neighbours_may_be_called(number: str) -> None:
    assert DEFAULT_DESTINATIONS.refusal(number) is None


@pytest.mark.parametrize(("number", "why"), [
    ("+3290012345", "090x premium"),
    ("+3290512345", "090x premium"),
    ("+3270123456", "070 paid"),
    ("+3277123456", "077"),
    ("+3278123456", "078 shared-cost"),
    ("+3190012345", "Dutch 090x"),
    ("+33899123456", "French 08"),
    ("+49900123456", "German 0900"),
    ("+88216123456", "+882"),
    ("+8816123456", "satellite"),
    ("+870773112345", "Inmarsat"),
    ("+979123456789", "premium-rate (+979)"),
    ("+447700900123", "outside the countries"),
    ("+12025550123", "outside the countries"),
])
def test_paid_satellite_and_far_away_ranges_are_refused_with_a_reason(number: str, why: str) -> None:
    reason = DEFAULT_DESTINATIONS.refusal(number)
    assert reason is not None and why in reason
    assert number[6:] not in reason  # the subscriber part never ends up in a log or a page
    with pytest.raises(RefusedDestination):
        DEFAULT_DESTINATIONS.check(number)


def test_dialable_normalises_first_and_refuses_like_a_bad_number() -> None:
    assert DEFAULT_DESTINATIONS.dialable("0475 00 00 01") == "+32475000001"
    with pytest.raises(InvalidPhoneNumber, match="outside the countries"):
        DEFAULT_DESTINATIONS.dialable("0044 7700 900123")
    with pytest.raises(InvalidPhoneNumber, match=r"\+882"):
        DEFAULT_DESTINATIONS.dialable("+882 16 123456")


def test_the_settings_text_sets_the_countries_and_extra_ranges() -> None:
    policy = DestinationPolicy.parse("32, +31", "+32455")
    assert policy.refusal("+31201234567") is None
    assert policy.refusal("+33142000000") is not None
    assert "+32455" in (policy.refusal("+32455123456") or "")
    assert policy.refusal("+32475000001") is None


@pytest.mark.parametrize(("codes", "extra", "message"), [
    ("", "", "at least one"),
    ("32,4x", "", "'4x' is not a country code"),
    ("32,882", "", r"\+882 cannot be allowed"),
    ("32", "+32a", "not a number prefix"),
])
def test_bad_settings_are_refused_by_name(codes: str, extra: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DestinationPolicy.parse(codes, extra)


def test_start_up_refuses_a_bad_country_list_by_its_key(tmp_path: Path) -> None:
    environ = {"BINFOON_CONFIG": os.devnull, "BINFOON_ALLOWED_COUNTRY_CODES": "32,881"}
    with pytest.raises(ConfigError, match=r"allowed_country_codes .*\+881 cannot be allowed"):
        load_settings(environ=environ)
    settings = load_settings(environ={**environ, "BINFOON_ALLOWED_COUNTRY_CODES": "32",
                                      "BINFOON_REFUSED_NUMBER_PREFIXES": "+32455"})
    assert settings.destinations.refusal("+31201234567") and settings.destinations.refusal("+32455123456")
    assert settings.destinations.refusal("+32475000001") is None


def test_test_calls_wait_per_member_and_per_person_within_the_hour() -> None:
    log = TestCallLog(per_member=2, per_person=3)
    for t in (0.0, 10.0):
        assert log.refusal(1, "web:person:5", t) is None
        log.record(1, "web:person:5", t)
    assert log.refusal(1, "web:person:5", 20.0) == "member"
    assert log.refusal(2, "web:person:5", 20.0) is None
    log.record(2, "web:person:5", 20.0)
    assert log.refusal(3, "web:person:5", 30.0) == "person"
    assert log.refusal(3, "web:person:6", 30.0) is None  # another person's own budget
    assert log.refusal(1, "web:person:5", 3600.0) is None  # an hour later, the first two are forgotten


def test_a_country_the_dial_out_patterns_do_not_know_is_refused_at_start(tmp_path: Path) -> None:
    environ = {"BINFOON_CONFIG": os.devnull, "BINFOON_ALLOWED_COUNTRY_CODES": "32,44",
               "BINFOON_DIAL_TEMPLATE": "Local/${NUMBER}@binfoon-dial-out"}
    with pytest.raises(ConfigError, match=r"\+44 is not in binfoon-dial-out's patterns"):
        load_settings(environ=environ)
    assert load_settings(environ={**environ, "BINFOON_DIAL_TEMPLATE": "PJSIP/${NUMBER}@trunk"})
    assert load_settings(environ={**environ, "BINFOON_ALLOWED_COUNTRY_CODES": "32"})
