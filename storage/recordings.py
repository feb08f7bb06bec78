"""The recording store: the police's original audio, kept with its checksum, sealed at rest.

Rules: a recording is sealed (AES-256-GCM, ``storage.sealed``; the key in ``recordings.key`` next
to the store, 0600, never in the database) and written durably (fsynced, then renamed into place)
with the SHA-256 of its plaintext before anything else happens with it; the database keeps that
SHA-256, which is also the associated data of the seal. Members and coordinators later hear these
very bytes: ``open_verified`` opens the seal, checks the checksum, and hands out a plaintext copy
in a private 0700 directory (``plain_dir``), where copies not used for ``PLAIN_TTL_S`` are removed;
a file that no longer matches, or does not open with this installation's key, is refused
(``RecordingCorrupted``). Files written before sealing existed (plain WAV, "legacy") are still read
and verified as they are, until ``seal_legacy`` (``ivr.archive.at_rest``) seals them.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from storage.sealed import (
    SealError,
    file_is_sealed,
    load_or_create_key,
    private_dir,
    seal,
    unseal,
    write_private,
)

#: The key file's name, in the folder that holds the store (``data_dir``).
KEY_FILE = "recordings.key"
#: A plaintext copy not asked for this long is removed (a replay or a publication uses it at once).
PLAIN_TTL_S = 600.0
SEALED_SUFFIX = ".sealed"


class RecordingCorrupted(RuntimeError):
    """A stored recording no longer matches its checksum, cannot be opened with our key, or is gone."""


@dataclass(frozen=True)
class StoredFile:
    """Where a recording was stored (sealed) and what its plaintext is."""

    path: Path
    sha256: str
    duration_s: float
    sample_rate: int


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def wav_facts(path: Path | io.BytesIO) -> tuple[float, int]:
    """(duration in seconds, sample rate) of a PCM WAV file; (0, 8000) for an empty or headless one."""
    try:
        with wave.open(path if isinstance(path, io.BytesIO) else str(path), "rb") as w:
            rate = w.getframerate()
            return w.getnframes() / float(rate), rate
    except (wave.Error, EOFError):
        return 0.0, 8000


def purpose(sha256: str) -> str:
    """The associated data of a recording's seal: the SHA-256 of its plaintext (as the database keeps it)."""
    return f"recording:{sha256}"


def verify_plain(path: Path, sha256: str) -> Path:
    """``path`` (a plain file: a copy, or a legacy recording) if its content matches ``sha256``."""
    if not path.exists():
        raise RecordingCorrupted(f"{path} is missing")
    actual = sha256_of(path)
    if actual != sha256:
        raise RecordingCorrupted(f"{path}: checksum {actual[:12]}… is not the stored {sha256[:12]}…")
    return path


def open_recording(path: Path, sha256: str) -> Path:
    """The verified plaintext of a stored recording, wherever its store is (the file's grandparent
    folder: ``<store>/message-NNNNNN/take-N.sealed``)."""
    return RecordingStore(path.parent.parent).open_verified(path, sha256)


class RecordingStore:
    """Recordings under one directory, named by message and take, sealed with the installation's key."""

    def __init__(self, root: Path, key_file: Path | None = None) -> None:
        """``key_file`` defaults to ``recordings.key`` beside ``root`` (in ``data_dir``)."""
        self.root = root
        self.key_file = key_file if key_file is not None else root.parent / KEY_FILE
        self._key: bytes | None = None
        #: sealed file -> (its stat signature, plaintext copy) for copies already verified.
        self._opened: dict[Path, tuple[tuple[int, int, int], Path]] = {}
        self._plain_dir: Path | None = None

    # -- the key and the private plaintext directory ------------------------------------------
    def key(self) -> bytes:
        """The store's key, created on first use (``KeyFileError`` if the file is unusable)."""
        if self._key is None:
            self._key = load_or_create_key(self.key_file)
        return self._key

    @property
    def plain_dir(self) -> Path:
        """Where plaintext copies are handed out: 0700, ours, under the temporary directory."""
        if self._plain_dir is None:
            self._plain_dir = private_dir("plain", self.root)
        return self._plain_dir

    # -- writing -------------------------------------------------------------------------------
    def store(self, source: Path, message_id: int, take: int) -> StoredFile:
        """Seal ``source`` into the store durably; returns its path, plaintext checksum and facts."""
        data = source.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        target_dir = self.root / f"message-{message_id:06d}"
        target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = target_dir / f"take-{take}{SEALED_SUFFIX}"
        self._write_sealed(target, data, sha)
        duration_s, rate = wav_facts(io.BytesIO(data))
        return StoredFile(target, sha, duration_s, rate)

    def _write_sealed(self, target: Path, data: bytes, sha: str) -> None:
        write_private(target, seal(self.key(), data, purpose(sha)))
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)

    def seal_file(self, path: Path, sha256: str) -> Path:
        """Seal a legacy plain recording beside itself (``take-N.sealed``), after checking its checksum;
        returns the sealed path. The plain file is left for the caller to remove once the row points
        at the sealed one."""
        verify_plain(path, sha256)
        target = path.with_suffix(SEALED_SUFFIX)
        self._write_sealed(target, path.read_bytes(), sha256)
        return target

    # -- reading -------------------------------------------------------------------------------
    def plaintext(self, path: Path, sha256: str) -> bytes:
        """The verified plaintext bytes of a stored recording (sealed or legacy), in memory only."""
        if not path.exists():
            raise RecordingCorrupted(f"{path} is missing")
        if not file_is_sealed(path):
            return verify_plain(path, sha256).read_bytes()
        try:
            data = unseal(self.key(), path.read_bytes(), purpose(sha256))
        except SealError as exc:
            raise RecordingCorrupted(f"{path}: {exc}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:  # the seal held, so this is a row that lies about its file
            raise RecordingCorrupted(f"{path}: checksum {actual[:12]}… is not the stored {sha256[:12]}…")
        return data

    def check(self, path: Path, sha256: str) -> None:
        """Raise ``RecordingCorrupted`` unless the stored recording opens and matches ``sha256``."""
        self.plaintext(path, sha256)

    def open_verified(self, path: Path, sha256: str) -> Path:
        """A plaintext file of the recording at ``path`` whose content matches ``sha256``: a copy in
        ``plain_dir`` for a sealed recording, the file itself for a legacy one; else ``RecordingCorrupted``."""
        if not path.exists():
            raise RecordingCorrupted(f"{path} is missing")
        if not file_is_sealed(path):
            return verify_plain(path, sha256)
        self.sweep()
        info = path.stat()
        signature = (info.st_mtime_ns, info.st_size, info.st_ino)
        known = self._opened.get(path)
        if known is not None and known[0] == signature:
            try:
                os.utime(known[1])  # in use: not swept
                return known[1]
            except FileNotFoundError:
                pass  # swept meanwhile (another thread, another process): opened again below
        data = self.plaintext(path, sha256)
        plain = self.plain_dir / f"{sha256}.wav"
        write_private(plain, data)
        self._opened[path] = (signature, plain)
        return plain

    # -- forgetting ----------------------------------------------------------------------------
    def forget(self, sha256: str) -> None:
        """Remove the plaintext copy of a recording (it was purged)."""
        (self.plain_dir / f"{sha256}.wav").unlink(missing_ok=True)
        for path, (_sig, plain) in list(self._opened.items()):
            if plain.name == f"{sha256}.wav":
                del self._opened[path]

    def sweep(self, now: float | None = None) -> int:
        """Remove plaintext copies not used for ``PLAIN_TTL_S`` (and stray partial writes); how many."""
        now = time.time() if now is None else now
        removed = 0
        with os.scandir(self.plain_dir) as entries:
            for entry in entries:
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime >= PLAIN_TTL_S:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed
