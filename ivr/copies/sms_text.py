"""What one member's SMS copy says, and how many SMS it costs.

Rules:
- the text is ``[TEST ]BIN <name> <DRINGEND|PREVENTIEF>: <message> Bel <number> om te beluisteren.
  Antwoord 1 = ontvangen`` in the member's language (nl, fr, de; Dutch when it is not known);
- the message is the typed text, else the machine transcript (said to be one), else a sentence that a
  new message waits and the member should call;
- at most ``MAX_SEGMENTS`` SMS: GSM-7 (GSM 03.38) when every character has a GSM code, else UCS-2;
  a message that does not fit is cut (at a word where one is near) and ends with "..." (GSM-7) or
  "…" (UCS-2); the BIN, the call-back number and the reply hint are never cut;
- typographic quotes, dashes, the ellipsis and odd spaces become their GSM-7 look-alikes, and all
  white space (line breaks too) one space: a phone keyboard's ``’`` would otherwise halve what fits;
- a letter GSM-7 has no code for is written as its GSM-7 look-alike (``ê`` as ``e``, ``ç`` as ``c``,
  ``œ`` as ``oe``: the accent dropped, the ligature spelt out), so French and Dutch stay GSM-7; the
  accented letters GSM-7 has (é è à ù ì ò ä ö ü ñ Ä Ö Ü Ñ É Ç) are kept as they are. Only a character
  with no look-alike (Cyrillic, Greek small letters, an emoji) makes the copy UCS-2.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from ivr.domain.vocabulary import Urgency

#: An SMS copy is at most this many SMS (what a member's phone joins into one message).
MAX_SEGMENTS = 2
#: Septets in one GSM-7 SMS, and in each part of a concatenated one (the rest is the 6-byte UDH).
GSM_SINGLE, GSM_PART = 160, 153
#: UTF-16 code units in one UCS-2 SMS, and in each part of a concatenated one.
UCS2_SINGLE, UCS2_PART = 70, 67
#: A BIN's name is cut to this many characters (it is never the message).
NAME_CHARS = 40
#: A cut is moved back to the last space when that space is this close to the cut.
WORD_BACKTRACK = 15

#: GSM 03.38 default alphabet: one septet each (0x1B, the escape, is not a character).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: GSM 03.38 extension table: escape + one septet, so two each.
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

#: Look-alikes with the same meaning that GSM-7 has (typed text is full of them).
_PLAIN = str.maketrans({
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'", "´": "'", "`": "'",
    "“": '"', "”": '"', "„": '"', "‟": '"', "″": '"', "«": '"', "»": '"',
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-",
    "\u00a0": " ", "\u2007": " ", "\u202f": " ", "\u2009": " ", "\u200a": " ", "\u2002": " ", "\u2003": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "", "\u00ad": "",
})
#: Letters whose look-alike is not their decomposition without accents.
_SPELT_OUT = {"œ": "oe", "Œ": "OE", "ĳ": "ij", "Ĳ": "IJ", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D"}
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

#: The fixed words of an SMS copy, per language. Each is GSM-7 as it is (no look-alike needed).
WORDING: dict[str, dict[str, str]] = {
    "nl": {
        "urgent": "DRINGEND",
        "preventive": "PREVENTIEF",
        "transcript": "(automatisch uitgeschreven)",
        "waiting": "Er is een nieuw bericht voor u.",
        "callback": "Bel {number} om te beluisteren.",
        "reply": "Antwoord 1 = ontvangen",
    },
    "fr": {
        "urgent": "URGENT",
        "preventive": "PRÉVENTIF",
        "transcript": "(transcription automatique)",
        "waiting": "Un nouveau message vous attend.",
        "callback": "Appelez le {number} pour l'écouter.",
        "reply": "Répondez 1 pour confirmer",
    },
    "de": {
        "urgent": "DRINGEND",
        "preventive": "VORBEUGEND",
        "transcript": "(automatisch transkribiert)",
        "waiting": "Eine neue Nachricht wartet auf Sie.",
        "callback": "Rufen Sie {number} an, um sie anzuhören.",
        "reply": "Antwort 1 = erhalten",
    },
}


@dataclass(frozen=True)
class SmsContent:
    """What one member's SMS copy is made of: the campaign's message, its BIN and the member's language."""

    #: The member's language (nl, fr, de).
    language: str
    bin_name: str
    urgency: Urgency
    drill: bool
    #: The BIN line a member calls back on to hear and confirm the message (E.164).
    callback_number: str
    #: The typed text (a message given in writing).
    text: str | None = None
    #: The speech recogniser's transcript of the recording (always machine-made).
    transcript: str | None = None


@dataclass(frozen=True)
class SmsText:
    """An SMS copy's text as it goes to the gateway."""

    text: str
    #: ``True``: UCS-2 (some character has no GSM-7 code); ``False``: GSM-7.
    unicode: bool
    #: How many SMS it is sent as (1 or ``MAX_SEGMENTS``).
    segments: int


def plain(text: str) -> str:
    """``text`` on one line for an SMS: GSM-7 look-alikes for typographic quotes, dashes and spaces, the
    ellipsis as "...", and for letters without a GSM-7 code (``gsm_letter``); control characters and
    runs of white space as one space, ends trimmed."""
    # Composed first: an "e" followed by a combining acute is the GSM-7 "é".
    text = unicodedata.normalize("NFC", text.translate(_PLAIN).replace("…", "..."))
    text = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    folded = "".join(c if c in GSM_BASIC or c in GSM_EXTENSION else gsm_letter(c) for c in text)
    # Folding only pays when it makes the whole text GSM-7; a text that goes as UCS-2 anyway keeps its
    # letters (stripping marks would damage scripts that write vowels with them).
    return folded if is_gsm(folded) else text


def gsm_letter(c: str) -> str:
    """The GSM-7 look-alike of the character ``c``: itself when GSM-7 has it; ``œ`` spelt ``oe``; else its
    compatibility decomposition without accents (``ê`` -> ``e``, ``ĳ`` -> ``ij``) when all of that is
    GSM-7; else ``c`` itself (a Cyrillic letter, an emoji: the copy goes as UCS-2). An accent on its own
    is dropped."""
    if c in GSM_BASIC or c in GSM_EXTENSION:
        return c
    if unicodedata.combining(c):
        return ""
    if c in _SPELT_OUT:
        return _SPELT_OUT[c]
    bare = "".join(part for part in unicodedata.normalize("NFKD", c) if not unicodedata.combining(part))
    return bare if bare and is_gsm(bare) else c


def is_gsm(text: str) -> bool:
    """Whether every character of ``text`` has a GSM 03.38 code (basic or extension table)."""
    return all(c in GSM_BASIC or c in GSM_EXTENSION for c in text)


def _costs(text: str, unicode: bool) -> list[int]:
    """Per character: septets (GSM-7) or UTF-16 code units (UCS-2)."""
    if unicode:
        return [2 if ord(c) > 0xFFFF else 1 for c in text]
    return [2 if c in GSM_EXTENSION else 1 for c in text]


def count_segments(text: str, unicode: bool) -> int:
    """How many SMS ``text`` takes in the given coding. One SMS up to 160 septets (70 UCS-2 units);
    beyond, parts of 153 (67): an escape pair or a surrogate pair is never split over two parts, so a
    part may hold one less."""
    costs = _costs(text, unicode)
    single, part = (UCS2_SINGLE, UCS2_PART) if unicode else (GSM_SINGLE, GSM_PART)
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def measure(text: str) -> SmsText:
    """``text`` as it would be sent: GSM-7 when it can be, else UCS-2, and how many SMS that is."""
    unicode = not is_gsm(text)
    return SmsText(text=text, unicode=unicode, segments=count_segments(text, unicode))


def _fitted(head: str, body: str, tail: str) -> SmsText | None:
    """``head + body + tail`` with ``body`` cut (ellipsis added) so the whole fits ``MAX_SEGMENTS``;
    ``None`` when not even an empty body fits."""
    whole = measure(f"{head}{body} {tail}")
    if whole.segments <= MAX_SEGMENTS:
        return whole

    def cut(n: int) -> SmsText:
        kept = body[:n].rstrip()
        gsm = is_gsm(f"{head}{kept}{tail}")
        return measure(f"{head}{kept}{'...' if gsm else '…'} {tail}")

    # The longest prefix that fits: more text never costs less (a prefix that needs UCS-2 stays UCS-2).
    low, high = -1, len(body)
    while high - low > 1:
        middle = (low + high) // 2
        if cut(middle).segments <= MAX_SEGMENTS:
            low = middle
        else:
            high = middle
    if low < 0:
        return None
    space = body.rfind(" ", 0, low + 1)
    if space > 0 and low - space <= WORD_BACKTRACK:
        low = space
    return cut(low)


def compose_sms(content: SmsContent) -> SmsText:
    """One member's SMS copy (see the module's rules). ``ValueError`` when the BIN's name and the call-back
    number alone are too long for ``MAX_SEGMENTS`` SMS (the name is cut, so only for an absurd number)."""
    words = WORDING.get(content.language, WORDING["nl"])
    name = plain(content.bin_name)[:NAME_CHARS].strip()
    number = plain(content.callback_number)
    head = f"{'TEST ' if content.drill else ''}BIN {name} {words[content.urgency.value]}: "
    # Without a call-back number (none configured) the SMS still carries the message and the reply hint.
    tail = f"{words['callback'].format(number=number)} {words['reply']}" if number else words["reply"]
    text = plain(content.text or "")
    transcript = plain(content.transcript or "")
    if text:
        body = text
    elif transcript:
        head += f"{words['transcript']} "
        body = transcript
    else:
        body = words["waiting"]
    fitted = _fitted(head, body, tail)
    if fitted is None:
        raise ValueError(f"the SMS frame alone is longer than {MAX_SEGMENTS} SMS (call-back number {number!r})")
    return fitted
