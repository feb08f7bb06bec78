"""``binfoon campaign report|watch`` as a coordinator uses them, on a campaign the real dialer ran
(against the fake dialer of test_campaign_runner): the CSVs list every member and every attempt
(and each member's written copies), and the progress line is rendered from the counts by one pure
function."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ivr.cli import main
from ivr.commands import campaign as campaign_commands
from ivr.delivery.report import ATTEMPT_COLUMNS, render_progress
from ivr.telephony.dialer import Dialled
from storage.db import session_scope
from storage.models import AuditEntry, CallAttempt, Campaign, Person, PhoneNumber, RoleAssignment, TextCopy
from ivr.domain.vocabulary import Channel, CopyReason, CopyStatus, Language, PhoneRank, Role
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


async def test_watch_and_report_follow_the_written_copies(world: World, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17: the copies beside the calls, and a text-only member who is never called."""
    with session_scope(world.engine) as s:
        deaf = Person(name="Dove Lid", language=Language.NL, email="doof@example.be", channels="email")
        deaf.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164="+3295000009"))
        deaf.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=world.bin_id))
        s.add(deaf)
        s.flush()
        deaf_id = deaf.id
    campaign_id, (busy, confirms, absent) = await _ran_campaign(world, tmp_path)
    with session_scope(world.engine) as s:
        assert deaf_id not in {a.person_id for a in s.scalars(select(CallAttempt))}  # the dialer left them out
        s.add_all([
            TextCopy(campaign_id=campaign_id, person_id=deaf_id, channel=Channel.EMAIL, reason=CopyReason.TEXT_ONLY,
                     address="doof@example.be", status=CopyStatus.BOUNCED, detail="550 unknown user"),
            TextCopy(campaign_id=campaign_id, person_id=absent, channel=Channel.SMS, reason=CopyReason.LADDER,
                     address="+32470000002", status=CopyStatus.DELIVERED),
            TextCopy(campaign_id=campaign_id, person_id=busy, channel=Channel.SMS, reason=CopyReason.CHOICE,
                     address="+32470000001", status=CopyStatus.SENT)])

    assert main(["campaign", "watch", str(campaign_id), "--once"]) == 0
    line = capsys.readouterr().out
    assert line == (f"campaign {campaign_id} (done) [" + "#" * 40 + "] 4/4  confirmed 2  no answer 1  text only 1"
                    "  | SMS 1 sent, 1 delivered · e-mail 1 bounced · ladder 1\n")

    out = tmp_path / "copies.csv"
    assert main(["campaign", "report", str(campaign_id), "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 members confirmed, 6 calls" in printed
    assert "  copies: SMS 1 sent, 1 delivered · e-mail 1 bounced · ladder 1\n" in printed
    [deaf_line] = [p for p in printed.splitlines() if "Dove Lid" in p]
    assert "text_only" in deaf_line and "0 call(s)" in deaf_line and "e-mail bounced: 550 unknown user" in deaf_line
    [absent_line] = [p for p in printed.splitlines() if p.startswith("  Lid 2 ")]
    assert "no_answer" in absent_line and "SMS delivered (ladder)" in absent_line
    rows = {int(r["person_id"]): r for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))}
    assert {pid: (r["state"], r["channels"], r["sms"], r["sms_reason"], r["email"], r["email_reason"])
            for pid, r in rows.items()} == {
        busy: ("confirmed", "voice+sms", "sent", "choice", "", ""),  # their second number is a mobile
        confirms: ("confirmed", "voice", "", "", "", ""),
        absent: ("no_answer", "voice", "delivered", "ladder", "", ""),
        deaf_id: ("text_only", "email", "", "", "bounced", "text_only")}
    assert "doof@example.be" not in out.read_text(encoding="utf-8")

    assert main(["campaign", "report", str(campaign_id), "--json", "--csv", str(out), "--force"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["members"], data["text_only"], data["ladder"]) == (4, 1, 1)
    assert data["sms"] == {"queued": 0, "sending": 0, "sent": 1, "delivered": 1, "failed": 0, "bounced": 0,
                           "cancelled": 0}
    assert data["email"]["bounced"] == 1 and sum(data["email"].values()) == 1


async def test_watch_goes_on_until_the_ladders_sms_is_written(world: World, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The calls are over, but the member nobody reached has a mobile: their ladder SMS is due. With SMS
    on, ``watch`` shows it coming and ends once the copy desk has written it (not at the last call)."""
    _, absent = _add_members(world, 2, prefix="+3247")  # mobiles: the second never answers
    dialer = CausedDialer(world.desk, {"+3247000001": "no_answer"})  # type: ignore[arg-type]
    await _run_one_campaign(world, tmp_path, dialer)
    with session_scope(world.engine) as s:
        campaign = s.scalars(select(Campaign)).one()
        campaign_id = campaign.id
        campaign.message.bin.zone.ladder_after_s = 0.0  # due as the last call ended
    def no_wait(seconds: float) -> None:
        raise AssertionError("watch waited for a ladder SMS that cannot be sent")

    # Without an SMS gateway no ladder SMS can come: the watch ends with the calls.
    monkeypatch.setattr(campaign_commands.time, "sleep", no_wait)
    assert main(["campaign", "watch", str(campaign_id), "--interval", "0.2"]) == 0
    assert "| ladder 0 (+1 due by" in capsys.readouterr().out
    monkeypatch.setenv("BINFOON_SMS_SENDSMS_URL", "http://127.0.0.1:13013/cgi-bin/sendsms")
    monkeypatch.setattr(campaign_commands, "LADDER_GRACE", dt.timedelta(hours=1))  # only the copy ends the wait
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the copy desk writes the ladder's SMS
            with session_scope(world.engine) as s:
                s.add(TextCopy(campaign_id=campaign_id, person_id=absent, channel=Channel.SMS,
                               reason=CopyReason.LADDER, address="+3247000001", status=CopyStatus.QUEUED))
        assert len(waits) < 50, "watch did not end once the ladder's SMS was written"

    monkeypatch.setattr(campaign_commands.time, "sleep", sleep)
    assert main(["campaign", "watch", str(campaign_id), "--interval", "0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(waits) == 2 and len(lines) == 3, lines
    with session_scope(world.engine) as s:
        last_call_ended = max(a.ended_at for a in s.scalars(select(CallAttempt)
                                                             .where(CallAttempt.person_id == absent)))
    assert lines[0].endswith(f"confirmed 1  no answer 1  | ladder 0 (+1 due by {last_call_ended:%H:%M:%S} UTC)")
    assert lines[1] == lines[0]
    assert lines[2].endswith("confirmed 1  no answer 1  | SMS 1 queued · ladder 1")


async def test_watch_says_a_preventive_ladder_sms_waits_for_the_morning_and_ends(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A preventive message's ladder SMS due in the quiet hours (21:00-08:00) is held until 08:00, as its
    calls would be: ``watch`` does not wait the night for it, it says until when and ends."""
    import zoneinfo

    _, absent = _add_members(world, 2, prefix="+3247")
    dialer = CausedDialer(world.desk, {"+3247000001": "no_answer"})  # type: ignore[arg-type]
    await _run_one_campaign(world, tmp_path, dialer)
    brussels = zoneinfo.ZoneInfo("Europe/Brussels")
    with session_scope(world.engine) as s:
        campaign = s.scalars(select(Campaign)).one()
        campaign_id = campaign.id
        ended = max(a.ended_at for a in s.scalars(select(CallAttempt).where(CallAttempt.person_id == absent)))
        ended = ended if ended.tzinfo else ended.replace(tzinfo=dt.timezone.utc)
        local = ended.astimezone(brussels)
        eleven = local.replace(hour=23, minute=0, second=0, microsecond=0)
        eleven += dt.timedelta(days=1) if eleven <= local else dt.timedelta(0)
        campaign.message.urgency = campaign.message.urgency.__class__("preventive")
        campaign.message.bin.zone.ladder_after_s = (eleven - local).total_seconds()  # due at 23:00 tonight
    morning = (eleven + dt.timedelta(days=1)).replace(hour=8).astimezone(dt.timezone.utc)

    def no_wait(seconds: float) -> None:
        raise AssertionError("watch waited the night for a ladder SMS held for the quiet hours")

    monkeypatch.setenv("BINFOON_SMS_SENDSMS_URL", "http://127.0.0.1:13013/cgi-bin/sendsms")
    monkeypatch.setattr(campaign_commands.time, "sleep", no_wait)
    assert main(["campaign", "watch", str(campaign_id), "--interval", "0.2"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    due = eleven.astimezone(dt.timezone.utc)
    assert line.endswith(f"| ladder 0 (+1 due by {due:%H:%M:%S} UTC)  | ladder SMS deferred until "
                         f"{morning:%Y-%m-%d %H:%M} UTC (quiet hours)"), line
