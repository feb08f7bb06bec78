"""C1: the recording store seals what it keeps (AES-256-GCM, key outside the database) and refuses
what does not open with its key; plaintext only in a private folder, only when asked for."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from storage.recordings import RecordingCorrupted, RecordingStore, open_recording
from storage.sealed import MAGIC, KeyFileError
from tests.conftest import SHARED_DIR

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
OTHER_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "05.wav"


def stored_files(root: Path) -> list[Path]:
    """Every file under the store, whatever its name."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_no_stored_file_holds_a_wav_and_the_key_is_a_private_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    store = RecordingStore(data_dir / "recordings")
    for message_id, clip in ((1, CLIP), (2, OTHER_CLIP), (3, CLIP)):
        store.store(clip, message_id, 1)
    files = stored_files(store.root)
    assert len(files) == 3
    pcm = CLIP.read_bytes()[4096:8192]  # a 4 kB slice of the recording's samples
    for path in files:
        data = path.read_bytes()
        assert b"RIFF" not in data and b"WAVE" not in data and pcm not in data, path
        assert data.startswith(MAGIC)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = data_dir / "recordings.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key.read_text().strip())) == 32
    # The same content stored twice is sealed twice under fresh nonces: equal files would tell.
    assert files[0].read_bytes() != files[2].read_bytes()


def test_the_plaintext_is_handed_out_verified_in_a_private_folder(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "var" / "recordings")
    stored = store.store(CLIP, 7, 1)
    assert stored.sha256 == hashlib.sha256(CLIP.read_bytes()).hexdigest()  # the database keeps the plaintext's
    assert stored.duration_s > 1.0 and stored.sample_rate == 8000
    plain = store.open_verified(stored.path, stored.sha256)
    assert plain.read_bytes() == CLIP.read_bytes()
    assert not plain.is_relative_to(tmp_path / "var")  # never in the data directory
    assert stat.S_IMODE(plain.parent.stat().st_mode) == 0o700 and plain.parent.stat().st_uid == os.geteuid()
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    # Another process (the command line, the transcriber) finds the key beside the store.
    assert open_recording(stored.path, stored.sha256).read_bytes() == CLIP.read_bytes()
    # Purged: the plaintext copy goes too.
    store.forget(stored.sha256)
    assert not plain.exists()
    # Copies not used for a while are swept.
    plain = store.open_verified(stored.path, stored.sha256)
    assert store.sweep(now=plain.stat().st_mtime + 1) == 0 and plain.exists()
    assert store.sweep(now=plain.stat().st_mtime + 3600) == 1 and not plain.exists()
    assert store.open_verified(stored.path, stored.sha256).read_bytes() == CLIP.read_bytes()


def test_another_installations_key_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "var" / "recordings")
    stored = store.store(CLIP, 1, 1)
    stranger = RecordingStore(store.root, key_file=tmp_path / "other.key")
    with pytest.raises(RecordingCorrupted, match="does not open with this installation's key"):
        stranger.open_verified(stored.path, stored.sha256)
    with pytest.raises(RecordingCorrupted, match="does not open with this installation's key"):
        stranger.check(stored.path, stored.sha256)


def test_an_altered_or_swapped_file_is_refused(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "var" / "recordings")
    first = store.store(CLIP, 1, 1)
    second = store.store(OTHER_CLIP, 2, 1)
    assert store.open_verified(first.path, first.sha256).read_bytes() == CLIP.read_bytes()
    # One bit flipped in the middle of the ciphertext.
    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    first.path.write_bytes(bytes(data))
    with pytest.raises(RecordingCorrupted, match="altered or swapped"):
        store.open_verified(first.path, first.sha256)
    # Another recording's sealed file put in its place: its seal names another checksum.
    first.path.write_bytes(second.path.read_bytes())
    with pytest.raises(RecordingCorrupted, match="altered or swapped"):
        store.open_verified(first.path, first.sha256)
    # Gone altogether.
    first.path.unlink()
    with pytest.raises(RecordingCorrupted, match="missing"):
        store.open_verified(first.path, first.sha256)


def test_a_key_file_others_may_read_or_a_malformed_one_is_refused_by_name(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "var" / "recordings")
    store.store(CLIP, 1, 1)
    key = tmp_path / "var" / "recordings.key"
    os.chmod(key, 0o644)
    with pytest.raises(KeyFileError, match=r"recordings.key: mode 0o644 lets others read .* chmod 600"):
        RecordingStore(store.root).store(CLIP, 2, 1)
    os.chmod(key, 0o600)
    key.write_text("not hex\n")
    with pytest.raises(KeyFileError, match="recordings.key: not a 256-bit key"):
        RecordingStore(store.root).store(CLIP, 2, 1)


def test_a_legacy_plain_recording_is_still_read_and_checked(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "var" / "recordings")
    legacy = store.root / "message-000001" / "take-1.wav"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(CLIP.read_bytes())
    sha = hashlib.sha256(CLIP.read_bytes()).hexdigest()
    assert store.open_verified(legacy, sha) == legacy
    sealed = store.seal_file(legacy, sha)
    assert sealed.name == "take-1.sealed" and sealed.read_bytes().startswith(MAGIC)
    assert store.open_verified(sealed, sha).read_bytes() == CLIP.read_bytes()
    legacy.write_bytes(OTHER_CLIP.read_bytes())
    with pytest.raises(RecordingCorrupted, match="is not the stored"):
        store.open_verified(legacy, sha)
