"""The people of a campaign: who a message goes to, who received it, and each member as the plan sees them.

Rules:
- a message goes to its BIN's active members; a follow-up (a retraction) only to those who received
  the first message: by phone (``received``: confirmed, answered, or on their answering machine) or
  in writing (``received_in_writing``: an SMS or e-mail copy sent or delivered). One who received it
  in writing only is not called for the follow-up (``Member.called`` false): it reaches them the
  way the first did, in writing (``ivr.copies``);
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.delivery.policy import AttemptView, MemberView
from ivr.delivery.states import RECEIVED
from ivr.domain.channels import Contact, InvalidChannels, channels_for, is_called, parse_channels, zone_defaults
from ivr.domain.vocabulary import CampaignStatus, Channel, CopyStatus, MessageKind, PhoneRank, Role, Urgency
from storage.models import (CallAttempt, Campaign, Confirmation, Message, Person, PhoneNumber, RoleAssignment,
                            TextCopy)

#: Campaigns whose members may be dialled (a stopped or finished one is not).
DIALLING = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)
#: Copies by which a member received a message in writing (handed over, or delivered).
RECEIVED_COPIES = (CopyStatus.SENT, CopyStatus.DELIVERED)
#: How a confirmation by SMS reply is stored (``Confirmation.via``): it says the member read a copy.
SMS_VIA = "sms"


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
    #: calls, a number to call; for a follow-up, also: they heard the first message on the phone).
    called: bool = True


def recipients(s: Session, message: Message) -> list[int]:
    """Who a message goes to (person ids): the BIN's members; for a follow-up, those who received the
    first, by phone or in writing."""
    members = list(s.scalars(select(Person.id).join(RoleAssignment).where(
        RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == message.bin_id, Person.active.is_(True))
        .order_by(Person.id).distinct()))
    if not _is_follow_up(message):
        return members
    # A follow-up or cancellation goes only to those who received the first message.
    first = _first_campaign(s, message)
    if first is None:
        return []
    got = received(s, first) | set(received_in_writing(s, first))
    return [p for p in members if p in got]


def _is_follow_up(message: Message) -> bool:
    return message.kind is not MessageKind.ALERT and message.follow_up_of_id is not None


def _first_campaign(s: Session, message: Message) -> int | None:
    """The campaign of the message a follow-up follows (``None``: it had none)."""
    return s.scalar(select(Campaign.id).where(Campaign.message_id == message.follow_up_of_id)
                    .order_by(Campaign.id).limit(1))


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


def received_by_phone(s: Session, campaign_id: int) -> set[int]:
    """Members who heard a campaign's message on the phone: ``received`` less those whose only sign is
    a confirmation by SMS reply (they read a copy)."""
    confirmed = set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == campaign_id,
                                                                   Confirmation.via != SMS_VIA)))
    heard = set(s.scalars(select(CallAttempt.person_id).where(
        CallAttempt.campaign_id == campaign_id, CallAttempt.outcome.in_(RECEIVED))))
    return confirmed | heard


def received_in_writing(s: Session, campaign_id: int) -> dict[int, set[Channel]]:
    """Members who received a campaign's message in writing: person id -> the channels of their
    copies that were handed over (SENT) or delivered (``RECEIVED_COPIES``). A follow-up of the
    message goes to them too."""
    out: dict[int, set[Channel]] = {}
    for person_id, channel in s.execute(select(TextCopy.person_id, TextCopy.channel).where(
            TextCopy.campaign_id == campaign_id, TextCopy.status.in_(RECEIVED_COPIES))):
        out.setdefault(person_id, set()).add(Channel(channel))
    return out


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
    if _is_follow_up(message):
        # Who received the first message in writing only gets the follow-up in writing, not a call.
        first = _first_campaign(s, message)
        by_phone = received_by_phone(s, first) if first is not None else set()
        called = {pid: was and pid in by_phone for pid, was in called.items()}
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


# -- the channels that reach each member (the reports' view; ``ivr.copies`` decides the same way) --
def ranked_numbers(s: Session, person_ids: Iterable[int]) -> dict[int, tuple[tuple[str, str], ...]]:
    """Each person's numbers as (rank, e164), primary first (``MemberView.numbers``' shape)."""
    numbers: dict[int, list[tuple[str, str]]] = {}
    for person_id, rank, e164 in s.execute(select(PhoneNumber.person_id, PhoneNumber.rank, PhoneNumber.e164)
                                           .where(PhoneNumber.person_id.in_(list(person_ids)))):
        numbers.setdefault(person_id, []).append((rank.value, e164))
    return {pid: tuple(sorted(own, key=lambda n: n[0] != PhoneRank.PRIMARY.value)) for pid, own in numbers.items()}


def member_contacts(s: Session, person_ids: Iterable[int],
                    numbers: Mapping[int, tuple[tuple[str, str], ...]] | None = None) -> dict[int, Contact]:
    """What the channel decisions need of each person (``ivr.domain.channels.Contact``): their choice,
    numbers (primary first; ``ranked_numbers`` if not given), e-mail address and opt-outs. A stored
    choice that cannot be read counts as no choice (the zone's default), as the dialer counts it."""
    wanted = list(person_ids)
    if numbers is None:
        numbers = ranked_numbers(s, wanted)
    out = {}
    for row in s.execute(select(Person.id, Person.channels, Person.email, Person.calls_opt_out_at,
                                Person.sms_opt_out_at, Person.email_opt_out_at).where(Person.id.in_(wanted))):
        try:
            chosen = parse_channels(row.channels) if row.channels else None
        except InvalidChannels:
            chosen = None
        out[row.id] = Contact(row.id, chosen, tuple(e164 for _, e164 in numbers.get(row.id, ())),
                              row.email or None, row.calls_opt_out_at is not None, row.sms_opt_out_at is not None,
                              row.email_opt_out_at is not None)
    return out


def message_defaults(message: Message, settings_urgent: str, settings_preventive: str
                     ) -> dict[Urgency, frozenset[Channel]]:
    """The channels of a member of ``message``'s BIN who chose none, per urgency: the zone's own, else
    the settings' (``copy_channels_urgent``/``_preventive``). A zone's choice that cannot be read
    counts as none (its members are called then, as the dialer calls them)."""
    zone = message.bin.zone
    try:
        return zone_defaults(zone.urgent_channels, zone.preventive_channels, settings_urgent, settings_preventive)
    except InvalidChannels:
        return zone_defaults(None, None, settings_urgent, settings_preventive)


def reach_of(s: Session, message: Message, members: Sequence[Member], contacts: Mapping[int, Contact],
             defaults: dict[Urgency, frozenset[Channel]]) -> dict[int, frozenset[Channel]]:
    """The channels that reach each member for ``message`` (``channels_for``). On a follow-up, a member
    who received the first message in writing only is not called: the follow-up reaches them in
    writing, on the channels the first did (opt-outs still counted), and on their own written ones."""
    out = {m.view.person_id: channels_for(contacts[m.view.person_id], message.urgency, defaults) for m in members}
    if not _is_follow_up(message):
        return out
    first = _first_campaign(s, message)
    writing = received_in_writing(s, first) if first is not None else {}
    for member in members:
        pid = member.view.person_id
        if not member.called and pid in writing:
            as_first = channels_for(replace(contacts[pid], chosen=frozenset(writing[pid])), message.urgency, defaults)
            out[pid] = (out[pid] - {Channel.VOICE}) | as_first
    return out
