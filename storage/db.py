"""Engines, sessions and migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout, so the
dialer and the command line can write at the same time; PostgreSQL is used by URL.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

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


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
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
    """Bring the database at ``url`` to the newest schema (idempotent)."""
    from alembic import command

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


def open_database(url: str) -> Engine:
    """An engine on an up-to-date database: migrates first when the schema is behind."""
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
