"""A number stored before the destination policy (premium, satellite, far away) is never dialled.

The dialler's edge (``AmiDialer``) refuses it before any Originate; the campaign stores the attempt as
``invalid_number`` (dial outcome ``barred``), goes on to the member's other number at once, takes it
for no sign about the trunk, and leaves a ``security.alert`` for the admins.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ivr.delivery.dialer import BARRED
from ivr.domain.destinations import DEFAULT_DESTINATIONS
from ivr.domain.vocabulary import PhoneRank
from ivr.telephony.dialer import AmiDialer, Dialled
from ivr.telephony.outcomes import DialOutcome
from storage.db import session_scope
from storage.models import AuditEntry, CallAttempt, Confirmation, PhoneNumber
from tests.unit.delivery.test_campaign_runner import FakeDialer, _add_members, _approved, _runner, _until_done
from tests.world import World, build_world


class Gateway:
    """The AMI edge as far as ``AmiDialer`` needs it: every Originate handed to it is counted."""

    connected = True

    def __init__(self) -> None:
        self.originated: list[str] = []

    async def originate(self, call_id: str, channel: str, **kwargs: Any) -> Any:
        self.originated.append(channel)
        raise AssertionError(f"a barred number reached Originate: {channel}")


class EdgeDialer(FakeDialer):
    """The fake phone network behind the real dialler edge: ``AmiDialer``'s own check runs first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway = Gateway()
        self.edge = AmiDialer(self.gateway, "PJSIP/${NUMBER}@trunk", "+3250000000", "BIN")  # type: ignore[arg-type]

    async def dial(self, call_id: str, number: str, *, context: str, variables: Mapping[str, str],
                   ring_timeout_s: float, exten: str = "s") -> Dialled:
        if DEFAULT_DESTINATIONS.refusal(number) is not None:
            return await self.edge.dial(call_id, number, context=context, variables=variables,
                                        ring_timeout_s=ring_timeout_s, exten=exten)
        return await super().dial(call_id, number, context=context, variables=variables,
                                  ring_timeout_s=ring_timeout_s, exten=exten)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store")


@pytest.mark.parametrize("number", ["+88216123456", "+3290012345", "+447700900123", "+979123456789",
                                    "+32470000001&PJSIP/trunk/+88216123456", "500"])
async def test_the_dialler_edge_never_originates_a_barred_number(number: str) -> None:
    gateway = Gateway()
    dialer = AmiDialer(gateway, "PJSIP/${NUMBER}@trunk", "+3250000000", "BIN")  # type: ignore[arg-type]
    dialled = await dialer.dial("call-1", number, context="binfoon-member", variables={}, ring_timeout_s=5)
    assert gateway.originated == []
    assert dialled.outcome is DialOutcome.INVALID_NUMBER and dialled.barred and not dialled.refused


def test_a_template_that_dials_the_trunk_directly_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """Only a Local channel into binfoon-dial-out runs the dialplan's own destination check (A6)."""
    AmiDialer(Gateway(), "Local/${NUMBER}@binfoon-dial-out", "+3250000000", "BIN")  # type: ignore[arg-type]
    assert not caplog.records
    AmiDialer(Gateway(), "PJSIP/${NUMBER}@trunk", "+3250000000", "BIN")  # type: ignore[arg-type]
    [warning] = caplog.records
    assert warning.levelname == "WARNING" and "binfoon-dial-out" in warning.getMessage()


async def test_a_stored_satellite_number_costs_nothing_and_the_second_number_is_called(
        world: World, tmp_path: Path) -> None:
    [member] = _add_members(world, 1, prefix="+88216")  # stored before the policy existed
    with session_scope(world.engine) as s:
        s.add(PhoneNumber(person_id=member, rank=PhoneRank.SECONDARY, e164="+32470000001"))
    dialer = EdgeDialer(world.desk, {})  # type: ignore[arg-type]
    runner = _runner(world, dialer)  # type: ignore[arg-type]
    await _approved(world, tmp_path)
    await runner.start()
    try:
        await _until_done(world)
    finally:
        await runner.stop()
    assert dialer.edge.ami.originated == [] and [n for _, n in dialer.dialled] == ["+32470000001"]  # type: ignore[attr-defined]
    assert not runner.trunk.down and runner.trunk.streak == ()
    with session_scope(world.engine) as s:
        attempts = [(a.e164, a.dial_outcome, a.outcome.value if a.outcome else None)
                    for a in s.scalars(select(CallAttempt).order_by(CallAttempt.attempt_no))]
        confirmed = [c.person_id for c in s.scalars(select(Confirmation))]
        alerts = s.scalars(select(AuditEntry).where(AuditEntry.action == "security.alert")).all()
    assert attempts[0] == ("+88216000000", BARRED, "invalid_number")
    assert attempts[1][0] == "+32470000001" and confirmed == [member]
    assert [(a.subject, a.details["kind"]) for a in alerts] == [(f"person:{member}", "destination-barred")]
    assert "+88216000000" not in str(alerts[0].details)  # masked: never the full number
