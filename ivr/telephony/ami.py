"""The AMI connection: panoramisk, with its known traps closed.

Traps of panoramisk 1.4 and how this module closes them (see shared RELIABILITY.md §2):
- it re-sends unanswered actions after a reconnect: ``originate`` is listed in
  ``forgetable_actions``, every Originate is ``Async: true`` and carries our call-attempt id as
  its ``ChannelId`` and ``ActionID``, so a member is never dialled twice by the library;
- an action that got its first reply but not its last is silently dropped on disconnect, its
  future never resolved: pending originates are failed with ``OriginateOutcomeUnknown``;
- it never checks that a Ping was answered: our watchdog pings, and after ``max_missed_pings``
  unanswered pings (a half-open connection) aborts the socket so panoramisk reconnects;
- an exception in an event callback either vanishes (coroutines) or kills the connection
  (plain functions, raised inside ``data_received``): every subscriber call is guarded and logged;
- a failed login is never retried: the watchdog treats a login that does not succeed in time
  like a dead connection.
Only this package imports panoramisk; the rest of the code sees ``ivr.telephony.events``.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from typing import Any, Awaitable, Callable, Mapping

from panoramisk import Manager
from panoramisk.actions import Action

from ivr.asterisk.instance import AmiCredentials
from ivr.telephony.events import AmiEvent, ChannelHungUp, FullyBooted, OriginateResult, parse_event

log = logging.getLogger(__name__)

EventCallback = Callable[[AmiEvent], Awaitable[None] | None]


class AmiUnavailable(RuntimeError):
    """AMI is not connected and logged in right now: nothing was sent."""


class OriginateRefused(RuntimeError):
    """Asterisk refused the Originate (``Response: Error``, e.g. "Asterisk is shutting down"): no
    channel was made, so no phone was called. Nothing was placed: never a member's attempt."""


class OriginateOutcomeUnknown(RuntimeError):
    """The Originate was sent but the connection broke before its outcome arrived.

    The call may or may not be up: reconcile from Asterisk's own records, never re-send blindly.
    """


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager that stops reconnecting once we close it."""

    closing = False

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if self.closing:
            return None
        return super().connect(*args, **kwargs)


class AmiGateway:
    """A self-healing AMI session: connect, watch, reconnect, originate, and typed events."""

    #: How long after the Originate response a hang-up cause is awaited. Asterisk sends the response
    #: at once but the Hangup event through Stasis, which lags on a loaded host; without the cause an
    #: unreachable number would pass for a plain failure. Only a failed call with no cause waits this long.
    CAUSE_GRACE_S = 2.0

    def __init__(
        self,
        credentials: AmiCredentials,
        *,
        ping_interval_s: float = 3.0,
        ping_timeout_s: float = 3.0,
        max_missed_pings: int = 2,
        reconnect_s: float = 1.0,
        login_timeout_s: float = 5.0,
    ) -> None:
        self.credentials = credentials
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.max_missed_pings = max_missed_pings
        self.reconnect_s = reconnect_s
        self.login_timeout_s = login_timeout_s
        self._subscribers: list[EventCallback] = []
        self._logged_in = asyncio.Event()
        self._pending: dict[str, asyncio.Future[Any]] = {}
        # Recent hang-up causes by channel id: a failed Originate's cause may arrive before its response.
        self._causes: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._cause_waiters: dict[str, asyncio.Future[int]] = {}
        self._manager: _Manager | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._connected_at = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Counters for tests and monitoring.
        self.logins = 0
        self.disconnects = 0
        self.watchdog_aborts = 0

    # -- lifecycle --------------------------------------------------------------------------
    async def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and log in; from then on the gateway reconnects by itself until ``close``."""
        loop = asyncio.get_running_loop()
        self._manager = _Manager(
            host=self.credentials.host,
            port=self.credentials.port,
            username=self.credentials.username,
            secret=self.credentials.secret,
            events="on",
            loop=loop,
            # panoramisk's own pinger ignores answers; ours replaces it.
            ping_delay=10**9,
            reconnect_timeout=self.reconnect_s,
            forgetable_actions=("ping", "login", "originate"),
            on_connect=self._on_connect,
            on_login=self._on_login,
            on_disconnect=self._on_disconnect,
            log=logging.getLogger("ivr.telephony.panoramisk"),
        )
        self._manager.register_event("*", self._dispatch)
        self._manager.connect()
        self._watchdog = loop.create_task(self._watch(), name="ami-watchdog")
        try:
            async with asyncio.timeout(timeout_s):
                await self._logged_in.wait()
        except asyncio.TimeoutError:
            await self.close()
            raise AmiUnavailable(
                f"no AMI login at {self.credentials.host}:{self.credentials.port} within {timeout_s:.0f} s"
            ) from None

    async def close(self) -> None:
        """Log off and stop reconnecting."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._manager is not None:
            self._manager.closing = True
            self._manager.close()
        self._logged_in.clear()
        self._fail_pending("AMI gateway closed")

    @property
    def connected(self) -> bool:
        """True while logged in."""
        return self._logged_in.is_set()

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until logged in (again); raises ``AmiUnavailable`` on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._logged_in.wait()
        except asyncio.TimeoutError:
            raise AmiUnavailable(f"AMI not back within {timeout_s:.0f} s") from None

    def _on_connect(self, manager: Manager) -> None:
        self._connected_at = asyncio.get_running_loop().time()

    def _on_login(self, manager: Manager) -> None:
        self.logins += 1
        log.info("AMI logged in (login %d)", self.logins)
        self._logged_in.set()

    def _on_disconnect(self, manager: Manager, exc: Exception | None) -> None:
        self.disconnects += 1
        self._logged_in.clear()
        log.warning("AMI connection lost; panoramisk reconnects in %.1f s", self.reconnect_s)
        self._fail_pending("AMI connection lost before the Originate outcome arrived")

    def _fail_pending(self, why: str) -> None:
        for channel_id, future in list(self._pending.items()):
            if not future.done():
                future.set_exception(OriginateOutcomeUnknown(f"{channel_id}: {why}"))
        self._pending.clear()

    async def _watch(self) -> None:
        """Ping and abort a connection that stopped answering (half-open) or never logged in."""
        loop = asyncio.get_running_loop()
        missed = 0
        while True:
            await asyncio.sleep(self.ping_interval_s)
            manager = self._manager
            protocol = getattr(manager, "protocol", None)
            if manager is None or protocol is None or getattr(protocol, "closed", True):
                missed = 0
                continue
            if not manager.authenticated:
                if loop.time() - self._connected_at > self.login_timeout_s:
                    self._abort("no successful login")
                continue
            ping = Action({"Action": "Ping"})
            try:
                async with asyncio.timeout(self.ping_timeout_s):
                    await asyncio.shield(protocol.send(ping))
                missed = 0
            except asyncio.TimeoutError:
                protocol.responses.pop(ping.id, None)  # panoramisk would keep it forever
                missed += 1
                log.warning("AMI ping unanswered (%d of %d)", missed, self.max_missed_pings)
                if missed >= self.max_missed_pings:
                    missed = 0
                    self._abort(f"{self.max_missed_pings} pings unanswered")

    def _abort(self, why: str) -> None:
        manager = self._manager
        protocol = getattr(manager, "protocol", None)
        transport = getattr(protocol, "transport", None)
        log.warning("AMI connection is dead (%s): aborting it to reconnect", why)
        self.watchdog_aborts += 1
        self._logged_in.clear()
        if transport is not None:
            # abort(), not close(): close() would wait to flush to a peer that no longer reads.
            transport.abort()

    # -- events -----------------------------------------------------------------------------
    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback`` with every typed event; returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def _dispatch(self, manager: Manager, message: Mapping[str, str]) -> None:
        try:
            event = parse_event(message)
        except Exception:  # never let a parsing bug kill the AMI connection
            log.exception("cannot parse AMI event %r", dict(message))
            return
        if event is None:
            return
        if isinstance(event, ChannelHungUp):
            self._record_cause(event)
        if isinstance(event, FullyBooted):
            log.info("Asterisk fully booted")
        for callback in list(self._subscribers):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
            except Exception:
                log.exception("AMI event subscriber %r failed on %r", callback, event)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("AMI event subscriber task failed", exc_info=task.exception())

    def _record_cause(self, event: ChannelHungUp) -> None:
        self._causes[event.channel_id] = event.cause
        while len(self._causes) > 10_000:
            self._causes.popitem(last=False)
        waiter = self._cause_waiters.pop(event.channel_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event.cause)

    async def _cause_of(self, channel_id: str, wait_s: float) -> int | None:
        if channel_id in self._causes:
            return self._causes[channel_id]
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._cause_waiters[channel_id] = waiter
        try:
            async with asyncio.timeout(wait_s):
                return await waiter
        except asyncio.TimeoutError:
            return None
        finally:
            self._cause_waiters.pop(channel_id, None)

    # -- actions ----------------------------------------------------------------------------
    def _require_login(self) -> Manager:
        if self._manager is None or not self.connected:
            raise AmiUnavailable("AMI is not connected")
        return self._manager

    async def action(self, headers: Mapping[str, str], timeout_s: float = 10.0) -> dict[str, str]:
        """Send one action and return its (first) response's headers."""
        manager = self._require_login()
        async with asyncio.timeout(timeout_s):
            result = await manager.send_action(dict(headers))
        message = result[0] if isinstance(result, list) else result
        return {str(k): str(v) for k, v in message.items()}

    async def originate(
        self,
        channel_id: str,
        channel: str,
        *,
        context: str,
        exten: str = "s",
        priority: int = 1,
        variables: Mapping[str, str] | None = None,
        caller_id: str | None = None,
        timeout_s: float = 30.0,
    ) -> OriginateResult:
        """Dial ``channel``; when it answers, run ``context,exten,priority`` on it.

        ``channel_id`` (our call-attempt id) becomes the channel's Uniqueid and the ActionID, so
        every event about this call can be matched to the attempt that was persisted before it.
        Returns when the call is answered or has failed. Raises ``AmiUnavailable`` if nothing
        was sent, ``OriginateRefused`` if Asterisk refused it (no channel was made),
        ``OriginateOutcomeUnknown`` if the outcome was lost with the connection.
        """
        manager = self._require_login()
        headers: dict[str, Any] = {
            "Action": "Originate",
            "ActionID": channel_id,
            "ChannelId": channel_id,
            "OtherChannelId": f"{channel_id}-2",
            "Channel": channel,
            "Context": context,
            "Exten": exten,
            "Priority": str(priority),
            "Timeout": str(int(timeout_s * 1000)),
            # Async: the first reply comes at once, so panoramisk never re-queues this action.
            "Async": "true",
        }
        if variables:
            headers["Variable"] = [f"{k}={v}" for k, v in variables.items()]
        if caller_id:
            headers["CallerID"] = caller_id
        future = manager.send_action(Action(headers))
        self._pending[channel_id] = future
        try:
            async with asyncio.timeout(timeout_s + 30.0):
                result = await future
        except asyncio.TimeoutError:
            raise OriginateOutcomeUnknown(f"{channel_id}: no OriginateResponse in {timeout_s + 30:.0f} s") from None
        finally:
            self._pending.pop(channel_id, None)
        messages = result if isinstance(result, list) else [result]
        first = messages[0]
        if str(first.get("Response")) == "Error":
            raise OriginateRefused(f"Originate refused: {first.get('Message')}")
        final = next((m for m in messages if str(m.get("Event")) == "OriginateResponse"), messages[-1])
        success = str(final.get("Response")) == "Success"
        reason = int(str(final.get("Reason", "0")) or 0)
        cause = None if success else await self._cause_of(channel_id, self.CAUSE_GRACE_S)
        return OriginateResult(channel_id=channel_id, success=success, reason=reason, cause=cause)

    async def outbound_registrations(self, timeout_s: float = 10.0) -> dict[str, str]:
        """Every outbound registration's state now (``PJSIPShowRegistrationsOutbound``): its name ->
        its status in the ``Registry`` event's words (Registered, Unregistered, Rejected, ...).
        Raises ``AmiUnavailable`` when AMI is down."""
        manager = self._require_login()
        async with asyncio.timeout(timeout_s):
            result = await manager.send_action(Action({"Action": "PJSIPShowRegistrationsOutbound"}))
        messages = result if isinstance(result, list) else [result]
        return {str(m.get("ObjectName")): str(m.get("Status", "")) for m in messages
                if str(m.get("Event")) == "OutboundRegistrationDetail"}

    async def live_channel_ids(self, timeout_s: float = 10.0) -> set[str]:
        """The Uniqueid of every channel up in Asterisk now (``CoreShowChannels``).

        Our calls' channels carry the call's id (Originate ``ChannelId``), so this tells which calls
        a previous process placed are still up. Raises ``AmiUnavailable`` when AMI is down, and
        ``TimeoutError`` if the list does not come in time: then the PBX cannot tell."""
        manager = self._require_login()
        async with asyncio.timeout(timeout_s):
            result = await manager.send_action(Action({"Action": "CoreShowChannels"}))
        messages = result if isinstance(result, list) else [result]
        if messages and str(messages[0].get("Response")) == "Error":
            raise AmiUnavailable(f"CoreShowChannels refused: {messages[0].get('Message')}")
        return {str(m.get("Uniqueid")) for m in messages
                if str(m.get("Event")) == "CoreShowChannel" and m.get("Uniqueid")}
