"""Member CSV import: a good file replaces the list; every bad file fails line-numbered, writes nothing."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, func, select, text

from ivr.directory.member_import import CsvImportError, import_members, parse_member_csv
from storage.db import open_database, session_scope
from storage.models import Base, Bin, Person, PoliceZone, RoleAssignment
from ivr.domain.vocabulary import Language, Role

HEADER = "name,phone,second phone,street,language\n"
CHANNELS = "naam,telefoon,tweede telefoon,kanalen,e-mail\n"


def _engine_with_bin(url: str) -> Engine:
    engine = open_database(url)
    with session_scope(engine) as s:
        s.add(Bin(number=12, name="Noord", zone=PoliceZone(code="5415", name="Gent"), language=Language.NL))
    return engine


def _dump(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(select(t)).all()), key=repr)
                for t in Base.metadata.sorted_tables}


def _import(engine: Engine, data: bytes) -> object:
    rows = parse_member_csv(data)
    with session_scope(engine) as s:
        bin_ = s.scalars(select(Bin).where(Bin.number == 12)).one()
        return import_members(s, bin_, rows, "test")


def _members(engine: Engine) -> dict[str, tuple[str, ...]]:
    with session_scope(engine) as s:
        people = s.scalars(select(Person).join(RoleAssignment).where(RoleAssignment.role == Role.MEMBER)).all()
        return {p.name: tuple(n.e164 for n in sorted(p.phones, key=lambda n: n.rank.value)) for p in people}


BAD_FILES = {
    "empty": (b"", "line 1: the file is empty"),
    "header only": (HEADER.encode(), "line 2: no members"),
    "unknown column": (b"name,phone,fax\nJan,09 123 45 67,1\n", "line 1: unknown column 'fax'"),
    "missing column": (b"name,street\nJan,Kasteellaan\n", "line 1: missing column 'phone'"),
    "bad phone": ((HEADER + "Jan,09 123 45 67,,,nl\nPiet,0900 12 345,,,nl\n").encode(),
                  "line 3: phone: '0900 12 345' is a service number"),
    "duplicate": ((HEADER + "Jan,09 123 45 67,,,\nAn,0470 11 22 33,,,\nPiet,+32 9 123 45 67,,,\n").encode(),
                  "line 4: phone +3291234567 is already on line 2"),
    "same second phone": ((HEADER + "Jan,09 123 45 67,091234567,,\n").encode(),
                          "line 2: the second phone is the same as the first"),
    "wrong encoding": ((HEADER + "Jan,09 123 45 67,,Kasteellaan,nl\nRen\xe9,09 765 43 21,,Stra\xdfe,nl\n")
                       .encode("latin-1"), "line 3: not UTF-8 text (byte 0xe9)"),
    "unknown language": ((HEADER + "Jan,09 123 45 67,,,es\n").encode(), "line 2: unknown language 'es'"),
    "field count": ((HEADER + "Jan,09 123 45 67\n").encode(), "line 2: 2 fields where the header has 5"),
    "empty name": ((HEADER + ",09 123 45 67,,,\n").encode(), "line 2: the name is empty"),
    # Channels and e-mail (issue 17).
    "unknown channel": ((CHANNELS + "Jan,0470 12 34 56,,voice+fax,\n").encode(),
                        "line 2: channels: 'fax' is not a channel"),
    "sms without a mobile": ((CHANNELS + "Jan,0470 12 34 56,,sms,\nPiet,09 123 45 67,,voice+sms,\n").encode(),
                             "line 3: channels 'voice+sms': SMS needs a mobile number"),
    "text only without an address": ((CHANNELS + "Jan,0470 12 34 56,,text,\n").encode(),
                                     "line 2: channels 'text': e-mail needs an address"),
    "bad e-mail": ((CHANNELS + "Jan,0470 12 34 56,,voice,jan@@voorbeeld.be\n").encode(),
                   "line 2: e-mail: 'jan@@voorbeeld.be' is not an e-mail address"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_file_fails_clearly_and_writes_nothing(db_url: str, kind: str) -> None:
    engine = _engine_with_bin(db_url)
    _import(engine, (HEADER + "Existing Member,050 12 34 56,,,nl\n").encode())
    before = _dump(engine)
    data, message = BAD_FILES[kind]
    with pytest.raises(CsvImportError) as info:
        _import(engine, data)
    assert message in str(info.value), str(info.value)
    assert _dump(engine) == before
    engine.dispose()


def test_all_errors_are_reported_at_once() -> None:
    data = (HEADER + "Jan,12,,,\n,09 123 45 67,,,xx\n").encode()
    with pytest.raises(CsvImportError) as info:
        parse_member_csv(data)
    assert [e.line for e in info.value.errors] == [2, 3, 3]


def test_semicolons_dutch_headers_and_bom() -> None:
    data = "\ufeffNaam;Telefoon;Tweede telefoon;Straat;Taal\nJan;09 123 45 67;0470 12 34 56;Dorp 1;Frans\n"
    rows = parse_member_csv(data.encode("utf-8"))
    assert rows[0].name == "Jan" and rows[0].second_phone == "+32470123456" and rows[0].language is Language.FR


def test_thousand_members_import_and_reimport_replaces(db_url: str) -> None:
    engine = _engine_with_bin(db_url)
    lines = [f"Member {i},09 {100 + i // 10000:03d} {i // 100 % 100:02d} {i % 100:02d},,Straat {i},nl"
             for i in range(1000)]
    started = time.perf_counter()
    result = _import(engine, (HEADER + "\n".join(lines) + "\n").encode())
    elapsed = time.perf_counter() - started
    print(f"1,000-member import on {db_url.split(':')[0]}: {elapsed:.2f} s")
    assert (result.added, result.updated, result.removed) == (1000, 0, 0)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(RoleAssignment.__table__)).scalar() == 1000
    # The coordinator's next file: one member gone, one renamed (same number), one new.
    changed = lines[1:]
    changed[0] = changed[0].replace("Member 1,", "Member One,")
    changed.append("New Member,0470 99 88 77,,Nieuwstraat 1,")
    result = _import(engine, (HEADER + "\n".join(changed) + "\n").encode())
    assert (result.added, result.updated, result.removed) == (1, 999, 1)  # type: ignore[attr-defined]
    members = _members(engine)
    assert len(members) == 1000 and "Member 0" not in members and "Member One" in members
    assert members["New Member"] == ("+32470998877",)
    with engine.connect() as conn:  # the removed member's person row (and history) is kept
        assert conn.execute(text("select count(*) from people")).scalar() == 1001
    engine.dispose()


def _plan(engine: Engine, data: bytes, mode: str) -> object:
    from ivr.directory.member_import import plan_member_import

    with session_scope(engine) as s:
        return plan_member_import(s, s.scalars(select(Bin).where(Bin.number == 12)).one(), parse_member_csv(data), mode)


def test_plan_merge_and_reuse_on_both_databases(db_url: str) -> None:
    """The plan reads only; merge never removes; a person with the row's number is reused, not doubled."""
    from ivr.directory.member_import import import_members

    engine = _engine_with_bin(db_url)
    _import(engine, (HEADER + "Jan,09 123 45 67,,Dorp 1,nl\nAn,0470 12 34 56,,Dorp 2,nl\n").encode())
    with session_scope(engine) as s:
        zone = s.scalars(select(PoliceZone)).one()
        other = Bin(number=13, name="Zuid", zone=zone, language=Language.NL)
        s.add(other)
    before = _dump(engine)
    one_row = (HEADER + "Jan,09 123 45 67,,Kerkstraat 1,nl\n").encode()
    plan = _plan(engine, one_row, "replace")
    assert [m.name for m in plan.removed] == ["An"] and [m.changes for m in plan.changed] == [("street",)]  # type: ignore[attr-defined]
    assert _plan(engine, one_row, "merge").removed == ()  # type: ignore[attr-defined]
    assert _dump(engine) == before  # planning wrote nothing
    with session_scope(engine) as s:
        result = import_members(s, s.scalars(select(Bin).where(Bin.number == 12)).one(), parse_member_csv(one_row),
                                "test", mode="merge")
    assert (result.added, result.updated, result.removed) == (0, 1, 0)
    assert set(_members(engine)) == {"Jan", "An"}
    # An, a member of BIN 12, joins BIN 13 as the same person.
    with session_scope(engine) as s:
        zuid = s.scalars(select(Bin).where(Bin.number == 13)).one()
        import_members(s, zuid, parse_member_csv((HEADER + "An Peeters,0470 12 34 56,,,nl\n").encode()), "test")
    with session_scope(engine) as s:
        people = s.scalars(select(Person).where(Person.name.in_(["An", "An Peeters"]))).all()
        assert [p.name for p in people] == ["An"]
        assert sorted(s.scalars(select(Bin.number).join(RoleAssignment, RoleAssignment.bin_id == Bin.id).where(
            RoleAssignment.person_id == people[0].id))) == [12, 13]
    engine.dispose()


def _contact(engine: Engine) -> dict[str, tuple[str | None, str | None]]:
    with session_scope(engine) as s:
        people = s.scalars(select(Person).join(RoleAssignment).where(RoleAssignment.role == Role.MEMBER)).all()
        return {p.name: (p.channels, p.email) for p in people}


def test_channels_and_email_are_imported_kept_and_cleared(db_url: str) -> None:
    """The columns set them (written the one way), an empty cell clears them (the zone's defaults), a
    file without the column leaves them; what a member would be left with must reach them."""
    engine = _engine_with_bin(db_url)
    _import(engine, (CHANNELS + "Jan,0470 12 34 56,,Text,Jan@Voorbeeld.BE\n"
                                "Piet,09 123 45 67,0471 22 33 44,sms / call,\n"
                                "An,09 765 43 21,,,an@voorbeeld.be\n").encode())
    assert _contact(engine) == {"Jan": ("sms+email", "Jan@voorbeeld.be"), "Piet": ("voice+sms", None),
                                "An": (None, "an@voorbeeld.be")}
    # A file without the channels and e-mail columns changes neither (an older file keeps the choices).
    _import(engine, (HEADER + "Jan,0470 12 34 56,,Dorp 1,nl\nPiet,09 123 45 67,0471 22 33 44,,nl\n"
                              "An,09 765 43 21,,,nl\n").encode())
    assert _contact(engine) == {"Jan": ("sms+email", "Jan@voorbeeld.be"), "Piet": ("voice+sms", None),
                                "An": (None, "an@voorbeeld.be")}
    # Without the e-mail column Jan keeps his address, so "text" still reaches him; Piet's landline
    # alone cannot take the SMS he chose: that line is refused, and nothing of the file is written.
    before = _dump(engine)
    with pytest.raises(CsvImportError) as info:
        _import(engine, (HEADER + "Jan,0470 12 34 56,,Dorp 1,nl\nPiet,09 123 45 67,,,nl\n").encode())
    assert [str(e) for e in info.value.errors] == [
        "line 3: channels voice+sms: SMS needs a mobile number, and no number of this line is one"]
    assert _dump(engine) == before
    # Empty cells: back to the zone's defaults, no address.
    _import(engine, (CHANNELS + "Jan,0470 12 34 56,,,\nPiet,09 123 45 67,0471 22 33 44,,\n"
                                "An,09 765 43 21,,,\n").encode())
    assert _contact(engine) == {"Jan": (None, None), "Piet": (None, None), "An": (None, None)}
    with session_scope(engine) as s:
        from storage.models import AuditEntry

        rows = s.scalars(select(AuditEntry).where(AuditEntry.action == "members.import")
                         .order_by(AuditEntry.id)).all()
        assert [r.details["channels_or_email_changed"] for r in rows] == [0, 0, 3]
    engine.dispose()


def test_a_reused_person_takes_the_files_channels_only_without_their_own(db_url: str) -> None:
    """A person already in the directory keeps their own channels and address (the plan says the file's
    were not applied); one without takes the file's, if they reach them with their own numbers. Each
    change of channels or address is audited per person (old and new, the address masked)."""
    from ivr.directory.member_import import plan_member_import
    from storage.models import AuditEntry

    engine = _engine_with_bin(db_url)
    _import(engine, (CHANNELS + "An,0470 12 34 56,,,\nPiet,0471 22 33 44,,voice,piet@voorbeeld.be\n"
                                "Vaste lijn,09 123 45 67,,,\n").encode())
    with session_scope(engine) as s:
        s.add(Bin(number=13, name="Zuid", zone=s.scalars(select(PoliceZone)).one(), language=Language.NL))
    ids = {name: pid for name, pid in _ids(engine).items()}
    # The file's second number is a mobile, but a reused person keeps their own numbers: a landline.
    landline_sms = (CHANNELS + "Vaste lijn,09 123 45 67,0472 00 11 22,sms,\n").encode()
    with session_scope(engine) as s, pytest.raises(CsvImportError) as info:
        plan_member_import(s, s.scalars(select(Bin).where(Bin.number == 13)).one(), parse_member_csv(landline_sms))
    assert [str(e) for e in info.value.errors] == [
        f"line 2: channels sms: SMS needs a mobile number, and person {ids['Vaste lijn']} (already in the "
        "directory, who keeps their numbers) has none"]
    data = (CHANNELS + "An,0470 12 34 56,,voice+sms,an@voorbeeld.be\n"
                       "Piet,0471 22 33 44,,voice+email,p.peeters@voorbeeld.be\n").encode()
    with session_scope(engine) as s:
        zuid = s.scalars(select(Bin).where(Bin.number == 13)).one()
        plan = plan_member_import(s, zuid, parse_member_csv(data))
        assert [(m.name, m.changes, m.not_applied) for m in plan.reused] == [
            ("An", ("channels zone default -> voice+sms", "e-mail none -> a***@voorbeeld.be"), ()),
            ("Piet", (), ("channels", "e-mail"))]
        assert plan.not_applied_lines() == [
            f"reuse    line 3    Piet  +32******344  (person {ids['Piet']}, already in the directory; the file's "
            "channels and e-mail not applied: the person has their own)"]
        import_members(s, zuid, parse_member_csv(data), "test")
    assert _contact(engine)["An"] == ("voice+sms", "an@voorbeeld.be")
    assert _contact(engine)["Piet"] == ("voice", "piet@voorbeeld.be")
    with session_scope(engine) as s:
        edits = [(r.subject, r.details) for r in s.scalars(select(AuditEntry).where(
            AuditEntry.action == "member.edit").order_by(AuditEntry.id))]
        [summary] = s.scalars(select(AuditEntry).where(AuditEntry.action == "members.import",
                                                       AuditEntry.subject == "bin:13")).all()
    assert edits == [(f"person:{ids['An']}", {"bin": 13, "via": "import", "channels": [None, "voice+sms"],
                                               "email": [None, "a***@voorbeeld.be"]})]
    assert summary.details["channels_or_email_changed"] == 1 and summary.details["reused"] == 2
    # A member of the BIN whose channels the file changes gets a row of their own too.
    _import(engine, (CHANNELS + "An,0470 12 34 56,,voice+sms,an@voorbeeld.be\n"
                                "Piet,0471 22 33 44,,voice+sms,piet@voorbeeld.be\n"
                                "Vaste lijn,09 123 45 67,,,\n").encode())
    with session_scope(engine) as s:
        edits = [(r.subject, r.details) for r in s.scalars(select(AuditEntry).where(
            AuditEntry.action == "member.edit").order_by(AuditEntry.id))][1:]
    assert edits == [(f"person:{ids['Piet']}", {"bin": 12, "via": "import", "channels": ["voice", "voice+sms"]})]
    engine.dispose()


def _ids(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as s:
        return {p.name: p.id for p in s.scalars(select(Person))}
