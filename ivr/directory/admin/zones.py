"""The admin's tools over zones: list, show, edit their settings, a BIN's one-level mode (the rules:
``ivr.directory.admin``). A zone asks for a second approver only if it has two active police (one
speaks, the other approves). A zone's default channels per urgency and its contact ladder (issue 17)
are its own or, when cleared (``None``), the settings' (``copy_channels_urgent``/``_preventive``,
``ladder_sms``, ``ladder_after_s``); channels are stored as written by ``format_channels`` and always
include calls (voice always, unless a member opted out or chose text only)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ivr.directory.admin.checks import ZONE_ROLES, AdminError, check_name, get_bin, get_zone, require_admin
from ivr.directory.admin.persons import PersonRow, person_row
from ivr.domain.actor import Actor
from ivr.domain.channels import InvalidChannels, format_channels, parse_channels
from ivr.domain.vocabulary import Channel, Escalation, ReviewMode, Role
from storage import audit
from storage.models import Bin, Person, PoliceZone, RoleAssignment

#: Police a zone needs before a second approver may be asked for: one speaks, another approves.
SECOND_APPROVER_POLICE: Final = 2


class _Unchanged:
    """The default of ``edit_zone``'s fields: "leave it as it is" (``None`` clears a limit)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()


# -- what is shown ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BinRow:
    """A BIN of a zone."""

    number: int
    name: str
    one_level: bool
    members: int

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"number": self.number, "name": self.name, "one_level": self.one_level, "members": self.members}


@dataclass(frozen=True)
class ZoneRow:
    """A zone and its settings."""

    code: str
    name: str
    review_mode: str
    urgent_escalation: str
    max_channels: int | None
    max_cps: float | None
    second_approver: bool
    review_max_rounds: int | None
    bins: int
    #: Default channels per urgency ("voice+sms") and the contact ladder; ``None``: the setting.
    urgent_channels: str | None = None
    preventive_channels: str | None = None
    ladder_sms: bool | None = None
    ladder_after_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {"code": self.code, "name": self.name, "review_mode": self.review_mode,
                "urgent_escalation": self.urgent_escalation, "max_channels": self.max_channels,
                "max_cps": self.max_cps, "second_approver": self.second_approver,
                "review_max_rounds": self.review_max_rounds, "bins": self.bins,
                "urgent_channels": self.urgent_channels, "preventive_channels": self.preventive_channels,
                "ladder_sms": self.ladder_sms, "ladder_after_s": self.ladder_after_s}


@dataclass(frozen=True)
class ZoneDetails:
    """A zone, its BINs (with their one-level mode) and its police."""

    zone: ZoneRow
    bin_rows: list[BinRow] = field(default_factory=list)
    police: list[PersonRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {**self.zone.as_dict(), "bins": [b.as_dict() for b in self.bin_rows],
                "police": [p.as_dict() for p in self.police]}


def _zone_row(s: Session, zone: PoliceZone) -> ZoneRow:
    bins = s.scalar(select(func.count(Bin.id)).where(Bin.zone_id == zone.id)) or 0
    return ZoneRow(zone.code, zone.name, zone.review_mode.value, zone.urgent_escalation.value, zone.max_channels,
                   zone.max_cps, zone.second_approver, zone.review_max_rounds, bins, zone.urgent_channels,
                   zone.preventive_channels, zone.ladder_sms, zone.ladder_after_s)


def list_zones(s: Session) -> list[ZoneRow]:
    """Every zone, by code."""
    return [_zone_row(s, z) for z in s.scalars(select(PoliceZone).order_by(PoliceZone.code))]


def zone_details(s: Session, code: str) -> ZoneDetails:
    """A zone with its BINs (one-level mode, member count) and its police officers and approvers."""
    zone = get_zone(s, code)
    bins = []
    for b in s.scalars(select(Bin).where(Bin.zone_id == zone.id).order_by(Bin.number)):
        members = s.scalar(select(func.count(RoleAssignment.id)).join(Person, Person.id == RoleAssignment.person_id)
                           .where(RoleAssignment.role == Role.MEMBER, RoleAssignment.bin_id == b.id,
                                  Person.active.is_(True))) or 0
        bins.append(BinRow(b.number, b.name, b.one_level, members))
    police = [person_row(s, p) for p in s.scalars(
        select(Person).where(Person.id.in_(select(RoleAssignment.person_id).where(
            RoleAssignment.zone_id == zone.id, RoleAssignment.role.in_(ZONE_ROLES)))).order_by(Person.id))]
    return ZoneDetails(_zone_row(s, zone), bins, police)


# -- changes ---------------------------------------------------------------------------------------
def _positive_int(field_name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AdminError(f"{field_name}: a whole number of 1 or more (or none)")
    return value


def _positive_float(field_name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise AdminError(f"{field_name}: a number above 0 (or none)")
    return float(value)


def _channels(field_name: str, value: Any) -> str | None:
    """A zone's default channels as stored ("voice+sms"), from their written form; ``None`` clears them.
    They always include calls: a member is called unless they opted out or chose text only
    themselves (issue 17), so a zone cannot make its members text only."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AdminError(f"{field_name}: channels such as voice+sms (or none)")
    try:
        chosen = parse_channels(value)
    except InvalidChannels as exc:
        raise AdminError(f"{field_name}: {exc}") from None
    if Channel.VOICE not in chosen:
        raise AdminError(f"{field_name}: {format_channels(chosen)} leaves out calls; a zone's defaults always "
                         "include voice (voice, voice+sms, voice+email, voice+sms+email): members are called "
                         "unless they opted out, and text only is a member's own choice")
    return format_channels(chosen)


def _seconds(field_name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise AdminError(f"{field_name}: a number of seconds, 0 or more (or none)")
    return float(value)


def _active_police(s: Session, zone: PoliceZone) -> int:
    """How many active people are police officers or approvers of ``zone``."""
    return s.scalar(select(func.count(func.distinct(RoleAssignment.person_id)))
                    .join(Person, Person.id == RoleAssignment.person_id)
                    .where(RoleAssignment.zone_id == zone.id, RoleAssignment.role.in_(ZONE_ROLES),
                           Person.active.is_(True))) or 0


def edit_zone(s: Session, code: str, actor: Actor, *, name: Any = UNCHANGED, max_channels: Any = UNCHANGED,
              max_cps: Any = UNCHANGED, review_mode: Any = UNCHANGED, urgent_escalation: Any = UNCHANGED,
              second_approver: Any = UNCHANGED, review_max_rounds: Any = UNCHANGED,
              urgent_channels: Any = UNCHANGED, preventive_channels: Any = UNCHANGED, ladder_sms: Any = UNCHANGED,
              ladder_after_s: Any = UNCHANGED) -> list[str]:
    """Change a zone's settings; a field left ``UNCHANGED`` stays, ``None`` clears a limit (the
    global setting applies). Every value is checked before any is written. Returns what changed.

    ``urgent_channels``/``preventive_channels`` are written choices ("voice+sms", "call, sms", "text"),
    stored as ``format_channels`` writes them; ``ladder_sms`` is a bool, ``ladder_after_s`` seconds (>= 0).

    ``second_approver`` is refused in a zone with fewer than two active police officers or approvers:
    an urgent message waiting for a second approval there could never go."""
    require_admin(s, actor)
    zone = get_zone(s, code)
    wanted: dict[str, Any] = {}
    if name is not UNCHANGED:
        wanted["name"] = check_name(str(name or ""))
    if max_channels is not UNCHANGED:
        wanted["max_channels"] = _positive_int("max_channels", max_channels)
    if max_cps is not UNCHANGED:
        wanted["max_cps"] = _positive_float("max_cps", max_cps)
    if review_max_rounds is not UNCHANGED:
        wanted["review_max_rounds"] = _positive_int("review_max_rounds", review_max_rounds)
    if urgent_channels is not UNCHANGED:
        wanted["urgent_channels"] = _channels("urgent_channels", urgent_channels)
    if preventive_channels is not UNCHANGED:
        wanted["preventive_channels"] = _channels("preventive_channels", preventive_channels)
    if ladder_sms is not UNCHANGED:
        if ladder_sms is not None and not isinstance(ladder_sms, bool):
            raise AdminError("ladder_sms: yes or no (or none)")
        wanted["ladder_sms"] = ladder_sms
    if ladder_after_s is not UNCHANGED:
        wanted["ladder_after_s"] = _seconds("ladder_after_s", ladder_after_s)
    if review_mode is not UNCHANGED:
        try:
            wanted["review_mode"] = ReviewMode(review_mode)
        except ValueError:
            raise AdminError(f"review_mode: one of {', '.join(m.value for m in ReviewMode)}") from None
    if urgent_escalation is not UNCHANGED:
        try:
            wanted["urgent_escalation"] = Escalation(urgent_escalation)
        except ValueError:
            raise AdminError(f"urgent_escalation: one of {', '.join(e.value for e in Escalation)}") from None
    if second_approver is not UNCHANGED:
        if not isinstance(second_approver, bool):
            raise AdminError("second_approver: yes or no")
        wanted["second_approver"] = second_approver
        if second_approver and not zone.second_approver:
            police = _active_police(s, zone)
            if police < SECOND_APPROVER_POLICE:
                raise AdminError(f"second_approver: zone {zone.code} has {police} active police officer(s) or "
                                 f"approver(s); a second approval needs at least {SECOND_APPROVER_POLICE} (the "
                                 "one who speaks the message cannot approve it): add police to the zone first")
    changes: dict[str, Any] = {}
    for key, new in wanted.items():
        old = getattr(zone, key)
        if old != new:
            changes[key] = [_plain(old), _plain(new)]
            setattr(zone, key, new)
    if changes:
        audit.record(s, actor.label, "zone.edited", f"zone:{zone.code}", **changes)
    return list(changes)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, (ReviewMode, Escalation)) else value


def set_one_level(s: Session, bin_number: int, on: bool, actor: Actor) -> None:
    """Turn a BIN's one-level mode on or off (police messages straight to its members)."""
    require_admin(s, actor)
    found = get_bin(s, bin_number)
    if found.one_level == on:
        return
    found.one_level = on
    audit.record(s, actor.label, "bin.one_level", f"bin:{found.number}", on=on)
