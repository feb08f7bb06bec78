"""The audit log: append-only and hash-chained, so changing or deleting any row is detected.

Each row's hash covers the previous row's hash and its own content; ``verify_chain`` recomputes
the chain from the first row. Details must never contain PINs or recordings, only references.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import AuditEntry, as_utc, utcnow

GENESIS = "0" * 64


def _canonical(at: dt.datetime, actor: str, action: str, subject: str, details: dict[str, Any]) -> str:
    # Hashed as UTC microseconds, whichever database handed the time back.
    stamp = as_utc(at)
    return json.dumps(
        {"at": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "actor": actor, "action": action, "subject": subject,
         "details": details},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )


def _hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def record(session: Session, actor: str, action: str, subject: str = "", **details: Any) -> AuditEntry:
    """Append one entry in the caller's transaction (it commits or rolls back with the change)."""
    last = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).first()
    prev_hash = last.hash if last is not None else GENESIS
    at = utcnow()
    entry = AuditEntry(at=at, actor=actor, action=action, subject=subject, details=details, prev_hash=prev_hash,
                       hash=_hash(prev_hash, _canonical(at, actor, action, subject, details)))
    session.add(entry)
    session.flush()
    return entry


def verify_chain(session: Session) -> list[str]:
    """Every problem found in the chain (an empty list means intact)."""
    problems = []
    prev_hash = GENESIS
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)):
        if entry.prev_hash != prev_hash:
            problems.append(f"entry {entry.id}: does not follow the previous entry (deleted or reordered)")
        expected = _hash(entry.prev_hash, _canonical(entry.at, entry.actor, entry.action, entry.subject,
                                                     entry.details))
        if entry.hash != expected:
            problems.append(f"entry {entry.id}: content changed after it was written")
        prev_hash = entry.hash
    return problems
