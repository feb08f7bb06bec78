"""Prompt rendering and publishing, for real: espeak-ng in a process pool, WAV files on disk.

Rendered audio must be what Asterisk plays without transcoding (8 kHz, mono, 16-bit), must speak
(not silence), must be rendered once and then reused, and must never be rendered on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import stat
import time
import wave
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from ivr.commands import prompts as prompts_command
from ivr.config import Settings
from ivr.media import tts, voice
from ivr.media.compare import read_wav_mono
from ivr.media.voice import PromptRenderer, Voice
from ivr.media.prompts import LANGUAGES, load_catalogue, placeholders

CATALOGUE = load_catalogue()
STATIC = [p for p, texts in CATALOGUE.items() if not placeholders(texts["nl"])]
ASTERISK_USER = (65534, 65534)  # any unprivileged (uid, gid): we chown to it when running as root


@pytest.fixture
def renderer(tmp_path: Path) -> Iterator[PromptRenderer]:
    with PromptRenderer(tmp_path / "cache", max_workers=2) as r:
        yield r


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Stands for Asterisk's root directory (a chroot): Asterisk sees ``root/x`` as ``/x``."""
    return tmp_path / "asterisk-root"


@pytest.fixture
def voice_(renderer: PromptRenderer, root: Path) -> Iterator[Voice]:
    sounds = root / "var" / "spool" / "asterisk" / "sounds" / "binfoon"
    # A strict umask (as under some service managers): modes must be set, not inherited.
    umask = os.umask(0o077)
    try:
        yield Voice(renderer, sounds, lambda host: "/" + str(Path(host).relative_to(root)),
                    owner=ASTERISK_USER)
    finally:
        os.umask(umask)


def shape(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth()


def seconds(path: Path) -> float:
    samples, rate_hz = read_wav_mono(path)
    return len(samples) / rate_hz


def assert_speech(path: Path, min_s: float = 0.3) -> None:
    """An 8 kHz mono 16-bit WAV that holds sound, not silence."""
    assert shape(path) == (8000, 1, 2), path
    samples, rate_hz = read_wav_mono(path)
    assert len(samples) / rate_hz >= min_s, path
    rms = float(np.sqrt(np.mean(samples**2)))
    assert rms > 0.02, (path, rms)  # espeak-ng speech is around 0.1; silence is 0


def leftovers(*dirs: Path) -> list[Path]:
    """Temporary files a crashed or careless write would leave behind."""
    return [p for d in dirs if d.exists() for p in d.rglob("*") if p.is_file() and ".tmp" in p.name]


# --- PromptRenderer ----------------------------------------------------------------------------


def test_render_all_renders_every_static_prompt_once(renderer: PromptRenderer) -> None:
    assert renderer.render_all() == len(STATIC) * len(LANGUAGES)
    for prompt_id in STATIC:
        for language in LANGUAGES:
            path = renderer.path_for(prompt_id, language)
            assert re.fullmatch(rf"{prompt_id}-[0-9a-f]{{12}}\.wav", path.name), path
            assert path.parent == renderer.cache_dir / language
            assert_speech(path, min_s=0.2)
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # Prompts with placeholders wait for their values: nothing rendered for them.
    rendered = {p.name.rsplit("-", 1)[0] for p in renderer.cache_dir.rglob("*.wav")}
    assert rendered == set(STATIC)
    before = {p: p.stat().st_mtime_ns for p in renderer.cache_dir.rglob("*.wav")}
    assert renderer.render_all() == 0
    assert {p: p.stat().st_mtime_ns for p in renderer.cache_dir.rglob("*.wav")} == before
    assert renderer.renders == len(STATIC) * len(LANGUAGES)
    assert leftovers(renderer.cache_dir) == []


def test_render_all_only_for_the_languages_asked(renderer: PromptRenderer) -> None:
    assert renderer.render_all(["fr"]) == len(STATIC)
    assert sorted(p.name for p in renderer.cache_dir.iterdir()) == ["fr"]
    assert renderer.render_all(["fr", "de"]) == len(STATIC)
    with pytest.raises(ValueError, match="unknown language 'en'"):
        renderer.render_all(["en"])


async def test_render_all_refuses_to_block_the_event_loop(renderer: PromptRenderer) -> None:
    with pytest.raises(RuntimeError, match="blocks"):
        renderer.render_all()
    assert await asyncio.to_thread(renderer.render_all, ["nl"]) == len(STATIC)


async def test_a_prompt_is_rendered_on_demand_then_reused(renderer: PromptRenderer, tmp_path: Path) -> None:
    path = await renderer.wav("police_enter_pin", "nl")
    assert path == renderer.path_for("police_enter_pin", "nl") and path.exists()
    assert_speech(path, min_s=2.0)
    assert renderer.renders == 1
    before = path.stat()
    # A second renderer on the same cache (the next start of the app) renders nothing.
    with PromptRenderer(tmp_path / "cache") as again:
        assert await again.wav("police_enter_pin", "nl") == path
        assert again.renders == 0
    after = path.stat()
    # Not copied again (the same inode); only touched, so that the stale-copy sweep sees it in use.
    assert after.st_ino == before.st_ino and after.st_mtime_ns >= before.st_mtime_ns


async def test_placeholders_are_filled_into_the_spoken_text(renderer: PromptRenderer) -> None:
    assert renderer.text("police_bin_chosen", "nl", number=12, name="Noord") == "U koos BIN 12, Noord."
    assert renderer.text("review_forwarded_later", "de", hour=21, minute=30) == (
        "Die Nachricht wird um 21 Uhr 30 gesendet. Vielen Dank."
    )
    urgent = renderer.text("word_urgent", "fr")
    header = renderer.text("review_header", "fr", urgency=urgent, zone="Gent", hour=21, minute=30, bin=12)
    assert header == "Message urgent de la zone de police Gent, enregistré à 21 heures 30, pour le BIN 12."
    short = await renderer.wav("police_bin_chosen", "nl", number=12, name="Noord")
    long = await renderer.wav("police_bin_chosen", "nl", number=12,
                              name="Sint-Amandsberg, Oostakker, Desteldonk en Mendonk")
    assert short != long and short.parent == long.parent == renderer.cache_dir / "nl"
    assert short.name.startswith("police_bin_chosen-") and long.name.startswith("police_bin_chosen-")
    assert_speech(short, min_s=1.0)
    assert_speech(long)
    # The values are spoken: the longer name takes seconds longer to say.
    assert seconds(long) > seconds(short) + 1.5
    assert renderer.path_for("police_bin_chosen", "nl", number="12", name="Noord") == short  # str(value)


async def test_concurrent_requests_for_one_text_render_it_once(renderer: PromptRenderer) -> None:
    values = {"urgency": renderer.text("word_preventive", "de"), "zone": "Gent", "hour": 9, "minute": 15,
              "bin": 7}
    paths = await asyncio.gather(*(renderer.wav("review_header", "de", **values) for _ in range(6)))
    assert len(set(paths)) == 1
    assert renderer.renders == 1
    assert_speech(paths[0], min_s=3.0)
    assert leftovers(renderer.cache_dir) == []


@pytest.mark.serial
async def test_rendering_runs_in_a_worker_process_and_never_stalls_the_loop(
    renderer: PromptRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Poisoned in this process only: a render that ran here (on the loop) would fail.
    def poisoned(*args: object, **kwargs: object) -> None:
        raise AssertionError("speech synthesis ran in the event loop's process")

    monkeypatch.setattr(tts, "synthesize", poisoned)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    sentence = "Er werd een verdachte bestelwagen gezien in de Dorpsstraat, ga niet naar buiten."
    long_text = " ".join([sentence] * 40)
    paths = await asyncio.gather(
        renderer.text_wav(long_text, "nl"),
        *(renderer.wav(p, "fr") for p in STATIC[:6]),
    )
    stop.set()
    await tick
    assert_speech(paths[0], min_s=60.0)
    assert max(gaps) < 0.1, f"the event loop stalled {max(gaps) * 1000:.0f} ms"


async def test_free_text_is_rendered_and_cached(renderer: PromptRenderer) -> None:
    message = "Let op: verdachte wagen, grijze Volkswagen, in de Dorpsstraat. Bel 101 bij twijfel."
    path = await renderer.text_wav(message, "nl")
    assert re.fullmatch(r"text-[0-9a-f]{12}\.wav", path.name) and path.parent.name == "nl"
    assert_speech(path, min_s=3.0)
    assert await renderer.text_wav(message, "nl") == path and renderer.renders == 1
    assert await renderer.text_wav(message, "fr") != path  # another voice, another file
    with pytest.raises(ValueError, match="empty"):
        await renderer.text_wav("   ", "nl")
    with pytest.raises(ValueError, match="unknown language 'en'"):
        await renderer.text_wav(message, "en")


async def test_a_free_text_is_police_content_rendered_privately_and_swept(renderer: PromptRenderer) -> None:
    """Issue 14 item 7: a typed alert (or its preview) is not left in the shared, world-readable prompt cache."""
    path = await renderer.text_wav("Opgelet: inbraak gemeld in de Kerkstraat.", "nl")
    assert not path.is_relative_to(renderer.cache_dir) and not list(renderer.cache_dir.rglob("text-*"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (path.parent, path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.geteuid()
    assert renderer.sweep_texts(now=path.stat().st_mtime + 1) == 0 and path.exists()
    assert renderer.sweep_texts(now=path.stat().st_mtime + 3600) == 1 and not path.exists()


async def test_mistakes_are_clear_errors_naming_the_prompt(renderer: PromptRenderer) -> None:
    with pytest.raises(ValueError, match=r"unknown prompt 'police_enter_pn'.*'police_enter_pin'"):
        await renderer.wav("police_enter_pn", "nl")
    with pytest.raises(ValueError, match=r"prompt 'police_sent': unknown language 'en'"):
        renderer.path_for("police_sent", "en")
    with pytest.raises(ValueError, match=r"prompt 'police_bin_chosen': missing value\(s\) for name "):
        await renderer.wav("police_bin_chosen", "nl", number=12)
    with pytest.raises(ValueError, match=r"prompt 'police_bin_chosen': missing value\(s\) for name, number"):
        renderer.path_for("police_bin_chosen", "nl", number=None)
    with pytest.raises(ValueError, match=r"'police_sent': no placeholder\(s\) name \(it takes no values\)"):
        await renderer.wav("police_sent", "nl", name="Noord")
    with pytest.raises(ValueError, match=r"prompt 'review_forwarded_later': no placeholder\(s\) hours"):
        renderer.text("review_forwarded_later", "nl", hour=21, minute=30, hours=21)
    assert renderer.renders == 0 and not renderer.cache_dir.exists()


# --- Voice -------------------------------------------------------------------------------------


def assert_published(host: Path, owner: tuple[int, int]) -> None:
    """Readable by Asterisk and nobody else: 0640 file in 0750 directories, owned by Asterisk's user when root."""
    assert stat.S_IMODE(host.stat().st_mode) == 0o640
    expected = owner if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    assert (host.stat().st_uid, host.stat().st_gid) == expected
    for directory in (host.parent, host.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750
        assert (directory.stat().st_uid, directory.stat().st_gid) == expected


async def test_a_prompt_is_published_where_asterisk_can_play_it(voice_: Voice, root: Path) -> None:
    name = await voice_.prompt("police_sent", "fr")
    assert re.fullmatch(r"/var/spool/asterisk/sounds/binfoon/prompts/fr/police_sent-[0-9a-f]{12}", name), name
    host = root / (name.lstrip("/") + ".wav")
    assert host.read_bytes() == voice_.renderer.path_for("police_sent", "fr").read_bytes()
    assert_published(host, ASTERISK_USER)
    sounds = voice_.sounds_dir.stat()  # sounds_dir itself too
    assert stat.S_IMODE(sounds.st_mode) == 0o750
    assert os.geteuid() != 0 or (sounds.st_uid, sounds.st_gid) == ASTERISK_USER
    inode = host.stat().st_ino
    assert await voice_.prompt("police_sent", "fr") == name and host.stat().st_ino == inode
    dynamic = await voice_.prompt("review_forwarded_later", "nl", hour=21, minute=30)
    assert dynamic.startswith("/var/spool/asterisk/sounds/binfoon/prompts/nl/review_forwarded_later-")
    assert_speech(root / (dynamic.lstrip("/") + ".wav"), min_s=2.0)
    with pytest.raises(ValueError, match="'review_forwarded_later': missing"):
        await voice_.prompt("review_forwarded_later", "nl", hour=21)


def _recording(path: Path, rate_hz: int = 8000, channels: int = 1, seed: int = 7) -> Path:
    """A stand-in for an officer's recording: 1.5 s of noise with a tone, as a WAV."""
    rng = np.random.default_rng(seed)
    n = int(1.5 * rate_hz)
    samples = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate_hz) + 0.05 * rng.standard_normal(n)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(np.repeat(pcm, channels).tobytes())
    return path


async def test_audio_is_published_byte_for_byte_and_only_once(
    voice_: Voice, root: Path, tmp_path: Path
) -> None:
    source = _recording(tmp_path / "alert-17.wav")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    names = await asyncio.gather(*(voice_.audio(source) for _ in range(4)))
    assert names == [f"/var/spool/asterisk/sounds/binfoon/audio/{digest}"] * 4
    host = root / (names[0].lstrip("/") + ".wav")
    assert host.read_bytes() == source.read_bytes()
    assert_published(host, ASTERISK_USER)
    before = host.stat()
    # The same content under another name is the same sound, not a second copy.
    twin = tmp_path / "copy-of-alert-17.wav"
    twin.write_bytes(source.read_bytes())
    assert await voice_.audio(twin) == names[0]
    assert await voice_.audio(source) == names[0]
    after = host.stat()
    # Not copied again (the same inode); only touched, so that the stale-copy sweep sees it in use.
    assert after.st_ino == before.st_ino and after.st_mtime_ns >= before.st_mtime_ns
    assert len(list(host.parent.iterdir())) == 1  # one file, no temporary left behind
    other = await voice_.audio(_recording(tmp_path / "alert-18.wav", seed=8))
    assert other != names[0]


async def test_audio_asterisk_cannot_play_as_is_is_refused(voice_: Voice, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        await voice_.audio(_recording(tmp_path / "wide.wav", rate_hz=16000))
    with pytest.raises(ValueError, match="2 channel"):
        await voice_.audio(_recording(tmp_path / "stereo.wav", channels=2))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    with pytest.raises(ValueError, match="not a WAV"):
        await voice_.audio(junk)
    assert not voice_.sounds_dir.exists()


async def test_free_text_is_published_as_audio(voice_: Voice, root: Path) -> None:
    name = await voice_.free_text("Opgelet, inbraak gemeld in de Kerkstraat.", "nl")
    assert re.fullmatch(r"/var/spool/asterisk/sounds/binfoon/audio/[0-9a-f]{64}", name)
    assert_speech(root / (name.lstrip("/") + ".wav"), min_s=1.5)


async def test_the_beep(voice_: Voice, root: Path) -> None:
    name = await voice_.beep()
    assert name.startswith("/var/spool/asterisk/sounds/binfoon/tones/beep-")
    host = root / (name.lstrip("/") + ".wav")
    assert_published(host, ASTERISK_USER)
    assert shape(host) == (8000, 1, 2)
    samples, rate_hz = read_wav_mono(host)
    assert len(samples) == int(0.4 * rate_hz)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = float(np.fft.rfftfreq(len(samples), 1 / rate_hz)[np.argmax(spectrum)])
    assert abs(peak_hz - 1000) < 5, peak_hz
    # Pure: nearly all the energy within 50 Hz of the tone.
    freqs = np.fft.rfftfreq(len(samples), 1 / rate_hz)
    assert spectrum[np.abs(freqs - 1000) < 50].__pow__(2).sum() / (spectrum**2).sum() > 0.99
    middle = samples[int(0.1 * rate_hz): int(0.3 * rate_hz)]
    assert 0.45 < np.abs(middle).max() < 0.52  # -6 dBFS
    assert np.abs(samples[:8]).max() < 0.1 and np.abs(samples[-8:]).max() < 0.1  # faded: no click
    assert await voice_.beep() == name


# --- `binfoon prompts build` -------------------------------------------------------------------


def test_prompts_build_renders_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(voice, "DEFAULT_CACHE_DIR", tmp_path / "rendered")
    parser = argparse.ArgumentParser()
    prompts_command.register(parser.add_subparsers(dest="area", required=True))

    def build(*argv: str) -> str:
        args = parser.parse_args(["prompts", "build", *argv])
        assert args.func(Settings(), args) == 0
        return capsys.readouterr().out

    out = build("--language", "de")
    assert f"rendered {len(STATIC)} prompt(s) (de) into {tmp_path / 'rendered'}" in out
    assert "review_header" in out  # named among the prompts rendered during calls
    assert len(list((tmp_path / "rendered" / "de").glob("*.wav"))) == len(STATIC)
    out = build()
    assert f"rendered {2 * len(STATIC)} prompt(s) (nl, fr, de)" in out
    assert f"{len(STATIC)} already there" in out
    assert "rendered 0 prompt(s)" in build("--language", "nl", "--language", "fr")
    with pytest.raises(SystemExit):
        parser.parse_args(["prompts", "build", "--language", "en"])
