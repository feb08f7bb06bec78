"""Phone numbers: everything is stored and dialled in E.164 (+32...)."""

from __future__ import annotations

import re


class InvalidPhoneNumber(ValueError):
    """The text is not a phone number a member can be called on; the message says why."""


_SEPARATORS = re.compile(r"[\s./\-()]")
#: Belgian ranges that are never a household's phone: premium (090x), shared-cost (070, 077, 078), freephone.
_BELGIAN_SERVICE = (("900", "909"), ("70", "70"), ("77", "78"), ("800", "800"))


def _belgian_service(national: str) -> bool:
    for low, high in _BELGIAN_SERVICE:
        prefix = national[: len(low)]
        if low <= prefix <= high:
            return True
    return False


def normalize_phone(raw: str) -> str:
    """``raw`` as E.164, or ``InvalidPhoneNumber``.

    Belgian national forms (0X XXX XX XX landlines, 04XX XX XX XX mobiles, with any of
    ``space . / - ( )`` as separators), ``+32``/``0032`` forms, and foreign numbers written with
    ``+`` or ``00`` (neighbouring countries are common near the borders).
    """
    text = _SEPARATORS.sub("", raw.strip())
    if not text:
        raise InvalidPhoneNumber("empty")
    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+"):
        digits = text[1:]
        if not digits.isdigit():
            raise InvalidPhoneNumber(f"{raw.strip()!r} contains characters that are not digits")
        if digits.startswith("32"):
            return _belgian("0" + digits[2:], raw)
        if not 8 <= len(digits) <= 15:
            raise InvalidPhoneNumber(f"{raw.strip()!r} has {len(digits)} digits; an international number has 8 to 15")
        return "+" + digits
    if not text.isdigit():
        raise InvalidPhoneNumber(f"{raw.strip()!r} contains characters that are not digits")
    if not text.startswith("0"):
        raise InvalidPhoneNumber(f"{raw.strip()!r} must start with 0 (Belgian) or + (international)")
    return _belgian(text, raw)


def _belgian(national: str, raw: str) -> str:
    """``national`` is 0 followed by the Belgian number."""
    body = national[1:]
    if _belgian_service(body):
        raise InvalidPhoneNumber(f"{raw.strip()!r} is a service number (premium, shared-cost or freephone)")
    if body.startswith("4"):
        if len(body) != 9 or body[1] not in "56789":
            raise InvalidPhoneNumber(f"{raw.strip()!r} is not a Belgian mobile number (04xx xx xx xx)")
    elif len(body) != 8:
        raise InvalidPhoneNumber(f"{raw.strip()!r} is not a Belgian number: a landline has 9 digits with the 0")
    return "+32" + body


def mask(e164: str) -> str:
    """A phone number with all but the last three digits hidden (for logs and lists)."""
    return e164[:3] + "*" * max(0, len(e164) - 6) + e164[-3:]


def caller_e164(caller_id: str) -> str:
    """A caller ID as E.164, or ``""`` when it is absent or not a number (never raises)."""
    try:
        return normalize_phone(caller_id)
    except InvalidPhoneNumber:
        return ""


#: Mobile ranges of Belgium and its neighbours (E.164 prefixes): an SMS copy goes to these only.
MOBILE_PREFIXES = ("+324", "+316", "+336", "+337", "+4915", "+4916", "+4917", "+3526")


def is_mobile(e164: str) -> bool:
    """Whether an E.164 number is a mobile one (can receive an SMS)."""
    return e164.startswith(MOBILE_PREFIXES)
