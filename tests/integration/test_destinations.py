"""Toll fraud against the real Asterisk (issue 14 item 5, RELIABILITY A6).

- A number stored before the destination policy (a satellite or premium number in the member list)
  is never dialled: zero calls reach the phone network for it, the member's other number is called,
  the attempt ends ``invalid_number`` (dial outcome ``barred``) and the admins get a security alert.
- No inbound path reaches the trunk: an officer's own SIP account (digest-authenticated, the real
  softphone) and the carrier's own address dialling ``+882…``, ``0900…`` or an injected
  ``500&PJSIP/trunk/…`` are refused before any Dial: zero calls reach the carrier.
- The dialplan itself: no context an inbound call can reach (following every Goto/Gosub) runs Dial.
- The command line refuses such numbers with the reason (line-numbered for a member file).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.cli import main
from ivr.delivery.dialer import BARRED
from ivr.delivery.report import campaign_report
from ivr.directory.sip_accounts import add_sip_account
from ivr.domain.destinations import DEFAULT_DESTINATIONS, DIAL_OUT_COUNTRY_CODES, REFUSED_RANGES
from ivr.domain.vocabulary import Language, PhoneRank, Role
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.phones import PhoneScript
from ivr.lab.scenarios import member_cases, script_members, seed_members
from ivr.media.voice import PromptRenderer
from storage.db import session_scope
from storage.models import AuditEntry, CallAttempt, Person, PhoneNumber, RoleAssignment
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import campaign_done, message_seconds, start_binfoon, submit_recorded
from tests.integration.conftest import until
from tests.integration.test_officer_sip import Softphone
from tests.integration.test_trunk import _final_code, sip_responses
from tests.world import build_world

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
DIALPLAN = Path(__file__).resolve().parents[2] / "dialplan"
#: What an attacker dials: a satellite-network number, a Belgian premium number, and a dial-string injection.
ATTACKS = ("+88216123456", "0900123456", "500&PJSIP/trunk/+88216123456")


async def test_a_stored_satellite_or_premium_number_is_never_dialled(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer, member_ring_timeout_s=3.0, review_ring_timeout_s=1.0,
                                  urgent_retry_after_s=1.0, no_key_retries=0)
    try:
        people = {}
        with session_scope(binfoon.world.engine) as s:
            # Stored behind the policy's back (an old import, a hand-edited database).
            for name, numbers in (("Satelliet", ("+88216000001", "+3293600001")), ("Premium", ("+3290012345",))):
                person = Person(name=name, language=Language.NL)
                for rank, e164 in zip((PhoneRank.PRIMARY, PhoneRank.SECONDARY), numbers):
                    person.phones.append(PhoneNumber(rank=rank, e164=e164))
                person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=binfoon.world.bin_id))
                s.add(person)
                s.flush()
                people[name] = person.id
        lab.network.script("+3293600001", PhoneScript.answers(rings=1, hangup_after_s=2.0))
        await submit_recorded(binfoon, CLIP)
        await campaign_done(binfoon, timeout_s=120)
        # Zero calls reached the phone network for the barred numbers; every call that did is allowed.
        assert lab.network.calls_to("+88216000001") == [] and lab.network.calls_to("+3290012345") == []
        assert len(lab.network.calls_to("+3293600001")) == 1
        assert [c.number for c in lab.network.calls if DEFAULT_DESTINATIONS.refusal(c.number)] == []
        with session_scope(binfoon.world.engine) as s:
            barred = {(a.person_id, a.e164, a.outcome.value if a.outcome else None)
                      for a in s.scalars(select(CallAttempt).where(CallAttempt.dial_outcome == BARRED))}
            alerts = [(a.subject, a.details["kind"]) for a in s.scalars(
                select(AuditEntry).where(AuditEntry.action == "security.alert"))]
        assert barred == {(people["Satelliet"], "+88216000001", "invalid_number"),
                          (people["Premium"], "+3290012345", "invalid_number")}
        assert sorted(alerts) == sorted((f"person:{pid}", "destination-barred") for pid in people.values())
        print(f"barred at dial time: {len(barred)} attempts, 0 calls at the network; "
              f"{len(lab.network.calls)} calls placed to allowed numbers")
    finally:
        await binfoon.app.stop()


async def test_no_call_from_the_carriers_address_reaches_the_trunk(trunk_lab: PhoneLab, tmp_path: Path,
                                                                  renderer: PromptRenderer) -> None:
    """INVITEs from the carrier's own address land in binfoon-trunk-in: the attacks are refused there."""
    lab = trunk_lab
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    try:
        for number in ATTACKS:
            lines = await asyncio.to_thread(sip_responses, ("127.0.0.1", lab.asterisk.options.sip_port),
                                            "127.0.0.1", "+32470000009", number)
            assert _final_code(lines) in (403, 404, 484), (number, lines)
        # Zero calls reached the carrier (the lab's network Asterisk), none is up there.
        assert lab.network.calls == []
        assert await lab.network_ami.live_channel_ids() == set()
    finally:
        await binfoon.app.stop()


async def test_no_call_from_an_officers_sip_account_leaves_binfoon(lab: PhoneLab, tmp_path: Path,
                                                                   renderer: PromptRenderer) -> None:
    """An officer's softphone, registered with its digest password, dials the attacks: each is refused
    before any Dial (binfoon-officer reaches the police line and nothing else), no call leaves."""
    password = "officer-password-0123456789"
    world = build_world(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path / "var" / "recordings")
    with session_scope(world.engine) as s:
        add_sip_account(s, world.officer_id, password, "test")
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=world)
    phone = None
    try:
        phone = await Softphone(tmp_path / "officer", f"officer-{world.officer_id}", password,
                                lab.asterisk.options.sip_port).start()
        await until(lambda: phone.saw("REGISTER_OK"), 10, "the officer registered")
        for count, number in enumerate(ATTACKS, start=1):
            await phone.dial(number)
            await until(lambda count=count: len(phone.saw("CALL_CLOSED")) >= count, 10,  # type: ignore[misc]
                        f"the call to {number} refused")
        assert not phone.saw("CALL_ESTABLISHED"), phone.events
        # Each reached BINfoon's dialplan and was rejected there (Hangup(21): SIP 403), not lost on the way.
        assert [e.get("param") for e in phone.saw("CALL_CLOSED")] == ["403 Forbidden"] * len(ATTACKS)
        # No call left BINfoon's Asterisk: nothing reached the phone network, no channel is up.
        assert lab.network.calls == []
        assert await lab.ami.live_channel_ids() == set()
    finally:
        if phone is not None:
            await phone.stop()
        await binfoon.app.stop()


# -- outbound through the dialplan: Local/${NUMBER}@binfoon-dial-out -------------------------------
DIAL_OUT = "Local/${NUMBER}@binfoon-dial-out"
#: Numbers on both sides of the policy, for the dialplan's patterns to agree with the Python policy.
SAMPLES = ("+3292000001", "+32475000001", "+31201234567", "+33142000000", "+4930123456", "+352621123456",
           "+3290012345", "+3270123456", "+3278123456", "+32800123456", "+3190012345", "+3184123456",
           "+33899123456", "+49900123456", "+4918012345", "+88216123456", "+8816123456", "+447700900123",
           "+979123456789", "+12025550123")


async def test_the_dial_out_context_lets_through_exactly_what_the_policy_allows(trunk_lab: PhoneLab) -> None:
    lab = trunk_lab
    for number in SAMPLES:
        await lab.ami.originate(f"dial-out-{number[1:]}", DIAL_OUT.replace("${NUMBER}", number),
                                context="binfoon-member", exten="voicemail", timeout_s=3.0)
    reached = {c.number for c in lab.network.calls}
    allowed = {n for n in SAMPLES if DEFAULT_DESTINATIONS.refusal(n) is None}
    assert reached == allowed, (sorted(reached - allowed), sorted(allowed - reached))
    print(f"dial-out: {len(allowed)} allowed numbers reached the carrier, "
          f"{len(SAMPLES) - len(allowed)} refused ones: 0 calls")


async def test_a_campaign_through_the_dial_out_context_ends_as_scripted(
        trunk_lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer) -> None:
    """The dialplan's check in the call path changes no outcome: busy stays busy, a machine is a
    machine, a key is a confirmation, and the caller ID the phones see is the zone's number."""
    lab = trunk_lab
    lab.dial_template = DIAL_OUT
    binfoon = await start_binfoon(lab, tmp_path, renderer, max_channels=20, max_cps=20.0,
                                  member_ring_timeout_s=3.0, review_ring_timeout_s=1.0, urgent_retry_after_s=1.0,
                                  no_key_retry_after_s=1.0, key_timeout_s=4.0, member_reminders=1)
    try:
        people = seed_members(binfoon.world.engine, 12, member_cases(10, await message_seconds(renderer, CLIP)))
        script_members(lab, binfoon.world.engine, people)
        await submit_recorded(binfoon, CLIP)
        campaign = await campaign_done(binfoon, timeout_s=180)
        report = campaign_report(binfoon.world.engine, campaign.id, binfoon.app.campaigns.policies,
                                 dt.datetime.now(dt.timezone.utc))
        states = {line.person_id: line.state for line in report.members}
        assert {pid: states[pid] for pid in people} == {pid: case.expected for pid, case in people.items()}
        shown = {(c.caller_id, c.caller_id_name) for c in lab.network.calls}
        assert shown == {(binfoon.settings.caller_id_number, binfoon.settings.caller_id_name)}
        print(f"campaign via {DIAL_OUT}: {dict((k, v) for k, v in report.counts().items() if v)}, "
              f"{report.attempts} calls")
    finally:
        await binfoon.app.stop()


# -- the dialplan as written: which contexts an inbound call can reach ---------------------------
_CONTEXT = re.compile(r"^\[([\w-]+)\]")
_NAME = re.compile(r"[\w-]+")
_DIAL = re.compile(r"\b(?:Dial|Originate|Queue|Page)\(", re.IGNORECASE)


def _contexts(text: str) -> dict[str, list[str]]:
    contexts: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.split(";", 1)[0].strip()
        match = _CONTEXT.match(line)
        if match:
            current = contexts.setdefault(match.group(1), [])
        elif current is not None and line:
            current.append(line)
    return contexts


def dialling_contexts_reached(text: str, entries: tuple[str, ...]) -> list[str]:
    """The contexts reachable from ``entries`` that run Dial (or Originate, Queue, Page).

    Reachable over-approximates on purpose: any context name on a reachable line counts (a Goto or
    Gosub however nested, an ``include =>``, a Dial to a Local channel in that context): a way out
    cannot hide behind a form the parser does not know."""
    contexts = _contexts(text)
    seen: set[str] = set()
    todo = [e for e in entries if e in contexts]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in contexts[name]:
            for target in _NAME.findall(line):
                if target in contexts and target not in seen:
                    todo.append(target)
    return sorted(name for name in seen if any(_DIAL.search(line) for line in contexts[name]))


#: Where a call from outside enters: the trunk's context and the officers' accounts' context.
INBOUND = ("binfoon-trunk-in", "binfoon-officer")


def test_no_context_an_inbound_call_reaches_runs_dial() -> None:
    text = "\n".join(path.read_text(encoding="utf-8") for path in sorted(DIALPLAN.glob("binfoon-*.conf")))
    assert dialling_contexts_reached(text, INBOUND) == []
    # The check sees a Dial however deep it hides (it would have caught a way out).
    hidden = text + "\n[binfoon-sneaky]\nexten => s,1,Dial(PJSIP/${ARG1}@trunk)\n"
    hidden = hidden.replace("exten => route,1,GotoIf(", "exten => route,1,Gosub(binfoon-sneaky,s,1)\n"
                            "exten => route,2,GotoIf(", 1)
    assert dialling_contexts_reached(hidden, INBOUND) == ["binfoon-sneaky"]
    # ... and behind an include or a nested jump (found in review: the first version missed both).
    included = text.replace("[binfoon-officer]\n", "[binfoon-officer]\ninclude => binfoon-dial-trunk\n", 1)
    assert dialling_contexts_reached(included, INBOUND) == ["binfoon-dial-trunk"]
    nested = text + "\n[binfoon-sneaky]\nexten => s,1,Dial(PJSIP/${ARG1}@trunk)\n"
    nested = nested.replace("exten => route,1,GotoIf(", "exten => route,1,Gosub(${IF($[1]?binfoon-sneaky:x)},s,1)\n"
                            "exten => route,2,GotoIf(", 1)
    assert dialling_contexts_reached(nested, INBOUND) == ["binfoon-sneaky"]


def test_every_refused_range_in_an_allowed_country_has_its_dial_out_pattern() -> None:
    """The dialplan's patterns follow the policy's table (one list of ranges, checked in two places)."""
    text = (DIALPLAN / "binfoon-member.conf").read_text(encoding="utf-8")
    dial_out = text[text.index("[binfoon-dial-out]"):text.index("[binfoon-dial-trunk]")]
    refused = {m.group(1) for m in re.finditer(r"exten => _\+(\d+)[X.]+,1,Hangup\(21\)", dial_out)}
    inside = {prefix for prefix, _why in REFUSED_RANGES
              if any(prefix.startswith(cc) and prefix != cc for cc in DIAL_OUT_COUNTRY_CODES)}
    assert inside - refused == set() and refused - inside == set()


# -- the command line -----------------------------------------------------------------------------
def test_the_command_line_refuses_barred_numbers_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0
    assert main(["bin", "add", "--number", "12", "--name", "Noord", "--zone", "5415", "--street", "Dorp"]) == 0
    capsys.readouterr()
    assert main(["person", "add", "--name", "X", "--role", "coordinator", "--bin", "12",
                 "--phone", "+882 16 123456"]) == 1
    assert "+882" in capsys.readouterr().err
    members = tmp_path / "leden.csv"
    members.write_text("naam;telefoon\nJan;09 123 45 67\nPiet;0033 899 123 456\n", encoding="utf-8")
    assert main(["members", "import", "--bin", "12", str(members)]) == 1
    assert "leden.csv: line 3: phone: +33899… is a French 08 special-rate service number" in capsys.readouterr().err
    # A configured country list applies too (BINFOON_ALLOWED_COUNTRY_CODES).
    monkeypatch.setenv("BINFOON_ALLOWED_COUNTRY_CODES", "32")
    assert main(["person", "add", "--name", "Y", "--role", "coordinator", "--bin", "12",
                 "--phone", "+31 20 123 4567"]) == 1
    assert "outside the countries BINfoon calls (+32)" in capsys.readouterr().err
    assert main(["members", "list", "--bin", "12"]) == 0 and capsys.readouterr().out == ""
