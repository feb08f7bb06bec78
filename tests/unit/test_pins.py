"""PINs: salted scrypt, constant-time compare, never stored in clear."""

from storage.pins import hash_pin, valid_pin_format, verify_pin


def test_hash_and_verify() -> None:
    stored = hash_pin("4821")
    assert "4821" not in stored and stored.startswith("scrypt$")
    assert verify_pin("4821", stored)
    assert not verify_pin("4820", stored)
    assert hash_pin("4821") != stored  # salted


def test_missing_or_malformed_hash_never_matches() -> None:
    assert not verify_pin("4821", None)
    assert not verify_pin("4821", "plain$4821")
    assert not verify_pin("4821", "scrypt$x$y$z$!!$!!")


def test_pin_format() -> None:
    assert valid_pin_format("0000") and valid_pin_format("12345678")
    assert not valid_pin_format("123") and not valid_pin_format("123456789") and not valid_pin_format("12a4")
