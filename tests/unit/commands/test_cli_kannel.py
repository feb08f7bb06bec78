"""``binfoon kannel config``: the secrets it reads and makes, the file it writes, and what it refuses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.copies.kannel import mo_token
from ivr.copies.tokens import load_copies_key


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings for an operator's SMPP account; its password in a 0600 file; no sendsms password yet."""
    smpp_secret = tmp_path / "smpp.secret"
    smpp_secret.write_text('op"erator\\pw#1\n')
    smpp_secret.chmod(0o600)
    for name, value in {"CONFIG": os.devnull, "DATA_DIR": str(tmp_path / "var"), "SMPP_HOST": "smpp.operator.be",
                        "SMPP_PORT": "2776", "SMPP_SYSTEM_ID": "binfoon01", "SMPP_PASSWORD_FILE": str(smpp_secret),
                        "SMS_PASSWORD_FILE": str(tmp_path / "sendsms.secret"), "SMS_CALLBACK_PORT": "8491"}.items():
        monkeypatch.setenv(f"BINFOON_{name}", value)
    return tmp_path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_it_writes_the_configuration_and_makes_the_missing_secrets(
        configured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = configured / "kannel.conf"
    assert main(["kannel", "config", "--output", str(output)]) == 0
    said = capsys.readouterr()
    sendsms = configured / "sendsms.secret"
    admin = configured / "var" / "kannel-admin.secret"
    key = configured / "var" / "copies.key"
    for made in (sendsms, admin, key):
        assert mode(made) == 0o600
        assert f"made {made}" in said.err
    text = output.read_text()
    assert mode(output) == 0o600
    assert f'password = "{sendsms.read_text().strip()}"' in text
    assert f'admin-password = "{admin.read_text().strip()}"' in text
    assert 'smsc-password = "op\\"erator\\\\pw#1"' in text
    assert 'host = "smpp.operator.be"' in text and "port = 2776" in text
    assert f"&sig={mo_token(load_copies_key(key))}\"" in text
    assert "START_SMSBOX=1" in said.out and "sms_sendsms_url" in said.out
    assert sendsms.read_text().strip() not in said.out + said.err  # no secret on the terminal

    # Again: the same secrets, and the file is only replaced with --force.
    before = {path: path.read_text() for path in (sendsms, admin, key)}
    assert main(["kannel", "config", "--output", str(output)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["kannel", "config", "--output", str(output), "--force"]) == 0
    assert {path: path.read_text() for path in before} == before
    assert output.read_text() == text
    assert "made" not in capsys.readouterr().err


def test_printing_it_is_asked_for(configured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kannel", "config", "--output", "-"]) == 0
    assert capsys.readouterr().out.startswith("# BINfoon's Kannel")


def test_the_smpp_settings_and_password_must_be_there(
        configured: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    output = configured / "kannel.conf"
    (configured / "smpp.secret").chmod(0o644)
    assert main(["kannel", "config", "--output", str(output)]) == 1
    assert "smpp_password_file" in capsys.readouterr().err and not output.exists()
    (configured / "smpp.secret").unlink()
    assert main(["kannel", "config", "--output", str(output)]) == 1
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setenv("BINFOON_SMPP_HOST", "")
    assert main(["kannel", "config", "--output", str(output)]) == 1
    assert "set smpp_host" in capsys.readouterr().err
    assert not output.exists()


def test_a_setting_that_would_inject_a_line_writes_nothing(
        configured: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    output = configured / "kannel.conf"
    monkeypatch.setenv("BINFOON_SMPP_SYSTEM_ID", "binfoon\nadmin-password = x")
    assert main(["kannel", "config", "--output", str(output)]) == 1
    assert "smsc-username" in capsys.readouterr().err
    assert not output.exists() and not list(configured.glob(".kannel.conf*"))


def test_callbacks_off_is_refused(configured: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BINFOON_SMS_CALLBACK_PORT", "0")
    assert main(["kannel", "config", "--output", str(configured / "kannel.conf")]) == 1
    assert "sms_callback_port" in capsys.readouterr().err
