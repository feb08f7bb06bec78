"""One prompt catalogue (STYLE rule 7): every id the code asks for exists, every id is used.

Code names a prompt by its id as a string literal (``call.say("police_enter_pin")``,
``voice.prompt("police_sent", language)``, ``error_prompt="police_bin_unknown"``); the dialplan
by the bare id.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path


from ivr.media.prompts import load_catalogue

PROJECT = Path(__file__).resolve().parents[3]
#: Functions and methods whose first or second positional argument is a prompt id: the renderer
#: (text, path_for, wav, placeholders), Voice.prompt, ivr.media.prompts.text, and the flows' Call
#: (say, ask, read_digits) and ``choose(call, prompt_id, ...)``.
PROMPT_CALLS = {"text", "path_for", "wav", "placeholders", "prompt", "say", "ask", "read_digits", "choose"}


def asked_prompt_ids(source: str) -> set[str]:
    """String literals the code hands over as prompt ids (also ``*prompt=`` keyword arguments)."""
    asked: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        candidates = list(node.args[:2]) if name in PROMPT_CALLS else []
        candidates += [kw.value for kw in node.keywords
                       if kw.arg and kw.arg.endswith(("prompt", "prompt_id"))]
        for arg in candidates:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                    and re.fullmatch(r"[a-z][a-z0-9_]*", arg.value):
                asked.add(arg.value)
                break
    return asked


def _python_sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted((PROJECT / "ivr").rglob("*.py"))}


def _dialplan_sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted((PROJECT / "dialplan").glob("*.conf"))}


def test_every_prompt_the_code_asks_for_is_in_the_catalogue() -> None:
    catalogue = load_catalogue()
    asked = {(path.relative_to(PROJECT), prompt_id)
             for path, source in _python_sources().items() for prompt_id in asked_prompt_ids(source)}
    assert asked, "the scan found no prompt use at all: the pattern is out of date"
    unknown = sorted((str(path), prompt_id) for path, prompt_id in asked if prompt_id not in catalogue)
    assert unknown == []


def test_the_scan_recognises_every_way_of_naming_a_prompt() -> None:
    source = (
        'await call.say("police_sent")\n'
        'await call.ask("police_bin_confirm", 5.0)\n'
        'await choose(call, "review_menu", "1239", 8.0)\n'
        'await voice.prompt("review_header", language, zone="x")\n'
        'text("demo_test_message")\n'
        'BinChoice(error_prompt="police_bin_unknown")\n'
        'log.info("not_a_prompt")\n'
        'await voice.free_text("vrije tekst", "nl")\n'
    )
    assert asked_prompt_ids(source) == {"police_sent", "police_bin_confirm", "review_menu", "review_header",
                                        "demo_test_message", "police_bin_unknown"}


def test_every_prompt_is_used() -> None:
    python = "\n".join(_python_sources().values())
    dialplan = "\n".join(_dialplan_sources().values())
    unused = [
        prompt_id for prompt_id in load_catalogue()
        if f'"{prompt_id}"' not in python and f"'{prompt_id}'" not in python
        and not re.search(rf"\b{prompt_id}\b", dialplan)
    ]
    assert unused == []
