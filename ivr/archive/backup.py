"""Backup and restore of an installation: the database, the recording store and the keys, as one
consistent snapshot.

A backup is a folder (0700, every file 0600)::

    manifest.json     format, time, database kind and schema revision, the source's recording store,
                      and the size and SHA-256 of every other file
    database.sqlite   SQLite: a copy made with SQLite's online backup API while the service runs
    database.pgdump   PostgreSQL: ``pg_dump --format=custom`` of one exported snapshot
    recordings/...    every recording that database refers to, checked against the SHA-256 in its row
    keys/...          the secret files the service keeps in ``data_dir`` (the web session key, ...), and
                      the configured secret files kept elsewhere (``trunk.secret``: ``trunk_secret_file``)

The recordings are sealed at rest (``storage.sealed``) and a backup never carries their key
(``recordings.key``): a stolen backup is no police audio. The operator keeps a copy of that key
apart (offline); the manifest names it by fingerprint (``recordings_key_id``), and restore refuses,
before writing anything, an installation whose ``data_dir/recordings.key`` is missing or another.

Why it is consistent: the database is copied first, from one snapshot, and the recordings copied
are exactly those that snapshot refers to. A recording is written once, fsynced and renamed into
place under its checksum before its row is committed, so every row visible in the snapshot has its
whole file on disk; files written after the snapshot belong to a later state and are left out. On
PostgreSQL the list of recordings is read inside the very snapshot that ``pg_dump --snapshot``
dumps. A recording purged while the backup runs, or damaged on disk, fails the backup by name.

Why ``pg_dump``/``pg_restore``: they copy everything the database holds (tables, sequences, the
scheduler's job store, the full-text index) without this module knowing the schema. ``pg_dump``
must be at least the server's major version; an older one fails with a clear message (install the
server's ``postgresql-client-N``). A restore is one transaction (``psql --single-transaction``).

Restore writes nothing half-done: every checksum is verified before anything is written; files are
staged next to their destination and renamed into place only after the database restore has
committed (SQLite: a staged file renamed over; PostgreSQL: one transaction); it refuses an
installation that already holds data unless told to replace it. Recording paths in the database
are moved from the source's store to the new one in that same step.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import URL, make_url, text

from storage.recordings import KEY_FILE as RECORDINGS_KEY_FILE
from storage.recordings import RecordingCorrupted, RecordingStore
from storage.sealed import KeyFileError, file_is_sealed, key_id, load_or_create_key

FORMAT = "binfoon-backup/1"
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite"
PG_FILE = "database.pgdump"
RECORDINGS = "recordings"
KEYS = "keys"
#: The secret files the service keeps at the top of ``data_dir``: the web console's session key
#: (``web-session.key``), the PIN pepper and the audit chain's key (``*.key``), any other secret or
#: certificate kept there, and the audit chain's anchors (``*.anchors``: without them a restored,
#: keyed chain no longer verifies).
KEY_PATTERNS = ("*.key", "*.secret", "*.pem", "*.anchors")
#: Keys a backup never carries: the recordings' sealing key is kept apart by the operator.
KEPT_APART = (RECORDINGS_KEY_FILE,)


class BackupError(RuntimeError):
    """The backup or restore cannot be done; the message says what and where. Nothing was written."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a backup, as the manifest records it."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a backup holds."""

    created_at: str
    database_kind: str
    revision: str | None
    recordings_root: str
    files: tuple[FileEntry, ...]
    recordings: int = 0
    keys: tuple[str, ...] = ()
    #: (the path a recording row holds, where its file is in the backup): what restore points each row to.
    moves: tuple[tuple[str, str], ...] = ()
    #: The fingerprint of the key the recordings are sealed with (``None``: none is sealed).
    recordings_key_id: str | None = None

    @property
    def database_file(self) -> str:
        """The name of the database copy inside the backup."""
        return SQLITE_FILE if self.database_kind == "sqlite" else PG_FILE

    def to_json(self) -> str:
        """The manifest as written to ``manifest.json``."""
        return json.dumps({
            "format": FORMAT, "created_at": self.created_at,
            "database": {"kind": self.database_kind, "revision": self.revision, "file": self.database_file},
            "recordings_root": self.recordings_root, "recordings": self.recordings, "keys": list(self.keys),
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
            "moves": [{"row": row, "file": file} for row, file in self.moves],
            "recordings_key_id": self.recordings_key_id,
        }, indent=2) + "\n"

    @classmethod
    def parse(cls, raw: str, where: str = MANIFEST) -> Manifest:
        """Read a manifest; ``BackupError`` names what is wrong with it."""
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise BackupError(f"{where}: not a BINfoon backup (format {data.get('format')!r}, "
                                  f"expected {FORMAT!r})")
            database = data["database"]
            files = tuple(FileEntry(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in data["files"])
            manifest = cls(str(data["created_at"]), str(database["kind"]), database.get("revision"),
                           str(data["recordings_root"]), files, int(data.get("recordings", 0)),
                           tuple(str(k) for k in data.get("keys", ())),
                           tuple((str(m["row"]), str(m["file"])) for m in data.get("moves", ())),
                           data.get("recordings_key_id"))
        except BackupError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"{where}: unreadable manifest ({exc.__class__.__name__}: {exc})") from None
        if manifest.database_kind not in ("sqlite", "postgresql"):
            raise BackupError(f"{where}: unknown database kind {manifest.database_kind!r}")
        problems = [p for f in files for p in [unsafe_path(f.path)] if p]
        if problems:
            raise BackupError(f"{where}: " + "; ".join(problems))
        listed = {f.path for f in files}
        if manifest.database_file not in listed:
            raise BackupError(f"{where}: the database copy {manifest.database_file} is not listed")
        unlisted = [file for _, file in manifest.moves if file not in listed or not file.startswith(RECORDINGS + "/")]
        if unlisted:
            raise BackupError(f"{where}: recordings named but not listed: {', '.join(unlisted[:5])}")
        return manifest


# -- pure decisions ---------------------------------------------------------------------------------
def unsafe_path(path: str) -> str | None:
    """Why ``path`` (from a manifest) may not be restored, or ``None``: only the database copy and
    files under ``recordings/`` and ``keys/``, never absolute, never climbing out with ``..``."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\\" in path:
        return f"{path!r} is not a path inside the backup"
    if path in (SQLITE_FILE, PG_FILE):
        return None
    if pure.parts[0] in (RECORDINGS, KEYS) and len(pure.parts) >= 2:
        if pure.parts[0] == KEYS and len(pure.parts) != 2:
            return f"{path!r}: keys are files directly under keys/"
        return None
    return f"{path!r} is neither the database, a recording nor a key"


def mismatches(expected: Iterable[FileEntry], actual: Mapping[str, tuple[str, int] | None]) -> list[str]:
    """What does not match the manifest: ``actual`` maps each path to (sha256, size), ``None`` if absent."""
    problems = []
    for entry in expected:
        found = actual.get(entry.path)
        if found is None:
            problems.append(f"{entry.path}: missing")
        elif found[1] != entry.size:
            problems.append(f"{entry.path}: {found[1]} bytes, the manifest says {entry.size}")
        elif found[0] != entry.sha256:
            problems.append(f"{entry.path}: checksum {found[0][:12]}… is not the manifest's {entry.sha256[:12]}…")
    return problems


def restored_paths(moves: Iterable[tuple[str, str]], data_dir: Path) -> list[tuple[str, str]]:
    """(path a row holds in the backup, path it must hold after the restore into ``data_dir``): each
    recording's file where restore puts it (``data_dir/recordings/...``, as the service names it)."""
    return [(row, str(data_dir / file)) for row, file in moves]


# -- file helpers -----------------------------------------------------------------------------------
def sha256_file(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _copy_private(source: Path, target: Path) -> tuple[str, int]:
    """Copy ``source`` to a new 0600 file ``target`` (fsynced); returns the copy's (sha256, size)."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest, size = hashlib.sha256(), 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        for chunk in iter(lambda: src.read(1 << 16), b""):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_tree(root: Path) -> None:
    """Folders 0700, files 0600 under ``root`` (what the backup holds is police audio and secrets)."""
    os.chmod(root, 0o700)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder) / name, 0o700)
        for name in files:
            os.chmod(Path(folder) / name, 0o600)


def key_files(data_dir: Path) -> list[Path]:
    """The secret files the service keeps at the top of ``data_dir`` (not the recordings' key: kept apart)."""
    found = {p for pattern in KEY_PATTERNS for p in data_dir.glob(pattern)
             if p.is_file() and p.name not in KEPT_APART}
    return sorted(found)


# -- databases ---------------------------------------------------------------------------------------
def database_kind(url: str) -> str:
    """``sqlite`` or ``postgresql`` (what this module can back up)."""
    name = make_url(url).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise BackupError(f"cannot back up a {name} database (SQLite and PostgreSQL only)")
    return name


def sqlite_path(url: str) -> Path:
    """The file of a SQLite URL."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"{url}: not a SQLite file")
    return Path(database)


def libpq_args(url: str) -> tuple[list[str], dict[str, str]]:
    """(``--dbname`` argument, environment) for PostgreSQL's tools: the password travels in
    ``PGPASSWORD``, never on a command line."""
    u: URL = make_url(url)
    parts: dict[str, str] = {}
    for key, value in u.query.items():
        parts[key] = value if isinstance(value, str) else value[-1]
    if u.host:
        parts["host"] = u.host
    if u.port:
        parts["port"] = str(u.port)
    if u.username:
        parts["user"] = u.username
    parts["dbname"] = u.database or ""
    conninfo = " ".join(f"{k}='{_conn_quote(v)}'" for k, v in parts.items())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return [f"--dbname={conninfo}"], env


def _conn_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def pg_tool(name: str, server_version_num: int | None = None) -> str:
    """The newest installed ``pg_dump``/``pg_restore``/``psql``; refuses one older than the server."""
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    tool = str(versions[-1]) if versions else shutil.which(name)
    if tool is None:
        raise BackupError(f"{name} not found: install the Debian package postgresql-client")
    if server_version_num is not None:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", out)
        mine, server = (int(match.group(1)) if match else 0), server_version_num // 10000
        if mine < server:
            raise BackupError(f"{tool} is PostgreSQL {mine}, older than the server ({server}): "
                              f"install postgresql-client-{server}")
    return tool


def _run(cmd: list[str], env: Mapping[str, str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(cmd, env=dict(env), capture_output=True, check=False, **kwargs)
    if done.returncode != 0:
        raise BackupError(f"{what} failed: {_first_error(done.stderr, done.returncode)}")
    return done


def _first_error(stderr: bytes, status: int) -> str:
    """The line of a PostgreSQL tool's output that says what went wrong (not the caret under it)."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return next((line for line in lines if "ERROR" in line or "FATAL" in line or "error:" in line),
                lines[0] if lines else f"exit status {status}")


# -- backup ------------------------------------------------------------------------------------------
@dataclass
class BackupResult:
    """What ``backup`` wrote."""

    folder: Path
    manifest: Manifest
    seconds: float = 0.0
    bytes: int = 0


def backup(database_url: str, data_dir: Path, target: Path, *, secrets: Mapping[str, Path] | None = None,
           clock: Callable[[], dt.datetime] | None = None) -> BackupResult:
    """Write a consistent backup of the installation (``database_url``, ``data_dir``) to the new folder
    ``target`` (absent, or an empty folder). ``secrets``: configured secret files kept elsewhere, by
    the name they get in the backup (``{"trunk.secret": Path(settings.trunk_secret_file)}``). Built
    in a sibling folder and renamed into place at the end: a failed backup leaves nothing."""
    import time

    started = time.monotonic()
    kind = database_kind(database_url)
    target = target.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} already exists and is not an empty folder; choose a new one")
    target.parent.mkdir(parents=True, exist_ok=True)
    store_root = data_dir.absolute() / RECORDINGS
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        os.chmod(staging, 0o700)
        # The keys and anchors first: an anchor written after this names a row the database copy may
        # lack, so copied after the database it would make the restored audit chain look cut short.
        keys = []
        for key in key_files(data_dir):
            _copy_private(key, staging / KEYS / key.name)
            keys.append(key.name)
        if kind == "sqlite":
            revision, rows = _dump_sqlite(sqlite_path(database_url), staging / SQLITE_FILE)
        else:
            revision, rows = _dump_postgresql(database_url, staging / PG_FILE)
        moves = _copy_recordings(rows, store_root, staging)
        for name, path in (secrets or {}).items():
            if unsafe_path(f"{KEYS}/{name}") or name in keys:
                raise BackupError(f"secret file name {name!r} is taken or not a plain file name")
            if not path.is_file():
                raise BackupError(f"{path}: configured secret file missing")
            _copy_private(path, staging / KEYS / name)
            keys.append(name)
        _private_tree(staging)
        files = []
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            sha, size = sha256_file(path)
            files.append(FileEntry(path.relative_to(staging).as_posix(), sha, size))
        now = (clock or (lambda: dt.datetime.now(dt.UTC)))()
        sealed = any(file_is_sealed(staging / file) for _, file in moves)
        manifest = Manifest(now.isoformat(), kind, revision, str(store_root), tuple(files), len(moves), tuple(keys),
                            tuple(moves), key_id(RecordingStore(store_root).key()) if sealed else None)
        fd = os.open(staging / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(manifest.to_json())
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(staging)
        if target.exists():
            target.rmdir()  # empty: checked above
        os.replace(staging, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BackupResult(target, manifest, time.monotonic() - started, sum(f.size for f in files))


def _dump_sqlite(source: Path, copy: Path) -> tuple[str | None, list[tuple[str, str]]]:
    """SQLite's online backup API: a consistent copy while the service writes (WAL included)."""
    if not source.exists():
        raise BackupError(f"{source}: no such database")
    os.close(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        src.close()
    try:
        dst.execute("PRAGMA journal_mode=DELETE")  # the copy is one self-contained file
        revision = _sqlite_revision(dst)
        rows = [(str(p), str(s)) for p, s in dst.execute("SELECT path, sha256 FROM recordings")]
    finally:
        dst.close()
    return revision, rows


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return str(row[0]) if row else None


def _dump_postgresql(url: str, dump: Path) -> tuple[str | None, list[tuple[str, str]]]:
    """``pg_dump`` of a snapshot exported from a transaction that also reads the recording list."""
    from storage.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            rows = [(str(p), str(s)) for p, s in conn.execute(text("SELECT path, sha256 FROM recordings"))]
            tool = pg_tool("pg_dump", version)
            dbname, env = libpq_args(url)
            fd = os.open(dump, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                # The transaction stays open while pg_dump reads its snapshot.
                done = subprocess.run([tool, "--format=custom", f"--snapshot={snapshot}", "--no-owner",
                                       "--no-privileges", *dbname], env=env, stdout=out,
                                      stderr=subprocess.PIPE, check=False)
                out.flush()
                os.fsync(out.fileno())
            if done.returncode != 0:
                raise BackupError(f"pg_dump failed: {_first_error(done.stderr, done.returncode)}")
    finally:
        engine.dispose()
    return (str(revision) if revision else None), rows


def _copy_recordings(rows: list[tuple[str, str]], store_root: Path, staging: Path) -> list[tuple[str, str]]:
    """Copy every recording the snapshot refers to, each checked against its row's SHA-256; returns
    (row's path, path in the backup) for each."""
    problems, moves = [], []
    roots = (store_root, store_root.resolve())
    store = RecordingStore(store_root)
    for path, expected in sorted(dict(rows).items()):  # one file per path
        source = Path(path) if Path(path).is_absolute() else Path(path).absolute()
        rel = next((r for r in (_inside(source, root) for root in roots) if r is not None), None)
        if rel is None:
            problems.append(f"{path}: outside the recording store {store_root}")
            continue
        if not source.is_file():
            problems.append(f"{path}: missing (purged while the backup ran? run it again)")
            continue
        file = f"{RECORDINGS}/{rel.as_posix()}"
        sha, _ = _copy_private(source, staging / file)
        if sha != expected and file_is_sealed(staging / file):
            try:  # sealed: its row's SHA-256 is its plaintext's, checked by opening the copy
                store.check(staging / file, expected)
            except RecordingCorrupted as exc:
                problems.append(f"{path}: {exc.args[0].split(': ', 1)[-1]} (damaged)")
        elif sha != expected:
            problems.append(f"{path}: checksum {sha[:12]}… is not the stored {expected[:12]}… (damaged)")
        moves.append((path, file))
    if problems:
        raise BackupError("recordings cannot be backed up: " + "; ".join(problems[:10])
                          + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""))
    return moves


def _inside(path: Path, root: Path) -> Path | None:
    try:
        rel = path.relative_to(root)
    except ValueError:
        try:
            rel = path.resolve().relative_to(root)
        except ValueError:
            return None
    return rel if ".." not in rel.parts else None


# -- restore -----------------------------------------------------------------------------------------
def verify(folder: Path) -> Manifest:
    """Read the manifest and check every file against it; ``BackupError`` lists every mismatch."""
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise BackupError(f"{folder}: no such folder")
    if not manifest_path.is_file():
        raise BackupError(f"{folder}: no {MANIFEST} (not a BINfoon backup, or an unfinished one)")
    manifest = Manifest.parse(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
    actual: dict[str, tuple[str, int] | None] = {}
    for entry in manifest.files:
        path = folder / entry.path
        actual[entry.path] = sha256_file(path) if path.is_file() and not path.is_symlink() else None
    problems = mismatches(manifest.files, actual)
    if problems:
        raise BackupError(f"{folder} is damaged; nothing was restored: " + "; ".join(problems[:10])
                          + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""))
    return manifest


def install_contents(database_url: str, data_dir: Path,
                     secret_paths: Mapping[str, Path] | None = None) -> tuple[list[str], bool]:
    """(what an installation already holds, whether its database has tables). Nothing held: a fresh
    install a backup may be restored into (an empty schema, ``binfoon db upgrade`` run, counts as fresh)."""
    from sqlalchemy import func, inspect, select

    from storage.db import make_engine
    from storage.models import Base

    found = []
    store = data_dir / RECORDINGS
    if store.is_dir() and any(p.is_file() for p in store.rglob("*")):
        found.append(f"recordings in {store}")
    found += [f"key {p}" for p in key_files(data_dir)]
    found += [f"key {p}" for p in (secret_paths or {}).values() if p.exists() and p.parent != data_dir]
    if database_kind(database_url) == "sqlite" and not sqlite_path(database_url).exists():
        return found, False
    engine = make_engine(database_url)
    try:
        names = set(inspect(engine).get_table_names())
        ours = [t for t in Base.metadata.sorted_tables if t.name in names]
        with engine.connect() as conn:
            rows = sum(conn.execute(select(func.count()).select_from(t)).scalar_one() for t in ours)
    finally:
        engine.dispose()
    where = make_url(database_url).render_as_string()  # the password hidden
    if rows or (names and not ours):
        found.append(f"a database holding {rows} rows in {len(names)} tables at {where}")
    return found, bool(names)


@dataclass
class RestoreResult:
    """What ``restore`` wrote."""

    manifest: Manifest
    recordings: int
    keys: tuple[str, ...]
    seconds: float = 0.0


def restore(folder: Path, database_url: str, data_dir: Path, *, replace: bool = False,
            secret_paths: Mapping[str, Path] | None = None) -> RestoreResult:
    """Restore the backup in ``folder`` into the installation (``database_url``, ``data_dir``).
    ``secret_paths``: where named secret files go on this installation (``{"trunk.secret":
    Path(settings.trunk_secret_file)}``); any other key goes to the top of ``data_dir``.

    Checks every checksum first, refuses an installation that holds data unless ``replace``, and
    installs files only after the database restore committed: a failure leaves the installation
    as it was."""
    import time

    started = time.monotonic()
    folder = folder.resolve()
    manifest = verify(folder)
    kind = database_kind(database_url)
    if manifest.database_kind != kind:
        raise BackupError(f"this backup holds a {manifest.database_kind} database; the installation's "
                          f"database_url is {kind}: set database_url to a {manifest.database_kind} database")
    _check_revision(manifest.revision)
    _check_recordings_key(manifest, data_dir)
    destinations = {name: (secret_paths or {}).get(name, data_dir / name) for name in manifest.keys}
    present, has_schema = install_contents(database_url, data_dir, destinations)
    if present and not replace:
        raise BackupError("the installation is not empty (" + "; ".join(present)
                          + "); restore into a fresh install, or pass --replace to overwrite it")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    moves = restored_paths(manifest.moves, data_dir.absolute())
    with _staging(data_dir) as staging:
        # 1. The files, copied and checked again (the copy is what will be used).
        copied: dict[str, tuple[str, int] | None] = {}
        for entry in manifest.files:
            if entry.path.startswith((RECORDINGS + "/", KEYS + "/")):
                copied[entry.path] = _copy_private(folder / entry.path, staging / entry.path)
        problems = mismatches([e for e in manifest.files if e.path in copied], copied)
        if problems:
            raise BackupError("the backup changed while it was read; nothing was restored: " + "; ".join(problems))
        # 2. The database (all or nothing), its recording paths moved to this store.
        if kind == "sqlite":
            target = sqlite_path(database_url).resolve()
            [entry] = [e for e in manifest.files if e.path == SQLITE_FILE]
            staged_db = _stage_sqlite(folder / SQLITE_FILE, entry, target, moves)
        else:
            staged_db = None
        try:
            if kind == "postgresql":
                _restore_postgresql(folder / PG_FILE, database_url, staging, moves, clean=has_schema)
            # 3. Install the files (renames on one file system), the SQLite database last.
            _install(staging, data_dir, destinations)
            if staged_db is not None:
                for suffix in ("-wal", "-shm"):
                    Path(f"{target}{suffix}").unlink(missing_ok=True)
                os.replace(staged_db, target)
                _fsync_dir(target.parent)
        finally:
            if staged_db is not None:
                staged_db.unlink(missing_ok=True)
    return RestoreResult(manifest, manifest.recordings, manifest.keys, time.monotonic() - started)


def _check_recordings_key(manifest: Manifest, data_dir: Path) -> None:
    """Refuse (before anything is written) a restore whose sealed recordings this installation cannot open."""
    if manifest.recordings_key_id is None:
        return
    path = data_dir / RECORDINGS_KEY_FILE
    if not path.exists():
        raise BackupError(f"the recordings in this backup are sealed and a backup never carries their key: "
                          f"copy the installation's {RECORDINGS_KEY_FILE} (kept apart) to {path} (chmod 600) "
                          f"and restore again")
    try:
        found = key_id(load_or_create_key(path))
    except KeyFileError as exc:
        raise BackupError(str(exc)) from None
    if found != manifest.recordings_key_id:
        raise BackupError(f"{path} is not the key this backup's recordings are sealed with (key "
                          f"{found}, the backup needs {manifest.recordings_key_id}); nothing was restored")


def _check_revision(revision: str | None) -> None:
    from alembic.script import ScriptDirectory

    from storage.db import MIGRATIONS

    if revision is None:
        return
    scripts = ScriptDirectory(str(MIGRATIONS))
    from alembic.util import CommandError as AlembicError

    try:
        known = scripts.get_revision(revision)
    except AlembicError:  # ResolutionError and friends: an id this code has no migration for
        known = None
    if known is None:
        raise BackupError(f"the backup's schema revision {revision} is unknown to this version of BINfoon "
                          "(made by a newer one?): upgrade BINfoon first")


@contextmanager
def _staging(data_dir: Path) -> Iterator[Path]:
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage_sqlite(copy: Path, expected: FileEntry, target: Path, moves: list[tuple[str, str]]) -> Path:
    """The backup's database next to ``target``, paths moved, checked: ready to be renamed over."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.restore-", dir=target.parent)
    os.close(fd)
    staged = Path(name)
    try:
        os.chmod(staged, 0o600)
        shutil.copyfile(copy, staged)
        if sha256_file(staged) != (expected.sha256, expected.size):
            raise BackupError(f"{copy} changed while it was read; nothing was restored")
        conn = sqlite3.connect(staged)
        try:
            conn.executemany("UPDATE recordings SET path = ? WHERE path = ?", [(new, old) for old, new in moves])
            conn.commit()
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        if check != "ok":
            raise BackupError(f"{copy}: SQLite integrity check says {check}")
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


def _sql_literal(value: str) -> str:
    # standard_conforming_strings is on (the dump sets it): only quotes are doubled.
    return "'" + value.replace("'", "''") + "'"


def _restore_postgresql(dump: Path, url: str, staging: Path, moves: list[tuple[str, str]], *, clean: bool) -> None:
    """``pg_restore`` to SQL, then ``psql --single-transaction``: the restore and the path move commit
    together or not at all. ``clean``: the backup's objects are dropped first (a schema is there)."""
    from storage.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
    finally:
        engine.dispose()
    script = staging / "restore.sql"
    dbname, env = libpq_args(url)
    cmd = [pg_tool("pg_restore"), "--no-owner", "--no-privileges", f"--file={script}"]
    if clean:
        cmd += ["--clean", "--if-exists"]
    _run([*cmd, str(dump)], env, "pg_restore")
    os.chmod(script, 0o600)
    with open(script, "a", encoding="utf-8") as out:
        # The dump empties search_path; the updates name the table the way the application does.
        out.write("\nRESET search_path;\n")
        out.writelines(f"UPDATE recordings SET path = {_sql_literal(new)} WHERE path = {_sql_literal(old)};\n" for old, new in moves)
    _run([pg_tool("psql", version), "--no-psqlrc", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1",
          f"--file={script}", *dbname], env, "the database restore (psql, one transaction: nothing was written)")


def _install(staging: Path, data_dir: Path, keys: Mapping[str, Path]) -> None:
    """Rename the staged recordings and keys into place (an existing store is replaced)."""
    owner = data_dir.stat()
    staged_store = staging / RECORDINGS
    store = data_dir / RECORDINGS
    if staged_store.exists():
        if store.exists():
            os.replace(store, staging / "replaced-recordings")
        _private_tree(staged_store)
        _chown_tree(staged_store, owner.st_uid, owner.st_gid)
        os.replace(staged_store, store)
    elif not store.exists():
        store.mkdir(mode=0o700)
    for name, destination in keys.items():
        staged = staging / KEYS / name
        os.chmod(staged, 0o600)
        _chown_tree(staged, owner.st_uid, owner.st_gid)
        if destination.parent.resolve() != data_dir.resolve():
            # Elsewhere (maybe another file system): copied next to it first, then renamed over.
            destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            beside = destination.with_name(f".{destination.name}.restore")
            beside.unlink(missing_ok=True)
            shutil.copy2(staged, beside)
            staged = beside
        os.replace(staged, destination)
        _fsync_dir(destination.parent)
    _fsync_dir(data_dir)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    # Restored as root for a service that runs as its own user: the files are the data folder owner's.
    if os.geteuid() != 0:
        return
    os.chown(root, uid, gid)
    if root.is_dir():
        for path in root.rglob("*"):
            os.chown(path, uid, gid)
