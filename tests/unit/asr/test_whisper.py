"""The Whisper path with the real Whisper base model: Dutch measured, French told, guards that hold.

The model is loaded once per session and every clip is transcribed once (session fixtures); the
guards' decisions are pure functions tested on word lists, and the retry's orchestration is tested
with a scripted decoder standing in for the model (it is about which decode is kept, not about
what Whisper hears).
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pydub import AudioSegment

from ivr.asr.transcriber import EngineOptions, TranscriptResult, load_model, transcribe_file
from ivr.asr.wer import corpus_word_error_rate, normalise_words, word_error_rate
from ivr.asr.whisper import (
    LOOP_REPEATS,
    LOOP_REPEATS_ONE_WORD,
    MAX_NEW_TOKENS,
    MAX_WORDS_PER_SPEECH_S,
    WORDS_SLACK,
    WhisperEngine,
    collapse_repeats,
    loop_reason,
    repeated_run,
    tidy_word_times,
    transcribe_pcm,
    upsample_8k_to_16k,
)
from tests.conftest import SHARED_DIR

HUMAN_NL = sorted((SHARED_DIR / "audio" / "human-nl").glob("*.wav"))
#: A French alert as a BIN in Wallonia would record it (synthesised: espeak-ng's French voice).
FRENCH_ALERT = ("Attention, un cambriolage a eu lieu cette nuit dans la rue de l'église. La police demande "
                "aux habitants de bien fermer leurs portes et leurs fenêtres.")


def as_recorded_by_asterisk(source: Path, target: Path) -> Path:
    """``source`` as Asterisk's Record() writes it: 8 kHz, mono, 16-bit WAV."""
    AudioSegment.from_file(source).set_frame_rate(8000).set_channels(1).set_sample_width(2).export(
        target, format="wav")
    return target


def words_of(text: str, start_s: float = 0.0, step_s: float = 0.3) -> list[dict[str, Any]]:
    """``text`` as a recogniser's word list, one word every ``step_s`` seconds."""
    return [{"word": w, "start": round(start_s + i * step_s, 3), "end": round(start_s + i * step_s + 0.25, 3),
             "conf": 0.9} for i, w in enumerate(text.split())]


def assert_well_formed(result: TranscriptResult) -> None:
    """What every stored transcript must satisfy (the web player highlights words by these times)."""
    assert result.words, "the recogniser returned no word"
    assert result.text == " ".join(w["word"] for w in result.words)
    for word in result.words:
        assert set(word) == {"word", "start", "end", "conf"}
        assert word["word"] == word["word"].strip() and word["word"]
        assert 0.0 <= word["start"] <= word["end"] <= result.audio_s
        assert 0.0 <= word["conf"] <= 1.0
    starts = [w["start"] for w in result.words]
    assert starts == sorted(starts)
    ends = [w["end"] for w in result.words]
    assert all(e1 <= s2 for e1, s2 in zip(ends, starts[1:])), "words overlap"
    assert result.confidence == pytest.approx(sum(w["conf"] for w in result.words) / len(result.words))


# --- the real model -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def whisper(whisper_model_path: Path) -> WhisperEngine:
    """Whisper base, loaded once for the session with the default options (int8, beam 5)."""
    engine = load_model(str(whisper_model_path))
    assert isinstance(engine, WhisperEngine)
    return engine


@pytest.fixture(scope="session")
def phone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("phone")


@pytest.fixture(scope="session")
def human_results(whisper_model_path: Path, whisper: WhisperEngine,
                  phone_dir: Path) -> list[tuple[str, TranscriptResult]]:
    """(reference, result) of each human-nl clip, taken down to 8 kHz first as a call would be."""
    assert len(HUMAN_NL) == 3, f"expected the three human-nl clips in {SHARED_DIR / 'audio' / 'human-nl'}"
    out = []
    for clip in HUMAN_NL:
        at_8k = as_recorded_by_asterisk(clip, phone_dir / clip.name)
        result = transcribe_file(at_8k, whisper_model_path, model=whisper, language="nl")
        out.append((clip.with_suffix(".txt").read_text(encoding="utf-8").strip(), result))
    return out


@pytest.fixture(scope="session")
def french_alert(phone_dir: Path) -> Path:
    """FRENCH_ALERT spoken by espeak-ng's French voice, at 8 kHz."""
    espeak = shutil.which("espeak-ng")
    assert espeak is not None, "espeak-ng is not installed (the prompts need it too)"
    spoken = phone_dir / "alerte-fr.wav"
    subprocess.run([espeak, "-v", "fr", "-s", "150", "-w", str(spoken), FRENCH_ALERT], check=True,
                   capture_output=True, timeout=60)
    return as_recorded_by_asterisk(spoken, phone_dir / "alerte-fr-8k.wav")


@pytest.fixture(scope="session")
def french_results(whisper_model_path: Path, whisper: WhisperEngine,
                   french_alert: Path) -> dict[str, TranscriptResult]:
    """The French alert decoded as French (right) and as Dutch (wrong)."""
    return {lang: transcribe_file(french_alert, whisper_model_path, model=whisper, language=lang)
            for lang in ("fr", "nl")}


def test_human_dutch_at_8khz_is_recognised_within_the_word_error_bound(
        human_results: list[tuple[str, TranscriptResult]]) -> None:
    wer = corpus_word_error_rate((ref, result.text) for ref, result in human_results)
    # Measured here: 0.16 (int8, beam 5); the bound for the suite is 0.30.
    assert wer <= 0.30, [(ref, r.text) for ref, r in human_results]


def test_whisper_transcripts_are_well_formed_and_say_how_they_were_made(
        human_results: list[tuple[str, TranscriptResult]], whisper_model_path: Path) -> None:
    for _, result in human_results:
        assert_well_formed(result)
        assert (result.engine, result.language, result.model) == ("whisper", "nl", whisper_model_path.name)
        assert not result.uncertain and result.uncertain_reason == ""
        assert result.audio_s > 2.0 and result.elapsed_s > 0.0
        # Whisper's words carry their punctuation: "ladder." is one word, and the text is their join.
        assert result.text[-1] in ".!?" and result.words[-1]["word"].endswith(result.text[-1])


def test_a_french_alert_is_transcribed_in_french_because_french_is_passed(
        french_results: dict[str, TranscriptResult]) -> None:
    french = word_error_rate(FRENCH_ALERT, french_results["fr"].text)
    dutch = word_error_rate(FRENCH_ALERT, french_results["nl"].text)
    # Measured: 0.62 told French (synthetic voice), 1.77 told Dutch on one machine; 0.69 and 0.92 on
    # another (an AMD EPYC: int8 kernels follow the CPU, and a decode in the wrong language is the
    # least stable). Told Dutch it writes Dutch words: fewer of the alert's French words, a worse WER.
    assert french <= 0.80, french_results["fr"].text
    assert dutch > 0.80 and dutch > french, (french_results["fr"].text, french_results["nl"].text)
    said = set(normalise_words(FRENCH_ALERT))
    heard = {lang: len(said & set(normalise_words(french_results[lang].text))) for lang in ("fr", "nl")}
    # The alert's own words in each (measured on the EPYC: 9 told French, 2 told Dutch).
    assert heard["fr"] >= heard["nl"] + 3, (heard, french_results["fr"].text, french_results["nl"].text)
    assert french_results["fr"].language == "fr" and french_results["nl"].language == "nl"
    assert {"police", "demande"} <= set(normalise_words(french_results["fr"].text))
    assert_well_formed(french_results["fr"])


def test_without_a_language_whisper_refuses_before_any_work(whisper_model_path: Path,
                                                            whisper: WhisperEngine) -> None:
    with pytest.raises(ValueError, match="the language must be given"):
        transcribe_file(HUMAN_NL[0], whisper_model_path, model=whisper, language=None)
    # Refused before the audio is read: a missing file does not change the answer.
    with pytest.raises(ValueError, match="the language must be given"):
        transcribe_file(Path("/nonexistent.wav"), whisper_model_path, model=whisper)


def test_a_language_the_model_does_not_know_is_named(whisper_model_path: Path, whisper: WhisperEngine) -> None:
    assert {"nl", "fr", "de"} <= set(whisper.languages)
    with pytest.raises(ValueError, match=r"does not know the language 'vls'.*\bnl\b"):
        transcribe_file(HUMAN_NL[0], whisper_model_path, model=whisper, language="vls")


def test_load_model_keeps_one_model_per_process_and_options(whisper_model_path: Path,
                                                            whisper: WhisperEngine) -> None:
    assert load_model(str(whisper_model_path)) is whisper
    wider = load_model(str(whisper_model_path), EngineOptions(beam_size=1, time_cap_s=9.0))
    # Other decoding options, same weights in memory (the compute type and threads are the same).
    assert wider.options.beam_size == 1 and wider.model is whisper.model


def test_the_time_cap_keeps_what_was_heard_and_marks_it_uncertain(
        whisper_model_path: Path, whisper: WhisperEngine, phone_dir: Path,
        human_results: list[tuple[str, TranscriptResult]]) -> None:
    clip = phone_dir / HUMAN_NL[1].name  # already at 8 kHz (human_results made it)
    result = transcribe_file(clip, whisper_model_path, model=whisper, language="nl",
                             options=EngineOptions(time_cap_s=0.001))
    assert result.uncertain and result.uncertain_reason.startswith("time cap:")
    assert "cap 0.001 s" in result.uncertain_reason
    # What was heard before the cap is kept: the first segment, a prefix of the full decode.
    full = human_results[1][1]
    assert result.words and full.text.startswith(result.text)


def test_silence_gives_an_empty_transcript_not_an_invented_one(whisper_model_path: Path, whisper: WhisperEngine,
                                                               tmp_path: Path) -> None:
    silent = tmp_path / "silence.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000 * 2)
    result = transcribe_file(silent, whisper_model_path, model=whisper, language="nl")
    assert (result.text, result.words, result.confidence, result.uncertain) == ("", [], None, False)


def test_a_real_looping_decode_is_retried_and_the_retry_is_kept_not_an_empty_one(
        whisper_model_path: Path, whisper: WhisperEngine, tmp_path: Path) -> None:
    # The eight espeak-nl clips in a row (53 s, a long message): beam search loops on the first
    # window here (compression ratio 3.9, "De politie mogen van de jaren ..." three times). The
    # retry used to come back empty (the no-speech rule dropped its penalised windows) and an
    # empty retry was taken for a clean one: a 53 s message was stored as no words at all.
    take = AudioSegment.empty()
    for clip in sorted((SHARED_DIR / "audio" / "espeak-nl").glob("*.wav")):
        take += AudioSegment.from_wav(clip)
    long_take = tmp_path / "long-take.wav"
    take.set_frame_rate(8000).set_channels(1).set_sample_width(2).export(long_take, format="wav")
    reference = " ".join(p.with_suffix(".txt").read_text(encoding="utf-8").strip()
                         for p in sorted((SHARED_DIR / "audio" / "espeak-nl").glob("*.wav")))
    result = transcribe_file(long_take, whisper_model_path, model=whisper, language="nl")
    print(f"\n53 s espeak-nl take: {len(result.words)} words, WER {word_error_rate(reference, result.text):.2f}, "
          f"uncertain {result.uncertain_reason or 'no'}")
    assert len(result.words) >= 60  # the take holds 120 words; an empty or one-window result fails
    assert loop_reason(result.words, result.audio_s, []) is None
    assert_well_formed(result)


def test_an_empty_retry_is_not_clean_what_the_first_decode_heard_is_kept_collapsed() -> None:
    engine, decoder = scripted(LOOP, "")
    outcome = transcribe_pcm(engine, TEN_SECONDS_8K, "nl", EngineOptions())
    assert len(decoder.calls) == 2
    assert outcome.text == "de politie vraagt"
    assert outcome.uncertain and outcome.uncertain_reason == (
        "repetition loop: a run of 3 words repeated 20 times from word 1; the greedy retry heard nothing")


# --- the guards, as pure functions -----------------------------------------------------------------

LOOP = " ".join(["de politie vraagt"] * 20)
CLEAN = "er is ingebroken in de kerkstraat de politie vraagt uw ramen en deuren goed te sluiten"


def test_a_phrase_repeated_twenty_times_is_a_loop_on_each_count() -> None:
    looping = words_of(LOOP, step_s=0.05)  # 60 words in 3 s, as a looping decoder writes them
    # By the count of repeats alone (a plausible pace: 60 words in 25 s of speech).
    assert loop_reason(looping, 25.0, [1.2]) == "a run of 3 words repeated 20 times from word 1"
    # By the pace: 60 words cannot be said in 3 s of speech.
    assert loop_reason(looping, 3.0, [1.2]) == ("20.0 words per second of speech (60 words over 3.0 s; "
                                                "more than 6/s cannot be said)")
    # By the compression ratio faster-whisper measured on the window.
    assert loop_reason(words_of(CLEAN), 5.0, [1.1, 3.4]) == "compression ratio 3.40 above 2.4"


def test_ordinary_speech_does_not_fire_the_guard() -> None:
    clean = words_of(CLEAN)  # 16 words
    assert loop_reason(clean, 16 / 3.0, [1.3]) is None          # 3 words/s: ordinary Dutch pace
    # At the bounds, not above them: 16 words in 2 s (6/s plus 4 words' slack), a ratio of 2.4.
    assert loop_reason(clean, (16 - WORDS_SLACK) / MAX_WORDS_PER_SPEECH_S, [2.4]) is None
    assert loop_reason(clean + words_of("nu"), (16 - WORDS_SLACK) / MAX_WORDS_PER_SPEECH_S, [2.4]) is not None
    assert loop_reason(words_of("nee nee nee dat klopt niet"), 2.0, [1.0]) is None  # 3 times is speech
    assert loop_reason(words_of("ja"), 0.0, []) is None        # a word in a take too short to measure
    assert loop_reason([], 0.0, []) is None


def test_repeats_are_compared_without_case_and_punctuation() -> None:
    said = words_of("Hallo, hallo hallo. HALLO! hallo? Hallo… wie is daar")
    assert repeated_run(said) == (0, 1, LOOP_REPEATS_ONE_WORD)
    assert repeated_run(said, start=1) is None


def test_a_loop_collapses_to_one_occurrence_with_its_own_words_and_times() -> None:
    before, after = words_of("er is"), words_of("in de straat", start_s=9.0)
    loop = words_of(LOOP, start_s=1.0, step_s=0.1)
    collapsed = collapse_repeats(before + loop + after)
    assert " ".join(w["word"] for w in collapsed) == "er is de politie vraagt in de straat"
    assert collapsed[2:5] == loop[:3]  # the first occurrence, untouched
    assert loop_reason(collapsed, 4.0, [1.0]) is None
    assert collapse_repeats(words_of(CLEAN)) == words_of(CLEAN)


def test_the_longest_repeated_unit_is_collapsed_and_a_partial_tail_is_kept() -> None:
    said = words_of("a b a b a b a b a b a")  # "a b" five times, then a lone "a"
    assert repeated_run(said) == (0, 2, 5)
    assert [w["word"] for w in collapse_repeats(said)] == ["a", "b", "a"]


def test_word_times_are_put_in_order_inside_the_audio() -> None:
    words = [{"word": "een", "start": -0.02, "end": 0.4, "conf": 0.9},
             {"word": "twee", "start": 0.35, "end": 0.3, "conf": 0.8},   # overlaps, ends before it starts
             {"word": "drie", "start": 0.9, "end": 2.7, "conf": 0.7}]   # passes the end of the audio
    tidy = tidy_word_times(words, 2.5)
    assert [(w["start"], w["end"]) for w in tidy] == [(0.0, 0.4), (0.4, 0.4), (0.9, 2.5)]
    assert [w["word"] for w in tidy] == ["een", "twee", "drie"] and tidy[0]["conf"] == 0.9


def test_8khz_audio_is_resampled_once_to_16khz_without_changing_its_content() -> None:
    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t) * 32767).astype("<i2")
    out = upsample_8k_to_16k(tone.tobytes())
    assert out.dtype == np.float32 and out.size == 16000
    assert np.allclose(out[0::2], tone / 32768.0)  # the samples the call carried are kept
    spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
    peak_hz = np.argmax(spectrum) * 16000 / (out.size - 2000)
    assert abs(peak_hz - 1000) < 2
    assert spectrum[int(7000 * (out.size - 2000) / 16000)] < spectrum.max() * 1e-3  # no image at 7 kHz
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.max(np.abs(out[1000:-1000] - expected[1000:-1000])) < 0.01  # the new samples are on the tone
    assert upsample_8k_to_16k(b"").size == 0


# --- the retry, with a scripted decoder in place of the model --------------------------------------

@dataclass
class ScriptedDecoder:
    """Answers ``transcribe`` with the next scripted text, as faster-whisper's (segments, info): one
    segment (window) per ``|``-separated part, decoded lazily; with a ``clock``, each window
    advances it by ``window_s`` (the decoding time it took)."""

    texts: list[str]
    compression_ratio: float = 1.5
    calls: list[dict[str, Any]] = field(default_factory=list)
    supported_languages: tuple[str, ...] = ("nl", "fr", "de")
    clock: Any = None
    window_s: float = 0.0

    def transcribe(self, samples: Any, **settings: Any) -> tuple[Iterator[Any], Any]:
        self.calls.append(settings)
        words = [SimpleNamespace(word=" " + w["word"], start=w["start"], end=w["end"], probability=0.8)
                 for w in words_of(self.texts[len(self.calls) - 1].replace("|", ""), step_s=0.2)]
        sizes = [len(part.split()) for part in self.texts[len(self.calls) - 1].split("|")]
        segments, first = [], 0
        for size in sizes:
            part = words[first:first + size]
            first += size
            segments.append(SimpleNamespace(words=part, compression_ratio=self.compression_ratio,
                                            end=part[-1].end if part else 0.0))

        def windows() -> Iterator[Any]:
            for segment in segments:
                if self.clock is not None:
                    self.clock.now += self.window_s
                yield segment
        return windows(), SimpleNamespace(duration_after_vad=10.0)


def scripted(*texts: str) -> tuple[WhisperEngine, ScriptedDecoder]:
    decoder = ScriptedDecoder(list(texts))
    return WhisperEngine(decoder, Path("faster-whisper-base"), EngineOptions()), decoder


TEN_SECONDS_8K = b"\0\1" * 80000


def test_every_decode_is_told_the_language_temperature_zero_and_the_phone_settings() -> None:
    engine, decoder = scripted(CLEAN)
    outcome = transcribe_pcm(engine, TEN_SECONDS_8K, "fr", EngineOptions(beam_size=3))
    assert (outcome.text, outcome.uncertain) == (CLEAN, False)
    assert decoder.calls == [{"language": "fr", "beam_size": 3, "temperature": 0.0,
                              "condition_on_previous_text": False, "vad_filter": True, "word_timestamps": True,
                              "max_new_tokens": MAX_NEW_TOKENS}]


def test_a_loop_is_retried_greedily_and_a_clean_retry_is_kept() -> None:
    engine, decoder = scripted(LOOP, CLEAN)
    outcome = transcribe_pcm(engine, TEN_SECONDS_8K, "nl", EngineOptions())
    assert (outcome.text, outcome.uncertain, outcome.uncertain_reason) == (CLEAN, False, "")
    retry = decoder.calls[1]
    assert (retry["beam_size"], retry["no_repeat_ngram_size"], retry["temperature"]) == (1, 3, 0.0)
    assert retry["no_speech_threshold"] is None  # else its penalised windows are dropped as silence
    assert retry["language"] == "nl"


def test_a_loop_that_survives_the_retry_is_stored_collapsed_and_uncertain() -> None:
    engine, decoder = scripted(LOOP, "ik zeg " + LOOP)
    outcome = transcribe_pcm(engine, TEN_SECONDS_8K, "nl", EngineOptions())
    assert len(decoder.calls) == 2
    assert outcome.text == "ik zeg de politie vraagt"
    assert outcome.uncertain and outcome.uncertain_reason == (
        "repetition loop: a run of 3 words repeated 20 times from word 1; "
        "the greedy retry too: a run of 3 words repeated 20 times from word 3")


# --- what a reason may say, what a collapse may delete, what a capped retry may replace ------------

def test_a_loop_reason_carries_counts_never_the_words_of_the_message() -> None:
    # The reason is logged (the desk warns with it) and police messages must never reach the log.
    said = "bel de wijkagent " + LOOP + " dringend"
    looping = words_of(said, step_s=0.05)
    reasons = [loop_reason(looping, 25.0, [1.2]),    # by the repeats
               loop_reason(looping, 3.0, [1.2]),     # by the pace
               loop_reason(looping, 25.0, [3.86])]   # by the compression ratio
    assert all(reasons), reasons
    for reason in reasons:
        assert not set(normalise_words(reason or "")) & set(normalise_words(said)), reason
    assert reasons[0] == "a run of 3 words repeated 20 times from word 4"
    assert reasons[2] == "compression ratio 3.86 above 2.4"


def test_repeated_digits_of_a_phone_number_are_not_a_loop() -> None:
    for said in ("bel nul vier zeven zeven zeven zeven twee", "bel 0 4 7 7 7 7 7 7 7 7 2",
                 "appelez le zéro quatre sept sept sept sept sept sept deux",
                 "rufen sie null vier sieben sieben sieben sieben sieben sieben zwei",
                 "nummer zeven zeven zeven zeven zeven zeven zeven zeven"):  # as 'zeven zeven' four times too
        words = words_of(said)
        assert repeated_run(words) is None, said
        assert loop_reason(words, len(words) / 3.0, [1.3]) is None, said
        assert collapse_repeats(words) == words, said


def test_one_word_needs_more_repeats_than_a_phrase_to_be_a_loop() -> None:
    assert repeated_run(words_of("ja ja ja ja ja dat klopt")) is None  # five times: said so
    assert repeated_run(words_of("hij zei ja ja ja ja ja ja ja")) == (2, 1, 7)
    assert repeated_run(words_of("de politie de politie de politie de politie")) == (0, 2, LOOP_REPEATS)


class FakeClock:
    """Seconds that pass only when the scripted decoder says a window took them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_retry_cut_by_the_time_cap_does_not_replace_a_first_decode_that_heard_the_whole_take() -> None:
    # The first decode (one window, 10 s of decoding) loops but covers the take; the retry's first
    # window passes the cap (15 s) and it stops there, clean but with a fraction of the message.
    clock = FakeClock()
    engine, decoder = scripted(LOOP, "er is ingebroken | in de kerkstraat sluit uw ramen")
    decoder.clock, decoder.window_s = clock, 10.0
    outcome = transcribe_pcm(engine, TEN_SECONDS_8K, "nl", EngineOptions(time_cap_s=15.0), clock=clock)
    assert len(decoder.calls) == 2
    assert outcome.text == "de politie vraagt"  # the first decode, collapsed; not "er is ingebroken"
    assert outcome.uncertain
    assert outcome.uncertain_reason.startswith("repetition loop: a run of 3 words repeated 20 times")
    assert "time cap" in outcome.uncertain_reason and "cap 15 s" in outcome.uncertain_reason


def test_a_retry_within_the_cap_is_still_kept_with_the_scripted_clock() -> None:
    clock = FakeClock()
    engine, decoder = scripted(LOOP, "er is ingebroken | in de kerkstraat sluit uw ramen")
    decoder.clock, decoder.window_s = clock, 1.0
    outcome = transcribe_pcm(engine, TEN_SECONDS_8K, "nl", EngineOptions(time_cap_s=15.0), clock=clock)
    assert (outcome.text, outcome.uncertain) == ("er is ingebroken in de kerkstraat sluit uw ramen", False)
