"""What people typed or said cannot attack whoever opens an export (issue 14, item 10).

* CSV: a cell of free text that starts like a formula (``= + - @``, tab, CR) is prefixed with ``'``,
  so a spreadsheet shows it as text instead of running it; the figures and masked numbers stay as they are.
* CAP: control characters (C0 except tab/newline/CR, and DEL) never reach the XML, which stays valid CAP.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ivr.archive import cap
from ivr.archive.coordinator_log import collect, to_csv
from ivr.cli import main
from ivr.config import Settings
from ivr.delivery.policy import retry_policies
from ivr.domain.vocabulary import MessageKind, Urgency
from storage.db import session_scope
from storage.models import Message, Person
from tests.cap_rules import cap_errors
from tests.unit.archive.test_archive import NOW, Lab, make_lab
from tests.unit.archive.test_coordinator_log import SINCE, TZ, UNTIL, Month, build_month
from tests.unit.commands.test_cli_campaign import _ran_campaign, world  # noqa: F401  (the fixture)
from tests.world import World

EVIL_NAME = '=HYPERLINK("http://evil","x")'
EVIL_TEXT = "@SUM(1) verdachte bestelwagen"
NS = {"c": cap.CAP_NS}


def _rename(engine: Engine, person_id: int, name: str) -> None:
    with session_scope(engine) as s:
        s.get_one(Person, person_id).name = name


# -- CSV -------------------------------------------------------------------------------------------------


async def test_campaign_report_csvs_escape_a_formula_in_a_name(
        world: World, tmp_path: Path) -> None:  # noqa: F811  (the imported fixture)
    campaign_id, (busy, confirms, absent) = await _ran_campaign(world, tmp_path)
    _rename(world.engine, busy, EVIL_NAME)
    _rename(world.engine, absent, "-1+1 Peeters")
    out = tmp_path / "rapport.csv"

    assert main(["campaign", "report", str(campaign_id), "--csv", str(out)]) == 0

    members = {int(r["person_id"]): r for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))}
    assert members[busy]["name"] == "'" + EVIL_NAME
    assert members[absent]["name"] == "'-1+1 Peeters"
    assert members[confirms]["name"] == "Lid 1"  # harmless names stay as they are
    # Masked numbers ("+32*****000") and figures are ours, not people's: untouched.
    assert members[busy]["number"] == "+32*****000" and members[busy]["attempts"] == "3"
    attempts_text = (tmp_path / "rapport-attempts.csv").read_text(encoding="utf-8")
    attempts = list(csv.DictReader(io.StringIO(attempts_text)))
    assert {r["name"] for r in attempts if int(r["person_id"]) == busy} == {"'" + EVIL_NAME}
    assert {r["name"] for r in attempts if int(r["person_id"]) == absent} == {"'-1+1 Peeters"}
    assert attempts[0]["number"] == "+32*****000" and attempts[0]["hangup_cause"] == "17"


@pytest.fixture
def month(tmp_path: Path) -> Month:
    return build_month(make_lab(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path))


def test_coordinator_log_csv_escapes_formulas_in_text_and_names(month: Month) -> None:
    lab = month.lab
    _rename(lab.engine, lab.coordinator_id, EVIL_NAME)
    with session_scope(lab.engine) as s:
        s.get_one(Message, month.update).text = EVIL_TEXT
    rejected_text = "\t=1+1"  # a transcript, led by a tab
    with session_scope(lab.engine) as s:
        s.get_one(Message, month.rejected).text = rejected_text

    log = collect(lab.engine, lab.archive, 12, SINCE, UNTIL, retry_policies(Settings()), UNTIL)
    alert, update, rejected = csv.DictReader(io.StringIO(to_csv(log, TZ)))

    assert alert["decided_by"] == "'" + EVIL_NAME
    assert update["text"] == "'" + EVIL_TEXT
    assert rejected["text"] == "'" + rejected_text
    assert rejected["decided_by"] == "'" + EVIL_NAME
    # The figures are untouched (none of them starts like a formula, and none is escaped).
    assert (alert["members"], alert["confirmation_rate"], alert["time_to_95_s"]) == ("20", "0.950", "1140")
    assert alert["text"] == "verdachte bestelwagen in de kerkstraat"
    assert update["decided_by"] == "zone_policy"


# -- CAP -------------------------------------------------------------------------------------------------

CONTROLS = "Let op\x07 \x1b[31mrood\x0b en\x7f\x01 weg\x1f"


def test_cap_export_strips_control_characters_from_the_text(tmp_path: Path) -> None:
    lab: Lab = make_lab(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path)
    mid = lab.message(NOW, typed=CONTROLS + "\tmet tab\nen nieuwe regel")
    out = lab.tmp / "export"
    out.mkdir()

    result = lab.archive.export(mid, f"person:{lab.admin_id}", out, TZ)

    raw = result.cap_file.read_bytes()
    assert cap_errors(raw) == []
    description = ET.fromstring(raw).findtext("c:info/c:description", namespaces=NS)
    assert description == "Let op [31mrood en weg\tmet tab\nen nieuwe regel"


def test_cap_strips_control_characters_from_every_text() -> None:
    ref = cap.CapRef("binfoon.pz5415", "BINFOON-5415-1", dt.datetime(2027, 1, 1, 12, tzinfo=dt.timezone.utc))
    msg = cap.CapMessage(ref, MessageKind.ALERT, Urgency.URGENT, "5415", "Gent\x1b", 12, "Kerk\x08wijk",
                         streets=("Molen\x00straat",), description="x\x0c\ufffe", addresses=("an\x07@bin12",))
    raw = cap.alert_xml(msg, dt.timezone.utc)
    assert cap_errors(raw) == []
    root = ET.fromstring(raw)
    assert root.findtext("c:addresses", namespaces=NS) == "an@bin12"
    assert root.findtext("c:info/c:senderName", namespaces=NS) == "Politiezone Gent (5415)"
    assert root.findtext("c:info/c:headline", namespaces=NS) == "Dringend politiebericht voor BIN 12 Kerkwijk"
    assert root.findtext("c:info/c:audience", namespaces=NS) == "Leden van BIN 12 Kerkwijk"
    assert root.findtext("c:info/c:description", namespaces=NS) == "x"
    assert root.findtext("c:info/c:area/c:areaDesc", namespaces=NS) == (
        "BIN 12 Kerkwijk (politiezone 5415 Gent): Molenstraat")
    assert not any(ch in raw.decode("utf-8") for ch in "\x00\x07\x08\x0c\x1b")
