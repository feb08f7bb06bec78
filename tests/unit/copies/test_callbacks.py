"""Kannel's callbacks into the service: only signed requests write, garbage is refused, good ones are stored."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from ivr.copies.callbacks import KannelCallbacks, Throttled, callback_app, member_number
from ivr.copies.kannel import DLR_PURPOSE, MO_PURPOSE, dlr_url, mo_token, mo_url
from ivr.copies.tokens import sign
from ivr.domain.vocabulary import Channel, CopyStatus
from storage.db import session_scope
from storage.models import Confirmation, Person, SmsReply
from tests.conftest import Clock
from tests.unit.copies.campaigns import campaign, copies, copy_desk, member, number_of
from tests.world import World

KEY = secrets.token_bytes(32)
OTHER_KEY = secrets.token_bytes(32)


async def _one_sms_sending(world: World, tmp_path: Path) -> str:
    member(world, channels="sms")
    await campaign(world, tmp_path, text="Let op.")
    desk = copy_desk(world)
    await desk.plan({Channel.SMS})
    [job] = await desk.claim(5)
    return job.copy_id


async def _one_sms_sent(world: World, tmp_path: Path, clock: Clock) -> str:
    """One SMS copy Kannel took an hour ago (a reply "1" may confirm its campaign)."""
    copy_id = await _one_sms_sending(world, tmp_path)
    assert await copy_desk(world).sent(copy_id, "0: Accepted for delivery", segments=1)
    clock.advance(hours=1)
    return copy_id


def _client(world: World, confirmed: list[int] | None = None, **options: float) -> TestClient:
    hook = (lambda: confirmed.append(1)) if confirmed is not None else None
    return TestClient(callback_app(copy_desk(world), KEY, on_confirmed=hook, clock=world.desk.clock, **options))


def _dlr(copy_id: str, kind: str, sig: str | None = None) -> str:
    url = dlr_url("http://127.0.0.1:1", copy_id, sig or sign(KEY, DLR_PURPOSE, copy_id)).replace("%d", kind)
    return url.split("127.0.0.1:1", 1)[1]


def _kannel_id() -> str:
    """An id as Kannel gives a reply (``%I``)."""
    return str(uuid.uuid4())


def _mo(sender: str, text: str, ref: str, token: str | None = None, ts: str = "") -> str:
    """The reply URL as smsbox fills it in (``ts`` empty: as if Kannel had no time for it)."""
    path = mo_url("http://127.0.0.1:1", token or mo_token(KEY)).split("127.0.0.1:1", 1)[1]
    values = {"%p": urllib.parse.quote(sender), "%P": "3250123456", "%a": urllib.parse.quote(text), "%I": ref,
              "%T": ts}
    for field, value in values.items():
        path = path.replace(field, value)
    return path


def _status(world: World) -> CopyStatus:
    [row] = copies(world).values()
    return row.status


async def test_a_signed_delivery_report_is_stored(world: World, tmp_path: Path) -> None:
    copy_id = await _one_sms_sending(world, tmp_path)
    with _client(world) as client:
        answer = client.get(_dlr(copy_id, "1"))
        assert (answer.status_code, answer.text) == (200, "ok")
        assert client.get(_dlr(copy_id, "1")).status_code == 200  # Kannel retrying: the same, once
    [row] = copies(world).values()
    assert row.status is CopyStatus.DELIVERED and row.delivered_at == world.desk.clock()


@pytest.mark.parametrize("sig", ["", "0" * 32, "not-hex", "x" * 500])
async def test_a_delivery_report_without_its_signature_writes_nothing(world: World, tmp_path: Path, sig: str) -> None:
    copy_id = await _one_sms_sending(world, tmp_path)
    with _client(world) as client:
        assert client.get(f"/kannel/dlr?copy={copy_id}&type=1&sig={sig}").status_code == 403
        assert client.get(f"/kannel/dlr?copy={copy_id}&type=1").status_code == 403
    assert _status(world) is CopyStatus.SENDING


async def test_a_signature_for_something_else_is_refused(world: World, tmp_path: Path) -> None:
    copy_id = await _one_sms_sending(world, tmp_path)
    with _client(world) as client:
        # Another copy's signature, another installation's key, the reply token: none opens this copy.
        assert client.get(_dlr(copy_id, "1", sign(KEY, DLR_PURPOSE, "another-copy"))).status_code == 403
        assert client.get(_dlr(copy_id, "1", sign(OTHER_KEY, DLR_PURPOSE, copy_id))).status_code == 403
        assert client.get(_dlr(copy_id, "1", sign(KEY, MO_PURPOSE, copy_id))).status_code == 403
        assert client.get(_mo("+32470000001", "STOP", _kannel_id(),
                              sign(KEY, DLR_PURPOSE, "kannel"))).status_code == 403
    assert _status(world) is CopyStatus.SENDING
    with session_scope(world.engine) as s:
        assert s.scalars(select(SmsReply)).all() == []


@pytest.mark.parametrize("kind", ["", "abc", "1;drop", "99999", "-1"])
async def test_a_signed_report_with_a_bad_type_is_a_bad_request(world: World, tmp_path: Path, kind: str) -> None:
    copy_id = await _one_sms_sending(world, tmp_path)
    with _client(world) as client:
        assert client.get(f"/kannel/dlr?copy={copy_id}&sig={sign(KEY, DLR_PURPOSE, copy_id)}&"
                          f"type={urllib.parse.quote(kind)}").status_code == 400
        assert client.post(_dlr(copy_id, "1")).status_code == 405
    assert _status(world) is CopyStatus.SENDING


async def test_a_report_for_an_unknown_copy_is_answered_and_ignored(world: World) -> None:
    with _client(world) as client:
        assert client.get(_dlr("0f0f0f0f-1111-2222-3333-444444444444", "1")).status_code == 200


async def test_a_members_reply_confirms_once_and_tells_the_dialer(world: World, tmp_path: Path,
                                                                  clock: Clock) -> None:
    await _one_sms_sent(world, tmp_path, clock)
    [person_id] = {pid for pid, _ in copies(world)}
    number = number_of(world, person_id)
    confirmed: list[int] = []
    with _client(world, confirmed) as client:
        # The SMSC gives the number without its plus; Kannel's id makes a retried callback one reply.
        for _ in range(2):
            answer = client.get(_mo(number.lstrip("+"), "Ok, begrepen", "0b8d7a4c-aaaa-bbbb-cccc-000000000001"))
            assert (answer.status_code, answer.text) == (200, "ok")
    with session_scope(world.engine) as s:
        [reply] = s.scalars(select(SmsReply)).all()
        [confirmation] = s.scalars(select(Confirmation)).all()
    assert (reply.from_e164, reply.action, reply.text) == (number, "confirm", "Ok, begrepen")
    assert confirmation.person_id == person_id and confirmation.via == "sms"
    assert len(confirmed) == 2  # told each time (a wake is harmless), stored once


async def test_stop_by_sms_opts_out(world: World, tmp_path: Path) -> None:
    await _one_sms_sending(world, tmp_path)
    [person_id] = {pid for pid, _ in copies(world)}
    with _client(world) as client:
        assert client.get(_mo(number_of(world, person_id), "STOP", _kannel_id())).status_code == 200
    with session_scope(world.engine) as s:
        assert s.get_one(Person, person_id).sms_opt_out_at is not None


ID = "0b8d7a4c-aaaa-bbbb-cccc-000000000002"


@pytest.mark.parametrize("sender,text,ref", [
    ("", "1", ID), ("hello<script>", "1", ID), ("+32470000001", "1", "k' OR 1=1"),
    ("+32470000001", "1" * 2000, ID), ("123", "1", ID), ("+32470000001", "1", "x" * 65),
    # Kannel's id is required, and is a UUID: a reply without it could be replayed as a new one.
    ("+32470000001", "1", ""), ("+32470000001", "1", "k-1"), ("+32470000001", "1", ID + "0"),
    ("+32470000001", "1", ID + "\n"), ("+32470000001", "1", ID.replace("a", "\u0661")),
])
async def test_a_signed_reply_with_garbage_is_a_bad_request(world: World, sender: str, text: str, ref: str) -> None:
    with _client(world) as client:
        assert client.get(_mo(sender, text, urllib.parse.quote(ref))).status_code == 400
    with session_scope(world.engine) as s:
        assert s.scalars(select(SmsReply)).all() == []


def test_member_numbers_as_smscs_give_them() -> None:
    assert member_number("+32470123456") == "+32470123456"
    assert member_number("32470123456") == "+32470123456"
    assert member_number("0470123456") == "+32470123456"
    assert member_number("0032470123456") == "+32470123456"
    assert member_number("Proximus") is None and member_number("") is None


async def test_the_listener_serves_on_loopback(world: World, tmp_path: Path) -> None:
    copy_id = await _one_sms_sending(world, tmp_path)
    listener = KannelCallbacks(callback_app(copy_desk(world), KEY, clock=world.desk.clock), 0)
    base = await listener.start()
    try:
        assert base.startswith("http://127.0.0.1:") and listener.port != 0

        def get(path: str) -> int:
            try:
                with urllib.request.urlopen(base + path, timeout=10) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert await asyncio.to_thread(get, f"/kannel/dlr?copy={copy_id}&type=1&sig={'0' * 32}") == 403
        assert await asyncio.to_thread(get, _dlr(copy_id, "8")) == 200
    finally:
        await listener.stop()
    assert _status(world) is CopyStatus.SENT


async def test_a_reply_url_seen_once_is_one_reply(world: World, tmp_path: Path, clock: Clock) -> None:
    await _one_sms_sent(world, tmp_path, clock)
    [person_id] = {pid for pid, _ in copies(world)}
    seen = _mo(number_of(world, person_id), "1", ID)
    with _client(world) as client:
        for replayed in (seen, seen, seen.replace(ID, ID.upper())):
            assert client.get(replayed).status_code == 200
        assert client.get(seen.replace(f"&id={ID}", "")).status_code == 400
    with session_scope(world.engine) as s:
        assert [r.gateway_ref for r in s.scalars(select(SmsReply))] == [ID]
        assert len(s.scalars(select(Confirmation)).all()) == 1


@pytest.mark.parametrize("sig", ["é" * 32, "0" * 31 + "é", "\u0663" * 32, "%00" * 32])
async def test_a_signature_beyond_ascii_is_forbidden_not_an_error(world: World, tmp_path: Path, sig: str) -> None:
    copy_id = await _one_sms_sending(world, tmp_path)
    quoted = urllib.parse.quote(sig, safe="%")
    with _client(world) as client:
        assert client.get(f"/kannel/dlr?copy={copy_id}&type=1&sig={quoted}").status_code == 403
        assert client.get(_mo("+32470000001", "STOP", ID).split("&sig=")[0] + f"&sig={quoted}").status_code == 403
    assert _status(world) is CopyStatus.SENDING


async def test_a_reply_keeps_the_time_kannel_took_it(world: World, tmp_path: Path, clock: Clock) -> None:
    await _one_sms_sent(world, tmp_path, clock)
    [person_id] = {pid for pid, _ in copies(world)}
    number = number_of(world, person_id)
    taken = clock.now - dt.timedelta(minutes=40)  # smsbox retried while the service was down
    ahead = clock.now + dt.timedelta(minutes=5)
    with _client(world) as client:
        assert client.get(_mo(number, "1", ID, ts=f"{int(taken.timestamp())}")).status_code == 200
        assert client.get(_mo(number, "?", _kannel_id(), ts=f"{int(ahead.timestamp())}")).status_code == 200
        assert client.get(_mo(number, "START", _kannel_id(), ts="")).status_code == 200  # %T not known
        for junk in ("yesterday", "-1", "12", "9" * 40, "1e10"):
            assert client.get(_mo(number, "2", _kannel_id(), ts=urllib.parse.quote(junk))).status_code == 400
    with session_scope(world.engine) as s:
        replies = s.scalars(select(SmsReply).order_by(SmsReply.id)).all()
        [confirmation] = s.scalars(select(Confirmation)).all()
    assert [r.at for r in replies] == [taken.replace(microsecond=0), clock.now, clock.now]
    assert confirmation.confirmed_at == taken.replace(microsecond=0)


async def test_refusals_are_logged_once_a_minute_with_their_count(world: World, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    copy_id = await _one_sms_sending(world, tmp_path)
    with caplog.at_level(logging.WARNING, logger="ivr.copies.callbacks"), _client(world) as client:
        for _ in range(25):
            assert client.get(f"/kannel/dlr?copy={copy_id}&type=1&sig={'0' * 32}").status_code == 403
            assert client.get(_mo("+32470000001", "1", ID, "0" * 32)).status_code == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "ivr.copies.callbacks"]
    assert len(lines) == 2 and all("(1 since the last such line)" in line for line in lines)


def test_a_throttled_warning_counts_what_it_did_not_say(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    warn = Throttled("bad things", every_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="ivr.copies.callbacks"):
        for step in range(10):
            now[0] = 100.0 + 10 * step  # one every 10 s for 90 s
            warn()
    assert [r.getMessage() for r in caplog.records] == ["bad things (1 since the last such line)",
                                                        "bad things (6 since the last such line)"]


async def test_the_listener_serves_a_bounded_number_of_connections(world: World) -> None:
    listener = KannelCallbacks(callback_app(copy_desk(world), KEY, clock=world.desk.clock), 0, max_connections=2)
    base = await listener.start()

    def get(path: str) -> int:
        try:
            with urllib.request.urlopen(base + path, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        async def answered(status: int, what: str) -> None:
            deadline = asyncio.get_running_loop().time() + 30
            while await asyncio.to_thread(get, forged) != status:
                assert asyncio.get_running_loop().time() < deadline, what
                await asyncio.sleep(0.05)

        forged = f"/kannel/dlr?copy=x&type=1&sig={'0' * 32}"
        assert await asyncio.to_thread(get, forged) == 403
        idle = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", listener.port), 10)
        try:
            # Once the server holds the idle connection, a second one is one too many.
            await answered(503, "no 503 with the connections in use")
        finally:
            idle.close()
        await answered(403, "the idle connection was never let go")
    finally:
        await listener.stop()
