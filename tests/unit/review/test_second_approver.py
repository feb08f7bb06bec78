"""The second approver: an urgent message without review waits for another police officer of the zone
(approvers first, then officers, never the author); 1 approves, 2 replays, 3 rejects; nobody: the
author is told and it is never sent unapproved."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.domain.vocabulary import Decision, Escalation, MessageStatus, PhoneRank, Role
from ivr.review.flow import ReviewEnd, coordinator_review
from ivr.review.store import Contact
from storage.db import session_scope
from storage.models import AuditEntry, Bin, Message, Person, PhoneNumber, PoliceZone, ReviewDecision, RoleAssignment
from tests.conftest import Clock
from tests.unit.review.test_one_level import alarm_at
from tests.fakes import FakeCall, WhilePlaying
from tests.steps import StepLog
from tests.unit.review.test_rounds import RULES, _calls, _round, _world
from tests.world import OFFICER_PHONE, World

COLLEAGUE = "+32475000009"


def second_approver_zone(world: World, *, one_level: bool = True, colleague: bool = True) -> World:
    with session_scope(world.engine) as s:
        s.get_one(PoliceZone, world.zone_id).second_approver = True
        s.get_one(Bin, world.bin_id).one_level = one_level
        if colleague:
            person = Person(name="Inspecteur Claes")
            person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=COLLEAGUE))
            person.roles.append(RoleAssignment(role=Role.POLICE_OFFICER, zone_id=world.zone_id))
            s.add(person)
    return world


def _state(world: World, message_id: int) -> tuple[Message, ReviewDecision | None, list[str]]:
    with session_scope(world.engine) as s:
        actions = [a.action for a in s.scalars(select(AuditEntry).where(AuditEntry.subject == f"message:{message_id}"))]
        return (s.get_one(Message, message_id),
                s.scalars(select(ReviewDecision).where(ReviewDecision.message_id == message_id)).first(), actions)


async def test_an_approver_approves_then_the_members_and_the_coordinators(tmp_path: Path, clock: Clock) -> None:
    world = second_approver_zone(_world(tmp_path, clock, coordinators=2, approvers=1))
    [(approver_id, approver)] = world.approvers
    # The approver listens again (2), then approves (1).
    message_id, dialer, after, _, _ = await _round(world, tmp_path, clock, {approver: ["2", "1"]})
    assert dialer.dialled[0] == approver and OFFICER_PHONE not in dialer.dialled   # never the author
    assert [d.decision for d in after.decisions] == [Decision.FORWARD_NOW]
    message, decision, actions = _state(world, message_id)
    assert message.status is MessageStatus.APPROVED and message.second_approved_by_id == approver_id
    assert decision is not None and (decision.via, decision.person_id) == ("second_approver", approver_id)
    assert actions.index("message.awaiting_approval") < actions.index("message.second_approved")
    assert actions.count("recording.played") == 2                   # heard twice, each audited
    # Approved: the one-level BIN's coordinators get their notice (one each); nobody else was rung.
    purposes = sorted((c.purpose, c.e164) for c in _calls(world, message_id))
    assert purposes == sorted([("approval", approver)] + [("notice", p) for _, p in world.coordinators])


async def test_the_approver_rejects_nothing_goes_out_and_nobody_is_noticed(tmp_path: Path, clock: Clock) -> None:
    world = second_approver_zone(_world(tmp_path, clock, coordinators=2, approvers=1))
    [(_, approver)] = world.approvers
    message_id, dialer, after, _, _ = await _round(world, tmp_path, clock, {approver: ["3"]})
    assert [d.decision for d in after.decisions] == [Decision.REJECT] and after.decisions[0].deliver_at is None
    message, _decision, actions = _state(world, message_id)
    assert message.status is MessageStatus.REJECTED and "message.second_rejected" in actions
    assert dialer.dialled == [approver]


async def test_without_approvers_an_officer_of_the_zone_approves_the_auto_forward(tmp_path: Path, clock: Clock) -> None:
    # Not one-level: the coordinators are called first; nobody decides; the zone forwards, a second officer first.
    world = second_approver_zone(_world(tmp_path, clock, coordinators=1, escalation=Escalation.AUTO_FORWARD),
                                 one_level=False)
    [(_, coordinator)] = world.coordinators
    message_id, dialer, after, _, _ = await _round(world, tmp_path, clock, {COLLEAGUE: ["1"]})
    assert dialer.dialled == [coordinator, COLLEAGUE]
    message, decision, _ = _state(world, message_id)
    assert message.status is MessageStatus.APPROVED and decision is not None and decision.via == "second_approver"
    assert [c.purpose for c in _calls(world, message_id)].count("notice") == 0   # not a one-level BIN


async def test_nobody_approves_the_author_is_told_and_it_waits(tmp_path: Path, clock: Clock) -> None:
    world = second_approver_zone(_world(tmp_path, clock, coordinators=2, approvers=1))
    [(_, approver)] = world.approvers
    message_id, dialer, after, alarms, rounds = await _round(world, tmp_path, clock, {OFFICER_PHONE: [None]})
    assert dialer.dialled == [approver, COLLEAGUE, OFFICER_PHONE]   # approvers, officers, then the author told
    assert after.decisions == [] and dialer.ends == ["police_told"]
    message, decision, actions = _state(world, message_id)
    assert message.status is MessageStatus.AWAITING_APPROVAL and decision is None
    assert actions.count("message.nobody_approved") == 1
    assert alarm_at(alarms, message_id) is not None
    # The next approval round: the author is not told again.
    await rounds.run_round(message_id)
    assert dialer.dialled[3:] == [approver, COLLEAGUE]
    assert _state(world, message_id)[2].count("message.nobody_approved") == 1


async def test_only_the_called_officer_may_decide_and_never_the_author_nor_a_coordinator(
        tmp_path: Path, clock: Clock) -> None:
    world = second_approver_zone(_world(tmp_path, clock, coordinators=1))
    message_id, _, _, _, _ = await _round(world, tmp_path, clock, {})   # nobody answers: it waits
    [(coordinator_id, coordinator)] = world.coordinators
    desk = world.reviews
    # A coordinator's review call, or an approval call to the author, decides nothing.
    review_call = await desk.new_review_call(message_id, Contact(coordinator_id, coordinator, Role.COORDINATOR), 9)
    assert await desk.second_decision(review_call, coordinator_id, approve=True) is None
    to_author = await desk.new_review_call(message_id, Contact(world.officer_id, OFFICER_PHONE, Role.POLICE_OFFICER),
                                           9, "approval")
    assert await desk.second_decision(to_author, world.officer_id, approve=True) is None
    # Nor does a coordinator's decision (the console's or a late review call's) while it waits.
    assert await desk.decide(message_id, Decision.FORWARD_NOW, person_id=coordinator_id, review_call_id=None) is None
    assert _state(world, message_id)[0].status is MessageStatus.AWAITING_APPROVAL


async def test_nobody_to_approve_the_author_is_told_once_and_nothing_is_sent(tmp_path: Path, clock: Clock) -> None:
    # The author is the zone's only officer and there is no approver: nobody may be the second officer.
    world = second_approver_zone(_world(tmp_path, clock, coordinators=1), colleague=False)
    message_id, dialer, after, alarms, rounds = await _round(world, tmp_path, clock, {OFFICER_PHONE: [None]})
    assert dialer.dialled == [OFFICER_PHONE] and after.decisions == []     # only the author, told
    assert alarm_at(alarms, message_id) is None                              # no round to try again
    await rounds.run_round(message_id)                                       # a restart: not told twice
    assert dialer.dialled == [OFFICER_PHONE]
    message, decision, actions = _state(world, message_id)
    assert message.status is MessageStatus.AWAITING_APPROVAL and decision is None
    assert actions.count("message.nobody_approved") == 1



class PressingCall(FakeCall):
    """A fake call whose other end presses a key while the system says ``prompt_id`` (barge-in)."""

    def __init__(self, script: list[object], work_dir: Path, presses: dict[str, str]) -> None:
        super().__init__(script, work_dir, caller_id="")
        self.presses = dict(presses)

    async def say(self, prompt_id: str, **values: object) -> str | None:
        await super().say(prompt_id, **values)
        return self.presses.pop(prompt_id, None)


async def _approval_call(tmp_path: Path, clock: Clock, presses: dict[str, str],
                         script: list[object]) -> tuple[World, int, ReviewEnd, PressingCall]:
    world = second_approver_zone(_world(tmp_path, clock, coordinators=1, approvers=1), colleague=False)
    message_id, _, _, _, _ = await _round(world, tmp_path, clock, {})   # nobody answers: it waits
    [(approver_id, approver)] = world.approvers
    call_id = await world.reviews.new_review_call(
        message_id, Contact(approver_id, approver, Role.POLICE_APPROVER), 9, "approval")
    call = PressingCall(script, tmp_path, presses)
    end = await coordinator_review(call, world.reviews, call_id, RULES, StepLog())
    return world, message_id, end, call


@pytest.mark.parametrize("pressed_in", ["approval_intro", "review_header"])
async def test_a_1_before_the_recording_plays_it_first_then_the_1_counts(
        tmp_path: Path, clock: Clock, pressed_in: str) -> None:
    # Before the fix a 1 in the intro (or the header) approved a message the officer never heard.
    world, message_id, end, call = await _approval_call(tmp_path, clock, {pressed_in: "1"}, ["1"])
    kinds = [kind for kind, _ in call.timeline]
    assert end is ReviewEnd.APPROVED and len(call.played) == 1
    assert kinds.index("play") < call.timeline.index(("say", "approval_menu"))  # heard, then asked
    assert call.said[-2:] == ["approval_menu", "review_forwarded_now"]
    message, _decision, actions = _state(world, message_id)
    assert message.status is MessageStatus.APPROVED and actions.count("recording.played") == 1


async def test_a_1_while_the_recording_plays_approves(tmp_path: Path, clock: Clock) -> None:
    _, _, end, call = await _approval_call(tmp_path, clock, {}, [WhilePlaying("1")])
    assert end is ReviewEnd.APPROVED and len(call.played) == 1 and "approval_menu" not in call.said


async def test_an_early_3_rejects_without_the_recording(tmp_path: Path, clock: Clock) -> None:
    # Rejecting sends nothing: it need not be heard first.
    world, message_id, end, call = await _approval_call(tmp_path, clock, {"approval_intro": "3"}, [])
    assert end is ReviewEnd.REJECT and call.played == []
    assert _state(world, message_id)[0].status is MessageStatus.REJECTED


async def test_nobody_answers_the_author_at_the_last_round_the_call_is_made_again(
        tmp_path: Path, clock: Clock) -> None:
    # Nobody may approve (no round to try again) and the author does not answer: before the fix the
    # audit row counted as told and nobody was ever called again.
    world = second_approver_zone(_world(tmp_path, clock, coordinators=1), colleague=False)
    message_id, dialer, _, alarms, rounds = await _round(world, tmp_path, clock, {})
    assert dialer.dialled == [OFFICER_PHONE]
    assert alarm_at(alarms, message_id) == clock.now + dt.timedelta(seconds=900)   # urgent: day and night
    clock.advance(minutes=15)
    dialer.keys = {OFFICER_PHONE: [None]}                                            # now they answer
    await rounds.run_round(message_id)
    assert dialer.dialled == [OFFICER_PHONE, OFFICER_PHONE] and dialer.ends == ["police_told"]
    assert alarm_at(alarms, message_id) is None
    await rounds.run_round(message_id)                                               # told: not again
    assert len(dialer.dialled) == 2 and _state(world, message_id)[2].count("message.nobody_approved") == 1


async def test_the_store_refuses_an_approval_on_a_call_that_did_not_play_the_recording(
        tmp_path: Path, clock: Clock) -> None:
    # Belt and braces below the flow: a key 1 that reaches the store unheard changes nothing.
    world = second_approver_zone(_world(tmp_path, clock, coordinators=1, approvers=1), colleague=False)
    message_id, _, _, _, _ = await _round(world, tmp_path, clock, {})
    [(approver_id, approver)] = world.approvers
    desk = world.reviews
    call_id = await desk.new_review_call(message_id, Contact(approver_id, approver, Role.POLICE_APPROVER), 9,
                                         "approval")
    assert await desk.second_decision(call_id, approver_id, approve=True) is None
    other_call = await desk.new_review_call(message_id, Contact(approver_id, approver, Role.POLICE_APPROVER), 9,
                                            "approval")
    await desk.recording_to_play(message_id, f"person:{approver_id}", review_call_id=other_call)
    assert await desk.second_decision(call_id, approver_id, approve=True) is None   # heard on another call
    assert _state(world, message_id)[0].status is MessageStatus.AWAITING_APPROVAL
    await desk.recording_to_play(message_id, f"person:{approver_id}", review_call_id=call_id)
    decided = await desk.second_decision(call_id, approver_id, approve=True)
    assert decided is not None and decided.decision is Decision.FORWARD_NOW
