"""``binfoon archive search|list|play|purge`` as an admin would type them, bad input included."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.cli import main
from storage.db import session_scope
from storage.models import Recording, utcnow
from ivr.domain.vocabulary import MessageStatus, Urgency
from tests.unit.archive.test_archive import NOW, Lab, make_lab
from storage.recordings import open_recording


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    """The archive tests' world, in the database and recording store the command line uses."""
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    return make_lab(f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}", tmp_path, tmp_path / "var" / "recordings")


def test_search(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    found = lab.message(NOW, transcript="verdachte bestelwagen in de kerkstraat")
    lab.message(NOW, transcript="gestolen fiets")
    assert main(["archive", "search", "bestelwagen"]) == 0
    out = capsys.readouterr().out
    # 12:00 UTC is 13:00 in Brussels in winter.
    assert out.startswith(f"{found:>6}  2027-01-01 13:00  BIN 12 (Kerkwijk)  zone 5415  urgent     done")
    assert "[bestelwagen]" in out and "fiets" not in out
    assert main(["archive", "search", "inbraak"]) == 0
    assert capsys.readouterr().out == "no message holds all these words\n"
    assert [a.actor.startswith("cli") for a in lab.audits("archive.searched")] == [True, True]


def test_search_without_a_real_word(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["archive", "search", "--", "...", "-"]) == 1
    assert capsys.readouterr().err == "binfoon: give at least one word to search for\n"


def test_list_with_filters(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    december = lab.message(dt.datetime(2026, 12, 24, 22, 30, tzinfo=dt.timezone.utc),
                           urgency=Urgency.PREVENTIVE)
    new_year = lab.message(NOW, status=MessageStatus.REJECTED)
    assert main(["archive", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines] == [new_year, december]
    # 22:30 UTC on the 24th is 23:30 local: still the 24th in Brussels.
    assert main(["archive", "list", "--from", "2026-12-24", "--to", "2026-12-24"]) == 0
    assert [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()] == [december]
    assert main(["archive", "list", "--from", "2026-12-24T23:31"]) == 0
    assert [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()] == [new_year]
    assert main(["archive", "list", "--bin", "12", "--zone", "5415", "--urgency", "preventive"]) == 0
    assert [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()] == [december]
    assert main(["archive", "list", "--status", "rejected"]) == 0
    assert [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()] == [new_year]
    assert main(["archive", "list", "--zone", "9999"]) == 0
    assert capsys.readouterr().out == "no message matches\n"


@pytest.mark.parametrize(("args", "error"), [
    (["--from", "2026-13-45"], "'2026-13-45' is not a date (2026-11-23) or a time (2026-11-23T14:00)"),
    (["--to", "yesterday"], "'yesterday' is not a date"),
    (["--from", "2026-12-24", "--to", "2026-12-23"], "--to must be after --from"),
])
def test_list_bad_dates(lab: Lab, capsys: pytest.CaptureFixture[str], args: list[str], error: str) -> None:
    assert main(["archive", "list", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("binfoon: ") and error in err and err.count("\n") == 1


def test_list_unknown_status_is_an_argument_error(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["archive", "list", "--status", "lost"])
    assert exc.value.code == 2 and "invalid choice: 'lost'" in capsys.readouterr().err


def test_play_to_a_file(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mid = lab.message(NOW)
    out = tmp_path / "copy.wav"
    assert main(["archive", "play", str(mid), "--as", f"person:{lab.admin_id}", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"message {mid}: copy written to {out}\n"
    with session_scope(lab.engine) as s:
        recording = s.scalars(select(Recording)).one()
        assert out.read_bytes() == open_recording(Path(recording.path), recording.sha256).read_bytes()
    played = lab.audits("recording.played")
    assert len(played) == 1 and played[0].actor == f"person:{lab.admin_id}"
    assert played[0].details["via"].startswith("cli")
    # Asking again for the same file refuses to overwrite it, before anything is audited.
    assert main(["archive", "play", str(mid), "--as", f"person:{lab.admin_id}", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "exists already" in err and "--force" in err
    assert len(lab.audits("recording.played")) == 1


def test_play_refused_without_the_role(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mid = lab.message(NOW)
    out = tmp_path / "copy.wav"
    assert main(["archive", "play", str(mid), "--as", str(lab.coordinator_id), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"binfoon: {lab.coordinator_id} may not replay message {mid}: "
                                       "only admins and the police of the message's zone may replay it\n")
    assert not out.exists()
    refused = lab.audits("recording.play_refused")
    assert [(r.actor, r.subject) for r in refused] == [(f"person:{lab.coordinator_id}", f"message:{mid}")]


@pytest.mark.parametrize(("args", "error"), [
    (["42", "--as", "person:1", "--out", "x.wav"], "binfoon: no message 42\n"),
    (["1", "--as", "person:1", "--take", "3", "--out", "x.wav"],
     "binfoon: message 1 has no take 3 (takes: 1)\n"),
    (["1", "--as", "person:1", "--out", "/nonexistent/dir/x.wav"],
     "binfoon: /nonexistent/dir is not a folder\n"),
])
def test_play_bad_input(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str], args: list[str], error: str) -> None:
    lab.message(NOW)
    monkeypatch.chdir(tmp_path)
    assert main(["archive", "play", *args]) == 1
    assert capsys.readouterr().err == error


def test_play_needs_as(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["archive", "play", "1", "--out", "x.wav"])
    assert exc.value.code == 2 and "--as" in capsys.readouterr().err


def test_play_to_the_speakers(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    mid = lab.message(NOW)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    heard = tmp_path / "heard.wav"
    monkeypatch.setenv("PATH", str(bin_dir))
    assert main(["archive", "play", str(mid), "--as", str(lab.admin_id)]) == 1
    assert "no audio player found" in capsys.readouterr().err
    assert lab.audits("recording.played") == []
    fake = bin_dir / "aplay"  # called as `aplay -q FILE`
    fake.write_text(f'#!/bin/sh\nexec /bin/cp "$2" {heard}\n')
    fake.chmod(0o755)
    assert main(["archive", "play", str(mid), "--as", str(lab.admin_id)]) == 0
    with session_scope(lab.engine) as s:
        recording = s.scalars(select(Recording)).one()
        # The player gets the verified plaintext copy (named by its SHA-256): the stored file is sealed.
        assert capsys.readouterr().out == f"message {mid}: played {recording.sha256}.wav\n"
        assert heard.read_bytes() == open_recording(Path(recording.path), recording.sha256).read_bytes()
    assert [p.details["to"] for p in lab.audits("recording.played")] == ["speakers"]


def test_purge(lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    now = utcnow()
    old = lab.message(now - dt.timedelta(days=400), transcript="oud")
    young = lab.message(now - dt.timedelta(days=1), transcript="jong")
    assert main(["archive", "purge", "--days", "30", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would purge 1 recordings, 1 transcripts and 0 typed texts older than 30 days")
    assert f"message {old}: recording" in out and f"message {young}" not in out
    assert lab.audits("recording.purged") == []
    assert main(["archive", "purge", "--days", "30"]) == 0
    assert capsys.readouterr().out.startswith("purged 1 recordings, 1 transcripts")
    assert [a.subject for a in lab.audits("recording.purged")] == [f"message:{old}"]
    assert [a.subject for a in lab.audits("transcript.purged")] == [f"message:{old}"]
    with session_scope(lab.engine) as s:
        assert list(s.scalars(select(Recording.message_id))) == [young]
    # The default comes from the retention_days setting; 0 keeps everything.
    monkeypatch.setenv("BINFOON_RETENTION_DAYS", "0")
    assert main(["archive", "purge"]) == 0
    assert capsys.readouterr().out == "retention is 0 days: everything is kept, nothing purged\n"


def test_purge_bad_days(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["archive", "purge", "--days", "-5"]) == 1
    assert capsys.readouterr().err == "binfoon: --days must be 0 (keep for ever) or more\n"
    with pytest.raises(SystemExit):
        main(["archive", "purge", "--days", "many"])
    assert "invalid int value" in capsys.readouterr().err
    assert os.path.exists(lab.tmp / "var" / "binfoon.db")


def test_seal_seals_old_transcripts_too(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """``binfoon archive seal`` by hand does what the service does at start: recordings and transcripts."""
    from storage.models import Transcript
    from storage.sealed import is_sealed_text

    found = lab.message(NOW, transcript="verdachte bestelwagen in de kerkstraat")
    with session_scope(lab.engine) as s:  # as a release before sealing left it: plaintext in the row
        [transcript] = s.scalars(select(Transcript)).all()
        s.query(Transcript).filter_by(id=transcript.id).update(
            {"text": "verdachte bestelwagen in de kerkstraat", "words": []})
    assert main(["archive", "seal"]) == 0
    assert "sealed 1 transcript(s)" in capsys.readouterr().out
    with session_scope(lab.engine) as s:
        assert is_sealed_text(s.scalars(select(Transcript.text)).one())
    assert main(["archive", "search", "bestelwagen"]) == 0
    assert capsys.readouterr().out.startswith(f"{found:>6}")
