"""Drills never mix with real messages: the coordinator's log leaves them out, the archive marks them,
their CAP document is an Exercise; and ``binfoon bin test|drills|drill-report`` on the command line."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.archive.browse import browse
from ivr.archive.cap import CAP_NS
from ivr.archive.coordinator_log import collect
from ivr.archive.store import Archive
from ivr.cli import main
from ivr.config import Settings
from ivr.delivery.policy import retry_policies
from ivr.delivery.drill import start_drill
from ivr.directory.accounts import Viewer
from ivr.domain.actor import Actor
from ivr.domain.vocabulary import Urgency, WebRole
from storage.db import session_scope
from storage.models import AuditEntry, DrillSchedule, Message
from tests.conftest import SHARED_DIR, Clock
from tests.world import World

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
TZ = dt.timezone.utc


def _real_and_drill(world: World, clock: Clock, tmp_path: Path) -> tuple[int, int]:
    copy = tmp_path / "clip.wav"
    copy.write_bytes(CLIP.read_bytes())
    real = world.desk.submit_text_message(12, Urgency.URGENT, "Inbraak in de Kerkstraat", copy, "test")
    drill = start_drill(world.engine, world.desk.store, 12, Actor.operator("cli:test"), clock=clock)
    return real, drill


def test_the_coordinators_log_leaves_drills_out(world: World, clock: Clock, tmp_path: Path) -> None:
    real, drill = _real_and_drill(world, clock, tmp_path)
    archive = Archive(world.engine, world.desk.store, operator="test")
    since, until = clock.now - dt.timedelta(days=1), clock.now + dt.timedelta(days=1)
    assert {e.message_id for e in archive.list(bin=12, since=since, until=until)} == {real, drill}
    log = collect(world.engine, archive, 12, since, until, retry_policies(Settings()), clock.now)
    assert [e.message_id for e in log.entries] == [real]


def test_the_archive_lists_a_drill_marked_as_a_test(world: World, clock: Clock, tmp_path: Path) -> None:
    real, drill = _real_and_drill(world, clock, tmp_path)
    archive = Archive(world.engine, world.desk.store, operator="test")
    admin = Viewer(1, 1, "Admin", "admin", WebRole.ADMIN, "nl", 0, None, None)
    entries = browse(archive, admin, "", 12, None, None, None, None)
    assert {e.message_id: e.drill for e in entries} == {real: False, drill: True}


def test_the_cap_document_of_a_drill_is_an_exercise(world: World, clock: Clock, tmp_path: Path) -> None:
    real, drill = _real_and_drill(world, clock, tmp_path)
    archive = Archive(world.engine, world.desk.store, operator="test")
    status = {}
    for message_id in (real, drill):
        out = tmp_path / f"out-{message_id}"
        out.mkdir()
        root = ET.fromstring(archive.export(message_id, "0475 00 00 01", out, TZ).cap_file.read_bytes())
        status[message_id] = (root.findtext(f"{{{CAP_NS}}}status"),
                              root.findtext(f"{{{CAP_NS}}}info/{{{CAP_NS}}}headline", "").startswith("Test:"))
    assert status == {real: ("Actual", False), drill: ("Exercise", True)}


def _cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("BINFOON_DATABASE_URL", world.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_line(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "test", "12", "--as", "person:999")
    assert code != 0 and "no active person with id 999" in err
    member_of_nothing = world.coordinators[0][0]  # a coordinator of BIN 12 may; of BIN 99 not
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "test", "99", "--as",
                          f"person:{member_of_nothing}")
    assert code != 0 and "may not drill BIN 99" in err
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "test", "12", "--text", "Proef")
    assert code == 0, err
    with session_scope(world.engine) as s:
        [drill] = s.scalars(select(Message).where(Message.drill.is_(True))).all()
        assert drill.text == "Proef"
        assert s.scalars(select(AuditEntry).where(AuditEntry.action == "drill.started")).one().actor.startswith("cli:")
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "drill-report", "12", "--json")
    report = json.loads(out)
    assert code == 0 and report["message_id"] == drill.id and report["campaign_id"] is None
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "drill-report", "99")
    assert code != 0 and "no drill" in err
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "drills", "12", "--every-months", "3",
                          "--first", "2000-01-15T10:00")
    assert code != 0 and "in the past" in err
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "drills", "12", "--every-months", "3")
    assert code != 0 and "--first" in err
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "drills", "12", "--every-months", "3",
                          "--first", "2099-01-15T10:00")
    assert code == 0 and "every 3 month(s), the first at 2099-01-15 10:00" in out, err
    with session_scope(world.engine) as s:
        schedule = s.scalars(select(DrillSchedule)).one()
        assert schedule.next_at.replace(tzinfo=dt.timezone.utc) == dt.datetime(2099, 1, 15, 9, tzinfo=dt.timezone.utc)
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "drills")
    assert code == 0 and "BIN 12" in out and "every 3 month(s), next 2099-01-15 10:00" in out
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "drills", "12", "--off")
    assert code == 0 and "removed" in out
    code, out, err = _cli(world, tmp_path, monkeypatch, capsys, "bin", "drills", "--json")
    assert code == 0 and json.loads(out) == []
