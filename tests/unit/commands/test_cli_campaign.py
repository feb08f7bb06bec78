"""``binfoon campaign report|watch`` as a coordinator uses them, on a campaign the real dialer ran
(against the fake dialer of test_campaign_runner): the CSVs list every member and every attempt,
and the progress line is rendered from the counts by one pure function."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ivr.cli import main
from ivr.delivery.report import ATTEMPT_COLUMNS, render_progress
from ivr.telephony.dialer import Dialled
from storage.db import session_scope
from storage.models import AuditEntry, Campaign, PhoneNumber
from ivr.domain.vocabulary import PhoneRank
from tests.unit.delivery.test_campaign_runner import FakeDialer, _add_members, _run_one_campaign
from tests.world import World, build_world

#: The Q.850 causes the fake network gives with each failure, as Asterisk would.
CAUSES = {"busy": 17, "no_answer": 19}


class CausedDialer(FakeDialer):
    """The fake dialer, with the hang-up cause a real network reports for each failure."""

    async def dial(self, call_id: str, number: str, **options: Any) -> Dialled:
        # The options (context, variables, ring timeout, extension) go to the fake dialer as given.
        dialled = await super().dial(call_id, number, **options)
        return Dialled(dialled.outcome, CAUSES.get(dialled.outcome.value), dialled.lost)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setenv("BINFOON_DATABASE_URL", url)
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    return build_world(url, tmp_path / "store")


async def _ran_campaign(world: World, tmp_path: Path) -> tuple[int, list[int]]:
    """Three households: busy twice then the second number confirms; confirms; never answers."""
    busy, confirms, absent = _add_members(world, 3, prefix="+3295")
    with session_scope(world.engine) as s:
        s.add(PhoneNumber(person_id=busy, rank=PhoneRank.SECONDARY, e164="+32470000001"))
    dialer = CausedDialer(world.desk, {"+3295000000": "busy", "+3295000002": "no_answer"})  # type: ignore[arg-type]
    await _run_one_campaign(world, tmp_path, dialer)
    with session_scope(world.engine) as s:
        campaign_id = s.scalars(select(Campaign.id)).one()
    return campaign_id, [busy, confirms, absent]


async def test_report_csv_lists_every_member_and_every_attempt(world: World, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    campaign_id, (busy, confirms, absent) = await _ran_campaign(world, tmp_path)
    out = tmp_path / "rapport.csv"

    assert main(["campaign", "report", str(campaign_id), "--csv", str(out)]) == 0

    printed = capsys.readouterr().out
    assert "2 of 3 members confirmed, 6 calls" in printed
    assert "rapport-attempts.csv (every attempt)" in printed
    members = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert {(int(r["person_id"]), r["state"], int(r["attempts"])) for r in members} == {
        (busy, "confirmed", 3), (confirms, "confirmed", 1), (absent, "no_answer", 2)}
    attempts_file = tmp_path / "rapport-attempts.csv"
    text = attempts_file.read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ATTEMPT_COLUMNS
    assert [(int(r["person_id"]), int(r["attempt_no"]), r["rank"], r["number"], r["outcome"], r["dial_outcome"],
             r["hangup_cause"]) for r in rows] == [
        (busy, 1, "primary", "+32*****000", "busy", "busy", "17"),
        (busy, 2, "primary", "+32*****000", "busy", "busy", "17"),
        (busy, 3, "secondary", "+32******001", "confirmed", "answered", ""),
        (confirms, 1, "primary", "+32*****001", "confirmed", "answered", ""),
        (absent, 1, "primary", "+32*****002", "no_answer", "no_answer", "19"),
        (absent, 2, "primary", "+32*****002", "no_answer", "no_answer", "19"),
    ]
    # Every attempt has its start and end; only the answered ones an answer time.
    assert all(r["started"] and r["ended"] and r["started"] <= r["ended"] for r in rows)
    assert [bool(r["answered"]) for r in rows] == [False, False, True, True, False, False]
    # No full number leaves in an export (C2), and the export itself is audited (C3).
    assert "+3295000000" not in text and "+32470000001" not in text
    with session_scope(world.engine) as s:
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.action == "campaign.export")).all()
        assert (entry.details["rows"], entry.details["attempt_rows"]) == (3, 6)


async def test_watch_once_prints_the_rendered_progress(world: World, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    campaign_id, _ = await _ran_campaign(world, tmp_path)

    assert main(["campaign", "watch", str(campaign_id), "--once"]) == 0

    expected = render_progress(campaign_id, "done", {"confirmed": 2, "no_answer": 1}, 3)
    assert capsys.readouterr().out == expected + "\n"
    assert expected == (f"campaign {campaign_id} (done) [" + "#" * 40 + "] 3/3  confirmed 2  no answer 1")


def test_progress_line_from_counts() -> None:
    counts = {"confirmed": 5, "answering_machine": 1, "answered": 2, "ringing": 3, "waiting_retry": 4, "queued": 6,
              "answered_no_key": 1, "no_answer": 0, "busy": 2, "failed": 1}
    line = render_progress(9, "running", counts, 25, width=20)
    # Over: confirmed, machine, no key, busy, failed = 10 of 25 -> 8 of 20 cells.
    assert line == ("campaign 9 (running) [########............] 10/25  confirmed 5  answering machine 1  "
                    "answered 2  dialing/ringing 3  waiting for retry 4  queued 6  answered, no key 1  busy 2  "
                    "failed 1")
    # Nothing yet, nobody to call, and every state missing from the counts.
    assert render_progress(1, "scheduled", {"queued": 4}, 4, width=4) == "campaign 1 (scheduled) [....] 0/4  queued 4"
    assert render_progress(2, "done", {}, 0, width=4) == "campaign 2 (done) [####] 0/0"
