"""The admin's tools over the directory (issue 16 item 6): only admins change anything, every change
is audited with its actor, bad input writes nothing, the last admin stays, web accounts follow."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from ivr.directory import admin
from ivr.directory.accounts import create_account, load_viewer
from ivr.directory.pin_gate import PinRules, check_pin
from ivr.domain.actor import Actor
from ivr.domain.pin import PinPolicy
from ivr.domain.vocabulary import Escalation, PhoneRank, ReviewMode, Role, WebRole
from storage.db import session_scope
from storage.models import AuditEntry, Bin, Person, PhoneNumber, PoliceZone, RoleAssignment, WebAccount
from storage.pins import verify_pin
from tests.conftest import Clock, PersonFactory
from tests.web.conftest import dump
from tests.world import OFFICER_PHONE, World

ROOT = Actor.operator("cli:root")
PEPPER = bytes(range(32))


def _admin(world: World, name: str = "Beheerder", phone: str = "+32470000900") -> int:
    with session_scope(world.engine) as s:
        person = Person(name=name)
        person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=phone))
        person.roles.append(RoleAssignment(role=Role.ADMIN))
        s.add(person)
        s.flush()
        return person.id


def _as(person_id: int, is_admin: bool) -> Actor:
    return Actor(f"web:person:{person_id}", person_id, is_admin)


def _audit(world: World, action: str) -> list[AuditEntry]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def _tx(world: World, work: Any) -> Any:
    with session_scope(world.engine) as s:
        return work(s)


@pytest.mark.parametrize("change", [
    lambda s, who, p: admin.set_active(s, p, False, who),
    lambda s, who, p: admin.edit_person(s, p, who, name="X"),
    lambda s, who, p: admin.add_role(s, p, Role.MEMBER, who, bin_number=12),
    lambda s, who, p: admin.remove_role(s, p, Role.COORDINATOR, who),
    lambda s, who, p: admin.edit_zone(s, "5415", who, max_channels=3),
    lambda s, who, p: admin.set_one_level(s, 12, True, who),
    lambda s, who, p: admin.unlock_pin(s, p, who, Clock()()),
    lambda s, who, p: admin.reset_pin(s, p, who, PEPPER, Clock()()),
])
def test_only_admins_change_anything(world: World, change: Any) -> None:
    coordinator = world.coordinators[0][0]
    before = dump(world.engine)
    with pytest.raises(admin.AdminError, match="not an admin"):
        _tx(world, lambda s: change(s, _as(coordinator, False), coordinator))
    assert dump(world.engine) == before


def test_people_are_listed_by_role_bin_zone_and_state(world: World, person: PersonFactory) -> None:
    member = person(Role.MEMBER, phone="+3293000123")
    gone = person(Role.MEMBER, active=False)
    person(Role.MEMBER, bin_number=99)

    def ids(**filters: Any) -> list[int]:
        return [r.id for r in _tx(world, lambda s: admin.list_people(s, **filters))]

    assert ids(role=Role.MEMBER, bin_number=12, active=True) == [member.id]
    assert ids(role=Role.MEMBER, bin_number=12, active=False) == [gone.id]
    assert ids(role=Role.MEMBER, bin_number=12) == [member.id, gone.id]
    assert ids(zone_code="5415", role=Role.POLICE_OFFICER) == [world.officer_id]
    assert set(ids(zone_code="5415")) == {world.officer_id, member.id, gone.id, *[c for c, _ in world.coordinators]}
    rows = _tx(world, lambda s: admin.list_people(s, role=Role.MEMBER, bin_number=12, active=True))
    assert all("3293000123" not in number for number in rows[0].phones)  # masked
    with pytest.raises(admin.AdminError, match="no BIN number 77"):
        ids(bin_number=77)


def test_deactivating_ends_calls_web_sessions_and_is_audited(world: World) -> None:
    admin_id = _admin(world)
    officer = world.officer_id
    with session_scope(world.engine) as s:
        account = create_account(s, officer, "peeters", "correct horse battery", "test")
        account_id, epoch = account.id, account.session_epoch
    _tx(world, lambda s: admin.set_active(s, officer, False, _as(admin_id, True)))
    with session_scope(world.engine) as s:
        assert s.get_one(Person, officer).active is False
        assert load_viewer(s, account_id) is None  # signed out, and cannot sign in
        assert s.get_one(WebAccount, account_id).session_epoch == epoch + 1
    [row] = _audit(world, "person.deactivated")
    assert (row.actor, row.subject) == (f"web:person:{admin_id}", f"person:{officer}")
    with pytest.raises(admin.AdminError, match="already deactivated"):
        _tx(world, lambda s: admin.set_active(s, officer, False, ROOT))
    _tx(world, lambda s: admin.set_active(s, officer, True, ROOT))
    assert [r.actor for r in _audit(world, "person.activated")] == ["cli:root"]


def test_the_last_admin_stays_and_nobody_deactivates_themselves(world: World) -> None:
    only = _admin(world)
    with pytest.raises(admin.AdminError, match="yourself"):
        _tx(world, lambda s: admin.set_active(s, only, False, _as(only, True)))
    with pytest.raises(admin.AdminError, match="last active admin"):
        _tx(world, lambda s: admin.set_active(s, only, False, ROOT))
    with pytest.raises(admin.AdminError, match="last active admin"):
        _tx(world, lambda s: admin.remove_role(s, only, Role.ADMIN, ROOT))
    second = _admin(world, "Tweede", "+32470000901")
    _tx(world, lambda s: admin.remove_role(s, only, Role.ADMIN, _as(second, True)))
    assert _tx(world, lambda s: [r.role for r in admin.person_details(s, only).roles]) == []


def test_roles_are_checked_scoped_and_coordinators_go_last(world: World, person: PersonFactory) -> None:
    someone = person(Role.MEMBER)
    add = lambda **kw: _tx(world, lambda s: admin.add_role(s, someone.id, actor=ROOT, **kw))
    for kwargs, why in [
        ({"role": Role.COORDINATOR}, "belongs to a BIN"),
        ({"role": Role.COORDINATOR, "bin_number": 12, "zone_code": "5415"}, "belongs to a BIN"),
        ({"role": Role.POLICE_OFFICER, "bin_number": 12}, "belongs to a zone"),
        ({"role": Role.ADMIN, "zone_code": "5415"}, "not scoped"),
        ({"role": Role.MEMBER, "bin_number": 12}, "already has that role"),
        ({"role": Role.COORDINATOR, "bin_number": 404}, "no BIN number 404"),
        ({"role": Role.POLICE_OFFICER, "zone_code": "0000"}, "no police zone"),
        ({"role": Role.MEMBER, "bin_number": 99, "priority": 1}, "coordinators only"),
    ]:
        with pytest.raises(admin.AdminError, match=why):
            add(**kwargs)
    add(role=Role.COORDINATOR, bin_number=12)
    details = _tx(world, lambda s: admin.person_details(s, someone.id))
    last = max(i for i, _ in enumerate(world.coordinators, start=1))
    assert [str(r) for r in details.roles] == [f"coordinator BIN 12 #{last + 1}", "member BIN 12"]
    [row] = _audit(world, "person.role_added")
    assert row.details == {"role": "coordinator", "bin": 12, "zone": None, "priority": last + 1}
    _tx(world, lambda s: admin.remove_role(s, someone.id, Role.COORDINATOR, ROOT, bin_number=12))
    assert [r.details["role"] for r in _audit(world, "person.role_removed")] == ["coordinator"]


def test_one_number_is_one_identity_per_role_and_scope(world: World, person: PersonFactory) -> None:
    person(Role.COORDINATOR, phone="+3293000555", bin_number=99)
    twin = person(Role.MEMBER, phone="+3293000555")
    with pytest.raises(admin.AdminError, match="one number is one person per role"):
        _tx(world, lambda s: admin.add_role(s, twin.id, Role.COORDINATOR, ROOT, bin_number=99))


def test_a_role_change_moves_the_web_account_with_it(world: World) -> None:
    coordinator = world.coordinators[0][0]
    _admin(world)
    with session_scope(world.engine) as s:
        account_id = create_account(s, coordinator, "coord", "correct horse battery", "test").id
    _tx(world, lambda s: admin.add_role(s, coordinator, Role.ADMIN, ROOT))
    with session_scope(world.engine) as s:
        assert s.get_one(WebAccount, account_id).role is WebRole.ADMIN
    _tx(world, lambda s: admin.remove_role(s, coordinator, Role.ADMIN, ROOT))
    _tx(world, lambda s: admin.remove_role(s, coordinator, Role.COORDINATOR, ROOT))
    with session_scope(world.engine) as s:
        account = s.get_one(WebAccount, account_id)
        assert account.role is WebRole.COORDINATOR and account.active is False  # no console role left
    assert [r.details for r in _audit(world, "web.account_role")] == [{"old": "coordinator", "new": "admin"},
                                                                      {"old": "admin", "new": "coordinator"}]


def test_editing_a_person_is_checked_and_audited(world: World) -> None:
    officer = world.officer_id
    assert _tx(world, lambda s: admin.edit_person(s, officer, ROOT, name="  Inspecteur   Janssens ",
                                                  language="fr")) == ["name", "language"]
    assert _tx(world, lambda s: admin.edit_person(s, officer, ROOT, name="Inspecteur Janssens")) == []
    [row] = _audit(world, "person.edited")
    assert row.details == {"name": ["Inspecteur Peeters", "Inspecteur Janssens"], "language": ["nl", "fr"]}
    before = dump(world.engine)
    for kwargs, why in [({"name": "  "}, "empty"), ({"name": "x" * 201}, "at most"), ({"language": "en"}, "nl, fr")]:
        with pytest.raises(admin.AdminError, match=why):
            _tx(world, lambda s, kw=kwargs: admin.edit_person(s, officer, ROOT, **kw))
    assert dump(world.engine) == before
    with pytest.raises(admin.AdminError, match="no person 9999"):
        _tx(world, lambda s: admin.person_details(s, 9999))


def test_zones_are_edited_whole_or_not_at_all(world: World, person: PersonFactory) -> None:
    person(Role.POLICE_APPROVER)  # a second approval needs a second police officer in the zone
    changed = _tx(world, lambda s: admin.edit_zone(s, "5415", ROOT, max_channels=4, max_cps=0.5,
                                                   review_mode="parallel", urgent_escalation="wait",
                                                   second_approver=True, review_max_rounds=3))
    assert changed == ["max_channels", "max_cps", "review_max_rounds", "review_mode", "urgent_escalation",
                       "second_approver"]
    with session_scope(world.engine) as s:
        zone = s.scalars(select(PoliceZone).where(PoliceZone.code == "5415")).one()
        assert (zone.max_channels, zone.max_cps, zone.review_mode, zone.urgent_escalation, zone.second_approver,
                zone.review_max_rounds) == (4, 0.5, ReviewMode.PARALLEL, Escalation.WAIT, True, 3)
    [row] = _audit(world, "zone.edited")
    assert row.details["max_channels"] == [None, 4] and row.details["review_mode"] == ["sequential", "parallel"]
    before = dump(world.engine)
    for kwargs in ({"max_channels": 0}, {"max_channels": -1}, {"max_channels": True}, {"max_cps": 0.0},
                   {"max_cps": float("nan")}, {"review_max_rounds": 0}, {"review_mode": "random"},
                   {"urgent_escalation": "never"}, {"second_approver": "yes"}, {"name": ""}):
        good = {"review_max_rounds": 5} if "review_max_rounds" not in kwargs else {"max_channels": 2}
        with pytest.raises(admin.AdminError):
            # A good value with a bad one: nothing of either is written.
            _tx(world, lambda s, kw={**good, **kwargs}: admin.edit_zone(s, "5415", ROOT, **kw))
    assert dump(world.engine) == before
    assert _tx(world, lambda s: admin.edit_zone(s, "5415", ROOT, max_channels=None, max_cps=None)) == [
        "max_channels", "max_cps"]  # None clears: the global limit applies
    with pytest.raises(admin.AdminError, match="no police zone"):
        _tx(world, lambda s: admin.edit_zone(s, "nope", ROOT, max_channels=1))


def test_a_zone_s_default_channels_and_ladder_are_set_checked_and_cleared(world: World) -> None:
    """Issue 17: written choices are stored the one way; bad ones write nothing; ``None`` is the setting's."""
    changed = _tx(world, lambda s: admin.edit_zone(s, "5415", ROOT, urgent_channels="sms, call",
                                                   preventive_channels="call, e-mail, sms", ladder_sms=False,
                                                   ladder_after_s=600))
    assert changed == ["urgent_channels", "preventive_channels", "ladder_sms", "ladder_after_s"]
    row = next(z for z in _tx(world, admin.list_zones) if z.code == "5415")
    assert (row.urgent_channels, row.preventive_channels, row.ladder_sms, row.ladder_after_s) == (
        "voice+sms", "voice+sms+email", False, 600.0)
    assert row.as_dict()["urgent_channels"] == "voice+sms"
    [audited] = _audit(world, "zone.edited")
    assert audited.details == {"urgent_channels": [None, "voice+sms"],
                               "preventive_channels": [None, "voice+sms+email"],
                               "ladder_sms": [None, False], "ladder_after_s": [None, 600.0]}
    before = dump(world.engine)
    # Voice always, unless a member opted out or chose text only: a zone's defaults cannot leave it out.
    with pytest.raises(admin.AdminError, match="preventive_channels: sms\\+email leaves out calls"):
        _tx(world, lambda s: admin.edit_zone(s, "5415", ROOT, preventive_channels="text"))
    for kwargs in ({"urgent_channels": "voice+fax"}, {"preventive_channels": ""}, {"urgent_channels": 3},
                   {"urgent_channels": "sms"}, {"preventive_channels": "email"},
                   {"ladder_sms": "yes"}, {"ladder_after_s": -1}, {"ladder_after_s": float("inf")},
                   {"ladder_after_s": True}):
        with pytest.raises(admin.AdminError):
            _tx(world, lambda s, kw=kwargs: admin.edit_zone(s, "5415", ROOT, max_channels=2, **kw))
    assert dump(world.engine) == before
    assert _tx(world, lambda s: admin.edit_zone(s, "5415", ROOT, urgent_channels="voice+sms", ladder_after_s=0)) == [
        "ladder_after_s"]  # the same choice written otherwise is no change; 0 s: at once
    assert _tx(world, lambda s: admin.edit_zone(s, "5415", ROOT, urgent_channels=None, preventive_channels=None,
                                                ladder_sms=None, ladder_after_s=None)) == [
        "urgent_channels", "preventive_channels", "ladder_sms", "ladder_after_s"]
    with session_scope(world.engine) as s:
        zone = s.scalars(select(PoliceZone).where(PoliceZone.code == "5415")).one()
        assert (zone.urgent_channels, zone.preventive_channels, zone.ladder_sms, zone.ladder_after_s) == (
            None, None, None, None)


def test_zone_details_show_the_bins_and_their_one_level_mode(world: World, person: PersonFactory) -> None:
    person(Role.MEMBER)
    person(Role.MEMBER, active=False)
    _tx(world, lambda s: admin.set_one_level(s, 12, True, ROOT))
    _tx(world, lambda s: admin.set_one_level(s, 12, True, ROOT))  # no change: no second row
    details = _tx(world, lambda s: admin.zone_details(s, "5415"))
    assert [(b.number, b.one_level, b.members) for b in details.bin_rows] == [(12, True, 1)]
    assert [p.id for p in details.police] == [world.officer_id]
    assert [r.details for r in _audit(world, "bin.one_level")] == [{"on": True}]
    with session_scope(world.engine) as s:
        assert s.scalars(select(Bin.one_level).where(Bin.number == 12)).one() is True
    assert [z.code for z in _tx(world, admin.list_zones)] == ["5415", "5416"]


def test_a_pin_reset_gives_a_one_time_pin_that_is_never_stored_or_audited(world: World, clock: Clock) -> None:
    officer = world.officer_id
    rules = PinRules(caller=PinPolicy(max_failures=3), account=PinPolicy(max_failures=5), pepper=PEPPER)
    for _ in range(3):  # locked out from their own number
        with session_scope(world.engine) as s:
            check_pin(s, rules, OFFICER_PHONE, s.get_one(Person, officer), "000000", clock(), line="police")
    locked = _tx(world, lambda s: admin.person_details(s, officer, rules, clock()).pin)
    assert locked.is_set and locked.locked_until is not None and locked.reset_at is None
    pin = _tx(world, lambda s: admin.reset_pin(s, officer, ROOT, PEPPER, clock()))
    assert len(pin) == admin.RESET_PIN_DIGITS and pin.isdigit()
    with session_scope(world.engine) as s:
        person = s.get_one(Person, officer)
        assert verify_pin(pin, person.pin_hash, PEPPER) and pin not in person.pin_hash
        assert person.pin_reset_at is not None
        state = admin.person_details(s, officer, rules, clock()).pin
        assert state.is_set and state.locked_until is None and state.reset_at is not None
        rows = s.scalars(select(AuditEntry)).all()
    assert not any(pin in repr(r.details) or pin in r.subject for r in rows)
    assert [r.actor for r in _audit(world, "person.pin_reset")] == ["cli:root"]
    assert len({admin.new_reset_pin() for _ in range(20)}) > 1


@pytest.mark.parametrize("change", [
    lambda s, who, p: admin.set_active(s, p, False, who),
    lambda s, who, p: admin.add_role(s, p, Role.ADMIN, who),
    lambda s, who, p: admin.edit_zone(s, "5415", who, max_channels=3),
])
def test_the_directory_says_who_is_an_admin_not_the_caller(world: World, change: Any) -> None:
    coordinator = world.coordinators[0][0]
    former = _admin(world, "Vroeger", "+32470000902")
    _admin(world)
    _tx(world, lambda s: admin.set_active(s, former, False, ROOT))
    before = dump(world.engine)
    # A caller who says "admin" of someone who is none (any more): a stale web session, a wrong caller.
    for pretender in (_as(coordinator, True), _as(former, True)):
        with pytest.raises(admin.AdminError, match="not an admin"):
            _tx(world, lambda s, who=pretender: change(s, who, world.officer_id))
    assert dump(world.engine) == before


def test_a_second_approver_needs_two_active_police_in_the_zone(world: World, person: PersonFactory) -> None:
    before = dump(world.engine)
    with pytest.raises(admin.AdminError, match=r"zone 5415 has 1 active police.*at least 2"):
        _tx(world, lambda s: admin.edit_zone(s, "5415", ROOT, second_approver=True, max_channels=4))
    person(Role.POLICE_OFFICER, active=False)  # a deactivated colleague approves nothing
    person(Role.POLICE_APPROVER, zone_code="5416")  # nor does the police of another zone
    with pytest.raises(admin.AdminError, match="has 1 active police"):
        _tx(world, lambda s: admin.edit_zone(s, "5415", ROOT, second_approver=True))
    with pytest.raises(admin.AdminError, match="zone 5416 has 1 active police"):
        _tx(world, lambda s: admin.edit_zone(s, "5416", ROOT, second_approver=True))
    assert _audit(world, "zone.edited") == []
    person(Role.POLICE_APPROVER)
    assert _tx(world, lambda s: admin.edit_zone(s, "5415", ROOT, second_approver=True)) == ["second_approver"]
    assert before != dump(world.engine)


@pytest.fixture
def pg_world(request: pytest.FixtureRequest, tmp_path: Any, clock: Clock) -> World:
    """The usual world on the private PostgreSQL (tests/pg.py)."""
    from tests.pg import _create_database
    from tests.world import build_world

    return build_world(_create_database(request.getfixturevalue("postgres_server")), tmp_path / "store",
                       clock=clock)


@pytest.mark.parametrize("change", [
    lambda s, p: admin.set_active(s, p, False, ROOT),
    lambda s, p: admin.remove_role(s, p, Role.ADMIN, ROOT),
])
def test_the_last_admin_check_locks_the_admin_roles_on_postgresql(pg_world: World, change: Any) -> None:
    from sqlalchemy.exc import OperationalError

    world = pg_world
    first = _admin(world)
    second = _admin(world, "Tweede", "+32470000901")
    with session_scope(world.engine) as s:
        change(s, first)
        # Another transaction taking the last admin away now must wait for this one (and then count
        # one admin left): every admin role row is locked until this commits, the other admin's too.
        with world.engine.connect() as other, pytest.raises(OperationalError, match="could not obtain lock"):
            other.execute(select(RoleAssignment.id).where(RoleAssignment.role == Role.ADMIN,
                                                          RoleAssignment.person_id == second)
                          .with_for_update(nowait=True, key_share=True))
    with pytest.raises(admin.AdminError, match="last active admin"):
        _tx(world, lambda s: change(s, second))
