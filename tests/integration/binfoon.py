"""The application on a phone lab: a database, the directory, and helpers to script calls."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.app import BinfoonApp
from ivr.config import Settings
from ivr.media.compare import read_wav_mono
from ivr.media.voice import PromptRenderer
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.timeline import Timeline
from ivr.lab.network import CallerScript, HangUp, Listen, Press, Speak
from storage.db import session_scope
from storage.models import Campaign
from ivr.domain.vocabulary import CampaignStatus, Urgency
from tests.world import OFFICER_PIN, World, build_world

PROJECT_DIR = Path(__file__).resolve().parents[2]


@dataclass
class Binfoon:
    """A running application on a lab, with its directory."""

    app: BinfoonApp
    lab: PhoneLab
    world: World
    settings: Settings
    #: What the application did and when (its observer).
    timeline: Timeline


def quiet_hours_away_from_now(tz: dt.tzinfo) -> str:
    """Quiet hours that do not hold a test's preventive calls or review rounds, whenever it runs (CI runs
    at night too); a test about quiet hours sets its own."""
    hour = dt.datetime.now(tz).hour
    return f"{(hour + 3) % 24:02d}:00-{(hour + 4) % 24:02d}:00"


def test_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a test: data under ``tmp_path``, quick timeouts, and no speech model unless the test
    names one (a model installed in this machine's cache, by `make demo` or `make bench`, would
    otherwise transcribe every test's recordings and load the machine the other tests share)."""
    base = Settings(data_dir=tmp_path / "var", key_timeout_s=4.0, review_ring_timeout_s=3.0,
                    record_max_s=60, review_retry_after_s=3600.0,
                    speech_model_path=str(tmp_path / "no-speech-model"))
    base = dataclasses.replace(base, quiet_hours=quiet_hours_away_from_now(base.tz))
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


async def start_binfoon(lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer, *, world: World | None = None,
                        database: str | None = None, **settings: object) -> Binfoon:
    """Build the directory (unless given) in ``database`` (the ``database`` fixture's URL; SQLite in
    ``tmp_path`` by default) and start the application on ``lab``."""
    if database is None:
        database = world.engine.url.render_as_string(hide_password=False) if world \
            else f"sqlite:///{tmp_path / 'binfoon.db'}"
    config = test_settings(tmp_path, database_url=database, **settings)
    world = world or build_world(config.database_url, config.data_dir / "recordings")
    timeline = Timeline()
    app = BinfoonApp.on_instance(config, world.engine, lab.asterisk, lab.ami, lab.app,
                                 dial_template=lab.dial_template, renderer=renderer, observer=timeline)
    await app.start()
    return Binfoon(app, lab, world, config, timeline)


def officer_script(speech: Path, *, pin: str = OFFICER_PIN, bin_number: int = 12, urgency: str = "1",
                   final: str = "3") -> CallerScript:
    """An officer who listens to each prompt, then answers it; ``final`` is the menu key (3 sends)."""
    return CallerScript.of(
        Listen(), Press(pin + "#"),
        Listen(), Press(f"{bin_number}#"),
        Listen(), Press("1"),          # "you chose BIN 12, Kerkwijk; 1 if right"
        Listen(), Press(urgency),
        Listen(), Speak(speech), Press("#"),
        Listen(), Press(final),
        Listen(), HangUp(),
    )


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite gives naive UTC datetimes back."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


async def submit_recorded(binfoon: Binfoon, clip: Path, urgency: Urgency | None = None, *, chain: bool = True) -> int:
    """A message for BIN 12 with ``clip`` as its recording, submitted as if the officer pressed 3: the
    take and the submission go on to the chain's next steps (transcript, review) as the police line's
    do, unless ``chain`` is false (the application is stopped: another process picks them up)."""
    from ivr.telephony.call import Recorded
    from ivr.police_line.store import Officer
    from ivr.domain.vocabulary import Urgency

    desk = binfoon.app.desk
    world = binfoon.world
    message_id = await desk.create_draft(Officer(world.officer_id, "P", "nl", None), world.bin_id,
                                         urgency or Urgency.URGENT)
    spool = binfoon.settings.data_dir / f"spool-{message_id}.wav"
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_bytes(clip.read_bytes())
    take = await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    await desk.submit(message_id, 1, "test")
    if chain:
        binfoon.app.chain.take_kept(message_id, take.recording_id)
        binfoon.app.chain.submitted(message_id)
    return message_id


def wav_seconds(path: Path) -> float:
    """How long a WAV file plays, in seconds."""
    samples, rate = read_wav_mono(path)
    return len(samples) / rate


async def message_seconds(renderer: PromptRenderer, clip: Path) -> float:
    """How long after the answer a member has heard the message (AMD + urgent header + ``clip``)."""
    header = await renderer.wav("member_header_urgent", "nl")
    return 4.0 + wav_seconds(header) + wav_seconds(clip)


async def campaign_done(binfoon: Binfoon, timeout_s: float) -> Campaign:
    """Wait until the (first) campaign is done; on time-out, fail with its counts so far."""
    from ivr.delivery.report import campaign_report

    def first_campaign() -> Campaign | None:
        with session_scope(binfoon.world.engine) as s:
            return s.scalars(select(Campaign)).first()

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        # Off the loop: a query waiting for SQLite's write lock would stall the loop it measures.
        campaign = await asyncio.to_thread(first_campaign)
        if campaign is not None and campaign.status is CampaignStatus.DONE:
            return campaign
        if asyncio.get_running_loop().time() > deadline:
            report = campaign_report(binfoon.world.engine, campaign.id, binfoon.app.campaigns.policies,
                                     dt.datetime.now(dt.timezone.utc)) if campaign else None
            counts = report.counts() if report else None
            raise AssertionError(f"campaign not done after {timeout_s} s: {counts}")
        await asyncio.sleep(0.25)


def serve_process(lab: PhoneLab, db_url: str, data_dir: Path, log: Path, **settings: str) -> "subprocess.Popen[bytes]":
    """``binfoon serve`` in its own process on ``lab``'s Asterisk, its output appended to ``log``;
    ``settings`` are extra ``BINFOON_*`` values (``max_channels="20"`` ...). It runs as root: these tests
    pull the plug on it, and their folders are pytest's 0700 ones; running as the service user is
    tests/integration/test_privileges.py's."""
    env = {**os.environ, "BINFOON_DATABASE_URL": db_url, "BINFOON_DATA_DIR": str(data_dir),
           "BINFOON_AGI_PORT": str(lab.app.port), "BINFOON_DIAL_TEMPLATE": lab.dial_template,
           "BINFOON_CALLER_ID_NUMBER": "+3250000000", "BINFOON_CONFIG": os.devnull,
           "BINFOON_MEMBER_RING_TIMEOUT_S": "5", "BINFOON_REVIEW_RING_TIMEOUT_S": "1",
           "BINFOON_URGENT_RETRY_AFTER_S": "1", "BINFOON_NO_KEY_RETRY_AFTER_S": "1", "BINFOON_KEY_TIMEOUT_S": "6",
           "BINFOON_SERVICE_USER": "root", "BINFOON_SPEECH_MODEL_PATH": str(data_dir / "no-speech-model"),
           # No web console unless asked: its default port (8480) is anybody's, e.g. the demo's, which
           # runs beside the parallel tests (seen: this service exited "Address already in use").
           "BINFOON_WEB_PORT": "0",
           **{f"BINFOON_{key.upper()}": value for key, value in settings.items()}}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ivr", "serve", "--name", lab.asterisk.options.name,
             "--instance-dir", str(lab.asterisk.run_dir.parent)],
            cwd=PROJECT_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(process: "subprocess.Popen[bytes]") -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()



def watch_once(binfoon: Binfoon, campaign_id: int, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> str:
    """What the real ``binfoon campaign watch ID --once`` prints for ``binfoon``'s database."""
    from ivr.cli import main

    monkeypatch.setenv("BINFOON_DATABASE_URL", binfoon.settings.resolved_database_url)
    monkeypatch.setenv("BINFOON_DATA_DIR", str(binfoon.settings.data_dir))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    capsys.readouterr()
    assert main(["campaign", "watch", str(campaign_id), "--once"]) == 0
    return capsys.readouterr().out
