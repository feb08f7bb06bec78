"""The copies key and its signatures: unsubscribe tokens, purpose-bound MACs, the key file's rules."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from ivr.copies.tokens import (
    MAC_HEX, CopiesKeyError, load_copies_key, person_of_token, sign, unsubscribe_token, verify,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_the_key_is_made_once_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "var" / "copies.key"
    key = load_copies_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_copies_key(path) == key
    assert load_copies_key(tmp_path / "other.key") != key  # random, not derived from anything


def test_processes_racing_to_make_the_key_all_get_the_same_one(tmp_path: Path) -> None:
    path = tmp_path / "copies.key"
    keys: list[bytes] = []
    problems: list[Exception] = []
    start = threading.Barrier(16)

    def load() -> None:
        start.wait()
        try:
            keys.append(load_copies_key(path))
        except Exception as exc:  # a half-written file read by a second process, say
            problems.append(exc)

    threads = [threading.Thread(target=load) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == [] and len(keys) == 16 and len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["copies.key"]  # no temporary file left behind


def test_a_key_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "copies.key"
    load_copies_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(CopiesKeyError, match=r"copies key .*chmod 600"):
        load_copies_key(path)


def test_a_file_that_holds_no_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "copies.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not hex at all\n")
    os.close(fd)
    with pytest.raises(CopiesKeyError, match="copies key"):
        load_copies_key(path)


def test_a_key_made_for_another_owner_is_theirs_before_it_has_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root making the key for the service (``binfoon kannel config``) gives it away through the open
    file: never by a chown of the path, which would follow a symlink swapped in after the link."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    by_path: list[object] = []
    monkeypatch.setattr(os, "chown", lambda *args, **kwargs: by_path.append(args))
    path = tmp_path / "copies.key"
    key = load_copies_key(path, owner=(4321, 4322))
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (4321, 4322, 0o600) and by_path == []
    assert load_copies_key(path, owner=(1, 1)) == key and path.stat().st_uid == 4321  # an existing key keeps its owner
    assert [p.name for p in tmp_path.iterdir()] == ["copies.key"]


def test_a_symlink_or_a_fifo_in_the_keys_place_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.key"
    load_copies_key(target)
    link = tmp_path / "copies.key"
    link.symlink_to(target)
    with pytest.raises(CopiesKeyError, match="not a regular file"):
        load_copies_key(link)
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(CopiesKeyError, match="not a regular file"):
        load_copies_key(fifo)  # refused at once, not blocked waiting for a writer


def test_a_signature_binds_key_purpose_and_value() -> None:
    mac = sign(KEY, "dlr", "copy-1")
    assert len(mac) == MAC_HEX and int(mac, 16) >= 0
    assert verify(KEY, "dlr", "copy-1", mac)
    assert verify(KEY, "dlr", "copy-1", mac.upper())
    assert not verify(KEY, "dlr", "copy-2", mac)
    assert not verify(KEY, "unsubscribe", "copy-1", mac)  # another purpose
    assert not verify(OTHER_KEY, "dlr", "copy-1", mac)
    assert not verify(KEY, "dlr", "copy-1", mac[:-1])
    assert not verify(KEY, "dlr", "copy-1", "")
    # Anything but hex is no signature (never an error: a request's parameter is hostile).
    for junk in ("é" * MAC_HEX, mac[:-1] + "é", mac[:-1] + "g", mac[:-1] + "\n", " " * MAC_HEX, "٣" * MAC_HEX):
        assert not verify(KEY, "dlr", "copy-1", junk)
    with pytest.raises(ValueError):
        sign(KEY, "", "x")


def test_an_unsubscribe_token_names_its_person_and_nothing_else_passes() -> None:
    token = unsubscribe_token(KEY, 4711)
    assert person_of_token(KEY, token) == 4711
    assert token == unsubscribe_token(KEY, 4711)  # no expiry, no randomness: the same link every time
    assert all(c.isalnum() or c in "-_" for c in token)  # safe in a path and a mailto subject
    assert person_of_token(OTHER_KEY, token) is None
    assert person_of_token(KEY, unsubscribe_token(KEY, 4712)) == 4712


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1],                                 # cut
    lambda t: t + "A",                                # lengthened
    lambda t: t[:10] + ("B" if t[10] != "B" else "C") + t[11:],   # one character changed
    lambda t: t.replace(t[0], "/", 1),                # outside the alphabet
    lambda t: "",
    lambda t: "A" * len(t),
])
def test_a_tampered_token_names_nobody(mangle: object) -> None:
    token = unsubscribe_token(KEY, 4711)
    assert person_of_token(KEY, mangle(token)) is None  # type: ignore[operator]


def test_a_token_of_another_person_id_cannot_be_forged_by_editing_the_id() -> None:
    raw = bytearray(base64.urlsafe_b64decode(unsubscribe_token(KEY, 4711) + "=="))
    raw[8] ^= 1  # the last byte of the person id: 4710
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert person_of_token(KEY, forged) is None


def test_a_token_of_an_unknown_version_names_nobody() -> None:
    raw = bytearray(base64.urlsafe_b64decode(unsubscribe_token(KEY, 4711) + "=="))
    raw[0] = 2
    assert person_of_token(KEY, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()) is None


def test_only_person_ids_get_tokens() -> None:
    for bad in (0, -1, 2 ** 63):
        with pytest.raises(ValueError):
            unsubscribe_token(KEY, bad)


def test_a_token_has_one_spelling() -> None:
    token = unsubscribe_token(KEY, 4711)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # The last character carries 4 spare bits: its other spellings decode to the same bytes, and are refused.
    spare = [token[:-1] + c for c in alphabet if c != token[-1]
             and base64.urlsafe_b64decode(token[:-1] + c + "==") == base64.urlsafe_b64decode(token + "==")]
    assert spare and all(person_of_token(KEY, other) is None for other in spare)
