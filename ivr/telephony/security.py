"""SIP authentication failures from Asterisk's security events, and the ban list they feed (RELIABILITY A10).

Asterisk reports every failed digest authentication on its SIP port as an AMI security event
(``ChallengeResponseFailed``: a wrong password or an unknown account; ``InvalidPassword``). They
arrive on a session of their own (``SecurityEventStream``, event mask ``security``), so a flood of
failures never queues behind, or slows, the call-control session; the application's AMI user reads
``security`` for it. ``SipGuard`` counts them per source address and, when the pure policy
(``ivr.domain.sip_bans``) says so, bans the address with the PJSIP ACL file (``ivr.asterisk.bans``),
writes a ``security.alert`` audit row and a WARNING line, and lifts the ban when it expires.

What is not counted: ``ChallengeSent`` (the normal first leg of every digest exchange),
``InvalidAccountID`` (Asterisk sends it for the unauthenticated first request too, next to the
``ChallengeResponseFailed`` that follows a wrong answer: counting both would count one try twice),
and anything whose ``Service`` is not PJSIP (AMI logins are loopback-only).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panoramisk import Manager
from sqlalchemy import Engine

from ivr.asterisk.bans import read_bans, write_bans
from ivr.asterisk.instance import AmiCredentials
from ivr.asterisk.officers import ReloadError, reload_pjsip
from ivr.asterisk.trunk import split_list
from ivr.config import Settings
from ivr.domain.phone import mask
from ivr.domain.sip_bans import Ban, BanRules, Network, canonical_address, decide, expire, parse_networks
from ivr.telephony.ami import AmiGateway, AmiUnavailable
from storage import audit
from storage.db import session_scope
from storage.models import utcnow

log = logging.getLogger(__name__)

#: The security events that stand for one failed authentication each.
AUTH_FAILURES = frozenset({"ChallengeResponseFailed", "InvalidPassword"})


@dataclass(frozen=True)
class SipAuthFailure:
    """One failed SIP authentication as Asterisk reported it."""

    #: The event's name: ChallengeResponseFailed or InvalidPassword.
    kind: str
    #: The account tried (``<unknown>`` when no endpoint matched the username).
    account: str
    #: Where the request came from: address, port, transport (UDP, TCP, TLS, ...).
    address: str
    port: int
    transport: str
    #: The SIP dialog (Call-ID) the failure belongs to.
    session: str


def parse_remote_address(value: str) -> tuple[str, int, str] | None:
    """``IPV4/UDP/127.0.0.2/53402`` (or ``IPV6/UDP/[::1]/5060``) -> (address, port, transport); ``None``
    when it does not have that shape."""
    parts = value.split("/")
    if len(parts) < 4 or parts[0] not in ("IPV4", "IPV6"):
        return None
    address = "/".join(parts[2:-1]).strip("[]")
    try:
        port = int(parts[-1])
    except ValueError:
        return None
    return (address, port, parts[1]) if address else None


def parse_security_event(headers: Mapping[str, Any]) -> SipAuthFailure | None:
    """A failed SIP authentication from one AMI event's headers, or ``None`` for any other event."""
    if str(headers.get("Event", "")) not in AUTH_FAILURES or str(headers.get("Service", "")) != "PJSIP":
        return None
    remote = parse_remote_address(str(headers.get("RemoteAddress", "")))
    if remote is None:
        return None
    address, port, transport = remote
    return SipAuthFailure(kind=str(headers["Event"]), account=str(headers.get("AccountID", "")),
                          address=address, port=port, transport=transport,
                          session=str(headers.get("SessionID", "")))


class SecurityEventStream(AmiGateway):
    """An AMI session of its own that carries security events only, each failed SIP authentication
    handed to ``on_failure``. It reconnects, pings and re-logs in like the application's session."""

    def __init__(self, credentials: AmiCredentials, on_failure: Callable[[SipAuthFailure], None],
                 **kwargs: Any) -> None:
        super().__init__(credentials, **kwargs)
        self._on_failure = on_failure

    def _on_login(self, manager: Manager) -> None:
        super()._on_login(manager)
        # This session wants the security class only (after every login: a reconnect starts with "on").
        task = asyncio.ensure_future(manager.send_action({"Action": "Events", "EventMask": "security"}))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _dispatch(self, manager: Manager, message: Mapping[str, str]) -> None:
        try:
            failure = parse_security_event(message)
            if failure is not None:
                self._on_failure(failure)
        except Exception:  # never let a bug here kill the AMI connection
            log.exception("security event not handled: %r", dict(message).get("Event"))


def ban_rules(settings: Settings) -> BanRules:
    """The ban policy the settings describe; the carrier's addresses (``trunk_match``, else
    ``trunk_host``, host names resolved now) are never banned, nor ``sip_ban_exempt``."""
    exempt: list[Network] = list(parse_networks(split_list(settings.sip_ban_exempt)))
    carrier = split_list(settings.trunk_match) or ((settings.trunk_host,) if settings.trunk_host else ())
    for entry in carrier:
        try:
            exempt += parse_networks([entry])
        except ValueError:  # a host name: every address it has now
            try:
                infos = socket.getaddrinfo(entry, None)
            except OSError as exc:
                log.error("the carrier's host %s cannot be resolved (%s): its addresses are not exempt "
                          "from SIP bans", entry, exc)
                continue
            exempt += parse_networks(sorted({str(info[4][0]) for info in infos}))
    return BanRules(settings.sip_ban_max_failures, settings.sip_ban_window_s, settings.sip_ban_s, tuple(exempt))


def _account(account: str) -> str:
    # Usernames are no secret, but one made of digits may be someone's phone number.
    digits = account.lstrip("+")
    return mask(account) if digits.isdigit() and len(digits) >= 6 else account


class SipGuard:
    """Failed SIP authentications in, bans out: the ban list of one Asterisk instance."""

    #: How often expired bans are looked for.
    EXPIRY_CHECK_S = 1.0
    #: Addresses whose failures are remembered at most (spoofed UDP sources cannot grow memory for ever).
    MAX_TRACKED = 10_000

    def __init__(self, engine: Engine, run_dir: Path, group: int | None, rules: BanRules, *,
                 reload: bool, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.engine = engine
        self.run_dir = run_dir
        self.group = group
        self.rules = rules
        #: Run as root (the lab) the guard reloads PJSIP itself; unprivileged (production) it only
        #: writes the file and systemd's path unit has root reload it.
        self.reload = reload
        self.clock = clock
        self.bans: dict[str, Ban] = {}
        self._failures: collections.OrderedDict[str, list[dt.datetime]] = collections.OrderedDict()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None
        self._stream: SecurityEventStream | None = None
        #: Every failure seen (the most recent ones), for monitoring and tests.
        self.seen: collections.deque[SipAuthFailure] = collections.deque(maxlen=1000)

    async def start(self, credentials: AmiCredentials | None) -> None:
        """Take the bans the file holds (a restart keeps them), drop the expired ones, watch expiry, and
        listen to Asterisk's security events on their own AMI session (``credentials``)."""
        try:
            self.bans = await asyncio.to_thread(read_bans, self.run_dir)
        except OSError as exc:  # unreadable: Asterisk still enforces what it loaded; we start from none
            log.error("SIP ban list not read: %s", exc)
        await self._lift_expired()
        self._expiry = asyncio.get_running_loop().create_task(self._watch_expiry(), name="sip-ban-expiry")
        if credentials is None:
            return
        stream = SecurityEventStream(credentials, self.failure)
        try:
            await stream.connect()
        except AmiUnavailable as exc:
            # The bans in force stay in Asterisk's ACL; only new ones cannot be made.
            log.error("SIP security events unavailable, no new bans: %s", exc)
            return
        self._stream = stream

    async def stop(self) -> None:
        """Stop listening and watching (the bans stay in the file and in Asterisk)."""
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
        # A ban being written finishes, its alert included: short, and nothing is lost.
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def failure(self, event: SipAuthFailure) -> None:
        """One failed authentication (from the security event stream): count it, ban if it is one too many."""
        self.seen.append(event)
        now = self.clock()
        log.info("SIP authentication failed for %s from %s (%s)", _account(event.account), event.address,
                 event.kind)
        address = canonical_address(event.address)
        if address is None:
            return
        times = self._failures.pop(address, [])
        times = [at for at in times if (now - at).total_seconds() < self.rules.window_s] + [now]
        self._failures[address] = times
        while len(self._failures) > self.MAX_TRACKED:
            self._failures.popitem(last=False)
        ban = decide(address, times, self.bans, now, self.rules)
        if ban is None:
            return
        self.bans[ban.address] = ban  # at once: the next failure must not ban it twice
        self._failures.pop(address, None)
        accounts = sorted({_account(e.account) for e in self.seen if canonical_address(e.address) == address})
        task = asyncio.ensure_future(self._banned(ban, accounts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _banned(self, ban: Ban, accounts: list[str]) -> None:
        async with self._lock:
            await self._publish()
        log.warning("SIP: %s banned until %s after %d failed authentications within %.0f s (accounts %s)",
                    ban.address, ban.until.isoformat(timespec="seconds"), ban.failures, self.rules.window_s,
                    ", ".join(accounts))
        await asyncio.to_thread(self._audit, ban, accounts)

    def _audit(self, ban: Ban, accounts: list[str]) -> None:
        with session_scope(self.engine) as s:
            audit.record(s, "system", "security.alert", f"sip:{ban.address}", kind="sip_ban",
                         address=ban.address, failures=ban.failures, window_s=self.rules.window_s,
                         until=ban.until.isoformat(timespec="seconds"), accounts=accounts)

    async def _publish(self) -> None:
        # The file is the ban list's state and Asterisk's ACL at once: written whole, then reloaded.
        bans = list(self.bans.values())
        try:
            await asyncio.to_thread(write_bans, self.run_dir, bans, self.group)
        except OSError as exc:
            log.error("SIP ban list not written (the bans are not in force): %s", exc)
            return
        if self.reload:
            try:
                await asyncio.to_thread(reload_pjsip, self.run_dir)
            except ReloadError as exc:
                log.error("SIP ban list written but PJSIP not reloaded: %s", exc)

    async def _lift_expired(self) -> None:
        async with self._lock:
            kept, ended = expire(self.bans, self.clock())
            if not ended:
                return
            self.bans = kept
            await self._publish()
        for ban in ended:
            log.info("SIP: the ban of %s expired", ban.address)

    async def _watch_expiry(self) -> None:
        while True:
            await asyncio.sleep(self.EXPIRY_CHECK_S)
            try:
                await self._lift_expired()
            except Exception:
                log.exception("SIP ban expiry failed; trying again")
