"""Sealing at rest: AES-256-GCM with a key kept in a file outside the database.

Rules of this module:

* The key is 32 random bytes, written hex in a 0600 file the first time it is needed (``O_EXCL``:
  two processes starting at once end up with the same key) and never printed or logged. A key file
  another user may read, or that does not hold exactly one 256-bit key, is refused by name.
* A sealed file is ``MAGIC`` + a 12-byte random nonce + the ciphertext and its 16-byte tag; nothing
  of the plaintext (no ``RIFF`` header) is visible. The associated data names what the file must
  be (``recording:<sha256 of the plaintext>``): a file swapped for another recording's, altered by
  one bit, or opened with another installation's key is refused (``SealError``).
* Plaintext exists only where it is needed, in a private directory (0700, ours, not a symlink)
  under the system's temporary directory (``TMPDIR``: point it at a tmpfs to keep it in memory).
* Transcripts are sealed with the same key in their database column and found through a blind
  index of HMAC tokens (the section "transcripts" below).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete
from sqlalchemy.orm import Session

from storage import message_terms  # noqa: F401  (registers the typed texts' index upkeep on Message)
from storage.models import Transcript, TranscriptTerm
from storage.wordforms import VERSION_TERM, fold_words, index_terms

#: The first bytes of every sealed file (format 1: AES-256-GCM, 96-bit nonce).
MAGIC = b"BINFSEAL1\n"
NONCE_BYTES = 12
KEY_BYTES = 32


class SealError(RuntimeError):
    """A sealed file cannot be opened: wrong key, altered, or not what it claims to be."""


class KeyFileError(RuntimeError):
    """The key file is unusable (readable by others, malformed); the message names the file."""


def load_or_create_key(path: Path) -> bytes:
    """The 256-bit key in ``path``, created (0600, random) if the file does not exist yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: theirs is the key
        else:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(KEY_BYTES) + "\n")
                out.flush()
                os.fsync(out.fileno())
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if info.st_mode & 0o077:
        raise KeyFileError(f"{path}: mode {oct(info.st_mode & 0o777)} lets others read the recordings' key; "
                           f"chmod 600 {path}")
    raw = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path}: not a {8 * KEY_BYTES}-bit key in hex (64 hex digits)")
    return key


def is_sealed(head: bytes) -> bool:
    """Whether bytes (at least the first ``len(MAGIC)``) start a sealed file."""
    return head.startswith(MAGIC)


def file_is_sealed(path: Path) -> bool:
    """Whether the file at ``path`` is sealed (``False`` for a plain, legacy file)."""
    with open(path, "rb") as f:
        return is_sealed(f.read(len(MAGIC)))


def seal(key: bytes, plaintext: bytes, purpose: str) -> bytes:
    """``plaintext`` sealed for ``purpose`` (the associated data, e.g. ``recording:<sha256>``)."""
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, purpose.encode("utf-8"))


def unseal(key: bytes, sealed: bytes, purpose: str) -> bytes:
    """The plaintext of ``sealed``; ``SealError`` if it is not sealed for ``purpose`` with ``key``."""
    if not is_sealed(sealed):
        raise SealError("not a sealed file")
    nonce, body = sealed[len(MAGIC):len(MAGIC) + NONCE_BYTES], sealed[len(MAGIC) + NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, purpose.encode("utf-8"))
    except InvalidTag:
        raise SealError("refused: it does not open with this installation's key (wrong key file, "
                        "or the file was altered or swapped)") from None


def private_dir(name: str, anchor: Path) -> Path:
    """A directory only we can enter (0700), under the temporary directory, one per ``anchor``.

    Raises ``OSError`` if something that is not our own private directory sits at its name (another
    user could otherwise prepare it to read what we put there)."""
    tag = hashlib.sha256(str(anchor.resolve()).encode("utf-8")).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"binfoon-{name}-{os.geteuid()}-{tag}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(f"{path}: not our own private directory; refusing to put plaintext there")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def write_private(target: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``target`` atomically (temporary name, fsync, rename) with ``mode``."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def key_id(key: bytes) -> str:
    """A fingerprint naming a key without revealing it (a backup records which key its recordings need)."""
    return hmac.new(key, b"binfoon sealing key id", hashlib.sha256).hexdigest()[:16]


# -- transcripts: sealed in their database column, found through a blind index ----------------------
#
# A transcript's text and word timings are sealed together (JSON) with the recordings' key, for the
# associated data ``transcript:<recording id>`` (a sealed value copied onto another recording's row
# does not open), and stored as ``TEXT_PREFIX`` + base64 in the ``text`` column (``words`` stays
# empty). Search never sees the words: each transcript has the set of HMAC tokens of its index terms
# (``transcript_terms``), keyed by a key derived from the recordings' key (one key file). The terms
# are ``storage.wordforms``'s, labelled so no kind equals another: ``w:<folded word>``,
# ``s:<lang>:<Snowball stem in the transcript's language>``, ``p:<prefix>`` for each prefix of 3..16
# characters, and one ``v:<scheme+stemmer>`` marker (the same for every row indexed this way; a row
# without it was indexed before word forms existed, or by another stemmer release, and is indexed
# again at start). What the index still tells someone holding the database: how many tokens a
# transcript has (about its number of distinct words and their lengths), which transcripts share a
# (unknown) word, stem or prefix - words that begin alike are linkable through their prefix tokens.
# A row without the prefix is a transcript stored before sealing existed (plaintext); the service
# seals those at start.

#: The start of a sealed value in a text column; base64 of nonce + ciphertext + tag follows.
TEXT_PREFIX = "BINFSEAL1:"
#: Hex digits kept of a word's HMAC-SHA256 token (128 bits: no two words collide in practice).
TOKEN_HEX = 32
_INDEX_LABEL = b"binfoon transcript search index v1"


@dataclass(frozen=True)
class TranscriptContent:
    """The plaintext of a transcript: its text and its words (``{"word", "start", "end", "conf"}``)."""

    text: str
    words: list[dict[str, Any]] = field(default_factory=list)


def is_sealed_text(value: str | None) -> bool:
    """Whether a text column's value is sealed (``False`` for plaintext, e.g. a legacy transcript)."""
    return value is not None and value.startswith(TEXT_PREFIX)


def seal_text(key: bytes, plaintext: str, purpose: str) -> str:
    """``plaintext`` sealed for ``purpose``, as text for a database column."""
    body = seal(key, plaintext.encode("utf-8"), purpose)[len(MAGIC):]
    return TEXT_PREFIX + base64.b64encode(body).decode("ascii")


def unseal_text(key: bytes, value: str, purpose: str) -> str:
    """The plaintext of a ``seal_text`` value; ``SealError`` if it does not open for ``purpose``."""
    if not is_sealed_text(value):
        raise SealError("not a sealed text")
    try:
        body = base64.b64decode(value[len(TEXT_PREFIX):], validate=True)
    except ValueError:
        raise SealError("refused: not a well-formed sealed text") from None
    return unseal(key, MAGIC + body, purpose).decode("utf-8")


def transcript_purpose(recording_id: int) -> str:
    """The associated data of a transcript's seal: the recording it was made of."""
    return f"transcript:{recording_id}"


def search_terms(text: str) -> list[str]:
    """The words of ``text`` as search compares them: lower case, accents folded ("Église" -> "eglise"),
    split at everything that is not a letter or a digit (``storage.wordforms.fold_words``)."""
    return fold_words(text)


def index_key(key: bytes) -> bytes:
    """The search index's key, derived from the recordings' key (HMAC with a fixed label)."""
    return hmac.new(key, _INDEX_LABEL, hashlib.sha256).digest()


def term_token(key: bytes, term: str) -> str:
    """The blind-index token of one index term (``storage.wordforms``: ``w:…``, ``s:…``, ``p:…``,
    ``v:…``) under the recordings' ``key``."""
    return hmac.new(index_key(key), term.encode("utf-8"), hashlib.sha256).hexdigest()[:TOKEN_HEX]


def terms_tokens(key: bytes, terms: Iterable[str]) -> set[str]:
    """The tokens of ``terms`` (the index key derived once)."""
    derived = index_key(key)
    return {hmac.new(derived, term.encode("utf-8"), hashlib.sha256).hexdigest()[:TOKEN_HEX] for term in terms}


def text_tokens(key: bytes, text: str, language: str | None = None) -> set[str]:
    """The tokens of every index term of ``text`` in ``language`` (``None``: Dutch), marker excluded."""
    return terms_tokens(key, index_terms(text, language))


def version_token(key: bytes) -> str:
    """The token every transcript indexed by the current scheme and stemmer has (``VERSION_TERM``)."""
    return term_token(key, VERSION_TERM)


def seal_transcript(key: bytes, recording_id: int, content: TranscriptContent) -> str:
    """The sealed value of a transcript's ``text`` column (text and words together)."""
    payload = json.dumps({"text": content.text, "words": content.words}, ensure_ascii=False)
    return seal_text(key, payload, transcript_purpose(recording_id))


def open_transcript(key: Callable[[], bytes], recording_id: int, text: str,
                    words: list[dict[str, Any]] | None) -> TranscriptContent:
    """The plaintext of a stored transcript row (``key`` is asked only for a sealed one); a legacy
    plaintext row is returned as it is. ``SealError`` if a sealed row does not open."""
    if not is_sealed_text(text):
        return TranscriptContent(text or "", list(words or []))
    data = json.loads(unseal_text(key(), text, transcript_purpose(recording_id)))
    return TranscriptContent(str(data["text"]), list(data["words"]))


def add_transcript(s: Session, key: bytes, recording_id: int, content: TranscriptContent, *,
                   confidence: float | None, model: str, created_at: dt.datetime,
                   engine: str = "vosk", language: str | None = None,
                   uncertain: bool = False) -> Transcript:
    """Store a recording's transcript sealed, with its words' tokens, in the caller's transaction."""
    transcript = Transcript(recording_id=recording_id, text=seal_transcript(key, recording_id, content),
                            words=[], confidence=confidence, model=model, created_at=created_at,
                            engine=engine, language=language, uncertain=uncertain)
    s.add(transcript)
    s.flush()
    index_transcript(s, key, transcript.id, content.text, language)
    return transcript


def index_transcript(s: Session, key: bytes, transcript_id: int, text: str,
                     language: str | None = None) -> None:
    """(Re)write a transcript's blind-index tokens: one per index term of ``text`` (words, stems in
    ``language``, prefixes; ``None``: Dutch) and the version marker."""
    s.execute(delete(TranscriptTerm).where(TranscriptTerm.transcript_id == transcript_id))
    s.add_all(TranscriptTerm(transcript_id=transcript_id, token=token)
              for token in sorted(terms_tokens(key, index_terms(text, language) | {VERSION_TERM})))
    s.flush()
