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
from storage import audit
from storage.db import make_engine, session_scope
from storage.models import Message, Recording
from storage.recordings import open_recording
from storage.sealed import load_or_create_key
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
    # The recordings are sealed and the backup does not carry their key: without it, nothing is restored.
    assert not (result.folder / "keys" / "recordings.key").exists()
    assert manifest.recordings_key_id is not None
    with pytest.raises(BackupError, match="never carries their key: copy the installation's recordings.key"):
        restore(result.folder, fresh_url, fresh / "var")
    # Another installation's key is refused by its fingerprint, before anything is written.
    load_or_create_key(fresh / "var" / "recordings.key")
    with pytest.raises(BackupError, match="is not the key this backup's recordings are sealed with"):
        restore(result.folder, fresh_url, fresh / "var")
    assert sorted(p.name for p in (fresh / "var").iterdir()) == ["recordings.key"]
    # The operator's copy of the key, put in place: the restore goes through.
    (fresh / "var" / "recordings.key").write_bytes((data_dir / "recordings.key").read_bytes())
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
    # What was restored opens with the key and is each row's plaintext (its SHA-256).
    engine = make_engine(fresh_url)
    with session_scope(engine) as s:
        for path, sha in s.execute(select(Recording.path, Recording.sha256)):
            assert open_recording(Path(path), sha).read_bytes() == CLIP.read_bytes()
    engine.dispose()
    # A SQLite copy is one self-contained file (no WAL beside it).
    assert not list(result.folder.glob("database.sqlite-*"))


def test_a_restored_installation_s_audit_chain_verifies_against_its_anchors(tmp_path: Path) -> None:
    """The audit chain is keyed and anchored in a file beside the database (issue 14 item 8): a backup
    carries the anchors (copied before the database, so none names a row the copy lacks) and the key,
    and the restored installation's chain verifies intact instead of "no anchors, yet keyed"."""
    data_dir = tmp_path / "var"
    url = f"sqlite:///{data_dir / 'binfoon.db'}"
    world = build_world(url, data_dir / "recordings")
    audit.configure(url, data_dir)
    for i in range(3):
        with session_scope(world.engine) as s:
            audit.record(s, "test", "bin.add", f"bin:{i}")
    with session_scope(world.engine) as s:
        assert audit.anchor(s) is not None
    world.engine.dispose()
    result = backup(url, data_dir, tmp_path / "backup")
    fresh = tmp_path / "fresh" / "var"
    fresh_url = f"sqlite:///{fresh / 'binfoon.db'}"
    if (data_dir / "recordings.key").exists():  # kept apart by the operator: put in place by hand
        fresh.mkdir(parents=True)
        (fresh / "recordings.key").write_bytes((data_dir / "recordings.key").read_bytes())
    restore(result.folder, fresh_url, fresh)
    audit.configure(fresh_url, fresh)
    engine = make_engine(fresh_url)
    with session_scope(engine) as s:
        checked = audit.check(s)
    engine.dispose()
    assert checked.intact, [str(p) for p in checked.problems]
    assert checked.keyed_rows >= 3
