"""The audit log: append-only, hash-chained and keyed, so changing or deleting any row is detected.

Each row's hash covers the previous row's hash and its own content. Rules:
- appends are serialised, so two writers never fork the chain: PostgreSQL takes a transaction-level
  advisory lock; SQLite takes its database write lock before the last row is read (the driver would
  otherwise read outside any transaction and two writers would both extend the same row);
- the chain is keyed: a row's hash is ``h1:`` + HMAC-SHA256(key, previous hash + content) in
  url-safe base64 (46 characters: it fits the 64-character column), with a key from a 0600 file
  outside the database (made on first use). Rows written before the key existed keep their plain
  SHA-256 (64 hex digits) and stay verifiable; a keyed row may never be followed by a plain one,
  so whoever rewrites rows without the key cannot fall back to plain hashes;
- the head is anchored outside the table, in an append-only file (one line per anchor: time, kind,
  row id, hash, HMAC of the line): when the key is made (``key``: every later row must be keyed),
  periodically by the service and at every ``binfoon audit verify`` (``head``). Deleting the newest
  rows, or rewriting the whole chain, no longer matches the anchors;
- details must never contain PINs or recordings, only references.

Which files belong to a database: what ``bind_files`` was told for its URL (the service and the
command line tell it from the settings: ``audit_key_file``, ``audit_anchor_file``), else, for a
SQLite file, ``audit.key`` and ``<database>.anchors`` next to it (in ``data_dir`` by default), else
``data_dir``; a database with none (PostgreSQL without settings) writes plain rows, and ``check``
says so.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from storage.audit_search import SEARCH_MAX, AuditQuery, as_dict, search
from storage.models import AuditEntry, as_utc, utcnow

# The audit log's names, with the search's (``storage.audit_search``): callers write ``audit.search``.
__all__ = [
    "GENESIS", "KEYED", "SEARCH_MAX", "Anchor", "AuditFiles", "AuditKeyError", "AuditQuery", "ChainCheck", "Problem",
    "anchor", "as_dict", "bind_files", "check", "configure", "default_files", "files_for", "is_keyed", "latest",
    "record", "search", "verify_chain",
]

log = logging.getLogger(__name__)

GENESIS = "0" * 64
#: A keyed row's hash starts with this (a plain row's is 64 hex digits).
KEYED = "h1:"
#: The PostgreSQL advisory lock every append takes (any fixed 64-bit number: "binfoon" + 1).
_APPEND_LOCK = 0x62696E666F6F6E01


def _canonical(at: dt.datetime, actor: str, action: str, subject: str, details: dict[str, Any]) -> str:
    # Hashed as UTC microseconds, whichever database handed the time back.
    stamp = as_utc(at)
    return json.dumps(
        {"at": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "actor": actor, "action": action, "subject": subject,
         "details": details},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )


def _hash(prev_hash: str, canonical: str) -> str:
    """The plain (legacy) hash: rows written before the chain had a key."""
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def _keyed_hash(key: bytes, prev_hash: str, canonical: str) -> str:
    mac = hmac.new(key, (prev_hash + canonical).encode(), hashlib.sha256).digest()
    return KEYED + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def is_keyed(row_hash: str) -> bool:
    """Whether a stored hash is an HMAC of the keyed chain."""
    return row_hash.startswith(KEYED)


# -- the files outside the database ------------------------------------------------------------------
class AuditKeyError(RuntimeError):
    """The key file cannot be read or is not a key (the message names the file)."""


@dataclass(frozen=True)
class Anchor:
    """One line of the anchors file: the chain's head (row id and hash) at a time."""

    line: int
    at: str
    kind: str
    row_id: int
    row_hash: str


@dataclass(frozen=True)
class AuditFiles:
    """The chain's key file and anchors file (both 0600, outside the database)."""

    key_file: Path
    anchor_file: Path

    def key(self, create: bool = False) -> tuple[bytes | None, bool]:
        """(the key, whether this call made it); ``(None, False)`` when absent and not ``create``."""
        with _key_lock:
            cached = _key_cache.get(self.key_file)
            if cached is not None:
                return cached, False
            made = False
            if create and not self.key_file.exists():
                self.key_file.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    pass  # another process made it first: read theirs
                else:
                    with os.fdopen(fd, "w", encoding="ascii") as out:
                        out.write(secrets.token_hex(32) + "\n")
                        out.flush()
                        os.fsync(out.fileno())
                    _owned_like_folder(self.key_file)
                    made = True
            try:
                raw = self.key_file.read_text(encoding="ascii").strip()
            except FileNotFoundError:
                return None, False
            except (OSError, UnicodeDecodeError) as exc:
                raise AuditKeyError(f"audit key {self.key_file}: cannot be read ({exc})") from None
            try:
                key = bytes.fromhex(raw)
            except ValueError:
                key = b""
            if len(key) < 32:
                raise AuditKeyError(f"audit key {self.key_file}: not a key (64 hex digits expected)")
            _key_cache[self.key_file] = key
            return key, made

    def append_anchor(self, key: bytes, kind: str, row_id: int, row_hash: str, at: dt.datetime) -> Anchor:
        """Append one anchor line (fsynced; the file is only ever appended to)."""
        stamp = as_utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = f"{stamp}\t{kind}\t{row_id}\t{row_hash}"
        line = f"{body}\t{_line_mac(key, body)}\n"
        self.anchor_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.anchor_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        _owned_like_folder(self.anchor_file)
        return Anchor(0, stamp, kind, row_id, row_hash)

    def anchors(self, key: bytes | None) -> tuple[list[Anchor], list[str]]:
        """(the anchors whose lines are intact, a problem per line that is not); no file: nothing."""
        try:
            lines = self.anchor_file.read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            return [], []
        except (OSError, UnicodeDecodeError) as exc:
            return [], [f"{self.anchor_file}: cannot be read ({exc})"]
        found, problems = [], []
        for number, line in enumerate(lines, start=1):
            parts = line.split("\t")
            where = f"{self.anchor_file}:{number}"
            if len(parts) != 5 or parts[1] not in ("key", "head") or not parts[2].isdigit():
                problems.append(f"{where}: not an anchor line (time, kind, row id, hash, HMAC)")
                continue
            body = "\t".join(parts[:4])
            if key is None or not hmac.compare_digest(parts[4], _line_mac(key, body)):
                problems.append(f"{where}: the line's HMAC does not match (changed, or written with another key)")
                continue
            found.append(Anchor(number, parts[0], parts[1], int(parts[2]), parts[3]))
        return found, problems


def _owned_like_folder(path: Path) -> None:
    """A file root made (a command typed as root) belongs to its folder's owner, the service's user:
    otherwise the service could not read the key and no audited step could be taken."""
    if os.geteuid() == 0:
        folder = path.parent.stat()
        if folder.st_uid != 0:
            os.chown(path, folder.st_uid, folder.st_gid)


def _line_mac(key: bytes, body: str) -> str:
    # Domain-separated from the rows' HMAC: an anchor line can never pass for a row hash.
    return hmac.new(key, b"binfoon-audit-anchor\n" + body.encode("ascii"), hashlib.sha256).hexdigest()


_key_lock = threading.Lock()
_key_cache: dict[Path, bytes] = {}
_bound: dict[str, AuditFiles] = {}


def _url(url: Any) -> URL:
    return url if isinstance(url, URL) else make_url(str(url))


def _url_key(url: Any) -> str:
    return _url(url).render_as_string(hide_password=False)


def bind_files(url: Any, key_file: Path, anchor_file: Path) -> AuditFiles:
    """Use these files for the database at ``url`` in this process (the service and the command
    line call this with the settings' paths before anything is written)."""
    files = AuditFiles(Path(key_file), Path(anchor_file))
    _bound[_url_key(url)] = files
    return files


def default_files(url: Any, data_dir: Path | None) -> AuditFiles | None:
    """Where a database's files are when nothing else is said: next to a SQLite file (``audit.key``,
    ``<file>.anchors``: the same with or without settings), else in ``data_dir`` (``audit.key``,
    ``audit.anchors``); ``None`` for a database with neither."""
    parsed = _url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        db = Path(parsed.database)
        return AuditFiles(db.parent / "audit.key", db.parent / f"{db.name}.anchors")
    if data_dir is not None:
        return AuditFiles(data_dir / "audit.key", data_dir / "audit.anchors")
    return None


def configure(url: Any, data_dir: Path, key_file: str = "", anchor_file: str = "") -> AuditFiles:
    """Bind the database at ``url`` to the configured files (empty: the defaults under ``data_dir``)."""
    default = default_files(url, Path(data_dir))
    assert default is not None  # with a data_dir there always is one
    return bind_files(url, Path(key_file) if key_file else default.key_file,
                      Path(anchor_file) if anchor_file else default.anchor_file)


def _engine_of(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def files_for(session_or_engine: Session | Engine) -> AuditFiles | None:
    """The key and anchors files of this session's database (see the module's rules)."""
    engine = session_or_engine if isinstance(session_or_engine, Engine) else _engine_of(session_or_engine)
    bound = _bound.get(_url_key(engine.url))
    return bound if bound is not None else default_files(engine.url, None)


# -- writing -----------------------------------------------------------------------------------------
def _serialise_appends(session: Session) -> None:
    """Hold the chain's append lock until this transaction ends (see the module's rules)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _APPEND_LOCK})
    elif dialect == "sqlite":
        # A write that changes nothing: the driver opens the transaction and SQLite takes its write lock.
        session.execute(text("UPDATE audit_log SET id = id WHERE 1 = 0"))


def _head(session: Session) -> AuditEntry | None:
    return session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).first()


def record(session: Session, actor: str, action: str, subject: str = "", **details: Any) -> AuditEntry:
    """Append one entry in the caller's transaction (it commits or rolls back with the change)."""
    _serialise_appends(session)
    last = _head(session)
    prev_hash = last.hash if last is not None else GENESIS
    files = files_for(session)
    key = None
    if files is not None:
        key, made = files.key(create=True)
        if made and key is not None:
            # From here on every row is keyed: the line says from which row (the committed head we hold).
            files.append_anchor(key, "key", last.id if last is not None else 0, prev_hash, utcnow())
    if key is None and is_keyed(prev_hash):
        log.warning("audit row %s written without the chain's key (no key file for this database): "
                    "`binfoon audit verify` will flag it", action)
    at = utcnow()
    canonical = _canonical(at, actor, action, subject, details)
    row_hash = _keyed_hash(key, prev_hash, canonical) if key is not None else _hash(prev_hash, canonical)
    entry = AuditEntry(at=at, actor=actor, action=action, subject=subject, details=details, prev_hash=prev_hash,
                       hash=row_hash)
    session.add(entry)
    session.flush()
    return entry


def anchor(session: Session, unless: tuple[int, str] | None = None) -> Anchor | None:
    """Append the chain's committed head to the anchors file (``None``: no key, an empty chain, or
    the head is still ``unless``: the row id and hash anchored last time).

    Run it in a transaction of its own: it anchors what other readers can see."""
    files = files_for(session)
    if files is None:
        return None
    key, _made = files.key(create=False)
    last = _head(session)
    if key is None or last is None or (last.id, last.hash) == unless:
        return None
    return files.append_anchor(key, "head", last.id, last.hash, utcnow())


# -- checking ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing wrong with the chain: the row (0: not a row) and why."""

    row_id: int
    reason: str

    def __str__(self) -> str:
        return f"entry {self.row_id}: {self.reason}" if self.row_id else self.reason


@dataclass
class ChainCheck:
    """What ``check`` found: counts, the head, the last anchor, and every problem in row order."""

    rows: int = 0
    keyed_rows: int = 0
    head_id: int | None = None
    head_hash: str | None = None
    key_file: Path | None = None
    anchor_file: Path | None = None
    has_key: bool = False
    last_anchor: Anchor | None = None
    anchors: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        """No problem found."""
        return not self.problems

    @property
    def first(self) -> Problem | None:
        """The first problem (lowest row), if any."""
        return self.problems[0] if self.problems else None


def _rows(session: Session) -> Iterator[AuditEntry]:
    return iter(session.scalars(select(AuditEntry).order_by(AuditEntry.id)).yield_per(1000))


def check(session: Session) -> ChainCheck:
    """Verify every row (links, hashes, keyed after keyed) and every anchor (line HMAC, row still there
    with that hash, keyed rows after the ``key`` anchor)."""
    files = files_for(session)
    result = ChainCheck(key_file=files.key_file if files else None, anchor_file=files.anchor_file if files else None)
    key = files.key(create=False)[0] if files is not None else None
    result.has_key = key is not None
    anchors: list[Anchor] = []
    line_problems: list[str] = []
    if files is not None:
        anchors, line_problems = files.anchors(key)
    result.anchors = len(anchors)
    result.last_anchor = anchors[-1] if anchors else None
    keyed_from = min((a.row_id for a in anchors if a.kind == "key"), default=None)
    pinned: dict[int, list[Anchor]] = {}
    for a in anchors:
        pinned.setdefault(a.row_id, []).append(a)
    problems: list[Problem] = []
    prev_hash, seen_keyed = GENESIS, False
    for entry in _rows(session):
        result.rows += 1
        result.head_id, result.head_hash = entry.id, entry.hash
        if entry.prev_hash != prev_hash:
            problems.append(Problem(entry.id, "does not follow the previous entry (deleted or reordered)"))
        canonical = _canonical(entry.at, entry.actor, entry.action, entry.subject, entry.details)
        if is_keyed(entry.hash):
            result.keyed_rows += 1
            seen_keyed = True
            if key is None:
                problems.append(Problem(entry.id, "keyed, but the key file is missing: cannot be verified"))
            elif not hmac.compare_digest(entry.hash, _keyed_hash(key, entry.prev_hash, canonical)):
                problems.append(Problem(entry.id, "content changed after it was written (HMAC does not match)"))
        else:
            if seen_keyed:
                problems.append(Problem(entry.id, "a plain hash after keyed entries (rewritten without the key)"))
            elif keyed_from is not None and entry.id > keyed_from:
                problems.append(Problem(entry.id, "a plain hash after the key was made (rewritten without the key)"))
            if entry.hash != _hash(entry.prev_hash, canonical):
                problems.append(Problem(entry.id, "content changed after it was written"))
        for a in pinned.pop(entry.id, []):
            if a.row_hash != entry.hash:
                problems.append(Problem(entry.id, f"differs from anchor line {a.line} of {a.at} "
                                                  "(rewritten after it was anchored)"))
        prev_hash = entry.hash
    for row_id, missing in sorted(pinned.items()):
        if row_id == 0:
            continue  # the key was made on an empty chain
        problems.append(Problem(row_id, f"missing, but anchored on line {missing[0].line} at {missing[0].at} "
                                        "(the newest entries were deleted)" if result.head_id is None or
                                row_id > result.head_id else
                                f"missing, but anchored on line {missing[0].line} at {missing[0].at} (deleted)"))
    if result.keyed_rows and files is not None and not anchors and not line_problems:
        problems.append(Problem(0, f"{files.anchor_file}: no anchors, yet the chain is keyed (the file was "
                                   "removed or replaced)"))
    problems.sort(key=lambda p: p.row_id)
    result.problems = [Problem(0, p) for p in line_problems] + problems
    return result


def verify_chain(session: Session) -> list[str]:
    """Every problem found in the chain and its anchors (an empty list means intact)."""
    return [str(p) for p in check(session).problems]


def latest(session: Session, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
    """The newest entries, newest first (only ``action``'s when given: e.g. ``security.alert``)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    return list(session.scalars(query))
