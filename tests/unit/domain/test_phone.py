"""Phone numbers to E.164, with a clear reason for everything refused."""

import pytest

from ivr.domain.phone import InvalidPhoneNumber, mask, normalize_phone


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("09 123 45 67", "+3291234567"),
        ("02/123.45.67", "+3221234567"),
        ("(050) 12-34-56", "+3250123456"),
        ("0470 12 34 56", "+32470123456"),
        ("+32 470 12 34 56", "+32470123456"),
        ("0032 9 123 45 67", "+3291234567"),
        ("+31 20 123 4567", "+31201234567"),
        ("0033 1 23 45 67 89", "+33123456789"),
        ("  +352 621 123 456 ", "+352621123456"),
    ],
)
def test_valid_numbers(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("09 123 45 6", "landline has 9 digits"),
        ("09 123 45 678", "landline has 9 digits"),
        ("0470 12 34 5", "mobile"),
        ("0420 12 34 56", "mobile"),
        ("0900 12 345", "service number"),
        ("070 22 33 44", "service number"),
        ("078 15 20 25", "service number"),
        ("0800 12 345", "service number"),
        ("9123 4567", "must start with 0"),
        ("09 ABC 45 67", "not digits"),
        ("+1 23", "8 to 15"),
    ],
)
def test_invalid_numbers_say_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match=reason):
        normalize_phone(raw)


def test_mask_keeps_only_the_last_digits() -> None:
    assert mask("+32470123456") == "+32******456"
