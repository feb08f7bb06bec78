"""Kannel's configuration: the production file ``binfoon kannel config`` writes, the groups the lab's Kannel
(``ivr.lab.kannel``) shares with it, and the nftables rules that keep other local users off its ports.

Rules:
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

import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ivr.copies.kannel import KannelConfigError, mo_url
from ivr.copies.sms_text import MAX_SEGMENTS

if TYPE_CHECKING:
    from ivr.config import Settings

#: Kannel's standard ports (the Debian package's system bearerbox uses them).
ADMIN_PORT, SMSBOX_PORT, SENDSMS_PORT = 13000, 13001, 13013
#: Where the Debian package's boxes may write: the queue and delivery reports, and the logs.
SPOOL_DIR, LOG_DIR = Path("/var/spool/kannel"), Path("/var/log/kannel")
#: The user Debian's Kannel boxes run as.
KANNEL_USER = "kannel"

_HOST = re.compile(r"^[A-Za-z0-9.:\-\[\]]{1,253}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


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
