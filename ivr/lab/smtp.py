"""The lab's SMTP relay: a real ``aiosmtpd`` server on loopback, for the tests and the demo.

It behaves like the relay a zone would give us, so ``SmtpMailer`` is tested as it runs in production:
- STARTTLS with a certificate for ``localhost`` / ``127.0.0.1``, signed by a CA made for this relay
  (``ca_file``: what the mailer is told to trust); nothing but EHLO, STARTTLS and QUIT before TLS;
- AUTH (PLAIN, LOGIN) required, only inside TLS, with a password drawn per relay;
- addresses in ``refused`` get ``550 5.1.1`` at RCPT (a bounce), those in ``rcpt_answers`` the answer
  given there; with ``deny_relay`` every RCPT gets ``554 5.7.1 Relay access denied`` (a relay that
  does not take our mail at all); every accepted message is kept, parsed, with its envelope, in a
  list the tests read while the relay's thread appends to it;
- ``answer_data`` cleared: a message is kept (queued) but its "250" held back until it is set again,
  as a relay that queued a message and then went silent;
- ``security="tls"`` listens with implicit TLS instead, ``security="none"`` with neither TLS nor AUTH
  (a relay that does not offer STARTTLS, which the mailer must refuse to use).

Start and stop are idempotent; ``with SmtpLab() as relay:`` starts and stops it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import logging
import secrets
import shutil
import ssl
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ivr.copies.smtp import SmtpMailer

HOST = "127.0.0.1"
#: aiosmtpd 1.4 logs these on every AUTH (it sets its own deprecated ``Session.login_data``) and every
#: implicit-TLS connection (AUTH allowed outside STARTTLS): noise in the lab's logs.
_OWN_DEPRECATIONS = ("Session.login_data is deprecated", "auth_required == True but auth_require_tls == False")
#: The largest message the relay takes (a minute of audio is ~1 MB; a real relay has a limit too).
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Received:
    """One message the relay accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    #: The queue id the relay answered with ("250 2.0.0 Ok: queued as <id>").
    queue_id: str
    #: Whether the message came inside TLS, and after AUTH.
    tls: bool
    authenticated: bool


def make_certificates(folder: Path, names: tuple[str, ...] = ("localhost", HOST)) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signs for ``names`` (DNS names and IP addresses), written to
    ``folder``: (CA certificate, server certificate, server key), PEM, the key 0600."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BINfoon lab SMTP CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


def _quiet_aiosmtpd(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_OWN_DEPRECATIONS)


class _Handler:
    """aiosmtpd's hooks: refuse some recipients, keep every accepted message."""

    def __init__(self, lab: SmtpLab) -> None:
        self.lab = lab

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.lab.deny_relay:
            return f"554 5.7.1 <{address}>: Relay access denied"
        if address.lower() in self.lab.refused:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
        if address.lower() in self.lab.rcpt_answers:
            return self.lab.rcpt_answers[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        queue_id = secrets.token_hex(6).upper()
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        self.lab._received(Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), parsed, queue_id, tls,
                                    bool(session.authenticated)))
        while not self.lab.answer_data.is_set():  # queued, the answer held back
            await asyncio.sleep(0.02)
        return f"250 2.0.0 Ok: queued as {queue_id}"


class _Controller(Controller):
    """aiosmtpd's controller on a port the system picks (port 0: known once the server listens)."""

    def factory(self) -> SMTP:
        # With implicit TLS, AUTH is allowed outside STARTTLS (see ``SmtpLab.start``): aiosmtpd warns
        # about it for every connection, rightly in general, wrongly on a port that is all TLS.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpLab:
    """A real SMTP relay on 127.0.0.1 (see the module's rules)."""

    def __init__(self, security: str = "starttls", username: str = "binfoon-lab",
                 refused: set[str] | frozenset[str] = frozenset(), *, deny_relay: bool = False) -> None:
        if security not in ("starttls", "tls", "none"):
            raise ValueError(f"security must be starttls, tls or none, not {security!r}")
        self.security = security
        self.host = HOST
        self.port = 0
        self.username = username if security != "none" else ""
        self.password = secrets.token_urlsafe(18) if security != "none" else ""
        #: Recipients refused with 550 at RCPT (lower case); change it while the relay runs.
        self.refused: set[str] = {address.lower() for address in refused}
        #: Other answers to RCPT per recipient (lower case), e.g. "552 5.2.2 Mailbox full".
        self.rcpt_answers: dict[str, str] = {}
        #: Every RCPT refused "554 5.7.1 Relay access denied" (a relay that takes none of our mail).
        self.deny_relay = deny_relay
        #: Cleared: messages are queued but their "250" is held back until it is set again.
        self.answer_data = threading.Event()
        self.answer_data.set()
        self.ca_file: Path | None = None
        self._folder: Path | None = None
        self._controller: _Controller | None = None
        self._messages: list[Received] = []
        self._changed = threading.Condition()

    # -- life ------------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Listen (a second start does nothing); returns the relay."""
        if self._controller is not None:
            return self
        mail_log = logging.getLogger("mail.log")
        if _quiet_aiosmtpd not in mail_log.filters:
            mail_log.addFilter(_quiet_aiosmtpd)
        self._folder = Path(tempfile.mkdtemp(prefix="binfoon-smtp-lab-"))
        kwargs: dict[str, Any] = {"data_size_limit": MAX_MESSAGE_BYTES, "server_hostname": "localhost"}
        if self.security != "none":
            self.ca_file, cert_file, key_file = make_certificates(self._folder)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert_file, key_file)
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=True)
            if self.security == "starttls":
                kwargs.update(tls_context=context, require_starttls=True)
            else:
                # aiosmtpd counts only STARTTLS as TLS: on a listener that is all TLS, AUTH must be
                # allowed "without" it (nothing reaches this port in clear).
                kwargs.update(ssl_context=context, auth_require_tls=False)
        controller = _Controller(_Handler(self), hostname=HOST, port=0, **kwargs)
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self._controller = controller
        self.port = controller.port
        return self

    def stop(self) -> None:
        """Stop listening and remove the certificates (a second stop does nothing)."""
        self.answer_data.set()
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop(no_assert=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        # ``handled=False`` on a refusal: aiosmtpd then answers 535 (with its default ``True`` it says nothing).
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = secrets.compare_digest(auth_data.login, self.username.encode()) & \
            secrets.compare_digest(auth_data.password, self.password.encode())
        return AuthResult(success=True) if ok else AuthResult(success=False, handled=False)

    # -- what arrived ----------------------------------------------------------------------------------
    def _received(self, received: Received) -> None:
        with self._changed:
            self._messages.append(received)
            self._changed.notify_all()

    @property
    def messages(self) -> list[Received]:
        """The messages accepted so far, oldest first (a copy: the relay keeps appending)."""
        with self._changed:
            return list(self._messages)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Received]:
        """The messages once at least ``count`` have arrived (``TimeoutError`` after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._messages)} of {count} e-mails arrived within {timeout_s:.0f} s")
                self._changed.wait(left)
            return list(self._messages)

    def to(self, address: str) -> list[Received]:
        """The messages accepted for ``address``."""
        return [m for m in self.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]

    def mailer(self, **overrides: Any) -> SmtpMailer:
        """A ``SmtpMailer`` set up for this relay (its CA, account and security), as the service makes one."""
        options: dict[str, Any] = {"host": self.host, "port": self.port, "security": self.security,
                                   "username": self.username, "password": self.password, "ca_file": self.ca_file,
                                   "timeout": 30.0, "local_hostname": "localhost"}
        options.update(overrides)
        return SmtpMailer(**options)
