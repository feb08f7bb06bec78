"""The command line's common rules (issue 16 item 7): exit codes, the configuration, the database URL,
``--version``, ``--limit``, ``--force``, ``report --bin``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    monkeypatch.delenv("BINFOON_DATABASE_URL", raising=False)


def _zone_and_bin() -> None:
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0
    assert main(["bin", "add", "--number", "12", "--name", "Noord", "--zone", "5415"]) == 0


# -- exit codes ------------------------------------------------------------------------------------
def test_a_user_error_exits_1_and_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    _zone_and_bin()
    capsys.readouterr()
    assert main(["bin", "add", "--number", "12", "--name", "Again", "--zone", "5415"]) == 1
    assert capsys.readouterr().err == "binfoon: BIN number 12 already exists\n"
    with pytest.raises(SystemExit) as usage:
        main(["bin", "add", "--number", "twelve", "--name", "X", "--zone", "5415"])
    assert usage.value.code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("binfoon ")


# -- the configuration -----------------------------------------------------------------------------
def test_binfoon_config_naming_a_missing_file_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BINFOON_CONFIG", str(tmp_path / "binfon.toml"))  # a typo
    assert main(["bin", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"binfoon: {tmp_path / 'binfon.toml'}: no such file") and err.count("\n") == 1
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(("key", "value", "why"), [
    ("caller_id_number", "050 00 00 00", "must be an E.164 number starting with +"),
    ("police_line_number", "+32 50 00 01 00", "without spaces: +3250000100"),
    ("report_line_number", "+32abc", "not a phone number"),
    ("admin_line_number", "+3290012345", "not a phone number"),  # premium range
])
def test_caller_id_and_dids_must_be_e164_and_the_error_names_the_line(
        tmp_path: Path, key: str, value: str, why: str) -> None:
    config = tmp_path / "binfoon.toml"
    config.write_text(f'ring_timeout_s = 30\n{key} = "{value}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert f"{config} line 2: {key} = {value!r}" in str(info.value) and why in str(info.value)
    with pytest.raises(ConfigError, match=f"environment BINFOON_{key.upper()}: {key}"):
        load_settings(environ={"BINFOON_CONFIG": os.devnull, f"BINFOON_{key.upper()}": value})


def test_config_check_exits_1_with_the_line_and_0_when_valid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "binfoon.toml"
    config.write_text('caller_id_number = "+3250000000"\n\nquiet_hours = "21:00-08:00"\nring_timeout_s = "soon"\n')
    monkeypatch.setenv("BINFOON_CONFIG", str(config))
    assert main(["config", "check"]) == 1
    assert f"{config} line 4: ring_timeout_s = 'soon' is not a valid float" in capsys.readouterr().err
    config.write_text('caller_id_number = "+3250000000"\nring_timeout_s = 25\n')  # and BINFOON_DATA_DIR
    assert main(["config", "check"]) == 0
    assert capsys.readouterr().out == f"configuration valid: {config}; 3 setting(s) set, the rest are defaults\n"


def test_config_show_masks_the_database_password_and_says_where_each_setting_comes_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "binfoon.toml"
    config.write_text('ring_timeout_s = 25\n')
    monkeypatch.setenv("BINFOON_CONFIG", str(config))
    monkeypatch.setenv("BINFOON_DATABASE_URL", "postgresql://binfoon:s3cret-pw@db.example/binfoon")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-pw" not in out
    assert "postgresql://binfoon:***@db.example/binfoon    # environment BINFOON_DATABASE_URL" in out
    assert "ring_timeout_s" in out and f"# {config} line 1" in out
    assert main(["config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ring_timeout_s"] == {"value": "25.0", "from": f"{config} line 1"}
    assert shown["key_timeout_s"]["from"] == "default"


# -- the database URL ------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "said"), [
    ("sqlite:///{tmp}/vra/binfoon.db", "no folder {tmp}/vra for the database binfoon.db"),
    ("sqlite:///{tmp}/var/binfon.db", "no database at {tmp}/var/binfon.db"),
    ("postgresql://binfoon:pw@127.0.0.1:1/binfoon", "cannot open the database postgresql+psycopg://binfoon:***@"),
    ("mysql+nodriver://x@y/z", "no driver for it"),
    ("not a url", "is not a database URL"),
])
def test_a_wrong_database_url_is_one_line_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str,
        said: str) -> None:
    (tmp_path / "var").mkdir()
    monkeypatch.setenv("BINFOON_DATABASE_URL", url.format(tmp=tmp_path))
    before = sorted(tmp_path.rglob("*"))
    assert main(["bin", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("binfoon: ") and said.format(tmp=tmp_path) in err and err.count("\n") == 1, err
    assert "Traceback" not in err and "pw@" not in err
    assert sorted(tmp_path.rglob("*")) == before  # no empty database made


def test_db_upgrade_and_serve_init_create_an_explicit_sqlite_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ivr.cli import check_database
    from storage.db import DatabaseUnavailable

    database = tmp_path / "data" / "binfoon.db"
    monkeypatch.setenv("BINFOON_DATABASE_URL", f"sqlite:///{database}")
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 1
    assert not database.exists()
    settings = load_settings()
    with pytest.raises(DatabaseUnavailable):
        check_database(settings)
    check_database(settings, init=True)  # `serve --init`: let through, to be made by the service
    assert not database.exists() and not database.parent.exists()  # the check itself writes nothing
    assert main(["db", "upgrade"]) == 0 and database.exists()
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0


def test_plain_postgresql_urls_use_the_installed_driver(
        postgres_server: tuple[str, int], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import psycopg

    sockets, port = postgres_server
    with psycopg.connect(host=sockets, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute('CREATE DATABASE "plain_url"')
    monkeypatch.setenv("BINFOON_DATABASE_URL", f"postgresql://postgres@/plain_url?host={sockets}&port={port}")
    assert main(["db", "upgrade"]) == 0
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0
    assert main(["bin", "add", "--number", "12", "--name", "Noord", "--zone", "5415"]) == 0
    capsys.readouterr()
    assert main(["bin", "list", "--json"]) == 0
    assert [b["number"] for b in json.loads(capsys.readouterr().out)] == [12]
    # A database the server does not have: one line, not a traceback.
    monkeypatch.setenv("BINFOON_DATABASE_URL", f"postgresql://postgres@/no_such_db?host={sockets}&port={port}")
    assert main(["bin", "list"]) == 1
    err = capsys.readouterr().err
    assert "no_such_db" in err and err.count("\n") == 1 and "Traceback" not in err


# -- --limit, --force, report --bin ----------------------------------------------------------------
@pytest.mark.parametrize("argv", [["archive", "search", "inbraak", "--limit", "0"],
                                  ["archive", "list", "--limit", "-3"]])
def test_limit_rejects_zero_and_negatives(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        main(argv)
    assert usage.value.code == 2 and "give 1 or more" in capsys.readouterr().err


def test_report_takes_bin_and_never_overwrites_without_force(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _zone_and_bin()
    html = tmp_path / "log.html"
    period = ["--from", "2026-11-01", "--to", "2026-11-30"]
    assert main(["report", "--bin", "12", *period, "--html", str(html)]) == 0
    first = html.read_bytes()
    html.write_text("the coordinator's own notes")
    capsys.readouterr()
    assert main(["report", "--bin", "12", *period, "--html", str(html)]) == 1
    assert "exists already" in capsys.readouterr().err and html.read_text() == "the coordinator's own notes"
    assert main(["report", "--bin", "12", *period, "--html", str(html), "--force"]) == 0
    assert html.read_bytes()[:200] == first[:200]
    assert main(["report", "12", "--bin", "13", *period]) == 1
    assert "two BINs given" in capsys.readouterr().err
    assert main(["report", *period]) == 1
    assert "give --bin" in capsys.readouterr().err


def test_deploy_output_never_overwrites_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "units"
    out.mkdir()
    (out / "binfoon.toml").write_text("# the operator's edits\n")
    assert main(["deploy", "systemd", "--output", str(out)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert (out / "binfoon.toml").read_text() == "# the operator's edits\n"
    assert sorted(p.name for p in out.iterdir()) == ["binfoon.toml"]  # nothing else written either
    assert main(["deploy", "systemd", "--output", str(out), "--force"]) == 0
    assert (out / "binfoon.toml").read_text() != "# the operator's edits\n"


# -- libpq's ?password= in the query is a password too (review of issue 16) -------------------------
@pytest.mark.parametrize("url", [
    "postgresql://binfoon@db.example/binfoon?password=s3cret-pw",
    "postgresql://binfoon@db.example/binfoon?sslmode=require&password=s3cret-pw",
    "postgresql://binfoon:other-pw@db.example/binfoon?password=s3cret-pw&password=s3cret-pw",
])
def test_shown_value_and_shown_url_mask_a_password_in_the_query(url: str) -> None:
    from ivr.config import shown_value
    from storage.db import shown_url

    for shown in (shown_value("database_url", url), shown_url(url)):
        assert "s3cret-pw" not in shown and "other-pw" not in shown, shown
        assert "password=***" in shown and "@db.example/binfoon" in shown, shown
    assert shown_url("postgresql://binfoon@db.example/binfoon?sslmode=require") == \
        "postgresql://binfoon@db.example/binfoon?sslmode=require"  # nothing to hide: unchanged


def test_config_show_masks_a_query_password(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BINFOON_DATABASE_URL", "postgresql://binfoon@db.example/binfoon?password=s3cret-pw")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-pw" not in out and "postgresql://binfoon@db.example/binfoon?password=***" in out


def test_a_wrong_database_url_never_shows_a_query_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "var").mkdir()
    monkeypatch.setenv("BINFOON_DATABASE_URL", "postgresql://binfoon@127.0.0.1:1/binfoon?password=s3cret-pw")
    assert main(["bin", "list"]) == 1
    err = capsys.readouterr().err
    assert "cannot open the database" in err and "s3cret-pw" not in err and "password=***" in err, err
