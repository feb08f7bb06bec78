"""The admin's commands (issue 16 item 6) as an operator types them: persons and zones listed, shown
(``--json``), edited, deactivated, roles given and taken; the audit log searched; bad input is one
line, a non-zero exit and nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.cli import main
from storage.db import open_database, session_scope
from storage.models import AuditEntry, Bin, Person, PoliceZone


@pytest.fixture(autouse=True)
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    pin = tmp_path / "pin"
    pin.write_text("48219377\n")
    assert main(["db", "upgrade"]) == 0
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0
    assert main(["bin", "add", "--number", "12", "--name", "Noord", "--zone", "5415"]) == 0
    assert main(["person", "add", "--name", "Beheerder", "--role", "admin", "--phone", "09 266 61 11",
                 "--pin-file", str(pin)]) == 0
    assert main(["person", "add", "--name", "Jan", "--role", "coordinator", "--bin", "12",
                 "--phone", "0470 12 34 56"]) == 0
    return tmp_path


def _engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    return open_database(f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}")


def _actions(tmp_path: Path) -> list[str]:
    with session_scope(_engine(tmp_path)) as s:
        return list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def test_persons_are_listed_shown_and_changed(directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["person", "list", "--json"]) == 0
    people = json.loads(capsys.readouterr().out)
    assert [(p["id"], p["name"], [r["role"] for r in p["roles"]]) for p in people] == [
        (1, "Beheerder", ["admin"]), (2, "Jan", ["coordinator"])]
    assert "+32470123456" not in json.dumps(people)  # masked
    assert main(["person", "role", "2", "--add", "police_officer", "--zone", "5415"]) == 0
    assert main(["person", "edit", "2", "--name", "Jan Peeters", "--language", "fr"]) == 0
    assert main(["person", "deactivate", "2"]) == 0
    capsys.readouterr()
    assert main(["person", "list", "--role", "police_officer"]) == 0
    assert capsys.readouterr().out == ""  # deactivated: not among the active
    assert main(["person", "list", "--inactive", "--zone", "5415"]) == 0
    listing = capsys.readouterr().out
    assert "Jan Peeters" in listing and "police_officer zone 5415" in listing and "[deactivated]" in listing
    assert main(["person", "show", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["active"], shown["language"], shown["pin"]["set"]) == (False, "fr", False)
    assert main(["person", "activate", "2"]) == 0
    assert main(["person", "role", "2", "--remove", "police_officer"]) == 0
    assert _actions(directory)[-5:] == ["person.role_added", "person.edited", "person.deactivated",
                                        "person.activated", "person.role_removed"]
    with session_scope(_engine(directory)) as s:
        assert s.get_one(Person, 2).active is True
        actors = set(s.scalars(select(AuditEntry.actor).where(AuditEntry.action.in_(
            ["person.role_added", "person.edited", "person.deactivated"]))))
    assert len(actors) == 1 and actors.pop().startswith("cli")


@pytest.mark.parametrize(("argv", "message"), [
    (["person", "deactivate", "1"], "last active admin"),
    (["person", "show", "99"], "no person 99"),
    (["person", "edit", "2"], "nothing to change"),
    (["person", "edit", "2", "--name", "  "], "cannot be empty"),
    (["person", "role", "2", "--add", "coordinator"], "belongs to a BIN"),
    (["person", "role", "2", "--add", "coordinator", "--bin", "12"], "already has that role"),
    (["person", "role", "2", "--remove", "member"], "no such member role"),
    (["person", "role", "2", "--remove", "coordinator", "--priority", "3"], "--priority goes with --add"),
    (["zone", "edit", "5415"], "nothing to change"),
    (["zone", "edit", "9999", "--max-channels", "2"], "no police zone"),
    (["zone", "edit", "5415", "--max-channels", "2", "--one-level", "13=on"], "BIN 13 is not in zone 5415"),
    (["zone", "edit", "5415", "--one-level", "12=maybe"], "BIN=on or BIN=off"),
])
def test_bad_input_is_one_line_and_writes_nothing(directory: Path, capsys: pytest.CaptureFixture[str],
                                                  argv: list[str], message: str) -> None:
    before = _actions(directory)
    assert main(argv) != 0
    assert message in capsys.readouterr().err
    assert _actions(directory) == before


@pytest.mark.parametrize("argv", [["zone", "edit", "5415", "--max-channels", "0"],
                                  ["zone", "edit", "5415", "--max-cps", "-1"],
                                  ["zone", "edit", "5415", "--review-max-rounds", "x"],
                                  ["audit", "search", "--limit", "0"]])
def test_counts_are_positive_or_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code != 0


def test_zones_are_listed_shown_and_edited(directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A second approval needs two police in the zone: one speaks the message, the other approves it.
    assert main(["zone", "edit", "5415", "--second-approver", "yes"]) == 1
    assert "at least 2" in capsys.readouterr().err
    for name, phone in (("Inspecteur Een", "09 266 61 21"), ("Inspecteur Twee", "09 266 61 22")):
        assert main(["person", "add", "--name", name, "--role", "police_officer", "--zone", "5415",
                     "--phone", phone, "--pin-file", str(directory / "pin")]) == 0
    assert main(["zone", "edit", "5415", "--max-channels", "4", "--max-cps", "0.5", "--second-approver", "yes",
                 "--review-mode", "parallel", "--review-max-rounds", "3", "--one-level", "12=on"]) == 0
    assert main(["zone", "edit", "5415", "--max-cps", "none"]) == 0
    capsys.readouterr()
    assert main(["zone", "show", "5415", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["max_channels"], shown["max_cps"], shown["second_approver"], shown["review_mode"],
            shown["review_max_rounds"]) == (4, None, True, "parallel", 3)
    assert shown["bins"] == [{"number": 12, "name": "Noord", "one_level": True, "members": 0}]
    assert main(["zone", "list", "--json"]) == 0
    assert [z["code"] for z in json.loads(capsys.readouterr().out)] == ["5415"]
    with session_scope(_engine(directory)) as s:
        assert s.scalars(select(Bin.one_level)).one() is True
        assert s.scalars(select(PoliceZone.max_cps)).one() is None
    assert _actions(directory)[-3:] == ["zone.edited", "bin.one_level", "zone.edited"]


def test_a_zone_s_default_channels_and_ladder_are_shown_set_and_cleared(
        directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["zone", "show", "5415"]) == 0
    assert ("  channels: urgent voice+sms (setting), preventive voice+email (setting); ladder SMS on (setting), "
            "after 900 s (setting)") in capsys.readouterr().out.splitlines()
    assert main(["zone", "edit", "5415", "--urgent-channels", "voice+sms+email", "--preventive-channels", "call",
                 "--ladder-sms", "no", "--ladder-after-s", "300"]) == 0
    assert main(["zone", "show", "5415"]) == 0
    assert ("  channels: urgent voice+sms+email, preventive voice; ladder SMS off, after 300 s"
            in capsys.readouterr().out.splitlines())
    assert main(["zone", "show", "5415", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["urgent_channels"], shown["preventive_channels"], shown["ladder_sms"], shown["ladder_after_s"]) == (
        "voice+sms+email", "voice", False, 300.0)
    assert main(["zone", "edit", "5415", "--urgent-channels", "voice+pigeon"]) == 1
    assert "urgent_channels: 'pigeon' is not a channel" in capsys.readouterr().err
    assert main(["zone", "edit", "5415", "--preventive-channels", "email"]) == 1  # voice always
    assert "preventive_channels: email leaves out calls" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["zone", "edit", "5415", "--ladder-after-s", "-5"])
    assert main(["zone", "edit", "5415", "--urgent-channels", "none", "--preventive-channels", "default",
                 "--ladder-sms", "none", "--ladder-after-s", "none"]) == 0
    with session_scope(_engine(directory)) as s:
        zone = s.scalars(select(PoliceZone)).one()
        assert (zone.urgent_channels, zone.preventive_channels, zone.ladder_sms, zone.ladder_after_s) == (
            None, None, None, None)
    assert _actions(directory)[-2:] == ["zone.edited", "zone.edited"]


def test_the_audit_log_is_searched_and_each_search_is_audited(directory: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["audit", "search", "--action", "person.*", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    with session_scope(_engine(directory)) as s:
        expected = list(s.scalars(select(AuditEntry.id).where(AuditEntry.action.like("person.%"))
                                  .order_by(AuditEntry.id.desc())))
    assert [e["id"] for e in found] == expected and len(expected) >= 2
    assert main(["audit", "search", "--text", "gent", "--since", "2020-01-01", "--limit", "1"]) == 0
    out = capsys.readouterr()
    assert "zone.add" in out.out and len(out.out.splitlines()) == 1
    with session_scope(_engine(directory)) as s:
        searched = s.scalars(select(AuditEntry).where(AuditEntry.action == "audit.searched")
                             .order_by(AuditEntry.id)).all()
    assert [e.details["filters"] for e in searched] == [{"action": "person.*"},
                                                        {"text": "gent", "since": searched[1].details["filters"]
                                                         ["since"]}]
    assert main(["audit", "search", "--since", "2026-02-01", "--until", "2026-01-01"]) != 0
    assert "--until is not after --since" in capsys.readouterr().err
    assert main(["audit", "verify"]) == 0
