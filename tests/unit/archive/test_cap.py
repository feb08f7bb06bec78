"""``ivr.archive.cap`` and ``Archive.export``: CAP 1.2 documents, checked with our own rules (``tests.cap_rules``)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import xml.etree.ElementTree as ET
import zoneinfo
from pathlib import Path
from typing import Callable

import pytest
from sqlalchemy import select

from ivr.archive import cap
from ivr.archive.store import AccessDenied, ArchiveError
from ivr.cli import main
from storage import audit
from storage.db import session_scope
from storage.models import BinStreet, Message, Recording
from ivr.domain.vocabulary import MessageKind, MessageSource, MessageStatus, Urgency
from tests.cap_rules import cap_errors
from tests.unit.archive.test_archive import NOW, Lab, make_lab
from storage.recordings import open_recording

NS = {"c": cap.CAP_NS}
TZ = zoneinfo.ZoneInfo("Europe/Brussels")


def valid(data: bytes) -> ET.Element:
    """``data`` parsed, after asserting it follows the CAP 1.2 rules (the broken rules otherwise)."""
    assert cap_errors(data) == []
    return ET.fromstring(data)


def text(root: ET.Element, path: str) -> str | None:
    return root.findtext(path, namespaces=NS)


def with_streets(lab: Lab, *streets: str) -> None:
    with session_scope(lab.engine) as s:
        s.add_all([BinStreet(bin_id=lab.world.bin_id, street=street) for street in streets])


def follow_up(lab: Lab, first: int, kind: MessageKind, typed: str, at: dt.datetime) -> int:
    """A typed follow-up of ``first`` with its (synthesised) recording."""
    mid = lab.message(at, typed=typed)
    with session_scope(lab.engine) as s:
        message = s.get_one(Message, mid)
        message.follow_up_of_id, message.kind = first, kind
    return mid


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return make_lab(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path)


def test_an_alert_is_valid_cap_with_the_transcript_and_the_audio(lab: Lab) -> None:
    with_streets(lab, "Molenstraat", "Kerkstraat")
    mid = lab.message(NOW, transcript="verdachte bestelwagen in de kerkstraat")
    out = lab.tmp / "export"
    out.mkdir()

    result = lab.archive.export(mid, f"person:{lab.admin_id}", out, TZ)

    assert (result.cap_file, result.audio_file) == (out / f"{mid}.cap.xml", out / f"{mid}.wav")
    assert (result.identifier, result.msg_type) == (f"BINFOON-5415-{mid}", "Alert")
    with session_scope(lab.engine) as s:
        recording = s.scalars(select(Recording)).one()
        original = open_recording(Path(recording.path), recording.sha256).read_bytes()
    audio = result.audio_file.read_bytes()
    assert audio == original and len(audio) > 1000
    assert result.cap_file.stat().st_mode & 0o077 == 0 and result.audio_file.stat().st_mode & 0o077 == 0
    raw = result.cap_file.read_bytes()
    assert raw.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">")
    root = valid(raw)
    # The header, in CAP's order; 12:00 UTC is 13:00 in Brussels in winter.
    assert [child.tag.split("}")[1] for child in root] == [
        "identifier", "sender", "sent", "status", "msgType", "scope", "restriction", "info"]
    assert text(root, "c:identifier") == f"BINFOON-5415-{mid}"
    assert text(root, "c:sender") == "binfoon.pz5415"
    assert text(root, "c:sent") == "2027-01-01T13:00:00+01:00"
    assert (text(root, "c:status"), text(root, "c:msgType"), text(root, "c:scope")) == ("Actual", "Alert",
                                                                                    "Restricted")
    assert "BIN 12 Kerkwijk" in (text(root, "c:restriction") or "")
    info = root.find("c:info", NS)
    assert info is not None
    assert [child.tag.split("}")[1] for child in info] == [
        "language", "category", "event", "urgency", "severity", "certainty", "audience", "senderName",
        "headline", "description", "resource", "area"]
    assert (text(info, "c:language"), text(info, "c:category")) == ("nl-BE", "Security")
    assert (text(info, "c:urgency"), text(info, "c:severity"), text(info, "c:certainty")) == (
        "Immediate", "Severe", "Observed")
    assert text(info, "c:description") == "verdachte bestelwagen in de kerkstraat"
    assert text(info, "c:headline") == "Dringend politiebericht voor BIN 12 Kerkwijk"
    assert text(info, "c:area/c:areaDesc") == "BIN 12 Kerkwijk (politiezone 5415 Gent): Kerkstraat, Molenstraat"
    resource = info.find("c:resource", NS)
    assert resource is not None
    assert text(resource, "c:mimeType") == "audio/x-wav"
    assert text(resource, "c:size") == str(len(audio))
    assert text(resource, "c:uri") == f"{mid}.wav"
    assert base64.b64decode(text(resource, "c:derefUri") or "") == audio
    assert text(resource, "c:digest") == hashlib.sha1(audio).hexdigest()
    # Audited once, by the person on whose behalf, with what went out.
    exported = lab.audits("message.exported")
    assert [(e.actor, e.subject, e.details["identifier"], e.details["files"]) for e in exported] == [
        (f"person:{lab.admin_id}", f"message:{mid}", f"BINFOON-5415-{mid}", [f"{mid}.cap.xml", f"{mid}.wav"])]
    assert exported[0].details["via"] == "cli:test"


def test_update_and_cancellation_reference_the_first_message(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    first = lab.message(NOW, transcript="inbraak in de kerkstraat")
    update = follow_up(lab, first, MessageKind.UPDATE, "De dader is gevat.", NOW + dt.timedelta(hours=2))
    cancel = follow_up(lab, first, MessageKind.CANCELLATION, "Vals alarm.", NOW + dt.timedelta(hours=3))
    admin = f"person:{lab.admin_id}"
    docs = {}
    for mid in (first, update, cancel):
        out = lab.tmp / f"out-{mid}"
        out.mkdir()
        docs[mid] = valid(lab.archive.export(mid, admin, out, TZ).cap_file.read_bytes())

    first_ref = ",".join(text(docs[first], f"c:{tag}") or "" for tag in ("sender", "identifier", "sent"))
    assert first_ref == f"binfoon.pz5415,BINFOON-5415-{first},2027-01-01T13:00:00+01:00"
    assert text(docs[first], "c:references") is None
    assert (text(docs[update], "c:msgType"), text(docs[update], "c:references")) == ("Update", first_ref)
    assert (text(docs[cancel], "c:msgType"), text(docs[cancel], "c:references")) == ("Cancel", first_ref)
    assert text(docs[update], "c:sent") == "2027-01-01T15:00:00+01:00"
    assert text(docs[update], "c:info/c:description") == "De dader is gevat."
    assert text(docs[cancel], "c:info/c:headline") == "Dringend politiebericht (annulering) voor BIN 12 Kerkwijk"
    assert [e.details["msg_type"] for e in lab.audits("message.exported")] == ["Alert", "Update", "Cancel"]


def test_a_preventive_message_without_text_or_transcript(lab: Lab) -> None:
    mid = lab.message(NOW, urgency=Urgency.PREVENTIVE)
    with session_scope(lab.engine) as s:  # sent (submitted) later than it was first recorded
        s.get_one(Message, mid).submitted_at = dt.datetime(2027, 7, 1, 8, 30, 5, 123456, tzinfo=dt.timezone.utc)
    out = lab.tmp / "out"
    out.mkdir()
    root = valid(lab.archive.export(mid, f"person:{lab.admin_id}", out, TZ,
                                    embed_audio=False).cap_file.read_bytes())
    assert text(root, "c:sent") == "2027-07-01T10:30:05+02:00"  # summer time, whole seconds
    assert text(root, "c:note") == "Geen getypte tekst of transcript beschikbaar; de originele opname is bijgevoegd."
    info = root.find("c:info", NS)
    assert info is not None and text(info, "c:description") is None
    assert (text(info, "c:urgency"), text(info, "c:severity"), text(info, "c:certainty")) == (
        "Future", "Moderate", "Possible")
    assert text(info, "c:area/c:areaDesc") == "BIN 12 Kerkwijk (politiezone 5415 Gent)"
    resource = info.find("c:resource", NS)
    assert resource is not None and text(resource, "c:derefUri") is None
    assert text(resource, "c:uri") == (out / f"{mid}.wav").resolve().as_uri()


@pytest.mark.parametrize("who", ["coordinator", "other_zone_police", "stranger"])
def test_export_without_the_role_is_refused_audited_and_writes_nothing(lab: Lab, who: str) -> None:
    mid = lab.message(NOW, transcript="geheim")
    actor = {"coordinator": f"person:{lab.coordinator_id}", "other_zone_police": str(lab.other_police_id),
             "stranger": "+3292999999"}[who]
    out = lab.tmp / "out"
    out.mkdir()
    with pytest.raises(AccessDenied, match=f"may not export message {mid}"):
        lab.archive.export(mid, actor, out, TZ)
    assert list(out.iterdir()) == []
    refused = lab.audits("message.export_refused")
    assert [r.subject for r in refused] == [f"message:{mid}"]
    assert lab.audits("message.exported") == []
    with session_scope(lab.engine) as s:
        assert audit.verify_chain(s) == []


def test_the_zone_police_may_export(lab: Lab) -> None:
    mid = lab.message(NOW)
    out = lab.tmp / "out"
    out.mkdir()
    valid(lab.archive.export(mid, "0475 00 00 01", out, TZ).cap_file.read_bytes())
    assert [e.actor for e in lab.audits("message.exported")] == [f"person:{lab.world.officer_id}"]


def test_the_export_is_audited_before_any_byte_is_written(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    mid = lab.message(NOW)
    out = lab.tmp / "out"
    out.mkdir()
    seen: list[int] = []

    def copy(source: Path, target: Path) -> None:
        seen.append(len(lab.audits("message.exported")))  # committed already, in another session
        raise OSError("disk full")

    monkeypatch.setattr("ivr.archive.store._private_copy", copy)
    with pytest.raises(OSError):
        lab.archive.export(mid, f"person:{lab.admin_id}", out, TZ)
    assert seen == [1] and list(out.iterdir()) == []


def test_export_errors_are_clear(lab: Lab) -> None:
    mid = lab.message(NOW)
    admin = f"person:{lab.admin_id}"
    with pytest.raises(ArchiveError, match="is not a folder"):
        lab.archive.export(mid, admin, lab.tmp / "missing", TZ)
    out = lab.tmp / "out"
    out.mkdir()
    with pytest.raises(ArchiveError, match="no message 999"):
        lab.archive.export(999, admin, out, TZ)
    (out / f"{mid}.wav").write_bytes(b"x")
    with pytest.raises(ArchiveError, match="already exists"):
        lab.archive.export(mid, admin, out, TZ)
    assert lab.audits("message.exported") == []


def test_private_scope_names_its_addresses() -> None:
    ref = cap.CapRef("binfoon.pz5415", "BINFOON-5415-1", dt.datetime(2027, 1, 1, 12, tzinfo=dt.timezone.utc))
    msg = cap.CapMessage(ref, MessageKind.ALERT, Urgency.URGENT, "5415", "Gent", 12, "Kerkwijk",
                         description="x", addresses=("an@bin12", "Inspecteur Peeters"))
    root = valid(cap.alert_xml(msg, TZ))
    assert (text(root, "c:scope"), text(root, "c:addresses")) == ("Private", 'an@bin12 "Inspecteur Peeters"')
    assert text(root, "c:restriction") is None and root.find("c:info/c:resource", NS) is None


def test_a_follow_up_without_its_first_message_is_refused() -> None:
    ref = cap.CapRef("binfoon.pz5415", "BINFOON-5415-2", NOW)
    with pytest.raises(cap.CapError, match="must reference"):
        cap.alert_xml(cap.CapMessage(ref, MessageKind.UPDATE, Urgency.URGENT, "5415", "Gent", 12, "K"), TZ)
    with pytest.raises(cap.CapError, match="may not contain"):
        cap.sender_for("54 15")


def _edited(document: bytes, edit: Callable[[ET.Element], None]) -> bytes:
    """``document`` after ``edit`` changed its parsed ``<alert>`` in place."""
    root = ET.fromstring(document)
    edit(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _swap(parent_path: str, first: str, second: str) -> Callable[[ET.Element], None]:
    """An edit putting ``second`` before ``first`` (two children of the element at ``parent_path``)."""
    def edit(root: ET.Element) -> None:
        parent = root if parent_path == "." else root.find(parent_path, NS)
        assert parent is not None
        children = list(parent)
        i = children.index(parent.find(f"c:{first}", NS))  # type: ignore[arg-type]
        j = children.index(parent.find(f"c:{second}", NS))  # type: ignore[arg-type]
        children[i], children[j] = children[j], children[i]
        parent[:] = children
    return edit


def _drop(parent_path: str, tag: str) -> Callable[[ET.Element], None]:
    """An edit removing the ``tag`` child of the element at ``parent_path``."""
    def edit(root: ET.Element) -> None:
        parent = root if parent_path == "." else root.find(parent_path, NS)
        assert parent is not None
        child = parent.find(f"c:{tag}", NS)
        assert child is not None
        parent.remove(child)
    return edit


def test_the_xsd_rejects_what_cap_forbids() -> None:
    """The CAP rules checker is not a rubber stamp: each of these breaks CAP 1.2 and fails it, saying why."""
    ref = cap.CapRef("binfoon.pz5415", "BINFOON-5415-1", NOW)
    good = cap.alert_xml(cap.CapMessage(ref, MessageKind.ALERT, Urgency.URGENT, "5415", "Gent", 12, "K"), TZ)
    assert cap_errors(good) == []
    assert cap_errors(_edited(good, lambda root: None)) == []  # the editing itself breaks nothing
    cases = {
        "a UTC 'Z' time": (good.replace(b"+01:00</sent>", b"Z</sent>"), "alert/sent: '2027-01-01T13:00:00Z'"),
        "fractional seconds": (good.replace(b"+01:00</sent>", b".5+01:00</sent>"), "alert/sent"),
        "an unknown msgType": (good.replace(b">Alert<", b">Alarm<"), "alert/msgType: 'Alarm' is not one of"),
        "sender before identifier": (_edited(good, _swap(".", "identifier", "sender")), "missing required"),
        "severity before urgency": (_edited(good, _swap("c:info", "urgency", "severity")), "out of order"),
        "no sent": (_edited(good, _drop(".", "sent")), "alert: missing required <sent>"),
        "no event": (_edited(good, _drop("c:info", "event")), "alert/info[1]: missing required <event>"),
        "Restricted without restriction": (_edited(good, _drop(".", "restriction")),
                                           "scope Restricted requires <restriction>"),
    }
    for case, (bad, why) in cases.items():
        assert bad != good, case
        errors = cap_errors(bad)
        assert any(why in error for error in errors), (case, errors)


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    return make_lab(f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}", tmp_path, tmp_path / "var" / "recordings")


def test_cli_export(cli_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mid = cli_lab.message(NOW, transcript="verdachte bestelwagen", status=MessageStatus.DONE)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["archive", "export", str(mid), "--as", f"person:{cli_lab.admin_id}", "--out", str(out)]) == 0
    assert capsys.readouterr().out == (f"message {mid}: CAP 1.2 Alert BINFOON-5415-{mid} written to "
                                       f"{out / f'{mid}.cap.xml'}, audio to {out / f'{mid}.wav'}\n")
    valid((out / f"{mid}.cap.xml").read_bytes())
    assert main(["archive", "export", str(mid), "--as", f"person:{cli_lab.admin_id}", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "exists already" in err and "--force" in err
    other = tmp_path / "other"
    other.mkdir()
    assert main(["archive", "export", str(mid), "--as", str(cli_lab.coordinator_id), "--out", str(other)]) == 1
    assert capsys.readouterr().err == (f"binfoon: {cli_lab.coordinator_id} may not export message {mid}: "
                                       "only admins and the police of the message's zone may replay it\n")
    assert list(other.iterdir()) == []
    assert len(cli_lab.audits("message.exported")) == 1 and len(cli_lab.audits("message.export_refused")) == 1


def test_cli_export_needs_as_and_out(cli_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["1", "--out", "x"], ["1", "--as", "person:1"]):
        with pytest.raises(SystemExit) as exc:
            main(["archive", "export", *args])
        assert exc.value.code == 2
    assert "--as" in capsys.readouterr().err


def test_source_is_recorded_for_typed_messages(lab: Lab) -> None:
    """A typed message is described by its own text, not by a transcript of the synthesised audio."""
    mid = lab.message(NOW, typed="Opgelet: valse loodgieter.", transcript="opgelet valse loodgieter")
    with session_scope(lab.engine) as s:
        assert s.get_one(Message, mid).source is MessageSource.TEXT
    out = lab.tmp / "out"
    out.mkdir()
    root = valid(lab.archive.export(mid, f"person:{lab.admin_id}", out, TZ).cap_file.read_bytes())
    assert text(root, "c:info/c:description") == "Opgelet: valse loodgieter."
