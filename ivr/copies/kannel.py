"""The SMS edge of the copies: Kannel (bearerbox + smsbox) and its sendsms interface.

Sending (``KannelGateway``):
- one HTTP GET to smsbox's sendsms per copy, on loopback, no proxy ever (the password is in the query);
  GSM-7 text as is, anything else as UCS-2 (``coding=2``), UTF-8 on the wire either way; a text over
  ``MAX_SEGMENTS`` SMS is refused here (Kannel's ``max-messages`` would cut it silently);
- every copy asks for all delivery reports (``dlr-mask=31``) at
  ``<callback_base>/kannel/dlr?copy=<copy id>&type=%d&sig=<signature of the copy id>``: Kannel fills in
  ``%d``, and since it would also take ``%A``, ``%C``... in an escaped value for its own codes, the copy
  id and the signature must be URL-safe as they are (never percent-escaped); without a callback
  listener (``sms_callback_port = 0``) no reports are asked for;
- smsbox's answer decides: 2xx (``0: Accepted for delivery``, ``3: Queued for later delivery``) is the
  copy handed over; 400 (a field of this request refused: "Missing receiver number, rejected") is
  ``SendRefused``; every other answer is a state of the whole gateway, not of this copy, so
  ``SendFailed`` (tried again later) and logged as an error: 401/403 (a wrong sendsms password, an
  address ``user-allow-ip`` does not allow, "Not routable. Do not try again." when bearerbox has no
  SMSC for it, the operator's link included), 404 (a wrong ``sms_sendsms_url``), 5xx ("Temporal
  failure, try again later.");
- no connection (refused, timed out, TLS failed) or a request not written whole is ``SendFailed``:
  smsbox acts on a whole request only. No answer once the request went (timed out, the connection
  closed, an answer that is no HTTP) is ``SendUncertain``: smsbox may have taken the copy, and Kannel
  has no idempotency key, so the sender waits for its delivery report before sending it again;
- the blocking HTTP exchange runs in ``executor`` (a worker thread), never on the event loop.

Its configuration (the boxes, the operator's SMPP account, the firewall rules) is
``ivr.copies.kannel_config``; ``read_secret`` reads the password files of both.
"""

from __future__ import annotations

import asyncio
import errno
import http.client
import logging
import os
import re
import ssl
import stat
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from ivr.copies.gateways import SendFailed, SendRefused, SendUncertain, SmsCopy
from ivr.copies.sms_text import MAX_SEGMENTS, measure
from ivr.copies.tokens import sign

if TYPE_CHECKING:
    from ivr.config import Settings

log = logging.getLogger(__name__)

#: The purposes the copies key signs Kannel's callbacks for (``ivr.copies.tokens``).
DLR_PURPOSE = "dlr"
MO_PURPOSE = "mo"
#: Delivery reports asked for: delivered 1, undelivered 2, buffered 4, accepted by the SMSC 8, rejected 16.
DLR_MASK = 31
#: smsbox's answers and refusals are kept this short (``TextCopy.detail``).
DETAIL_CHARS = 200
#: The most of smsbox's answer read (it is one line).
MAX_ANSWER_BYTES = 4096
#: A password file is one short line.
MAX_SECRET_BYTES = 1024

_COPY_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_URL_SAFE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_NUMBER = re.compile(r"^\+[1-9][0-9]{6,14}$")
#: A sender is a number (with or without +) or an alphanumeric name of at most 11 characters.
_SENDER = re.compile(r"^(\+?[0-9]{3,15}|[A-Za-z0-9]{1,11})$")
_BASE = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(value: str, limit: int = DETAIL_CHARS) -> str:
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def dlr_signer(key: bytes) -> Callable[[str], str]:
    """The signature a copy's delivery-report URL carries: the copies key's, for ``DLR_PURPOSE``."""
    return lambda copy_id: sign(key, DLR_PURPOSE, copy_id)


def mo_token(key: bytes) -> str:
    """The token Kannel's reply URL carries (``sig=``): one per installation, the copies key's signature
    for ``MO_PURPOSE``. The service checks it on every reply; a new key needs a new Kannel configuration."""
    return sign(key, MO_PURPOSE, "kannel")


def check_callback_base(value: str) -> str:
    """``value`` as the base of Kannel's callback URLs (``http://127.0.0.1:8491``, no trailing slash);
    ``ValueError`` for anything with a query, an escape, a quote or white space in it."""
    value = value.rstrip("/")
    if not _BASE.match(value):
        raise ValueError(f"not a callback base URL (http://host:port, no query): {value!r}")
    return value


def dlr_url(base: str, copy_id: str, signature: str) -> str:
    """The delivery-report URL of one copy, ``%d`` left for Kannel (the report's type)."""
    if not _COPY_ID.match(copy_id):
        raise ValueError(f"not a copy id: {copy_id[:80]!r}")
    if not _URL_SAFE.match(signature):
        raise ValueError("the copy's signature is not URL-safe (hex or base64url expected)")
    return f"{check_callback_base(base)}/kannel/dlr?copy={copy_id}&type=%d&sig={signature}"


def mo_url(base: str, token: str) -> str:
    """The URL smsbox fetches for every member's SMS: sender, receiver, all words, Kannel's id, when Kannel
    received it (Unix seconds: a reply retried after an outage keeps its own time), the token."""
    if not _URL_SAFE.match(token):
        raise ValueError("the reply token is not URL-safe (hex or base64url, 16 to 128 characters)")
    return f"{check_callback_base(base)}/kannel/mo?from=%p&to=%P&text=%a&id=%I&ts=%T&sig={token}"


# -- sending ------------------------------------------------------------------------------------------------
class KannelGateway:
    """The ``SmsGateway`` that hands SMS copies to Kannel's smsbox (stdlib ``http.client`` in a worker thread)."""

    def __init__(self, sendsms_url: str, username: str, password: str, callback_base: str,
                 sign: Callable[[str], str], timeout: float = 20.0, executor: Executor | None = None) -> None:
        """``sendsms_url``: smsbox's ``http://127.0.0.1:13013/cgi-bin/sendsms``. ``callback_base``: where
        the service takes delivery reports (``http://127.0.0.1:<sms_callback_port>``; empty: none are
        asked for, as with ``sms_callback_port = 0``). ``sign``: the
        signature of a copy id its report URL carries (``dlr_signer(key)``). ``timeout``: seconds for
        each socket operation (connecting, each read). ``executor``: where the blocking exchange runs
        (``None``: the loop's default executor)."""
        parts = urllib.parse.urlsplit(sendsms_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment or _CONTROL.search(sendsms_url):
            raise ValueError(f"sms_sendsms_url: not an http URL: {sendsms_url!r}")
        try:
            _ = parts.port  # a port that is none raises here
        except ValueError:
            raise ValueError(f"sms_sendsms_url: bad port in {sendsms_url!r}") from None
        if not username or _CONTROL.search(username) or not password:
            raise ValueError("the sendsms account needs a user name and a password")
        self.sendsms_url = sendsms_url
        self.username = username
        self._password = password
        self.callback_base = check_callback_base(callback_base) if callback_base else ""
        self._sign = sign
        self.timeout = float(timeout)
        self.executor = executor

    @classmethod
    def from_settings(cls, settings: Settings, sign: Callable[[str], str],
                      executor: Executor | None = None) -> KannelGateway:
        """The gateway ``settings`` describe (``sms_sendsms_url``, ``sms_username``, the password in
        ``sms_password_file``, reports to ``127.0.0.1:sms_callback_port``). ``KannelConfigError`` for a
        password file that is missing, empty or readable by others."""
        password = read_secret("sms_password_file", settings.sms_password_file)
        port = settings.sms_callback_port
        return cls(settings.sms_sendsms_url, settings.sms_username, password,
                   f"http://127.0.0.1:{port}" if port else "", sign, executor=executor)

    def __repr__(self) -> str:
        return f"KannelGateway({self._place}, user={self.username})"

    @property
    def _place(self) -> str:
        where = urllib.parse.urlsplit(self.sendsms_url)
        return f"{where.hostname}:{where.port or (443 if where.scheme == 'https' else 80)}"

    def request_url(self, sms: SmsCopy) -> str:
        """The sendsms URL for ``sms`` (it holds the password: never logged). ``SendRefused`` for a copy
        that cannot be sent as it is (a number that is none, an empty or too long text, a bad id)."""
        if not _NUMBER.match(sms.to):
            raise SendRefused(f"not sent: {sms.to[:20]!r} is not an E.164 number")
        if not _SENDER.match(sms.sender):
            raise SendRefused(f"not sent: {sms.sender[:20]!r} is not an SMS sender (a number or 11 letters/digits)")
        if not sms.text.strip():
            raise SendRefused("not sent: the text is empty")
        measured = measure(sms.text)
        unicode = sms.unicode or measured.unicode
        if measured.segments > MAX_SEGMENTS:
            raise SendRefused(f"not sent: the text is {measured.segments} SMS, at most {MAX_SEGMENTS} are sent")
        query = {"username": self.username, "password": self._password, "from": sms.sender, "to": sms.to,
                 "text": sms.text, "charset": "UTF-8"}
        if self.callback_base:
            try:
                query["dlr-url"] = dlr_url(self.callback_base, sms.copy_id, self._sign(sms.copy_id))
            except ValueError as exc:
                raise SendRefused(f"not sent: {exc}") from None
            query["dlr-mask"] = str(DLR_MASK)
        if unicode:
            query["coding"] = "2"
        separator = "&" if urllib.parse.urlsplit(self.sendsms_url).query else "?"
        return self.sendsms_url + separator + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)

    async def send(self, sms: SmsCopy) -> str:
        """Hand ``sms`` to smsbox; returns its answer ("0: Accepted for delivery"). ``SendFailed``: try
        again later; ``SendRefused``: this copy will not go (the answer says why); ``SendUncertain``:
        the request went but no answer came (smsbox may have taken it)."""
        url = self.request_url(sms)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._get, url)

    def _get(self, url: str) -> str:
        """One GET of ``url`` on its own connection (no proxy, no redirect followed: it holds the password)."""
        parts = urllib.parse.urlsplit(url)
        place = self._place
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=self.timeout,
                                                     context=ssl.create_default_context())
        else:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            try:
                connection.connect()
                connection.request("GET", f"{parts.path or '/'}?{parts.query}", headers={"Connection": "close"})
            except (OSError, http.client.HTTPException) as exc:
                # Not connected, or the request not written whole: smsbox acts on a whole request only.
                raise SendFailed(_one_line(f"smsbox {place}: {_reason(exc)}")) from None
            try:
                answer = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise SendUncertain(_one_line(f"smsbox {place}: no answer after the request was sent "
                                              f"({_reason(exc)}): it may have taken the copy")) from None
            status = answer.status
            try:
                body = answer.read(MAX_ANSWER_BYTES)
            except (OSError, http.client.HTTPException):
                body = b""  # the status said it
        finally:
            connection.close()
        said = _one_line(body.decode("utf-8", "replace"))
        if 200 <= status < 300:
            return said or f"{status}"
        detail = _one_line(f"smsbox {status}: {said}")
        if status == 400:
            raise SendRefused(detail)
        hint = _HINTS.get(status) or (_HINTS[500] if status >= 500 else "not an answer smsbox gives: is "
                                      "sms_sendsms_url smsbox's?")
        log.error("smsbox %s refuses every SMS for now (%s): %s", place, detail, hint)
        raise SendFailed(detail)


#: What an answer other than 2xx and 400 says about the gateway, for the service's log.
_HINTS = {
    401: "check sms_username and sms_password_file against Kannel's sendsms-user",
    403: ("a wrong sendsms password, an address user-allow-ip does not allow, or 'Not routable': bearerbox has "
          "no SMSC for it (is the operator's SMPP link up? see bearerbox's status page)"),
    404: "check sms_sendsms_url (smsbox's path is /cgi-bin/sendsms)",
    500: "smsbox or bearerbox is in trouble (see Kannel's logs); the copies are tried again",
}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# -- its secrets --------------------------------------------------------------------------------------------
class KannelConfigError(ValueError):
    """A password file cannot be used, or a value cannot go into Kannel's configuration safely
    (``ivr.copies.kannel_config``); the message names the setting."""


def read_secret(setting: str, path: str) -> str:
    """The password in the file ``path`` (its one line); ``KannelConfigError`` naming ``setting`` for a
    file that is missing, unreadable, a symbolic link, empty, more than one line, or readable or
    writable by others."""
    if not path:
        raise KannelConfigError(f"{setting}: not set")
    try:
        # Not followed if it is a link: the mode checked is the mode of what is read.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KannelConfigError(f"{setting}: {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KannelConfigError(f"{setting}: {path} is a symbolic link; give the file itself") from None
        raise KannelConfigError(f"{setting}: {path} cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KannelConfigError(f"{setting}: {path} is not a file")
        if info.st_mode & 0o077:
            raise KannelConfigError(f"{setting}: {path} is readable or writable by others (mode "
                                    f"{info.st_mode & 0o777:04o}); chmod 600 it")
        try:
            secret = source.read(MAX_SECRET_BYTES + 1).decode("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise KannelConfigError(f"{setting}: {path} cannot be read ({exc})") from None
    if not secret.strip() or _CONTROL.search(secret) or len(secret) > MAX_SECRET_BYTES:
        raise KannelConfigError(f"{setting}: {path} must hold the password on one line")
    return secret
