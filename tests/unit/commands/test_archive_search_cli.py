"""``binfoon archive search`` with word forms and prefixes; a refused query is explained (issue 15 item 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ivr.cli import main
from tests.unit.archive.test_archive import NOW, Lab, make_lab


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    """The archive tests' world, in the database and recording store the command line uses."""
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    return make_lab(f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}", tmp_path, tmp_path / "var" / "recordings")


def test_the_readmes_example_finds_another_form_and_a_prefix(lab: Lab,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    found = lab.message(NOW, transcript="er werd ingebroken in twee woningen, drie inbraken")
    lab.message(NOW, typed="gestolen fiets aan het station")
    for words in (["inbraak"], ["inbr*"], ["woning", "twee"]):
        assert main(["archive", "search", *words]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{found:>6}  ") and out.count("BIN 12") == 1, words
    assert main(["archive", "search", "inbraak"]) == 0
    assert "[inbraken]" in capsys.readouterr().out


def test_a_short_prefix_is_refused_with_the_reason(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    lab.message(NOW, transcript="drie inbraken")
    assert main(["archive", "search", "in*"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("binfoon: in*: a prefix search needs at least 3 letters before the * "
                            "(e.g. inbr*); shorter ones would match almost everything\n")
    assert lab.audits("archive.searched") == []  # refused before anything was searched


def test_the_help_documents_the_query_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["archive", "search", "--help"])
    out = capsys.readouterr().out
    assert "every word is required (AND)" in out and "inbr*" in out and "at least 3 letters" in out
    assert "not supported: OR" in out and "negation" in out
