"""The Whisper engine: a CTranslate2 Whisper model (faster-whisper) on 8 kHz phone recordings.

Rules:
- the language is always given (the message's BIN's: nl, fr, de) and passed to the decoder; it is
  never detected, because a few seconds of phone audio are too little to tell Dutch from German;
- the 8 kHz PCM that every recording is brought to (``ivr.asr.transcriber.prepare_audio``) is
  resampled once, here, to the 16 kHz float samples Whisper reads;
- one decode, temperature 0 only, no conditioning on the previous text, voice activity filtering,
  word timestamps; a decode that looks like a repetition loop (``loop_reason``) is retried once
  greedily; a loop's repeated runs are not stored: they are collapsed to one occurrence and the
  transcript is marked uncertain, as is one cut at the time cap. A retry the time cap cut short
  of what the first decode heard never replaces it (the first decode is kept, collapsed). Numbers
  are never collapsed as a one-word run ("nul vier zeven zeven zeven zeven twee" is a phone number);
- a reason for uncertainty carries counts and times only, never the message's words: it is logged.
- the decisions (``loop_reason``, ``collapse_repeats``, ``tidy_word_times``, ``upsample_8k_to_16k``)
  are pure functions; the model is touched only by ``open_whisper`` and ``transcribe_pcm``.
Everything here is blocking CPU work for a worker process (``ivr.asr.pool``), never the event loop.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ivr.asr.models import ModelError, model_label

if TYPE_CHECKING:
    from numpy.typing import NDArray

#: What every recording is brought to before recognition (as Asterisk records a call) ...
INPUT_RATE_HZ = 8000
#: ... and what Whisper's feature extractor reads.
WHISPER_RATE_HZ = 16000
#: Half-length (in 8 kHz samples) of the interpolation filter: 2 x 16 taps of a windowed sinc.
#: Band-limited interpolation, rather than a straight line between samples, measured better on
#: the real voices: human-nl at 8 kHz, WER 0.20 instead of 0.24 (one word in 25).
_HALF_TAPS = 16

#: Dutch is spoken at about 2-3.5 words per second; a fast, clipped police message rarely passes 4.5.
#: Voice activity filtering keeps some padding around speech, which only lowers the rate. More than
#: 6 words per second of speech (plus a few words' slack for very short takes) is text the audio
#: cannot hold: Whisper made it up, typically by looping.
MAX_WORDS_PER_SPEECH_S = 6.0
WORDS_SLACK = 4
#: faster-whisper's own threshold on a window's zlib compression ratio (len(text) / len(compressed)):
#: repeated text compresses well, ordinary speech stays below it.
MAX_COMPRESSION_RATIO = 2.4
#: The longest run of words looked for as a repeated unit.
MAX_LOOP_WORDS = 8
#: The same run of 2..``MAX_LOOP_WORDS`` words this many times in a row is a loop ...
LOOP_REPEATS = 4
#: ... and the same single word this many times ("ja ja ja ja ja", "nee nee nee nee" are said).
LOOP_REPEATS_ONE_WORD = 6
#: Numbers as said in a phone number or a plate: never a one-word loop, however often in a row
#: ("nul vier zeven zeven zeven zeven twee"); digits written as digits count too. 0-10 in Dutch,
#: French and German (the BINs' languages).
NUMBER_WORDS = frozenset(
    ("nul", "een", "één", "twee", "drie", "vier", "vijf", "zes", "zeven", "acht", "negen", "tien")
    + ("zéro", "zero", "un", "une", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix")
    + ("null", "eins", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn"))
#: Tokens one 30-second window may produce (Whisper's own bound is 448): a wedged loop stops there.
MAX_NEW_TOKENS = 224


class EngineOptions(Protocol):
    """How the model is run: ``ivr.asr.transcriber.EngineOptions`` (named here by its shape, because
    ``transcriber`` imports this module and the import arrows go one way)."""

    @property
    def beam_size(self) -> int: ...
    @property
    def compute_type(self) -> str: ...
    @property
    def cpu_threads(self) -> int: ...
    @property
    def time_cap_s(self) -> float: ...


@dataclass(frozen=True)
class WhisperEngine:
    """A loaded Whisper model, with the folder it came from and the options it was loaded with."""

    model: Any  # faster_whisper.WhisperModel
    path: Path
    options: EngineOptions

    @property
    def languages(self) -> list[str]:
        """The language codes the model can be told (``nl``, ``fr``, ``de``, ... for a multilingual one)."""
        return list(self.model.supported_languages)


@dataclass
class WhisperOutcome:
    """What ``transcribe_pcm`` made of one recording."""

    text: str
    words: list[dict[str, Any]] = field(default_factory=list)
    uncertain: bool = False
    uncertain_reason: str = ""


def open_whisper(path: Path, options: EngineOptions) -> WhisperEngine:
    """Load the CTranslate2 Whisper model in ``path`` on the CPU, offline (``ModelError`` if it fails)."""
    from faster_whisper import WhisperModel  # imported here: only worker processes need it

    try:
        model = WhisperModel(str(path), device="cpu", compute_type=options.compute_type,
                             cpu_threads=options.cpu_threads, local_files_only=True)
    except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError for a bad folder or type
        raise ModelError(f"{path}: faster-whisper could not load the model ({exc})") from exc
    return WhisperEngine(model, Path(path), options)


def check_language(engine: WhisperEngine, language: str | None) -> str:
    """``language`` if the model knows it; ``ValueError`` saying why not (Whisper is never left to guess)."""
    if language is None:
        raise ValueError(
            f"{model_label(engine.path)} is a Whisper model: the language must be given (the BIN's: "
            f"nl, fr or de); it is never detected from the audio")
    known = engine.languages
    if language not in known:
        raise ValueError(f"{model_label(engine.path)} does not know the language {language!r}; "
                         f"it knows {len(known)}: {', '.join(sorted(known))}")
    return language


# --- pure decisions -------------------------------------------------------------------------------

def upsample_8k_to_16k(pcm: bytes) -> NDArray[Any]:
    """8 kHz 16-bit mono PCM as 16 kHz float32 samples in [-1, 1], by band-limited interpolation.

    The original samples are kept; each new sample between two is a windowed-sinc interpolation of
    the ``2 * _HALF_TAPS`` samples around it, so nothing is added above the 4 kHz the call carried.
    """
    import numpy as np

    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if x.size == 0:
        return np.zeros(0, dtype=np.float32)
    # New sample m + 1/2 from x[m - K + 1 .. m + K]: distances -K + 1/2 .. K - 1/2 input samples.
    offsets = np.arange(-_HALF_TAPS + 1, _HALF_TAPS + 1) - 0.5
    kernel = (np.sinc(offsets) * np.hamming(2 * _HALF_TAPS)).astype(np.float32)
    padded = np.concatenate([np.zeros(_HALF_TAPS - 1, np.float32), x, np.zeros(_HALF_TAPS, np.float32)])
    between = np.convolve(padded, kernel[::-1], mode="valid")  # one value per original sample
    out = np.empty(2 * x.size, dtype=np.float32)
    out[0::2] = x
    out[1::2] = between[: x.size]
    return out


_PUNCTUATION = re.compile(r"[^\w']+", re.UNICODE)


def _plain(word: str) -> str:
    """A word as compared for repetition: lower case, without punctuation."""
    return _PUNCTUATION.sub("", unicodedata.normalize("NFC", word).lower())


def is_number(word: str) -> bool:
    """Whether a (plain) word is a number: digits, or 0-10 spelt out in Dutch, French or German."""
    return word.isdigit() or word in NUMBER_WORDS


def repeated_run(words: list[dict[str, Any]], start: int = 0) -> tuple[int, int, int] | None:
    """The first run, from ``start`` on, of the same 2..``MAX_LOOP_WORDS`` words at least
    ``LOOP_REPEATS`` times in a row, or of one word (not a number) at least ``LOOP_REPEATS_ONE_WORD``
    times, as (first word's index, words in the unit, times); ``None`` if none.

    At a position the unit covering the most words wins (ties: the shortest unit), so "a b a b a b
    a b" is one unit "a b" four times. A unit of one word said twice or more ("zeven zeven") is
    judged as that one word. Words are compared without case and punctuation.
    """
    plain = [_plain(w["word"]) for w in words]
    for i in range(start, len(plain)):
        best: tuple[int, int, int] | None = None
        for size in range(1, MAX_LOOP_WORDS + 1):
            unit = plain[i:i + size]
            if len(unit) < size:
                break
            if len(set(unit)) == 1 and (size > 1 or is_number(unit[0])):
                continue  # one word again and again: judged once, as a one-word unit; never a number
            times = 1
            while plain[i + times * size:i + (times + 1) * size] == unit:
                times += 1
            needed = LOOP_REPEATS_ONE_WORD if size == 1 else LOOP_REPEATS
            if times >= needed and (best is None or times * size > best[1] * best[2]):
                best = (i, size, times)
        if best is not None:
            return best
    return None


def loop_reason(words: list[dict[str, Any]], speech_s: float, compression_ratios: list[float]) -> str | None:
    """Why a decode looks like a repetition loop, or ``None`` when it looks like speech.

    ``speech_s``: seconds of speech the decoder heard (after voice activity filtering);
    ``compression_ratios``: faster-whisper's zlib ratio of each segment's window. The reason is
    logged, so it holds counts only, never a word of the message.
    """
    bound = MAX_WORDS_PER_SPEECH_S * speech_s + WORDS_SLACK
    if len(words) > bound:
        rate = len(words) / speech_s if speech_s > 0 else float("inf")
        return (f"{rate:.1f} words per second of speech ({len(words)} words over {speech_s:.1f} s; "
                f"more than {MAX_WORDS_PER_SPEECH_S:g}/s cannot be said)")
    worst = max(compression_ratios, default=0.0)
    if worst > MAX_COMPRESSION_RATIO:
        return f"compression ratio {worst:.2f} above {MAX_COMPRESSION_RATIO}"
    run = repeated_run(words)
    if run is not None:
        first, size, times = run
        return f"a run of {size} word{'s' if size > 1 else ''} repeated {times} times from word {first + 1}"
    return None


def collapse_repeats(words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``words`` with every run found by ``repeated_run`` reduced to its first occurrence (its own
    words and times): what is kept of a loop, so the archive never stores the repetitions."""
    kept: list[dict[str, Any]] = []
    position = 0
    while True:
        run = repeated_run(words, position)
        if run is None:
            kept.extend(words[position:])
            return kept
        first, size, times = run
        kept.extend(words[position:first + size])
        position = first + size * times


def tidy_word_times(words: list[dict[str, Any]], audio_s: float) -> list[dict[str, Any]]:
    """Word times as the web player needs them: inside [0, ``audio_s``], in order, not overlapping
    (Whisper's word alignment can overlap neighbours or pass the end by a few hundredths)."""
    tidy: list[dict[str, Any]] = []
    previous_end = 0.0
    for w in words:
        start = min(max(float(w["start"]), previous_end), audio_s)
        end = min(max(float(w["end"]), start), audio_s)
        tidy.append({**w, "start": round(start, 3), "end": round(end, 3)})
        previous_end = tidy[-1]["end"]
    return tidy


# --- the model ------------------------------------------------------------------------------------

@dataclass
class _Decode:
    """One pass of the decoder over a recording."""

    words: list[dict[str, Any]]
    speech_s: float
    compression_ratios: list[float]
    #: Set when the time cap stopped the pass: why, with how far it got.
    capped: str = ""
    #: Seconds of the recording the pass covered (all of it unless capped).
    heard_s: float = 0.0


def _decode(engine: WhisperEngine, samples: Any, audio_s: float, language: str, *, beam_size: int,
            deadline: float, time_cap_s: float, began: float, greedy_retry: bool = False,
            clock: Callable[[], float] = time.monotonic) -> _Decode:
    """Run the decoder; consume its lazy segments until they end or ``deadline`` passes."""
    settings: dict[str, Any] = {
        "language": language, "beam_size": beam_size,
        # One temperature: the fallback ladder (0.2, 0.4, ...) re-decodes whole windows and, on
        # synthetic speech here, took the real-time factor from 0.19 to 0.84 for the same WER.
        "temperature": 0.0,
        # Each window on its own: conditioning on the previous window is what carries a loop along.
        "condition_on_previous_text": False,
        # Silence and line noise never reach the decoder, where Whisper invents text for them.
        "vad_filter": True, "word_timestamps": True, "max_new_tokens": MAX_NEW_TOKENS}
    if greedy_retry:
        # Beam search favours the high-probability repeat; greedy with a ban on repeating any 3 tokens
        # within a window, and a mild penalty on tokens already said, usually steps out of the loop.
        # The no-speech rule is off for it: the penalties lower the text's log-probability below the
        # rule's -1, so every window was dropped as "no speech" (measured: a 53 s espeak-nl take
        # looped at compression ratio 3.9, and the retry came back empty until this); voice
        # activity filtering has already kept silence out.
        settings.update(beam_size=1, no_repeat_ngram_size=3, repetition_penalty=1.1, no_speech_threshold=None)
    segments, info = engine.model.transcribe(samples, **settings)
    words: list[dict[str, Any]] = []
    ratios: list[float] = []
    capped = ""
    heard_s = audio_s
    try:
        for segment in segments:  # lazy: each window is decoded when its first segment is asked for
            ratios.append(float(segment.compression_ratio))
            for w in segment.words or []:
                text = w.word.strip()
                if text:
                    words.append({"word": text, "start": float(w.start), "end": float(w.end),
                                  "conf": round(min(max(float(w.probability), 0.0), 1.0), 3)})
            if clock() > deadline:
                heard_s = float(segment.end)
                capped = (f"time cap: decoding stopped after {clock() - began:.1f} s "
                          f"(cap {time_cap_s:g} s) at {heard_s:.1f} s of {audio_s:.1f} s of audio")
                break
    finally:
        close = getattr(segments, "close", None)
        if close is not None:
            close()
    return _Decode(tidy_word_times(words, audio_s), float(info.duration_after_vad), ratios, capped,
                   min(heard_s, audio_s))


def transcribe_pcm(engine: WhisperEngine, pcm: bytes, language: str, options: EngineOptions,
                   began: float | None = None, clock: Callable[[], float] = time.monotonic) -> WhisperOutcome:
    """Transcribe 8 kHz 16-bit mono PCM in ``language`` with the guards of this module.

    ``began``: ``clock()`` when work on this recording started (the time cap counts from it);
    ``clock``: the monotonic clock the cap is measured on (a test gives a scripted one).
    """
    language = check_language(engine, language)
    began = clock() if began is None else began
    deadline = began + options.time_cap_s
    audio_s = len(pcm) / (2 * INPUT_RATE_HZ)
    samples = upsample_8k_to_16k(pcm)
    if samples.size == 0:
        return WhisperOutcome("")

    def decode(**kwargs: Any) -> _Decode:
        return _decode(engine, samples, audio_s, language, deadline=deadline, time_cap_s=options.time_cap_s,
                       began=began, clock=clock, **kwargs)

    first = decode(beam_size=options.beam_size)
    reason = loop_reason(first.words, first.speech_s, first.compression_ratios)
    if reason is None:
        return _outcome(first.words, first.capped)
    if first.capped or clock() > deadline:  # no time left for a retry
        return _outcome(collapse_repeats(first.words), f"repetition loop: {reason}", first.capped)
    retry = decode(beam_size=1, greedy_retry=True)
    if retry.capped and retry.heard_s < first.heard_s:
        # The retry shares the first decode's deadline: cut at the cap, it can look clean after one
        # window while the first decode covered the whole take. What was heard is not thrown away.
        return _outcome(collapse_repeats(first.words), f"repetition loop: {reason}; the greedy retry was "
                        "cut short by the time cap, so the first decode is kept", retry.capped)
    retry_reason = loop_reason(retry.words, retry.speech_s, retry.compression_ratios)
    if retry_reason is None and retry.words:
        return _outcome(retry.words, retry.capped)
    if not retry.words:  # an empty retry is not a clean one: what the first decode heard, collapsed
        return _outcome(collapse_repeats(first.words), f"repetition loop: {reason}; the greedy retry heard "
                        "nothing", first.capped, retry.capped)
    return _outcome(collapse_repeats(retry.words),
                    f"repetition loop: {reason}; the greedy retry too: {retry_reason}", retry.capped)


def _outcome(words: list[dict[str, Any]], *reasons: str) -> WhisperOutcome:
    """The outcome of the kept words; uncertain when any reason is given."""
    why = "; ".join(r for r in reasons if r)
    return WhisperOutcome(" ".join(w["word"] for w in words), words, bool(why), why)
