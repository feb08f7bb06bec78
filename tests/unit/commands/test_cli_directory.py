"""The directory commands as a user types them: clear errors, exit 1, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ivr.cli import main


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)


def _setup(tmp_path: Path) -> None:
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0
    assert main(["bin", "add", "--number", "12", "--name", "Noord", "--zone", "5415", "--street", "Dorp"]) == 0


def test_a_coordinator_s_day(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _setup(tmp_path)
    pin = tmp_path / "pin"
    pin.write_text("482193\n")
    assert main(["person", "add", "--name", "Peeters", "--role", "police_officer", "--zone", "5415",
                 "--phone", "09 266 61 11", "--pin-file", str(pin)]) == 0
    members = tmp_path / "members.csv"
    members.write_text("naam;telefoon;straat\nJan;09 123 45 67;Dorp 1\nAn;0470 12 34 56;Dorp 2\n", encoding="utf-8")
    assert main(["members", "import", "--bin", "12", str(members)]) == 0
    assert "2 added, 0 updated, 0 removed" in capsys.readouterr().out
    assert main(["members", "list", "--bin", "12"]) == 0
    listing = capsys.readouterr().out
    assert "+32*****567" in listing and "+3291234567" not in listing  # masked by default
    assert main(["bin", "list"]) == 0
    assert "2 members" in capsys.readouterr().out


def test_bad_csv_prints_line_numbers_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _setup(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,phone\nJan,09 123 45 67\nPiet,12345\n")
    assert main(["members", "import", "--bin", "12", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.csv: line 3: phone:" in err and "nothing was imported" in err
    assert main(["members", "list", "--bin", "12"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bin", "add", "--number", "12", "--name", "Again", "--zone", "5415"], "already exists"),
        (["bin", "add", "--number", "13", "--name", "X", "--zone", "9999"], "no police zone with code '9999'"),
        (["members", "import", "--bin", "99", "FILE"], "no BIN number 99"),
        (["person", "add", "--name", "X", "--role", "member", "--phone", "09 123 45 67"], "give --bin"),
        (["person", "add", "--name", "X", "--role", "police_officer", "--zone", "5415", "--phone",
          "09 123 45 67"], "PIN"),
        (["person", "add", "--name", "X", "--role", "coordinator", "--bin", "12", "--phone", "12"], "phone:"),
    ],
)
def test_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    _setup(tmp_path)
    good = tmp_path / "ok.csv"
    good.write_text("name,phone\nJan,09 123 45 67\n")
    argv = [str(good) if a == "FILE" else a for a in argv]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_pin_with_letters_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _setup(tmp_path)
    pin = tmp_path / "pin"
    pin.write_text("12ab")
    assert main(["person", "add", "--name", "X", "--role", "admin", "--phone", "09 123 45 67",
                 "--pin-file", str(pin)]) == 1
    assert "a PIN is digits only" in capsys.readouterr().err
