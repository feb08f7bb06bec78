"""``binfoon health`` (issue 16 item 7): one check per part, ``--json``, exit 1 when one fails; it
never creates or migrates anything."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.commands.health import ami_login, check_database, check_disk, check_service, check_speech
from ivr.config import load_settings
from storage.db import _alembic_config, current_revision, head_revision, open_database


def _settings(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    return load_settings(environ={"BINFOON_CONFIG": os.devnull, "BINFOON_DATA_DIR": str(tmp_path / "var"), **env})


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on (standing in for the service's FastAGI server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_service_check_looks_at_the_fastagi_port(tmp_path: Path, listening: int) -> None:
    assert check_service(_settings(tmp_path, BINFOON_AGI_PORT=str(listening))).ok is True
    down = check_service(_settings(tmp_path, BINFOON_AGI_PORT=str(_free_port())))
    assert down.ok is False and "is `binfoon serve` running" in down.detail


def test_the_database_check_wants_the_head_revision_and_never_migrates(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}"
    missing = check_database(_settings(tmp_path))
    assert missing.ok is False and "no folder" in missing.detail
    (tmp_path / "var").mkdir()
    command.upgrade(_alembic_config(url), "0011")
    behind = check_database(_settings(tmp_path))
    assert behind.ok is False and "revision 0011" in behind.detail and "binfoon db upgrade" in behind.detail
    assert current_revision(url) == "0011"  # not migrated by looking
    open_database(url).dispose()
    at_head = check_database(_settings(tmp_path))
    assert at_head.ok is True and head_revision() in at_head.detail


def test_the_disk_check_fails_below_a_gigabyte(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert check_disk(settings, free=lambda _path: 5 << 30).ok is True
    low = check_disk(settings, free=lambda _path: 100 << 20)
    assert low.ok is False and "0.1 GiB free" in low.detail


def test_the_speech_check_says_when_no_model_is_installed(tmp_path: Path) -> None:
    check = check_speech(_settings(tmp_path, BINFOON_SPEECH_MODEL_PATH=str(tmp_path / "no-model")))
    assert check.ok is False and "does not exist" in check.detail and "binfoon models install" in check.detail


def _fake_ami(reply: str) -> int:
    """A one-shot AMI that answers a login with ``reply`` (Success or Error)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"Asterisk Call Manager/9.0.0\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(1024)
            message = "Authentication accepted" if reply == "Success" else "Authentication failed"
            conn.sendall(f"Response: {reply}\r\nMessage: {message}\r\n\r\n".encode())
            conn.recv(1024)
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def test_ami_login_tells_success_refusal_and_silence() -> None:
    assert ami_login("127.0.0.1", _fake_ami("Success"), "binfoon", "secret") is None
    refused = ami_login("127.0.0.1", _fake_ami("Error"), "binfoon", "wrong")
    assert refused == "AMI login refused: Authentication failed"
    nobody = ami_login("127.0.0.1", _free_port(), "binfoon", "secret", timeout_s=1)
    assert nobody is not None and "did not answer" in nobody


def test_health_prints_every_check_and_exits_1_when_one_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], listening: int) -> None:
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_AGI_PORT", str(listening))
    monkeypatch.setenv("BINFOON_SPEECH_MODEL_PATH", str(tmp_path / "no-model"))
    monkeypatch.delenv("BINFOON_DATABASE_URL", raising=False)
    (tmp_path / "var").mkdir()
    open_database(f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}").dispose()
    assert main(["health", "--json", "--instance-dir", str(tmp_path / "instances")]) == 1
    report = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c["ok"] for c in report["checks"]}
    assert report["ok"] is False
    assert checks == {"service": True, "asterisk": False, "trunk": None, "database": True, "speech model": False,
                      "disk": checks["disk"]}
    assert main(["health", "--instance-dir", str(tmp_path / "instances")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["OK   service", "FAIL asterisk", "--   trunk", "OK   database",
                                                      "FAIL speech model", lines[5].split(":")[0]]
    assert not (tmp_path / "instances").exists()  # looked, wrote nothing
