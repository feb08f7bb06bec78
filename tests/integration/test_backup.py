"""``binfoon backup`` and ``binfoon restore``, as an operator runs them (the real command line, real
SQLite and PostgreSQL databases): a backup restored into a fresh install replays the archived
message with the very bytes the police recorded; a damaged backup is refused and nothing is written."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from ivr.config import Settings
from ivr.domain.vocabulary import Role, Urgency
from ivr.web.server import session_key
from storage.db import make_engine, session_scope
from storage.models import Recording, RoleAssignment
from tests.conftest import PROJECT_DIR, SHARED_DIR
from tests.pg import ON_BOTH_DATABASES, another_database
from tests.world import build_world

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "03.wav"


def binfoon(database: str, data_dir: Path, *args: str, timeout_s: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``binfoon`` command line on the installation (``database``, ``data_dir``)."""
    env = {**os.environ, "BINFOON_DATABASE_URL": database, "BINFOON_DATA_DIR": str(data_dir),
           "BINFOON_CONFIG": os.devnull, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ivr", *args], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content (to show that nothing was written)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


def put_key(data_dir: Path, key: bytes) -> None:
    """Put the recordings' key (kept apart by the operator) where a restore into ``data_dir`` needs it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "recordings.key"
    path.write_bytes(key)
    path.chmod(0o600)


def tables(database: str) -> list[str]:
    engine = make_engine(database)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


@ON_BOTH_DATABASES
def test_restore_into_a_fresh_install_replays_the_archived_message(
        database: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # The installation in service: a directory, a message the police recorded, the web session key.
    source = tmp_path / "source" / "var"
    world = build_world(database, source / "recordings")
    clip = tmp_path / "clip.wav"
    clip.write_bytes(CLIP.read_bytes())
    message_id = world.desk.submit_text_message(12, Urgency.URGENT, "Opgelet: inbraken.", clip, "test")
    key = session_key(Settings(data_dir=source))
    world.engine.dispose()
    # The carrier's secret, where the configuration says (outside the data folder).
    trunk_secret = tmp_path / "source" / "etc" / "trunk.secret"
    trunk_secret.parent.mkdir()
    trunk_secret.write_text("carrier-secret\n")
    trunk_secret.chmod(0o600)

    backup = tmp_path / "backups" / "2026-12-06"
    done = binfoon(database, source, "backup", str(backup), env={"BINFOON_TRUNK_SECRET_FILE": str(trunk_secret)})
    assert done.returncode == 0, done.stderr
    assert "1 recordings, 2 key files" in done.stdout
    # Police audio and secrets: the folder is the user's only, every file too.
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    modes = {p.relative_to(backup).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in backup.rglob("*")}
    assert modes and all(mode == (0o700 if (backup / name).is_dir() else 0o600) for name, mode in modes.items())
    manifest = json.loads((backup / "manifest.json").read_text())
    kind = "sqlite" if database.startswith("sqlite") else "postgresql"
    assert manifest["database"]["kind"] == kind
    assert {f["path"] for f in manifest["files"]} == {
        "database.sqlite" if kind == "sqlite" else "database.pgdump", "keys/web-session.key", "keys/trunk.secret",
        f"recordings/message-{message_id:06d}/take-1.sealed"}
    assert not list(tmp_path.glob("backups/.*partial*"))  # built aside, renamed into place
    # The recordings' key is never in a backup: the operator keeps it apart (here: in memory).
    kept_apart = (source / "recordings.key").read_bytes()
    shutil.rmtree(tmp_path / "source")  # the old server is gone

    # A fresh install elsewhere: another data folder, another database with the empty schema.
    target = tmp_path / "restored" / "var"
    fresh = another_database(database, request, tmp_path / "restored")
    assert binfoon(fresh, target, "db", "upgrade").returncode == 0
    new_secret = tmp_path / "restored" / "etc" / "carrier.secret"
    # Without the recordings' key the restore is refused, by name, before anything is written.
    done = binfoon(fresh, target, "restore", str(backup), env={"BINFOON_TRUNK_SECRET_FILE": str(new_secret)})
    assert done.returncode == 1 and "recordings.key" in done.stderr and "kept apart" in done.stderr, done.stderr
    put_key(target, kept_apart)
    done = binfoon(fresh, target, "restore", str(backup), env={"BINFOON_TRUNK_SECRET_FILE": str(new_secret)})
    assert done.returncode == 0, done.stderr
    assert (target / "web-session.key").read_text().strip() == key
    assert stat.S_IMODE((target / "web-session.key").stat().st_mode) == 0o600
    assert new_secret.read_text() == "carrier-secret\n" and stat.S_IMODE(new_secret.stat().st_mode) == 0o600
    assert not list(new_secret.parent.glob(".*restore*"))
    # The recording is in the new store, and the restored database points there.
    engine = make_engine(fresh)
    with session_scope(engine) as s:
        [recording] = s.scalars(select(Recording)).all()
    engine.dispose()
    assert Path(recording.path).is_relative_to(target / "recordings")
    assert not list(target.glob(".restore-*"))

    # The archive's replay path on the restored install: the audio that comes out is the original.
    out = tmp_path / "replayed.wav"
    done = binfoon(fresh, target, "archive", "play", str(message_id), "--as", f"person:{world.officer_id}",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == CLIP.read_bytes()

    # Restoring again over what is now a live install is refused, and changes nothing.
    before = tree(target)
    done = binfoon(fresh, target, "restore", str(backup))
    assert done.returncode == 1 and "not empty" in done.stderr and "--replace" in done.stderr, done.stderr
    assert tree(target) == before
    # Told to, it replaces it (the same content: the replay still works).
    done = binfoon(fresh, target, "restore", "--replace", str(backup))
    assert done.returncode == 0, done.stderr
    out2 = tmp_path / "replayed-again.wav"
    done = binfoon(fresh, target, "archive", "play", str(message_id), "--as", f"person:{world.officer_id}",
                   "--out", str(out2))
    assert done.returncode == 0, done.stderr
    assert out2.read_bytes() == CLIP.read_bytes()


@ON_BOTH_DATABASES
def test_a_damaged_backup_is_refused_and_nothing_is_written(
        database: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    source = tmp_path / "source" / "var"
    world = build_world(database, source / "recordings")
    clip = tmp_path / "clip.wav"
    clip.write_bytes(CLIP.read_bytes())
    message_id = world.desk.submit_text_message(12, Urgency.URGENT, "Opgelet: inbraken.", clip, "test")
    session_key(Settings(data_dir=source))
    world.engine.dispose()
    backup = tmp_path / "backup"
    assert binfoon(database, source, "backup", str(backup)).returncode == 0

    # One byte of the police recording flipped (a bad disk, a bad copy).
    take = backup / "recordings" / f"message-{message_id:06d}" / "take-1.sealed"
    data = bytearray(take.read_bytes())
    data[len(data) // 2] ^= 0x01
    take.write_bytes(bytes(data))
    target = tmp_path / "restored" / "var"
    fresh = another_database(database, request, tmp_path / "restored")
    done = binfoon(fresh, target, "restore", str(backup))
    assert done.returncode == 1, done.stdout
    assert "damaged" in done.stderr and f"recordings/message-{message_id:06d}/take-1.sealed" in done.stderr
    assert "checksum" in done.stderr
    assert tree(target) == {}
    assert tables(fresh) == []

    # A damaged database copy is refused the same way (checked before anything is opened).
    take.write_bytes(bytes(data[: len(data) // 2]) + bytes([data[len(data) // 2] ^ 0x01]) + bytes(data[len(data) // 2 + 1:]))
    dump = backup / ("database.sqlite" if database.startswith("sqlite") else "database.pgdump")
    with open(dump, "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    done = binfoon(fresh, target, "restore", str(backup))
    assert done.returncode == 1 and dump.name in done.stderr and "damaged" in done.stderr, done.stderr
    assert tree(target) == {}
    assert tables(fresh) == []
    # A backup that is not one (no manifest) is refused by name.
    (backup / "manifest.json").unlink()
    done = binfoon(fresh, target, "restore", str(backup))
    assert done.returncode == 1 and "manifest.json" in done.stderr
    assert tree(target) == {} and tables(fresh) == []


# Beside the parallel tests, not among them: the demo is long, scripted in real time, but light (Makefile).
@pytest.mark.beside
@pytest.mark.timeout(600)
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_the_demo_on_postgresql_backed_up_and_restored_replays_the_officers_call(
        database: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # `binfoon demo --database`: the whole chain (police line, review, 25 members) on PostgreSQL.
    var = tmp_path / "var"
    report_path = tmp_path / "demo-report.json"
    done = binfoon(database, var, "demo", "--database", database, "--report", str(report_path), timeout_s=560)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["database"] == "postgresql" and report["all_as_expected"] is True
    assert report["message"]["status"] == "done"
    recorded = Path(report["message"]["recording_path"])  # what the officer's call left in the store
    # The demo seeds its own directory: a database that holds one is refused, by name.
    again = binfoon(database, var, "demo", "--database", database)
    assert again.returncode == 1 and "already holds" in again.stderr and "empty database" in again.stderr

    # Its installation (the demo runs the service on data_dir/demo) backed up while nothing runs,
    # restored on a new server, and the officer's real call replayed from the archive.
    backup = tmp_path / "backup"
    done = binfoon(database, var / "demo", "backup", str(backup))
    assert done.returncode == 0, done.stderr
    target = tmp_path / "restored" / "var"
    fresh = another_database(database, request, tmp_path / "restored")
    put_key(target, (var / "demo" / "recordings.key").read_bytes())  # the operator's copy of the key
    done = binfoon(fresh, target, "restore", str(backup))
    assert done.returncode == 0, done.stderr
    engine = make_engine(fresh)
    with session_scope(engine) as s:
        officer = s.scalars(select(RoleAssignment.person_id).where(RoleAssignment.role == Role.POLICE_OFFICER)).first()
    engine.dispose()
    out = tmp_path / "replayed.wav"
    done = binfoon(fresh, target, "archive", "play", str(report["message"]["id"]), "--as", f"person:{officer}",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == recorded.read_bytes() and len(out.read_bytes()) > 8000


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_restore_the_database_refuses_leaves_nothing_behind(
        database: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import psycopg
    from sqlalchemy import make_url

    source = tmp_path / "source" / "var"
    world = build_world(database, source / "recordings")
    clip = tmp_path / "clip.wav"
    clip.write_bytes(CLIP.read_bytes())
    world.desk.submit_text_message(12, Urgency.URGENT, "Opgelet: inbraken.", clip, "test")
    session_key(Settings(data_dir=source))
    world.engine.dispose()
    backup = tmp_path / "backup"
    assert binfoon(database, source, "backup", str(backup)).returncode == 0

    # A fresh database the restoring account may not create tables in (PostgreSQL 15 and later:
    # nobody but the owner creates in schema public): the restore fails half-way through its SQL.
    fresh = make_url(another_database(database, request, tmp_path / "restored"))
    role = f"r_{fresh.database}"
    with psycopg.connect(host=fresh.query["host"], port=int(fresh.query["port"]), user="postgres",
                         dbname=fresh.database, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'REVOKE CREATE ON SCHEMA public FROM PUBLIC, "{role}"')
    as_role = fresh.set(username=role).render_as_string(hide_password=False)
    target = tmp_path / "restored" / "var"
    key = (source / "recordings.key").read_bytes()
    put_key(target, key)
    done = binfoon(as_role, target, "restore", str(backup))
    assert done.returncode == 1 and "psql" in done.stderr and "nothing was written" in done.stderr, done.stderr
    # No recording, no key, no staging folder left behind (the recordings' key is the operator's, put there).
    assert tree(target) == {"recordings.key": key}
    assert tables(fresh.render_as_string(hide_password=False)) == []
