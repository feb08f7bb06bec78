"""The recording store: the police's original audio, kept byte for byte with its checksum.

Rules: a recording is copied into the store (fsynced, then renamed into place) and its SHA-256
computed before anything else happens with it; members and coordinators later hear these very
bytes (``open_verified`` refuses a file whose checksum no longer matches); files are readable by
the application's user only.
"""

from __future__ import annotations

import hashlib
import os
import wave
from dataclasses import dataclass
from pathlib import Path


class RecordingCorrupted(RuntimeError):
    """A stored recording no longer matches its checksum (or is gone)."""


@dataclass(frozen=True)
class StoredFile:
    """Where a recording was stored and what it is."""

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


def wav_facts(path: Path) -> tuple[float, int]:
    """(duration in seconds, sample rate) of a PCM WAV file; (0, 8000) for an empty or headless one."""
    try:
        with wave.open(str(path), "rb") as w:
            rate = w.getframerate()
            return w.getnframes() / float(rate), rate
    except (wave.Error, EOFError):
        return 0.0, 8000


class RecordingStore:
    """Recordings under one directory, named by message and take."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def store(self, source: Path, message_id: int, take: int) -> StoredFile:
        """Copy ``source`` into the store durably; returns its path, checksum and facts."""
        target_dir = self.root / f"message-{message_id:06d}"
        target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = target_dir / f"take-{take}.wav"
        tmp = target.with_suffix(".part")
        digest = hashlib.sha256()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 16), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        duration_s, rate = wav_facts(target)
        return StoredFile(target, digest.hexdigest(), duration_s, rate)

    @staticmethod
    def open_verified(path: Path, sha256: str) -> Path:
        """``path`` if its content still matches ``sha256``; else ``RecordingCorrupted``."""
        if not path.exists():
            raise RecordingCorrupted(f"{path} is missing")
        actual = sha256_of(path)
        if actual != sha256:
            raise RecordingCorrupted(f"{path}: checksum {actual[:12]}… is not the stored {sha256[:12]}…")
        return path
