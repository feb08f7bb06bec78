"""The console's words: one catalogue (``texts.toml``), Dutch first, then French, German, English.

Rules: templates and code name a text by its id only; a text missing in a language falls back to
Dutch (the reference), so a half-translated catalogue never shows an empty label. ``{name}``
placeholders are filled with ``str.format``.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

LANGUAGES = ("nl", "fr", "de", "en")
DEFAULT_LANGUAGE = "nl"
CATALOGUE = Path(__file__).resolve().parent / "texts.toml"


@functools.cache
def catalogue() -> dict[str, dict[str, str]]:
    """Text id -> language -> wording (read once)."""
    data = tomllib.loads(CATALOGUE.read_text(encoding="utf-8"))
    return {key: {lang: str(value) for lang, value in entry.items()} for key, entry in data.items()}


def tr(key: str, language: str = DEFAULT_LANGUAGE, **values: object) -> str:
    """The text ``key`` in ``language`` (Dutch when not translated), placeholders filled in."""
    entry = catalogue().get(key)
    if entry is None:
        raise KeyError(f"no text {key!r} in {CATALOGUE.name}")
    wording = entry.get(language) or entry[DEFAULT_LANGUAGE]
    return wording.format(**values) if values else wording
