"""Kannel's configuration (quoting, injection, the production groups) and the sendsms request, without Kannel.
The real bearerbox reads these files in tests/integration/test_kannel.py."""

from __future__ import annotations

import dataclasses
import http.server
import logging
import os
import socket
import threading
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ivr.config import Settings, load_settings
from ivr.copies.gateways import SendFailed, SendRefused, SendUncertain, SmsCopy
from ivr.copies.kannel import (
    DLR_MASK,
    KannelConfigError,
    KannelGateway,
    dlr_signer,
    dlr_url,
    mo_token,
    mo_url,
    read_secret,
)
from ivr.copies.kannel_config import config_value, kannel_config, sendsms_port

TOKEN = "a1" * 16
SIG = "0f" * 16


def settings(tmp_path: Path, **values: object) -> Settings:
    base = load_settings(environ={"BINFOON_CONFIG": os.devnull, "BINFOON_DATA_DIR": str(tmp_path / "var")})
    defaults: dict[str, object] = {"smpp_host": "smpp.operator.be", "smpp_port": 2775, "smpp_system_id": "binfoon01",
                                   "sms_username": "binfoon"}
    defaults.update(values)
    return dataclasses.replace(base, **defaults)  # type: ignore[arg-type]


def config(tmp_path: Path, password: str = "sendsms-pw", smpp_password: str = "smpp-pw", **values: object) -> str:
    return kannel_config(settings(tmp_path, **values), password, smpp_password, 8491, TOKEN, admin_password="adm-pw",
                         status_password="status-pw")


def groups(text: str) -> list[dict[str, str]]:
    """The configuration's groups as Kannel would see them (one ``name = value`` a line)."""
    found: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        if name.strip() == "group":
            found.append({"group": value.strip()})
        else:
            found[-1][name.strip()] = value.strip()
    return found


def group(text: str, name: str) -> dict[str, str]:
    (only,) = [g for g in groups(text) if g["group"] == name]
    return only


# -- values ---------------------------------------------------------------------------------------------------
def test_strings_are_quoted_with_backslash_and_quote_escaped() -> None:
    assert config_value("plain", "x") == '"plain"'
    assert config_value('pa"ss\\word', "x") == '"pa\\"ss\\\\word"'
    assert config_value(13000, "x") == "13000"
    assert config_value(True, "x") == "true"


@pytest.mark.parametrize("bad", ["two\nlines", "carriage\rreturn", "nul\x00", "tab\there", "sep\u2028arator",
                                 "include", "x-Include-y", "/etc/shadow\ninclude = /etc/shadow"])
def test_a_line_break_a_control_character_or_the_word_include_is_refused(bad: str) -> None:
    with pytest.raises(KannelConfigError, match="smsc.smsc-password"):
        config_value(bad, "smsc.smsc-password")


# -- the production configuration -----------------------------------------------------------------------------
def test_the_production_configuration(tmp_path: Path) -> None:
    text = config(tmp_path)
    assert [g["group"] for g in groups(text)] == ["core", "smsc", "smsbox", "sendsms-user", "sms-service"]
    core = group(text, "core")
    assert core["admin-interface"] == core["smsbox-interface"] == '"127.0.0.1"'
    assert core["admin-allow-ip"] == core["box-allow-ip"] == '"127.0.0.1"'
    assert core["admin-password"] == '"adm-pw"'
    assert core["status-password"] == '"status-pw"'  # else anyone on the machine reads /store-status
    assert core["store-type"] == '"file"' and core["store-location"] == '"/var/spool/kannel/binfoon.store"'
    assert core["dlr-storage"] == '"spool"'
    smsc = group(text, "smsc")
    assert smsc["smsc"] == '"smpp"' and smsc["host"] == '"smpp.operator.be"' and smsc["port"] == "2775"
    assert smsc["smsc-username"] == '"binfoon01"' and smsc["smsc-password"] == '"smpp-pw"'
    assert smsc["transceiver-mode"] == "true"
    smsbox = group(text, "smsbox")
    assert smsbox["sendsms-interface"] == '"127.0.0.1"' and smsbox["sendsms-port"] == "13013"
    assert int(smsbox["http-request-retry"]) * int(smsbox["http-queue-delay"]) >= 3600  # a restart is waited out
    assert smsbox["log-level"] == "2"  # info lines carry numbers and texts
    user = group(text, "sendsms-user")
    assert (user["username"], user["password"], user["max-messages"]) == ('"binfoon"', '"sendsms-pw"', "2")
    assert user["user-allow-ip"] == '"127.0.0.1"'
    service = group(text, "sms-service")
    assert service["get-url"] == f'"http://127.0.0.1:8491/kannel/mo?from=%p&to=%P&text=%a&id=%I&ts=%T&sig={TOKEN}"'
    assert service["max-messages"] == "0"  # smsbox never answers a member itself
    assert service["catch-all"] == "true" and service["keyword"] == '"default"'
    assert "access-log" not in text  # it would keep every number and text
    assert all("include" not in line for line in text.splitlines() if not line.startswith("#"))


def test_the_sendsms_port_is_the_one_the_service_uses(tmp_path: Path) -> None:
    text = config(tmp_path, sms_sendsms_url="http://127.0.0.1:14013/cgi-bin/sendsms")
    assert group(text, "smsbox")["sendsms-port"] == "14013"
    assert sendsms_port("") == 13013
    for url in ("http://10.0.0.5:13013/cgi-bin/sendsms", "https://127.0.0.1:13013/cgi-bin/sendsms",
                "http://127.0.0.1:13013/other"):
        with pytest.raises(KannelConfigError, match="sms_sendsms_url"):
            sendsms_port(url)


def test_a_setting_cannot_inject_a_line_or_a_group(tmp_path: Path) -> None:
    with pytest.raises(KannelConfigError, match="smpp_host"):
        config(tmp_path, smpp_host="smpp.be\ngroup = smsbox")
    with pytest.raises(KannelConfigError, match="smsc-username"):
        config(tmp_path, smpp_system_id="binfoon\nadmin-password = x")
    with pytest.raises(KannelConfigError, match="sendsms-user.username"):
        config(tmp_path, sms_username='bin"\nusername = "evil')
    with pytest.raises(KannelConfigError, match="include"):
        config(tmp_path, smpp_password="my-include-pw")
    with pytest.raises(KannelConfigError, match="sendsms-user.password"):
        config(tmp_path, password="pw\r\n")


def test_quotes_and_backslashes_in_a_password_stay_in_the_value(tmp_path: Path) -> None:
    text = config(tmp_path, smpp_password='s"e\\cr#et=;')
    assert group(text, "smsc")["smsc-password"] == '"s\\"e\\\\cr#et=;"'
    assert len(groups(text)) == 5


def test_settings_the_configuration_cannot_work_with_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KannelConfigError, match="smpp_host"):
        config(tmp_path, smpp_host="")
    with pytest.raises(KannelConfigError, match="smpp_port"):
        config(tmp_path, smpp_port=0)
    with pytest.raises(KannelConfigError, match="sms_callback_port"):
        kannel_config(settings(tmp_path), "pw", "pw", 0, TOKEN, admin_password="adm", status_password="st")
    with pytest.raises(KannelConfigError, match="URL-safe"):
        kannel_config(settings(tmp_path), "pw", "pw", 8491, "not%a&token", admin_password="adm", status_password="st")
    with pytest.raises(KannelConfigError, match="status passwords"):
        kannel_config(settings(tmp_path), "pw", "pw", 8491, TOKEN, admin_password="adm", status_password="")


# -- callback URLs --------------------------------------------------------------------------------------------
def test_the_callback_urls() -> None:
    assert dlr_url("http://127.0.0.1:8491/", "c0ffee-1", SIG) == \
        f"http://127.0.0.1:8491/kannel/dlr?copy=c0ffee-1&type=%d&sig={SIG}"
    assert mo_url("http://127.0.0.1:8491", TOKEN).endswith(f"/kannel/mo?from=%p&to=%P&text=%a&id=%I&ts=%T&sig={TOKEN}")
    with pytest.raises(ValueError, match="copy id"):
        dlr_url("http://127.0.0.1:8491", "a&b", SIG)
    with pytest.raises(ValueError, match="URL-safe"):
        dlr_url("http://127.0.0.1:8491", "c1", "%C3%A9" * 4)  # Kannel would read %C and %A as its own codes
    for base in ("http://127.0.0.1:8491/?x=1", "http://127.0.0.1:8491/%p", 'http://127.0.0.1:8491/"', "ftp://h"):
        with pytest.raises(ValueError, match="callback base"):
            dlr_url(base, "c1", SIG)


def test_the_signatures_come_from_the_copies_key() -> None:
    key = bytes(range(32))
    assert dlr_signer(key)("copy-1") != dlr_signer(key)("copy-2")
    assert dlr_signer(key)("copy-1") == dlr_signer(key)("copy-1")
    assert mo_token(key) != mo_token(bytes(32))
    assert len(mo_token(key)) == 32 and mo_token(key).isalnum()


# -- the sendsms request --------------------------------------------------------------------------------------
def gateway() -> KannelGateway:
    return KannelGateway("http://127.0.0.1:13013/cgi-bin/sendsms", "binfoon", "pw&=?", "http://127.0.0.1:8491",
                         lambda copy_id: SIG)


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, strict_parsing=True))


def sms(**values: object) -> SmsCopy:
    fields: dict[str, object] = {"copy_id": "3f1c-42", "to": "+32470000001", "sender": "+3250000000",
                                 "text": "BIN Gent DRINGEND: x"}
    fields.update(values)
    return SmsCopy(**fields)  # type: ignore[arg-type]


def test_the_request_carries_the_copy_the_account_and_the_report_url() -> None:
    q = query(gateway().request_url(sms()))
    assert q == {"username": "binfoon", "password": "pw&=?", "from": "+3250000000", "to": "+32470000001",
                 "text": "BIN Gent DRINGEND: x", "charset": "UTF-8", "dlr-mask": str(DLR_MASK),
                 "dlr-url": f"http://127.0.0.1:8491/kannel/dlr?copy=3f1c-42&type=%d&sig={SIG}"}


def test_unicode_text_goes_as_ucs2() -> None:
    assert query(gateway().request_url(sms(text="Győr", unicode=True)))["coding"] == "2"
    # Marked GSM by mistake: the text decides, not the flag (Kannel would send '?' for the ő).
    assert query(gateway().request_url(sms(text="Győr", unicode=False)))["coding"] == "2"


@pytest.mark.parametrize(("values", "why"), [
    ({"to": "0470000001"}, "E.164"), ({"to": "+32 470"}, "E.164"), ({"sender": "BIN Gent-Centrum"}, "sender"),
    ({"text": "  "}, "empty"), ({"text": "a" * 307}, "3 SMS"), ({"copy_id": "a/b"}, "copy id"),
])
def test_a_copy_that_cannot_go_as_it_is_is_refused(values: dict[str, object], why: str) -> None:
    with pytest.raises(SendRefused, match=why):
        gateway().request_url(sms(**values))


def test_a_signer_that_returns_escapes_is_refused() -> None:
    bad = KannelGateway("http://127.0.0.1:13013/cgi-bin/sendsms", "binfoon", "pw", "http://127.0.0.1:8491",
                        lambda copy_id: "ab%Cdef==" * 3)
    with pytest.raises(SendRefused, match="URL-safe"):
        bad.request_url(sms())


def test_repr_never_shows_the_password() -> None:
    assert "pw&=?" not in repr(gateway())


# -- secret files ---------------------------------------------------------------------------------------------
def test_a_secret_file_must_be_private_and_one_line(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret!#\n")
    path.chmod(0o600)
    assert read_secret("sms_password_file", str(path)) == "s3cret!#"
    path.chmod(0o644)
    with pytest.raises(KannelConfigError, match="chmod 600"):
        read_secret("sms_password_file", str(path))
    path.chmod(0o600)
    path.write_text("one\ntwo\n")
    with pytest.raises(KannelConfigError, match="one line"):
        read_secret("sms_password_file", str(path))
    with pytest.raises(KannelConfigError, match="does not exist"):
        read_secret("smpp_password_file", str(tmp_path / "missing"))
    path.write_text("s3cret\n")
    link = tmp_path / "link"
    link.symlink_to(path)  # what the mode check saw would not be what is read
    with pytest.raises(KannelConfigError, match="symbolic link"):
        read_secret("sms_password_file", str(link))


# -- smsbox's answers (a stand-in HTTP server: the real smsbox's are in the integration tests) ----------------
#: A stand-in answer: never answer (until closed), or close the connection without a word.
HANG, HANG_UP = "hang", "hang up"


class Smsbox:
    """Answers every request with the next (status, body) it was given, ``HANG`` or ``HANG_UP``."""

    def __init__(self, answers: list[tuple[int, str] | str]) -> None:
        self.answers = list(answers)
        self.paths: list[str] = []
        self.closing = threading.Event()
        smsbox = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                smsbox.paths.append(self.path)
                answer = smsbox.answers.pop(0)
                if answer == HANG:
                    smsbox.closing.wait(60)
                    return
                if answer == HANG_UP:
                    self.close_connection = True
                    return
                assert isinstance(answer, tuple)
                status, body = answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cgi-bin/sendsms"

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(("answer", "outcome"), [
    ((202, "0: Accepted for delivery"), "0: Accepted for delivery"),
    ((202, "3: Queued for later delivery"), "3: Queued for later delivery"),
    # This request's fields: this copy will not go as it is.
    ((400, "Missing receiver number, rejected"), SendRefused),
    # The whole gateway's state (the account, the route, the path, smsbox itself): tried again later.
    ((403, "Authorization failed for sendsms"), SendFailed),
    ((403, "Not routable. Do not try again."), SendFailed),
    ((401, "Unauthorized"), SendFailed),
    ((404, "Unknown service"), SendFailed),
    ((503, "Temporal failure, try again later."), SendFailed),
    ((500, "Sending failed."), SendFailed),
    ((302, ""), SendFailed),
    # The request went, no answer came: smsbox may have taken it.
    (HANG, SendUncertain),
    (HANG_UP, SendUncertain),
])
async def test_smsbox_answers_decide(answer: tuple[int, str] | str, outcome: object,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # never used: the password stays on loopback
    smsbox = Smsbox([answer])
    try:
        gateway = KannelGateway(smsbox.url, "binfoon", "s3cret-pw", "http://127.0.0.1:8491", lambda copy_id: SIG,
                                timeout=2.0)
        if isinstance(outcome, str):
            assert await gateway.send(sms()) == outcome
        else:
            with pytest.raises(outcome) as caught:  # type: ignore[call-overload]
                await gateway.send(sms())
            assert type(caught.value) is outcome
            assert "s3cret" not in str(caught.value)
            if isinstance(answer, tuple) and answer[1]:
                assert answer[1] in str(caught.value) and str(answer[0]) in str(caught.value)
        assert len(smsbox.paths) == 1 and smsbox.paths[0].startswith("/cgi-bin/sendsms?")
    finally:
        smsbox.close()


async def test_a_gateway_wide_refusal_is_logged_as_an_error_without_the_password_or_number(
        caplog: pytest.LogCaptureFixture) -> None:
    smsbox = Smsbox([(403, "Not routable. Do not try again."), (400, "Missing receiver number, rejected")])
    try:
        gateway = KannelGateway(smsbox.url, "binfoon", "s3cret-pw", "", lambda copy_id: SIG)
        with caplog.at_level(logging.INFO, logger="ivr.copies.kannel"), pytest.raises(SendFailed):
            await gateway.send(sms())
        [record] = caplog.records
        assert record.levelno == logging.ERROR and "Not routable" in record.getMessage()
        assert "SMSC" in record.getMessage()
        assert "s3cret" not in record.getMessage() and "470000001" not in record.getMessage()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ivr.copies.kannel"), pytest.raises(SendRefused):
            await gateway.send(sms())
        assert caplog.records == []  # one copy's refusal: the sender says it
    finally:
        smsbox.close()


async def test_the_exchange_runs_in_the_executor_given() -> None:
    class Counting(ThreadPoolExecutor):
        submitted = 0

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            Counting.submitted += 1
            return super().submit(fn, *args, **kwargs)

    smsbox = Smsbox([(202, "0: Accepted for delivery")])
    with Counting(max_workers=1) as pool:
        try:
            gateway = KannelGateway(smsbox.url, "binfoon", "pw", "", lambda copy_id: SIG, executor=pool)
            assert await gateway.send(sms()) == "0: Accepted for delivery"
        finally:
            smsbox.close()
    assert Counting.submitted == 1


async def test_nobody_listening_is_a_passing_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = KannelGateway(f"http://127.0.0.1:{port}/cgi-bin/sendsms", "binfoon", "pw", "http://127.0.0.1:8491",
                            lambda copy_id: SIG)
    with pytest.raises(SendFailed, match=f"smsbox 127.0.0.1:{port}: .*refused"):
        await gateway.send(sms())


def test_without_a_callback_listener_no_reports_are_asked_for(tmp_path: Path) -> None:
    secret = tmp_path / "sendsms.secret"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    off = dataclasses.replace(settings(tmp_path), sms_sendsms_url="http://127.0.0.1:13013/cgi-bin/sendsms",
                              sms_password_file=str(secret), sms_callback_port=0)
    q = query(KannelGateway.from_settings(off, lambda copy_id: SIG).request_url(sms()))
    assert "dlr-url" not in q and "dlr-mask" not in q and q["password"] == "pw"
    on = dataclasses.replace(off, sms_callback_port=8491)
    q = query(KannelGateway.from_settings(on, lambda copy_id: SIG).request_url(sms()))
    assert q["dlr-url"].startswith("http://127.0.0.1:8491/kannel/dlr?copy=3f1c-42&type=%d&sig=")
