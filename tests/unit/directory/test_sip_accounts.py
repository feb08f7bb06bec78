"""Officers' SIP accounts: the store, the police line's first factor, and ``binfoon person sip-account``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from ivr.asterisk.officers import REALM, digest_ha1, officers_path
from ivr.cli import main
from ivr.directory.sip_accounts import (
    SipAccountError,
    add_sip_account,
    live_endpoints,
    officer_by_sip,
    officers_conf,
    publish_officers,
    read_password_file,
    remove_sip_account,
    rotate_sip_account,
)
from ivr.domain.vocabulary import Role
from ivr.police_line.flow import IntakeEnd, IntakeRules, police_intake
from storage.db import session_scope
from storage.models import AuditEntry, Message, OfficerSipAccount, Person, PinAttempt, RoleAssignment
from tests.fakes import FakeCall
from tests.steps import StepLog
from tests.world import OFFICER_PHONE, OFFICER_PIN, World

PASSWORD = "correct horse battery".replace(" ", "-")
RULES = IntakeRules(key_timeout_s=1.0)


def _add(world: World, person_id: int | None = None, password: str = PASSWORD, **kw: str) -> str:
    with session_scope(world.engine) as s:
        return add_sip_account(s, person_id or world.officer_id, password, "test", **kw).username


# -- the store ---------------------------------------------------------------------------------------
def test_only_the_digest_is_stored_never_the_password(world: World) -> None:
    name = _add(world)
    assert name == f"officer-{world.officer_id}"
    with session_scope(world.engine) as s:
        [row] = s.scalars(select(OfficerSipAccount)).all()
        assert (row.ha1, row.realm) == (digest_ha1(name, PASSWORD), REALM)
        conf = officers_conf(s)
        audit_text = " ".join(f"{e.action} {e.details}" for e in s.scalars(select(AuditEntry)))
    assert PASSWORD not in conf and f"MD5:{row.ha1}" in conf
    assert "sip_account.added" in audit_text and PASSWORD not in audit_text and row.ha1 not in audit_text


def test_someone_who_is_not_police_gets_no_account(world: World) -> None:
    coordinator_id = world.coordinators[0][0]
    with pytest.raises(SipAccountError, match="not an active police officer"):
        _add(world, coordinator_id)
    with pytest.raises(SipAccountError, match="no person 999"):
        _add(world, 999)
    with session_scope(world.engine) as s:
        assert s.scalar(select(func.count()).select_from(OfficerSipAccount)) == 0


@pytest.mark.parametrize(("kw", "password", "message"), [
    ({"username": "trunk"}, PASSWORD, "BINfoon's own SIP configuration"),
    ({"username": "x y"}, PASSWORD, "3 to 28 characters"),
    ({}, "short", "at least 16"),
    ({}, "sixteen chars with spaces", "without spaces"),
])
def test_bad_names_and_weak_passwords_are_refused(world: World, kw: dict[str, str], password: str,
                                                  message: str) -> None:
    with pytest.raises(SipAccountError, match=message):
        _add(world, password=password, **kw)


def test_one_account_per_officer_and_per_name(world: World) -> None:
    _add(world, username="peeters")
    with pytest.raises(SipAccountError, match="already has"):
        _add(world, username="peeters2")
    with session_scope(world.engine) as s:
        other = Person(name="Inspecteur Claes", pin_hash=None)
        other.roles.append(RoleAssignment(role=Role.POLICE_OFFICER, zone_id=world.zone_id))
        s.add(other)
        s.flush()
        other_id = other.id
    with pytest.raises(SipAccountError, match="taken"):
        _add(world, other_id, username="peeters")


def test_rotate_changes_the_digest_and_remove_deletes(world: World) -> None:
    name = _add(world)
    with session_scope(world.engine) as s:
        rotate_sip_account(s, world.officer_id, "another-long-password", "test")
    with session_scope(world.engine) as s:
        assert s.scalars(select(OfficerSipAccount.ha1)).one() == digest_ha1(name, "another-long-password")
    with session_scope(world.engine) as s:
        assert remove_sip_account(s, world.officer_id, "test") == name
    with session_scope(world.engine) as s:
        assert live_endpoints(s) == [] and officer_by_sip(s, name) is None
        with pytest.raises(SipAccountError, match="no SIP account"):
            rotate_sip_account(s, world.officer_id, "another-long-password", "test")


def test_an_officer_who_leaves_loses_the_account(world: World) -> None:
    name = _add(world)
    with session_scope(world.engine) as s:
        s.get(Person, world.officer_id).active = False  # type: ignore[union-attr]
    with session_scope(world.engine) as s:
        assert live_endpoints(s) == [] and officer_by_sip(s, name) is None
    with session_scope(world.engine) as s:
        s.execute(delete(PinAttempt))
        s.execute(delete(Message))
        s.execute(delete(Person).where(Person.id == world.officer_id))
    with session_scope(world.engine) as s:  # the database deletes the account with the person
        assert s.scalar(select(func.count()).select_from(OfficerSipAccount)) == 0


def test_a_password_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "sip.secret"
    path.write_text(PASSWORD + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(SipAccountError, match="readable by others"):
        read_password_file(path)
    os.chmod(path, 0o600)
    assert read_password_file(path) == PASSWORD


def test_publish_writes_the_file_and_says_when_accounts_changed(world: World, tmp_path: Path) -> None:
    # No Asterisk runs here: reload=False (the integration test reloads a real one).
    assert publish_officers(world.engine, tmp_path, None, reload=False) is False  # nothing yet
    name = _add(world)
    assert publish_officers(world.engine, tmp_path, None, reload=False) is True
    assert f"[{name}]" in officers_path(tmp_path).read_text()
    assert publish_officers(world.engine, tmp_path, None, reload=False) is False


# -- the police line: the account is the first factor -------------------------------------------------
async def _call(world: World, tmp_path: Path, script: list[object], *, caller: str,
                sip_account: str | None) -> tuple[IntakeEnd | None, FakeCall]:
    call = FakeCall(script, tmp_path, caller_id=caller)
    try:
        end = await police_intake(call, world.desk, RULES, StepLog(), sip_account=sip_account)
    except Exception as exc:
        if type(exc).__name__ != "CallHungUp":
            raise
        end = None
    return end, call


async def test_the_account_replaces_caller_id_and_the_pin_is_still_asked(world: World, tmp_path: Path) -> None:
    name = _add(world)
    # The softphone claims no number anyone knows: the account says who it is.
    end, call = await _call(world, tmp_path, [OFFICER_PIN, "12", "1", "1"], caller="anonymous", sip_account=name)
    assert call.said[:2] == ["police_enter_pin", "police_enter_bin"]
    with session_scope(world.engine) as s:
        [attempt] = s.scalars(select(PinAttempt)).all()
        assert (attempt.caller_id, attempt.person_id) == (f"sip:{name}", world.officer_id)
        [message] = s.scalars(select(Message)).all()
        assert message.created_by_id == world.officer_id
    assert end is not IntakeEnd.NOT_AUTHENTICATED


async def test_a_removed_account_is_no_caller_id_fallback(world: World, tmp_path: Path) -> None:
    name = _add(world)
    with session_scope(world.engine) as s:
        remove_sip_account(s, world.officer_id, "test")
    # The right PIN, and the officer's own number as caller ID: still nobody (3 tries, then that account
    # name is locked like any caller who keeps guessing).
    end, call = await _call(world, tmp_path, [OFFICER_PIN] * 3, caller=OFFICER_PHONE, sip_account=name)
    assert end is IntakeEnd.LOCKED
    assert "police_enter_bin" not in call.said
    with session_scope(world.engine) as s:
        assert {a.person_id for a in s.scalars(select(PinAttempt))} == {None}


async def test_wrong_pins_on_the_account_count_towards_the_officer_everywhere(world: World, tmp_path: Path) -> None:
    name = _add(world)
    end, call = await _call(world, tmp_path, ["0000", "0000", "0000"], caller="anonymous", sip_account=name)
    assert end is IntakeEnd.LOCKED and call.said[-1] == "police_locked"
    # The same person's account counts them: two more wrong from their phone number lock it (5, D2) ...
    end, call = await _call(world, tmp_path, ["0000", "0000"], caller=OFFICER_PHONE, sip_account=None)
    assert end is IntakeEnd.LOCKED and call.said[-1] == "police_locked"
    # ... and then the right PIN from that number is not even asked for.
    end, call = await _call(world, tmp_path, [OFFICER_PIN], caller=OFFICER_PHONE, sip_account=None)
    assert end is IntakeEnd.LOCKED and "police_enter_pin" not in call.said


async def test_a_spoofer_who_locked_the_officer_s_number_does_not_lock_their_sip_account(
        world: World, tmp_path: Path) -> None:
    name = _add(world)
    for _ in range(2):  # six wrong PINs under the officer's (spoofed) number: the number and the person lock
        await _call(world, tmp_path, ["0000", "0000", "0000"], caller=OFFICER_PHONE, sip_account=None)
    end, call = await _call(world, tmp_path, [OFFICER_PIN], caller=OFFICER_PHONE, sip_account=None)
    assert end is IntakeEnd.LOCKED and call.said == ["police_locked"]
    # The officer's own softphone, authenticated by Asterisk, is not refused by the spoofer's lock.
    end, call = await _call(world, tmp_path, [OFFICER_PIN, "12", "1", "1"], caller=OFFICER_PHONE, sip_account=name)
    assert call.said[:2] == ["police_enter_pin", "police_enter_bin"] and end is not IntakeEnd.LOCKED


# -- the command line -----------------------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    pin = tmp_path / "pin"
    pin.write_text("482193\n")
    assert main(["zone", "add", "--code", "5415", "--name", "Gent"]) == 0
    assert main(["bin", "add", "--number", "12", "--name", "Noord", "--zone", "5415"]) == 0
    assert main(["person", "add", "--name", "Peeters", "--role", "police_officer", "--zone", "5415",
                 "--phone", "09 266 61 11", "--pin-file", str(pin)]) == 0
    assert main(["person", "add", "--name", "An", "--role", "coordinator", "--bin", "12",
                 "--phone", "09 200 00 01"]) == 0
    return tmp_path


def test_cli_add_shows_a_generated_password_once(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    instance_dir = cli_env / "instances"
    assert main(["person", "sip-account", "add", "1", "--instance-dir", str(instance_dir)]) == 0
    out = capsys.readouterr().out
    password = out.split("SIP password (shown once, not stored): ")[1].split()[0]
    assert len(password) == 24
    conf = (instance_dir / "default" / "etc" / "officers" / "pjsip-officers.conf").read_text()
    assert "[officer-1]" in conf and digest_ha1("officer-1", password) in conf and password not in conf
    assert main(["person", "sip-account", "list"]) == 0
    listing = capsys.readouterr().out
    assert "officer-1" in listing and "Peeters" in listing and "active" in listing and password not in listing
    assert main(["person", "sip-account", "rotate", "1", "--instance-dir", str(instance_dir)]) == 0
    rotated = capsys.readouterr().out.split("not stored): ")[1].split()[0]
    assert rotated != password and digest_ha1("officer-1", rotated) in (
        instance_dir / "default" / "etc" / "officers" / "pjsip-officers.conf").read_text()
    assert main(["person", "sip-account", "remove", "1", "--instance-dir", str(instance_dir)]) == 0
    assert "[officer-1]" not in (instance_dir / "default" / "etc" / "officers" / "pjsip-officers.conf").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["person", "sip-account", "add", "2"], "not an active police officer"),
    (["person", "sip-account", "add", "9"], "no person 9"),
    (["person", "sip-account", "rotate", "1"], "no SIP account"),
    (["person", "sip-account", "remove", "1"], "no SIP account"),
    (["person", "sip-account", "add", "1", "--username", "trunk"], "own SIP configuration"),
    (["person", "sip-account", "add", "1", "--password-file", "PUBLIC"], "--password-file: "),
])
def test_cli_errors_are_clear_and_write_nothing(cli_env: Path, capsys: pytest.CaptureFixture[str],
                                                argv: list[str], message: str) -> None:
    public = cli_env / "public.secret"
    public.write_text(PASSWORD)
    os.chmod(public, 0o644)
    argv = [str(public) if a == "PUBLIC" else a for a in argv]
    capsys.readouterr()
    assert main([*argv, "--instance-dir", str(cli_env / "instances")]) == 1
    assert message in capsys.readouterr().err
    assert main(["person", "sip-account", "list"]) == 0
    assert capsys.readouterr().out == ""
    assert not (cli_env / "instances" / "default" / "etc" / "officers").exists()
