"""PINs are stored as peppered scrypt hashes and compared in constant time; they are never logged.

Rules:
- a new hash is ``scrypt(hmac_sha256(pepper, pin))``: the pepper is a random key in a 0600 file
  outside the database (``load_pepper``), so a copied database alone cannot be brute-forced;
- hashes made before the pepper (``scrypt$...``, the PIN itself hashed) still verify, so nobody is
  locked out by the upgrade; ``needs_rehash`` says to store a peppered hash at the next right PIN;
- new PINs have at least ``MIN_NEW_PIN_DIGITS`` digits; older 4-digit PINs keep working (rotate them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

# scrypt cost: about 30 ms here; slow for an attacker with a stolen table, quick for a phone call.
N, R, P = 2**14, 8, 1
#: The scheme of hashes made with a pepper; ``scrypt`` is the older one (no pepper).
PEPPERED = "scrypt-hmac"
LEGACY = "scrypt"
#: New PINs are at least this long (10^6 guesses; older 4-digit PINs still verify until rotated).
MIN_NEW_PIN_DIGITS = 6
MAX_PIN_DIGITS = 8
#: Bytes of the pepper key (stored hex-encoded).
PEPPER_BYTES = 32


class PepperError(RuntimeError):
    """The pepper key file cannot be read or made; the message names the file."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _secret(pin: str, pepper: bytes | None) -> bytes:
    return pin.encode() if pepper is None else hmac.new(pepper, pin.encode(), hashlib.sha256).digest()


def hash_pin(pin: str, pepper: bytes | None = None) -> str:
    """A salted scrypt hash of ``pin`` (``scrypt-hmac$N$r$p$salt$hash`` with a pepper; without one the
    older ``scrypt$...`` form, as tests and the lab make before a service has its key)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(_secret(pin, pepper), salt=salt, n=N, r=R, p=P, dklen=32)
    scheme = LEGACY if pepper is None else PEPPERED
    return f"{scheme}${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_pin(pin: str, stored: str | None, pepper: bytes | None = None) -> bool:
    """True if ``pin`` matches ``stored``; a missing or malformed hash never matches, nor does a
    peppered hash without the pepper."""
    if not stored:
        # Spend the same time as a real check, so timing does not reveal unknown accounts.
        hashlib.scrypt(_secret(pin, pepper), salt=b"0" * 16, n=N, r=R, p=P, dklen=32)
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme not in (LEGACY, PEPPERED) or (scheme == PEPPERED and pepper is None):
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(_secret(pin, pepper if scheme == PEPPERED else None),
                                salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str | None, pepper: bytes | None) -> bool:
    """True when a verified ``stored`` hash should be replaced: made without the pepper, or with
    older scrypt parameters (only when there is a pepper to hash with)."""
    if pepper is None or not stored:
        return False
    parts = stored.split("$")
    return parts[0] != PEPPERED or parts[1:4] != [str(N), str(R), str(P)]


def valid_pin_format(pin: str) -> bool:
    """A PIN that still verifies: 4 to 8 digits (what a keypad can type and a person can remember)."""
    return pin.isdigit() and 4 <= len(pin) <= MAX_PIN_DIGITS


def new_pin_problem(pin: str) -> str | None:
    """Why ``pin`` cannot be set as a new PIN (``None``: it can)."""
    if not pin.isdigit():
        return "a PIN is digits only"
    if not MIN_NEW_PIN_DIGITS <= len(pin) <= MAX_PIN_DIGITS:
        return f"a new PIN is {MIN_NEW_PIN_DIGITS} to {MAX_PIN_DIGITS} digits (it has {len(pin)})"
    return None


def load_pepper(path: Path) -> bytes:
    """The pepper in ``path``, made on first use (random, 0600, its folder 0700); a file others may
    read is made 0600 first. Raises ``PepperError`` naming the file when it cannot be used."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(PEPPER_BYTES) + "\n")
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except OSError as exc:
        raise PepperError(f"PIN pepper key {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise PepperError(f"PIN pepper key {path}: not a hex key (was it edited?)") from None
    if len(key) < 16:
        raise PepperError(f"PIN pepper key {path}: too short ({len(key)} bytes, 16 at least)")
    return key
