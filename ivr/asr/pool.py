"""Worker processes for transcription, so recognition never runs on the event loop.

Rules: workers are started with ``spawn`` (forking an asyncio process with threads is unsafe); each
worker loads the model once and keeps it. A worker that dies (killed, out of memory, a crash in
Kaldi) breaks the whole ``ProcessPoolExecutor``: the pool is then replaced by a fresh one and the
job is tried once more; a second death, or an ordinary error (unreadable audio, bad model), is
reported as ``TranscriptionFailed``.

At most ``workers`` jobs are handed to the executor at a time (the others wait in ``call``), so a
job's clock starts when a worker is free for it, not while it waits behind other recordings.

A transcription job stops itself at the engine's time cap (``EngineOptions.time_cap_s``, Whisper).
The backstop here is for a worker wedged in native code, which no Python check can stop: a job
with no result ``BACKSTOP_MARGIN_S`` after the time cap gets its pool's workers killed and replaced,
and is reported as ``TranscriptionFailed`` without a retry (the same audio could wedge it again).
A job that loses its worker or its place to that replacement (another job's worker was killed
beside it, or its future was cancelled) is retried once on the fresh pool.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ivr.asr.transcriber import EngineOptions, TranscriptResult

log = logging.getLogger(__name__)


class TranscriptionFailed(Exception):
    """A recording could not be transcribed; the message says why."""


#: How much lower than the service a worker runs (``nice``): transcription is background work.
WORKER_NICE = 10
#: Seconds past the time cap before a job counts as wedged. The clock runs from when the job is handed
#: to a free worker (``call`` holds the others back), so this also covers a worker's start (spawn,
#: imports, model load: seconds for Whisper base, up to a minute for large-v3 on a slow disk) and the
#: engine finishing the segment it was in when the cap passed.
BACKSTOP_MARGIN_S = 120.0


def _warm_worker(model_path: str, options: EngineOptions) -> None:
    """Pool initializer: step back in CPU priority, then load the model before the first job arrives."""
    from ivr.asr.transcriber import load_model

    # Recognition keeps a CPU busy for seconds. On a loaded 2-core host the call loop was measured
    # waiting 50-120 ms at a time for a CPU (Linux schedstat; tests/integration/
    # test_transcription_load.py), this worker being one of the busy processes. Niced, it takes
    # the CPU that calls and Asterisk leave, and is slower only when the CPU is contended.
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass
    try:
        load_model(model_path, options)
    except Exception:  # reported by the first job, with its reason, rather than breaking the pool
        pass


def _transcribe_job(audio: str, model_path: str, language: str | None,
                    options: EngineOptions) -> dict[str, Any]:
    """Runs in a worker: one file through the (cached) model; returns a picklable dict."""
    from ivr.asr.transcriber import load_model, transcribe_file

    model = load_model(model_path, options)
    result = transcribe_file(Path(audio), Path(model_path), model, language, options).to_dict()
    result["worker_pid"] = os.getpid()
    return result


class TranscriptionPool:
    """A small pool of worker processes, each holding the model at ``model_path`` (loaded with
    ``options``)."""

    def __init__(self, model_path: Path, workers: int = 1, options: EngineOptions | None = None, *,
                 backstop_margin_s: float = BACKSTOP_MARGIN_S) -> None:
        self.model_path = Path(model_path)
        self.workers = max(1, workers)
        self.options = options or EngineOptions()
        #: A transcription job with no result after this many seconds is wedged (see the module rules).
        self.job_timeout_s = self.options.time_cap_s + backstop_margin_s
        self._executor: ProcessPoolExecutor | None = None
        #: How many times a broken pool was replaced (for logs and tests).
        self.restarts = 0
        #: One slot per worker (made on the running loop at the first call): a job is handed to the
        #: executor only when a worker is free for it, so its time limit measures its own run.
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        #: Executors stopped by ``close``: a job they cancelled is reported failed, not retried.
        self._closed: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()

    def _current(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_warm_worker,
                initargs=(str(self.model_path), self.options),
            )
        return self._executor

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        # Several jobs may see the same broken pool; only the first replaces it.
        if self._executor is broken:
            self._executor = None
            self.restarts += 1
            broken.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> Any:
        """Run ``fn(*args)`` in a worker once one is free; a worker death, or the job's loss to a pool
        replacement, is retried once on a fresh pool.

        With ``timeout_s`` (counted from when the job is handed to a free worker): no result by then
        means a wedged worker: the pool's workers are killed and replaced, and ``TranscriptionFailed``
        is raised (no retry).
        """
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:  # a semaphore serves one event loop
            self._slots = (loop, asyncio.Semaphore(self.workers))
        async with self._slots[1]:
            return await self._run(fn, args, timeout_s)

    async def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float | None) -> Any:
        for attempt in (1, 2):
            executor = self._current()
            try:
                future: Future[Any] = executor.submit(fn, *args)
                job = asyncio.wrap_future(future)
                try:
                    done, _ = await asyncio.wait({job}, timeout=timeout_s)
                except asyncio.CancelledError:
                    job.cancel()  # this task is being cancelled: its job goes with it
                    raise
                if not done:  # (a TimeoutError raised by ``fn`` itself is an ordinary error, not this)
                    job.cancel()
                    self._kill_workers(executor)
                    self._replace(executor)
                    raise TranscriptionFailed(f"no result after {timeout_s:g} s: the worker was wedged; "
                                              f"it was killed and replaced")
                if job.cancelled():
                    # Not this task's cancellation (``wait`` returned): the executor was shut down
                    # under the job by a replacement, or by ``close``.
                    if executor in self._closed:
                        raise TranscriptionFailed("the transcription pool was closed before the job ran")
                    if attempt == 2:
                        raise TranscriptionFailed("the job was cancelled twice by a replaced worker pool")
                    self._replace(executor)
                    log.warning("transcription job cancelled by a worker pool replacement; retrying on the "
                                "fresh pool")
                    continue
                return job.result()
            except BrokenProcessPool as exc:
                self._replace(executor)
                if attempt == 2:
                    raise TranscriptionFailed(f"the transcription worker died twice ({exc})") from exc
                log.warning("transcription worker died (%s); retrying on a fresh worker", exc)
        raise AssertionError("unreachable")

    @staticmethod
    def _kill_workers(executor: ProcessPoolExecutor) -> None:
        # A worker stuck in native code (CTranslate2, Kaldi) ignores everything but SIGKILL; the
        # executor has no public way to reach its processes, hence the private ``_processes``.
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            try:
                process.kill()
            except (OSError, ValueError):  # already gone, or already closed
                pass

    async def warm_up(self) -> None:
        """Start the workers and wait until they have loaded the model (the initializer runs first)."""
        await asyncio.gather(*(self.call(os.getpid) for _ in range(self.workers)))

    async def transcribe(self, audio: Path, language: str | None) -> TranscriptResult:
        """Transcribe one audio file in a worker process, in ``language`` (required by a Whisper
        model, ignored by Vosk); ``TranscriptionFailed`` says why when it cannot."""
        try:
            result = dict(await self.call(_transcribe_job, str(audio), str(self.model_path), language,
                                          self.options, timeout_s=self.job_timeout_s))
        except TranscriptionFailed:
            raise
        except Exception as exc:
            raise TranscriptionFailed(f"{audio}: {exc}") from exc
        result.pop("worker_pid", None)
        return TranscriptResult(**result)

    def close(self, wait: bool = True) -> None:
        """Stop the workers; with ``wait`` until they have exited (queued jobs are cancelled)."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            self._closed.add(executor)
            executor.shutdown(wait=wait, cancel_futures=True)
