"""Dutch that is recognised, measured through the archive's own path (issue 15), against the real Asterisk.

An officer phones in and speaks a real Flemish voice (``../shared/audio/human-nl``, taken down to 8 kHz as a
phone line carries it); Asterisk records the take; the service transcribes it with Whisper base in its worker
process, in the BIN's language; the word error rate of those stored transcripts against the clips' reference
texts must stay within the issue's bound. A search for a word of the *reference* text (and for another form
of it) finds the message. A French BIN's alert is transcribed in French.

The word error rate is printed (``pytest -s``); the bound is the issue's acceptance, not a benchmark.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydub import AudioSegment
from sqlalchemy import select

from ivr.archive.store import Archive
from ivr.asr.transcriber import transcribe_file
from ivr.asr.wer import corpus_word_error_rate, word_error_rate
from ivr.lab.phone_lab import PhoneLab
from ivr.media.tts import synthesize
from ivr.media.voice import PromptRenderer
from ivr.domain.vocabulary import Language
from storage.db import session_scope
from storage.models import Bin, Message, Recording, Transcript
from storage.recordings import RecordingStore, open_recording
from storage.sealed import open_transcript
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import Binfoon, officer_script, start_binfoon
from tests.integration.conftest import eventually
from tests.world import OFFICER_PHONE

pytestmark = pytest.mark.integration

HUMAN = SHARED_DIR / "audio" / "human-nl"
#: The issue's bound for the Flemish voices at 8 kHz through a real call (the bench's own is 0.25).
MAX_WER = 0.30
FRENCH_ALERT = ("Attention, un cambriolage a eu lieu cette nuit dans la rue de l'église. La police demande "
                "aux habitants de bien fermer leurs portes et leurs fenêtres.")
#: Short French words no Dutch sentence uses ("de", in both languages, is left out): Whisper told French
#: writes them even for words it mishears; told Dutch, it writes Dutch-looking words instead.
FRENCH_FUNCTION_WORDS = frozenset(
    "le la les du un une et à au aux dans pour vos votre nous vous est que qui cette ce leurs leur sur par "
    "avec mais ou il elle c l d qu".split())


def _french_words(text: str) -> int:
    """How many of ``text``'s words are French function words (apostrophes split: "l'église" -> l, église)."""
    return sum(1 for w in text.lower().replace("'", " ").split() if w.strip(".,!?-") in FRENCH_FUNCTION_WORDS)


def _phone_quality(clip: Path, target: Path) -> Path:
    """``clip`` as a phone carries it into the call: 8 kHz, mono, 16-bit (what ``Speak`` plays)."""
    audio = AudioSegment.from_file(str(clip)).set_channels(1).set_frame_rate(8000).set_sample_width(2)
    audio.export(str(target), format="wav")
    return target


async def _officer_sends(lab: PhoneLab, binfoon: Binfoon, speech: Path) -> int:
    """An officer phones in, speaks ``speech`` and sends it; the id of the message stored."""
    with session_scope(binfoon.world.engine) as s:
        before = set(s.scalars(select(Message.id)))
    officer = await lab.call_in(OFFICER_PHONE, officer_script(speech))
    await officer.wait(timeout_s=90)

    def new_message() -> set[int]:
        with session_scope(binfoon.world.engine) as s:
            return set(s.scalars(select(Message.id).where(Message.submitted_take.is_not(None)))) - before
    [message_id] = await eventually(new_message, bool, 20.0, poll_s=0.2)
    return message_id


async def _transcript_of(binfoon: Binfoon, message_id: int, timeout_s: float = 120.0) -> tuple[Transcript, str]:
    """The stored transcript of a message's take, and its opened text (sealed at rest)."""
    def stored() -> Transcript | None:
        with session_scope(binfoon.world.engine) as s:
            return s.scalars(select(Transcript).join(Recording, Recording.id == Transcript.recording_id)
                             .where(Recording.message_id == message_id)).first()
    row = await eventually(stored, lambda r: r is not None, timeout_s, poll_s=0.3)
    assert row is not None
    key = RecordingStore(binfoon.settings.data_dir / "recordings").key
    return row, open_transcript(key, row.recording_id, row.text, row.words).text


async def test_flemish_officers_are_transcribed_in_dutch_within_the_word_error_bound_and_found_by_search(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer, whisper_model_path: Path) -> None:
    refs = {wav: wav.with_suffix(".txt").read_text(encoding="utf-8").strip() for wav in sorted(HUMAN.glob("*.wav"))}
    assert len(refs) == 3
    binfoon = await start_binfoon(lab, tmp_path, renderer, speech_model_path=str(whisper_model_path))
    try:
        sent: dict[Path, int] = {}
        for wav in refs:
            speech = await asyncio.to_thread(_phone_quality, wav, tmp_path / f"{wav.stem}-8k.wav")
            sent[wav] = await _officer_sends(lab, binfoon, speech)
        pairs = []
        for wav, message_id in sent.items():
            row, text = await _transcript_of(binfoon, message_id)
            assert (row.engine, row.language, row.model) == ("whisper", "nl", whisper_model_path.name)
            print(f"\n{wav.stem}: WER {word_error_rate(refs[wav], text):.2f}\n  said:  {refs[wav]}\n  heard: {text}")
            pairs.append((refs[wav], text))
        wer = corpus_word_error_rate(pairs)
        print(f"\ncorpus WER over {len(pairs)} Flemish takes recorded by Asterisk: {wer:.3f} (bound {MAX_WER})")
        assert wer <= MAX_WER

        # Search by words of what was *said* (the reference), not of what was heard.
        archive = Archive(binfoon.world.engine, RecordingStore(binfoon.settings.data_dir / "recordings"))
        by_stem = {"rdh_vl09647": "betrekkelijk", "fg_nl_rhasspy_577_1602083886": "vrouw"}
        for stem, word in by_stem.items():
            [wav] = [w for w in refs if w.stem == stem]
            assert word in refs[wav].lower()
            hits = await asyncio.to_thread(archive.search, [word], "person:1")
            assert [h.message_id for h in hits] == [sent[wav]], (word, [h.message_id for h in hits])
        # Another form of a said word ("vrouwen" for "vrouw") and a prefix find the same message.
        woman = sent[HUMAN / "fg_nl_rhasspy_577_1602083886.wav"]
        for query in (["vrouwen"], ["vrou*"]):
            hits = await asyncio.to_thread(archive.search, query, "person:1")
            assert [h.message_id for h in hits] == [woman], query
    finally:
        await binfoon.app.stop()


async def test_a_french_bins_alert_is_transcribed_in_french(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer, whisper_model_path: Path) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer, speech_model_path=str(whisper_model_path))
    try:
        with session_scope(binfoon.world.engine) as s:
            s.get_one(Bin, binfoon.world.bin_id).language = Language.FR  # through the ORM: its search terms follow
        speech = await asyncio.to_thread(synthesize, FRENCH_ALERT, "fr", tmp_path / "alerte.wav")
        message_id = await _officer_sends(lab, binfoon, speech)
        row, text = await _transcript_of(binfoon, message_id)
        assert (row.engine, row.language) == ("whisper", "fr")
        wer = word_error_rate(FRENCH_ALERT, text)
        # The same stored take decoded as if it were Dutch: what a wrong (or guessed) language gives.
        with session_scope(binfoon.world.engine) as s:
            recording = s.get_one(Recording, row.recording_id)
            stored = open_recording(Path(recording.path), recording.sha256)
        as_dutch = await asyncio.to_thread(transcribe_file, stored, whisper_model_path, None, "nl")
        dutch_wer = word_error_rate(FRENCH_ALERT, as_dutch.text)
        french, french_as_dutch = _french_words(text), _french_words(as_dutch.text)
        print(f"\nFrench alert (espeak-ng fr through a real call): WER {wer:.2f} told French, {dutch_wer:.2f} "
              f"told Dutch; French function words {french} vs {french_as_dutch}"
              f"\n  said:  {FRENCH_ALERT}\n  heard: {text}\n  as nl: {as_dutch.text}")
        # Synthetic French over a phone line is hard for Whisper base (its WER swings from 0.6 to 1.0
        # with the sentence and the speaking rate; espeak-nl is ~0.8 in the bench), so the WER is
        # printed, not bounded. What is asserted is the language of what was written: told the BIN's
        # language, the decoder writes French sentences; told Dutch, the same take does not.
        assert french >= 4 and french >= french_as_dutch + 3, (text, as_dutch.text)
    finally:
        await binfoon.app.stop()
