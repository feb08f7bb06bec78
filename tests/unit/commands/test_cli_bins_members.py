"""BINs and members on the command line as an admin expects them (issue 16 item 7): list, show, edit,
remove with ids and ``--json``; an import that never wipes a BIN silently; one number, one identity;
coordinators added last; ``archive search --as`` checked."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.cli import main
from ivr.domain.vocabulary import MessageSource, Role, Urgency
from storage.db import open_database, session_scope
from storage.models import AuditEntry, Bin, Message, Person, RoleAssignment

HEADER = "name,phone,street\n"


def member_rows(count: int) -> str:
    """``count`` member rows: Lid 0 (09 123 45 00, Dorp 0), Lid 1, ..."""
    return "".join(f"Lid {i},09 123 45 {i:02d},Dorp {i}\n" for i in range(count))


TEN = member_rows(10)


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    monkeypatch.delenv("BINFOON_DATABASE_URL", raising=False)
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0
    assert main(["zone", "add", "--code", "5416", "--name", "Merelbeke"]) == 0
    assert main(["bin", "add", "--number", "12", "--name", "Noord", "--zone", "5415", "--street", "Dorp"]) == 0
    assert main(["bin", "add", "--number", "13", "--name", "Zuid", "--zone", "5415"]) == 0
    return f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}"


def _csv(tmp_path: Path, body: str, name: str = "leden.csv") -> str:
    path = tmp_path / name
    path.write_text(HEADER + body, encoding="utf-8")
    return str(path)


def _members(url: str, number: int = 12) -> dict[str, int]:
    with session_scope(open_database(url)) as s:
        bin_id = s.scalars(select(Bin.id).where(Bin.number == number)).one()
        return {p.name: p.id for p in s.scalars(select(Person).join(RoleAssignment).where(
            RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_id))}


def _audit(url: str, action: str) -> list[AuditEntry]:
    with session_scope(open_database(url)) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


# -- members import --------------------------------------------------------------------------------
def test_a_one_row_file_does_not_wipe_the_bin_without_yes(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "import", "--bin", "12", _csv(tmp_path, TEN)]) == 0
    capsys.readouterr()
    one = _csv(tmp_path, "Lid 3,09 123 45 03,Dorp 3\n", "one.csv")
    assert main(["members", "import", "--bin", "12", one]) == 1
    captured = capsys.readouterr()
    assert "9 member(s) are not in" in captured.err and "add --yes" in captured.err
    assert captured.out.count("remove ") == 9 and "Lid 0" in captured.out
    assert len(_members(url)) == 10  # nothing written
    assert main(["members", "import", "--bin", "12", one, "--yes"]) == 0
    assert "0 added, 1 updated, 9 removed" in capsys.readouterr().out
    assert list(_members(url)) == ["Lid 3"]


def test_dry_run_lists_who_is_added_changed_and_removed_and_writes_nothing(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "import", "--bin", "12", _csv(tmp_path, member_rows(5))]) == 0
    capsys.readouterr()
    before = _members(url)
    audits = len(_audit(url, "members.import"))
    new = _csv(tmp_path, "Lid 0,09 123 45 00,Dorp 0\nLid Een,09 123 45 01,Kerkstraat 1\nNieuw,09 765 43 21,\n", "n.csv")
    assert main(["members", "import", "--bin", "12", new, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:-1]] == ["add", "change", "remove", "remove", "remove"]
    assert "Nieuw  +32*****321" in out[0]
    assert "Lid Een" in out[1] and "(person" in out[1] and "name, street)" in out[1]
    assert out[-1] == "BIN 12: 1 added, 1 changed, 1 unchanged, 3 removed (mode replace); dry run: nothing was written"
    assert _members(url) == before and len(_audit(url, "members.import")) == audits


def test_merge_never_removes_and_reads_standard_input(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "import", "--bin", "12", _csv(tmp_path, member_rows(3))]) == 0
    before = set(_members(url))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((HEADER + "Nieuw,09 765 43 21,\n").encode())))
    assert main(["members", "import", "--bin", "12", "-", "--mode", "merge"]) == 0
    assert "1 added, 0 updated, 0 removed" in capsys.readouterr().out
    assert set(_members(url)) == before | {"Nieuw"}
    assert _audit(url, "members.import")[-1].details["mode"] == "merge"


def test_an_existing_person_is_reused_by_phone(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["person", "add", "--name", "Coördinator Jan", "--role", "coordinator", "--bin", "12",
                 "--phone", "0470 12 34 56"]) == 0
    assert main(["members", "import", "--bin", "13", _csv(tmp_path, "Jan Peeters,0470 12 34 56,\n")]) == 0
    assert "1 of them already in the directory" in capsys.readouterr().out
    members = _members(url, 13)
    with session_scope(open_database(url)) as s:
        person = s.get_one(Person, members["Coördinator Jan"])
        assert sorted(r.role.value for r in person.roles) == ["coordinator", "member"]
        assert s.scalar(select(Person.id).where(Person.name == "Jan Peeters")) is None


def test_a_row_with_another_member_s_number_is_refused(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "import", "--bin", "12", _csv(tmp_path, "An,09 111 11 11,\n")]) == 0
    assert main(["members", "edit", str(_members(url)["An"]), "--second-phone", "0470 99 88 77"]) == 0
    capsys.readouterr()
    clash = _csv(tmp_path, "An,09 111 11 11,\nBob,0470 99 88 77,\n", "clash.csv")
    assert main(["members", "import", "--bin", "12", clash, "--mode", "merge"]) == 1
    assert "line 3: phone +32******877 is already the number of member person" in capsys.readouterr().err
    assert set(_members(url)) == {"An"}


# -- one number, one identity ----------------------------------------------------------------------
def test_a_second_officer_with_the_same_number_is_refused_naming_the_first(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pin = tmp_path / "pin"
    pin.write_text("482193\n")
    officer = ["person", "add", "--role", "police_officer", "--pin-file", str(pin), "--phone", "09 266 61 11"]
    assert main([*officer, "--name", "Peeters", "--zone", "5415"]) == 0
    capsys.readouterr()
    assert main([*officer, "--name", "Janssens", "--zone", "5416"]) == 1
    err = capsys.readouterr().err
    assert "(Peeters) as police_officer" in err and err.startswith("binfoon: phone: +32*****111 is already")
    coordinator = ["person", "add", "--role", "coordinator", "--phone", "0470 11 22 33"]
    assert main([*coordinator, "--name", "A", "--bin", "12"]) == 0
    assert main([*coordinator, "--name", "B", "--bin", "12"]) == 1
    assert "(A) as coordinator" in capsys.readouterr().err
    assert main([*coordinator, "--name", "B", "--bin", "13"]) == 0  # another BIN: another scope


def test_preferences_refuse_an_ambiguous_number_and_take_bin(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "import", "--bin", "12", _csv(tmp_path, "Jan,09 123 45 67,\n")]) == 0
    assert main(["members", "import", "--bin", "13", _csv(tmp_path, "Piet,0470 12 34 56,\n", "b.csv")]) == 0
    piet = _members(url, 13)["Piet"]
    assert main(["members", "edit", str(piet), "--second-phone", "09 123 45 67"]) == 0
    capsys.readouterr()
    assert main(["members", "preferences", "--phone", "09 123 45 67", "--window", "18:00-20:00"]) == 1
    err = capsys.readouterr().err
    assert "more than one member" in err and "(Jan, BIN 12)" in err and f"person {piet} (Piet, BIN 13)" in err
    assert main(["members", "preferences", "--phone", "09 123 45 67", "--bin", "13", "--window", "18:00-20:00"]) == 0
    assert capsys.readouterr().out.startswith("Piet: window 18:00-20:00")


# -- coordinators go last --------------------------------------------------------------------------
def test_a_coordinator_added_without_priority_goes_last(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    add = ["person", "add", "--role", "coordinator", "--bin", "12"]
    assert main([*add, "--name", "Eerste", "--phone", "0470 11 11 11"]) == 0
    assert main([*add, "--name", "Tweede", "--phone", "0470 22 22 22", "--priority", "5"]) == 0
    assert main([*add, "--name", "Derde", "--phone", "0470 33 33 33"]) == 0
    with session_scope(open_database(url)) as s:
        order = s.execute(select(Person.name, RoleAssignment.priority).join(RoleAssignment).where(
            RoleAssignment.role == Role.COORDINATOR).order_by(RoleAssignment.priority)).all()
    assert [tuple(row) for row in order] == [("Eerste", 1), ("Tweede", 5), ("Derde", 6)]
    capsys.readouterr()
    assert main(["bin", "show", "12", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["priority"]) for c in shown["coordinators"]] == [("Eerste", 1), ("Tweede", 5),
                                                                         ("Derde", 6)]


# -- BINs: list, show, edit, remove ----------------------------------------------------------------
def test_bin_list_and_show_with_ids_and_json(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "import", "--bin", "12", _csv(tmp_path, member_rows(3))]) == 0
    capsys.readouterr()
    assert main(["bin", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(b["number"], b["members"], b["zone"], b["one_level"]) for b in rows] == [(12, 3, "5415", False),
                                                                                     (13, 0, "5415", False)]
    assert all(isinstance(b["id"], int) for b in rows)
    assert main(["bin", "list"]) == 0
    assert f"(id {rows[0]['id']})" in capsys.readouterr().out
    assert main(["bin", "show", "12"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"BIN 12 (id {rows[0]['id']}): Noord, zone 5415 (Gent), nl") and "streets:      Dorp" in out
    assert main(["bin", "show", "99"]) == 1
    assert "no BIN number 99" in capsys.readouterr().err


def test_bin_edit_sets_one_level_and_more_audited(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bin", "edit", "12", "--one-level", "yes", "--name", "Noord-Oost", "--language", "fr",
                 "--zone", "5416"]) == 0
    assert capsys.readouterr().out == "BIN 12: name, language, zone, one_level changed\n"
    with session_scope(open_database(url)) as s:
        bin_ = s.scalars(select(Bin).where(Bin.number == 12)).one()
        assert (bin_.one_level, bin_.name, bin_.language.value, bin_.zone.code) == (True, "Noord-Oost", "fr", "5416")
    entry = _audit(url, "bin.edit")[-1]
    assert entry.subject == "bin:12" and entry.details["one_level"] == [False, True]
    assert entry.details["zone"] == ["5415", "5416"]
    assert main(["bin", "edit", "12", "--one-level", "yes"]) == 0
    assert capsys.readouterr().out == "BIN 12: nothing changed\n"
    assert main(["bin", "edit", "12"]) == 1 and "nothing to change" in capsys.readouterr().err
    assert main(["bin", "edit", "12", "--zone", "9999"]) == 1


def test_bin_remove_keeps_a_bin_with_police_messages(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "import", "--bin", "13", _csv(tmp_path, member_rows(1))]) == 0
    with session_scope(open_database(url)) as s:
        bin_ = s.scalars(select(Bin).where(Bin.number == 12)).one()
        s.add(Message(bin_id=bin_.id, urgency=Urgency.URGENT, source=MessageSource.TEXT, text="Inbraak"))
    capsys.readouterr()
    assert main(["bin", "remove", "12", "--yes"]) == 1
    assert "1 police message(s): they are police records and are kept" in capsys.readouterr().err
    assert main(["bin", "remove", "13"]) == 1  # has a member: --yes first
    assert "Nothing was removed; add --yes" in capsys.readouterr().err and len(_members(url, 13)) == 1
    assert main(["bin", "remove", "13", "--yes"]) == 0
    assert "BIN 13 removed (1 role(s) in it ended" in capsys.readouterr().out
    assert main(["bin", "list", "--json"]) == 0
    assert [b["number"] for b in json.loads(capsys.readouterr().out)] == [12]
    assert _audit(url, "bin.remove")[-1].subject == "bin:13"


# -- members: list, show, edit, remove -------------------------------------------------------------
def test_members_list_show_edit_remove(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "import", "--bin", "12", _csv(tmp_path, member_rows(3))]) == 0
    lid = _members(url)["Lid 0"]
    capsys.readouterr()
    assert main(["members", "list", "--bin", "12", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {"id": lid, "name": "Lid 0", "street": "Dorp 0", "language": "nl", "phone": "+32*****500",
                       "second_phone": None, "bins": [12], "active": True, "window": None, "pause": None,
                       "channels": None, "email": None, "opted_out": {}}
    assert main(["members", "list", "--bin", "12"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{lid}\tLid 0\t+32*****500")
    assert main(["members", "show", str(lid), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["phone"] == "+32*****500"
    assert main(["members", "show", str(lid), "--show-numbers", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["phone"] == "+3291234500"
    assert _audit(url, "member.opened")[-1].subject == f"person:{lid}"
    assert main(["members", "edit", str(lid), "--name", "Lid Nul", "--street", "none"]) == 0
    assert main(["members", "edit", str(lid), "--phone", "09 123 45 01"]) == 1  # Lid 1's number
    assert "(Lid 1) as member" in capsys.readouterr().err
    assert main(["members", "show", str(lid), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["name"], shown["street"]) == ("Lid Nul", None)
    assert main(["members", "remove", str(lid)]) == 0
    assert capsys.readouterr().out == f"member {lid} (Lid Nul) removed from BIN 12\n"
    assert "Lid Nul" not in _members(url) and _audit(url, "member.remove")[-1].details["bin"] == 12
    assert main(["members", "show", str(lid)]) == 1


# -- members: channels, e-mail and opt-outs (issue 17) ----------------------------------------------
def _person(url: str, person_id: int) -> Person:
    with session_scope(open_database(url)) as s:
        person = s.get_one(Person, person_id)
        s.expunge(person)
        return person


def test_members_edit_channels_and_email_refuses_what_cannot_reach_them(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "import", "--bin", "12",
                 _csv(tmp_path, "Lid Vast,09 123 45 00,Dorp\nLid Gsm,0470 12 34 56,Dorp\n")]) == 0
    vast, gsm = _members(url)["Lid Vast"], _members(url)["Lid Gsm"]
    capsys.readouterr()
    refused = [([str(vast), "--channels", "voice+sms"], "SMS needs a mobile number"),
               ([str(vast), "--channels", "text", "--email", "a@b.be"], "SMS needs a mobile number"),
               ([str(gsm), "--channels", "sms, email"], "e-mail needs an address"),
               ([str(gsm), "--channels", "fax"], "'fax' is not a channel"),
               ([str(gsm), "--email", "jan@"], "is not an e-mail address")]
    for argv, why in refused:
        assert main(["members", "edit", *argv]) == 1, argv
        assert why in capsys.readouterr().err, argv
    assert _audit(url, "member.edit") == []  # nothing written
    assert main(["members", "edit", str(gsm), "--channels", "text", "--email", "Jan.Peeters@Telenet.BE"]) == 0
    person = _person(url, gsm)
    assert (person.channels, person.email) == ("sms+email", "Jan.Peeters@telenet.be")
    assert _audit(url, "member.edit")[-1].details == {"phone": "+32******456", "channels": [None, "sms+email"],
                                                      "email": [None, "J***@telenet.be"]}
    capsys.readouterr()
    assert main(["members", "show", str(gsm)]) == 0
    out = capsys.readouterr().out
    assert "channels: sms+email" in out and "e-mail:  J***@telenet.be" in out and "opt-outs: none" in out
    assert main(["members", "show", str(gsm), "--show-numbers", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["channels"], shown["email"], shown["opted_out"]) == ("sms+email", "Jan.Peeters@telenet.be", {})
    # The zone's defaults, for a member without their own channels: the settings', then the zone's.
    assert main(["members", "show", str(vast)]) == 0
    assert "channels: zone default: urgent voice+sms, preventive voice+email" in capsys.readouterr().out
    assert main(["zone", "edit", "5415", "--urgent-channels", "call, sms, email"]) == 0
    assert main(["members", "show", str(vast)]) == 0
    assert "channels: zone default: urgent voice+sms+email, preventive voice+email" in capsys.readouterr().out
    # The address cannot go while e-mail is chosen; both back to the zone's default and none.
    assert main(["members", "edit", str(gsm), "--email", "none"]) == 1
    assert main(["members", "edit", str(gsm), "--channels", "default", "--email", "none"]) == 0
    person = _person(url, gsm)
    assert (person.channels, person.email) == (None, None)
    assert _audit(url, "member.edit")[-1].details["channels"] == ["sms+email", None]
    # "none" is the zone's defaults too, as "default" is, in any case (never "no channel at all").
    for word in ("none", "NONE", "Default"):
        assert main(["members", "edit", str(gsm), "--channels", "sms"]) == 0
        assert main(["members", "edit", str(gsm), "--channels", word]) == 0, word
        assert _person(url, gsm).channels is None, word


def test_members_show_opt_outs_and_an_editor_clears_one_audited(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import datetime as dt

    assert main(["members", "import", "--bin", "12", _csv(tmp_path, "Lid Gsm,0470 12 34 56,Dorp\n")]) == 0
    gsm = _members(url)["Lid Gsm"]
    with session_scope(open_database(url)) as s:
        person = s.get_one(Person, gsm)
        person.calls_opt_out_at = dt.datetime(2026, 12, 6, 14, 3, tzinfo=dt.timezone.utc)
        person.sms_opt_out_at = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.timezone.utc)
    capsys.readouterr()
    assert main(["members", "show", str(gsm)]) == 0  # local time, Brussels
    assert "opt-outs: calls since 2026-12-06 15:03; sms since 2026-12-07 09:00" in capsys.readouterr().out
    assert main(["members", "show", str(gsm), "--json"]) == 0
    # The JSON names them as the command line does ("calls", as in --clear-opt-out calls).
    assert json.loads(capsys.readouterr().out)["opted_out"] == {"calls": "2026-12-06T14:03:00+00:00",
                                                               "sms": "2026-12-07T08:00:00+00:00"}
    assert main(["members", "edit", str(gsm), "--clear-opt-out", "calls"]) == 0
    assert capsys.readouterr().out == f"member {gsm} (Lid Gsm) calls: back in\n"
    person = _person(url, gsm)
    assert person.calls_opt_out_at is None and person.sms_opt_out_at is not None
    [cleared] = _audit(url, "member.opt_out_cleared")
    assert (cleared.subject, cleared.details) == (f"person:{gsm}", {"channel": "voice",
                                                                   "since": "2026-12-06T14:03:00+00:00"})
    assert main(["members", "edit", str(gsm), "--clear-opt-out", "calls"]) == 0
    assert "calls: not opted out, nothing to clear" in capsys.readouterr().out
    assert len(_audit(url, "member.opt_out_cleared")) == 1 and _audit(url, "member.edit") == []


def test_import_dry_run_shows_channel_and_email_changes(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "kanalen.csv"
    path.write_text("naam,telefoon,kanalen,e-mail\nLid Gsm,0470 12 34 56,,\n", encoding="utf-8")
    assert main(["members", "import", "--bin", "12", str(path)]) == 0
    path.write_text("naam,telefoon,kanalen,e-mail\nLid Gsm,0470 12 34 56,text,lid@voorbeeld.be\n"
                    "Nieuw,0471 22 33 44,voice+sms,\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["members", "import", "--bin", "12", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("add      line 3    Nieuw") and out[0].endswith("(channels voice+sms)")
    assert out[1].startswith("change   line 2    Lid Gsm") and out[1].endswith(
        "channels zone default -> sms+email, e-mail none -> l***@voorbeeld.be)")
    assert _person(url, _members(url)["Lid Gsm"]).channels is None  # a dry run writes nothing
    path.write_text("naam,telefoon,kanalen,e-mail\nLid Gsm,0470 12 34 56,voice+fax,\n", encoding="utf-8")
    assert main(["members", "import", "--bin", "12", str(path)]) == 1
    assert f"{path}: line 2: channels: 'fax' is not a channel" in capsys.readouterr().err


# -- archive search --as ---------------------------------------------------------------------------
def test_archive_search_as_checks_the_person_exists(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["archive", "search", "inbraak", "--as", "person:999"]) == 1
    assert "--as person:999: not a known person" in capsys.readouterr().err
    assert not _audit(url, "archive.searched")
    assert main(["person", "add", "--name", "Coördinator", "--role", "coordinator", "--bin", "12",
                 "--phone", "0470 11 11 11"]) == 0
    with session_scope(open_database(url)) as s:
        person_id = s.scalars(select(Person.id).where(Person.name == "Coördinator")).one()
    assert main(["archive", "search", "inbraak", "--as", "0470 11 11 11"]) == 0
    assert _audit(url, "archive.searched")[-1].actor == f"person:{person_id}"


def test_import_says_whose_own_channels_the_file_did_not_change(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17: a person already in the directory (here a member of BIN 12) joins BIN 13 keeping their own
    channels; the import says the file's were not applied, and to whom."""
    path = tmp_path / "kanalen.csv"
    path.write_text("name,phone,channels\nJan,0470 12 34 56,voice\n", encoding="utf-8")
    assert main(["members", "import", "--bin", "12", str(path)]) == 0
    jan = _members(url)["Jan"]
    path.write_text("name,phone,channels\nJan Peeters,0470 12 34 56,sms\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["members", "import", "--bin", "13", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"reuse    line 2    Jan Peeters  +32******456  (person {jan}, already in the directory; the "
                      "file's channels not applied: the person has their own)")
    assert _person(url, jan).channels == "voice"
