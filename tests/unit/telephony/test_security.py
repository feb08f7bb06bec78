"""SIP authentication failures from Asterisk's security events, and the guard that bans their address.

The headers are the ones Asterisk 22 sent for a wrong password from 127.0.0.2 (recorded in the lab).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.asterisk.bans import read_bans
from ivr.asterisk.instance import AmiCredentials
from ivr.config import Settings
from ivr.domain.phone import mask
from ivr.domain.sip_bans import BanRules, parse_networks
from ivr.telephony.security import (
    SecurityEventStream,
    SipAuthFailure,
    SipGuard,
    ban_rules,
    parse_remote_address,
    parse_security_event,
)
from storage.db import session_scope
from storage.models import AuditEntry
from tests.conftest import Clock
from tests.integration.conftest import until
from tests.world import World

CHALLENGE_RESPONSE_FAILED = {
    "Event": "ChallengeResponseFailed", "Privilege": "security,all", "Severity": "Error", "Service": "PJSIP",
    "EventVersion": "1", "AccountID": "officer-7", "SessionID": "c6b519e972b44a1ab12c9b0c03b01030@127.0.0.2",
    "LocalAddress": "IPV4/UDP/127.0.0.1/57311", "RemoteAddress": "IPV4/UDP/127.0.0.2/53402",
    "Challenge": "1796559580/d243b1f3a14f6d5daf78c610d0d3f560", "Response": "60bd3f64f8bb66cfcef315703ed2e413",
    "ExpectedResponse": ""}
CHALLENGE_SENT = {**CHALLENGE_RESPONSE_FAILED, "Event": "ChallengeSent", "Severity": "Informational"}
INVALID_ACCOUNT = {**CHALLENGE_RESPONSE_FAILED, "Event": "InvalidAccountID"}
AMI_LOGIN_FAILED = {**CHALLENGE_RESPONSE_FAILED, "Event": "InvalidPassword", "Service": "AMI",
                    "RemoteAddress": "IPV4/TCP/127.0.0.1/40000"}


def test_a_failed_challenge_is_one_failure_with_its_address() -> None:
    assert parse_security_event(CHALLENGE_RESPONSE_FAILED) == SipAuthFailure(
        kind="ChallengeResponseFailed", account="officer-7", address="127.0.0.2", port=53402, transport="UDP",
        session="c6b519e972b44a1ab12c9b0c03b01030@127.0.0.2")
    assert parse_security_event({**CHALLENGE_RESPONSE_FAILED, "Event": "InvalidPassword"}) is not None


@pytest.mark.parametrize("headers", [CHALLENGE_SENT, INVALID_ACCOUNT, AMI_LOGIN_FAILED,
                                     {**CHALLENGE_RESPONSE_FAILED, "RemoteAddress": "garbage"},
                                     {"Event": "Hangup"}])
def test_other_events_are_not_failures(headers: dict[str, str]) -> None:
    # ChallengeSent is every exchange's first leg; InvalidAccountID comes next to the failure it belongs to.
    assert parse_security_event(headers) is None


def test_remote_addresses_of_both_families() -> None:
    assert parse_remote_address("IPV4/TCP/198.51.100.7/5061") == ("198.51.100.7", 5061, "TCP")
    assert parse_remote_address("IPV6/UDP/[2001:db8::1]/5060") == ("2001:db8::1", 5060, "UDP")
    assert parse_remote_address("IPV6/UDP/2001:db8::1/5060") == ("2001:db8::1", 5060, "UDP")
    assert parse_remote_address("UNIX/x") is None


def test_the_stream_hands_on_failures_only() -> None:
    got: list[SipAuthFailure] = []
    stream = SecurityEventStream(AmiCredentials("127.0.0.1", 1, "binfoon", "x"), got.append)
    for headers in (CHALLENGE_SENT, CHALLENGE_RESPONSE_FAILED, {"Event": "FullyBooted"}):
        stream._dispatch(None, headers)
    assert [f.kind for f in got] == ["ChallengeResponseFailed"]


def test_the_carrier_and_the_exempt_list_are_never_banned() -> None:
    rules = ban_rules(dataclasses.replace(Settings(), trunk_host="sip.carrier.example",
                                          trunk_match="192.0.2.0/28", sip_ban_exempt="127.0.0.1"))
    assert rules.exempt == parse_networks(["127.0.0.1", "192.0.2.0/28"])
    assert ban_rules(dataclasses.replace(Settings(), trunk_host="198.51.100.1")).exempt[-1] == \
        parse_networks(["198.51.100.1"])[0]


def _failure(address: str, account: str = "officer-7") -> SipAuthFailure:
    return SipAuthFailure("ChallengeResponseFailed", account, address, 5060, "UDP", "call@x")


def _alerts(world: World) -> list[AuditEntry]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == "security.alert")))


async def test_repeated_failures_ban_once_audit_once_and_expire(
        world: World, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rules = BanRules(max_failures=3, window_s=60.0, ban_s=600.0, exempt=parse_networks(["127.0.0.1"]))
    guard = SipGuard(world.engine, tmp_path, None, rules, reload=False, clock=clock)
    guard.EXPIRY_CHECK_S = 0.01
    await guard.start(None)
    caplog.set_level(logging.INFO, logger="ivr.telephony.security")
    try:
        for account in ("officer-7", "+32475000001"):
            guard.failure(_failure("198.51.100.7", account))
            clock.advance(seconds=10)
        for _ in range(5):
            guard.failure(_failure("127.0.0.1"))  # exempt
        assert read_bans(tmp_path) == {}
        guard.failure(_failure("198.51.100.7"))
        guard.failure(_failure("198.51.100.7"))  # already banned: no second ban
        await until(lambda: _alerts(world), 5, "the alert")
        [alert] = _alerts(world)
        assert alert.actor == "system" and alert.subject == "sip:198.51.100.7"
        # A username made of digits may be a phone number: masked.
        assert alert.details["kind"] == "sip_ban" and alert.details["accounts"] == [mask("+32475000001"), "officer-7"]
        assert "+32475000001" not in str(alert.details)
        assert set(read_bans(tmp_path)) == {"198.51.100.7"}
        assert [r.levelno for r in caplog.records if "banned" in r.getMessage()] == [logging.WARNING]
        assert not [r for r in caplog.records if "+32475000001" in r.getMessage()]

        # A restart takes the bans from the file.
        await guard.stop()
        guard = SipGuard(world.engine, tmp_path, None, rules, reload=False, clock=clock)
        guard.EXPIRY_CHECK_S = 0.01
        await guard.start(None)
        assert set(guard.bans) == {"198.51.100.7"}
        # Its time up, the ban is lifted from the file.
        clock.advance(seconds=600)
        await until(lambda: not read_bans(tmp_path), 5, "the ban lifted")
        assert read_bans(tmp_path) == {} and guard.bans == {}
    finally:
        await guard.stop()
