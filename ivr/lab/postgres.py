"""A private PostgreSQL server for the lab (Debian's ``postgresql`` package): a fresh cluster in a
temporary directory, loopback and its own unix socket only, trust authentication (nobody but this
machine's users can reach it), stopped and deleted by ``stop``.

PostgreSQL refuses to run as root: as root, ``initdb`` and ``pg_ctl`` run as the ``postgres`` user.
Modelled on tests/pg.py (the suite's session fixture); this one serves the lab's farm and
``binfoon cluster up``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from ivr.lab.ports import free_ports


def pg_bin() -> Path:
    """The newest installed server's ``bin`` directory; ``RuntimeError`` naming the package if none."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql: install the Debian "
                           "package postgresql (`make test` does)")
    return versions[-1].parent


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


def _free_tcp_port() -> int:
    return free_ports(1)[0]


class PrivatePostgres:
    """``start()`` a throw-away cluster; ``create_database()`` gives a SQLAlchemy URL; ``stop()`` removes it."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.port = 0
        self._bin = pg_bin()

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's unix socket."""
        assert self.root is not None, "not started"
        return self.root / "sock"

    def start(self) -> None:
        """initdb and start the server on a free loopback port (blocking; returns once it accepts)."""
        self.root = Path(tempfile.mkdtemp(prefix="binfoon-lab-pg-"))
        data = self.root / "data"
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        self.port = _free_tcp_port()
        try:
            subprocess.run(_as_postgres(str(self._bin / "initdb"), "-D", str(data), "-U", "postgres",
                                        "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"),
                           check=True, capture_output=True)
            # A lab: durability is traded for speed (a crash of the lab loses nothing worth keeping).
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            subprocess.run(_as_postgres(str(self._bin / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                        str(self.root / "log"), "-w", "start"), check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or b"").decode(errors="replace")
            self.stop()
            raise RuntimeError(f"private PostgreSQL did not start: {detail}") from None

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its SQLAlchemy URL (over the unix socket, no password)."""
        import psycopg

        name = name or f"lab_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@/{name}?host={self.socket_dir}&port={self.port}"

    def stop(self) -> None:
        """Stop the server at once and delete its files; idempotent."""
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_postgres(str(self._bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
                           check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
