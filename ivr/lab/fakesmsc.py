"""What the lab's fake SMSC (Kannel's ``fakesmsc``) received, read from its output.

Its output lines (``Got message N: <from to text ...>``, or the ``ucs-2``, ``data`` and ``udh ... data``
forms, URL-encoded) become ``ReceivedSms``, the parts of a concatenated SMS joined (``ivr.lab.kannel``
feeds ``Inbox`` the lines of its MT fake SMSC).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import urllib.parse
from dataclasses import dataclass

_GOT = re.compile(r"Got message \d+: <(.*)>$")
_FORM = re.compile(r"^(\S+) (\S+) (text|data|ucs-2|udh) (.*)$", re.DOTALL)
_UDH_FORM = re.compile(r"^(\S+) data (\S*)$")


@dataclass(frozen=True)
class ReceivedSms:
    """One SMS as the fake SMSC received it (a concatenated SMS joined)."""

    sender: str
    receiver: str
    text: str
    at: dt.datetime
    #: How many SMS it came as.
    parts: int = 1
    #: ``True``: it came UCS-2 coded.
    unicode: bool = False


def _url_bytes(value: str) -> bytes:
    """Kannel's URL encoding (space as ``+``, a plus as ``%2B``) decoded to bytes."""
    return urllib.parse.unquote_to_bytes(value.replace("+", " "))


def _decode(raw: bytes) -> tuple[str, bool]:
    """(text, UCS-2?) of a concatenated SMS's joined data, whose coding the fake SMSC does not say: Kannel
    passes GSM-7 text as UTF-8, so bytes that are not UTF-8, or hold control characters (UCS-2's zero
    bytes), are UTF-16BE. The copies never contain control characters, so this does not misread them."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-16-be", "replace"), True
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text) and len(raw) % 2 == 0:
        return raw.decode("utf-16-be", "replace"), True
    return text, False


def _concatenation(udh: bytes) -> tuple[int, int, int] | None:
    """(reference, total, sequence) of a concatenation UDH (8- or 16-bit reference), else ``None``."""
    if not udh or udh[0] + 1 > len(udh):
        return None
    at, end = 1, udh[0] + 1
    while at + 2 <= end:
        iei, length = udh[at], udh[at + 1]
        data = udh[at + 2:at + 2 + length]
        if iei == 0x00 and length == 3:
            return data[0], data[1], data[2]
        if iei == 0x08 and length == 4:
            return data[0] << 8 | data[1], data[2], data[3]
        at += 2 + length
    return None


class Inbox:
    """What the MT fake SMSC printed, as ``ReceivedSms`` (thread-safe; the reader thread appends)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.messages: list[ReceivedSms] = []
        self._parts: dict[tuple[str, str, int, int], dict[int, bytes]] = {}

    def line(self, line: str) -> None:
        got = _GOT.search(line)
        if got is None:
            return
        content = got.group(1)
        form = _FORM.match(content)
        with self.changed:
            if form is None:
                # The fake SMSC's protocol is one line per SMS: a GSM-7 text with a line break arrives as
                # a second "message" without sender and receiver. It belongs to the one before.
                if self.messages and not self.messages[-1].unicode and self.messages[-1].parts == 1:
                    last = self.messages[-1]
                    self.messages[-1] = ReceivedSms(last.sender, last.receiver, f"{last.text}\n{content}", last.at)
                    self.changed.notify_all()
                return
            sender, receiver, kind, rest = form.groups()
            now = dt.datetime.now(dt.UTC)
            if kind == "text":
                self._add(ReceivedSms(sender, receiver, rest, now))
            elif kind == "ucs-2":
                self._add(ReceivedSms(sender, receiver, _url_bytes(rest).decode("utf-16-be", "replace"), now,
                                      unicode=True))
            elif kind == "data":
                text, unicode = _decode(_url_bytes(rest))
                self._add(ReceivedSms(sender, receiver, text, now, unicode=unicode))
            else:
                udh_form = _UDH_FORM.match(rest)
                if udh_form is None:
                    return
                udh, data = _url_bytes(udh_form.group(1)), _url_bytes(udh_form.group(2))
                self._part(sender, receiver, udh, data, now)

    def _part(self, sender: str, receiver: str, udh: bytes, data: bytes, now: dt.datetime) -> None:
        concat = _concatenation(udh)
        if concat is None:
            text, unicode = _decode(data)
            self._add(ReceivedSms(sender, receiver, text, now, unicode=unicode))
            return
        reference, total, sequence = concat
        key = (sender, receiver, reference, total)
        parts = self._parts.setdefault(key, {})
        parts[sequence] = data
        if len(parts) == total and set(parts) == set(range(1, total + 1)):
            del self._parts[key]
            text, unicode = _decode(b"".join(parts[n] for n in range(1, total + 1)))
            self._add(ReceivedSms(sender, receiver, text, now, parts=total, unicode=unicode))

    def _add(self, sms: ReceivedSms) -> None:
        self.messages.append(sms)
        self.changed.notify_all()
