"""Playable audio for the call flows: catalogue prompts rendered to WAV, published for Asterisk.

Rules of this module:

- The catalogue (``prompts/catalogue.toml``) is the only source of spoken words; a flow asks for
  a prompt id, a language and the placeholder values, never for a file name.
- Speech synthesis and pydub run in a process pool, never on the event loop; even submitting to
  the pool happens in a thread, because starting a worker process blocks.
- A rendered file is named by the sha256 of what decides its sound (voice, rate, format,
  language, final text), so the cache never serves a stale text and never needs invalidating.
- Every file appears atomically (temporary name, then ``os.replace``): Asterisk and concurrent
  renderers never see half a WAV, and a file that exists is complete.
- Asterisk runs as an unprivileged user inside its own root: ``Voice`` copies what it plays into a
  directory inside that root (0750 directories, 0640 files: police audio must not be world-readable;
  owned by Asterisk's user when we run as root, else in the group Asterisk reads the sounds
  directory through) and hands out sound names as Asterisk sees them (``inner_path``, without ``.wav``).
- Free texts (a typed police message, the send form's preview) are police content, not catalogue
  prompts: they are rendered into a private 0700 directory (``storage.sealed.private_dir``), never
  into the shared cache, and removed when unused for ``TEXT_TTL_S`` or when the message is purged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import difflib
import functools
import hashlib
import logging
import multiprocessing
import os
import shutil
import threading
import time
import uuid
import wave
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Sequence

from ivr.media.tts import TELEPHONE_RATE_HZ, VOICES
from ivr.media.prompts import CATALOGUE, LANGUAGES, check_prompt, load_catalogue
from storage.sealed import private_dir

log = logging.getLogger(__name__)

#: Where rendered prompts are cached (build output, git-ignored).
DEFAULT_CACHE_DIR = CATALOGUE.parent / "rendered"
#: Speaking rate (words per minute): espeak-ng's default 175 is hard to follow on a phone line.
RATE_WPM = 150
#: Part of every cache key: change it when the rendering pipeline changes how a text sounds.
RENDER_FORMAT = "espeak-ng+pydub/8000Hz/mono/s16/v1"

BEEP_HZ = 1000
BEEP_MS = 400
BEEP_DBFS = -6.0
#: Short fades so the tone starts and stops without a click.
BEEP_FADE_MS = 10
#: A rendered free text (police content) not asked for this long is removed from the private directory.
TEXT_TTL_S = 600.0
#: Published files: readable by Asterisk (its user or its group), by nobody else.
PUBLISHED_FILE_MODE = 0o640
PUBLISHED_DIR_MODE = 0o750
#: Held while a published file is looked at and then kept (``Voice._publish``) or removed (the sweep,
#: ``ivr.archive.at_rest.unpublish_stale``, in a worker thread): a name handed to Asterisk always
#: points at a file. Each holder does one stat and one touch or unlink: microseconds.
PUBLISH_LOCK = threading.Lock()


def _digest(*parts: object) -> str:
    return hashlib.sha256("\n".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def _tmp_beside(target: Path) -> Path:
    """A unique hidden temporary name in the target's directory (same file system: atomic replace)."""
    return target.with_name(f".{target.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.wav")


# --- Worker-process functions (module level so the pool can pickle them) ---------------------


def _render_speech(text: str, language: str, target: Path, mode: int = 0o644) -> Path:
    """Speak ``text`` into ``target`` (8 kHz mono 16-bit WAV) with ``mode``, atomically. Runs in a worker."""
    from ivr.media.tts import synthesize

    tmp = _tmp_beside(target)
    try:
        synthesize(text, language, tmp, rate_wpm=RATE_WPM)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".part.wav").unlink(missing_ok=True)  # synthesize's own temporary
    return target


def _render_beep(target: Path) -> Path:
    """A ``BEEP_HZ`` sine of ``BEEP_MS`` at ``BEEP_DBFS``, 8 kHz mono 16-bit, atomically. Runs in a worker."""
    from pydub.generators import Sine

    tone = Sine(BEEP_HZ, sample_rate=TELEPHONE_RATE_HZ, bit_depth=16).to_audio_segment(
        duration=BEEP_MS, volume=BEEP_DBFS
    )
    tone = tone.set_channels(1).set_sample_width(2).fade_in(BEEP_FADE_MS).fade_out(BEEP_FADE_MS)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(target)
    try:
        tone.export(tmp, format="wav")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _telephone_wav_digest(wav: Path) -> str:
    """sha256 of a WAV file Asterisk's ``format_wav`` plays as is (8 kHz mono 16-bit), else ValueError."""
    try:
        with wave.open(str(wav), "rb") as w:
            shape = (w.getframerate(), w.getnchannels(), w.getsampwidth())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{wav}: not a WAV file ({exc})") from exc
    if shape != (TELEPHONE_RATE_HZ, 1, 2):
        raise ValueError(
            f"{wav}: Asterisk plays 8000 Hz mono 16-bit WAV as is; this one is "
            f"{shape[0]} Hz, {shape[1]} channel(s), {8 * shape[2]}-bit (convert it with "
            "ivr.media.tts.to_telephone_wav)"
        )
    with open(wav, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class PromptRenderer:
    """Catalogue text -> 8 kHz mono 16-bit WAV files (pyttsx3/espeak-ng via
    ``ivr.media.tts.synthesize``), cached on disk.

    The cache is ``<cache_dir>/<language>/<prompt_id>-<hash12>.wav`` (free texts:
    ``text-<hash12>.wav``; the beep: ``tones/beep-<hash12>.wav``), ``hash12`` being the start of
    the sha256 of voice, rate, format, language and the final text.
    """

    def __init__(
        self,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        catalogue: dict[str, dict[str, str]] | None = None,
        *,
        max_workers: int | None = None,
    ) -> None:
        """``catalogue`` defaults to ``prompts/catalogue.toml``; a given one is checked the same way.
        ``max_workers`` bounds the rendering processes (default: up to 4, never more than the CPUs)."""
        self.cache_dir = Path(cache_dir)
        self.catalogue = load_catalogue() if catalogue is None else catalogue
        self._placeholders: dict[str, frozenset[str]] = {}
        for prompt_id, texts in self.catalogue.items():
            self._placeholders[prompt_id] = check_prompt(prompt_id, texts)
        self.max_workers = max_workers or min(4, os.cpu_count() or 1)
        #: How many files this renderer has rendered (not found in the cache) so far.
        self.renders = 0
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pending: dict[Path, asyncio.Task[Path]] = {}

    # --- texts and where they live (pure, cheap) ------------------------------------------

    def placeholders(self, prompt_id: str) -> frozenset[str]:
        """The placeholder names a prompt needs (the same in every language)."""
        self._texts(prompt_id)
        return self._placeholders[prompt_id]

    def text(self, prompt_id: str, language: str, **values: object) -> str:
        """The final text of a prompt: placeholders filled; every one needed, no others.

        A value is spoken as ``str(value)``; ``None`` counts as missing. To splice one prompt into
        another (an urgency word into a header), pass ``renderer.text(<word id>, language)``.
        """
        texts = self._texts(prompt_id)
        _check_language(language, f"prompt {prompt_id!r}")
        needed = self._placeholders[prompt_id]
        given = {name for name, value in values.items() if value is not None}
        missing = sorted(needed - given)
        extra = sorted(set(values) - needed)
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing value(s) for {', '.join(missing)}")
            if extra:
                problems.append(f"no placeholder(s) {', '.join(extra)}")
            expected = ", ".join(sorted(needed)) or "no values"
            raise ValueError(f"prompt {prompt_id!r}: {'; '.join(problems)} (it takes {expected})")
        return texts[language].format(**values)

    def path_for(self, prompt_id: str, language: str, **values: object) -> Path:
        """Where the WAV of this prompt, in this language, with these values lives (or will)."""
        return self._speech_path(prompt_id, language, self.text(prompt_id, language, **values))

    def text_path(self, text: str, language: str) -> Path:
        """Where the WAV of a free text lives (or will): in the private directory, not the shared cache."""
        _check_language(language, "text")
        if not text.strip():
            raise ValueError("nothing to say: the text is empty")
        return self.text_dir() / language / _speech_file(self.cache_dir, "text", language, text).name

    def text_dir(self) -> Path:
        """The private (0700) directory of rendered free texts, one per cache directory."""
        return private_dir("texts", self.cache_dir)

    def sweep_texts(self, now: float | None = None) -> int:
        """Remove rendered free texts not used for ``TEXT_TTL_S``; how many."""
        now = time.time() if now is None else now
        removed = 0
        for folder, _dirs, files in os.walk(self.text_dir()):
            for name in files:
                path = Path(folder) / name
                try:
                    if now - path.stat().st_mtime >= TEXT_TTL_S:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def beep_path(self) -> Path:
        """Where the beep lives (or will)."""
        key = _digest("beep", BEEP_HZ, BEEP_MS, BEEP_DBFS, BEEP_FADE_MS, TELEPHONE_RATE_HZ)
        return self.cache_dir / "tones" / f"beep-{key[:12]}.wav"

    def _texts(self, prompt_id: str) -> dict[str, str]:
        texts = self.catalogue.get(prompt_id)
        if texts is None:
            close = difflib.get_close_matches(prompt_id, self.catalogue, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown prompt {prompt_id!r}: not in the catalogue{hint}")
        return texts

    def _speech_path(self, stem: str, language: str, text: str) -> Path:
        return _speech_file(self.cache_dir, stem, language, text)

    # --- rendering --------------------------------------------------------------------------

    def render_all(self, languages: Sequence[str] = LANGUAGES) -> int:
        """Render every prompt without placeholders that is not in the cache yet; blocking.

        Returns how many files were rendered (0 when the cache was complete). Call it before the
        event loop runs (``binfoon prompts build``, start-up) or through ``asyncio.to_thread``.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("render_all() blocks: call it before the event loop or via asyncio.to_thread")
        for language in languages:
            _check_language(language, "render_all")
        todo: dict[Path, tuple[str, str]] = {}
        for prompt_id, texts in self.catalogue.items():
            if self._placeholders[prompt_id]:
                continue  # dynamic: rendered when a call needs it, with its values
            for language in languages:
                target = self._speech_path(prompt_id, language, texts[language])
                if not target.exists():
                    todo[target] = (texts[language], language)
        if not todo:
            return 0
        for target in todo:
            target.parent.mkdir(parents=True, exist_ok=True)
        pool = self._executor()
        futures = [pool.submit(_render_speech, text, language, target)
                   for target, (text, language) in todo.items()]
        concurrent.futures.wait(futures)
        try:
            for future in futures:
                future.result()
        except BrokenProcessPool:
            self._discard(pool)
            raise
        self.renders += len(todo)
        log.info("rendered %d prompt(s) into %s", len(todo), self.cache_dir)
        return len(todo)

    async def wav(self, prompt_id: str, language: str, **values: object) -> Path:
        """The rendered WAV of a prompt, rendering it now in the pool if it is not cached."""
        text = self.text(prompt_id, language, **values)
        target = self._speech_path(prompt_id, language, text)
        return await self._once(target, _render_speech, text, language, target)

    async def text_wav(self, text: str, language: str) -> Path:
        """The rendered WAV of any free text (a police message typed instead of spoken), 0600 in the
        private directory; texts unused for ``TEXT_TTL_S`` are removed meanwhile."""
        target = self.text_path(text, language)
        await asyncio.to_thread(self.sweep_texts)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        if target.exists():
            os.utime(target)  # in use: not swept
        return await self._once(target, _render_speech, text, language, target, 0o600)

    async def beep_wav(self) -> Path:
        """The rendered beep (see ``BEEP_*``)."""
        target = self.beep_path()
        return await self._once(target, _render_beep, target)

    async def _once(self, target: Path, render: Callable[..., Path], *args: Any) -> Path:
        """``target`` if it exists, else render it; concurrent requests share one render."""
        if target.exists():
            return target
        loop = asyncio.get_running_loop()
        task = self._pending.get(target)
        if task is None or task.get_loop() is not loop:
            task = loop.create_task(self._in_pool(render, *args))
            self._pending[target] = task
            task.add_done_callback(functools.partial(self._forget, target))
        # shield: one caller giving up (its call hung up) must not cancel the render for the others.
        return await asyncio.shield(task)

    def _forget(self, target: Path, task: asyncio.Task[Path]) -> None:
        if self._pending.get(target) is task:
            del self._pending[target]
        if not task.cancelled():
            task.exception()  # every waiter gets it; this only marks it seen if all waiters left

    async def _in_pool(self, render: Callable[..., Path], *args: Any) -> Path:
        pool = self._executor()
        # submit() may start a worker process (and the fork server): that blocks, so not on the loop.
        future = await asyncio.to_thread(pool.submit, render, *args)
        try:
            result = await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._discard(pool)
            raise
        self.renders += 1
        log.debug("rendered %s", result)
        return result

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                # forkserver: workers never inherit the app's threads, locks or event loop.
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=self.max_workers, mp_context=multiprocessing.get_context("forkserver")
                )
            return self._pool

    def _discard(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        """Drop a broken pool (a worker died) so that the next render starts a fresh one."""
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Shut the pool down (waits for renders in progress); the renderer can be used again."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PromptRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _speech_file(cache_dir: Path, stem: str, language: str, text: str) -> Path:
    key = _digest(RENDER_FORMAT, VOICES[language], RATE_WPM, language, text)
    return cache_dir / language / f"{stem}-{key[:12]}.wav"


def free_text_files(text: str, cache_dir: Path = DEFAULT_CACHE_DIR) -> list[Path]:
    """Every file a free text may have been rendered to, in any language: the private directory and the
    shared cache (where earlier versions put them). What a purge of that text removes."""
    if not text.strip():
        return []
    private = private_dir("texts", cache_dir)
    files = []
    for language in LANGUAGES:
        shared = _speech_file(cache_dir, "text", language, text)
        files += [private / language / shared.name, shared]
    return files


def _check_language(language: str, what: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"{what}: unknown language {language!r} (known: {', '.join(LANGUAGES)})")


class Voice:
    """What one Asterisk can play: publishes rendered prompts and recordings into a directory
    Asterisk can read, and returns sound names for ``STREAM FILE``/``Playback``.

    Layout under ``sounds_dir``: ``prompts/<language>/<prompt_id>-<hash12>.wav``,
    ``audio/<sha256>.wav`` (any WAV, named by its content), ``tones/beep-<hash12>.wav``.
    """

    def __init__(
        self,
        renderer: PromptRenderer,
        sounds_dir: Path,
        inner_path: Callable[[Path], str],
        owner: tuple[int, int] | None = None,
    ) -> None:
        """``sounds_dir`` is a host directory inside Asterisk's root; ``inner_path`` maps a host
        path to the path Asterisk sees (``AsteriskRuntime.inner_path``); ``owner`` is Asterisk's
        (uid, gid) (``AsteriskRuntime.asterisk_user()``), applied when we run as root."""
        self.renderer = renderer
        self.sounds_dir = Path(sounds_dir)
        self.inner_path = inner_path
        self.owner = owner
        self._pending: dict[Path, asyncio.Task[None]] = {}
        self._ready_dirs: set[Path] = set()

    async def prompt(self, prompt_id: str, language: str, **values: object) -> str:
        """The sound name of a prompt (rendered and published if needed), ready for STREAM FILE."""
        wav = await self.renderer.wav(prompt_id, language, **values)
        return await self._publish(wav, self.sounds_dir / "prompts" / language / wav.name)

    async def free_text(self, text: str, language: str) -> str:
        """The sound name of any free text spoken in ``language`` (a written police message)."""
        return await self.audio(await self.renderer.text_wav(text, language))

    async def audio(self, wav: Path) -> str:
        """Publish an 8 kHz mono 16-bit WAV byte for byte, named by its sha256; its sound name.

        The same content always gets the same name and is copied only once.
        """
        digest = await asyncio.to_thread(_telephone_wav_digest, Path(wav))
        return await self._publish(Path(wav), self.sounds_dir / "audio" / f"{digest}.wav")

    async def beep(self) -> str:
        """The sound name of a 1000 Hz, 0.4 s beep (Debian's Asterisk sounds have none)."""
        wav = await self.renderer.beep_wav()
        return await self._publish(wav, self.sounds_dir / "tones" / wav.name)

    async def silence(self, seconds: float) -> str:
        """The sound name of ``seconds`` of digital silence. Played, it is real audio frames; a Wait
        sends none over a Local channel whose other half runs a silence generator (transmit_silence),
        so a far end that records (an answering machine) would not record that time at all."""
        target = self.sounds_dir / "tones" / f"silence-{int(round(seconds * 1000))}ms.wav"
        if not target.exists():
            await asyncio.to_thread(self._write_silence, target, seconds)
        return self.inner_path(target.with_suffix(""))

    def _write_silence(self, target: Path, seconds: float) -> None:
        """Write ``seconds`` of 8 kHz silence to ``target`` atomically. Runs in a thread."""
        self._ensure_dirs(target.parent)
        tmp = _tmp_beside(target)
        try:
            with wave.open(str(tmp), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(8000)
                w.writeframes(b"\0\0" * int(round(seconds * 8000)))
            os.chmod(tmp, PUBLISHED_FILE_MODE)
            self._chown(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    async def _publish(self, source: Path, target: Path) -> str:
        name = self.inner_path(target.with_suffix(""))
        with PUBLISH_LOCK:  # the sweep cannot remove it between this look and Asterisk's play
            if target.exists():  # content-named and written atomically: it is this content
                try:
                    os.utime(target)  # in use: ``unpublish_stale`` leaves it alone for a while
                except FileNotFoundError:
                    pass
                else:
                    return name
        loop = asyncio.get_running_loop()
        task = self._pending.get(target)
        if task is None or task.get_loop() is not loop:
            task = loop.create_task(asyncio.to_thread(self._copy, source, target))
            self._pending[target] = task
            task.add_done_callback(functools.partial(self._forget, target))
        await asyncio.shield(task)
        return name

    def _forget(self, target: Path, task: asyncio.Task[None]) -> None:
        if self._pending.get(target) is task:
            del self._pending[target]
        if not task.cancelled():
            task.exception()

    def _copy(self, source: Path, target: Path) -> None:
        """Copy ``source`` to ``target`` atomically, readable by Asterisk. Runs in a thread."""
        if target.exists():
            return
        self._ensure_dirs(target.parent)
        tmp = _tmp_beside(target)
        try:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, PUBLISHED_FILE_MODE)
            self._chown(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def _ensure_dirs(self, directory: Path) -> None:
        """``sounds_dir`` and every directory down to ``directory``: 0750, Asterisk's when root (else in
        the sounds directory's group, which Asterisk reads through)."""
        levels = [self.sounds_dir]
        for part in directory.relative_to(self.sounds_dir).parts:
            levels.append(levels[-1] / part)
        for level in levels:
            if level in self._ready_dirs:
                continue
            level.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0 or level.stat().st_uid == os.geteuid():
                os.chmod(level, PUBLISHED_DIR_MODE)
            self._chown(level)
            self._ready_dirs.add(level)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            if self.owner is not None:
                os.chown(path, *self.owner)
            return
        # Unprivileged (production): the service shares the sounds with Asterisk through the sounds
        # directory's group (``binfoon deploy``), of which the service user is a member.
        group = self.sounds_dir.stat().st_gid
        if path.stat().st_gid != group:
            try:
                os.chown(path, -1, group)
            except PermissionError:
                log.warning("%s: cannot give it the sounds directory's group %d; Asterisk may not read it",
                            path, group)

    def unpublish(self, sha256: str) -> bool:
        """Remove the published copy of the audio with this content (purged, or no longer needed)."""
        target = self.sounds_dir / "audio" / f"{sha256}.wav"
        existed = target.exists()
        target.unlink(missing_ok=True)
        return existed
