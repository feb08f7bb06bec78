"""Officers' own SIP accounts (optional, one per officer): create, rotate, remove, list; all their SQL.

Rules:
- only a police officer or approver who is active may have one; a person who stops being one
  (inactive, role removed) keeps the row but the account is neither rendered for Asterisk nor
  accepted on the police line; deleting the person deletes the account (``ON DELETE CASCADE``);
- only the digest HA1 = md5(username:realm:password) is stored (Asterisk verifies against it), never
  the password; a generated password is shown once by the caller of ``add``/``rotate``;
- the authenticated SIP identity replaces caller ID as the police line's first factor; the PIN is
  still asked, and wrong PINs count on the person's account with every other line's;
- every change is audited (never the password or its digest).
These functions run inside the caller's transaction.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ivr.asterisk.officers import (
    REALM,
    OfficerEndpoint,
    digest_ha1,
    officers_path,
    reload_pjsip,
    render_officers,
    username_problem,
    write_officers,
)
from ivr.domain.vocabulary import Role
from storage import audit
from storage.db import session_scope
from storage.models import OfficerSipAccount, Person, RoleAssignment, utcnow

#: A password given by the admin has at least this many characters (a generated one has 24).
MIN_PASSWORD_CHARS = 16
POLICE_ROLES = (Role.POLICE_OFFICER, Role.POLICE_APPROVER)


class SipAccountError(ValueError):
    """An account cannot be changed as asked; the message says why (nothing was written)."""


def generate_password() -> str:
    """A fresh random SIP password (24 URL-safe characters, 144 bits)."""
    return secrets.token_urlsafe(18)


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be an officer's SIP password, or ``None`` when it can."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a SIP password has at least {MIN_PASSWORD_CHARS} characters"
    if any(ord(ch) < 33 or ord(ch) > 126 for ch in password):
        return "a SIP password is printable ASCII without spaces (softphones differ on anything else)"
    return None


def read_password_file(path: Path) -> str:
    """The password in the first line of ``path``, which only its owner may read (0600)."""
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SipAccountError(f"{path}: readable by others (mode {mode:o}); make it 0600 first")
        return path.read_text(encoding="utf-8").splitlines()[0].strip() if path.stat().st_size else ""
    except OSError as exc:
        raise SipAccountError(f"{path}: {exc.strerror}") from None


def is_police(person: Person) -> bool:
    """True for an active police officer or approver: who may have a SIP account."""
    return person.active and any(r.role in POLICE_ROLES for r in person.roles)


def default_username(person_id: int) -> str:
    """``officer-7`` for person 7."""
    return f"officer-{person_id}"


def account_of(s: Session, person_id: int) -> OfficerSipAccount | None:
    """The person's SIP account, if any."""
    return s.scalars(select(OfficerSipAccount).where(OfficerSipAccount.person_id == person_id)).first()


def _police_person(s: Session, person_id: int) -> Person:
    person = s.get(Person, person_id)
    if person is None:
        raise SipAccountError(f"no person {person_id} (see `binfoon person add`)")
    if not is_police(person):
        raise SipAccountError(f"person {person_id} ({person.name}) is not an active police officer: "
                              "only officers call the police line")
    return person


def _checked(password: str) -> str:
    problem = password_problem(password)
    if problem is not None:
        raise SipAccountError(problem)
    return password


def add_sip_account(s: Session, person_id: int, password: str, actor: str,
                    username: str | None = None) -> OfficerSipAccount:
    """Give an officer a SIP account (``username`` by default ``officer-<id>``); audited."""
    _police_person(s, person_id)
    name = (username or default_username(person_id)).strip().lower()
    problem = username_problem(name)
    if problem is not None:
        raise SipAccountError(problem)
    _checked(password)
    if account_of(s, person_id) is not None:
        raise SipAccountError(f"person {person_id} already has a SIP account (rotate or remove it)")
    if s.scalar(select(OfficerSipAccount.id).where(OfficerSipAccount.username == name)) is not None:
        raise SipAccountError(f"SIP username {name!r} is taken")
    account = OfficerSipAccount(person_id=person_id, username=name, ha1=digest_ha1(name, password), realm=REALM)
    s.add(account)
    s.flush()
    audit.record(s, actor, "sip_account.added", f"person:{person_id}", username=name)
    return account


def rotate_sip_account(s: Session, person_id: int, password: str, actor: str) -> OfficerSipAccount:
    """Give an officer's account a new password (the old one stops working at the reload); audited."""
    _police_person(s, person_id)
    _checked(password)
    account = account_of(s, person_id)
    if account is None:
        raise SipAccountError(f"person {person_id} has no SIP account (add one first)")
    account.ha1 = digest_ha1(account.username, password, account.realm)
    account.rotated_at = utcnow()
    audit.record(s, actor, "sip_account.rotated", f"person:{person_id}", username=account.username)
    return account


def remove_sip_account(s: Session, person_id: int, actor: str) -> str:
    """Delete an officer's SIP account (also allowed once they are no officer any more); its username."""
    account = account_of(s, person_id)
    if account is None:
        raise SipAccountError(f"person {person_id} has no SIP account")
    name = account.username
    s.delete(account)
    audit.record(s, actor, "sip_account.removed", f"person:{person_id}", username=name)
    return name


def sip_accounts(s: Session) -> list[tuple[OfficerSipAccount, bool]]:
    """Every SIP account with whether it is live (its person an active officer), by username."""
    rows = s.scalars(select(OfficerSipAccount).order_by(OfficerSipAccount.username)).all()
    return [(account, is_police(account.person)) for account in rows]


def live_endpoints(s: Session) -> list[OfficerEndpoint]:
    """The accounts Asterisk may accept: those of active officers (with the realm it challenges in)."""
    return [OfficerEndpoint(account.username, account.ha1)
            for account, live in sip_accounts(s) if live and account.realm == REALM]


def officers_conf(s: Session) -> str:
    """The officers' PJSIP file as the database says it should be now."""
    return render_officers(live_endpoints(s))


def officer_by_sip(s: Session, username: str) -> Person | None:
    """The active officer whose SIP account has this username (the endpoint Asterisk authenticated)."""
    return s.scalars(
        select(Person).join(OfficerSipAccount, OfficerSipAccount.person_id == Person.id)
        .join(RoleAssignment, RoleAssignment.person_id == Person.id)
        .where(OfficerSipAccount.username == username, Person.active.is_(True),
               RoleAssignment.role.in_(POLICE_ROLES))
    ).first()


def publish_officers(engine: Engine, run_dir: Path, group: int | None, *, reload: bool) -> bool:
    """Write the officers' PJSIP file of the Asterisk instance in ``run_dir`` from the database and,
    if ``reload`` (it runs) and the accounts changed, have PJSIP read it again: a new, rotated or
    removed account takes effect now. Returns whether the accounts changed.
    Raises ``ivr.asterisk.officers.ReloadError`` when Asterisk cannot be asked."""
    with session_scope(engine) as s:
        text = officers_conf(s)
    path = officers_path(run_dir)
    try:
        before = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = render_officers([])  # a missing file (#tryinclude) defines what an empty one does
    if path.exists() and text == before:
        return False
    write_officers(run_dir, text, group)
    if text != before and reload:
        reload_pjsip(run_dir)
    return text != before
