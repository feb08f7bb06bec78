"""The carrier trunk and the SIP edge: settings, their validation, and what pjsip.conf gets.

Pure: no files are read here (the instance reads the secret file and copies TLS files). Every
error names the setting a person would fix (``trunk_secret_file``, ``rtp_port_end``, ...).

Security rules rendered here:
- the trunk is identified by the carrier's addresses only (``identify_by = ip``, and
  ``[global] endpoint_identifier_order = ip,auth_username``): a ``From: sip:trunk@...`` from
  any other host matches no endpoint and is challenged, never routed into ``binfoon-trunk-in``;
- the digest secret lives in a file only its owner can read, and only in the rendered config.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ivr.config import Settings

#: Transports a trunk may use.
TRANSPORTS = ("udp", "tcp", "tls")
#: Codecs BINfoon can carry (its prompts and recordings are 8 kHz; G.711 only).
CODECS = ("alaw", "ulaw")
#: Fewer RTP ports than this cannot carry ``max_channels`` calls in practice (2 ports per call,
#: RTP and RTCP, and Asterisk takes only even ports for RTP).
MIN_RTP_PORTS = 20
#: Default size of a randomly placed RTP block (lab and tests).
DEFAULT_RTP_PORTS = 200

# What may appear in a value rendered into pjsip.conf: no newline, no ';' (a comment), no '['.
_TOKEN = re.compile(r"^[A-Za-z0-9_.+\-*!~'()%&=$,@:]+$")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+$|^\[[0-9A-Fa-f:.]+\]$")


class TrunkError(ValueError):
    """A trunk or SIP setting is invalid; the message starts with the setting's name."""


@dataclass(frozen=True)
class Trunk:
    """The carrier trunk: where member calls leave and the carrier's calls come in."""

    host: str
    port: int = 5060
    transport: str = "udp"
    #: Digest username (REGISTER and INVITE auth); empty: the carrier trusts our address.
    username: str = ""
    #: Path of the 0600 file holding the digest secret (never the secret itself).
    secret_file: str = ""
    #: Send REGISTER (needs ``username`` and ``secret_file``).
    register: bool = True
    from_user: str = ""
    from_domain: str = ""
    #: Addresses (IP or CIDR) the carrier sends from; empty: ``host``.
    match: tuple[str, ...] = ()
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""

    @property
    def identify_match(self) -> tuple[str, ...]:
        """Where the carrier's requests come from."""
        return self.match or (self.host,)

    @property
    def authenticates(self) -> bool:
        """True when BINfoon answers the carrier's digest challenges."""
        return bool(self.username)


@dataclass(frozen=True)
class SipEdge:
    """How the instance meets the network: bind address, NAT, codecs (ports live on the instance)."""

    bind_address: str = "127.0.0.1"
    external_signaling_address: str = ""
    external_media_address: str = ""
    local_net: tuple[str, ...] = ()
    codecs: tuple[str, ...] = CODECS


def split_list(raw: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``: the comma lists of the settings."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def from_settings(settings: Settings) -> tuple[Trunk | None, SipEdge]:
    """The trunk (``None`` without ``trunk_host``) and the SIP edge the settings describe, checked.

    Raises ``TrunkError`` naming the setting; file contents (the secret) are checked when rendered.
    """
    edge = SipEdge(
        bind_address=settings.sip_bind_address,
        external_signaling_address=settings.sip_external_signaling_address,
        external_media_address=settings.sip_external_media_address,
        local_net=split_list(settings.sip_local_net),
        codecs=split_list(settings.sip_codecs),
    )
    check_ports(settings.sip_port, settings.rtp_port_start, settings.rtp_port_end)
    check_edge(edge)
    if not settings.trunk_host:
        for name in ("trunk_username", "trunk_secret_file", "trunk_match", "trunk_from_user", "trunk_from_domain"):
            if getattr(settings, name):
                raise TrunkError(f"trunk_host: required with {name}")
        return None, edge
    trunk = Trunk(
        host=settings.trunk_host, port=settings.trunk_port, transport=settings.trunk_transport.lower(),
        username=settings.trunk_username, secret_file=settings.trunk_secret_file,
        register=settings.trunk_register, from_user=settings.trunk_from_user,
        from_domain=settings.trunk_from_domain, match=split_list(settings.trunk_match),
        tls_cert_file=settings.trunk_tls_cert_file, tls_key_file=settings.trunk_tls_key_file,
        tls_ca_file=settings.trunk_tls_ca_file,
    )
    check_trunk(trunk)
    return trunk, edge


def _check_token(setting: str, value: str) -> None:
    if value and not _TOKEN.match(value):
        raise TrunkError(f"{setting}: {value!r} has characters that cannot go into a SIP configuration")


def _check_host(setting: str, value: str) -> None:
    if not value or not _HOST.match(value):
        raise TrunkError(f"{setting}: {value!r} is not a host name or IP address")


def _check_networks(setting: str, values: tuple[str, ...], *, allow_names: bool = False) -> None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            if allow_names and _HOST.match(value) and not re.match(r"^[0-9./]+$", value):
                continue  # a host name: Asterisk resolves it when it loads the identify
            raise TrunkError(f"{setting}: {value!r} is not an IP address or CIDR (e.g. 192.0.2.0/24)") from None


def check_ports(sip_port: int, rtp_start: int, rtp_end: int) -> None:
    """Refuse ports out of range and an RTP range that is inverted or too small (0 = chosen at random)."""
    if not 0 <= sip_port <= 65535:
        raise TrunkError(f"sip_port: {sip_port} is not a port (1-65535, or 0 for a random one on loopback)")
    if rtp_end and not rtp_start:
        raise TrunkError("rtp_port_end is set without rtp_port_start")
    if rtp_start:
        if not 1024 <= rtp_start <= 65535:
            raise TrunkError(f"rtp_port_start: {rtp_start} must be 1024-65535")
        end = rtp_end or rtp_start + DEFAULT_RTP_PORTS - 1
        if end > 65535:
            raise TrunkError(f"rtp_port_end: {end} is above 65535")
        if end < rtp_start:
            raise TrunkError(f"rtp_port_end: {end} is below rtp_port_start {rtp_start} (the range is inverted)")
        if end - rtp_start + 1 < MIN_RTP_PORTS:
            raise TrunkError(f"rtp_port_end: {rtp_start}-{end} has {end - rtp_start + 1} ports; "
                             f"at least {MIN_RTP_PORTS} are needed")


def check_edge(edge: SipEdge) -> None:
    """Refuse a bind address, NAT address or codec that cannot work."""
    try:
        ipaddress.ip_address(edge.bind_address)
    except ValueError:
        raise TrunkError(f"sip_bind_address: {edge.bind_address!r} is not an IP address (0.0.0.0 for all)") from None
    for setting, value in (("sip_external_signaling_address", edge.external_signaling_address),
                           ("sip_external_media_address", edge.external_media_address)):
        if value:
            _check_host(setting, value)
    _check_networks("sip_local_net", edge.local_net)
    if (edge.external_signaling_address or edge.external_media_address) and not edge.local_net:
        raise TrunkError("sip_local_net: required with an external address (the networks that are not behind NAT, "
                         "e.g. 10.0.0.0/8), or Asterisk rewrites local traffic too")
    if not edge.codecs:
        raise TrunkError("sip_codecs: at least one codec is needed (alaw, ulaw)")
    for codec in edge.codecs:
        if codec not in CODECS:
            raise TrunkError(f"sip_codecs: {codec!r} is not one of {', '.join(CODECS)}")


def check_trunk(trunk: Trunk) -> None:
    """Refuse a trunk whose settings cannot work together (the message names the setting)."""
    _check_host("trunk_host", trunk.host)
    if not 1 <= trunk.port <= 65535:
        raise TrunkError(f"trunk_port: {trunk.port} is not a port (1-65535)")
    if trunk.transport not in TRANSPORTS:
        raise TrunkError(f"trunk_transport: {trunk.transport!r} is not one of {', '.join(TRANSPORTS)}")
    if trunk.transport == "tls":
        for setting, value in (("trunk_tls_cert_file", trunk.tls_cert_file), ("trunk_tls_key_file", trunk.tls_key_file),
                               ("trunk_tls_ca_file", trunk.tls_ca_file)):
            if not value:
                raise TrunkError(f"{setting}: required with trunk_transport = tls")
    for setting, value in (("trunk_username", trunk.username), ("trunk_from_user", trunk.from_user)):
        _check_token(setting, value)
    if trunk.from_domain:
        _check_host("trunk_from_domain", trunk.from_domain)
    if trunk.username and not trunk.secret_file:
        raise TrunkError("trunk_secret_file: required with trunk_username (a 0600 file holding the secret)")
    if trunk.secret_file and not trunk.username:
        raise TrunkError("trunk_username: required with trunk_secret_file")
    _check_networks("trunk_match", trunk.match, allow_names=True)


def check_secret(setting: str, secret: str) -> None:
    """A secret read from its file: one line of characters a SIP configuration can hold."""
    if not secret:
        raise TrunkError(f"{setting}: the file is empty")
    if not _TOKEN.match(secret):
        raise TrunkError(f"{setting}: the secret has characters that cannot go into a SIP configuration "
                         "(use letters, digits and -_.~+)")


def secret_mode_problem(setting: str, mode: int) -> str | None:
    """Why a secret file with permission bits ``mode`` must not be used (None when it is private)."""
    if mode & 0o077:
        return (f"{setting}: the file is readable or writable by others (mode {mode & 0o777:04o}); "
                "chmod 600 it")
    return None


def _uri(host: str, port: int, transport: str, user: str = "") -> str:
    """A SIP URI as a pjsip.conf value: its ``;`` escaped, or Asterisk reads the rest as a comment."""
    who = f"{user}@" if user else ""
    suffix = "" if transport == "udp" else f"\\;transport={transport}"
    return f"sip:{who}{host}:{port}{suffix}"


def transport_name(protocol: str) -> str:
    """The pjsip transport section for a protocol."""
    return f"transport-{protocol}"


def trunk_sections(trunk: Trunk, *, secret: str, caller_id_number: str, codecs: tuple[str, ...]) -> dict[str, str]:
    """The values ``pjsip-trunk.conf.tmpl`` is filled with (``secret``: the content of ``trunk.secret_file``,
    empty without a username)."""
    transport = transport_name(trunk.transport)
    # Without from_user, Asterisk builds From from each call's caller ID: the zone's number *and* the
    # name members save ("BIN"). A fixed from_user (a carrier that demands one) makes Asterisk drop both.
    endpoint: list[str] = [f"from_user = {trunk.from_user}"] if trunk.from_user else []
    if trunk.from_domain:
        endpoint.append(f"from_domain = {trunk.from_domain}")
    extra: list[str] = []
    if trunk.authenticates:
        endpoint.append("outbound_auth = trunk-auth")
        extra += ["[trunk-auth]", "type = auth", "auth_type = userpass",
                  f"username = {trunk.username}", f"password = {secret}", ""]
        if trunk.register:
            domain = trunk.from_domain or trunk.host
            extra += [
                "; Outbound registration: the carrier delivers our calls to the contact it gives.",
                "[trunk]", "type = registration", f"transport = {transport}", "outbound_auth = trunk-auth",
                f"server_uri = {_uri(trunk.host, trunk.port, trunk.transport)}",
                f"client_uri = {_uri(domain, trunk.port, trunk.transport, trunk.username)}",
                f"contact_user = {trunk.username}",
                "; A refused secret is final (no hammering the carrier); an outage is retried for days.",
                "auth_rejection_permanent = yes", "retry_interval = 30", "forbidden_retry_interval = 300",
                "max_retries = 10000", "expiration = 600",
                "; One registration: no need to spread a crowd's REGISTERs over 10 s at start.",
                "max_random_initial_delay = 1", "",
            ]
    return {
        "trunk_transport": transport,
        "trunk_codecs": ",".join(codecs),
        "trunk_endpoint_extra": "\n".join(endpoint),
        "trunk_contact": _uri(trunk.host, trunk.port, trunk.transport),
        "trunk_match": ",".join(trunk.identify_match),
        "trunk_sections": "\n".join(extra),
    }


def transport_sections(edge: SipEdge, *, sip_port: int, protocols: tuple[str, ...] = ("udp",),
                       tls_files: Mapping[str, str] | None = None) -> str:
    """The ``[transport-*]`` sections: UDP always (officers' phones, the lab), plus the trunk's own.

    TCP shares the SIP port; TLS listens on the port above it and verifies the peer's certificate.
    """
    nat: list[str] = []
    if edge.external_signaling_address:
        nat.append(f"external_signaling_address = {edge.external_signaling_address}")
    if edge.external_media_address:
        nat.append(f"external_media_address = {edge.external_media_address}")
    nat += [f"local_net = {net}" for net in edge.local_net]
    out: list[str] = []
    for protocol in dict.fromkeys(("udp", *protocols)):
        port = sip_port + 1 if protocol == "tls" else sip_port
        out += [f"[{transport_name(protocol)}]", "type = transport", f"protocol = {protocol}",
                f"bind = {edge.bind_address}:{port}", *nat]
        if protocol == "tls":
            files = tls_files or {}
            out += [f"cert_file = {files.get('cert', '')}", f"priv_key_file = {files.get('key', '')}",
                    f"ca_list_file = {files.get('ca', '')}", "method = tlsv1_2", "verify_server = yes"]
        out.append("")
    return "\n".join(out)


# -- the registration as `binfoon asterisk status` reports it ------------------------------------
_LOG_RESPONSE = (
    (re.compile(r"Fatal response '(\d{3})' received from '([^']*)' on registration attempt"), "refused"),
    (re.compile(r"(403) Forbidden fatal response received from '([^']*)' on registration attempt"), "refused"),
    (re.compile(r"Temporal response '(\d{3})' received from '([^']*)' on registration attempt"), "failing"),
    (re.compile(r"No response received from '([^']*)' on registration attempt"), "no answer"),
)
_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 407: "Proxy Authentication Required",
            408: "Request Timeout", 500: "Server Internal Error", 503: "Service Unavailable"}


def _status_line(code: int) -> str:
    reason = _REASONS.get(code)
    return f"{code} {reason}" if reason else str(code)


@dataclass(frozen=True)
class RegistrationReport:
    """The trunk registration's state and the last SIP response it got."""

    state: str
    last_response: int | None = None
    message: str = ""
    server_uri: str = ""

    def as_json(self) -> dict[str, Any]:
        """What ``binfoon asterisk status`` prints."""
        return {"state": self.state, "last_response": self.last_response, "message": self.message,
                "server_uri": self.server_uri}


def last_registration_response(log_lines: list[str]) -> tuple[int | None, str]:
    """The last registration response Asterisk logged: ``(code, kind)``; ``(None, "")`` if none.

    Asterisk logs failures only (a 2xx makes the registration ``Registered`` silently).
    """
    for line in reversed(log_lines):
        for pattern, kind in _LOG_RESPONSE:
            match = pattern.search(line)
            if match:
                code = int(match.group(1)) if kind != "no answer" else None
                return code, kind
    return None, ""


def registration_report(detail: Mapping[str, str] | None, log_lines: list[str]) -> RegistrationReport:
    """Combine AMI's ``OutboundRegistrationDetail`` for ``trunk`` with the instance's log into a report."""
    if detail is None:
        return RegistrationReport("not configured", message="no outbound registration (trunk_register, trunk_username)")
    status = detail.get("Status", "Unknown")
    server = detail.get("ServerUri", "")
    if status == "Registered":
        return RegistrationReport("registered", 200, f"registered with {server}", server)
    code, kind = last_registration_response(log_lines)
    if kind == "refused" and code is not None:
        hint = ": check trunk_username and trunk_secret_file" if code in (401, 403, 407) else ""
        return RegistrationReport("refused", code, f"registration refused ({_status_line(code)}){hint}", server)
    if kind == "failing" and code is not None:
        return RegistrationReport("failing", code, f"registration failing ({_status_line(code)}), retried every 30 s",
                                  server)
    if kind == "no answer":
        return RegistrationReport("failing", None, f"no answer from {server}, retried every 30 s", server)
    return RegistrationReport(status.lower(), None, "registration not answered yet", server)
