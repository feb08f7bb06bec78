"""The copies' key and what it signs: unsubscribe links in e-mail copies, Kannel's callback URLs.

Rules:
- one key (``Settings.copies_key_path``): 32 random bytes, hex in a file made 0600 on first use (never
  wider, made atomically: a second process reads the first one's key); a file others may read is refused;
- every signature names its purpose (``unsubscribe``, ``dlr``, ...): a value signed for one purpose is
  never accepted for another;
- a token is checked in constant time and anything unexpected in it (length, alphabet, version) is
  simply "no token": a link from the network is hostile until its MAC says otherwise.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

#: Bytes of the key.
KEY_BYTES = 32
#: Hex digits kept of a signature (128 bits: far beyond guessing over HTTP or SMTP).
MAC_HEX = 32
#: The first byte of an unsubscribe token: a later format gets a new one and old links keep working.
TOKEN_VERSION = 1
_MAC_BYTES = MAC_HEX // 2
_PERSON_BYTES = 8
_TOKEN_BYTES = 1 + _PERSON_BYTES + _MAC_BYTES
#: An unsubscribe token: URL-safe base64 without padding (safe in a path and in a mailto subject).
_TOKEN = re.compile(rf"^[A-Za-z0-9_-]{{{len(base64.urlsafe_b64encode(bytes(_TOKEN_BYTES)).rstrip(b'='))}}}$")


_HEX = re.compile(r"^[0-9A-Fa-f]+\Z")


class CopiesKeyError(RuntimeError):
    """The copies key file cannot be used (readable by others, not a key); the message names the file."""


def load_copies_key(path: Path, owner: tuple[int, int] | None = None) -> bytes:
    """The key in ``path``, made on first use (32 random bytes, 0600). ``owner``: (uid, gid) a key made
    here is given to (root making it for the service: ``binfoon kannel config``); a key that exists
    keeps its owner. Raises ``CopiesKeyError`` naming the file when others may read it or it holds no key."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CopiesKeyError(f"copies key {path}: {exc.strerror or exc}") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written whole under a private name, then linked into place: a process that reads the key
        # never sees half a file, and of two processes making it at once, the first link wins.
        # (``storage.sealed.load_or_create_key`` creates the file first and writes it after.)
        part = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(KEY_BYTES) + "\n")
                out.flush()
                os.fsync(out.fileno())
                if owner is not None:
                    # Given away through the open file, before it has its name: a chown by path after
                    # the link would follow a symlink the folder's owner put there meanwhile.
                    os.fchown(out.fileno(), *owner)
            try:
                os.link(part, path)
            except FileExistsError:
                pass  # another process made it first: theirs is the key
        finally:
            part.unlink(missing_ok=True)
        return _read_key(path)
    except OSError as exc:
        raise CopiesKeyError(f"copies key {path}: {exc.strerror or exc}") from None


def _read_key(path: Path) -> bytes:
    # Opened without following a symlink and checked on the open file: what is checked is what is read.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CopiesKeyError(f"copies key {path}: not a regular file") from None
        raise
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CopiesKeyError(f"copies key {path}: not a regular file")
        if info.st_mode & 0o077:
            raise CopiesKeyError(f"copies key {path}: mode {oct(info.st_mode & 0o777)} lets others read the key "
                                 f"that signs unsubscribe links; chmod 600 {path}")
        raw = file.read(4 * KEY_BYTES)
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise CopiesKeyError(f"copies key {path}: not a {8 * KEY_BYTES}-bit key in hex ({2 * KEY_BYTES} hex digits)")
    return key


def _mac(key: bytes, purpose: str, data: bytes) -> bytes:
    if not purpose or "\0" in purpose:
        raise ValueError("a signature's purpose is a non-empty name without NUL")
    return hmac.new(key, b"binfoon copies\0" + purpose.encode("utf-8") + b"\0" + data, hashlib.sha256).digest()


def sign(key: bytes, purpose: str, value: str) -> str:
    """The signature (hex, ``MAC_HEX`` digits) of ``value`` for ``purpose``."""
    return _mac(key, purpose, value.encode("utf-8")).hex()[:MAC_HEX]


def verify(key: bytes, purpose: str, value: str, signature: str) -> bool:
    """Whether ``signature`` is ``sign(key, purpose, value)`` (compared in constant time)."""
    # Only hex digits are compared (``compare_digest`` raises on a str beyond ASCII: never a 500 for that).
    if not isinstance(signature, str) or len(signature) != MAC_HEX or not _HEX.match(signature):
        return False
    return hmac.compare_digest(sign(key, purpose, value), signature.lower())


def unsubscribe_token(key: bytes, person_id: int) -> str:
    """The token of a person's unsubscribe link: version, person id and MAC, URL-safe base64.

    It does not expire: a member may unsubscribe from an old e-mail as well as from today's."""
    if not 0 < person_id < 2 ** (8 * _PERSON_BYTES - 1):
        raise ValueError(f"not a person id: {person_id}")
    data = bytes([TOKEN_VERSION]) + person_id.to_bytes(_PERSON_BYTES, "big")
    raw = data + _mac(key, "unsubscribe", data)[:_MAC_BYTES]
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def person_of_token(key: bytes, token: str) -> int | None:
    """The person an unsubscribe token names, or ``None`` for anything that is not a token we signed."""
    if not isinstance(token, str) or not _TOKEN.match(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    data, mac = raw[:1 + _PERSON_BYTES], raw[1 + _PERSON_BYTES:]
    if len(raw) != _TOKEN_BYTES or data[0] != TOKEN_VERSION:
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        return None  # one spelling per token (the last character's spare bits are zero)
    if not hmac.compare_digest(_mac(key, "unsubscribe", data)[:_MAC_BYTES], mac):
        return None
    person_id = int.from_bytes(data[1:], "big")
    return person_id if person_id > 0 else None

