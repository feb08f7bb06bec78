"""The prompt catalogue: every prompt in Dutch, French and German, the same placeholders in each;
malformed files refused."""

import argparse
from pathlib import Path

import pytest

from ivr.commands import prompts as prompts_command
from ivr.config import Settings
from ivr.media.prompts import LANGUAGES, CatalogueError, load_catalogue, placeholders


def test_the_shipped_catalogue_is_complete() -> None:
    catalogue = load_catalogue()
    assert catalogue
    for texts in catalogue.values():
        assert set(texts) == set(LANGUAGES) and all(t.strip() for t in texts.values())


@pytest.mark.parametrize(
    "body",
    ['[greet]\nnl = "Hallo"\nfr = "Bonjour"\n', '[Greet]\nnl = "a"\nfr = "b"\nde = "c"\n',
     '[greet]\nnl = "a"\nfr = "b"\nde = "c"\nen = "d"\n', '[greet\n'],
)
def test_malformed_catalogues_are_refused(tmp_path: Path, body: str) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(body)
    with pytest.raises(CatalogueError):
        load_catalogue(path)


# --- placeholders --------------------------------------------------------------------------

#: The prompts the police and review flows speak, with the placeholders each one takes.
FLOW_PROMPTS: dict[str, set[str]] = {
    "police_enter_pin": set(), "police_pin_wrong": set(), "police_locked": set(),
    "police_enter_bin": set(), "police_bin_unknown": set(), "police_bin_other_zone": set(),
    "police_bin_chosen": {"number", "name"}, "police_bin_confirm": set(), "police_choose_urgency": set(),
    "police_record_after_beep": set(), "police_recording_empty": set(), "police_recording_too_long": set(),
    "police_review_menu": set(), "police_sent": set(), "police_cancelled": set(),
    "invalid_choice": set(), "no_input_goodbye": set(), "try_again_later": set(),
    "review_intro": set(), "review_header": {"urgency", "zone", "hour", "minute", "bin"},
    "word_urgent": set(), "word_preventive": set(), "review_menu": set(), "review_later_ask": set(),
    "review_later_invalid": set(), "review_forwarded_now": set(),
    "review_forwarded_later": {"hour", "minute"},
    "review_rejected": set(), "review_already_decided": set(), "review_no_decision": set(),
}


def test_the_catalogue_has_every_flow_prompt_with_its_placeholders() -> None:
    catalogue = load_catalogue()
    assert set(FLOW_PROMPTS) <= set(catalogue), sorted(set(FLOW_PROMPTS) - set(catalogue))
    for prompt_id, expected in FLOW_PROMPTS.items():
        for language in LANGUAGES:
            assert placeholders(catalogue[prompt_id][language]) == expected, (prompt_id, language)


def test_every_language_of_a_prompt_has_the_same_placeholders() -> None:
    for prompt_id, texts in load_catalogue().items():
        found = {language: placeholders(texts[language]) for language in LANGUAGES}
        assert len(set(found.values())) == 1, (prompt_id, found)


def test_placeholders_are_the_format_fields() -> None:
    assert placeholders("U koos BIN {number}, {name}.") == {"number", "name"}
    assert placeholders("{hour} uur {minute}, om {hour} uur") == {"hour", "minute"}
    assert placeholders("geen {{accolades}} hier") == set()
    assert "{{x}}".format() == "{x}"  # literal braces survive formatting


@pytest.mark.parametrize(
    "bad", ["{}", "{0}", "{name!r}", "{name:>5}", "{a.b}", "{a[0]}", "{Name}", "{name", "name}"]
)
def test_odd_placeholders_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        placeholders(f"Hallo {bad}.")


def test_a_prompt_whose_languages_disagree_on_placeholders_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text('[ok]\nnl = "a {x}"\nfr = "b {x}"\nde = "c {x}"\n\n'
                    '[bin_chosen]\nnl = "U koos BIN {number}, {name}."\n'
                    'fr = "Vous avez choisi le BIN {number}."\n'
                    'de = "Sie haben gewählt: BIN {nummer}, {name}."\n', encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    message = str(caught.value)
    assert "[bin_chosen]" in message and "same placeholders" in message
    assert "fr has {number}" in message and "de has {name, nummer}" in message


def test_a_malformed_placeholder_is_refused_with_prompt_and_language(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text('[greet]\nnl = "Hallo {0}"\nfr = "Bonjour {0}"\nde = "Hallo {0}"\n', encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"\[greet\] nl: placeholder \{0\}"):
        load_catalogue(path)


# --- `binfoon prompts list` ------------------------------------------------------------------


def test_prompts_list_prints_every_id_with_its_dutch_text(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    prompts_command.register(parser.add_subparsers(dest="area", required=True))
    args = parser.parse_args(["prompts", "list"])
    assert args.func(Settings(), args) == 0
    lines = capsys.readouterr().out.splitlines()
    catalogue = load_catalogue()
    assert len(lines) == len(catalogue)
    for line, (prompt_id, texts) in zip(lines, catalogue.items()):
        assert line.split(maxsplit=1) == [prompt_id, texts["nl"]]
