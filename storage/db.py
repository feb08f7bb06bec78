"""Engines, sessions and migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout, so the
dialer and the command line can write at the same time; PostgreSQL is used by URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def private_database_file(path: Path) -> None:
    """Make the SQLite file (and its WAL and shared-memory files, which SQLite creates with the
    database's own mode) readable by the service's user alone: 0600, created so if missing."""
    if path.name.startswith("file:") or "?" in path.name:
        return  # a URI filename: SQLite opens it, not us
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if each.exists() and each.stat().st_mode & 0o077:
            each.chmod(0o600)


class DatabaseUnavailable(Exception):
    """The database cannot be used as configured: a malformed URL, an unknown driver, an unreachable
    server, a SQLite file or folder that does not exist. The message is one line for the person who
    configured it (no traceback): it names the URL (password hidden) and what to check."""


def driver_url(url: str) -> str:
    """``url`` with a plain ``postgresql://`` (or ``postgres://``) mapped to the installed driver,
    psycopg 3: SQLAlchemy would otherwise look for psycopg2, which BINfoon does not install."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def shown_url(url: str) -> str:
    """The URL as an error message may show it: never the password (``user:pw@`` nor libpq's ``?password=``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        rest = url.split("@", 1)[-1] if "@" in url else url
        return re.sub(r"(?i)(password=)[^&]*", r"\1***", rest)
    if "password" in parsed.query:
        # render_as_string(hide_password=True) masks only the user:password@ part.
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True).replace("password=%2A%2A%2A", "password=***")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (``None``: not SQLite, in memory, or a URI filename SQLite opens itself)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1] if "///" in url else ""
    if not path or path == ":memory:" or path.startswith("file:") or "?" in path:
        return None
    return Path(path)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    url = driver_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            private_database_file(Path(path))
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed if the block succeeds, rolled back (nothing written) if it raises."""
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (idempotent); a SQLite file is created."""
    from alembic import command

    url = driver_url(url)
    if url.startswith("sqlite"):
        make_engine(url).dispose()  # creates the parent directory
    command.upgrade(_alembic_config(url), "head")


def current_revision(url: str) -> str | None:
    """The schema revision the database is at (``None`` for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def check_reachable(url: str, *, create: bool) -> None:
    """Raise ``DatabaseUnavailable`` (one clear line) unless ``url`` can be opened as it is.

    Without ``create`` a SQLite file must exist already: a mistyped folder or file name must not
    become a new, empty database that silently knows no BIN. PostgreSQL databases are created by
    their administrator (``createdb``), never by us; a wrong name, host or password is refused by
    the server and said here in one line."""
    url = driver_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(f"database_url {url!r} is not a database URL (e.g. sqlite:///var/binfoon.db "
                                  "or postgresql://binfoon@localhost/binfoon)") from None
    path = sqlite_path(url)
    if path is not None and not path.exists() and create:
        return  # ``open_database`` makes it (and says so); nothing is touched here
    if path is not None and not create:
        if not path.parent.is_dir():
            raise DatabaseUnavailable(f"no folder {path.parent} for the database {path.name} (database_url "
                                      f"{shown_url(url)}): check the path, or create the database with "
                                      "`binfoon db upgrade`")
        if not path.exists():
            raise DatabaseUnavailable(f"no database at {path} (database_url {shown_url(url)}): check the path, "
                                      "or create it with `binfoon db upgrade`")
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 5}) if parsed.get_backend_name() == "postgresql" \
            else make_engine(url)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        raise DatabaseUnavailable(f"database_url {shown_url(url)}: no driver for it ({exc}); "
                                  "use sqlite:///PATH or postgresql://USER@HOST/NAME") from None
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc).splitlines()[0]
        raise DatabaseUnavailable(f"cannot open the database {shown_url(url)}: {reason}") from None
    finally:
        engine.dispose()


def open_database(url: str, *, create: bool = True) -> Engine:
    """An engine on an up-to-date database: migrates first when the schema is behind.

    ``create=False`` (the command line) refuses a database that does not exist yet with
    ``DatabaseUnavailable``, rather than making an empty one; the library default keeps creating it
    (tests, the demo and the bench make their own throw-away databases)."""
    url = driver_url(url)
    check_reachable(url, create=create)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        log.warning("no database at %s yet: a new, empty one is made there", path)
    if current_revision(url) != head_revision():
        upgrade(url)
    return make_engine(url)


class Desk:
    """The base of every store that serves the event loop: one transaction per step, run in a worker
    thread so the loop keeps serving AMI and calls (a blocking query there would stall every call)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction (blocking: from a worker thread or the command line)."""
        with session_scope(self.engine) as session:
            return work(session)

    async def tx(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction in a worker thread."""
        return await asyncio.to_thread(self.run, work)
