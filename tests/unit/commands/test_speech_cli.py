"""`binfoon transcribe` with Whisper: the language is passed, never guessed, and the JSON says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivr.asr.wer import word_error_rate
from ivr.cli import main
from tests.conftest import SHARED_DIR

HUMAN_NL = SHARED_DIR / "audio" / "human-nl" / "rdh_vl09647.wav"  # 2.2 s of Flemish speech


def test_transcribe_in_dutch_prints_engine_language_and_uncertain(
        whisper_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)

    assert main(["transcribe", "--json", "--model", str(whisper_model_path), str(HUMAN_NL)]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert (printed["file"], printed["engine"], printed["language"], printed["model"]) == (
        str(HUMAN_NL), "whisper", "nl", "faster-whisper-base")  # --language defaults to nl
    assert printed["uncertain"] is False and printed["uncertain_reason"] == ""
    reference = HUMAN_NL.with_suffix(".txt").read_text(encoding="utf-8")
    assert word_error_rate(reference, printed["text"]) <= 0.5, printed["text"]


def test_transcribe_passes_the_language_it_is_given_and_refuses_one_the_chain_does_not_speak(
        whisper_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)

    assert main(["transcribe", "--json", "--language", "fr", "--model", str(whisper_model_path), str(HUMAN_NL)]) == 0
    assert json.loads(capsys.readouterr().out)["language"] == "fr"

    with pytest.raises(SystemExit) as refused:
        main(["transcribe", "--language", "en", "--model", str(whisper_model_path), str(HUMAN_NL)])
    assert refused.value.code == 2
    assert "invalid choice: 'en' (choose from 'nl', 'fr', 'de')" in capsys.readouterr().err
