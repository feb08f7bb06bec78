"""The directory: zones, BINs and their member households, and what a signed-in viewer sees of them.

All the SQL of zones, BINs and members lives here (people and their numbers: ``ivr.directory.people``;
the member file's import: ``ivr.directory.member_import``); the command line and the web console call
these functions with a session of their own transaction.

A member is a household: one row, one primary number (and maybe a second), their own channels
("voice+sms"; none: their zone's defaults per urgency, ``zone_channel_defaults``) and e-mail address,
and the opt-outs they asked for (calls on the BIN call-back line, SMS by "STOP", e-mail by
List-Unsubscribe), which an editor may clear (audited).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ivr.directory.people import coordinators_of, number_holders, phone_of, set_phone
from ivr.domain.channels import format_channels, mask_email, parse_channels, zone_defaults
from ivr.domain.phone import is_mobile, mask
from storage import audit
from storage.models import Bin, BinStreet, DrillSchedule, Message, Person, PhoneNumber, PoliceZone, RoleAssignment
from ivr.domain.vocabulary import Channel, Escalation, Language, PhoneRank, ReviewMode, Role, Urgency

if TYPE_CHECKING:
    from ivr.config import Settings
    from ivr.directory.accounts import Viewer


# -- zones and BINs ----------------------------------------------------------------------------
def zone_by_code(s: Session, code: str) -> PoliceZone | None:
    """The police zone with this code."""
    return s.scalars(select(PoliceZone).where(PoliceZone.code == code)).first()


def add_zone(s: Session, code: str, name: str, review_mode: ReviewMode, escalation: Escalation,
             actor: str) -> PoliceZone:
    """A new police zone (a taken code raises ``IntegrityError``); audited."""
    zone = PoliceZone(code=code, name=name, review_mode=review_mode, urgent_escalation=escalation)
    s.add(zone)
    s.flush()
    audit.record(s, actor, "zone.add", f"zone:{code}", name=name)
    return zone


def zone_channel_defaults(zone: PoliceZone, settings: Settings) -> dict[Urgency, frozenset[Channel]]:
    """The channels of a member of ``zone`` who chose none, per urgency: the zone's, else the settings'."""
    return zone_defaults(zone.urgent_channels, zone.preventive_channels, settings.copy_channels_urgent,
                         settings.copy_channels_preventive)


def bin_by_number(s: Session, number: int) -> Bin | None:
    """The BIN with this number."""
    return s.scalars(select(Bin).where(Bin.number == number)).first()


def _clean_streets(streets: list[str]) -> list[str]:
    return [st.strip() for st in dict.fromkeys(streets) if st.strip()]


def _replace_streets(bin_: Bin, streets: list[str]) -> None:
    """The BIN's streets become ``streets``; the streets it keeps are the same rows."""
    keep = {st.street: st for st in bin_.streets}
    bin_.streets = [keep.get(street) or BinStreet(street=street) for street in streets]


def add_bin(s: Session, number: int, name: str, zone: PoliceZone, language: Language, streets: list[str],
            actor: str) -> Bin:
    """A new BIN of ``zone`` (a taken number raises ``IntegrityError``); audited."""
    bin_ = Bin(number=number, name=name, zone=zone, language=language)
    bin_.streets = [BinStreet(street=street) for street in _clean_streets(streets)]
    s.add(bin_)
    s.flush()
    audit.record(s, actor, "bin.add", f"bin:{number}", name=name, zone=zone.code)
    return bin_


def member_count(s: Session, bin_id: int) -> int:
    """How many member households the BIN has."""
    return s.scalar(select(func.count()).select_from(RoleAssignment).where(
        RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_id)) or 0


def all_bins(s: Session) -> list[Bin]:
    """Every BIN, by number."""
    return list(s.scalars(select(Bin).order_by(Bin.number)))


def edit_bin(s: Session, bin_: Bin, name: str | None, language: Language, streets: list[str] | None,
             actor: str) -> None:
    """New language, and name and streets unless ``None`` (streets kept are the same rows); audited.

    Who may change the name and streets (admins: they steer alerts) is the caller's check."""
    if name is not None:
        bin_.name = name
    bin_.language = language
    if streets is not None:
        _replace_streets(bin_, streets)
    audit.record(s, actor, "bin.edit", f"bin:{bin_.number}", name=bin_.name, language=language.value,
                 streets=len(bin_.streets))


class DirectoryRefused(ValueError):
    """A change the directory refuses (a BIN with police messages cannot be removed, say); the message says why."""


def bin_messages(s: Session, bin_id: int) -> int:
    """How many police messages (of any kind and state) the BIN has."""
    return s.scalar(select(func.count()).select_from(Message).where(Message.bin_id == bin_id)) or 0


def bin_as_dict(s: Session, bin_: Bin) -> dict[str, Any]:
    """A BIN's details, as ``bin list``/``bin show --json`` print them (coordinators' numbers masked)."""
    coordinators = [{"id": p.id, "name": p.name, "priority": next(
        (r.priority for r in p.roles if r.role is Role.COORDINATOR and r.bin_id == bin_.id), 0),
        "phone": mask(primary.e164) if (primary := phone_of(p, PhoneRank.PRIMARY)) else None, "active": p.active}
        for p in coordinators_of(s, bin_.id)]
    return {"id": bin_.id, "number": bin_.number, "name": bin_.name, "zone": bin_.zone.code,
            "zone_name": bin_.zone.name, "language": bin_.language.value, "one_level": bin_.one_level,
            "streets": [st.street for st in bin_.streets], "members": member_count(s, bin_.id),
            "coordinators": coordinators, "messages": bin_messages(s, bin_.id)}


def change_bin(s: Session, bin_: Bin, actor: str, *, name: str | None = None, language: Language | None = None,
               zone: PoliceZone | None = None, one_level: bool | None = None,
               streets: list[str] | None = None) -> list[str]:
    """Change what is given (``None``: unchanged); audited with the old and new values; the names of
    the fields that changed (none: nothing written)."""
    changes: dict[str, Any] = {}
    if name is not None and name != bin_.name:
        changes["name"] = [bin_.name, name]
        bin_.name = name
    if language is not None and language is not bin_.language:
        changes["language"] = [bin_.language.value, language.value]
        bin_.language = language
    if zone is not None and zone.id != bin_.zone_id:
        changes["zone"] = [bin_.zone.code, zone.code]
        bin_.zone = zone
    if one_level is not None and one_level != bin_.one_level:
        changes["one_level"] = [bin_.one_level, one_level]
        bin_.one_level = one_level
    if streets is not None:
        wanted = _clean_streets(streets)
        if wanted != [st.street for st in bin_.streets]:
            changes["streets"] = [len(bin_.streets), len(wanted)]
            _replace_streets(bin_, wanted)
    if changes:
        audit.record(s, actor, "bin.edit", f"bin:{bin_.number}", **changes)
    return list(changes)


def remove_bin(s: Session, bin_: Bin, actor: str) -> int:
    """Delete a BIN that never had a police message; its roles go with it (the people stay, with their
    other roles). Audited; the number of roles removed. A BIN with messages is refused: they are
    police records, kept as they were (``DirectoryRefused``)."""
    messages = bin_messages(s, bin_.id)
    if messages:
        raise DirectoryRefused(f"BIN {bin_.number} has {messages} police message(s): they are police records and "
                               "are kept, so the BIN stays. Take its people off instead (`binfoon members remove ID "
                               f"--bin {bin_.number}`, `binfoon person role ID --remove coordinator --bin "
                               f"{bin_.number}`)")
    roles = s.scalar(select(func.count()).select_from(RoleAssignment).where(RoleAssignment.bin_id == bin_.id)) or 0
    s.execute(delete(RoleAssignment).where(RoleAssignment.bin_id == bin_.id))
    s.execute(delete(DrillSchedule).where(DrillSchedule.bin_id == bin_.id))
    audit.record(s, actor, "bin.remove", f"bin:{bin_.number}", name=bin_.name, zone=bin_.zone.code, roles=roles)
    s.delete(bin_)
    s.flush()
    return roles


# -- members -----------------------------------------------------------------------------------
def members_of(s: Session, bin_id: int) -> list[Person]:
    """A BIN's member households by name."""
    return list(s.scalars(select(Person).join(RoleAssignment).where(
        RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == bin_id).order_by(Person.name, Person.id)))


def record_numbers_shown(s: Session, bin_number: int, count: int, actor: str) -> None:
    """Audit that a BIN's full member numbers were shown (before they are)."""
    audit.record(s, actor, "members.show_numbers", f"bin:{bin_number}", count=count)


def member_bin(s: Session, person_id: int) -> Bin | None:
    """The BIN a member belongs to (the first, should they be in several)."""
    return s.scalars(select(Bin).join(RoleAssignment, RoleAssignment.bin_id == Bin.id).where(
        RoleAssignment.person_id == person_id, RoleAssignment.role == Role.MEMBER)).first()


def members_by_phone(s: Session, e164: str, bin_id: int | None = None) -> list[tuple[Person, Bin]]:
    """Every (member household, BIN) with this number (first or second), in one BIN or all: more than
    one means the number alone does not say whose it is."""
    query = select(Person, Bin).join(PhoneNumber, PhoneNumber.person_id == Person.id).join(
        RoleAssignment, RoleAssignment.person_id == Person.id).join(Bin, Bin.id == RoleAssignment.bin_id).where(
        PhoneNumber.e164 == e164, RoleAssignment.role == Role.MEMBER)
    if bin_id is not None:
        query = query.where(Bin.id == bin_id)
    return [(person, bin_) for person, bin_ in s.execute(query.order_by(Person.id, Bin.number)).unique()]


def phone_taken(s: Session, bin_id: int, e164: str, person_id: int | None = None) -> bool:
    """Is ``e164`` a number (first or second) of another active household of this BIN (``person_id``: the
    one edited)? The directory's one rule, as the command line applies it (``people.refuse_taken_numbers``)."""
    return bool(number_holders(s, e164, Role.MEMBER, bin_id=bin_id, except_person=person_id))


@dataclass(frozen=True)
class Household:
    """A member household's details as typed in a form (numbers already normalized)."""

    name: str
    street: str | None
    language: Language
    phone: str
    second_phone: str | None
    #: The household's own channels as stored ("voice+sms"; ``None``: the zone's defaults).
    channels: str | None = None
    email: str | None = None


def unreachable_channels(channels: str | None, numbers: tuple[str | None, ...], email: str | None) -> list[Channel]:
    """The chosen ``channels`` ("voice+sms"; ``None``: the zone's defaults, always fine) that cannot
    reach a household with these numbers and address: SMS without a mobile number, e-mail without an
    address (an editor fixes one or the other before saving)."""
    chosen = parse_channels(channels) if channels else frozenset()
    out = []
    if Channel.SMS in chosen and not any(is_mobile(n) for n in numbers if n):
        out.append(Channel.SMS)
    if Channel.EMAIL in chosen and not email:
        out.append(Channel.EMAIL)
    return out


def new_member(s: Session, bin_: Bin, household: Household) -> Person:
    """A new person who is a member household of ``bin_``, added to the session (not flushed, not audited)."""
    person = Person(name=household.name, street=household.street, language=household.language,
                    channels=household.channels, email=household.email)
    person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
    set_phone(person, PhoneRank.PRIMARY, household.phone)
    set_phone(person, PhoneRank.SECONDARY, household.second_phone)
    s.add(person)
    return person


def add_member(s: Session, bin_: Bin, household: Household, actor: str) -> int:
    """Add one member household to ``bin_``; audited; its person id."""
    person = new_member(s, bin_, household)
    s.flush()
    contact = {"channels": household.channels} if household.channels else {}
    if household.email:
        contact["email"] = mask_email(household.email)
    audit.record(s, actor, "member.add", f"person:{person.id}", bin=bin_.number, phone=mask(household.phone),
                 **contact)
    return person.id


def save_member(s: Session, person_id: int, household: Household, actor: str) -> None:
    """Replace a member's name, street, language, numbers, channels and e-mail address; audited (a
    change of channels or address with the old and new value, the address masked)."""
    person = s.get_one(Person, person_id)
    changes: dict[str, Any] = {}
    if person.channels != household.channels:
        changes["channels"] = [person.channels, household.channels]
    if person.email != household.email:
        changes["email"] = [mask_email(e) if e else None for e in (person.email, household.email)]
    person.name = household.name
    person.street = household.street
    person.language = household.language
    person.channels = household.channels
    person.email = household.email
    set_phone(person, PhoneRank.PRIMARY, household.phone)
    set_phone(person, PhoneRank.SECONDARY, household.second_phone)
    audit.record(s, actor, "member.edit", f"person:{person_id}", phone=mask(household.phone), **changes)


#: The opt-outs a member can have, by the channel they stop, with the column that holds each.
OPT_OUTS: dict[Channel, str] = {Channel.VOICE: "calls_opt_out_at", Channel.SMS: "sms_opt_out_at",
                                Channel.EMAIL: "email_opt_out_at"}
#: How each opt-out is named where people read it (``--clear-opt-out calls``, ``members show --json``).
OPT_OUT_NAMES: dict[Channel, str] = {Channel.VOICE: "calls", Channel.SMS: "sms", Channel.EMAIL: "email"}


def opt_outs(person: Person) -> dict[Channel, dt.datetime]:
    """The member's opt-outs in force: channel -> since when."""
    return {channel: when for channel, column in OPT_OUTS.items() if (when := getattr(person, column)) is not None}


def clear_opt_out(s: Session, person: Person, channel: Channel, actor: str) -> bool:
    """An editor takes a member back in on ``channel`` (say, after an opt-out from a spoofed caller
    ID); audited with the opt-out's date. ``False`` (nothing written) when there was none."""
    column = OPT_OUTS[channel]
    since = getattr(person, column)
    if since is None:
        return False
    setattr(person, column, None)
    audit.record(s, actor, "member.opt_out_cleared", f"person:{person.id}", channel=channel.value,
                 since=since.isoformat())
    return True


def member_as_dict(s: Session, person: Person, show_numbers: bool = False) -> dict[str, Any]:
    """A member household's details and its BINs (numbers masked unless ``show_numbers``, which the caller audits)."""
    bins = list(s.scalars(select(Bin).join(RoleAssignment, RoleAssignment.bin_id == Bin.id).where(
        RoleAssignment.person_id == person.id, RoleAssignment.role == Role.MEMBER).order_by(Bin.number)))
    numbers = {p.rank.value: (p.e164 if show_numbers else mask(p.e164)) for p in person.phones}
    email = person.email if show_numbers or not person.email else mask_email(person.email)
    return {"id": person.id, "name": person.name, "street": person.street, "language": person.language.value,
            "phone": numbers.get(PhoneRank.PRIMARY.value), "second_phone": numbers.get(PhoneRank.SECONDARY.value),
            "bins": [b.number for b in bins], "active": person.active,
            "window": f"{person.call_window_start}-{person.call_window_end}" if person.call_window_start else None,
            "pause": f"{person.pause_from}..{person.pause_until}" if person.pause_from else None,
            "channels": person.channels, "email": email,
            "opted_out": {OPT_OUT_NAMES[c]: when.isoformat() for c, when in opt_outs(person).items()}}


def remove_member(s: Session, person: Person, bin_: Bin, actor: str) -> None:
    """Take a household off a BIN's member list (the person and their call history stay); audited."""
    roles = [r for r in person.roles if r.role is Role.MEMBER and r.bin_id == bin_.id]
    if not roles:
        raise DirectoryRefused(f"person {person.id} ({person.name}) is not a member of BIN {bin_.number}")
    for role in roles:
        person.roles.remove(role)
    audit.record(s, actor, "member.remove", f"person:{person.id}", bin=bin_.number)


_UNCHANGED: Any = object()


def set_member_preferences(s: Session, person: Person, actor: str, *,
                           window: tuple[str, str] | None = _UNCHANGED,
                           pause: tuple[dt.date, dt.date] | None = _UNCHANGED) -> None:
    """Set (or clear with ``None``) a member's own call window and holiday pause; left out: unchanged. Audited."""
    shown_window = shown_pause = None
    if window is not _UNCHANGED:
        person.call_window_start, person.call_window_end = window or (None, None)
        shown_window = "-".join(window) if window else None
    if pause is not _UNCHANGED:
        person.pause_from, person.pause_until = pause or (None, None)
        shown_pause = f"{pause[0]}..{pause[1]}" if pause else None
    audit.record(s, actor, "member.preferences", f"person:{person.id}", window=shown_window, pause=shown_pause)


def record_test_call(s: Session, person_id: int, call_id: str, actor: str) -> tuple[str, str]:
    """Write (audit) a test call to a member before it is placed; returns its number and language."""
    person = s.get_one(Person, person_id)
    phone = phone_of(person, PhoneRank.PRIMARY)
    if phone is None:
        raise LookupError(f"person {person_id} has no phone number")
    audit.record(s, actor, "member.test_call", f"person:{person_id}", call=call_id)
    return phone.e164, person.language.value


# -- what a signed-in viewer sees (the web console) --------------------------------------------
def bins_in_scope(s: Session, viewer: Viewer) -> list[Bin]:
    """The BINs this viewer sees, by number."""
    return [b for b in all_bins(s) if viewer.sees_bin(b.id, b.zone_id)]


def bin_in_scope(s: Session, viewer: Viewer, number: int) -> Bin | None:
    """The BIN with this number, if the viewer sees it (else ``None``, as if it did not exist)."""
    bin_ = bin_by_number(s, number)
    return bin_ if bin_ is not None and viewer.sees_bin(bin_.id, bin_.zone_id) else None


def bin_choices(s: Session, viewer: Viewer) -> list[tuple[int, str, list[str]]]:
    """(number, name, streets) of every BIN the viewer sees: what the send form offers."""
    return [(b.number, b.name, [st.street for st in b.streets]) for b in bins_in_scope(s, viewer)]


def bin_overview(s: Session, viewer: Viewer) -> list[dict[str, Any]]:
    """The BINs the viewer sees, with zone, streets, member count and whether they keep its members."""
    return [{"number": b.number, "name": b.name, "zone": b.zone.name, "language": b.language.value,
             "streets": [st.street for st in b.streets], "members": member_count(s, b.id),
             "editable": viewer.may_edit_members(b.id)} for b in bins_in_scope(s, viewer)]


def bin_with_members(s: Session, viewer: Viewer, bin_: Bin) -> dict[str, Any]:
    """One BIN's details and its members (numbers masked), as its page shows them."""
    rows = [{"id": p.id, "name": p.name, "street": p.street or "", "language": p.language.value,
             "numbers": [mask(ph.e164) for ph in sorted(p.phones, key=lambda ph: ph.rank.value)]}
            for p in members_of(s, bin_.id)]
    return {"bin": {"number": bin_.number, "name": bin_.name, "zone": bin_.zone.name,
                    "language": bin_.language.value, "streets": [st.street for st in bin_.streets]},
            "members": rows, "editable": viewer.may_edit_members(bin_.id)}


def resolve_bins(s: Session, viewer: Viewer, raw: str
                 ) -> tuple[list[Bin], list[tuple[str, str]], dict[int, list[str]]]:
    """BINs named by number or by street (comma or line separated): (found, [(error text id, token)],
    {BIN id: its streets that matched}). A BIN found by a street is in the last: the sender must see
    and confirm it, since a street matches every BIN with a street starting with the typed word."""
    found: dict[int, Bin] = {}
    errors: list[tuple[str, str]] = []
    by_street: dict[int, list[str]] = {}
    tokens = [t.strip() for part in raw.replace("\n", ",").split(",") for t in [part] if t.strip()]
    for token in tokens:
        pattern = ""
        if token.isdigit():
            matches = list(s.scalars(select(Bin).where(Bin.number == int(token))))
        else:
            # A street matches a BIN's street case-insensitively, whole or as its beginning.
            pattern = token.lower().replace("%", "").replace("_", "") + "%"
            matches = list(s.scalars(select(Bin).join(BinStreet).where(func.lower(BinStreet.street).like(pattern))
                                     .distinct()))
        if not matches:
            errors.append(("send_error_unknown_bin", token))
            continue
        for bin_ in matches:
            if not viewer.sees_bin(bin_.id, bin_.zone_id):
                errors.append(("send_error_other_zone", str(bin_.number)))
            else:
                found[bin_.id] = bin_
                if pattern:
                    streets = by_street.setdefault(bin_.id, [])
                    streets += [st.street for st in bin_.streets
                                if st.street.lower().startswith(pattern[:-1]) and st.street not in streets]
    return sorted(found.values(), key=lambda b: b.number), errors, by_street


def member_in_scope(s: Session, viewer: Viewer, person_id: int) -> tuple[Person, Bin] | None:
    """A member and their BIN, if the viewer sees that BIN (else ``None``, as if they did not exist)."""
    person = s.get(Person, person_id)
    bin_ = member_bin(s, person_id) if person is not None else None
    if person is None or bin_ is None or not viewer.sees_bin(bin_.id, bin_.zone_id):
        return None
    return person, bin_


def open_member(s: Session, person: Person, bin_: Bin, actor: str, settings: Settings) -> dict[str, Any]:
    """A member's details with full numbers and address, for an editor, with ``member_contact``; the
    opening is audited (it shows numbers)."""
    audit.record(s, actor, "member.opened", f"person:{person.id}")
    second = phone_of(person, PhoneRank.SECONDARY)
    primary = phone_of(person, PhoneRank.PRIMARY)
    return {"member": {"id": person.id, "name": person.name, "street": person.street or "",
                       "language": person.language.value, "phone": primary.e164 if primary else "",
                       "second_phone": second.e164 if second else "",
                       "channels": person.channels or "", "email": person.email or ""},
            "bin": {"number": bin_.number, "name": bin_.name}, **member_contact(person, bin_, settings)}


def member_contact(person: Person, bin_: Bin, settings: Settings) -> dict[str, Any]:
    """What a member's page shows beside the form: their opt-outs (channel -> since) and the channels
    of a member who chose none (their zone's defaults, per urgency)."""
    defaults = zone_channel_defaults(bin_.zone, settings)
    return {"opt_outs": {c.value: when for c, when in opt_outs(person).items()},
            "default_channels": {u.value: format_channels(c) for u, c in defaults.items()}}
