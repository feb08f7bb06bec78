"""Scenarios shared by the demo and the benchmarks: a directory to call, and an officer who alerts it.

Everything here goes through the real parts: the police line on Asterisk, the simulated phone
network, the application's flows and its database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from ivr.app import BinfoonApp
from ivr.lab.timeline import Timeline
from ivr.delivery.policy import AttemptView, MemberView, RetryPolicy, Verdict, next_step
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import (
    Behaviour, CallerScript, HangUp, Listen, OutgoingCall, PhoneScript, Press, Speak,
)
from storage import audit
from storage.db import session_scope
from storage.models import Bin, Person, PhoneNumber, PoliceZone, RoleAssignment
from ivr.domain.vocabulary import Language, PhoneRank, Role
from storage.pins import hash_pin

ZONE = ("5415", "Gent")
OFFICER = ("Inspecteur Peeters", "+32475000001")


@dataclass(frozen=True)
class Lane:
    """One BIN of the scenario with its coordinator's number."""

    bin_number: int
    bin_name: str
    coordinator_phone: str


def seed_directory(engine: Engine, pin: str, lanes: list[Lane]) -> None:
    """A zone, an officer who may alert it, and per lane a BIN with one coordinator."""
    with session_scope(engine) as s:
        zone = PoliceZone(code=ZONE[0], name=ZONE[1])
        s.add(zone)
        s.flush()
        officer = Person(name=OFFICER[0], language=Language.NL, pin_hash=hash_pin(pin))
        officer.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=OFFICER[1]))
        officer.roles.append(RoleAssignment(role=Role.POLICE_OFFICER, zone_id=zone.id))
        s.add(officer)
        for i, lane in enumerate(lanes, start=1):
            bin_ = Bin(number=lane.bin_number, name=lane.bin_name, zone_id=zone.id)
            s.add(bin_)
            s.flush()
            coordinator = Person(name=f"Coördinator {i}", language=Language.NL)
            coordinator.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=lane.coordinator_phone))
            coordinator.roles.append(RoleAssignment(role=Role.COORDINATOR, bin_id=bin_.id))
            s.add(coordinator)
        audit.record(s, "demo", "directory.seed", f"zone:{ZONE[0]}", bins=len(lanes))


def officer_alert(speech: Path, pin: str, bin_number: int, urgent: bool = True) -> CallerScript:
    """An officer who listens to each prompt, answers it, speaks the alert, sends it and hangs up."""
    return CallerScript.of(
        Listen(), Press(pin + "#"),
        Listen(), Press(f"{bin_number}#"),
        Listen(), Press("1"),
        Listen(), Press("1" if urgent else "2"),
        Listen(), Speak(speech), Press("#"),
        Listen(), Press("3"), HangUp(),  # like a real officer: send, and hang up at once
    )


@dataclass(frozen=True)
class AlertRun:
    """What one officer alert measured."""

    officer: OutgoingCall
    message_id: int | None
    #: Officer's hang-up -> the coordinator's phone starts ringing (negative: it rang first).
    hangup_to_ring_s: float | None
    #: The officer's "send" key reached the database -> the coordinator's phone rang.
    submit_to_ring_s: float | None


async def run_alert(lab: PhoneLab, app: BinfoonApp, timeline: Timeline, lane: Lane, speech: Path, pin: str,
                    timeout_s: float = 120.0) -> AlertRun:
    """Place one officer alert for ``lane`` and measure until its coordinator's phone rings."""
    before = len(lab.network.calls_to(lane.coordinator_phone))
    officer = await lab.call_in(OFFICER[1], officer_alert(speech, pin, lane.bin_number))
    await officer.wait(timeout_s)
    deadline = time.monotonic() + 30
    ring = None
    while time.monotonic() < deadline:
        calls = lab.network.calls_to(lane.coordinator_phone)
        if len(calls) > before:
            ring = calls[before].started_at
            break
        await asyncio.sleep(0.05)
    message_id = await app.desk.latest_message_of_bin(lane.bin_number)
    submitted = timeline.submitted_at.get(message_id) if message_id is not None else None
    return AlertRun(
        officer=officer, message_id=message_id,
        hangup_to_ring_s=None if ring is None or officer.ended_at is None else ring - officer.ended_at,
        submit_to_ring_s=None if ring is None or submitted is None else ring - submitted,
    )


def coordinator_presses(key: str, at_s: float) -> PhoneScript:
    """A coordinator who answers at the first ring and presses ``key`` ``at_s`` seconds later."""
    return PhoneScript.answers(rings=1, keys=((at_s, key),))


# -- BINFOON 2: a BIN of members with mixed behaviour -------------------------------------------
@dataclass(frozen=True)
class MemberCase:
    """A simulated household: how its numbers behave and the final state that must follow."""

    behaviour: str
    primary: PhoneScript
    secondary: PhoneScript | None
    expected: str


def member_cases(count: int, message_s: float, *, machines: bool = True) -> list[MemberCase]:
    """``count`` households cycling through every behaviour the dialer must handle.

    ``message_s`` is how long header and recording take after the answer: keys are pressed after it.
    """
    after = message_s + 2.0
    confirm = PhoneScript.answers(rings=1, keys=((after, "1"),))
    kinds: list[MemberCase] = [
        MemberCase("confirms", confirm, None, "confirmed"),
        MemberCase("replays then confirms", PhoneScript.answers(keys=((after, "2"), (2 * after, "1"))), None,
                   "confirmed"),
        MemberCase("confirms", PhoneScript.answers(rings=2, keys=((after, "1"),)), None, "confirmed"),
        MemberCase("no answer, second number confirms", PhoneScript.never_answers(), confirm, "confirmed"),
        MemberCase("busy", PhoneScript.busy(), None, "busy"),
        MemberCase("never answers", PhoneScript.never_answers(), None, "no_answer"),
        MemberCase("number not in service, second number confirms", PhoneScript.unreachable(), confirm,
                   "confirmed"),
        MemberCase("network congestion", PhoneScript.congested(), None, "failed"),
        MemberCase("hangs up during the message", PhoneScript.hangs_up_after(2.0), None, "answered_no_key"),
        MemberCase("confirms", confirm, None, "confirmed"),
    ]
    if machines:
        kinds.append(MemberCase("answering machine", PhoneScript.answering_machine(rings=2), None,
                                "answering_machine"))
    return [kinds[i % len(kinds)] for i in range(count)]


def seed_members(engine: Engine, bin_number: int, cases: list[MemberCase], prefix: str = "+3293") -> dict[int, MemberCase]:
    """Add the households to the BIN (one per case); returns person id -> case."""
    from sqlalchemy import select

    out: dict[int, MemberCase] = {}
    with session_scope(engine) as s:
        bin_ = s.scalars(select(Bin).where(Bin.number == bin_number)).one()
        for i, case in enumerate(cases, start=1):
            person = Person(name=f"Huishouden {i}", language=Language.NL)
            person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=f"{prefix}{i:06d}"))
            if case.secondary is not None:
                person.phones.append(PhoneNumber(rank=PhoneRank.SECONDARY, e164=f"{prefix}{500000 + i:06d}"))
            person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
            s.add(person)
            s.flush()
            out[person.id] = case
    return out


def script_members(lab: PhoneLab, engine: Engine, people: dict[int, MemberCase]) -> None:
    """Give every member's numbers their scripted behaviour in the simulated network."""
    from sqlalchemy import select

    with session_scope(engine) as s:
        for phone in s.scalars(select(PhoneNumber).where(PhoneNumber.person_id.in_(list(people)))):
            case = people[phone.person_id]
            script = case.primary if phone.rank is PhoneRank.PRIMARY else case.secondary
            assert script is not None
            lab.network.script(phone.e164, script)


def expected_counts(people: dict[int, MemberCase], policy: RetryPolicy | None = None) -> dict[str, int]:
    """The report counts the simulator's scripts imply (with ``policy``, also the calls it makes)."""
    out: dict[str, int] = {"members": len(people)}
    for case in people.values():
        out[case.expected] = out.get(case.expected, 0) + 1
    if policy is not None:
        out["attempts"] = sum(expected_attempts(case, policy) for case in people.values())
    return out


def scripted_outcome(script: PhoneScript) -> str:
    """How every call to a number with this script must end, as the dialer classifies it."""
    if script.behaviour is Behaviour.ANSWER:
        return "confirmed" if any("1" in key.digits for key in script.keys) else "answered_no_key"
    return {Behaviour.NO_ANSWER: "no_answer", Behaviour.BUSY: "busy", Behaviour.CONGESTION: "congestion",
            Behaviour.UNREACHABLE: "invalid_number", Behaviour.ANSWERING_MACHINE: "voicemail"}[script.behaviour]


def expected_attempts(case: MemberCase, policy: RetryPolicy) -> int:
    """How many calls the retry ``policy`` makes to this household when its numbers behave as scripted.

    The pure policy is played against the scripts alone, with no telephony: a campaign that makes
    a different number of calls has dialled a number twice, skipped one, or misread an outcome.
    """
    scripts = {PhoneRank.PRIMARY.value: case.primary, PhoneRank.SECONDARY.value: case.secondary}
    numbers = tuple((rank, f"+3290000000{i}") for i, (rank, script) in enumerate(scripts.items()) if script)
    attempts: list[AttemptView] = []
    now = dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone.utc)
    confirmed = False
    while True:
        step = next_step(MemberView(0, numbers, tuple(attempts), confirmed), policy, now)
        if step.verdict is not Verdict.DIAL:
            return len(attempts)
        script = scripts[step.rank]
        assert script is not None
        outcome = scripted_outcome(script)
        confirmed = outcome == "confirmed"
        now = max(now, step.at or now) + dt.timedelta(seconds=60)
        attempts.append(AttemptView(step.attempt_no, step.rank, outcome, now))
