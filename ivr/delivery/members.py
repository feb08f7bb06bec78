"""The people of a campaign: who a message goes to, who received it, and each member as the plan sees them.

Rules:
- a message goes to its BIN's active members; a follow-up (a retraction) only to those who received
  the first message (``received``: confirmed, answered, or on their answering machine);
- members who share a phone number are called once: the same primary number makes one member stand
  in for the other (``Member.covered_by``), any other shared number (a secondary) has one history
  for all who list it (``MemberView.shared``);
- a re-notify is a new round (``Campaign.round``): a member's attempts are the current round's (and
  any call still up from an earlier one), their numbers go on from the earlier rounds';
- a member the message does not reach by phone (``ivr.domain.channels.is_called``: text only, opted
  out of calls, no number) is marked so (``Member.called``): the dialer never dials them nor waits
  for them (their written copies are ``ivr.copies``'), and nobody is covered by them.
Functions run in the caller's transaction (``Session``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.delivery.policy import AttemptView, MemberView
from ivr.delivery.states import RECEIVED
from ivr.domain.channels import Contact, InvalidChannels, is_called, parse_channels, zone_defaults
from ivr.domain.vocabulary import CampaignStatus, MessageKind, PhoneRank, Role
from storage.models import CallAttempt, Campaign, Confirmation, Message, Person, PhoneNumber, RoleAssignment

#: Campaigns whose members may be dialled (a stopped or finished one is not).
DIALLING = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)


@dataclass(frozen=True)
class Member:
    """A member of a campaign with what the plan needs beyond the policy's view."""

    view: MemberView
    name: str
    language: str
    window: tuple[str, str] | None
    pause: tuple[dt.date, dt.date] | None
    #: Another member of this campaign with the same phone number, who is called instead.
    covered_by: int | None = None
    #: Whether the dialer calls this member at all (``is_called``: not text only, not opted out of
    #: calls, a number to call).
    called: bool = True


def recipients(s: Session, message: Message) -> list[int]:
    """Who a message goes to (person ids): the BIN's members; for a follow-up, those who received the first."""
    members = list(s.scalars(select(Person.id).join(RoleAssignment).where(
        RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == message.bin_id, Person.active.is_(True))
        .order_by(Person.id).distinct()))
    if message.kind is MessageKind.ALERT or message.follow_up_of_id is None:
        return members
    # A follow-up or cancellation goes only to those who received the first message.
    first = s.scalars(select(Campaign).where(Campaign.message_id == message.follow_up_of_id)).first()
    if first is None:
        return []
    heard = received(s, first.id)
    return [p for p in members if p in heard]


def first_call_still_up(s: Session, message: Message) -> bool:
    """Whether ``message`` is a follow-up and a call of its first message's campaign has no outcome yet
    (its recipients, ``recipients``, are not all known)."""
    if message.kind is MessageKind.ALERT or message.follow_up_of_id is None:
        return False
    first = s.scalar(select(Campaign.id).where(Campaign.message_id == message.follow_up_of_id))
    return first is not None and s.scalar(select(CallAttempt.id).where(
        CallAttempt.campaign_id == first, CallAttempt.outcome.is_(None)).limit(1)) is not None


def received(s: Session, campaign_id: int) -> set[int]:
    """Members who heard a campaign's message (confirmed, answered, or on their answering machine)."""
    confirmed = set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == campaign_id)))
    heard = set(s.scalars(select(CallAttempt.person_id).where(
        CallAttempt.campaign_id == campaign_id, CallAttempt.outcome.in_(RECEIVED))))
    return confirmed | heard


def campaign_members(s: Session, campaign: Campaign, message: Message) -> list[Member]:
    """The members of a campaign with their numbers, attempts and confirmations, and whether the
    dialer calls them (``Member.called``).

    Plain column queries, a handful per campaign whatever its size: the dialer plans on every pass.
    """
    wanted = recipients(s, message)
    people = {row.id: row for row in s.execute(select(
        Person.id, Person.name, Person.language, Person.call_window_start, Person.call_window_end,
        Person.pause_from, Person.pause_until, Person.channels, Person.calls_opt_out_at).where(Person.id.in_(wanted)))}
    phones: dict[int, list[tuple[str, str]]] = {}
    for person_id, rank, e164 in s.execute(select(PhoneNumber.person_id, PhoneNumber.rank, PhoneNumber.e164)
                                           .where(PhoneNumber.person_id.in_(wanted))):
        phones.setdefault(person_id, []).append((rank.value, e164))
    called = {pid: _called(people[pid], phones.get(pid, []), message) for pid in wanted}
    attempts: dict[int, list[AttemptView]] = {}
    #: Every attempt on each number, whoever it was for: a line shared by members has one history.
    on_number: dict[str, list[tuple[int, AttemptView]]] = {}
    #: The highest attempt number of earlier rounds (a re-notify's numbers go on from there).
    earlier: dict[int, int] = {}
    current = campaign.round or 1
    for person_id, no, rank, outcome, ended, e164, round_ in s.execute(select(
            CallAttempt.person_id, CallAttempt.attempt_no, CallAttempt.rank, CallAttempt.outcome,
            CallAttempt.ended_at, CallAttempt.e164, CallAttempt.round).where(CallAttempt.campaign_id == campaign.id)):
        if (round_ or 1) < current:
            earlier[person_id] = max(earlier.get(person_id, 0), no)
            if outcome is not None:
                continue  # an earlier round's call that is over does not count in this round
        view = AttemptView(no, rank.value, outcome, ended)
        attempts.setdefault(person_id, []).append(view)
        on_number.setdefault(e164, []).append((person_id, view))
    confirmed = set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == campaign.id)))
    first_with_number: dict[str, int] = {}
    out = []
    for person_id in wanted:
        person = people[person_id]
        numbers = tuple(sorted(phones.get(person_id, []), key=lambda p: 0 if p[0] == PhoneRank.PRIMARY.value else 1))
        covered_by = None
        if numbers and called[person_id]:  # only a member who is called stands in for another
            covered_by = first_with_number.setdefault(numbers[0][1], person_id)
            covered_by = None if covered_by == person_id else covered_by
        window = (person.call_window_start, person.call_window_end) \
            if person.call_window_start and person.call_window_end else None
        pause = (person.pause_from, person.pause_until) if person.pause_from and person.pause_until else None
        shared = tuple((e164, a) for _, e164 in numbers for other, a in on_number.get(e164, ()) if other != person_id)
        view = MemberView(person_id, numbers, tuple(attempts.get(person_id, ())), person_id in confirmed, shared,
                          earlier.get(person_id, 0))
        out.append(Member(view, person.name, person.language.value, window, pause, covered_by, called[person_id]))
    return out


def _called(person: Any, numbers: list[tuple[str, str]], message: Message) -> bool:
    """Whether the dialer calls this member for ``message`` (``ivr.domain.channels.is_called``): their
    own channels, else their zone's default for the urgency. The settings' defaults always include
    voice (``ivr.config`` refuses others), so only the zone's own can leave it out; a stored choice
    that cannot be read counts as none, a zone's as voice (called, as before there were choices)."""
    zone = message.bin.zone
    try:
        defaults = zone_defaults(zone.urgent_channels, zone.preventive_channels, "voice", "voice")
    except InvalidChannels:
        defaults = zone_defaults(None, None, "voice", "voice")
    try:
        chosen = parse_channels(person.channels) if person.channels else None
    except InvalidChannels:
        chosen = None
    contact = Contact(person.id, chosen, tuple(e164 for _, e164 in numbers), None,
                      calls_opted_out=person.calls_opt_out_at is not None)
    return is_called(contact, message.urgency, defaults)
