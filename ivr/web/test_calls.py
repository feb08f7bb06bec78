"""The console's test call to a member (``Console`` mixes ``MemberTestCalls`` in).

Rules:
- a test call is an outbound call like any other (``ivr.telephony.outbound``): it waits for a free
  channel and the trunk's pace;
- it asks for 1, and its outcome is stored (``ivr.directory.test_calls``) once the call is over;
  the page shows each member's latest one from memory while it runs (``test_results``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, TypeVar

from sqlalchemy.orm import Session

from ivr.config import Settings
from ivr.delivery.policy import member_prompts
from ivr.directory.accounts import Viewer
from ivr.directory.store import record_test_call
from ivr.directory.test_calls import TestCallResult, answered_outcome, last_result, record_result
from ivr.telephony.events import UserEventReceived
from ivr.telephony.outbound import CallKind, answered
from storage.models import new_id

if TYPE_CHECKING:
    from ivr.app import BinfoonApp

log = logging.getLogger(__name__)
T = TypeVar("T")


class ConsoleUnavailable(RuntimeError):
    """The console runs without the telephone side (no calls can be placed)."""


class MemberTestCalls:
    """Test calls placed from the console, and what became of them."""

    #: The longest a test call's channel is counted as in use.
    TEST_CALL_MAX_S: ClassVar[float] = 300.0

    # The console's (``ivr.web.console.Console``):
    app: BinfoonApp | None
    settings: Settings
    test_calls: dict[str, str]
    test_call_of: dict[int, str]
    _tasks: set[asyncio.Task[None]]

    if TYPE_CHECKING:
        def run(self, work: Callable[[Session], T]) -> T: ...

        async def tx(self, work: Callable[[Session], T]) -> T: ...

    async def test_call(self, viewer: Viewer, person_id: int) -> str:
        """Call one member with the spoken test message and ask for 1; returns the call id.

        The call is written (audited) before it is placed, and waits for a free channel and the
        trunk's pace like every other outbound call (``OutboundCalls.acquire``: the dialler's limits).
        A number the destination policy refuses (stored before it) raises ``RefusedDestination`` and
        is never dialled (the dialler's edge would refuse it too). How often is the page's limit.

        The answered call runs the member call's own dialplan conversation (``binfoon-member,fallback``:
        the message, "press 1", 2 replays, at most 3 tries) with every prompt saying it is a test; its
        key 1 is the dialplan's ``BinfoonConfirm`` user event for this call's id, which belongs to no
        campaign (the service logs it as a confirmation of an unknown attempt and counts nothing).
        The outcome (``ivr.directory.test_calls``) is stored when the call is over."""
        app = self.app
        if app is None:
            raise ConsoleUnavailable("no telephone connection")
        call_id = new_id()
        e164, language = await self.tx(lambda s: record_test_call(s, person_id, call_id, viewer.actor))
        self.settings.destinations.check(e164)
        variables = {"BINFOON_ATTEMPT": call_id, "BINFOON_SOUND": await app.voice.prompt("demo_test_message", language)}
        for variable, prompt_id in member_prompts(urgent=False, drill=True).items():
            variables[variable] = await app.voice.prompt(prompt_id, language)
        # Only each member's latest test call is kept in memory: the page shows no more.
        earlier = self.test_call_of.get(person_id)
        if earlier is not None:
            self.test_calls.pop(earlier, None)
        self.test_calls[call_id] = "dialling"
        self.test_call_of[person_id] = call_id

        async def place() -> None:
            calls = app.calls
            pressed = asyncio.Event()

            def on_event(event: object) -> None:
                if (isinstance(event, UserEventReceived) and event.name == "BinfoonConfirm"
                        and event.fields.get("Attempt") == call_id):
                    pressed.set()

            # Listening before the call is placed: no key can come before it.
            unsubscribe = app.ami.subscribe(on_event)
            outcome = "failed"
            try:
                await calls.acquire(call_id, CallKind.TEST)
                try:
                    dialled = await calls.dial(call_id, e164, context="binfoon-member", exten="fallback",
                                               variables=variables, ring_timeout_s=self.settings.member_ring_timeout_s)
                    outcome = dialled.outcome.value
                    self.test_calls[call_id] = outcome
                    if answered(dialled):
                        # The channel is in use until it hangs up (no flow runs on a test call); AMI
                        # delivers the key's user event before the hang-up that ends this wait.
                        await calls.ended(call_id, self.TEST_CALL_MAX_S)
                        outcome = answered_outcome(pressed.is_set())
                finally:
                    calls.release(call_id)
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, the page shows it and the service goes on
                log.warning("test call %s failed: %s", call_id, exc)
                outcome = answered_outcome(True) if pressed.is_set() else "failed"
            finally:
                unsubscribe()
                self.test_calls[call_id] = outcome
            try:
                await self.tx(lambda s: record_result(s, person_id, call_id, outcome))
            except Exception:
                log.exception("test call %s: its outcome %s could not be stored", call_id, outcome)

        task = asyncio.get_running_loop().create_task(place(), name=f"test-call-{call_id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call_id

    def last_test_call(self, person_id: int) -> TestCallResult | None:
        """A member's latest stored test call outcome (blocking; survives a restart, unlike ``test_results``)."""
        return self.run(lambda s: last_result(s, person_id))

    def test_results(self) -> dict[int, str]:
        """The latest test call's outcome per member (``dialling`` until known)."""
        return {person_id: self.test_calls[call_id] for person_id, call_id in self.test_call_of.items()}
