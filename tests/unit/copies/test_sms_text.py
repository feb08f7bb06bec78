"""The SMS copy's text: GSM 03.38 counting, the 2-SMS limit, truncation that keeps the call-back number."""

from __future__ import annotations

import pytest

from ivr.copies.sms_text import (
    GSM_BASIC,
    GSM_EXTENSION,
    MAX_SEGMENTS,
    WORDING,
    SmsContent,
    compose_sms,
    count_segments,
    is_gsm,
    measure,
    plain,
)
from ivr.domain.vocabulary import Urgency

NUMBER = "+3250123456"


def content(**overrides: object) -> SmsContent:
    values: dict[str, object] = {"language": "nl", "bin_name": "Gent-Centrum", "urgency": Urgency.URGENT,
                                 "drill": False, "callback_number": NUMBER, "text": "Verdachte wagen in de Kerkstraat."}
    values.update(overrides)
    return SmsContent(**values)  # type: ignore[arg-type]


# -- counting ---------------------------------------------------------------------------------------------
def test_the_gsm_tables_are_those_of_03_38() -> None:
    assert len(GSM_BASIC) == 127  # 128 codes, one of them the escape to the extension table
    assert len(GSM_EXTENSION) == 10
    assert is_gsm("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà{}[]~^|\\€")
    for outside in ("ő", "ç", "â", "`", "🚓", "’", "…", "ê"):
        assert not is_gsm(outside), outside


@pytest.mark.parametrize(("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3)])
def test_gsm7_boundaries(length: int, segments: int) -> None:
    text = "a" * length
    assert measure(text).unicode is False
    assert measure(text).segments == segments


def test_extension_characters_count_two() -> None:
    assert measure("€" * 80).segments == 1       # 160 septets
    assert measure("€" * 81).segments == 2       # 162
    assert measure("a" * 158 + "{").segments == 1
    assert measure("a" * 159 + "{").segments == 2
    assert measure("[" * 80).segments == 1         # 160 septets
    assert measure("[" * 153).segments == 3        # 306 septets, but a part holds 76 pairs (152), never 76.5


def test_an_escape_pair_is_never_split_over_two_parts() -> None:
    # 306 septets, but the euro would straddle parts 1 and 2: it moves to part 2, and one septet spills over.
    assert count_segments("a" * 152 + "€" + "a" * 152, unicode=False) == 3
    assert count_segments("a" * 151 + "€" + "a" * 153, unicode=False) == 2


@pytest.mark.parametrize("outside", ["ő", "🚓", "ç", "’"])
def test_one_character_outside_gsm_switches_the_whole_text_to_ucs2(outside: str) -> None:
    sms = measure("Hallo wereld " + outside)
    assert sms.unicode is True
    assert sms.segments == 1


@pytest.mark.parametrize(("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_boundaries(length: int, segments: int) -> None:
    assert measure("ő" * length).segments == segments


def test_a_character_beyond_the_bmp_is_two_ucs2_units_and_never_split() -> None:
    assert measure("🚓" * 35).segments == 1      # 70 units
    assert measure("a" * 69 + "🚓").segments == 2
    assert count_segments("a" * 66 + "🚓" + "a" * 66, unicode=True) == 3  # 134 units, the pair pushed on


def test_letters_without_a_gsm_code_become_their_look_alikes_and_gsm_letters_stay() -> None:
    assert plain("ê â î ô û ç ë ï ÿ À È Ê Ë Î Ï Ô Û Ù Â") == "e a i o u c e i y A E E E I I O U U A"
    assert plain("cœur Œuvre ĳs Győr Łódź") == "coeur OEuvre ijs Gyor Lodz"
    kept = "é è à ù ì ò ä ö ü ñ Ä Ö Ü Ñ É Ç Å å Ø ø Æ æ ß"
    assert plain(kept) == kept
    assert plain("e\u0301te\u0301") == "été"  # a combining accent on a GSM letter: composed
    for outside in ("Москва", "🚓", "αβγ", "日本"):
        assert plain(outside) == outside and not is_gsm(plain(outside)), outside


@pytest.mark.parametrize(("language", "text"), [
    ("fr", ("Fête à l'hôtel de ville: une façade brûlée, cœur du quartier; l'île, la forêt et la gîte "
            "sont fermées. Soyez prudents, ne sortez pas, fermez fenêtres et volets. Merci à tous.")),
    ("nl", ("Inbraak in de Citroënstraat (België): de daders vluchtten naar de Noël-, Reëel- en "
            "Naïefstraat. Wees waakzaam, sluit ramen en deuren, meld verdachte zaken aan de politie.")),
])
def test_french_and_dutch_accents_stay_gsm7_within_two_sms(language: str, text: str) -> None:
    sms = compose_sms(content(language=language, text=text))
    assert (sms.unicode, sms.segments) == (False, 2)
    assert is_gsm(sms.text) and "..." not in sms.text  # nothing cut: the whole text fits
    folded = ["Fete à l'hotel", "facade brulée", "coeur", "l'ile", "foret"] if language == "fr" else \
        ["Citroenstraat (Belgie)", "Noel-, Reeel- en Naiefstraat"]
    assert all(word in sms.text for word in folded)


def test_plain_makes_typed_text_gsm_without_changing_its_meaning() -> None:
    typed = "Het ‘rode’ busje – “ZX-123” …\n\tgezien\u00a0om 14u"
    assert plain(typed) == "Het 'rode' busje - \"ZX-123\" ... gezien om 14u"
    assert is_gsm(plain(typed))
    assert plain("a\x00b\x1bc\r\nd") == "a b c d"


# -- composing --------------------------------------------------------------------------------------------
def test_a_short_typed_message() -> None:
    sms = compose_sms(content())
    assert sms.text == ("BIN Gent-Centrum DRINGEND: Verdachte wagen in de Kerkstraat. "
                        f"Bel {NUMBER} om te beluisteren. Antwoord 1 = ontvangen")
    assert (sms.unicode, sms.segments) == (False, 1)


@pytest.mark.parametrize(("language", "urgent", "preventive"),
                         [("nl", "DRINGEND", "PREVENTIEF"), ("fr", "URGENT", "PRÉVENTIF"),
                          ("de", "DRINGEND", "VORBEUGEND")])
def test_the_urgency_in_the_members_language(language: str, urgent: str, preventive: str) -> None:
    assert f"BIN Gent-Centrum {urgent}: " in compose_sms(content(language=language)).text
    sms = compose_sms(content(language=language, urgency=Urgency.PREVENTIVE))
    assert f"BIN Gent-Centrum {preventive}: " in sms.text
    assert sms.text.endswith(WORDING[language]["reply"])
    assert NUMBER in sms.text
    assert sms.unicode is False  # the fixed words are all GSM-7, French accents included


def test_every_fixed_word_is_gsm7() -> None:
    for words in WORDING.values():
        for phrase in words.values():
            assert is_gsm(phrase.format(number=NUMBER)), phrase


def test_an_unknown_language_gets_dutch() -> None:
    assert "DRINGEND" in compose_sms(content(language="en")).text


def test_a_drill_says_test_first() -> None:
    assert compose_sms(content(drill=True)).text.startswith("TEST BIN Gent-Centrum DRINGEND: ")


def test_a_transcript_says_it_is_machine_made_and_typed_text_wins() -> None:
    sms = compose_sms(content(text=None, transcript="verdachte wagen gezien"))
    assert "DRINGEND: (automatisch uitgeschreven) verdachte wagen gezien Bel " in sms.text
    both = compose_sms(content(text="Getypte tekst.", transcript="iets anders"))
    assert "Getypte tekst." in both.text and "iets anders" not in both.text


@pytest.mark.parametrize(("language", "sentence"), [("nl", "Er is een nieuw bericht voor u."),
                                                    ("fr", "Un nouveau message vous attend."),
                                                    ("de", "Eine neue Nachricht wartet auf Sie.")])
def test_without_text_or_transcript_it_says_a_message_waits(language: str, sentence: str) -> None:
    sms = compose_sms(content(language=language, text=None, transcript="  "))
    assert f": {sentence} " in sms.text
    assert WORDING[language]["callback"].format(number=NUMBER) in sms.text


def frame_length() -> int:
    """Septets of the Dutch frame around a one-character message (the message's own character left out)."""
    return len(compose_sms(content(text="x")).text) - 1


def test_a_message_that_fills_two_sms_exactly_is_not_cut() -> None:
    body = "a" * (2 * 153 - frame_length())
    sms = compose_sms(content(text=body))
    assert len(sms.text) == 306
    assert (sms.unicode, sms.segments) == (False, 2)
    assert body in sms.text and "..." not in sms.text


def test_one_character_more_is_cut_and_keeps_the_tail() -> None:
    body = "a" * (2 * 153 - frame_length() + 1)
    sms = compose_sms(content(text=body))
    assert sms.segments == MAX_SEGMENTS
    assert len(sms.text) <= 306
    assert sms.text.endswith(f"... Bel {NUMBER} om te beluisteren. Antwoord 1 = ontvangen")
    assert sms.text.startswith("BIN Gent-Centrum DRINGEND: aaaa")


def test_a_long_message_is_cut_at_a_word_with_three_dots_in_gsm7() -> None:
    long = " ".join(f"woord{i}" for i in range(200))
    sms = compose_sms(content(text=long))
    assert (sms.unicode, sms.segments) == (False, 2)
    kept = sms.text.split(": ", 1)[1].split("... Bel ", 1)[0]
    assert long.startswith(kept) and long[len(kept)] == " "  # a whole word, then the dots
    assert sms.text.endswith("Antwoord 1 = ontvangen")
    assert len(sms.text) > 280  # nearly two SMS used, not a timid cut


def test_a_long_unicode_message_is_cut_with_an_ellipsis_character() -> None:
    long = "Verdachte wagen in Москва gezien, " * 20
    sms = compose_sms(content(text=long))
    assert (sms.unicode, sms.segments) == (True, 2)
    assert "… Bel " in sms.text and "..." not in sms.text
    assert sms.text.endswith(f"Bel {NUMBER} om te beluisteren. Antwoord 1 = ontvangen")
    assert len(sms.text) <= 134


def test_a_character_outside_gsm_that_is_cut_away_does_not_force_ucs2() -> None:
    long = "a " * 300 + "ж"
    sms = compose_sms(content(text=long))
    assert (sms.unicode, sms.segments) == (False, 2)
    assert "ж" not in sms.text


def test_extension_characters_in_a_long_message_are_counted_twice() -> None:
    sms = compose_sms(content(text="{€} " * 200))
    assert sms.segments == 2
    assert count_segments(sms.text, unicode=False) == 2
    assert sum(2 if c in GSM_EXTENSION else 1 for c in sms.text) <= 306


def test_a_long_bin_name_is_cut_and_the_number_still_fits() -> None:
    sms = compose_sms(content(bin_name="Ж" * 200, text="ж" * 500, language="fr"))
    assert sms.segments <= 2
    assert sms.text.endswith(f"Appelez le {NUMBER} pour l'écouter. Répondez 1 pour confirmer")
    assert "Ж" * 40 in sms.text and "Ж" * 41 not in sms.text


def test_without_a_call_back_number_the_reply_hint_stays() -> None:
    sms = compose_sms(content(callback_number=""))
    assert sms.text == "BIN Gent-Centrum DRINGEND: Verdachte wagen in de Kerkstraat. Antwoord 1 = ontvangen"


def test_an_absurd_call_back_number_is_refused() -> None:
    with pytest.raises(ValueError, match="call-back number"):
        compose_sms(content(callback_number="ж" * 200))


def test_a_text_that_stays_ucs2_keeps_its_marks_and_accents() -> None:
    # Hindi writes vowels with combining marks, Russian has no GSM-7 letters: both go as UCS-2 as written,
    # and the French accents beside them are kept too (folding would not make the text GSM-7).
    for text in ("नमस्ते", "Внимание: ê"):
        assert plain(text) == text
        assert measure(plain(text)).unicode
    assert plain("Être prudent à Liège") == "Etre prudent à Liège"  # GSM-7 after folding: folded
