"""The audit chain of a running service (issue 14 item 8), on SQLite and PostgreSQL.

An officer's wrong PIN on the real police line is audited by the service; the rows the service
writes are keyed; the service anchors the head outside the database; ``binfoon audit
verify``, run as its own process like an operator would, exits 0, then 1 naming the anchored entry
once the newest rows are deleted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from ivr.lab.network import CallerScript, Listen, Press
from ivr.lab.phone_lab import PhoneLab
from ivr.media.voice import PromptRenderer
from storage import audit
from storage.db import session_scope
from storage.models import AuditEntry
from tests.integration.binfoon import PROJECT_DIR, start_binfoon
from tests.pg import ON_BOTH_DATABASES
from tests.world import OFFICER_PHONE

pytestmark = pytest.mark.integration


def _verify(database: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BINFOON_DATABASE_URL": database, "BINFOON_DATA_DIR": str(data_dir),
           "BINFOON_CONFIG": os.devnull}
    return subprocess.run([sys.executable, "-m", "ivr", "audit", "verify"], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@ON_BOTH_DATABASES
async def test_the_service_keys_and_anchors_its_chain_and_verify_catches_a_deleted_tail(
        lab: PhoneLab, database: str, tmp_path: Path, renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer, database=database)
    engine = binfoon.world.engine
    with session_scope(engine) as s:
        before = s.scalar(select(func.max(AuditEntry.id))) or 0
    try:
        wrong = CallerScript.of(Listen(), Press("111111#"), Listen(), Listen(timeout_s=5))
        await (await lab.call_in(OFFICER_PHONE, wrong)).wait(60)
        await binfoon.timeline.wait_for_flows("police_intake", 1, timeout_s=30)
        await binfoon.app.anchor_audit()
    finally:
        await binfoon.app.stop()
    with session_scope(engine) as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.id > before).order_by(AuditEntry.id)).all()
        assert rows and all(audit.is_keyed(r.hash) for r in rows), [r.action for r in rows]
        assert any(r.action.startswith("police.pin") for r in rows)
        newest = rows[-1].id
    anchors = binfoon.settings.data_dir / "audit.anchors" if database.startswith("postgresql") \
        else tmp_path / "binfoon.db.anchors"
    assert anchors.read_text().splitlines()[-1].split("\t")[1:3] == ["head", str(newest)]

    intact = _verify(database, binfoon.settings.data_dir)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("audit log intact:")

    with session_scope(engine) as s:
        s.execute(delete(AuditEntry).where(AuditEntry.id > newest - 2))
    broken = _verify(database, binfoon.settings.data_dir)
    assert broken.returncode == 1
    assert broken.stderr.startswith(f"binfoon: audit log BROKEN: entry {newest}: missing, but anchored")

    # The service verifies the chain before it anchors again (at its first round, then daily): it
    # finds the deletion, alerts admins and vouches for nothing.
    lines = anchors.read_text().splitlines()
    again = await start_binfoon(lab, tmp_path, renderer, world=binfoon.world)
    try:
        await again.app.anchor_audit()
    finally:
        await again.app.stop()
    assert anchors.read_text().splitlines() == lines
    with session_scope(engine) as s:
        alert = s.scalars(select(AuditEntry).where(AuditEntry.action == "security.alert")).one()
    assert alert.details["kind"] == "audit_chain_broken"
    assert alert.details["problem"].startswith(f"entry {newest}: missing, but anchored")
