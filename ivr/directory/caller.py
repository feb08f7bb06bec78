"""The first steps of every PIN line (the police line, the admin line): who is calling, which BIN.

The conversation:
  system: "... type your PIN, then #"           caller: 1234#      (3 wrong: locked, audited)
  system: "Type the BIN's number, then #"       caller: 12#
  system: "You chose BIN 12, Kerkwijk. 1 if right, 2 for another"    caller: 1
A line gives its own desk (the lock and the PIN check are ``ivr.directory.pin_gate``'s, so wrong PINs
count together on every line) and its own PIN prompt; the rest is the same words on every line.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ivr.telephony.call import Call, choose

#: Questions asked at most this often before the call ends politely.
TRIES = 3

Caller = TypeVar("Caller")
Answer = TypeVar("Answer", bound="PinAnswer")
Choice = TypeVar("Choice", bound="BinOption")


class Unidentified(enum.Enum):
    """Why ``identify`` found nobody (the call is hung up)."""

    LOCKED = "locked"                        # the caller ID or its account is locked: no guessing
    NOT_AUTHENTICATED = "not_authenticated"  # no right PIN within ``TRIES``


class PinAnswer(Protocol):
    """What a line's desk answers to one PIN: the lock now in force, if any."""

    @property
    def locked_until(self) -> dt.datetime | None: ...


class BinOption(Protocol):
    """A BIN the caller typed (number and name to read back), or the prompt that says why not."""

    @property
    def number(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def error_prompt(self) -> str | None: ...


@dataclass(frozen=True)
class BinPick(Generic[Choice]):
    """How ``pick_bin`` ended: the BIN confirmed (``None``: none), and the refusals the caller heard."""

    choice: Choice | None
    #: The error prompts the caller heard, in order (e.g. ``admin_bin_refused``).
    heard: tuple[str, ...] = ()


async def identify(call: Call, lock_for: Callable[[str], Awaitable[dt.datetime | None]],
                   check_pin: Callable[[str, str], Awaitable[Answer]],
                   who: Callable[[Answer], Caller | None], *, pin_prompt: str,
                   key_timeout_s: float) -> Caller | Unidentified:
    """Caller ID and PIN; a locked caller hears so and is not allowed to guess.

    ``who`` takes the caller out of a right answer (``None``: the PIN was wrong).
    """
    if await lock_for(call.caller_id) is not None:
        await call.say("police_locked")
        await call.hangup()
        return Unidentified.LOCKED
    for _ in range(TRIES):
        pin = await call.read_digits(pin_prompt, max_digits=8, timeout_s=key_timeout_s)
        if not pin:
            continue
        answer = await check_pin(call.caller_id, pin)
        caller = who(answer)
        if caller is not None:
            return caller
        if answer.locked_until is not None:
            await call.say("police_locked")
            await call.hangup()
            return Unidentified.LOCKED
        await call.say("police_pin_wrong")
    await call.say("no_input_goodbye")
    await call.hangup()
    return Unidentified.NOT_AUTHENTICATED


async def pick_bin(call: Call, find_bin: Callable[[str], Awaitable[Choice]], *,
                   key_timeout_s: float) -> BinPick[Choice]:
    """The BIN by its number, read back for confirmation; the caller's desk says which BINs they may use."""
    heard: list[str] = []
    for _ in range(TRIES):
        digits = await call.read_digits("police_enter_bin", max_digits=6, timeout_s=key_timeout_s)
        if not digits:
            continue
        choice = await find_bin(digits)
        if choice.error_prompt is not None:
            heard.append(choice.error_prompt)
            await call.say(choice.error_prompt)
            continue
        key = await call.say("police_bin_chosen", number=choice.number, name=choice.name)
        if key not in ("1", "2"):
            key = await choose(call, "police_bin_confirm", "12", key_timeout_s)
        if key == "1":
            return BinPick(choice, tuple(heard))
        if key is None:
            break
    return BinPick(None, tuple(heard))
