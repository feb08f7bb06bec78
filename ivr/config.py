"""Settings: defaults in code < ``binfoon.toml`` < ``BINFOON_*`` environment variables.

Rules: one ``Settings`` object for the whole app, validated at start; unknown keys fail start-up;
secrets are never stored here (they live in files, see ``ivr.asterisk.instance``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import zoneinfo
from datetime import time as dt_time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ivr.domain.destinations import DIAL_OUT_COUNTRY_CODES, DestinationPolicy


class ConfigError(ValueError):
    """The configuration is invalid; the message says which key and why."""


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "binfoon"


@dataclass(frozen=True)
class Settings:
    """Every setting of the application, with its default."""

    #: Runtime data (SQLite database, recordings, instance run directories). Git-ignored.
    data_dir: Path = field(default_factory=lambda: Path("var").resolve())
    #: Where the embedded Asterisk root is installed and reused.
    cache_dir: Path = field(default_factory=_default_cache_dir)
    #: SQLAlchemy URL; empty means SQLite (WAL) in ``data_dir``.
    database_url: str = ""
    #: ``auto`` (system Asterisk if installed, else a Debian root), ``system`` or ``debootstrap``.
    asterisk_mode: str = "auto"
    #: Debian suite for the embedded root; ``testing`` carries Asterisk 22.
    asterisk_suite: str = "testing"
    #: Debian mirror for debootstrap; empty means: the one this machine's apt already uses.
    debian_mirror: str = ""
    #: How an outbound call reaches a phone number: ``${NUMBER}`` is replaced by the E.164 number.
    dial_template: str = "Local/${NUMBER}@sim-phone"
    #: Seconds an outbound call may ring before it counts as not answered.
    ring_timeout_s: float = 30.0
    #: The application's FastAGI server (loopback).
    agi_port: int = 4573
    #: The simulated phone network's FastAGI server (demo and tests; loopback).
    sim_agi_port: int = 4574
    #: The number every outbound call presents (E.164): the zone's registered Belgian number.
    caller_id_number: str = "+3250000000"
    #: The police line's DID (E.164): calls from the carrier to this number reach the police intake.
    police_line_number: str = "+3250000100"
    #: The name shown with it, so members can save the number (the same on every call and retry).
    caller_id_name: str = "BIN"
    #: Local time of the police zones: "forward later at HHMM" and spoken times use it.
    timezone: str = "Europe/Brussels"
    #: Wrong PINs that lock an officer account and the caller ID, and for how long.
    pin_max_failures: int = 3
    pin_lock_s: float = 900.0
    # -- PINs under attack (issue 14 item 3, RELIABILITY D2; ``ivr.directory.pin_gate``) ---------
    #: Wrong PINs against one account, from any number of caller IDs, that lock it (and alert admins).
    pin_account_max_failures: int = 5
    #: Each further lock of the same caller ID or account lasts this many times longer, up to the cap.
    pin_lock_growth: float = 2.0
    pin_max_lock_s: float = 86400.0
    #: Wrong PINs on one line (police, admin) from everyone within the window that close its PIN
    #: checks for ``pin_line_lock_s`` (and alert admins): guessing across many officers at once.
    pin_line_max_failures: int = 30
    pin_line_window_s: float = 900.0
    pin_line_lock_s: float = 900.0
    #: The PIN pepper key (an HMAC key applied before scrypt; 0600, never in the database or git);
    #: made on first use. Empty: ``<data_dir>/pin-pepper.key``.
    pin_pepper_file: str = ""
    # -- the caller-ID lines (BIN call-back, report line; issue 14 item 2, ``ivr.delivery.line_limits``)
    #: Calls one caller ID may make to such a line within the window before it hears "no message".
    line_caller_max_calls: int = 5
    line_caller_window_s: float = 3600.0
    #: Calls from numbers that are nobody's on a line within the window before the whole line
    #: answers "no message" to everyone for ``line_lock_s`` (an enumeration; admins alerted).
    line_unknown_max_calls: int = 50
    line_window_s: float = 3600.0
    line_lock_s: float = 3600.0
    #: The police recording: longest message, and the silence that ends it.
    record_max_s: int = 120
    record_silence_s: int = 3
    #: How long the system waits for a key after a question.
    key_timeout_s: float = 6.0
    #: How long a coordinator's phone rings before the next one is tried.
    review_ring_timeout_s: float = 30.0
    #: A message nobody decided on (preventive, or when escalation is spent) is reviewed again after this.
    review_retry_after_s: float = 900.0
    #: Review rounds of a waiting preventive message before its author is called and the rounds stop
    #: (a zone may set its own: ``police_zones.review_max_rounds``).
    review_max_rounds: int = 6
    #: The trunk's limits: simultaneous member calls, and new calls per second (carriers cap it).
    max_channels: int = 30
    max_cps: float = 5.0
    # -- a farm of nodes on one PostgreSQL (issue 18, ``ivr.cluster``) ------------------------------
    #: This node's name in a farm ("" = one node: no leases; every duty runs here). Stable across
    #: restarts: a node that comes back recovers its own claims. A farm needs PostgreSQL.
    #: ``max_channels`` and ``max_cps`` are then the whole farm's, shared by the live nodes.
    cluster_node: str = ""
    #: A node whose heartbeat is older than this loses its claims (its calls, the lead) to the others.
    cluster_lease_s: float = 15.0
    cluster_heartbeat_s: float = 2.0
    #: After a node lost its lease, its open calls are left to it this long (they may still be up in its
    #: Asterisk: a paused service) before the others close them and call those members again. At least
    #: the longest member call.
    cluster_takeover_hold_s: float = 180.0
    #: How long a member's phone rings before it counts as not answered.
    member_ring_timeout_s: float = 30.0
    #: Retries per number after busy / no answer / congestion, by urgency, and the delay between them.
    urgent_retries: int = 1
    urgent_retry_after_s: float = 300.0
    preventive_retries: int = 1
    preventive_retry_after_s: float = 300.0
    #: Each further retry waits this many times longer.
    retry_backoff: float = 1.0
    #: A member who answered but hung up before confirming: retries and delay.
    no_key_retries: int = 1
    no_key_retry_after_s: float = 300.0
    #: Local hours without preventive calls (urgent ones go at once).
    quiet_hours: str = "21:00-08:00"
    #: After the message, the keys are reminded this often before the call ends.
    member_reminders: int = 2
    #: The numbers members and coordinators call in on: the BIN line (members hear the latest
    #: message again; it is the number every outbound call presents) and the report line.
    report_line_number: str = "+3250000200"
    #: The admin line's DID: admins and the zone's police (caller ID + PIN) hear a BIN's latest messages.
    admin_line_number: str = "+3250000300"
    #: The model folder used for transcripts, Whisper (CTranslate2) or Vosk: the engine follows the
    #: folder ("" = ``<cache_dir>/models/faster-whisper-base``, or ``.../vosk-model-small-nl-0.22``
    #: when only that is installed; without a model recordings are kept and marked untranscribed).
    speech_model_path: str = ""
    #: Transcription worker processes (CPU work never runs on the event loop).
    speech_workers: int = 1
    #: Whisper only: beam width, and weights' precision ("int8", "int8_float32", "float32"); the
    #: defaults were picked by ``binfoon bench transcribe --compare`` on 2 cores (README).
    speech_beam_size: int = 5
    speech_compute_type: str = "int8"
    #: Whisper only: a message is never decoded for longer than this (seconds of CPU wall time);
    #: what was heard by then is kept and marked uncertain.
    speech_time_cap_s: float = 300.0
    #: Recordings and transcripts older than this many days are purged (0 = kept for ever).
    retention_days: int = 365

    # -- the carrier trunk and the SIP edge (issue 13 items 1-2; checked in ``ivr.asterisk.trunk``) ---
    #: The address and port Asterisk's SIP transport binds; port 0: a free random port on loopback,
    #: chosen at first start and kept (lab and tests). Production: the trunk interface, 5060.
    sip_bind_address: str = "127.0.0.1"
    sip_port: int = 0
    #: RTP ports (inclusive); 0: a free random block of 200. Production e.g. 20000-20199.
    rtp_port_start: int = 0
    rtp_port_end: int = 0
    #: Behind NAT: the public addresses put in SIP headers and SDP, and the networks that are local.
    sip_external_signaling_address: str = ""
    sip_external_media_address: str = ""
    sip_local_net: str = ""
    #: Codecs offered, in order of preference (G.711 A-law is Belgium's).
    sip_codecs: str = "alaw,ulaw"
    #: The carrier: host (empty: no trunk, the lab's simulated phones), port, transport (udp|tcp|tls).
    trunk_host: str = ""
    trunk_port: int = 5060
    trunk_transport: str = "udp"
    #: With tls: our certificate and key, and the CAs that sign the carrier's certificate (PEM files).
    trunk_tls_cert_file: str = ""
    trunk_tls_key_file: str = ""
    trunk_tls_ca_file: str = ""
    #: Digest account for REGISTER and INVITEs; the secret is read from a 0600 file, never from here.
    trunk_username: str = ""
    trunk_secret_file: str = ""
    #: Register with the carrier (needs ``trunk_username``); the carrier delivers calls to that contact.
    trunk_register: bool = True
    #: From header of outbound calls: user empty = each call's caller ID (number and name); domain empty = our address.
    trunk_from_user: str = ""
    trunk_from_domain: str = ""
    #: Addresses/CIDRs (comma list) whose requests are the carrier's; default ``trunk_host``. Nothing
    #: else identifies the trunk.
    trunk_match: str = ""

    # -- outages: a trunk that is down pauses delivery (issue 13 item 3, ``ivr.delivery.policy``) ----
    #: This many member calls in a row failing with congestion / SIP 503, none reaching a phone: the
    #: trunk counts as down, campaigns pause and those calls cost their members nothing.
    outage_congestion_streak: int = 5
    #: While paused, one probe call after this long, the wait doubling up to ``outage_probe_max_s``.
    outage_probe_after_s: float = 5.0
    outage_probe_max_s: float = 60.0

    # -- the web console (ivr/web), served by ``binfoon serve`` on the same loop -------------------
    #: Loopback only by default: put a TLS reverse proxy in front to reach it from elsewhere.
    web_host: str = "127.0.0.1"
    #: 0 turns the console off.
    web_port: int = 8480
    #: A session ends after this long without a request, and in any case after ``web_session_max_s``.
    web_session_idle_s: float = 1800.0
    web_session_max_s: float = 43200.0
    #: Wrong passwords that lock an account (and, at ``web_ip_max_failures``, an address), and for how long.
    web_signin_max_failures: int = 5
    web_ip_max_failures: int = 20
    web_signin_lock_s: float = 900.0
    #: Largest audio file the police may upload.
    web_upload_max_bytes: int = 10_000_000
    #: Behind the TLS reverse proxy: the session cookie goes over HTTPS only, and browsers are told HSTS.
    web_secure_cookies: bool = False
    #: The TLS reverse proxies in front (comma list of addresses or CIDRs). Only when the peer is one
    #: of them is X-Forwarded-For read: the client is its right-most address that is not a proxy (the
    #: sign-in limit counts per client). Empty: X-Forwarded-For is ignored, the peer is the client.
    web_trusted_proxies: str = ""
    #: Threads that check passwords (argon2), apart from the call flows' database steps; sign-ins
    #: beyond ``web_signin_queue`` waiting for one are refused at once (busy, try again).
    web_hash_workers: int = 2
    web_signin_queue: int = 16
    #: Threads that poll the database for the live board's streams, and the most streams at once
    #: (one per session: a second stream of the same session replaces the first).
    web_stream_workers: int = 2
    web_max_streams: int = 64

    # -- the audit chain (issue 14 item 8, ``storage.audit``) ---------------------------------------
    #: Its HMAC key (0600, made on first use, never in the database) and its append-only anchors file.
    #: Empty: ``audit.key`` and ``<file>.anchors`` next to a SQLite file (``data_dir`` by default),
    #: else ``<data_dir>/audit.key`` and ``<data_dir>/audit.anchors``.
    #: Several nodes on one database must share the same key file.
    audit_key_file: str = ""
    audit_anchor_file: str = ""
    #: The service anchors the chain's head this often (when it moved); ``binfoon audit verify`` too.
    audit_anchor_every_s: float = 300.0

    # -- least privilege: host accounts (issue 13 item 5, issue 14 item 0; ``binfoon deploy``) -----
    #: ``binfoon serve`` started as root starts Asterisk, then runs as this user ("root": stays root,
    #: for a development lab only). A missing user is refused with how to create it.
    service_user: str = "binfoon"
    #: The host account the embedded root's ``asterisk`` user is mapped to (its own uid/gid).
    asterisk_host_user: str = "binfoon-asterisk"

    # -- where calls may go, and test calls (issue 14 items 5-6, ``ivr.domain.destinations``) -------
    #: Country codes BINfoon calls (comma list): Belgium and its neighbours. Premium, shared-cost,
    #: personal and satellite ranges are refused inside them too.
    allowed_country_codes: str = "32,31,33,49,352"
    #: More E.164 prefixes to refuse (comma list, e.g. "+3245"), on top of the built-in ranges.
    refused_number_prefixes: str = ""
    #: Test calls from the web console: at most this many per member, and per signed-in person, an hour.
    test_calls_per_member_hour: int = 3
    test_calls_per_person_hour: int = 10

    # -- SMS and e-mail copies, the contact ladder (issue 17, ``ivr.copies``, ``ivr.domain.channels``) --
    #: A member's channels when they chose none, per urgency (the police circular; a zone may set its own).
    copy_channels_urgent: str = "voice+sms"
    copy_channels_preventive: str = "voice+email"
    #: The contact ladder: a called member who has not confirmed this long after their last call gets
    #: the SMS copy, even if they chose calls only (a zone may turn it off or set its own delay).
    ladder_sms: bool = True
    ladder_after_s: float = 900.0
    #: Kannel's smsbox sendsms URL (empty: SMS copies are off; none is planned).
    #: ``binfoon kannel config`` writes the Kannel configuration for the operator's SMPP account.
    sms_sendsms_url: str = ""
    #: The sendsms account: its name here, its password in a 0600 file (never in this file).
    sms_username: str = "binfoon"
    sms_password_file: str = ""
    #: The sender shown on SMS (empty: ``caller_id_number``, the BIN line members may call back).
    sms_sender: str = ""
    #: Where the service takes Kannel's delivery reports and members' replies (loopback; 0: off).
    sms_callback_port: int = 8491
    #: The operator's SMPP account (``binfoon kannel config``): host, port, system id, password file.
    smpp_host: str = ""
    smpp_port: int = 2775
    smpp_system_id: str = ""
    smpp_password_file: str = ""
    #: The SMTP relay for e-mail copies (empty host: no e-mail copies are sent); ``starttls`` (587),
    #: ``tls`` (465) or ``none`` (loopback only); the account's password in a 0600 file.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_username: str = ""
    smtp_password_file: str = ""
    #: CA bundle (PEM) that signs the relay's certificate (empty: the system's CAs).
    smtp_ca_file: str = ""
    #: The From address of e-mail copies, and where List-Unsubscribe mails go (empty: ``email_from``).
    email_from: str = "bin@localhost"
    email_unsubscribe_to: str = ""
    #: The public address of the web console's unsubscribe page (List-Unsubscribe one-click; empty: mailto only).
    #: https:// (http:// only on localhost), plain ASCII.
    email_unsubscribe_url: str = ""
    #: The original recording goes to members' mailboxes, attached to the e-mail copy (audited); a
    #: zone's policy may forbid it: false sends the e-mail with the words only.
    email_attach_audio: bool = True
    #: The key (0600, made on first use) that signs unsubscribe links and Kannel's callback URLs.
    #: Empty: ``<data_dir>/copies.key``.
    copies_key_file: str = ""
    #: A copy whose hand-over failed for a passing reason (the gateway or relay down) is tried again
    #: after a growing pause (30 s, doubling, at most 10 min) until this long after it was queued
    #: (its SMS's quiet hours not counted), then given up (FAILED).
    copy_retry_for_s: float = 6 * 3600.0
    #: And at most this many hand-overs of one copy, whatever the time: each one whose answer was lost
    #: may have reached the member, so this bounds the duplicates of a copy that keeps failing so.
    copy_max_tries: int = 50

    # -- the SIP port under attack (RELIABILITY A10, ``ivr.domain.sip_bans``, ``ivr.telephony.security``) --
    #: This many failed SIP authentications from one address within ``sip_ban_window_s`` ban that
    #: address (a PJSIP ACL) for ``sip_ban_s``; 0 turns banning off.
    sip_ban_max_failures: int = 5
    sip_ban_window_s: float = 60.0
    sip_ban_s: float = 3600.0
    #: Addresses/CIDRs never banned (comma list), besides the carrier's (``trunk_match``/``trunk_host``):
    #: the loopback the lab's carrier and the local tools use.
    sip_ban_exempt: str = "127.0.0.1,::1"

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The local time zone (``timezone``)."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def uses_simulator(self) -> bool:
        """True when calls go to the simulated phone network rather than a real trunk."""
        return "@sim-phone" in self.dial_template

    @property
    def destinations(self) -> DestinationPolicy:
        """Where calls may go (``allowed_country_codes`` and ``refused_number_prefixes``)."""
        return DestinationPolicy.parse(self.allowed_country_codes, self.refused_number_prefixes)

    @property
    def trusted_proxies(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``web_trusted_proxies`` as networks (``ValueError`` for an entry that is none)."""
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in self.web_trusted_proxies.split(",") if part.strip())

    @property
    def resolved_database_url(self) -> str:
        """The database URL, with the SQLite default filled in."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'binfoon.db'}"

    @property
    def copies_key_path(self) -> Path:
        """The key that signs unsubscribe links and Kannel's callback URLs (``copies_key_file``)."""
        return Path(self.copies_key_file) if self.copies_key_file else self.data_dir / "copies.key"

    @property
    def pin_pepper_path(self) -> Path:
        """The PIN pepper key file (``pin_pepper_file``, else under ``data_dir``)."""
        return Path(self.pin_pepper_file) if self.pin_pepper_file else self.data_dir / "pin-pepper.key"


_ENV_PREFIX = "BINFOON_"


def _coerce(name: str, raw: Any, target: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind in ("Path", Path):
            return Path(str(raw)).expanduser().resolve()
        if kind in ("float", float):
            return float(raw)
        if kind in ("int", int):
            return int(raw)
        if kind in ("bool", bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{target}: {name} = {raw!r} is not a valid {kind}") from exc


#: The settings that are phone numbers BINfoon presents or is called on: E.164, checked at start.
E164_SETTINGS = ("caller_id_number", "police_line_number", "report_line_number", "admin_line_number")

#: Settings never shown in full (``binfoon config show``): a URL's password.
SECRET_SETTINGS = ("database_url",)


def config_path(environ: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The configuration file and whether it was named explicitly (``BINFOON_CONFIG``)."""
    env = os.environ if environ is None else environ
    named = env.get("BINFOON_CONFIG")
    return (Path(named), True) if named else (Path("binfoon.toml"), False)


def _line_of(text: str, key: str) -> int | None:
    """The 1-based line where ``key`` is set in a flat TOML text (for error messages)."""
    for number, line in enumerate(text.splitlines(), 1):
        head = line.split("=", 1)[0].strip().strip('"\'')
        if "=" in line and head == key:
            return number
    return None


def _e164_problem(value: str) -> str | None:
    """Why ``value`` is not an E.164 number (``None``: it is one, exactly as written)."""
    from ivr.domain.phone import InvalidPhoneNumber, normalize_phone

    if not value.startswith("+"):
        return "must be an E.164 number starting with + (e.g. +3250000000)"
    try:
        normal = normalize_phone(value)
    except InvalidPhoneNumber as exc:
        return f"is not a phone number: {exc}"
    if normal != value:
        return f"must be written in E.164 without spaces: {normal}"
    return None


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from defaults, the TOML file (if any) and the environment (see ``settings_with_origins``)."""
    return settings_with_origins(config_file, environ)[0]


def settings_with_origins(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, dict[str, str]]:
    """The settings, and where each one not left at its default was set (``binfoon.toml line 3``,
    ``environment BINFOON_...``).

    A file named explicitly (``config_file``, ``BINFOON_CONFIG``) must exist: a mistyped path would
    otherwise run on the defaults (the simulator's dial template) without a word. A setting's error
    names where it was set: ``binfoon.toml line 3`` or ``environment BINFOON_...``."""
    env = os.environ if environ is None else environ
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    where: dict[str, str] = {}

    path, named = (config_file, True) if config_file is not None else config_path(env)
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read ({exc})") from exc
        for key, raw in data.items():
            line = _line_of(text, key)
            where[key] = f"{path} line {line}" if line else str(path)
            if key not in known:
                raise ConfigError(f"{where[key]}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, where[key])
    elif named:
        source = "BINFOON_CONFIG" if config_file is None else "the configuration file"
        raise ConfigError(f"{path}: no such file ({source} names it; unset it to use ./binfoon.toml and the defaults)")

    for env_key, raw in env.items():
        if not env_key.startswith(_ENV_PREFIX) or env_key == "BINFOON_CONFIG":
            continue
        key = env_key[len(_ENV_PREFIX):].lower()
        if key not in known:
            raise ConfigError(f"environment: unknown setting {env_key}")
        where[key] = f"environment {env_key}"
        values[key] = _coerce(key, raw, "environment")

    settings = dataclasses.replace(Settings(), **values)
    for key in E164_SETTINGS:
        problem = _e164_problem(getattr(settings, key))
        if problem is not None:
            raise ConfigError(f"{where.get(key, 'default')}: {key} = {getattr(settings, key)!r} {problem}")
    if settings.asterisk_mode not in ("auto", "system", "debootstrap"):
        raise ConfigError(f"asterisk_mode must be auto, system or debootstrap, not {settings.asterisk_mode!r}")
    if "${NUMBER}" not in settings.dial_template:
        raise ConfigError("dial_template must contain ${NUMBER}")
    try:
        zoneinfo.ZoneInfo(settings.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone {settings.timezone!r} is not a known time zone (e.g. Europe/Brussels)") from None
    try:
        _quiet_start, _quiet_end = (dt_time.fromisoformat(p.strip()) for p in settings.quiet_hours.split("-"))
    except ValueError:
        raise ConfigError(f"quiet_hours must look like 21:00-08:00, not {settings.quiet_hours!r}") from None
    if settings.max_channels < 1 or settings.max_cps <= 0:
        raise ConfigError("max_channels must be >= 1 and max_cps > 0")
    _check_cluster(settings)
    if settings.outage_congestion_streak < 2 or not 0 < settings.outage_probe_after_s <= settings.outage_probe_max_s:
        raise ConfigError("outage_congestion_streak must be >= 2, and 0 < outage_probe_after_s <= outage_probe_max_s")
    if not 0 <= settings.web_port <= 65535 or settings.web_signin_max_failures < 1 or settings.web_ip_max_failures < 1:
        raise ConfigError("web_port must be 0..65535 (0: off); web_signin_max_failures and web_ip_max_failures >= 1")
    if settings.pin_max_failures < 1 or settings.record_max_s < 5 or settings.record_silence_s < 1:
        raise ConfigError("pin_max_failures >= 1, record_max_s >= 5 and record_silence_s >= 1 are required")
    if settings.pin_account_max_failures < 1 or settings.pin_line_max_failures < 1 or settings.pin_lock_growth < 1:
        raise ConfigError("pin_account_max_failures and pin_line_max_failures must be >= 1, pin_lock_growth >= 1")
    if min(settings.pin_max_lock_s, settings.pin_line_window_s, settings.pin_line_lock_s) <= 0:
        raise ConfigError("pin_max_lock_s, pin_line_window_s and pin_line_lock_s must be > 0")
    if settings.line_caller_max_calls < 1 or settings.line_unknown_max_calls < 1:
        raise ConfigError("line_caller_max_calls and line_unknown_max_calls must be >= 1")
    if min(settings.line_caller_window_s, settings.line_window_s, settings.line_lock_s) <= 0:
        raise ConfigError("line_caller_window_s, line_window_s and line_lock_s must be > 0")
    try:
        destinations = DestinationPolicy.parse(settings.allowed_country_codes, settings.refused_number_prefixes)
    except ValueError as exc:
        raise ConfigError(f"allowed_country_codes / refused_number_prefixes: {exc}") from None
    wider = set(destinations.country_codes) - set(DIAL_OUT_COUNTRY_CODES)
    if "@binfoon-dial-out" in settings.dial_template and wider:
        # The dialplan's own check (dialplan/binfoon-member.conf) would refuse those countries' calls.
        raise ConfigError(f"allowed_country_codes: +{', +'.join(sorted(wider))} is not in binfoon-dial-out's "
                          "patterns (dialplan/binfoon-member.conf): add the country there first")
    if settings.test_calls_per_member_hour < 1 or settings.test_calls_per_person_hour < 1:
        raise ConfigError("test_calls_per_member_hour and test_calls_per_person_hour must be >= 1")
    try:
        settings.trusted_proxies
    except ValueError as exc:
        raise ConfigError(f"web_trusted_proxies: {exc} (a comma list of addresses or CIDRs)") from None
    if min(settings.web_hash_workers, settings.web_signin_queue, settings.web_stream_workers,
           settings.web_max_streams) < 1 or settings.audit_anchor_every_s <= 0:
        raise ConfigError("web_hash_workers, web_signin_queue, web_stream_workers and web_max_streams must be >= 1, "
                          "audit_anchor_every_s > 0")
    if settings.sip_ban_max_failures < 0 or settings.sip_ban_window_s <= 0 or settings.sip_ban_s <= 0:
        raise ConfigError("sip_ban_max_failures must be >= 0 (0: off), sip_ban_window_s and sip_ban_s > 0")
    for entry in (part.strip() for part in settings.sip_ban_exempt.split(",") if part.strip()):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"sip_ban_exempt: {entry!r} is not an IP address or CIDR") from None
    from ivr.domain.channels import InvalidChannels, parse_channels
    from ivr.domain.vocabulary import Channel

    for key in ("copy_channels_urgent", "copy_channels_preventive"):
        try:
            chosen = parse_channels(getattr(settings, key))
        except InvalidChannels as exc:
            raise ConfigError(f"{where.get(key, 'default')}: {key}: {exc}") from None
        if Channel.VOICE not in chosen:
            # The dialer decides who it calls without the settings (``ivr.delivery.members``): a member
            # who chose nothing is called unless their zone's own default leaves voice out.
            raise ConfigError(f"{where.get(key, 'default')}: {key}: must include voice (a zone may set a "
                              "text-only default of its own)")
    if settings.ladder_after_s < 0 or settings.copy_max_tries < 1 or settings.copy_retry_for_s <= 0:
        raise ConfigError("ladder_after_s must be >= 0, copy_max_tries >= 1 and copy_retry_for_s > 0")
    if settings.email_unsubscribe_url:
        problem = _public_url_problem(settings.email_unsubscribe_url)
        if problem is not None:
            raise ConfigError(f"{where.get('email_unsubscribe_url', 'default')}: email_unsubscribe_url = "
                              f"{settings.email_unsubscribe_url!r} {problem}")
    if settings.smtp_security not in ("starttls", "tls", "none"):
        raise ConfigError(f"smtp_security must be starttls, tls or none, not {settings.smtp_security!r}")
    if settings.smtp_security == "none" and settings.smtp_host not in ("", "127.0.0.1", "::1", "localhost"):
        # The password and the members' addresses would cross the network in clear.
        raise ConfigError(f"smtp_security = none is for a relay on loopback only, not {settings.smtp_host!r}")
    if not 0 <= settings.sms_callback_port <= 65535:
        raise ConfigError("sms_callback_port must be 0..65535 (0: off)")
    if not 1 <= settings.speech_beam_size <= 10 or settings.speech_time_cap_s <= 0:
        raise ConfigError("speech_beam_size must be 1..10 and speech_time_cap_s > 0")
    if settings.speech_compute_type not in ("int8", "int8_float32", "float32"):
        raise ConfigError(f"speech_compute_type must be int8, int8_float32 or float32, "
                          f"not {settings.speech_compute_type!r}")
    return settings, where


def _public_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be put in members' e-mails as a link (``None``: it can): it goes into a
    mail header (List-Unsubscribe), so plain ASCII, no spaces; https, except on this machine."""
    from urllib.parse import urlsplit

    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        return "must be plain ASCII without spaces (write a non-ASCII host name in its xn-- form)"
    if any(c in url for c in "<>\"\\"):
        return "must not contain <, >, quotes or backslashes"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # a port that is no number raises here
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if not host:
        return "must be https://host/path"
    if parts.scheme == "https" or (parts.scheme == "http" and host in ("localhost", "127.0.0.1", "::1")):
        return None
    return "must start with https:// (http:// only for localhost)"


def shown_value(name: str, value: Any) -> str:
    """A setting as ``binfoon config show`` prints it: secrets (a database URL's password) masked."""
    if name in SECRET_SETTINGS and value:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(str(value))
        except ArgumentError:
            return "***"
        if "password" in url.query:
            # libpq also takes the password as ?password=; hide_password masks only user:password@.
            url = url.update_query_dict({"password": "***"})
        return url.render_as_string(hide_password=True).replace("password=%2A%2A%2A", "password=***")
    return str(value)


def _check_cluster(settings: Settings) -> None:
    """A farm's settings: a plain node name, PostgreSQL, and a heartbeat well inside the lease."""
    if not settings.cluster_node:
        return
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", settings.cluster_node):
        raise ConfigError(f"cluster_node must be 1-64 lower-case letters, digits or dashes, not {settings.cluster_node!r}")
    if not settings.resolved_database_url.startswith("postgresql"):
        raise ConfigError("cluster_node is set but the database is not PostgreSQL: a farm's nodes coordinate "
                          "through one PostgreSQL (SQLite is the one-node default)")
    if settings.cluster_heartbeat_s <= 0 or settings.cluster_lease_s < 3 * settings.cluster_heartbeat_s:
        raise ConfigError("cluster_lease_s must be at least 3 x cluster_heartbeat_s (> 0): one late heartbeat "
                          "must not cost a node its calls")
