"""PINs are stored as scrypt hashes and compared in constant time; they are never logged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt cost: about 30 ms here; slow for an attacker with a stolen table, quick for a phone call.
N, R, P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_pin(pin: str) -> str:
    """A salted scrypt hash of ``pin``: ``scrypt$N$r$p$salt$hash``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_pin(pin: str, stored: str | None) -> bool:
    """True if ``pin`` matches ``stored``; a missing or malformed hash never matches."""
    if not stored:
        # Spend the same time as a real check, so timing does not reveal unknown accounts.
        hashlib.scrypt(pin.encode(), salt=b"0" * 16, n=N, r=R, p=P, dklen=32)
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(pin.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def valid_pin_format(pin: str) -> bool:
    """A PIN is 4 to 8 digits (what a keypad can type and a person can remember)."""
    return pin.isdigit() and 4 <= len(pin) <= 8
