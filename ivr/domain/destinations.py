"""Where BINfoon may call: the destination policy against toll fraud (issue 14 item 5, RELIABILITY A6).

Rules:
- every number BINfoon dials is a member household's, a coordinator's or an approver's phone: a
  geographic or mobile number in Belgium or a neighbouring country (configurable, by country code);
- ranges that are never a household's phone and that cost money (or pay someone) are refused even
  inside an allowed country: premium-rate, shared-cost, personal and machine-to-machine numbers, and
  the international non-geographic codes (satellite, international networks, premium rate);
- a refusal always says why, in words a coordinator can act on;
- pure: no I/O; the numbers are E.164 (``ivr.domain.phone.normalize_phone``'s output).

The checks run where numbers come in (web forms, CSV import, command line) and again at the
dialler's edge before any Originate, so a number stored before the policy existed is never dialled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ivr.domain.phone import InvalidPhoneNumber, normalize_phone


class RefusedDestination(InvalidPhoneNumber):
    """The number is well formed but BINfoon must not call it; the message says why (an
    ``InvalidPhoneNumber``, so every place that refuses a bad number refuses this one alike)."""


#: Belgium and its neighbours: the Netherlands, France, Germany, Luxembourg.
DEFAULT_COUNTRY_CODES: tuple[str, ...] = ("32", "31", "33", "49", "352")
#: The countries whose numbers the dialplan's own check lets through (``binfoon-dial-out`` in
#: ``dialplan/binfoon-member.conf``, the same ranges as here): a wider list needs patterns there too.
DIAL_OUT_COUNTRY_CODES: tuple[str, ...] = DEFAULT_COUNTRY_CODES

#: E.164 prefixes (without +) refused whatever the allowed countries: why each is no household's phone.
#: Belgian ranges follow the BIPT numbering plan (national significant number after 32); the others
#: are the ITU's non-geographic country codes and the neighbours' own paid ranges.
REFUSED_RANGES: tuple[tuple[str, str], ...] = (
    # Belgium (BIPT): 070 paid information lines, 077 machine-to-machine/premium, 078 shared cost,
    # 0800 freephone (a service, never a household), 0900-0909 premium rate.
    ("3270", "a Belgian 070 paid information number"),
    ("3277", "a Belgian 077 machine-to-machine or premium number"),
    ("3278", "a Belgian 078 shared-cost number"),
    ("32800", "a Belgian 0800 freephone service"),
    ("3290", "a Belgian 090x premium-rate number"),
    # The Netherlands: 090x premium rate, 084/087 personal (paid) numbers, 097 machine-to-machine.
    ("3190", "a Dutch 090x premium-rate number"),
    ("3184", "a Dutch 084 personal (paid) number"),
    ("3187", "a Dutch 087 personal (paid) number"),
    ("3197", "a Dutch 097 machine-to-machine number"),
    # France: 08 special-rate services (081-089, premium 089).
    ("338", "a French 08 special-rate service number"),
    # Germany: 0900 premium, 0137 mass-call, 0180 shared cost, 0118 directory, 0700 personal, 012 services.
    ("49900", "a German 0900 premium-rate number"),
    ("49137", "a German 0137 mass-call (paid) number"),
    ("49180", "a German 0180 shared-cost number"),
    ("49118", "a German 0118 directory-enquiry (paid) number"),
    ("49700", "a German 0700 personal (paid) number"),
    ("4912", "a German 012 service number"),
    # Luxembourg: 90x premium rate.
    ("35290", "a Luxembourg 90x premium-rate number"),
    # ITU non-geographic codes: no household is there, and several are classic toll-fraud targets.
    ("800", "an international freephone (+800) number"),
    ("808", "an international shared-cost (+808) number"),
    ("870", "an Inmarsat satellite (+870) number"),
    ("878", "a universal personal (+878) number"),
    ("881", "a satellite phone (+881, GMSS) number"),
    ("882", "an international network (+882) number"),
    ("883", "an international network (+883) number"),
    ("888", "an international humanitarian (+888) number"),
    ("979", "an international premium-rate (+979) number"),
    ("991", "an international trial (+991) number"),
)


@dataclass(frozen=True)
class DestinationPolicy:
    """Which numbers may be called: allowed country codes, and refused prefixes with their reasons."""

    country_codes: tuple[str, ...] = DEFAULT_COUNTRY_CODES
    refused: tuple[tuple[str, str], ...] = REFUSED_RANGES

    @classmethod
    def parse(cls, country_codes: str, extra_refused: str = "") -> DestinationPolicy:
        """The policy from settings text: ``"32,31,33"`` and extra refused prefixes ``"+3245, 3246"``.

        Raises ``ValueError`` naming the bad entry: a country code must be 1 to 3 digits, and none of
        the always-refused non-geographic codes (+881 ...) can be allowed."""
        codes = tuple(c.strip().lstrip("+") for c in country_codes.split(",") if c.strip())
        if not codes:
            raise ValueError("at least one country code must be allowed (e.g. 32)")
        for code in codes:
            if not (code.isdigit() and 1 <= len(code) <= 3):
                raise ValueError(f"{code!r} is not a country code (1 to 3 digits, e.g. 32)")
            for prefix, why in REFUSED_RANGES:
                if len(prefix) == len(code) and prefix == code:
                    raise ValueError(f"+{code} cannot be allowed ({why})")
        extra: list[tuple[str, str]] = []
        for raw in extra_refused.split(","):
            prefix = raw.strip().lstrip("+")
            if not prefix:
                continue
            if not prefix.isdigit():
                raise ValueError(f"{raw.strip()!r} is not a number prefix (digits, e.g. +3245)")
            extra.append((prefix, f"in a range refused by this installation (+{prefix})"))
        return cls(codes, REFUSED_RANGES + tuple(extra))

    def refusal(self, e164: str) -> str | None:
        """Why ``e164`` must not be called, or ``None`` if it may be."""
        digits = e164.removeprefix("+")
        if not e164.startswith("+") or not digits.isdigit():
            return f"{e164!r} is not an E.164 number"
        for prefix, why in self.refused:
            if digits.startswith(prefix):
                return f"{_shown(e164)} is {why}: BINfoon never calls it"
        if not any(digits.startswith(code) for code in self.country_codes):
            allowed = ", ".join(f"+{c}" for c in self.country_codes)
            return f"{_shown(e164)} is outside the countries BINfoon calls ({allowed})"
        return None

    def check(self, e164: str) -> str:
        """``e164`` itself, or ``RefusedDestination`` with the reason."""
        why = self.refusal(e164)
        if why is not None:
            raise RefusedDestination(why)
        return e164

    def dialable(self, raw: str) -> str:
        """``raw`` as E.164 if it is a number and may be called; else ``InvalidPhoneNumber`` (not a
        number) or ``RefusedDestination`` (a number BINfoon must not call), with the reason."""
        return self.check(normalize_phone(raw))


def _shown(e164: str) -> str:
    """The number's dialled range, never the whole subscriber number (it may end up in logs)."""
    return e164[:6] + "…" if len(e164) > 8 else e164


#: The default policy (Belgium and its neighbours, every refused range).
DEFAULT_DESTINATIONS = DestinationPolicy()


# -- test calls: how often (issue 14 item 5) --------------------------------------------------------
@dataclass
class TestCallLog:
    """Test calls placed in the last hour, per member called and per person asking: a coordinator
    cannot turn the test-call button into a dialler. Pure: the caller gives the time."""

    per_member: int
    per_person: int
    window_s: float = 3600.0
    _members: dict[int, list[float]] = field(default_factory=dict)
    _people: dict[str, list[float]] = field(default_factory=dict)

    __test__ = False  # not a pytest test class, whatever its name says

    def refusal(self, member_id: int, person: str, now: float) -> str | None:
        """Why a test call to ``member_id`` asked by ``person`` must wait, or ``None`` if it may go."""
        if len(self._recent(self._members, member_id, now)) >= self.per_member:
            return "member"
        if len(self._recent(self._people, person, now)) >= self.per_person:
            return "person"
        return None

    def record(self, member_id: int, person: str, now: float) -> None:
        """A test call was handed to the dialler."""
        self._members.setdefault(member_id, []).append(now)
        self._people.setdefault(person, []).append(now)

    def claim(self, member_id: int, person: str, now: float) -> str | None:
        """``refusal`` and, when the call may go, ``record`` at once: requests sent together cannot
        all pass the check before the first is counted. Give the claim back with ``release``."""
        why = self.refusal(member_id, person, now)
        if why is None:
            self.record(member_id, person, now)
        return why

    def release(self, member_id: int, person: str, now: float) -> None:
        """Undo a ``claim`` whose call was not placed after all."""
        for log, key in ((self._members, member_id), (self._people, person)):
            if now in log.get(key, []):
                log[key].remove(now)

    def _recent(self, log: dict[Any, list[float]], key: Any, now: float) -> list[float]:
        times = [t for t in log.get(key, []) if now - t < self.window_s]
        log[key] = times
        return times
