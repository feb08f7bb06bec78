"""Web accounts of the console, sign-in, and what a signed-in person may see (all their SQL).

The web console and ``binfoon web user ...`` both call these (moved here from ``ivr.web.auth``).

Rules:
- passwords are hashed with argon2id (``argon2-cffi``), never stored or logged; an unknown name
  costs the same hashing time as a known one;
- sign-in attempts are stored and limited per account and per address with the police line's own
  lockout rule (``ivr.domain.pin.locked_until``): while locked, nothing is checked;
- every attempt is audited, and a lock raises a ``security.alert`` for admins; the address is the
  client's (behind a trusted proxy, the one it forwards for: ``ivr.web.pages.base.client_address``);
- the scope of an account comes from its person's roles in the directory (police: their zones;
  coordinator: their BINs; admin: everything).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.directory.pin_gate import lock_over_rows
from ivr.domain.pin import PinPolicy
from ivr.domain.vocabulary import PinOutcome, Role, WebRole
from storage import audit
from storage.models import Person, WebAccount, WebSignInAttempt, utcnow

log = logging.getLogger(__name__)
HASHER = PasswordHasher()

#: Verified against when the name is unknown, so timing does not tell which accounts exist.
_DUMMY_HASH = HASHER.hash("not a password of anyone")
MIN_PASSWORD_CHARS = 10
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,99}")


class AccountError(ValueError):
    """An account cannot be created as asked; the message says why."""


@dataclass(frozen=True)
class Viewer:
    """A signed-in person and the part of the chain they may see."""

    account_id: int
    person_id: int
    name: str
    username: str
    role: WebRole
    language: str
    epoch: int
    #: Zones (police) whose BINs they see; ``None``: every zone.
    zone_ids: frozenset[int] | None
    #: BINs (coordinators) they see; ``None``: not limited by BIN.
    bin_ids: frozenset[int] | None

    @property
    def actor(self) -> str:
        """How the audit log names what this person does on the web."""
        return f"web:person:{self.person_id}"

    @property
    def is_admin(self) -> bool:
        """True for admins."""
        return self.role is WebRole.ADMIN

    def sees_bin(self, bin_id: int, zone_id: int) -> bool:
        """May this person see the messages (and members) of this BIN?"""
        if self.role is WebRole.ADMIN:
            return True
        if self.role is WebRole.POLICE:
            return self.zone_ids is None or zone_id in self.zone_ids
        return self.bin_ids is not None and bin_id in self.bin_ids

    @property
    def may_send(self) -> bool:
        """Police and admins send alerts; coordinators review them."""
        return self.role in (WebRole.POLICE, WebRole.ADMIN)

    def may_edit_members(self, bin_id: int) -> bool:
        """Admins, and a BIN's own coordinators, keep its member list."""
        if self.role is WebRole.ADMIN:
            return True
        return self.role is WebRole.COORDINATOR and self.bin_ids is not None and bin_id in self.bin_ids


def role_for(person: Person) -> WebRole | None:
    """The strongest web role the person's directory roles give (``None``: no console access)."""
    roles = {r.role for r in person.roles}
    if Role.ADMIN in roles:
        return WebRole.ADMIN
    if roles & {Role.POLICE_OFFICER, Role.POLICE_APPROVER}:
        return WebRole.POLICE
    if Role.COORDINATOR in roles:
        return WebRole.COORDINATOR
    return None


def create_account(s: Session, person_id: int, username: str, password: str, actor: str,
                   role: WebRole | None = None) -> WebAccount:
    """A new account for a person of the directory (in the caller's transaction); audited."""
    person = s.get(Person, person_id)
    if person is None:
        raise AccountError(f"no person {person_id} (see `binfoon person add`)")
    allowed = role_for(person)
    if allowed is None:
        raise AccountError(f"person {person_id} is not police, coordinator or admin: no console access")
    if role is not None and role is not allowed:
        raise AccountError(f"person {person_id}'s roles give {allowed.value}, not {role.value}")
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        raise AccountError("a user name is 2 to 100 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"a password has at least {MIN_PASSWORD_CHARS} characters")
    if s.scalar(select(WebAccount.id).where(WebAccount.username == name)) is not None:
        raise AccountError(f"user name {name!r} is taken")
    if s.scalar(select(WebAccount.id).where(WebAccount.person_id == person_id)) is not None:
        raise AccountError(f"person {person_id} already has an account")
    account = WebAccount(person_id=person_id, username=name, password_hash=HASHER.hash(password), role=allowed)
    s.add(account)
    s.flush()
    audit.record(s, actor, "web.account_added", f"person:{person_id}", username=name, role=allowed.value)
    return account


def default_username(person: Person) -> str:
    """``inspecteur.peeters`` for "Inspecteur Peeters" (letters and digits only, dots between words)."""
    import unicodedata

    plain = unicodedata.normalize("NFKD", person.name).encode("ascii", "ignore").decode().lower()
    words = re.findall(r"[a-z0-9]+", plain)
    return ".".join(words)[:100] or f"person{person.id}"


def load_viewer(s: Session, account_id: int) -> Viewer | None:
    """The viewer for an active account (``None`` if gone, disabled, or the person is inactive)."""
    account = s.get(WebAccount, account_id)
    if account is None or not account.active or not account.person.active:
        return None
    person = account.person
    zone_ids: frozenset[int] | None = None
    bin_ids: frozenset[int] | None = None
    if account.role is WebRole.POLICE:
        zones = [r.zone_id for r in person.roles if r.role in (Role.POLICE_OFFICER, Role.POLICE_APPROVER)]
        zone_ids = None if any(z is None for z in zones) else frozenset(z for z in zones if z is not None)
    elif account.role is WebRole.COORDINATOR:
        bin_ids = frozenset(r.bin_id for r in person.roles if r.role is Role.COORDINATOR and r.bin_id is not None)
    return Viewer(account.id, person.id, person.name, account.username, account.role, person.language.value,
                  account.session_epoch, zone_ids, bin_ids)


@dataclass(frozen=True)
class SignInResult:
    """The viewer on success; else the lock in force (or neither: just wrong)."""

    viewer: Viewer | None
    locked_until: dt.datetime | None = None


@dataclass(frozen=True)
class SignInLimits:
    """Wrong passwords per account and per address before a lock, and its length."""

    account_failures: int = 5
    ip_failures: int = 20
    lock_s: float = 900.0

    def policies(self) -> tuple[PinPolicy, PinPolicy]:
        """(per account, per address) as lockout policies."""
        return (PinPolicy(self.account_failures, self.lock_s, self.lock_s),
                PinPolicy(self.ip_failures, self.lock_s, self.lock_s))


def _lock(s: Session, limits: SignInLimits, username: str, ip: str, now: dt.datetime) -> dt.datetime | None:
    by_name, by_ip = limits.policies()
    return lock_over_rows(s, WebSignInAttempt.at, WebSignInAttempt.outcome,
                          ((WebSignInAttempt.username, username, by_name), (WebSignInAttempt.ip, ip, by_ip)), now)


def sign_in(s: Session, username: str, password: str, ip: str, limits: SignInLimits,
            now: dt.datetime | None = None) -> SignInResult:
    """Check a name and password from ``ip``; the attempt is stored and audited either way."""
    now = now or utcnow()
    name = username.strip().lower()[:100]
    ip = ip[:64]
    account = s.scalars(select(WebAccount).where(WebAccount.username == name)).first()
    account_id = account.id if account else None
    lock = _lock(s, limits, name, ip, now)
    if lock is not None:
        s.add(WebSignInAttempt(at=now, username=name, ip=ip, account_id=account_id, outcome=PinOutcome.LOCKED))
        audit.record(s, f"web:{ip}", "web.sign_in_refused_locked", f"account:{account_id or '-'}",
                     locked_until=lock.isoformat())
        return SignInResult(None, lock)
    try:
        ok = HASHER.verify(account.password_hash if account else _DUMMY_HASH, password) and account is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    viewer = load_viewer(s, account.id) if ok and account is not None else None
    ok = viewer is not None  # a disabled account is a wrong sign-in, without saying why
    if ok and account is not None and HASHER.check_needs_rehash(account.password_hash):
        account.password_hash = HASHER.hash(password)  # stored with today's parameters
    s.add(WebSignInAttempt(at=now, username=name, ip=ip, account_id=account_id,
                           outcome=PinOutcome.OK if ok else PinOutcome.WRONG))
    s.flush()
    audit.record(s, f"web:{ip}", "web.sign_in_ok" if ok else "web.sign_in_wrong", f"account:{account_id or '-'}")
    if not ok:
        lock = _lock(s, limits, name, ip, now)
        if lock is not None:
            audit.record(s, f"web:{ip}", "web.locked", f"account:{account_id or '-'}", locked_until=lock.isoformat())
            # Admins see it in the audit view: a guessing attack on the console (the client's address).
            audit.record(s, "system", "security.alert", f"account:{account_id or '-'}", kind="web_signin_locked",
                         address=ip, locked_until=lock.isoformat())
            log.warning("web sign-in locked until %s: wrong passwords from %s (account %s)",
                        lock.isoformat(timespec="seconds"), ip, account_id or "-")
        return SignInResult(None, lock)
    return SignInResult(viewer)


def sign_out_everywhere(s: Session, account_id: int, actor: str) -> None:
    """End every session of the account (its epoch moves on); audited."""
    account = s.get_one(WebAccount, account_id)
    account.session_epoch += 1
    audit.record(s, actor, "web.sign_out", f"account:{account_id}")


def account_by_username(s: Session, username: str) -> WebAccount | None:
    """The account with this sign-in name (case and spaces around it do not matter)."""
    return s.scalars(select(WebAccount).where(WebAccount.username == username.strip().lower())).first()


def add_account(s: Session, person_id: int, username: str | None, password: str, actor: str,
                role: WebRole | None = None) -> WebAccount:
    """``create_account``, the user name made from the person's name when not given."""
    person = s.get(Person, person_id)
    if person is None:
        raise AccountError(f"no person {person_id} (see `binfoon person add`)")
    return create_account(s, person_id, username or default_username(person), password, actor, role)


def set_password(s: Session, account: WebAccount, password: str, actor: str) -> None:
    """A new password; every session signed in with the old one ends. Audited."""
    account.password_hash = HASHER.hash(password)
    account.session_epoch += 1
    audit.record(s, actor, "web.password_set", f"account:{account.id}")


def disable_account(s: Session, account: WebAccount, actor: str) -> None:
    """Disable an account; its sessions end. Audited."""
    account.active = False
    account.session_epoch += 1
    audit.record(s, actor, "web.account_disabled", f"account:{account.id}")


def accounts(s: Session) -> list[WebAccount]:
    """Every account, by user name."""
    return list(s.scalars(select(WebAccount).order_by(WebAccount.username)))


def sync_account(s: Session, person: Person, actor: str) -> None:
    """Keep a person's web account in step with the directory after an admin's change: a deactivated
    person's sessions end; the account takes the role the person's roles now give, its sessions end
    when that changes, and with no console role left it is disabled. Audited when it changes."""
    account = s.scalars(select(WebAccount).where(WebAccount.person_id == person.id)).first()
    if account is None:
        return
    if not person.active:
        # load_viewer refuses them already; the epoch makes sure no session of theirs survives a reactivation.
        account.session_epoch += 1
        return
    role = role_for(person)
    if role is None:
        if account.active:
            disable_account(s, account, actor)
        return
    if role is not account.role:
        audit.record(s, actor, "web.account_role", f"account:{account.id}", old=account.role.value, new=role.value)
        account.role = role
        account.session_epoch += 1
