"""Who gets banned from the SIP port: N failed digest authentications from one address within a window
ban that address for a while (RELIABILITY A10).

Pure: the failures seen, the bans in force and the clock go in; a decision comes out. Reading the
security events (``ivr.telephony.security``) and writing the PJSIP ACL (``ivr.asterisk.bans``) are edges.

Rules:
- only addresses, never accounts: a ban on an account would let anyone lock an officer out;
- never an exempt network: the carrier's addresses and the loopback the lab carrier uses (a carrier's
  failure must not cut every call, and a ban there would hit everyone behind it);
- a ban lasts ``ban_s`` and then expires; a banned address's failures do not extend it (they
  cannot reach the digest check anyway: the ACL refuses them first);
- the failures of one address are counted over a sliding window, so a slow brute force (one try a
  minute with window 60 s) never reaches N, while a burst does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class BanRules:
    """How many failures within which window ban an address, for how long, and who is never banned."""

    max_failures: int = 5
    window_s: float = 60.0
    ban_s: float = 3600.0
    exempt: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window_s <= 0 or self.ban_s <= 0:
            raise ValueError("max_failures >= 1, window_s > 0 and ban_s > 0 are required")


@dataclass(frozen=True)
class Ban:
    """One banned address, until when, and how many failures earned it."""

    address: str
    until: dt.datetime
    failures: int

    def active(self, now: dt.datetime) -> bool:
        """True while the ban holds."""
        return now < self.until


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDRs as networks (``127.0.0.1`` -> ``127.0.0.1/32``); raises ``ValueError`` naming
    an entry that is neither (a host name, say)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry.strip()!r} is not an IP address or CIDR") from None
    return tuple(networks)


def canonical_address(address: str) -> str | None:
    """The address in its one written form (``::ffff:127.0.0.2`` -> ``127.0.0.2``), or ``None`` if it
    is not an IP address."""
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return str(parsed)


def is_exempt(address: str, exempt: Sequence[Network]) -> bool:
    """True when ``address`` lies in one of the exempt networks (or is no address at all)."""
    canonical = canonical_address(address)
    if canonical is None:
        return True
    parsed = ipaddress.ip_address(canonical)
    return any(parsed.version == net.version and parsed in net for net in exempt)


def recent(failures: Sequence[dt.datetime], now: dt.datetime, window_s: float) -> tuple[dt.datetime, ...]:
    """The failures still inside the window ending ``now``."""
    start = now - dt.timedelta(seconds=window_s)
    return tuple(at for at in failures if start < at <= now)


def decide(address: str, failures: Sequence[dt.datetime], bans: Mapping[str, Ban], now: dt.datetime,
           rules: BanRules) -> Ban | None:
    """A new ban for ``address`` if its ``failures`` (those inside the window count) reach the limit, it
    is not exempt and not banned already; otherwise ``None``."""
    canonical = canonical_address(address)
    if canonical is None or is_exempt(canonical, rules.exempt):
        return None
    current = bans.get(canonical)
    if current is not None and current.active(now):
        return None
    counted = recent(failures, now, rules.window_s)
    if len(counted) < rules.max_failures:
        return None
    return Ban(canonical, now + dt.timedelta(seconds=rules.ban_s), len(counted))


def expire(bans: Mapping[str, Ban], now: dt.datetime) -> tuple[dict[str, Ban], tuple[Ban, ...]]:
    """The bans still in force, and those that ended by ``now``."""
    kept = {address: ban for address, ban in bans.items() if ban.active(now)}
    ended = tuple(ban for address, ban in bans.items() if address not in kept)
    return kept, ended
