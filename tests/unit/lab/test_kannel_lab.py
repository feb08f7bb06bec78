"""What the lab makes of fakesmsc's output: lines as Debian's fakesmsc 1.4.5 prints them (the first ones
copied from a run), concatenated SMS joined, a GSM-7 line break put back. The real Kannel is in
tests/integration/test_kannel.py."""

from __future__ import annotations

import urllib.parse

from ivr.lab.fakesmsc import Inbox

PREFIX = "2026-12-06 21:35:35 [8445] [0] DEBUG: Got message 7: "


def kannel_encoded(data: bytes) -> str:
    """Kannel's ``octstr_url_encode``: a space as ``+``, everything but letters and digits escaped."""
    return urllib.parse.quote_plus(data, safe="-_.~")


def udh_line(sender: str, receiver: str, reference: int, total: int, sequence: int, data: bytes) -> str:
    udh = bytes([5, 0, 3, reference, total, sequence])
    return f"{PREFIX}<{sender} {receiver} udh {kannel_encoded(udh)} data {kannel_encoded(data)}>"


def test_text_and_ucs2_lines_as_fakesmsc_prints_them() -> None:
    inbox = Inbox()
    inbox.line(f"{PREFIX}<+3250000000 +32470000001 text é à ü ß Ä ñ Ø å Ü ¿ ¡ §>")
    inbox.line(f"{PREFIX}<+3250000000 +32470000001 ucs-2 %00G%00y%00%F5%00r%00+%01Q%00+%00e%00m%00o%00j%00i%00+"
               "%D8%3D%DE%93%00+%00t%00e%00s%00t>")
    inbox.line("2026-12-06 21:35:35 [8445] [0] INFO: fakesmsc starting")
    first, second = inbox.messages
    assert (first.sender, first.receiver, first.text, first.unicode) == (
        "+3250000000", "+32470000001", "é à ü ß Ä ñ Ø å Ü ¿ ¡ §", False)
    assert (second.text, second.unicode, second.parts) == ("Gyõr ő emoji 🚓 test", True, 1)


def test_a_gsm7_line_break_comes_as_a_second_line_and_is_put_back() -> None:
    inbox = Inbox()
    inbox.line(f"{PREFIX}<+3250000000 +32470000001 text line1>")
    inbox.line("2026-12-06 21:35:35 [8445] [0] DEBUG: Got message 11: <line2 & = + %>")
    (sms,) = inbox.messages
    assert sms.text == "line1\nline2 & = + %"


def test_concatenated_parts_are_joined_in_order_whatever_order_they_come_in() -> None:
    inbox = Inbox()
    text = "BIN Gent DRINGEND: Verdachte wagen {rood} [x] ^~ \\ | € gezien + 50% korting".encode()
    inbox.line(udh_line("+3250000000", "+32470000001", 3, 2, 2, text[40:]))
    inbox.line(udh_line("+3250000000", "+32470000002", 3, 2, 1, b"other "))  # same reference, other member
    assert inbox.messages == []
    inbox.line(udh_line("+3250000000", "+32470000001", 3, 2, 1, text[:40]))
    (sms,) = inbox.messages
    assert (sms.receiver, sms.text, sms.parts, sms.unicode) == ("+32470000001", text.decode(), 2, False)


def test_concatenated_ucs2_is_told_from_its_bytes() -> None:
    inbox = Inbox()
    for reference, text in ((6, "x" * 100 + "ő"), (7, "ő" * 134)):  # the second has no zero byte at all
        data = text.encode("utf-16-be")
        inbox.line(udh_line("+3250000000", "+32470000001", reference, 2, 1, data[:134]))
        inbox.line(udh_line("+3250000000", "+32470000001", reference, 2, 2, data[134:]))
    latin, hungarian = inbox.messages
    assert (latin.text, latin.unicode) == ("x" * 100 + "ő", True)
    assert (hungarian.text, hungarian.unicode) == ("ő" * 134, True)
