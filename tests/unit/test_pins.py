"""PINs: salted scrypt over an HMAC pepper, constant-time compare, never stored in clear; older
un-peppered hashes still verify; new PINs have at least 6 digits."""

from storage.pins import LEGACY, PEPPERED, hash_pin, needs_rehash, new_pin_problem, valid_pin_format, verify_pin

PEPPER = b"k" * 32


def test_hash_and_verify() -> None:
    stored = hash_pin("482193", PEPPER)
    assert "482193" not in stored and stored.startswith(PEPPERED + "$")
    assert verify_pin("482193", stored, PEPPER)
    assert not verify_pin("482190", stored, PEPPER)
    assert hash_pin("482193", PEPPER) != stored  # salted


def test_a_peppered_hash_is_useless_without_its_key() -> None:
    stored = hash_pin("482193", PEPPER)
    assert not verify_pin("482193", stored) and not verify_pin("482193", stored, b"x" * 32)


def test_an_older_hash_verifies_and_asks_to_be_peppered() -> None:
    old = hash_pin("4821")  # as stored before the pepper: scrypt of the PIN itself
    assert old.startswith(LEGACY + "$") and verify_pin("4821", old, PEPPER) and verify_pin("4821", old)
    assert needs_rehash(old, PEPPER) and not needs_rehash(old, None)
    assert not needs_rehash(hash_pin("4821", PEPPER), PEPPER)


def test_missing_or_malformed_hash_never_matches() -> None:
    assert not verify_pin("4821", None, PEPPER)
    assert not verify_pin("4821", "plain$4821", PEPPER)
    assert not verify_pin("4821", "scrypt$x$y$z$!!$!!", PEPPER)


def test_pin_format() -> None:
    # What still verifies (older 4-digit PINs) ...
    assert valid_pin_format("0000") and valid_pin_format("12345678")
    assert not valid_pin_format("123") and not valid_pin_format("123456789") and not valid_pin_format("12a4")
    # ... and what may be set from now on.
    assert new_pin_problem("482193") is None and new_pin_problem("48219377") is None
    assert new_pin_problem("4821") == "a new PIN is 6 to 8 digits (it has 4)"
    assert new_pin_problem("12ab56") == "a PIN is digits only"
