"""E-mail copies: what they say and carry (composition), and their hand-over to a real SMTP relay
(``SmtpLab``: aiosmtpd on loopback with STARTTLS, AUTH and a refused mailbox)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import email.utils
import logging
import re
import socket
import threading
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import ivr.copies.email as email_module
from ivr.copies.email import (
    POLICY,
    EmailContent,
    MailOrigin,
    compose_email,
    mime_message,
)
from ivr.copies.gateways import EmailCopy, SendFailed, SendRefused, SendUncertain
from ivr.copies.smtp import SmtpMailer, is_bounce
from ivr.copies.tokens import unsubscribe_token
from ivr.domain.vocabulary import Urgency
from ivr.lab.smtp import SmtpLab

NOW = dt.datetime(2026, 11, 23, 14, 5, tzinfo=dt.UTC)
TOKEN = unsubscribe_token(bytes(range(32)), 17)
ORIGIN = MailOrigin("BIN-foon Brugge <bin@politie-brugge.example.be>", "afmelden@politie-brugge.example.be",
                    "https://bin.politie-brugge.example.be/unsubscribe")
REFUSED = "verhuisd@example.be"


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    """A short, real WAV (8 kHz mono, 16 bit) with a pattern that a broken encoding would not keep."""
    path = tmp_path / "take-1.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(i % 256 for i in range(16000)))
    return path


def content(wav: Path | None, **changes: object) -> EmailContent:
    base = EmailContent(copy_id="6f1c1e0a-3b9f-4a51-9d3e-2f8b7c1a0d42", to="lid.17@example.be", language="nl",
                        bin_number=12, bin_name="Kerkstraat", urgency=Urgency.URGENT, drill=False, message_id=345,
                        callback_number="+3250000000", text="Opgelet: inbraken in de Kerkstraat.",
                        transcript="opgelet inbraken in de kerk straat", audio=wav)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def wire(mail: EmailCopy) -> email.message.EmailMessage:
    """The e-mail as the relay would parse it."""
    parsed = email.message_from_bytes(mime_message(mail).as_bytes(policy=POLICY), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


# -- composition -------------------------------------------------------------------------------------


def test_the_headers_name_the_bin_the_copy_and_how_to_unsubscribe(wav: Path) -> None:
    mail = compose_email(content(wav), ORIGIN, TOKEN, NOW)
    message = wire(mail)
    assert message["Subject"] == "[BIN Kerkstraat] Dringend bericht van de politie"
    assert message["Message-ID"] == "<6f1c1e0a-3b9f-4a51-9d3e-2f8b7c1a0d42@politie-brugge.example.be>"
    assert message["From"] == "BIN-foon Brugge <bin@politie-brugge.example.be>"
    assert message["To"] == "lid.17@example.be"
    assert email.utils.parsedate_to_datetime(message["Date"]) == NOW
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["List-Unsubscribe"] == (
        f"<mailto:afmelden@politie-brugge.example.be?subject=unsubscribe%20{TOKEN}>, "
        f"<https://bin.politie-brugge.example.be/unsubscribe/{TOKEN}>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The URIs stay URIs on the wire (folded between them, never RFC 2047-encoded).
    raw = mime_message(mail).as_bytes(policy=POLICY)
    folded = re.search(rb"\r\nList-Unsubscribe: (.*?)\r\n(?![ \t])", raw, re.DOTALL)
    assert folded is not None and folded.group(1) == (
        f"<mailto:afmelden@politie-brugge.example.be?subject=unsubscribe%20{TOKEN}>,\r\n"
        f" <https://bin.politie-brugge.example.be/unsubscribe/{TOKEN}>").encode()


def test_without_a_web_address_the_unsubscribe_is_by_mail_to_the_sender(wav: Path) -> None:
    mail = compose_email(content(wav), MailOrigin("bin@localhost"), TOKEN, NOW)
    message = wire(mail)
    assert message["List-Unsubscribe"] == f"<mailto:bin@localhost?subject=unsubscribe%20{TOKEN}>"
    assert message["List-Unsubscribe-Post"] is None  # RFC 8058 one-click needs an https link
    assert message["Message-ID"] == "<6f1c1e0a-3b9f-4a51-9d3e-2f8b7c1a0d42@localhost>"
    assert f"Stuur een e-mail naar bin@localhost met als onderwerp: unsubscribe {TOKEN}" in mail.body


def test_the_body_has_text_transcript_marked_as_machine_made_callback_and_unsubscribe(wav: Path) -> None:
    body = wire(compose_email(content(wav), ORIGIN, TOKEN, NOW)).get_body(("plain",))
    assert body is not None
    text = body.get_content().replace("\r\n", "\n")
    assert "Het bericht:\nOpgelet: inbraken in de Kerkstraat." in text
    assert "automatisch uitgeschreven door een computer (er kunnen fouten in staan" in text
    assert "opgelet inbraken in de kerk straat" in text
    assert "Bel +3250000000 om het bericht te beluisteren" in text
    assert "bin-12-bericht-345.wav" in text
    assert f"Meld u af: https://bin.politie-brugge.example.be/unsubscribe/{TOKEN}" in text
    assert "TEST" not in text


def test_a_spoken_only_message_points_to_the_recording(wav: Path) -> None:
    mail = compose_email(content(wav, text=None, transcript=None), ORIGIN, TOKEN, NOW)
    assert "alleen ingesproken" in mail.body and "Het bericht:" not in mail.body and "computer" not in mail.body


@pytest.mark.parametrize(("language", "urgency", "subject", "words"), [
    ("fr", Urgency.PREVENTIVE, "TEST [BIN Kerkstraat] Message préventif de la police",
     ["TEST : ceci est un exercice", "transcrit automatiquement par un ordinateur", "Appelez le +3250000000"]),
    ("de", Urgency.URGENT, "TEST [BIN Kerkstraat] Dringende Nachricht der Polizei",
     ["TEST: Dies ist eine Übung", "automatisch von einem Computer", "Rufen Sie +3250000000 an"]),
    ("nl", Urgency.PREVENTIVE, "TEST [BIN Kerkstraat] Preventief bericht van de politie",
     ["TEST: dit is een oefening", "door een computer"]),
])
def test_a_drill_says_test_in_the_members_language(wav: Path, language: str, urgency: Urgency, subject: str,
                                                    words: list[str]) -> None:
    mail = compose_email(content(wav, language=language, urgency=urgency, drill=True), ORIGIN, TOKEN, NOW)
    message = wire(mail)
    assert message["Subject"] == subject
    assert message["Content-Language"] == language
    assert mail.body.startswith("TEST")
    for word in words:
        assert word in mail.body


def test_the_recording_is_attached_byte_for_byte_under_its_name(wav: Path) -> None:
    message = wire(compose_email(content(wav), ORIGIN, TOKEN, NOW))
    attachments = list(message.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["bin-12-bericht-345.wav"]
    assert attachments[0].get_content_type() == "audio/wav"
    assert attachments[0].get_content() == wav.read_bytes()


def test_composed_again_after_a_crash_it_is_the_same_message(wav: Path) -> None:
    first = compose_email(content(wav), ORIGIN, TOKEN, NOW)
    again = compose_email(content(wav), ORIGIN, TOKEN, NOW + dt.timedelta(minutes=7))
    assert first.message_id == again.message_id and first.body == again.body and first.subject == again.subject


def test_line_breaks_in_a_bin_name_never_make_a_header(wav: Path) -> None:
    evil = content(wav, bin_name="Kerkstraat\r\nBcc: everyone@example.com\r\n\r\nfake body")
    raw = mime_message(compose_email(evil, ORIGIN, TOKEN, NOW)).as_bytes(policy=POLICY)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Bcc"] is None
    assert message["Subject"] == ("[BIN Kerkstraat Bcc: everyone@example.com fake body] "
                                  "Dringend bericht van de politie")
    assert b"\r\nBcc:" not in raw


@pytest.mark.parametrize("changes", [
    {"to": "lid@example.be\r\nBcc: everyone@example.com"},
    {"to": "lid@example.be\nX-Evil: 1"},
    {"to": "not an address"},
    {"copy_id": "abc>\r\nBcc: x@y"},
])
def test_an_address_or_id_with_line_breaks_is_refused(wav: Path, changes: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        compose_email(content(wav, **changes), ORIGIN, TOKEN, NOW)


@pytest.mark.parametrize("origin", [
    MailOrigin("bin@zone.example.be\r\nBcc: everyone@example.com"),
    MailOrigin("bin@zone.example.be", "afmelden@zone.example.be\nX: y"),
    MailOrigin("bin@zone.example.be", "", "https://bin.example.be/unsubscribe\r\nX-Evil: 1"),
    MailOrigin("bin@zone.example.be", "", "https://bin.example.be/un subscribe"),
    MailOrigin("no address here"),
])
def test_a_configured_address_with_line_breaks_is_refused(wav: Path, origin: MailOrigin) -> None:
    with pytest.raises(ValueError):
        compose_email(content(wav), origin, TOKEN, NOW)


def test_the_wire_refuses_a_header_with_a_line_break_whoever_made_it(wav: Path) -> None:
    mail = compose_email(content(wav), ORIGIN, TOKEN, NOW)
    for forged in (dataclasses.replace(mail, subject="Hallo\r\nBcc: x@example.com"),
                   dataclasses.replace(mail, headers={**mail.headers, "X-Note": "a\nb"}),
                   dataclasses.replace(mail, headers={**mail.headers, "Bad Name:": "x"})):
        with pytest.raises(ValueError):
            mime_message(forged)


# -- the relay ---------------------------------------------------------------------------------------


@pytest.fixture
def relay() -> Iterator[SmtpLab]:
    with SmtpLab(refused={REFUSED}) as lab:
        yield lab


async def test_a_copy_is_delivered_inside_starttls_after_auth(relay: SmtpLab, wav: Path) -> None:
    mail = compose_email(content(wav), ORIGIN, TOKEN, NOW)
    answer = await relay.mailer().send(mail)
    assert answer.startswith("250 ")
    [received] = relay.wait_for(1)
    assert answer.endswith(received.queue_id)
    assert received.tls and received.authenticated
    assert received.mail_from == "bin@politie-brugge.example.be"
    assert received.rcpt_tos == ("lid.17@example.be",)
    assert received.message["Message-ID"] == mail.message_id
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [attachment] = received.message.iter_attachments()
    assert attachment.get_content() == wav.read_bytes()


async def test_each_copy_is_its_own_transaction(relay: SmtpLab, wav: Path) -> None:
    mailer = relay.mailer()
    for n in (1, 2, 3):
        await mailer.send(compose_email(content(wav, copy_id=f"copy-{n}", to=f"lid.{n}@example.be"), ORIGIN,
                                        TOKEN, NOW))
    received = relay.wait_for(3)
    assert [r.rcpt_tos for r in received] == [("lid.1@example.be",), ("lid.2@example.be",), ("lid.3@example.be",)]
    assert len({r.queue_id for r in received}) == 3


async def test_a_mailbox_the_relay_does_not_know_is_a_bounce(relay: SmtpLab, wav: Path) -> None:
    with pytest.raises(SendRefused, match=r"^550 5\.1\.1 .*User unknown"):
        await relay.mailer().send(compose_email(content(wav, to=REFUSED), ORIGIN, TOKEN, NOW))
    assert relay.messages == []


async def test_a_relay_that_is_away_is_a_passing_failure(wav: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailer = SmtpMailer("127.0.0.1", port, "starttls", timeout=5.0, local_hostname="localhost")
    with pytest.raises(SendFailed):
        await mailer.send(compose_email(content(wav), ORIGIN, TOKEN, NOW))


async def test_nothing_goes_in_clear_to_a_relay_without_starttls(wav: Path) -> None:
    with SmtpLab(security="none") as plain:
        mailer = SmtpMailer(plain.host, plain.port, "starttls", timeout=10.0, local_hostname="localhost")
        with pytest.raises(SendFailed, match="does not offer STARTTLS"):
            await mailer.send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
        assert plain.messages == []
        # The same relay takes the copy when the settings say it is a loopback relay without TLS.
        await plain.mailer().send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
        [received] = plain.wait_for(1)
        assert not received.tls and not received.authenticated


async def test_a_certificate_our_ca_file_does_not_sign_is_refused(relay: SmtpLab, wav: Path) -> None:
    with pytest.raises(SendFailed, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await relay.mailer(ca_file=None).send(compose_email(content(wav), ORIGIN, TOKEN, NOW))  # the system's CAs
    assert relay.messages == []


async def test_a_wrong_password_is_a_failure_not_a_bounce(relay: SmtpLab, wav: Path) -> None:
    with pytest.raises(SendFailed, match="^535"):
        await relay.mailer(password="wrong").send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
    assert relay.messages == []


async def test_without_auth_the_relay_takes_nothing(relay: SmtpLab, wav: Path) -> None:
    with pytest.raises(SendFailed, match="^530"):
        await relay.mailer(username="").send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
    assert relay.messages == []


async def test_implicit_tls_is_delivered_too(wav: Path) -> None:
    with SmtpLab(security="tls") as lab:
        await lab.mailer().send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
        [received] = lab.wait_for(1)
        assert received.tls and received.authenticated


@pytest.mark.parametrize("language", ["nl", "fr", "de"])
async def test_a_recording_that_is_gone_is_left_out_and_the_body_says_so(relay: SmtpLab, wav: Path,
                                                                         language: str) -> None:
    mail = compose_email(content(wav, language=language), ORIGIN, TOKEN, NOW)
    wav.unlink()
    answer = await relay.mailer().send(mail)
    assert answer.startswith("250 ") and "without the recording (bin-12-bericht-345.wav" in answer
    [received] = relay.wait_for(1)
    assert list(received.message.iter_attachments()) == []
    body = received.message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert email_module.WORDING[language]["audio_missing"] in text
    assert "bin-12-bericht-345.wav" not in text  # no longer said to be attached
    assert email_module.WORDING[language]["callback"].format(number="+3250000000") in text


async def test_a_recording_too_large_is_left_out(relay: SmtpLab, wav: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(email_module, "MAX_ATTACHMENT_BYTES", 1000)
    answer = await relay.mailer().send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
    assert "larger than 1000 bytes" in answer
    [received] = relay.wait_for(1)
    assert list(received.message.iter_attachments()) == []


@pytest.mark.parametrize(("code", "said", "at_rcpt", "bounce"), [
    (550, "5.1.1 <x@example.be>: Recipient address rejected: User unknown", True, True),
    (552, "5.2.2 Mailbox full", True, True),
    (552, "5.2.2 Mailbox full", False, True),           # after DATA, the mailbox's too
    (550, "Requested action not taken: mailbox unavailable", True, True),
    (553, "Requested action not taken: mailbox name not allowed", True, True),
    (554, "5.7.1 <x@example.be>: Relay access denied", True, False),
    (550, "5.7.1 Client host rejected: access denied", True, False),
    (530, "5.7.0 Authentication required", True, False),
    (552, "5.3.4 Message size exceeds fixed limit", False, False),
    (554, "5.5.0 Error: no valid recipients", False, False),
    (554, "Transaction failed", False, False),
    (550, "Requested action not taken", False, False),   # a plain 550 to the message: not the address's
    (450, "4.2.0 Mailbox busy", True, False),
])
def test_only_a_refusal_of_the_recipient_is_a_bounce(code: int, said: str, at_rcpt: bool, bounce: bool) -> None:
    assert is_bounce(code, said.encode(), at_rcpt=at_rcpt) is bounce


async def test_a_relay_that_denies_relaying_is_a_failure_not_a_bounce(wav: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    with SmtpLab(deny_relay=True) as lab:
        with caplog.at_level(logging.ERROR, logger="ivr.copies.smtp"), \
                pytest.raises(SendFailed, match=r"^554 5\.7\.1 .*Relay access denied") as caught:
            await lab.mailer().send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
        assert type(caught.value) is SendFailed
        assert lab.messages == []
    [record] = caplog.records
    assert "Relay access denied" in record.getMessage() and "lid.17@example.be" not in record.getMessage()


@pytest.mark.parametrize(("answer", "outcome"), [
    ("552 5.2.2 <lid.17@example.be>: Mailbox full", SendRefused),
    ("550 Mailbox unavailable", SendRefused),
    ("452 4.5.3 Too many recipients", SendFailed),
    ("530 5.7.0 Authentication required", SendFailed),
])
async def test_the_relays_answer_to_the_recipient_decides(relay: SmtpLab, wav: Path, answer: str,
                                                          outcome: type[Exception]) -> None:
    relay.rcpt_answers["lid.17@example.be"] = answer
    with pytest.raises(outcome) as caught:
        await relay.mailer().send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
    assert type(caught.value) is outcome and str(caught.value) == answer


async def test_no_answer_once_the_message_was_sent_is_uncertain(relay: SmtpLab, wav: Path) -> None:
    relay.answer_data.clear()  # the relay queues the message and goes silent
    try:
        with pytest.raises(SendUncertain, match="no answer after the message was sent"):
            await relay.mailer(timeout=2.0).send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
    finally:
        relay.answer_data.set()
    [received] = relay.wait_for(1)  # it did arrive: sending it again gives the same Message-ID
    assert received.message["Message-ID"].startswith("<6f1c1e0a-")


async def test_the_message_is_built_and_sent_in_the_executor(relay: SmtpLab, wav: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    built_in: list[str] = []
    real = email_module.mime_message

    def recorded(mail: EmailCopy) -> email.message.EmailMessage:
        built_in.append(threading.current_thread().name)
        return real(mail)

    monkeypatch.setattr(email_module, "mime_message", recorded)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail-pool") as pool:
        await relay.mailer(executor=pool).send(compose_email(content(wav), ORIGIN, TOKEN, NOW))
    assert len(built_in) == 1 and built_in[0].startswith("mail-pool")  # the recording read off the loop
    relay.wait_for(1)


def test_a_relay_in_clear_must_be_on_loopback_and_never_gets_a_password() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SmtpMailer("smtp.example.be", 25, "none")
    with pytest.raises(ValueError, match="AUTH"):
        SmtpMailer("127.0.0.1", 25, "none", username="binfoon", password="secret")
    with pytest.raises(ValueError):
        SmtpMailer("smtp.example.be", 587, "maybe")
    assert "secret" not in repr(SmtpMailer("smtp.example.be", 587, "starttls", "binfoon", "secret"))


def test_the_lab_starts_and_stops_once_whatever_is_asked() -> None:
    lab = SmtpLab()
    lab.stop()  # not started: nothing to do
    lab.start()
    port = lab.port
    assert lab.start() is lab and lab.port == port
    lab.stop()
    lab.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nobody listens there any more
