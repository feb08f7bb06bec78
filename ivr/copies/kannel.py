"""The SMS edge of the copies: Kannel (bearerbox + smsbox), its sendsms interface, and its configuration.

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

Configuring (``kannel_config``, ``binfoon kannel config``):
- every value a setting or secret puts in the file is quoted and escaped; line breaks and control
  characters are refused, and so is the word "include": Kannel 1.4.5 reads ANY line that contains it
  as an include directive (``xincludex`` as a password makes bearerbox open a file of that name);
- the boxes listen on loopback only; bearerbox keeps its queue and pending delivery reports on disk
  (``store-type = file``, ``dlr-storage = spool``); smsbox retries a callback the service did not
  answer with 200/202 every ``http-queue-delay`` s, ``http-request-retry`` times (an hour in
  production), so reports and replies wait out a restart of the service; smsbox never answers a member
  itself (``max-messages = 0``);
- bearerbox's status pages need ``status-password`` (else anyone on the machine reads the queue's
  numbers and texts in ``/store-status``); the admin commands need ``admin-password``;
- the logs hold numbers: smsbox logs at warning level, which keeps out its info lines (every number and
  text), but a callback it could not fetch is logged at ERROR with its whole URL (a member's number,
  words and the reply token). So Kannel's logs and spool are the ``kannel`` user's (``binfoon kannel
  config``: spool 0700, logs 0750 ``kannel:adm`` with 0640 files, ``UMask=0077`` for the boxes).
- Kannel does not authenticate the boxes: any local process that reaches bearerbox's smsbox port can
  attach as an smsbox and send SMS. ``nftables_rules`` lets only the ``kannel`` user reach the admin and
  smsbox ports, and only ``kannel`` and the service's user the sendsms port.
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
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
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
#: Kannel's standard ports (the Debian package's system bearerbox uses them).
ADMIN_PORT, SMSBOX_PORT, SENDSMS_PORT = 13000, 13001, 13013
#: Where the Debian package's boxes may write: the queue and delivery reports, and the logs.
SPOOL_DIR, LOG_DIR = Path("/var/spool/kannel"), Path("/var/log/kannel")
#: The user Debian's Kannel boxes run as.
KANNEL_USER = "kannel"
#: A password file is one short line.
MAX_SECRET_BYTES = 1024

_COPY_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_URL_SAFE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_NUMBER = re.compile(r"^\+[1-9][0-9]{6,14}$")
#: A sender is a number (with or without +) or an alphanumeric name of at most 11 characters.
_SENDER = re.compile(r"^(\+?[0-9]{3,15}|[A-Za-z0-9]{1,11})$")
_BASE = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
_HOST = re.compile(r"^[A-Za-z0-9.:\-\[\]]{1,253}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


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


# -- configuring --------------------------------------------------------------------------------------------
class KannelConfigError(ValueError):
    """A value cannot go into Kannel's configuration safely; the message names the setting."""


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


Value = str | int | bool


@dataclass(frozen=True)
class Group:
    """One ``group = ...`` of Kannel's configuration: (variable, value) in order."""

    name: str
    values: tuple[tuple[str, Value], ...]


def config_value(value: Value, what: str) -> str:
    """``value`` as Kannel's configuration reads it back unchanged: a number bare, a bool as
    ``true``/``false``, a string in double quotes with ``\\`` and ``"`` escaped. ``KannelConfigError``
    (naming ``what``) for a line break, another control character, or the word "include"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if _CONTROL.search(value):
        raise KannelConfigError(f"{what}: line breaks or control characters are not allowed in Kannel's configuration")
    if "include" in value.lower():
        raise KannelConfigError(f"{what}: Kannel reads any line with the word \"include\" in it as an include "
                                "directive; choose a value without it")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(groups: Sequence[Group], header: str = "") -> str:
    """The configuration file of ``groups`` (``header``: comment lines at the top)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for group in groups:
        lines += ["", f"group = {group.name}"]
        lines += [f"{name} = {config_value(value, f'{group.name}.{name}')}" for name, value in group.values]
    return "\n".join(lines).lstrip("\n") + "\n"


@dataclass(frozen=True)
class KannelSetup:
    """Everything of a Kannel installation but its SMSC connections (production and the lab share it)."""

    admin_password: str
    #: What bearerbox's status pages ask for (they show the queue: numbers and texts).
    status_password: str
    #: The sendsms account the service uses.
    username: str
    password: str
    #: Where smsbox fetches delivery reports and replies (``http://127.0.0.1:<sms_callback_port>``).
    callback_base: str
    #: The token of the reply URL (``mo_token``).
    mo_token: str
    spool_dir: Path
    log_dir: Path
    admin_port: int = ADMIN_PORT
    smsbox_port: int = SMSBOX_PORT
    sendsms_port: int = SENDSMS_PORT
    #: A callback not answered with 200/202 is fetched again every ``http_queue_delay`` s, this many times.
    http_request_retry: int = 360
    http_queue_delay: int = 10
    bearerbox_log_level: int = 1
    #: smsbox's info lines carry every number and text: warnings only in production (its errors still
    #: carry some: the logs are private, see the module's rules).
    smsbox_log_level: int = 2


def gateway_groups(setup: KannelSetup) -> list[Group]:
    """The core, smsbox, sendsms-user and sms-service groups of ``setup``."""
    for name in ("admin_port", "smsbox_port", "sendsms_port"):
        if not 1 <= getattr(setup, name) <= 65535:
            raise KannelConfigError(f"{name}: {getattr(setup, name)} is not a port")
    if not setup.admin_password or not setup.status_password or not setup.password or not setup.username:
        raise KannelConfigError("the admin and status passwords and the sendsms account's name and password "
                                "must not be empty")
    loopback = "127.0.0.1"
    core = Group("core", (
        ("admin-port", setup.admin_port), ("admin-interface", loopback), ("admin-password", setup.admin_password),
        ("status-password", setup.status_password), ("admin-deny-ip", "*.*.*.*"), ("admin-allow-ip", loopback),
        ("smsbox-port", setup.smsbox_port), ("smsbox-interface", loopback),
        ("box-deny-ip", "*.*.*.*"), ("box-allow-ip", loopback),
        ("log-file", str(setup.log_dir / "bearerbox.log")), ("log-level", setup.bearerbox_log_level),
        ("store-type", "file"), ("store-location", str(setup.spool_dir / "binfoon.store")),
        ("dlr-storage", "spool"), ("dlr-spool", str(setup.spool_dir / "dlr")),
    ))
    smsbox = Group("smsbox", (
        ("bearerbox-host", loopback), ("sendsms-port", setup.sendsms_port), ("sendsms-interface", loopback),
        ("log-file", str(setup.log_dir / "smsbox.log")), ("log-level", setup.smsbox_log_level),
        ("http-request-retry", setup.http_request_retry), ("http-queue-delay", setup.http_queue_delay),
    ))
    user = Group("sendsms-user", (
        ("username", setup.username), ("password", setup.password),
        ("max-messages", MAX_SEGMENTS), ("concatenation", True),
        ("user-deny-ip", "*.*.*.*"), ("user-allow-ip", loopback),
    ))
    try:
        replies_url = mo_url(setup.callback_base, setup.mo_token)
    except ValueError as exc:
        raise KannelConfigError(str(exc)) from None
    service = Group("sms-service", (
        ("keyword", "default"), ("catch-all", True), ("get-url", replies_url),
        ("max-messages", 0), ("accept-x-kannel-headers", False),
    ))
    return [core, smsbox, user, service]


def smpp_group(host: str, port: int, system_id: str, password: str, smsc_id: str = "operator",
               system_type: str = "") -> Group:
    """The operator's SMPP account, one transceiver bind (reports and replies come on it too).
    ``system_type``: what the operator asks for, if anything (Kannel refuses to start without the line)."""
    if not host or not _HOST.match(host):
        raise KannelConfigError(f"smpp_host: {host[:80]!r} is not a host name or address")
    if not 1 <= port <= 65535:
        raise KannelConfigError(f"smpp_port: {port} is not a port")
    if not system_id:
        raise KannelConfigError("smpp_system_id: empty (the SMPP account's name)")
    if not password:
        raise KannelConfigError("smpp_password_file: the SMPP password is empty")
    return Group("smsc", (
        ("smsc", "smpp"), ("smsc-id", smsc_id), ("host", host), ("port", port),
        ("smsc-username", system_id), ("smsc-password", password), ("system-type", system_type),
        ("transceiver-mode", True),
        ("enquire-link-interval", 30), ("reconnect-delay", 10), ("max-pending-submits", 10),
    ))


def sendsms_port(sendsms_url: str) -> int:
    """The port of ``sms_sendsms_url`` (``SENDSMS_PORT`` when it is empty); ``KannelConfigError`` for a URL
    that is not smsbox on loopback (the configuration written makes smsbox listen there only)."""
    if not sendsms_url:
        return SENDSMS_PORT
    parts = urllib.parse.urlsplit(sendsms_url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost") or parts.path != "/cgi-bin/sendsms":
        raise KannelConfigError(f"sms_sendsms_url: {sendsms_url!r} is not http://127.0.0.1:<port>/cgi-bin/sendsms "
                                "(smsbox listens on loopback only)")
    try:
        return parts.port or 80
    except ValueError:
        raise KannelConfigError(f"sms_sendsms_url: bad port in {sendsms_url!r}") from None


def kannel_config(settings: Settings, password: str, smpp_password: str, callback_port: int, mo_token: str, *,
                  admin_password: str, status_password: str, spool_dir: Path = SPOOL_DIR, log_dir: Path = LOG_DIR,
                  admin_port: int = ADMIN_PORT, smsbox_port: int = SMSBOX_PORT) -> str:
    """The production Kannel configuration for the operator's SMPP account in ``settings``: ``password``
    is the sendsms account's (``sms_username``), ``smpp_password`` the operator's, ``callback_port`` the
    service's ``sms_callback_port``, ``mo_token`` the reply URL's token, ``admin_password`` and
    ``status_password`` bearerbox's admin commands' and status pages'; smsbox's sendsms port is
    ``sms_sendsms_url``'s. ``KannelConfigError`` naming the
    setting for anything that cannot go in safely."""
    if not 1 <= callback_port <= 65535:
        raise KannelConfigError(f"sms_callback_port: {callback_port} is not a port (delivery reports and replies "
                                "need the service's callback listener)")
    setup = KannelSetup(admin_password=admin_password, status_password=status_password,
                        username=settings.sms_username, password=password,
                        callback_base=f"http://127.0.0.1:{callback_port}", mo_token=mo_token,
                        spool_dir=spool_dir, log_dir=log_dir, admin_port=admin_port, smsbox_port=smsbox_port,
                        sendsms_port=sendsms_port(settings.sms_sendsms_url))
    groups = gateway_groups(setup)
    groups.insert(1, smpp_group(settings.smpp_host, settings.smpp_port, settings.smpp_system_id, smpp_password))
    header = ("BINfoon's Kannel, written by `binfoon kannel config`: the operator's SMPP account,\n"
              "sendsms for the service on loopback, delivery reports and members' replies to the service.\n"
              "It holds passwords: readable by the kannel user only. Write it again rather than edit it.")
    return render(groups, header)


def nftables_rules(admin_port: int, smsbox_port: int, sendsms_port: int, service_user: str,
                   kannel_user: str = KANNEL_USER) -> str:
    """An nftables table (``nft -f``; loading it again replaces it) that keeps other local users off
    Kannel: on loopback, bearerbox's admin and smsbox ports take connections from ``kannel_user`` only
    (Kannel does not authenticate a box: anyone who reaches the smsbox port can send SMS), smsbox's
    sendsms port from ``kannel_user`` and ``service_user`` only. Others are answered with a reset.
    ``KannelConfigError`` for a port or user name that is none."""
    for name, port in (("admin_port", admin_port), ("smsbox_port", smsbox_port), ("sendsms_port", sendsms_port)):
        if not 1 <= port <= 65535:
            raise KannelConfigError(f"{name}: {port} is not a port")
    for user in (service_user, kannel_user):
        if not _USER.match(user):
            raise KannelConfigError(f"{user!r} is not a user name")
    users = f'{{ "{kannel_user}", "{service_user}" }}' if service_user != kannel_user else f'"{kannel_user}"'
    return "\n".join([
        "# BINfoon's Kannel, written by `binfoon kannel config`: only the kannel user reaches bearerbox's admin and",
        f"# smsbox ports, only it and {service_user} (the service) smsbox's sendsms port. The user of a",
        "# connection is known where it leaves (output), so the rules are there. Load: nft -f <this file>.",
        "table inet binfoon_kannel",
        "delete table inet binfoon_kannel",
        "table inet binfoon_kannel {",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        f'\t\toifname "lo" tcp dport {{ {admin_port}, {smsbox_port} }} meta skuid "{kannel_user}" accept',
        f'\t\toifname "lo" tcp dport {{ {admin_port}, {smsbox_port} }} reject with tcp reset',
        f"\t\toifname \"lo\" tcp dport {sendsms_port} meta skuid {users} accept",
        f'\t\toifname "lo" tcp dport {sendsms_port} reject with tcp reset',
        "\t}",
        "}",
        "",
    ])
