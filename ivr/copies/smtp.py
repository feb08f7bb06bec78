"""The SMTP edge of the e-mail copies: ``SmtpMailer`` hands one composed copy (``ivr.copies.email``) to
the relay.

Rules:
- every copy is its own SMTP transaction (one recipient); with ``starttls`` nothing is sent unless the
  relay offers STARTTLS and its certificate verifies; AUTH only ever inside TLS; ``none`` is for a
  relay on loopback only;
- the relay's answers decide: only a refusal of this recipient's address or mailbox is a bounce
  (``SendRefused``, its text kept): an enhanced status 5.1.x or 5.2.x, or without one a plain 550, 551
  or 553 to RCPT. Every other refusal would refuse every member alike (5.7.x "Relay access denied",
  530 authentication required, 5.3.4 message too big, 5.5.x), so it is ``SendFailed`` (tried again
  later, logged as an error), as are 4xx, an unreachable relay and a timeout before the message was
  sent. No answer once the message was sent (after DATA's final dot) is ``SendUncertain``: the relay
  may have queued it (the sender sends it again later with the same Message-ID);
- the message is built (the recording read and base64-encoded) in ``executor`` with the SMTP exchange,
  never on the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import smtplib
import ssl
from concurrent.futures import Executor
from pathlib import Path

from ivr.copies.email import mailbox, one_line, wire_bytes
from ivr.copies.gateways import EmailCopy, SendFailed, SendRefused, SendUncertain

log = logging.getLogger(__name__)

#: The relay's answers and refusals are kept this short (``TextCopy.detail``).
DETAIL_CHARS = 200
_SECURITY = ("starttls", "tls", "none")
#: RFC 3463 enhanced status code at the start of an SMTP answer's text: class.subject.detail.
_ENHANCED = re.compile(r"^\s*([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.])")
#: Enhanced subjects that are this recipient's: 1 addressing (no such user), 2 mailbox (full, disabled).
_RECIPIENT_SUBJECTS = ("1", "2")
#: Plain answers to RCPT that refuse the address itself (RFC 5321: mailbox unavailable, not local, not allowed).
_RECIPIENT_CODES = (550, 551, 553)
_ADDRESS = re.compile(r"[^\s<>\"]+@[^\s<>\"]+")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _answer(code: int, text: bytes | str) -> str:
    said = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return one_line(f"{code} {said}", DETAIL_CHARS)


class SmtpMailer:
    """The ``Mailer`` that hands e-mail copies to an SMTP relay (stdlib ``smtplib`` in a worker thread)."""

    def __init__(self, host: str, port: int, security: str = "starttls", username: str = "", password: str = "",
                 ca_file: str | Path | None = None, timeout: float = 30.0, local_hostname: str | None = None,
                 executor: Executor | None = None) -> None:
        """``security``: ``starttls`` (STARTTLS required), ``tls`` (implicit, 465) or ``none`` (a relay on
        loopback only). ``ca_file``: the PEM that signs the relay's certificate (``None``: the system's
        CAs). ``username``: AUTH after TLS (never with ``none``). ``timeout``: seconds per socket
        operation. ``local_hostname``: the EHLO name (``None``: this machine's FQDN). ``executor``: where
        the message is built and the exchange runs (``None``: the loop's default executor)."""
        if security not in _SECURITY:
            raise ValueError(f"smtp security must be one of {', '.join(_SECURITY)}, not {security!r}")
        if security == "none" and not _is_loopback(host):
            raise ValueError(f"smtp security none is for a relay on loopback only, not {host!r}")
        if security == "none" and username:
            raise ValueError("smtp: no AUTH without TLS (the password would cross in clear)")
        self.host = host
        self.port = int(port)
        self.security = security
        self.username = username
        self._password = password
        self.ca_file = str(ca_file) if ca_file else None
        self.timeout = float(timeout)
        self.local_hostname = local_hostname
        self.executor = executor
        self._context: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"SmtpMailer({self.host}:{self.port}, {self.security}, user={self.username or '-'})"

    def _tls(self) -> ssl.SSLContext:
        # Certificate and host name both verified (the default context); only our CA when one is given.
        if self._context is None:
            self._context = ssl.create_default_context(cafile=self.ca_file)
        return self._context

    def _failure(self, exc: BaseException) -> str:
        return one_line(f"{self.host}:{self.port}: {exc or type(exc).__name__}", DETAIL_CHARS)

    async def send(self, mail: EmailCopy) -> str:
        """Hand ``mail`` to the relay in its own transaction; returns the relay's answer to the message
        ("250 ... queued as ..."; with why the recording was left out, if it was). ``SendFailed``: try
        again later; ``SendRefused``: a bounce; ``SendUncertain``: sent, but the relay's answer is lost."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._transaction, mail)

    def _transaction(self, mail: EmailCopy) -> str:
        try:
            _, sender = mailbox(mail.headers.get("From", ""), "From")
            if not mail.to.isascii():
                raise ValueError(f"{mail.to!r}: an address beyond ASCII needs SMTPUTF8, not used here")
            message, left_out = wire_bytes(mail)
        except ValueError as exc:
            # Nothing to hand over (a header or an address refused): it will not get better.
            raise SendRefused(one_line(f"not sent: {exc}", DETAIL_CHARS)) from None
        if left_out:
            log.warning("e-mail copy %s goes without its recording (%s)", mail.copy_id, left_out)
        answer = self._exchange(sender, mail.to, message)
        return one_line(f"{answer}; sent without the recording ({left_out})", DETAIL_CHARS) if left_out else answer

    def _exchange(self, sender: str, to: str, wire: bytes) -> str:
        try:
            if self.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                                      timeout=self.timeout, context=self._tls())
            else:
                smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)
        except OSError as exc:
            # Refused, timed out, no route, TLS failed (certificate): the relay, not the member.
            raise SendFailed(self._failure(exc)) from None
        try:
            smtp.ehlo()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise SendFailed(f"{self.host}:{self.port} does not offer STARTTLS: not sent in clear")
                smtp.starttls(context=self._tls())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self._password)
            return self._deliver(smtp, sender, to, wire)
        except (SendFailed, SendRefused, SendUncertain):
            raise
        except smtplib.SMTPResponseException as exc:
            # AUTH refused, a command refused outside RCPT/DATA: the relay's setting, not the member's mailbox.
            raise self._refusal(exc.smtp_code, exc.smtp_error, at_rcpt=False, whose="the service") from None
        except (smtplib.SMTPException, OSError) as exc:
            smtp.close()  # broken or timed out: no QUIT to wait for
            raise SendFailed(self._failure(exc)) from None
        finally:
            # Once DATA was accepted the copy is sent, whatever QUIT then does. QUIT is said but its answer
            # not awaited: until the caller stores "sent", a crash would send this copy again (SMTP has no
            # idempotent hand-over), and waiting for "221" would make that window a round trip longer.
            if smtp.sock is not None:
                try:
                    smtp.send("QUIT\r\n")
                except (smtplib.SMTPException, OSError):
                    pass
            smtp.close()

    def _deliver(self, smtp: smtplib.SMTP, sender: str, to: str, wire: bytes) -> str:
        code, said = smtp.mail(sender)
        if code != 250:
            # Our own sender refused: the relay's setting, not the member's mailbox.
            raise self._refusal(code, said, at_rcpt=False, whose="the sender")
        code, said = smtp.rcpt(to)
        if code not in (250, 251):
            raise self._refusal(code, said, at_rcpt=True)
        # DATA by hand (smtplib's ``data`` hides where it failed): a failure up to the final dot means
        # the relay has no message; after it, the relay may have queued it.
        smtp.putcmd("data")
        code, said = smtp.getreply()
        if code != 354:
            raise self._refusal(code, said, at_rcpt=False)
        body = _DOT_LINE.sub(b"..", wire)
        smtp.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        try:
            code, said = smtp.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            raise SendUncertain(self._failure(exc) + ": no answer after the message was sent, the relay may "
                                "have queued it") from None
        if code != 250:
            raise self._refusal(code, said, at_rcpt=False)
        return _answer(code, said)

    def _refusal(self, code: int, said: bytes | str, *, at_rcpt: bool, whose: str = "") -> Exception:
        """What the relay's refusal means: a bounce (``SendRefused``) when it is this recipient's address or
        mailbox (see the module's rules), else ``SendFailed``, logged as an error when permanent."""
        answer = _answer(code, said)
        if is_bounce(code, said, at_rcpt=at_rcpt) and not whose:
            return SendRefused(answer)
        if 500 <= code < 600:
            log.error("the relay %s:%s refuses %s for a reason that is not the member's mailbox (%s): check "
                      "the relay's settings for this service", self.host, self.port, whose or "a copy",
                      _ADDRESS.sub("<address>", answer))
        return SendFailed(answer)


#: A line of the message that starts with a dot: doubled on the wire (RFC 5321 4.5.2).
_DOT_LINE = re.compile(rb"(?m)^\.")


def is_bounce(code: int, said: bytes | str, *, at_rcpt: bool) -> bool:
    """Whether the relay's answer ``code said`` refuses this recipient for good (its address or mailbox):
    an enhanced status 5.1.x or 5.2.x; without an enhanced status, 550, 551 or 553 to RCPT."""
    if not 500 <= code < 600:
        return False
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
    enhanced = _ENHANCED.match(text)
    if enhanced is not None:
        return enhanced.group(1) == "5" and enhanced.group(2) in _RECIPIENT_SUBJECTS
    return at_rcpt and code in _RECIPIENT_CODES
