"""The backup's pure rules: which manifest paths may be restored, what counts as damage, how
recording paths move to the new store; and a backup taken while messages keep arriving."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.archive.backup import (
    FORMAT,
    BackupError,
    FileEntry,
    Manifest,
    backup,
    mismatches,
    restore,
    restored_paths,
    unsafe_path,
    verify,
)
from ivr.domain.vocabulary import Urgency
from storage.db import make_engine, session_scope
from storage.models import Message, Recording
from tests.conftest import SHARED_DIR
from tests.pg import another_database
from tests.world import build_world

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "03.wav"


@pytest.mark.parametrize("path", ["database.sqlite", "database.pgdump", "recordings/message-000001/take-1.wav",
                                  "keys/web-session.key"])
def test_the_database_recordings_and_keys_may_be_restored(path: str) -> None:
    assert unsafe_path(path) is None


@pytest.mark.parametrize("path", ["/etc/passwd", "../binfoon.db", "recordings/../../etc/cron.d/x", "keys/a/b.key",
                                  "binfoon.toml", "recordings", "", "keys\\..\\x"])
def test_paths_that_would_write_elsewhere_are_refused(path: str) -> None:
    assert unsafe_path(path) is not None


def test_a_manifest_with_a_climbing_path_is_refused_by_name() -> None:
    raw = json.dumps({"format": FORMAT, "created_at": "x", "database": {"kind": "sqlite", "revision": None},
                      "recordings_root": "/srv/var/recordings",
                      "files": [{"path": "database.sqlite", "sha256": "0" * 64, "size": 1},
                                {"path": "recordings/../../../root/.ssh/authorized_keys", "sha256": "0" * 64,
                                 "size": 1}]})
    with pytest.raises(BackupError, match="authorized_keys"):
        Manifest.parse(raw)


@pytest.mark.parametrize(("raw", "says"), [
    ("{", "unreadable manifest"),
    (json.dumps({"format": "other/1"}), "not a BINfoon backup"),
    (json.dumps({"format": FORMAT, "created_at": "x", "database": {"kind": "mysql"}, "recordings_root": "/",
                 "files": []}), "unknown database kind"),
    (json.dumps({"format": FORMAT, "created_at": "x", "database": {"kind": "sqlite"}, "recordings_root": "/",
                 "files": []}), "database.sqlite is not listed"),
])
def test_a_bad_manifest_says_what_is_wrong(raw: str, says: str) -> None:
    with pytest.raises(BackupError, match=says):
        Manifest.parse(raw)


def test_mismatches_name_missing_resized_and_changed_files() -> None:
    expected = [FileEntry("a", "1" * 64, 10), FileEntry("b", "2" * 64, 10), FileEntry("c", "3" * 64, 10),
                FileEntry("d", "4" * 64, 10)]
    found = mismatches(expected, {"a": ("1" * 64, 10), "b": None, "c": ("3" * 64, 9), "d": ("5" * 64, 10)})
    assert [p.split(":")[0] for p in found] == ["b", "c", "d"]
    assert "missing" in found[0] and "9 bytes" in found[1] and "checksum" in found[2]


def test_each_row_is_pointed_at_its_file_in_the_new_store() -> None:
    moves = [("/srv/old/var/recordings/message-000001/take-1.wav", "recordings/message-000001/take-1.wav"),
             ("/mnt/moved-store/message-000002/take-2.wav", "recordings/message-000002/take-2.wav")]
    assert restored_paths(moves, Path("/opt/binfoon/var")) == [
        (moves[0][0], "/opt/binfoon/var/recordings/message-000001/take-1.wav"),
        (moves[1][0], "/opt/binfoon/var/recordings/message-000002/take-2.wav")]


def test_a_manifest_naming_a_recording_it_does_not_hold_is_refused() -> None:
    raw = json.dumps({"format": FORMAT, "created_at": "x", "database": {"kind": "sqlite", "revision": None},
                      "recordings_root": "/srv/var/recordings",
                      "files": [{"path": "database.sqlite", "sha256": "0" * 64, "size": 1}],
                      "moves": [{"row": "/srv/var/recordings/a.wav", "file": "recordings/a.wav"}]})
    with pytest.raises(BackupError, match="recordings/a.wav"):
        Manifest.parse(raw)


def test_a_backup_taken_while_messages_arrive_holds_every_recording_its_database_names(
        db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data_dir = tmp_path / "var"
    world = build_world(db_url, data_dir / "recordings")
    stop = threading.Event()
    written: list[int] = []

    def police() -> None:
        i = 0
        while not stop.is_set():
            clip = tmp_path / f"clip-{i}.wav"
            clip.write_bytes(CLIP.read_bytes())
            written.append(world.desk.submit_text_message(12, Urgency.URGENT, f"Bericht {i}", clip, "test"))
            i += 1

    writer = threading.Thread(target=police)
    writer.start()
    try:
        while len(written) < 3:
            stop.wait(0.01)
        result = backup(db_url, data_dir, tmp_path / "backup")
    finally:
        stop.set()
        writer.join()
    manifest = verify(result.folder)
    # What the dumped database names, read back from the dump itself (restored into a fresh database).
    fresh = tmp_path / "fresh"
    fresh_url = another_database(db_url, request, fresh)
    restore(result.folder, fresh_url, fresh / "var")
    engine = make_engine(fresh_url)
    with session_scope(engine) as s:
        named = {Path(p).relative_to(fresh / "var" / "recordings").as_posix()
                 for p in s.scalars(select(Recording.path))}
        messages = s.scalar(select(func.count()).select_from(Message))
    engine.dispose()
    held = {f.path.removeprefix("recordings/") for f in manifest.files if f.path.startswith("recordings/")}
    assert named == held and len(held) >= 3 and messages == len(held)
    assert manifest.recordings == len(held) == len(manifest.moves)
    # A SQLite copy is one self-contained file (no WAL beside it).
    assert not list(result.folder.glob("database.sqlite-*"))
