"""PIN checks against the stored attempts: RELIABILITY D2, a line's global limit, separate counters
(web console, SIP account), the pepper and its re-hash, ``binfoon person unlock``, file modes."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.cli import main
from ivr.directory.accounts import SignInLimits, create_account, sign_in
from ivr.directory.pin_gate import PinRules, check_pin, lock_in_force, pin_key, unlock
from ivr.directory.sip_accounts import add_sip_account
from ivr.domain.phone import mask
from ivr.domain.pin import PinPolicy
from storage.db import session_scope
from storage.models import AuditEntry, Person
from storage.pins import PEPPERED, load_pepper, verify_pin
from ivr.domain.vocabulary import Role
from tests.conftest import Clock, PersonFactory
from tests.world import OFFICER_PHONE, OFFICER_PIN, World

PEPPER = bytes(range(32))
RULES = PinRules(pepper=PEPPER)


def _alerts(world: World) -> list[AuditEntry]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == "security.alert")
                              .order_by(AuditEntry.id)))


def _check(world: World, clock: Clock, key: str, pin: str, *, person_id: int | None = None,
           rules: PinRules = RULES, line: str = "police") -> tuple[bool, dt.datetime | None]:
    with session_scope(world.engine) as s:
        person = s.get(Person, person_id) if person_id is not None else None
        verdict = check_pin(s, rules, key, person, pin, clock(), line=line)
        return verdict.person is not None, verdict.locked_until


def test_d2_a_hundred_caller_ids_against_one_account_lock_it_after_five_and_alert_at_once(
        world: World, clock: Clock) -> None:
    outcomes = []
    for i in range(100):
        # Each guess from another number that leads to the officer's account (spoofed caller IDs).
        ok, lock = _check(world, clock, f"+3247099{i:04d}", "000000", person_id=world.officer_id)
        outcomes.append(lock is not None)
        if i == 4:
            # The fifth failure locked the account, and the admins were alerted in the same transaction.
            [alert] = _alerts(world)
            assert alert.details["kind"] == "pin_account_locked"
            assert alert.subject == f"person:{world.officer_id}" and "0000" not in str(alert.details)
        clock.advance(seconds=5)
    assert outcomes[:4] == [False] * 4 and all(outcomes[4:])
    assert [a.details["kind"] for a in _alerts(world)] == ["pin_account_locked"]  # once, not per guess
    # The officer's right PIN is not even checked while the account is locked.
    ok, lock = _check(world, clock, OFFICER_PHONE, OFFICER_PIN, person_id=world.officer_id)
    assert not ok and lock is not None


def test_a_line_refuses_pin_checks_after_its_global_limit_and_alerts(
        world: World, clock: Clock, person: PersonFactory) -> None:
    rules = PinRules(line=PinPolicy(max_failures=10, window_s=900, lock_s=900, growth=1.0), pepper=PEPPER)
    officers = [person(Role.POLICE_OFFICER, pin="246813") for _ in range(3)]
    # Ten wrong PINs against three accounts (4 + 3 + 3): no caller ID, no account reaches its limit.
    for i in range(10):
        _check(world, clock, f"+3248000{i:04d}", "123456", rules=rules, person_id=officers[i % 3].id)
    [alert] = _alerts(world)
    assert (alert.subject, alert.details["kind"]) == ("line:police", "pin_line_limit")
    # Now a caller with the right PIN is refused on that line, but not on another one.
    other = person(Role.POLICE_OFFICER, pin="135792")
    assert _check(world, clock, other.phone, "135792", person_id=other.id, rules=rules)[0] is False
    assert _check(world, clock, other.phone, "135792", person_id=other.id, rules=rules, line="admin_line")[0] is True
    clock.advance(minutes=15, seconds=1)
    assert _check(world, clock, other.phone, "135792", person_id=other.id, rules=rules)[0] is True


def test_strangers_wrong_pins_never_close_the_line(world: World, clock: Clock) -> None:
    """Found in review: wrong PINs from numbers that are nobody's counted toward the line's limit, so
    anyone could shut the police line for every officer calling from a phone, again and again. A PIN
    from a number that is nobody's can never open anything: those callers have their own limit."""
    rules = PinRules(line=PinPolicy(max_failures=10, window_s=900, lock_s=900, growth=1.0), pepper=PEPPER)
    for i in range(40):
        _check(world, clock, f"+3248000{i:04d}", "123456", rules=rules)
    assert _alerts(world) == []
    assert _check(world, clock, OFFICER_PHONE, OFFICER_PIN, person_id=world.officer_id, rules=rules)[0] is True


def test_a_number_with_a_recent_right_pin_is_not_shut_out_by_a_closed_line(
        world: World, clock: Clock, person: PersonFactory) -> None:
    """While the line is closed by guesses against accounts, an officer whose number gave the right PIN
    lately is still checked (a spoofer of that number still meets its caller-ID and account limits)."""
    rules = PinRules(line=PinPolicy(max_failures=10, window_s=900, lock_s=900, growth=1.0), pepper=PEPPER)
    assert _check(world, clock, OFFICER_PHONE, OFFICER_PIN, person_id=world.officer_id, rules=rules)[0] is True
    clock.advance(days=3)
    officers = [person(Role.POLICE_OFFICER, pin="246813") for _ in range(3)]
    for i in range(10):
        _check(world, clock, f"+3248000{i:04d}", "123456", rules=rules, person_id=officers[i % 3].id)
    assert [a.details["kind"] for a in _alerts(world)] == ["pin_line_limit"]
    assert _check(world, clock, OFFICER_PHONE, OFFICER_PIN, person_id=world.officer_id, rules=rules)[0] is True


def test_a_caller_id_that_reads_like_a_sip_account_is_not_that_account(world: World, clock: Clock) -> None:
    """Found in review: an unparsable caller ID was kept as raw text, so a carrier call showing
    ``sip:<username>`` shared the counter of the officer's authenticated SIP account and locked it."""
    with session_scope(world.engine) as s:
        sip = add_sip_account(s, world.officer_id, "correct-horse-battery-staple", "test").username
    spoofed = pin_key(f"sip:{sip}")
    assert not spoofed.startswith("sip:")
    for _ in range(4):
        _check(world, clock, spoofed, "999999")
    assert _check(world, clock, f"sip:{sip}", OFFICER_PIN, person_id=world.officer_id) == (True, None)


def test_a_spoofer_locks_neither_the_officer_s_sip_account_nor_the_web_console(world: World, clock: Clock) -> None:
    with session_scope(world.engine) as s:
        sip = add_sip_account(s, world.officer_id, "correct-horse-battery-staple", "test").username
        create_account(s, world.officer_id, "peeters", "a long web password", "test")
    for _ in range(6):  # the spoofer shows the officer's number and guesses
        _check(world, clock, OFFICER_PHONE, "999999", person_id=world.officer_id)
    with session_scope(world.engine) as s:
        assert lock_in_force(s, RULES, OFFICER_PHONE, world.officer_id, clock(), line="police") is not None
    # The officer's authenticated softphone still gets its PIN checked ...
    assert _check(world, clock, f"sip:{sip}", OFFICER_PIN, person_id=world.officer_id) == (True, None)
    # ... and the web console has its own counter.
    with session_scope(world.engine) as s:
        assert sign_in(s, "peeters", "a long web password", "192.0.2.7", SignInLimits(), clock()).viewer is not None


def test_an_old_hash_still_verifies_and_is_peppered_at_the_next_right_pin(world: World, clock: Clock) -> None:
    with session_scope(world.engine) as s:
        old = s.get_one(Person, world.officer_id).pin_hash
    assert old is not None and old.startswith("scrypt$")  # as made before the pepper
    assert _check(world, clock, OFFICER_PHONE, OFFICER_PIN, person_id=world.officer_id)[0]
    with session_scope(world.engine) as s:
        new = s.get_one(Person, world.officer_id).pin_hash
        rehashed = s.scalars(select(AuditEntry).where(AuditEntry.action == "person.pin_rehashed")).all()
    assert new is not None and new.startswith(PEPPERED + "$") and len(rehashed) == 1
    assert verify_pin(OFFICER_PIN, new, PEPPER) and not verify_pin(OFFICER_PIN, new)  # useless without the key
    assert _check(world, clock, OFFICER_PHONE, OFFICER_PIN, person_id=world.officer_id)[0]


def test_unlock_ends_every_lock_of_the_person(world: World, clock: Clock) -> None:
    for i in range(5):
        _check(world, clock, f"+3247099{i:04d}", "000000", person_id=world.officer_id)
    for _ in range(3):
        _check(world, clock, OFFICER_PHONE, "000000", person_id=world.officer_id)
    with session_scope(world.engine) as s:
        officer = s.get_one(Person, world.officer_id)
        assert lock_in_force(s, RULES, OFFICER_PHONE, officer.id, clock()) is not None
        assert unlock(s, officer, "cli:admin", clock()) == [mask(OFFICER_PHONE)]
    clock.advance(seconds=1)
    assert _check(world, clock, OFFICER_PHONE, OFFICER_PIN, person_id=world.officer_id)[0]
    with session_scope(world.engine) as s:
        [entry] = s.scalars(select(AuditEntry).where(AuditEntry.action == "person.unlocked")).all()
    assert entry.actor == "cli:admin"


def test_pin_key_is_e164() -> None:
    assert pin_key("0475 00 00 01") == OFFICER_PHONE and pin_key("") == "anonymous"


# -- the command line and the files ------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0
    return tmp_path


def test_new_pins_have_six_digits_and_are_peppered_with_a_private_key(
        cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pin = cli_env / "pin"
    pin.write_text("4821\n")
    add = ["person", "add", "--name", "Peeters", "--role", "police_officer", "--zone", "5415",
           "--phone", "09 266 61 11", "--pin-file", str(pin)]
    assert main(add) == 1
    assert "--pin-file: a new PIN is 6 to 8 digits (it has 4)" in capsys.readouterr().err
    pin.write_text("482193\n")
    assert main(add) == 0
    key = cli_env / "var" / "pin-pepper.key"
    database = cli_env / "var" / "binfoon.db"
    assert key.stat().st_mode & 0o777 == 0o600 and database.stat().st_mode & 0o777 == 0o600
    from storage.db import make_engine
    with session_scope(make_engine(f"sqlite:///{database}")) as s:
        stored = s.scalars(select(Person.pin_hash)).one()
    assert stored.startswith(PEPPERED + "$") and verify_pin("482193", stored, load_pepper(key))
    assert not verify_pin("482193", stored, bytes(32))
    # An older 4-digit PIN keeps working until rotated; `person pin` rotates it (by name or id).
    pin.write_text("77665544\n")
    assert main(["person", "pin", "peeters", "--pin-file", str(pin)]) == 0
    assert main(["person", "pin", "Nobody", "--pin-file", str(pin)]) == 1
    assert "PERSON: no person named 'Nobody'" in capsys.readouterr().err


def test_person_unlock_from_the_command_line(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pin = cli_env / "pin"
    pin.write_text("482193\n")
    assert main(["person", "add", "--name", "Peeters", "--role", "police_officer", "--zone", "5415",
                 "--phone", "09 266 61 11", "--pin-file", str(pin)]) == 0
    capsys.readouterr()
    assert main(["person", "unlock", "Peeters"]) == 0
    assert "PIN locks cleared (+32*****111)" in capsys.readouterr().out
    assert main(["person", "unlock", "42"]) == 1


def test_a_pepper_file_others_may_read_is_made_private(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "pin-pepper.key"
    first = load_pepper(key)
    assert load_pepper(key) == first and len(first) == 32
    key.chmod(0o644)
    assert load_pepper(key) == first and key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
