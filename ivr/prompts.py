"""The prompt catalogue: the only source of the words the system speaks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

CATALOGUE = Path(__file__).resolve().parents[1] / "prompts" / "catalogue.toml"
LANGUAGES = ("nl", "fr", "de")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")


class CatalogueError(ValueError):
    """The catalogue file is malformed; the message names the prompt and what is wrong."""


def load_catalogue(path: Path = CATALOGUE) -> dict[str, dict[str, str]]:
    """All prompts: ``{prompt_id: {language: text}}``, checked for ids and all three languages."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{path}: {exc}") from exc
    catalogue: dict[str, dict[str, str]] = {}
    for prompt_id, texts in data.items():
        if not _ID.match(prompt_id) or not isinstance(texts, dict):
            raise CatalogueError(f"{path}: [{prompt_id}] is not a prompt table with a snake_case id")
        missing = [lang for lang in LANGUAGES if not str(texts.get(lang, "")).strip()]
        extra = sorted(set(texts) - set(LANGUAGES))
        if missing or extra:
            raise CatalogueError(f"{path}: [{prompt_id}] missing {missing or '-'}, unknown {extra or '-'}")
        catalogue[prompt_id] = {lang: str(texts[lang]) for lang in LANGUAGES}
    return catalogue


def text(prompt_id: str, language: str = "nl") -> str:
    """The text of one prompt in one language."""
    return load_catalogue()[prompt_id][language]
