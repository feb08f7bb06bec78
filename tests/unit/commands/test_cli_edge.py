"""``binfoon edge config``: Kamailio's files from the settings, checked by Kamailio itself, and what it refuses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ivr.cli import main


@pytest.fixture
def carrier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in {"CONFIG": os.devnull, "DATA_DIR": str(tmp_path / "var"), "TRUNK_HOST": "192.0.2.10",
                        "TRUNK_PORT": "5080", "MAX_CHANNELS": "90", "MAX_CPS": "30"}.items():
        monkeypatch.setenv(f"BINFOON_{name}", value)
    return tmp_path


def _config(out: Path, *more: str) -> int:
    return main(["edge", "config", "--listen", "192.0.2.1:5060", "--node", "10.0.0.11:5060",
                 "--node", "10.0.0.12:5060", "--out", str(out), *more])


def test_it_writes_a_configuration_kamailio_accepts_with_the_farms_caps(carrier: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = carrier / "kamailio"
    assert _config(out) == 0
    cfg = (out / "kamailio.cfg").read_text()
    assert "192.0.2.10" in cfg and ">= 90" in cfg and '"TAILDROP", 60' in cfg  # 30 calls/s, 2 INVITEs each
    assert (out / "dispatcher.list").read_text().count("sip:10.0.0.1") == 2
    checked = subprocess.run(["kamailio", "-c", "-f", str(out / "kamailio.cfg")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr[-2000:]
    # An existing configuration is replaced only on purpose.
    assert _config(out) == 1 and "--force" in capsys.readouterr().err
    assert _config(out, "--force") == 0


def test_a_carrier_named_by_host_name_or_missing_is_refused_clearly(carrier: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BINFOON_TRUNK_HOST", "sip.carrier.example")
    assert _config(carrier / "k1") == 1
    assert "carrier" in capsys.readouterr().err and not (carrier / "k1" / "kamailio.cfg").exists()
    monkeypatch.setenv("BINFOON_TRUNK_HOST", "")
    assert _config(carrier / "k2") == 1
    assert "trunk_host" in capsys.readouterr().err
