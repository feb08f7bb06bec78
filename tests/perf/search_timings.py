"""Timings of word-form search on SQLite: storing sealed transcripts with their tokens, and searching.

Not a test (no assertion, not collected): ``.venv/bin/python -m tests.perf.search_timings [N]`` prints one
JSON object, the figures the README quotes (N transcripts of 60 random Dutch words, default 500).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from storage.db import session_scope
from storage.models import Recording, TranscriptTerm
from storage.sealed import TranscriptContent, add_transcript, search_terms
from tests.conftest import SHARED_DIR
from tests.unit.archive.test_archive import NOW, make_lab


def main(n: int = 500) -> dict[str, object]:
    """Store ``n`` sealed transcripts, then time four searches; the figures as a dict."""
    vocab = sorted({w for f in (SHARED_DIR / "audio").glob("*/*.txt")
                    for w in search_terms(f.read_text(encoding="utf-8")) if len(w) > 1})
    vocab += ["inbraken", "woningen", "bestelwagen", "verdachte", "kerkstraat", "gestolen", "fietsen", "politie"]
    rng = random.Random(1)
    tmp = Path(tempfile.mkdtemp())
    lab = make_lab(f"sqlite:///{tmp / 'b.db'}", tmp)
    key = lab.store.key()
    for _ in range(n):
        lab.message(NOW)
    with session_scope(lab.engine) as s:
        recordings = list(s.scalars(select(Recording.id).order_by(Recording.id)))
    began = time.perf_counter()
    for recording_id in recordings:
        with session_scope(lab.engine) as s:
            words = " ".join(rng.choice(vocab) for _ in range(60))
            add_transcript(s, key, recording_id, TranscriptContent(words), confidence=0.9, model="m",
                           created_at=NOW, language="nl")
    store_ms = (time.perf_counter() - began) / n * 1000
    with session_scope(lab.engine) as s:
        tokens = int(s.scalar(select(func.count()).select_from(TranscriptTerm)) or 0)
    searches = {}
    for query in (["inbraak"], ["inbr*"], ["woning", "verdachte"], ["zzzz"]):
        lab.archive.search(query, "t")  # warm
        began = time.perf_counter()
        hits = lab.archive.search(query, "t")
        searches[" ".join(query)] = {"ms": round((time.perf_counter() - began) * 1000, 1), "hits": len(hits)}
    return {"transcripts": n, "vocabulary": len(vocab), "store_ms_each": round(store_ms, 1),
            "tokens_per_transcript": round(tokens / n), "searches": searches}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)))
