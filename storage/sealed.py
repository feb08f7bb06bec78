"""Sealing at rest: AES-256-GCM with a key kept in a file outside the database.

Rules of this module:

* The key is 32 random bytes, written hex in a 0600 file the first time it is needed (``O_EXCL``:
  two processes starting at once end up with the same key) and never printed or logged. A key file
  another user may read, or that does not hold exactly one 256-bit key, is refused by name.
* A sealed file is ``MAGIC`` + a 12-byte random nonce + the ciphertext and its 16-byte tag; nothing
  of the plaintext (no ``RIFF`` header) is visible. The associated data names what the file must
  be (``recording:<sha256 of the plaintext>``): a file swapped for another recording's, altered by
  one bit, or opened with another installation's key is refused (``SealError``).
* Plaintext exists only where it is needed, in a private directory (0700, ours, not a symlink)
  under the system's temporary directory (``TMPDIR``: point it at a tmpfs to keep it in memory).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: The first bytes of every sealed file (format 1: AES-256-GCM, 96-bit nonce).
MAGIC = b"BINFSEAL1\n"
NONCE_BYTES = 12
KEY_BYTES = 32


class SealError(RuntimeError):
    """A sealed file cannot be opened: wrong key, altered, or not what it claims to be."""


class KeyFileError(RuntimeError):
    """The key file is unusable (readable by others, malformed); the message names the file."""


def load_or_create_key(path: Path) -> bytes:
    """The 256-bit key in ``path``, created (0600, random) if the file does not exist yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: theirs is the key
        else:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(KEY_BYTES) + "\n")
                out.flush()
                os.fsync(out.fileno())
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if info.st_mode & 0o077:
        raise KeyFileError(f"{path}: mode {oct(info.st_mode & 0o777)} lets others read the recordings' key; "
                           f"chmod 600 {path}")
    raw = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path}: not a {8 * KEY_BYTES}-bit key in hex (64 hex digits)")
    return key


def is_sealed(head: bytes) -> bool:
    """Whether bytes (at least the first ``len(MAGIC)``) start a sealed file."""
    return head.startswith(MAGIC)


def file_is_sealed(path: Path) -> bool:
    """Whether the file at ``path`` is sealed (``False`` for a plain, legacy file)."""
    with open(path, "rb") as f:
        return is_sealed(f.read(len(MAGIC)))


def seal(key: bytes, plaintext: bytes, purpose: str) -> bytes:
    """``plaintext`` sealed for ``purpose`` (the associated data, e.g. ``recording:<sha256>``)."""
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, purpose.encode("utf-8"))


def unseal(key: bytes, sealed: bytes, purpose: str) -> bytes:
    """The plaintext of ``sealed``; ``SealError`` if it is not sealed for ``purpose`` with ``key``."""
    if not is_sealed(sealed):
        raise SealError("not a sealed file")
    nonce, body = sealed[len(MAGIC):len(MAGIC) + NONCE_BYTES], sealed[len(MAGIC) + NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, purpose.encode("utf-8"))
    except InvalidTag:
        raise SealError("refused: it does not open with this installation's key (wrong key file, "
                        "or the file was altered or swapped)") from None


def private_dir(name: str, anchor: Path) -> Path:
    """A directory only we can enter (0700), under the temporary directory, one per ``anchor``.

    Raises ``OSError`` if something that is not our own private directory sits at its name (another
    user could otherwise prepare it to read what we put there)."""
    tag = hashlib.sha256(str(anchor.resolve()).encode("utf-8")).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"binfoon-{name}-{os.geteuid()}-{tag}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(f"{path}: not our own private directory; refusing to put plaintext there")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def write_private(target: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``target`` atomically (temporary name, fsync, rename) with ``mode``."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def key_id(key: bytes) -> str:
    """A fingerprint naming a key without revealing it (a backup records which key its recordings need)."""
    return hmac.new(key, b"binfoon sealing key id", hashlib.sha256).hexdigest()[:16]
