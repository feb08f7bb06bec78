"""``binfoon prompts build|list``: render the prompt catalogue into the cache; show it."""

from __future__ import annotations

import argparse
import time

from ivr.commands.common import CommandError
from ivr.config import Settings
from ivr.media import voice
from ivr.media.prompts import LANGUAGES, CatalogueError, load_catalogue, placeholders


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``prompts`` commands."""
    parser = sub.add_parser("prompts", help="the prompt catalogue and its rendered audio")
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="render every prompt missing from the cache (8 kHz WAV)")
    build.add_argument("--language", dest="languages", action="append", choices=LANGUAGES,
                       help="only this language (repeatable; default: all)")
    build.set_defaults(func=cmd_build)
    actions.add_parser("list", help="every prompt id with its Dutch text").set_defaults(func=cmd_list)


def _catalogue() -> dict[str, dict[str, str]]:
    try:
        return load_catalogue()
    except CatalogueError as exc:
        raise CommandError(str(exc)) from exc


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    """Render what is missing; prompts with placeholders are rendered during calls, with their values."""
    languages = tuple(dict.fromkeys(args.languages or LANGUAGES))
    catalogue = _catalogue()
    cache_dir = voice.DEFAULT_CACHE_DIR
    started = time.monotonic()
    with voice.PromptRenderer(cache_dir, catalogue) as renderer:
        try:
            rendered = renderer.render_all(languages)
        except (OSError, RuntimeError, ValueError) as exc:
            raise CommandError(f"could not render the prompts into {cache_dir}: {exc} "
                               "(is espeak-ng installed? `make demo` installs it)") from exc
    elapsed_s = time.monotonic() - started
    dynamic = sorted(p for p, texts in catalogue.items() if placeholders(texts["nl"]))
    static = (len(catalogue) - len(dynamic)) * len(languages)
    print(f"rendered {rendered} prompt(s) ({', '.join(languages)}) into {cache_dir} in {elapsed_s:.1f} s; "
          f"{static - rendered} already there")
    if dynamic:
        print(f"{len(dynamic)} prompt(s) with placeholders are rendered during calls: {', '.join(dynamic)}")
    return 0


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    """One line per prompt: id and Dutch text."""
    catalogue = _catalogue()
    width = max((len(p) for p in catalogue), default=0)
    for prompt_id, texts in catalogue.items():
        print(f"{prompt_id:<{width}}  {texts['nl']}")
    return 0
