"""The prompt catalogue: the only source of the words the system speaks.

Rules: ids are snake_case; every prompt has all three languages; a text may hold ``{name}``
placeholders (filled with ``str.format`` at run time) and every language of a prompt has exactly
the same set of them, so a flow can fill a prompt without knowing the caller's language.
"""

from __future__ import annotations

import re
import string
import tomllib
from pathlib import Path

CATALOGUE = Path(__file__).resolve().parents[2] / "prompts" / "catalogue.toml"
LANGUAGES = ("nl", "fr", "de")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_PLACEHOLDER = re.compile(r"^[a-z][a-z0-9_]*$")


class CatalogueError(ValueError):
    """The catalogue file is malformed; the message names the prompt and what is wrong."""


def placeholders(text: str) -> frozenset[str]:
    """The ``{name}`` placeholders of a text.

    Only plain snake_case names are allowed: no positional ``{}``/``{0}``, no ``{a.b}``/``{a[0]}``,
    no ``!r`` or ``:format`` (a spoken text has no use for them, and they would make the set of
    values a prompt needs ambiguous). Literal braces are written ``{{`` and ``}}``.
    Raises ``ValueError`` for anything else.
    """
    names: set[str] = set()
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"bad braces ({exc})") from exc
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        if not _PLACEHOLDER.match(name) or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"placeholder {shown} is not a plain {{snake_case}} name")
        names.add(name)
    return frozenset(names)


def check_prompt(prompt_id: str, texts: object) -> frozenset[str]:
    """Check one prompt's table (snake_case id, exactly the three languages, the same
    placeholders in each) and return its placeholders. Raises ``CatalogueError`` naming the prompt."""
    if not _ID.match(prompt_id) or not isinstance(texts, dict):
        raise CatalogueError(f"[{prompt_id}] is not a prompt table with a snake_case id")
    missing = [lang for lang in LANGUAGES if not str(texts.get(lang, "")).strip()]
    extra = sorted(set(texts) - set(LANGUAGES))
    if missing or extra:
        raise CatalogueError(f"[{prompt_id}] missing {missing or '-'}, unknown {extra or '-'}")
    found: dict[str, frozenset[str]] = {}
    for lang in LANGUAGES:
        try:
            found[lang] = placeholders(str(texts[lang]))
        except ValueError as exc:
            raise CatalogueError(f"[{prompt_id}] {lang}: {exc}") from exc
    if len(set(found.values())) > 1:
        shown = "; ".join(f"{lang} has {{{', '.join(sorted(names))}}}" for lang, names in found.items())
        raise CatalogueError(f"[{prompt_id}] every language must use the same placeholders: {shown}")
    return found[LANGUAGES[0]]


def load_catalogue(path: Path = CATALOGUE) -> dict[str, dict[str, str]]:
    """All prompts: ``{prompt_id: {language: text}}``, each checked with ``check_prompt``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{path}: {exc}") from exc
    catalogue: dict[str, dict[str, str]] = {}
    for prompt_id, texts in data.items():
        try:
            check_prompt(prompt_id, texts)
        except CatalogueError as exc:
            raise CatalogueError(f"{path}: {exc}") from None
        catalogue[prompt_id] = {lang: str(texts[lang]) for lang in LANGUAGES}
    return catalogue


def text(prompt_id: str, language: str = "nl") -> str:
    """The text of one prompt in one language (placeholders not filled)."""
    return load_catalogue()[prompt_id][language]
