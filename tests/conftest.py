"""Shared fixtures: the real Asterisk (installed by `make test`), private instances and phone labs."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest

from ivr.asterisk.install import AsteriskInstallError, AsteriskRuntime, find_runtime
from ivr.asterisk.instance import AsteriskInstance, InstanceOptions
from ivr.config import load_settings
from ivr.lab.phone_lab import PhoneLab

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
def renderer() -> Iterator["PromptRenderer"]:
    """The prompt renderer (its cache, prompts/rendered/, is shared by every test and kept between runs)."""
    from ivr.media.voice import PromptRenderer

    rendered = PromptRenderer(PROJECT_DIR / "prompts" / "rendered")
    try:
        yield rendered
    finally:
        rendered.close()
