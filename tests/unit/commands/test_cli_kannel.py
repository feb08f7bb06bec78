"""``binfoon kannel config``: the secrets it reads and makes, the file it writes, and what it refuses."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.copies.kannel import mo_token
from ivr.copies.kannel_config import nftables_rules
from ivr.copies.tokens import load_copies_key

ROOT = os.geteuid() == 0


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
    (tmp_path / "systemd" / "system").mkdir(parents=True)
    return tmp_path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def config(folder: Path, *args: str) -> int:
    """``binfoon kannel config`` with every system path in ``folder`` (never /etc, /var on the test machine)."""
    return main(["kannel", "config", "--spool-dir", str(folder / "spool"), "--log-dir", str(folder / "log"),
                 "--systemd-dropin", str(folder / "systemd" / "system" / "kannel.service.d" / "binfoon.conf"),
                 "--nft-file", str(folder / "nftables.d" / "binfoon-kannel.nft"), *args])


def test_it_writes_the_configuration_and_makes_the_missing_secrets(
        configured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = configured / "kannel.conf"
    assert config(configured, "--output", str(output)) == 0
    said = capsys.readouterr()
    sendsms = configured / "sendsms.secret"
    admin = configured / "var" / "kannel-admin.secret"
    status = configured / "var" / "kannel-status.secret"
    key = configured / "var" / "copies.key"
    for made in (sendsms, admin, status, key):
        assert mode(made) == 0o600
        assert f"made {made}" in said.err
    text = output.read_text()
    assert mode(output) == 0o600
    assert f'password = "{sendsms.read_text().strip()}"' in text
    assert f'admin-password = "{admin.read_text().strip()}"' in text
    assert f'status-password = "{status.read_text().strip()}"' in text
    assert status.read_text() != admin.read_text()
    assert 'smsc-password = "op\\"erator\\\\pw#1"' in text
    assert 'host = "smpp.operator.be"' in text and "port = 2776" in text
    assert f"&sig={mo_token(load_copies_key(key))}\"" in text
    assert "START_SMSBOX=1" in said.out and "sms_sendsms_url" in said.out
    assert f"nft -f {configured / 'nftables.d' / 'binfoon-kannel.nft'}" in said.out  # said, not done
    assert "daemon-reload" in said.out
    assert sendsms.read_text().strip() not in said.out + said.err  # no secret on the terminal

    # Again: the same secrets, and the file is only replaced with --force.
    before = {path: path.read_text() for path in (sendsms, admin, status, key)}
    assert config(configured, "--output", str(output)) == 1
    assert "--force" in capsys.readouterr().err
    assert config(configured, "--output", str(output), "--force") == 0
    assert {path: path.read_text() for path in before} == before
    assert output.read_text() == text
    assert "made" not in capsys.readouterr().err


def test_printing_it_is_asked_for(configured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert config(configured, "--output", "-") == 0
    assert capsys.readouterr().out.startswith("# BINfoon's Kannel")
    assert not (configured / "spool").exists() and not (configured / "nftables.d").exists()  # nothing else done


def test_kannels_folders_logs_umask_and_firewall(configured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (configured / "log").mkdir(mode=0o755)
    (configured / "log" / "smsbox.log").write_text("kept\n")
    (configured / "log" / "smsbox.log").chmod(0o644)
    monkeypatch.setenv("BINFOON_SERVICE_USER", "binfoon-svc")
    assert config(configured, "--output", str(configured / "kannel.conf")) == 0
    spool, log = configured / "spool", configured / "log"
    assert (mode(spool), mode(spool / "dlr"), mode(log)) == (0o700, 0o700, 0o750)
    assert mode(log / "bearerbox.log") == mode(log / "smsbox.log") == 0o640
    assert (log / "smsbox.log").read_text() == "kept\n"  # a log that exists is only made private
    if ROOT:  # the boxes run as kannel; the logs are read by adm
        kannel, adm = pwd.getpwnam("kannel").pw_uid, grp.getgrnam("adm").gr_gid
        assert {spool.stat().st_uid, (spool / "dlr").stat().st_uid, log.stat().st_uid} == {kannel}
        assert {(p.stat().st_uid, p.stat().st_gid) for p in (log, log / "bearerbox.log", log / "smsbox.log")} \
            == {(kannel, adm)}
        assert (configured / "kannel.conf").stat().st_uid == kannel
    dropin = configured / "systemd" / "system" / "kannel.service.d" / "binfoon.conf"
    assert "[Service]\nUMask=0077\n" in dropin.read_text() and mode(dropin) == 0o644
    nft = configured / "nftables.d" / "binfoon-kannel.nft"
    assert nft.read_text() == nftables_rules(13000, 13001, 13013, "binfoon-svc")


def test_without_systemd_no_drop_in_is_written(configured: Path) -> None:
    (configured / "systemd" / "system").rmdir()
    assert config(configured, "--output", str(configured / "kannel.conf")) == 0
    assert not (configured / "systemd" / "system").exists()


def test_a_secret_swapped_for_a_link_before_it_is_closed_leaves_the_target_untouched(
        configured: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The folder's owner (the service user, not root) swaps the new secret for a link to a file of root's.
    target = configured / "shadow"
    target.write_text("root's\n")
    target.chmod(0o640)
    before = target.stat()
    secret = configured / "sendsms.secret"
    if ROOT:
        nobody = pwd.getpwnam("nobody")
        os.chown(configured, nobody.pw_uid, nobody.pw_gid)  # a chown by path would give the target to nobody
    real_token_hex = secrets.token_hex
    chowned: list[str] = []
    monkeypatch.setattr(os, "chown", lambda path, *ids, **kw: chowned.append(str(path)))

    def swap(n: int) -> str:
        if n == 24 and not secret.is_symlink():  # written while the new secret is open
            secret.unlink()
            secret.symlink_to(target)
        return real_token_hex(n)

    monkeypatch.setattr(secrets, "token_hex", swap)
    assert config(configured, "--output", str(configured / "kannel.conf")) == 1
    assert "symbolic link" in capsys.readouterr().err
    after = target.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert target.read_text() == "root's\n" and chowned == []
    assert not (configured / "kannel.conf").exists()


def test_a_link_where_a_log_should_be_is_refused(configured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = configured / "elsewhere"
    target.write_text("x")
    target.chmod(0o600)
    (configured / "log").mkdir()
    (configured / "log" / "bearerbox.log").symlink_to(target)
    assert config(configured, "--output", str(configured / "kannel.conf")) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert mode(target) == 0o600 and target.stat().st_uid == os.geteuid()
    assert not (configured / "kannel.conf").exists()


def test_the_smpp_settings_and_password_must_be_there(
        configured: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    output = configured / "kannel.conf"
    (configured / "smpp.secret").chmod(0o644)
    assert config(configured, "--output", str(output)) == 1
    assert "smpp_password_file" in capsys.readouterr().err and not output.exists()
    (configured / "smpp.secret").unlink()
    assert config(configured, "--output", str(output)) == 1
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setenv("BINFOON_SMPP_HOST", "")
    assert config(configured, "--output", str(output)) == 1
    assert "set smpp_host" in capsys.readouterr().err
    assert not output.exists()


def test_a_setting_that_would_inject_a_line_writes_nothing(
        configured: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    output = configured / "kannel.conf"
    monkeypatch.setenv("BINFOON_SMPP_SYSTEM_ID", "binfoon\nadmin-password = x")
    assert config(configured, "--output", str(output)) == 1
    assert "smsc-username" in capsys.readouterr().err
    assert not output.exists() and not list(configured.glob(".kannel.conf*"))


def test_callbacks_off_is_refused(configured: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BINFOON_SMS_CALLBACK_PORT", "0")
    assert config(configured, "--output", str(configured / "kannel.conf")) == 1
    assert "sms_callback_port" in capsys.readouterr().err
