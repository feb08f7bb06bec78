"""The coordinator's log (``ivr.archive.coordinator_log``, ``binfoon report``): scripted campaigns with known figures."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import pytest

from ivr.delivery.policy import retry_policies
from ivr.cli import main
from ivr.config import Settings
from ivr.archive.coordinator_log import (
    CSV_COLUMNS, UnknownBin, collect, duration_nl, needed_confirmations, time_to_share, to_csv, to_html,
)
from storage.db import session_scope
from storage.models import (
    CallAttempt, Campaign, Message, Person, PhoneNumber, ReviewDecision, RoleAssignment, Confirmation,
)
from ivr.domain.vocabulary import (
    AttemptOutcome, AttemptStatus, CampaignStatus, Decision, MessageKind, MessageStatus, PhoneRank, Role,
    Urgency,
)
from tests.unit.archive.test_archive import Lab, make_lab
from tests.world import OTHER_ZONE_BIN

TZ = zoneinfo.ZoneInfo("Europe/Brussels")
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
SINCE = dt.datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 2026-11-01 00:00 in Brussels
UNTIL = dt.datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 2026-12-01 00:00 in Brussels
MINUTE = dt.timedelta(minutes=1)


# -- pure figures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("members", "needed"), [(20, 19), (21, 20), (10, 10), (1, 1), (100, 95), (0, 0)])
def test_needed_confirmations_round_up(members: int, needed: int) -> None:
    assert needed_confirmations(members) == needed


def test_time_to_95_percent() -> None:
    confirmations = [T0 + (i + 1) * MINUTE for i in range(19)]
    assert time_to_share(T0, confirmations, 20) == 19 * MINUTE
    # Order and missing values do not matter; the 19th confirmation in time is the one.
    assert time_to_share(T0, [None, *reversed(confirmations)], 20) == 19 * MINUTE
    assert time_to_share(T0, confirmations[:18], 20) is None  # 18 of 20 = 90 %: never reached
    assert time_to_share(T0, confirmations, 21) is None       # 19 of 21 < 95 %
    assert time_to_share(T0, confirmations[:9], 10) is None    # 95 % of 10 is all 10
    assert time_to_share(T0, confirmations[:10], 10) == 10 * MINUTE
    assert time_to_share(T0, [T0 + 7 * MINUTE], 1) == 7 * MINUTE
    assert time_to_share(None, confirmations, 20) is None
    assert time_to_share(T0, [], 0) is None
    assert time_to_share(T0, [T0 - MINUTE], 1) == dt.timedelta(0)  # a call-back before the start


@pytest.mark.parametrize(("value", "text"), [(None, "niet bereikt"), (dt.timedelta(seconds=45), "45 s"),
                                             (19 * MINUTE, "19 min 00 s"), (65 * MINUTE, "1 u 05 min")])
def test_durations_in_dutch(value: dt.timedelta | None, text: str) -> None:
    assert duration_nl(value) == text


# -- a scripted month ----------------------------------------------------------------------------------


@dataclass
class Month:
    """November 2026 of BIN 12: an alert, its update, a rejected message; plus what must stay out."""

    lab: Lab
    members: list[int]
    alert: int
    update: int
    rejected: int
    draft: int
    december: int
    elsewhere: int


def add_members(lab: Lab, count: int) -> list[int]:
    with session_scope(lab.engine) as s:
        people = []
        for i in range(count):
            person = Person(name=f"Lid {i + 1}")
            person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=f"+3291000{i:03d}"))
            person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=lab.world.bin_id))
            people.append(person)
        s.add_all(people)
        s.flush()
        return [p.id for p in people]


def decide(lab: Lab, message_id: int, decision: Decision, at: dt.datetime, person_id: int | None,
           via: str = "phone") -> None:
    with session_scope(lab.engine) as s:
        s.add(ReviewDecision(message_id=message_id, person_id=person_id, decision=decision, via=via,
                             decided_at=at))


def scripted_campaign(lab: Lab, message_id: int, start: dt.datetime, members: list[int],
                      confirm_after: dict[int, dt.timedelta]) -> int:
    """Every member called once at ``start``: those in ``confirm_after`` confirm then, the rest's answering
    machine takes the message."""
    with session_scope(lab.engine) as s:
        campaign = Campaign(message_id=message_id, status=CampaignStatus.DONE, created_at=start, started_at=start,
                            finished_at=start + dt.timedelta(hours=1))
        s.add(campaign)
        s.flush()
        for n, person_id in enumerate(members):
            after = confirm_after.get(person_id)
            ended = start + (after or dt.timedelta(seconds=40 + n))
            attempt = CallAttempt(campaign_id=campaign.id, person_id=person_id, e164=f"+3291000{n:03d}",
                                  attempt_no=1, status=AttemptStatus.ENDED, dialled_at=start, ended_at=ended,
                                  outcome=AttemptOutcome.CONFIRMED if after else AttemptOutcome.VOICEMAIL)
            s.add(attempt)
            s.flush()
            if after is not None:
                s.add(Confirmation(attempt_id=attempt.id, campaign_id=campaign.id, person_id=person_id,
                                   confirmed_at=start + after))
        return campaign.id


def build_month(lab: Lab) -> Month:
    members = add_members(lab, 20)
    coordinator = lab.coordinator_id
    # The alert: approved at 09:02 by the first coordinator, calls from 09:03; member k (k = 1..19)
    # confirms after k minutes, the 20th member's answering machine takes it: 95 % at 19 minutes.
    alert = lab.message(T0, transcript="verdachte bestelwagen in de kerkstraat")
    decide(lab, alert, Decision.FORWARD_NOW, T0 + 2 * MINUTE, coordinator)
    scripted_campaign(lab, alert, T0 + 3 * MINUTE, members,
                      {pid: (k + 1) * MINUTE for k, pid in enumerate(members[:19])})
    # The update (typed, preventive), forwarded by the zone's policy: only half confirm.
    update = lab.message(T0 + dt.timedelta(hours=3), typed="De bestelwagen is <gevonden> & de dader gevat.",
                         urgency=Urgency.PREVENTIVE)
    with session_scope(lab.engine) as s:
        message = s.get_one(Message, update)
        message.kind, message.follow_up_of_id = MessageKind.UPDATE, alert
    decide(lab, update, Decision.FORWARD_NOW, T0 + dt.timedelta(hours=3, minutes=1), None, via="escalation")
    scripted_campaign(lab, update, T0 + dt.timedelta(hours=3, minutes=5), members,
                      {pid: 2 * MINUTE for pid in members[:10]})
    rejected = lab.message(T0 + dt.timedelta(days=5), transcript="test test", status=MessageStatus.REJECTED)
    decide(lab, rejected, Decision.REJECT, T0 + dt.timedelta(days=5, minutes=4), coordinator)
    draft = lab.message(T0 + dt.timedelta(days=6), status=MessageStatus.DRAFT)
    december = lab.message(UNTIL + MINUTE, transcript="te laat")
    elsewhere = lab.message(T0, bin_number=OTHER_ZONE_BIN, transcript="andere buurt")
    return Month(lab, members, alert, update, rejected, draft, december, elsewhere)


@pytest.fixture
def month(tmp_path: Path) -> Month:
    return build_month(make_lab(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path))


def test_collect_gives_the_known_figures(db_url: str, tmp_path: Path) -> None:
    month = build_month(make_lab(db_url, tmp_path))
    lab = month.lab
    log = collect(lab.engine, lab.archive, 12, SINCE, UNTIL, retry_policies(Settings()), UNTIL)
    assert (log.bin_number, log.bin_name, log.zone_code) == (12, "Kerkwijk", "5415")
    assert [e.message_id for e in log.entries] == [month.alert, month.update, month.rejected]
    alert, update, rejected = log.entries

    assert (alert.urgency, alert.kind, alert.text, alert.text_source) == (
        Urgency.URGENT, MessageKind.ALERT, "verdachte bestelwagen in de kerkstraat", "transcript")
    assert (alert.decision, alert.decided_by, alert.decided_at) == (
        Decision.FORWARD_NOW, "Coördinator 1", T0 + 2 * MINUTE)
    assert (alert.members, alert.delivered, alert.confirmed) == (20, 20, 19)
    assert (alert.delivery_rate, alert.confirmation_rate) == (1.0, 0.95)
    assert alert.campaign_start == T0 + 3 * MINUTE
    assert alert.time_to_target == 19 * MINUTE
    assert alert.follow_ups == ((month.update, MessageKind.UPDATE),)

    assert (update.kind, update.follow_up_of, update.text_source) == (MessageKind.UPDATE, month.alert, "typed")
    assert (update.decision, update.decided_by, update.decided_via) == (Decision.FORWARD_NOW, None, "escalation")
    assert (update.members, update.delivered, update.confirmed) == (20, 20, 10)
    assert update.time_to_target is None

    assert (rejected.decision, rejected.status, rejected.campaign_id) == (Decision.REJECT, MessageStatus.REJECTED,
                                                                          None)
    assert (rejected.members, rejected.delivery_rate, rejected.time_to_target) == (0, None, None)


def test_unknown_bin_and_empty_period(month: Month) -> None:
    lab = month.lab
    with pytest.raises(UnknownBin, match="no BIN number 77"):
        collect(lab.engine, lab.archive, 77, SINCE, UNTIL, retry_policies(Settings()), UNTIL)
    with pytest.raises(ValueError, match="after its start"):
        collect(lab.engine, lab.archive, 12, UNTIL, SINCE, retry_policies(Settings()), UNTIL)
    quiet = collect(lab.engine, lab.archive, 12, UNTIL + dt.timedelta(days=30), UNTIL + dt.timedelta(days=60),
                    retry_policies(Settings()), UNTIL)
    assert quiet.entries == []
    assert "Geen politieberichten in deze periode." in to_html(quiet, TZ)


def test_csv_has_one_row_per_message(month: Month) -> None:
    lab = month.lab
    log = collect(lab.engine, lab.archive, 12, SINCE, UNTIL, retry_policies(Settings()), UNTIL)
    rows = list(csv.DictReader(io.StringIO(to_csv(log, TZ))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["message_id"]) for r in rows] == [month.alert, month.update, month.rejected]
    alert, update, rejected = rows
    assert alert["created_at"] == "2026-11-10T10:00:00+01:00"
    assert (alert["urgency"], alert["kind"], alert["decision"], alert["decided_by"]) == (
        "urgent", "alert", "forward_now", "Coördinator 1")
    assert alert["decided_at"] == "2026-11-10T10:02:00+01:00"
    assert (alert["members"], alert["delivered"], alert["confirmed"]) == ("20", "20", "19")
    assert (alert["delivery_rate"], alert["confirmation_rate"], alert["time_to_95_s"]) == ("1.000", "0.950", "1140")
    assert alert["follow_ups"] == str(month.update)
    assert (update["decided_by"], update["follow_up_of"], update["time_to_95_s"]) == ("zone_policy",
                                                                                     str(month.alert), "")
    assert update["text"] == "De bestelwagen is <gevonden> & de dader gevat."
    assert (rejected["campaign_id"], rejected["members"], rejected["delivery_rate"]) == ("", "0", "")


def test_html_is_self_contained_dutch_and_escaped(month: Month) -> None:
    lab = month.lab
    page = to_html(collect(lab.engine, lab.archive, 12, SINCE, UNTIL, retry_policies(Settings()), UNTIL), TZ)
    assert "<h1>Logboek van de coördinator – BIN 12 Kerkwijk</h1>" in page
    for heading in ("Urgentie", "Beslissing coördinator", "Bereikt", "Bevestigd", "Tijd tot 95 % bevestigd",
                    "Opvolging"):
        assert f"<th>{heading}</th>" in page
    assert "periode 01-11-2026 00:00 tot en met\n30-11-2026 23:59" in page
    assert "19 van 20 (95 %)" in page and "19 min 00 s" in page
    assert "10 van 20 (50 %)" in page and "niet bereikt" in page
    assert "meteen doorgestuurd door Coördinator 1, 10-11-2026 10:02" in page
    assert "beleid van de zone" in page and "geweigerd door Coördinator 1" in page
    assert f"opvolging #{month.update}" in page and f"opvolging van #{month.alert}" in page
    assert "&lt;gevonden&gt; &amp; de dader" in page and "<gevonden>" not in page
    # Nothing fetched from elsewhere: no scripts, links, images or URLs.
    for outside in ("<script", "<link", "<img", "src=", "http"):
        assert outside not in page
    assert "te laat" not in page and "andere buurt" not in page


# -- the command line ------------------------------------------------------------------------------------


@pytest.fixture
def cli_month(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Month:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    monkeypatch.chdir(tmp_path)
    return build_month(make_lab(f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}", tmp_path,
                                tmp_path / "var" / "recordings"))


def test_cli_writes_html_and_csv_and_audits(cli_month: Month, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    html_file, csv_file = tmp_path / "log.html", tmp_path / "log.csv"
    assert main(["report", "12", "--from", "2026-11-01", "--to", "2026-11-30", "--html", str(html_file),
                 "--csv", str(csv_file)]) == 0
    assert capsys.readouterr().out == (f"BIN 12: 3 message(s) in the log, written to {html_file} and "
                                       f"{csv_file}\n")
    assert "19 min 00 s" in html_file.read_text(encoding="utf-8")
    assert len(csv_file.read_text(encoding="utf-8").splitlines()) == 4
    assert html_file.stat().st_mode & 0o077 == 0
    created = cli_month.lab.audits("report.created")
    assert len(created) == 1 and created[0].subject == "bin:12" and created[0].actor.startswith("cli")
    assert created[0].details["messages"] == [cli_month.alert, cli_month.update, cli_month.rejected]
    assert created[0].details["outputs"] == ["html", "csv"]
    assert created[0].details["since"] == "2026-10-31T23:00:00+00:00"


def test_cli_prints_a_summary_without_files(cli_month: Month, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "12", "--from", "2026-11-10", "--to", "2026-11-10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "BIN 12 (Kerkwijk): 2 message(s)"
    assert out[1].split()[0] == str(cli_month.alert) and out[1].endswith("confirmed 19/20  95%: 19 min 00 s")
    assert out[2].endswith("confirmed 10/20  95%: niet bereikt")


@pytest.mark.parametrize(("args", "error"), [
    (["77", "--from", "2026-11-01", "--to", "2026-11-30"], "binfoon: no BIN number 77 (see `binfoon bin list`)\n"),
    (["12", "--from", "2026-11-30", "--to", "2026-11-01"], "binfoon: --to must be after --from\n"),
    (["12", "--from", "2026-11-31", "--to", "2026-12-01"],
     "binfoon: '2026-11-31' is not a date (2026-11-23) or a time (2026-11-23T14:00)\n"),
    (["12", "--from", "2026-11-01", "--to", "gisteren"],
     "binfoon: 'gisteren' is not a date (2026-11-23) or a time (2026-11-23T14:00)\n"),
    (["12", "--from", "2026-11-01", "--to", "2026-11-30", "--csv", "nowhere/log.csv"],
     "binfoon: --csv: nowhere is not a folder\n"),
    (["12", "--from", "2026-11-01", "--to", "2026-11-30", "--html", "."], "binfoon: --html . is a folder; "
                                                                            "give a file name\n"),
])
def test_cli_bad_input_is_clear_and_writes_nothing(cli_month: Month, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], args: list[str],
                                                   error: str) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    html_file = tmp_path / "log.html"
    assert main(["report", *args, "--html", str(html_file)] if "--html" not in args else ["report", *args]) == 1
    assert capsys.readouterr().err == error
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert cli_month.lab.audits("report.created") == []


def test_cli_needs_the_period(cli_month: Month, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", "12", "--from", "2026-11-01"])
    assert exc.value.code == 2 and "--to" in capsys.readouterr().err


def test_members_reached_in_writing_count_as_delivered(tmp_path: Path) -> None:
    """Issue 17: a member who did not hear the message but got it in writing (a copy sent or delivered:
    text only, or the ladder's SMS) counts as delivered; a copy that failed does not."""
    from ivr.domain.vocabulary import Channel, CopyReason, CopyStatus
    from storage.models import TextCopy

    lab = make_lab(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path)
    called, deaf, bounced, ladder = add_members(lab, 4)
    alert = lab.message(T0, transcript="inbraak")
    decide(lab, alert, Decision.FORWARD_NOW, T0 + MINUTE, lab.coordinator_id)
    with session_scope(lab.engine) as s:
        s.get_one(Person, deaf).channels = s.get_one(Person, bounced).channels = "email"
        s.get_one(Person, deaf).email = s.get_one(Person, bounced).email = "lid@voorbeeld.be"
    campaign_id = scripted_campaign(lab, alert, T0 + 2 * MINUTE, [called], {called: MINUTE})
    with session_scope(lab.engine) as s:
        s.add(CallAttempt(campaign_id=campaign_id, person_id=ladder, e164="+3291000003", attempt_no=1,
                          status=AttemptStatus.ENDED, dialled_at=T0 + 2 * MINUTE, ended_at=T0 + 3 * MINUTE,
                          outcome=AttemptOutcome.NO_ANSWER))
        s.add_all([TextCopy(campaign_id=campaign_id, person_id=pid, channel=channel, reason=reason, address="x",
                            status=status, created_at=T0)
                   for pid, channel, reason, status in (
                       (deaf, Channel.EMAIL, CopyReason.TEXT_ONLY, CopyStatus.SENT),
                       (bounced, Channel.EMAIL, CopyReason.TEXT_ONLY, CopyStatus.BOUNCED),
                       (ladder, Channel.SMS, CopyReason.LADDER, CopyStatus.DELIVERED))])
    [entry] = collect(lab.engine, lab.archive, 12, SINCE, UNTIL, retry_policies(Settings()), UNTIL, Settings()).entries
    assert (entry.members, entry.delivered, entry.confirmed) == (4, 3, 1)
