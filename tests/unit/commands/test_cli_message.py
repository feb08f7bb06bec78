"""``binfoon message send|show|list`` as the police would type them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.cli import main
from ivr.media.compare import read_wav_mono, speech_span
from storage.db import open_database, session_scope
from storage.models import AuditEntry, Message, Recording
from ivr.domain.vocabulary import MessageSource, MessageStatus, Urgency
from storage.recordings import open_recording


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0
    assert main(["bin", "add", "--number", "12", "--name", "Noord", "--zone", "5415", "--language", "fr"]) == 0


def _engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    return open_database(f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}")


def _counts(tmp_path: Path) -> tuple[int, int]:
    with session_scope(_engine(tmp_path)) as s:
        return (s.scalar(select(func.count()).select_from(Message)) or 0,
                s.scalar(select(func.count()).select_from(Recording)) or 0)


def test_send_speaks_the_text_in_the_bin_language_and_submits(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["message", "send", "--bin", "12", "--urgent", "--text",
                 "Attention, cambriolages rue de l'Église. Fermez vos portes."]) == 0
    assert "message 1 submitted" in capsys.readouterr().out
    with session_scope(_engine(tmp_path)) as s:
        message = s.scalars(select(Message)).one()
        recording = s.scalars(select(Recording)).one()
        assert message.status is MessageStatus.RECORDED and message.source is MessageSource.TEXT
        assert message.urgency is Urgency.URGENT and message.submitted_take == 1
        assert "cambriolages" in (message.text or "")
        assert s.scalar(select(func.count()).select_from(AuditEntry)
                        .where(AuditEntry.action == "message.submitted")) == 1
    samples, rate = read_wav_mono(open_recording(Path(recording.path), recording.sha256))
    span = speech_span(samples, rate)
    assert rate == 8000 and span is not None and span[1] - span[0] > 2.0
    assert main(["message", "show", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "recorded" and report["source"] == "text" and report["decision"] is None
    assert main(["message", "show", "1"]) == 0
    assert "waiting for the coordinators" in capsys.readouterr().out
    assert main(["message", "list"]) == 0
    assert "BIN 12" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "error"), [
    (["--bin", "13", "--urgent", "--text", "x y"], "no BIN number 13"),
    (["--bin", "12", "--preventive", "--text", "   "], "the message is empty"),
    (["--bin", "12", "--preventive", "--text", "a" * 2001], "at most 2000"),
])
def test_bad_input_is_refused_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 args: list[str], error: str) -> None:
    assert main(["message", "send", *args]) == 1
    assert error in capsys.readouterr().err
    assert _counts(tmp_path) == (0, 0)


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "alert.txt"
    bad.write_bytes("Opgelet\nInbraak in de Kerkstraat\nCaf\xe9 gesloten\n".encode("latin-1"))
    assert main(["message", "send", "--bin", "12", "--urgent", "--text-file", str(bad)]) == 1
    assert f"{bad}:3: not UTF-8" in capsys.readouterr().err
    assert _counts(tmp_path) == (0, 0)


def test_show_unknown_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["message", "show", "42"]) == 1
    assert "no message 42" in capsys.readouterr().err


def test_a_follow_up_is_linked_and_a_cancellation_needs_its_message(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["message", "send", "--bin", "12", "--urgent", "--text", "Inbraken in de Kerkstraat."]) == 0
    assert main(["message", "send", "--bin", "12", "--preventive", "--cancellation", "--text", "Vals alarm."]) == 1
    assert "--cancellation needs --follow-up-of" in capsys.readouterr().err
    assert main(["message", "send", "--bin", "12", "--preventive", "--follow-up-of", "7", "--text", "x"]) == 1
    assert "message 7 is not a message of BIN 12" in capsys.readouterr().err
    assert main(["message", "send", "--bin", "12", "--preventive", "--follow-up-of", "1", "--cancellation",
                 "--text", "Vals alarm: de verdachten waren werklieden."]) == 0
    with session_scope(_engine(tmp_path)) as s:
        second = s.get_one(Message, 2)
        assert second.follow_up_of_id == 1 and second.kind.value == "cancellation"


def test_member_preferences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    members = tmp_path / "m.csv"
    members.write_text("name,phone\nJan,09 123 45 67\n", encoding="utf-8")
    assert main(["members", "import", "--bin", "12", str(members)]) == 0
    assert main(["members", "preferences", "--phone", "091234567", "--window", "18:00-20:00",
                 "--pause", "2026-12-20..2027-01-05"]) == 0
    assert "window 18:00-20:00, pause 2026-12-20..2027-01-05" in capsys.readouterr().out
    assert main(["members", "preferences", "--phone", "091234567", "--window", "25:00-20:00"]) == 1
    assert "--window" in capsys.readouterr().err
    assert main(["members", "preferences", "--phone", "091234567", "--pause", "2027-01-05..2026-12-20"]) == 1
    assert main(["members", "preferences", "--phone", "0470000000", "--window", "none"]) == 1
    assert main(["members", "preferences", "--phone", "091234567", "--window", "none", "--pause", "none"]) == 0
    assert "window ---, pause -..-" in capsys.readouterr().out
