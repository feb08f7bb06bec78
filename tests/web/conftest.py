"""The web console in-process: a small directory, four accounts, a Starlette TestClient."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from ivr.config import Settings
from ivr.directory.accounts import create_account
from ivr.police_line.store import MessageDesk
from ivr.web.console import Console
from ivr.web.routes import create_app
from storage.db import open_database, session_scope
from storage.models import Base, Bin, BinStreet, Person, PhoneNumber, RoleAssignment
from ivr.domain.vocabulary import Language, PhoneRank, Role, Urgency
from storage.recordings import RecordingStore
from tests.conftest import SHARED_DIR
from tests.world import OTHER_ZONE_BIN, World, build_world

PASSWORD = "correct horse battery"
CLIP = SHARED_DIR / "audio" / "espeak-nl" / "01.wav"


@dataclass
class Site:
    """The console under test and handles on its directory."""

    console: Console
    world: World
    engine: Engine
    settings: Settings
    tmp: Path
    members: list[int]

    def client(self) -> TestClient:
        """A browser without cookies that does not follow redirects."""
        return TestClient(create_app(self.console, "test-secret-key"), follow_redirects=False)

    def signed_in(self, username: str, password: str = PASSWORD) -> TestClient:
        """A browser signed in as ``username``."""
        client = self.client()
        response = sign_in(client, username, password)
        assert response.status_code == 303, response.text
        return client

    def message(self, bin_number: int = 12, text: str = "Opgelet: inbraken in de Kerkstraat.") -> int:
        """A typed message with a real recording, submitted (as ``binfoon message send`` leaves it)."""
        copy = self.tmp / f"clip-{text.__hash__() & 0xffff}-{bin_number}.wav"
        shutil.copyfile(CLIP, copy)
        return self.console.desk.submit_text_message(bin_number, Urgency.URGENT, text, copy, "test")


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


def sign_in(client: TestClient, username: str, password: str) -> object:
    """Fill in and post the sign-in form."""
    page = client.get("/signin")
    return client.post("/signin", data={"csrf": csrf_of(page.text), "username": username, "password": password,
                                        "next": "/"})


def dump(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (to show that nothing was written)."""
    with engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(select(t)).all()), key=repr)
                for t in Base.metadata.sorted_tables}


def _person(s: object, name: str, phone: str, role: Role, **where: int) -> Person:
    person = Person(name=name, language=Language.NL)
    person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=phone))
    person.roles.append(RoleAssignment(role=role, **where))
    s.add(person)  # type: ignore[attr-defined]
    return person


@dataclass(frozen=True)
class Template:
    """A directory with accounts, built once per session (argon2 is slow on purpose) and copied per test."""

    db: Path
    world: World
    members: list[int]


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    folder = tmp_path_factory.mktemp("web-template")
    world = build_world(f"sqlite:///{folder / 'binfoon.db'}", folder / "recordings")
    engine = world.engine
    with session_scope(engine) as s:
        bin12 = s.scalars(select(Bin).where(Bin.number == 12)).one()
        bin12.streets.append(BinStreet(street="Kerkstraat"))
        bin99 = s.scalars(select(Bin).where(Bin.number == OTHER_ZONE_BIN)).one()
        admin = _person(s, "Beheerder Admin", "+32470000900", Role.ADMIN)
        coordinator99 = _person(s, "Coördinator Elders", "+32470000901", Role.COORDINATOR, bin_id=bin99.id)
        members = [_person(s, f"Huishouden {i}", f"+3293000{i:03d}", Role.MEMBER, bin_id=bin12.id)
                   for i in range(1, 3)]
        s.flush()
        create_account(s, world.officer_id, "police", PASSWORD, "test")
        create_account(s, world.coordinators[0][0], "coord12", PASSWORD, "test")
        create_account(s, coordinator99.id, "coord99", PASSWORD, "test")
        create_account(s, admin.id, "admin", PASSWORD, "test")
        member_ids = [m.id for m in members]
    engine.dispose()  # SQLite folds its WAL into the file: the file alone is the whole database
    return Template(folder / "binfoon.db", world, member_ids)


@pytest.fixture
def site(tmp_path: Path, template: Template) -> Iterator[Site]:
    settings = Settings(data_dir=tmp_path / "var", web_upload_max_bytes=300_000, web_signin_max_failures=3,
                        web_ip_max_failures=6)
    shutil.copyfile(template.db, tmp_path / "binfoon.db")
    engine = open_database(f"sqlite:///{tmp_path / 'binfoon.db'}")
    world = dataclasses.replace(template.world, engine=engine,
                                desk=MessageDesk(engine, RecordingStore(settings.data_dir / "recordings")))
    console = Console.standalone(settings, engine)
    yield Site(console, world, engine, settings, tmp_path, list(template.members))
    engine.dispose()
