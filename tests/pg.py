"""A private PostgreSQL server for the test session (Debian's packages; `make test` installs them).

Missing binaries are a failure, not a skip: the PostgreSQL half of the suite must really run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql: `make test` installs "
                    "the Debian package postgresql")
    return versions[-1].parent


def _as_postgres(*cmd: str) -> list[str]:
    # PostgreSQL refuses to run as root; tests run as root on CI machines.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[tuple[str, int]]:
    """(socket directory, port) of a fresh PostgreSQL cluster, stopped at the end of the session."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="binfoon-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(_as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                "-E", "UTF8", "--locale=C.UTF-8"), check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets} " \
              "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                str(root / "log"), "-w", "start"), check=True, capture_output=True)
    try:
        yield str(sockets), port
    finally:
        subprocess.run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _create_database(server: tuple[str, int]) -> str:
    import psycopg

    sockets, port = server
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=sockets, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@/{name}?host={sockets}&port={port}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: SQLite in a temporary file, and a fresh database on the private PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'binfoon.db'}"
    return _create_database(request.getfixturevalue("postgres_server"))


#: Run a real-Asterisk test on both databases: ``@ON_BOTH_DATABASES`` and a ``database`` argument.
ON_BOTH_DATABASES = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of the empty database a test runs on: SQLite in ``tmp_path/binfoon.db`` unless the test is
    parametrized (``ON_BOTH_DATABASES``) with ``postgresql``: then its own database on the session's cluster."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'binfoon.db'}"
    if kind == "postgresql":
        return _create_database(request.getfixturevalue("postgres_server"))
    raise ValueError(f"unknown database kind {kind!r}")


def another_database(like: str, request: pytest.FixtureRequest, folder: Path) -> str:
    """A second empty database of the same kind as the URL ``like`` (SQLite: ``folder/binfoon.db``)."""
    if like.startswith("sqlite"):
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'binfoon.db'}"
    return _create_database(request.getfixturevalue("postgres_server"))
