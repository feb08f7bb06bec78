"""One recording in, one transcript out: pydub prepares the audio, Vosk or Whisper recognises it.

Rules: the audio is always brought to what Asterisk records (8 kHz, mono, 16-bit) before
recognition, whatever the file was, so a transcript made from a test clip and one made from a
phone recording go through the same path. The engine follows the model folder (``model_kind``):
a Vosk folder is read by Vosk, a CTranslate2 Whisper folder by ``ivr.asr.whisper``, which must be
told the language (the BIN's) and never guesses it. Everything here is blocking CPU work: call it
from a worker process (``ivr.asr.pool``) or a command, never from the event loop.

Vosk may give slightly different words for the same audio on a later decode in the same process
(alphacep/vosk-api#868, open): the first decode after loading is reproducible, later ones are not
guaranteed to be. A stored transcript is therefore "what the model heard that time".
"""

from __future__ import annotations

import functools
import json
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ivr.asr.models import ModelError, model_kind, model_label, model_problem

#: What Asterisk's Record() writes for a telephone call.
RATE_HZ = 8000
SAMPLE_WIDTH_BYTES = 2
#: Audio is fed to the recogniser in pieces of this many seconds, as a live stream would be.
CHUNK_S = 0.25


@dataclass(frozen=True)
class EngineOptions:
    """How a Whisper model is run (Vosk has no such options and ignores them)."""

    beam_size: int = 5
    compute_type: str = "int8"
    #: CPU threads of one decoder. ``0`` leaves it to CTranslate2: ``OMP_NUM_THREADS`` when set, else
    #: its own default, documented as 4 threads (faster-whisper 1.2, CTranslate2 4.x); not every core.
    cpu_threads: int = 0
    #: Wall-clock seconds after which decoding of one recording stops (what was heard is kept, uncertain).
    time_cap_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Any) -> EngineOptions:
        """The options configured in ``Settings`` (``speech_beam_size``, ``speech_compute_type``, ...)."""
        return cls(beam_size=settings.speech_beam_size, compute_type=settings.speech_compute_type,
                   time_cap_s=settings.speech_time_cap_s)


@dataclass
class TranscriptResult:
    """What the recogniser made of one audio file."""

    text: str
    #: One dict per word: ``{"word", "start", "end", "conf"}``, times in seconds from the start.
    words: list[dict[str, Any]] = field(default_factory=list)
    #: Mean of the word confidences; ``None`` when no word was recognised.
    confidence: float | None = None
    model: str = ""
    audio_s: float = 0.0
    #: Seconds spent preparing and recognising (not loading the model).
    elapsed_s: float = 0.0
    #: Which recogniser made it: ``"vosk"`` or ``"whisper"``.
    engine: str = "vosk"
    #: The language the recogniser was told (``None``: the model's only language, as with Vosk).
    language: str | None = None
    #: The output looked like a repetition loop, or was cut at the time cap: kept, not trusted.
    uncertain: bool = False
    #: Why it is uncertain, for the log and the bench (empty when it is not).
    uncertain_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (what crosses the process boundary and what ``--json`` prints)."""
        return asdict(self)


def prepare_audio(path: Path) -> tuple[bytes, float]:
    """Raw 8 kHz mono 16-bit little-endian PCM of any file pydub (ffmpeg) reads, and its duration (s)."""
    from pydub import AudioSegment  # imported here: the parent process of the pool never needs it

    try:
        segment = AudioSegment.from_file(str(path))
    except FileNotFoundError:
        raise  # a missing file is not "unreadable audio": let the caller say which file is gone
    except Exception as exc:  # pydub raises CouldntDecodeError, IndexError, ... for unreadable audio
        raise ValueError(f"{path}: not audio that can be read ({exc.__class__.__name__}: {exc})") from exc
    segment = segment.set_channels(1).set_frame_rate(RATE_HZ).set_sample_width(SAMPLE_WIDTH_BYTES)
    pcm = segment.raw_data
    return pcm, len(pcm) / (RATE_HZ * SAMPLE_WIDTH_BYTES)


def open_model(path: Path, options: EngineOptions | None = None) -> Any:
    """Load the model in ``path`` (uncached): a ``vosk.Model``, or a ``WhisperEngine`` for a
    CTranslate2 Whisper folder, loaded with ``options`` (compute type, threads). Raises
    ``ModelError`` with the reason."""
    path = Path(path)
    problem = model_problem(path)
    if problem:
        raise ModelError(problem)
    if model_kind(path) == "whisper":
        from ivr.asr.whisper import open_whisper

        return open_whisper(path, options or EngineOptions())
    import vosk

    vosk.SetLogLevel(-1)  # Kaldi's own log lines would otherwise go to stderr for every recogniser
    try:
        return vosk.Model(str(path))
    except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
        raise ModelError(f"{path}: Vosk could not load the model ({exc})") from exc


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, compute_type: str, cpu_threads: int) -> Any:
    return open_model(Path(path), EngineOptions(compute_type=compute_type, cpu_threads=cpu_threads))


@functools.lru_cache(maxsize=4)
def load_model(path: str, options: EngineOptions | None = None) -> Any:
    """The model at ``path``, loaded once per process (a worker keeps it for all its jobs).

    Cached per (path, options). The weights themselves are loaded once per (path, compute type,
    threads) for Whisper and once per path for Vosk, which has no options: two option sets that
    differ only in beam size or time cap share one model in memory.
    """
    options = options or EngineOptions()
    if model_kind(Path(path)) != "whisper":
        return _load_cached(path, "", 0)
    from ivr.asr.whisper import WhisperEngine

    loaded = _load_cached(path, options.compute_type, options.cpu_threads)
    return WhisperEngine(loaded.model, loaded.path, options)


@dataclass
class _Recogniser:
    """A recogniser kept for the next recordings, and how much audio it has heard (seconds)."""

    recogniser: Any
    heard_s: float = 0.0


#: One recogniser per model, reused from one recording to the next (this process only). A fresh
#: recogniser first builds its part of the decoding graph (Vosk composes it on demand and caches
#: it in the recogniser): that cost 0.35 s of CPU per recording here, and reusing it halved the
#: real-time factor on ../shared/audio (0.42 -> 0.20, `binfoon bench transcribe`).
_recognisers: weakref.WeakKeyDictionary[Any, _Recogniser] = weakref.WeakKeyDictionary()
#: A recogniser is replaced after this much audio, so its cache cannot grow for ever.
RENEW_AFTER_S = 1800.0


def recognise_pcm(model: Any, pcm: bytes) -> tuple[str, list[dict[str, Any]]]:
    """Stream 8 kHz 16-bit mono PCM through the model's recogniser; returns (text, words).

    Word times are seconds from the start of ``pcm``, whichever recordings the recogniser heard before.
    """
    import vosk

    kept = _recognisers.get(model)
    if kept is None or kept.heard_s >= RENEW_AFTER_S:
        kept = _recognisers[model] = _Recogniser(vosk.KaldiRecognizer(model, RATE_HZ))
        kept.recogniser.SetWords(True)
    recogniser = kept.recogniser
    chunk = int(RATE_HZ * CHUNK_S) * SAMPLE_WIDTH_BYTES
    pieces: list[dict[str, Any]] = []
    try:
        for offset in range(0, len(pcm), chunk):
            # True at an end of utterance (a pause): collect that utterance's result and go on.
            if recogniser.AcceptWaveform(pcm[offset:offset + chunk]):
                pieces.append(json.loads(recogniser.Result()))
        pieces.append(json.loads(recogniser.FinalResult()))
    except BaseException:
        _recognisers.pop(model, None)  # left in the middle of a stream: never reused
        raise
    # Vosk counts word times from the first sample the recogniser ever heard.
    start_s = kept.heard_s
    kept.heard_s += len(pcm) // SAMPLE_WIDTH_BYTES / RATE_HZ
    words = [
        {"word": w["word"], "start": round(max(0.0, float(w["start"]) - start_s), 3),
         "end": round(max(0.0, float(w["end"]) - start_s), 3), "conf": float(w["conf"])}
        for piece in pieces for w in piece.get("result", [])
    ]
    text = " ".join(piece["text"] for piece in pieces if piece.get("text"))
    return text, words


def transcribe_file(audio: Path, model_path: Path, model: Any | None = None, language: str | None = None,
                    options: EngineOptions | None = None) -> TranscriptResult:
    """Prepare ``audio`` and recognise it with the model at ``model_path`` (loaded once per process).

    ``model``: an already loaded model (``open_model``/``load_model``); ``language``: required for a
    Whisper model (``ValueError`` without it, or for one the model does not know), ignored by Vosk;
    ``options``: beam size and time cap of this decode (default: those the model was loaded with).
    """
    from ivr.asr.whisper import WhisperEngine, check_language, transcribe_pcm

    model = model if model is not None else load_model(str(model_path), options)
    if not isinstance(model, WhisperEngine):  # Vosk: one language per model; ``language`` is not used
        began = time.perf_counter()
        pcm, audio_s = prepare_audio(audio)
        text, words = recognise_pcm(model, pcm)
        confidence = sum(w["conf"] for w in words) / len(words) if words else None
        return TranscriptResult(text, words, confidence, model_label(model_path), audio_s,
                                time.perf_counter() - began)
    language = check_language(model, language)  # before any work: a wrong call fails at once
    options = options or model.options
    began = time.perf_counter()
    began_monotonic = time.monotonic()
    pcm, audio_s = prepare_audio(audio)
    outcome = transcribe_pcm(model, pcm, language, options, began=began_monotonic)
    words = outcome.words
    confidence = sum(w["conf"] for w in words) / len(words) if words else None
    return TranscriptResult(outcome.text, words, confidence, model_label(model_path), audio_s,
                            time.perf_counter() - began, engine="whisper", language=language,
                            uncertain=outcome.uncertain, uncertain_reason=outcome.uncertain_reason)
