"""``archive play --out`` and ``archive export --out`` replace a file only with ``--force``; a refused
``--force`` (no access) leaves the old files as they were (issue 16 item 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ivr.cli import main
from tests.unit.archive.test_archive import NOW, Lab, make_lab


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    return make_lab(f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}", tmp_path, tmp_path / "var" / "recordings")


def test_play_replaces_a_file_only_with_force(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mid = lab.message(NOW)
    out = tmp_path / "copy.wav"
    out.write_bytes(b"older copy")
    assert main(["archive", "play", str(mid), "--as", f"person:{lab.admin_id}", "--out", str(out)]) == 1
    assert "exists already" in capsys.readouterr().err and out.read_bytes() == b"older copy"
    # Refused for who asks: the old file is put back untouched, and nothing is left beside it.
    assert main(["archive", "play", str(mid), "--as", str(lab.coordinator_id), "--out", str(out), "--force"]) == 1
    assert "may not replay" in capsys.readouterr().err
    assert out.read_bytes() == b"older copy" and sorted(p.name for p in tmp_path.iterdir() if "copy" in p.name) == \
        ["copy.wav"]
    assert main(["archive", "play", str(mid), "--as", f"person:{lab.admin_id}", "--out", str(out), "--force"]) == 0
    assert out.read_bytes()[:4] == b"RIFF"
    assert not (tmp_path / ".copy.wav.replaced").exists()


def test_export_replaces_its_files_only_with_force(lab: Lab, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    mid = lab.message(NOW)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{mid}.cap.xml").write_text("an older export")
    assert main(["archive", "export", str(mid), "--as", f"person:{lab.admin_id}", "--out", str(out)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [f"{mid}.cap.xml"]
    assert main(["archive", "export", str(mid), "--as", f"person:{lab.admin_id}", "--out", str(out), "--force"]) == 0
    assert (out / f"{mid}.cap.xml").read_text().startswith("<?xml")
    assert sorted(p.name for p in out.iterdir()) == [f"{mid}.cap.xml", f"{mid}.wav"]
