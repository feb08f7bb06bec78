"""Settings: defaults < binfoon.toml < BINFOON_* environment; unknown keys fail."""

import os
from pathlib import Path

import pytest

from ivr.config import ConfigError, load_settings


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(environ={"BINFOON_CONFIG": os.devnull})
    assert settings.dial_template == "Local/${NUMBER}@sim-phone" and settings.uses_simulator
    assert settings.resolved_database_url.startswith("sqlite:///")


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "binfoon.toml"
    config.write_text('dial_template = "PJSIP/${NUMBER}@trunk"\nring_timeout_s = 25\n')
    settings = load_settings(config, environ={"BINFOON_RING_TIMEOUT_S": "40", "BINFOON_DATA_DIR": str(tmp_path)})
    assert settings.dial_template == "PJSIP/${NUMBER}@trunk" and not settings.uses_simulator
    assert settings.ring_timeout_s == 40.0 and settings.data_dir == tmp_path


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("colour = 'red'\n", {}, "unknown setting 'colour'"),
        ("", {"BINFOON_COLOUR": "red"}, "unknown setting BINFOON_COLOUR"),
        ("ring_timeout_s = 'soon'\n", {}, "ring_timeout_s"),
        ("dial_template = 'PJSIP/trunk'\n", {}, "${NUMBER}"),
        ("asterisk_mode = 'docker'\n", {}, "asterisk_mode"),
        ("ring_timeout_s = \n", {}, "binfoon.toml"),
        ("email_unsubscribe_url = 'http://bin.example.be/uit'\n", {}, "must start with https://"),
        ("email_unsubscribe_url = 'https://bïn.example.be/uit'\n", {}, "plain ASCII"),
        ("email_unsubscribe_url = 'https://bin.example.be/<uit>'\n", {}, "email_unsubscribe_url"),
        ("copy_retry_for_s = 0\n", {}, "copy_retry_for_s > 0"),
    ],
)
def test_bad_settings_fail_clearly(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    config = tmp_path / "binfoon.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(config, environ=env)
    assert message in str(info.value)


@pytest.mark.parametrize("url", ["https://bin.example.be/uitschrijven", "http://localhost:8480/uit",
                                 "http://127.0.0.1/uit"])
def test_an_unsubscribe_url_over_https_or_on_this_machine_is_taken(url: str) -> None:
    settings = load_settings(environ={"BINFOON_CONFIG": os.devnull, "BINFOON_EMAIL_UNSUBSCRIBE_URL": url})
    assert settings.email_unsubscribe_url == url and settings.email_attach_audio


def test_yes_no_settings_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "binfoon.toml"
    config.write_text("web_secure_cookies = true\n", encoding="utf-8")
    assert load_settings(config, environ={}).web_secure_cookies is True
    assert load_settings(config, environ={"BINFOON_WEB_SECURE_COOKIES": "off"}).web_secure_cookies is False
    with pytest.raises(ConfigError, match="web_secure_cookies = 'maybe' is not a valid bool"):
        load_settings(config, environ={"BINFOON_WEB_SECURE_COOKIES": "maybe"})
