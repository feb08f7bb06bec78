"""The audit chain resists what a database-only attacker can do (issue 14 item 8, RELIABILITY B7).

Someone who can write the table but not read the key file outside it: deleting the newest rows,
rewriting a row and re-hashing everything after it, re-hashing the whole chain, forging with another
key. And concurrent writers (8 threads, each its own transaction) leave one unbroken chain.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

from sqlalchemy import Engine, delete, select, update

from storage import audit
from storage.db import open_database, session_scope
from storage.models import AuditEntry


def _chain(url: str, tmp_path: Path, rows: int = 5) -> Engine:
    engine = open_database(url)
    audit.bind_files(url, tmp_path / "keys" / "audit.key", tmp_path / "keys" / "audit.anchors")
    for i in range(rows):
        with session_scope(engine) as s:
            audit.record(s, "cli:root", "bin.add", f"bin:{i}", name=f"BIN {i}")
    return engine


def _anchor(engine: Engine) -> None:
    with session_scope(engine) as s:
        assert audit.anchor(s) is not None


def _problems(engine: Engine) -> list[str]:
    with session_scope(engine) as s:
        return audit.verify_chain(s)


def _rehash_plain(engine: Engine, from_id: int) -> None:
    """What a forger without the key does: recompute the published plain SHA-256 chain from a row on."""
    with session_scope(engine) as s:
        rows = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        prev = audit.GENESIS
        for row in rows:
            if row.id >= from_id:
                canonical = audit._canonical(row.at, row.actor, row.action, row.subject, row.details)
                row.prev_hash = prev
                row.hash = hashlib.sha256((prev + canonical).encode()).hexdigest()
            prev = row.hash


def test_intact_keyed_chain_with_key_file_outside_the_database(db_url: str, tmp_path: Path) -> None:
    engine = _chain(db_url, tmp_path)
    _anchor(engine)
    assert _problems(engine) == []
    key_file = tmp_path / "keys" / "audit.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "audit.anchors").st_mode) == 0o600
    key_hex = key_file.read_text().strip()
    with session_scope(engine) as s:
        rows = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert all(r.hash.startswith(audit.KEYED) and len(r.hash) <= 64 for r in rows)
        assert all(key_hex not in str(r.details) and key_hex not in r.hash for r in rows)


def test_deleting_the_newest_rows_is_detected(db_url: str, tmp_path: Path) -> None:
    engine = _chain(db_url, tmp_path)
    _anchor(engine)
    with session_scope(engine) as s:
        newest = s.scalars(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(2)).all()
        s.execute(delete(AuditEntry).where(AuditEntry.id.in_(newest)))
    problems = _problems(engine)
    assert problems, "the chain without its two newest rows passed"
    assert any(f"entry {max(newest)}: missing" in p and "newest entries were deleted" in p for p in problems)


def test_deleting_the_newest_rows_then_writing_on_is_detected(db_url: str, tmp_path: Path) -> None:
    engine = _chain(db_url, tmp_path)
    _anchor(engine)
    with session_scope(engine) as s:
        newest = s.scalars(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(2)).all()
        s.execute(delete(AuditEntry).where(AuditEntry.id.in_(newest)))
    with session_scope(engine) as s:  # the service goes on writing after the deletion
        audit.record(s, "system", "later", "x")
    assert _problems(engine)


def test_rewriting_a_row_and_rehashing_without_the_key_is_detected(db_url: str, tmp_path: Path) -> None:
    engine = _chain(db_url, tmp_path)
    with session_scope(engine) as s:
        s.execute(update(AuditEntry).where(AuditEntry.subject == "bin:2").values(actor="someone-else"))
    _rehash_plain(engine, from_id=3)
    problems = _problems(engine)
    assert problems, "a row rewritten and the chain re-hashed after it passed"
    assert problems[0].startswith("entry 3: a plain hash after keyed entries")


def test_rehashing_the_whole_chain_without_the_key_is_detected(db_url: str, tmp_path: Path) -> None:
    engine = _chain(db_url, tmp_path)
    with session_scope(engine) as s:
        s.execute(update(AuditEntry).where(AuditEntry.subject == "bin:2").values(actor="someone-else"))
    _rehash_plain(engine, from_id=1)
    problems = _problems(engine)
    assert problems, "the whole chain re-hashed with plain SHA-256 passed"
    assert problems[0].startswith("entry 1: a plain hash after the key was made")


def test_rehashing_with_another_key_is_detected(db_url: str, tmp_path: Path) -> None:
    engine = _chain(db_url, tmp_path)
    wrong = b"\x01" * 32
    with session_scope(engine) as s:
        rows = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        rows[2].actor = "someone-else"
        prev = rows[1].hash
        for row in rows[2:]:
            row.prev_hash = prev
            row.hash = audit._keyed_hash(wrong, prev, audit._canonical(row.at, row.actor, row.action, row.subject,
                                                                        row.details))
            prev = row.hash
    assert _problems(engine)[0] == "entry 3: content changed after it was written (HMAC does not match)"


def test_an_anchor_line_changed_is_detected(db_url: str, tmp_path: Path) -> None:
    engine = _chain(db_url, tmp_path)
    _anchor(engine)
    anchors = tmp_path / "keys" / "audit.anchors"
    lines = anchors.read_text().splitlines()
    fields = lines[-1].split("\t")
    fields[2] = "1"  # point the anchor at an older row
    anchors.write_text("\n".join(lines[:-1] + ["\t".join(fields)]) + "\n")
    problems = _problems(engine)
    assert any(p.endswith(":2: the line's HMAC does not match (changed, or written with another key)")
               for p in problems)


def test_rows_from_before_the_key_stay_verifiable(db_url: str, tmp_path: Path) -> None:
    """An installation upgraded with rows written by the unkeyed chain: they verify as plain, later rows keyed."""
    engine = open_database(db_url)
    with session_scope(engine) as s:
        prev = audit.GENESIS
        for i in range(3):
            at = audit.utcnow()
            canonical = audit._canonical(at, "cli:root", "old", f"x:{i}", {})
            row = AuditEntry(at=at, actor="cli:root", action="old", subject=f"x:{i}", details={}, prev_hash=prev,
                             hash=audit._hash(prev, canonical))
            s.add(row)
            s.flush()
            prev = row.hash
    audit.bind_files(db_url, tmp_path / "audit.key", tmp_path / "audit.anchors")
    with session_scope(engine) as s:
        audit.record(s, "cli:root", "new", "y")
    assert _problems(engine) == []
    with session_scope(engine) as s:
        hashes = s.scalars(select(AuditEntry.hash).order_by(AuditEntry.id)).all()
    assert [audit.is_keyed(h) for h in hashes] == [False, False, False, True]
    # The key anchor says where keying began: a plain row after it is a forgery even with no keyed row left.
    first_line = (tmp_path / "audit.anchors").read_text().splitlines()[0].split("\t")
    assert first_line[1:3] == ["key", "3"]


def test_eight_concurrent_writers_leave_one_unbroken_chain(db_url: str, tmp_path: Path) -> None:
    """PostgreSQL: the advisory lock; SQLite: its write lock, taken before the head is read."""
    engine = open_database(db_url)  # keyed on SQLite (its key file next to it), plain on PostgreSQL
    writers, each = 8, 15
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            start.wait()
            for i in range(each):
                with session_scope(engine) as s:
                    audit.record(s, f"writer:{n}", "test.write", f"{n}:{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_scope(engine) as s:
        rows = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert len(rows) == writers * each
    assert len({r.prev_hash for r in rows}) == len(rows), "two rows extend the same row: the chain forked"
    assert _problems(engine) == []


def test_the_anchor_line_mac_uses_the_key(tmp_path: Path) -> None:
    files = audit.AuditFiles(tmp_path / "k", tmp_path / "a")
    key, made = files.key(create=True)
    assert made and key is not None
    files.append_anchor(key, "head", 7, "h1:abc", audit.utcnow())
    line = (tmp_path / "a").read_text().rstrip("\n").split("\t")
    body = "\t".join(line[:4]).encode()
    assert line[4] == hmac.new(key, b"binfoon-audit-anchor\n" + body, hashlib.sha256).hexdigest()
    assert files.anchors(b"\x02" * 32)[1] != []


def test_the_head_is_anchored_again_only_when_it_moved(tmp_path: Path) -> None:
    """What the service does every ``audit_anchor_every_s``: one line per new head, none while idle."""
    url = f"sqlite:///{tmp_path / 'binfoon.db'}"
    engine = _chain(url, tmp_path, rows=2)
    with session_scope(engine) as s:
        first = audit.anchor(s)
    assert first is not None
    with session_scope(engine) as s:
        assert audit.anchor(s, unless=(first.row_id, first.row_hash)) is None
        audit.record(s, "system", "later", "x")
    with session_scope(engine) as s:
        again = audit.anchor(s, unless=(first.row_id, first.row_hash))
    assert again is not None and again.row_id == first.row_id + 1
    kinds = [line.split("\t")[1] for line in (tmp_path / "keys" / "audit.anchors").read_text().splitlines()]
    assert kinds == ["key", "head", "head"]
