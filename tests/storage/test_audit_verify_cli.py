"""``binfoon audit verify``: exit 0 and an anchor when intact; exit 1 naming the first bad entry and why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from ivr.cli import main
from storage import audit
from storage.db import open_database, session_scope
from storage.models import AuditEntry


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    database = f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}"
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_DATABASE_URL", database)
    monkeypatch.setenv("BINFOON_AUDIT_ANCHOR_FILE", str(tmp_path / "elsewhere" / "audit.anchors"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    engine = open_database(database)
    audit.configure(database, tmp_path / "var", "", str(tmp_path / "elsewhere" / "audit.anchors"))
    for i in range(4):
        with session_scope(engine) as s:
            audit.record(s, "cli:root", "bin.add", f"bin:{i}")
    return database


def test_intact_chain_exits_0_and_anchors_its_head(url: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("audit log intact: 4 entries (4 keyed), head entry 4")
    anchors = (tmp_path / "elsewhere" / "audit.anchors").read_text().splitlines()
    assert [line.split("\t")[1:3] for line in anchors] == [["key", "0"], ["head", "4"]]


def test_deleted_newest_entries_exit_1_with_the_first_bad_entry(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify"]) == 0  # anchors entry 4
    engine = open_database(url)
    with session_scope(engine) as s:
        s.execute(delete(AuditEntry).where(AuditEntry.id >= 3))
    capsys.readouterr()
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("binfoon: audit log BROKEN: entry 4: missing, but anchored on line 2")
    assert "the newest entries were deleted" in err


def test_changed_entry_exit_1_names_it(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = open_database(url)
    with session_scope(engine) as s:
        s.execute(update(AuditEntry).where(AuditEntry.id == 2).values(subject="bin:99"))
    assert main(["audit", "verify", "--all"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == ("binfoon: audit log BROKEN: entry 2: content changed after it was written "
                                   "(HMAC does not match)")
    with session_scope(engine) as s:
        assert s.scalar(select(AuditEntry.subject).where(AuditEntry.id == 2)) == "bin:99"  # verify changes nothing
