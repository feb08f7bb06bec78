"""`binfoon demo` as `make demo` runs it: the whole chain, and a report of what it measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.media.compare import hear_file

pytestmark = pytest.mark.integration


# Beside the parallel tests, not among them: the demo is long, scripted in real time, but light (Makefile).
@pytest.mark.beside
@pytest.mark.timeout(600)
def test_demo_runs_the_whole_chain_and_reports_what_it_measured(tmp_path: Path, whisper_model_path: Path) -> None:
    # The model `make demo` installs first (`binfoon models install nl`): Whisper base.
    env = {**os.environ, "BINFOON_DATA_DIR": str(tmp_path / "var"),
           "BINFOON_CONFIG": os.devnull, "BINFOON_SPEECH_MODEL_PATH": str(whisper_model_path)}
    report_path = tmp_path / "demo-report.json"
    done = subprocess.run([sys.executable, "-m", "ivr", "demo", "--report", str(report_path)],
                          capture_output=True, text=True, env=env, timeout=580, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text(encoding="utf-8"))

    message = report["message"]
    assert {"id", "bin", "urgency", "status", "recording_seconds", "recording_path", "spoken_audio_path",
            "spoken_text"} <= message.keys()
    assert (message["bin"], message["urgency"], message["status"]) == (12, "urgent", "done")
    recording, spoken = Path(message["recording_path"]), Path(message["spoken_audio_path"])
    assert recording.is_absolute() and recording.exists() and spoken.is_absolute() and spoken.exists()
    # What the officer said is what was stored (measured here again, not taken from the report).
    assert hear_file(spoken, recording).whole
    assert message["recording_seconds"] > 3 and message["spoken_text"]
    # The archive's transcript of that take, made by the service's Whisper worker in the BIN's language.
    transcript = message["transcript"]
    assert (transcript["engine"], transcript["language"], transcript["model"]) == (
        "whisper", "nl", whisper_model_path.name)
    assert transcript["text"] and 0 <= transcript["wer_vs_spoken_text"]

    review = report["review"]
    assert review["decision"] == "forward_now" and review["coordinator"]
    assert 0 <= review["seconds_hangup_to_ring"] < 5

    campaign, expected = report["campaign"], report["expected"]
    keys = {"members", "confirmed", "answering_machine", "no_answer", "busy", "failed", "attempts",
            "calls_to_confirmed_members_after_confirming"}
    assert keys <= campaign.keys()
    assert campaign["members"] == 25 and campaign["calls_to_confirmed_members_after_confirming"] == 0
    for key in expected.keys() - {"sms", "email"}:
        assert campaign[key] == expected[key], key
    # The written copies (issue 17): measured at the fake SMSC and the SMTP relay, the same keys expected.
    for channel in ("sms", "email"):
        assert report[channel] == expected[channel] and report[channel]["copies"] > 0, channel
    assert report["sms"]["ladder"] > 0 and report["email"]["with_audio"] == report["email"]["copies"]
    assert campaign["attempts"] >= campaign["members"]
    assert report["all_as_expected"] is True
