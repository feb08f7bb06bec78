"""Kannel's callbacks into the service: only signed requests write, garbage is refused, good ones are stored."""

from __future__ import annotations

import asyncio
import secrets
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from ivr.copies.callbacks import KannelCallbacks, callback_app, member_number
from ivr.copies.kannel import DLR_PURPOSE, MO_PURPOSE, dlr_url, mo_token, mo_url
from ivr.copies.tokens import sign
from ivr.domain.vocabulary import Channel, CopyStatus
from storage.db import session_scope
from storage.models import Confirmation, Person, SmsReply
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


def _client(world: World, confirmed: list[int] | None = None) -> TestClient:
    hook = (lambda: confirmed.append(1)) if confirmed is not None else None
    return TestClient(callback_app(copy_desk(world), KEY, on_confirmed=hook, clock=world.desk.clock))


def _dlr(copy_id: str, kind: str, sig: str | None = None) -> str:
    url = dlr_url("http://127.0.0.1:1", copy_id, sig or sign(KEY, DLR_PURPOSE, copy_id)).replace("%d", kind)
    return url.split("127.0.0.1:1", 1)[1]


def _mo(sender: str, text: str, ref: str, token: str | None = None) -> str:
    path = mo_url("http://127.0.0.1:1", token or mo_token(KEY)).split("127.0.0.1:1", 1)[1]
    values = {"%p": urllib.parse.quote(sender), "%P": "3250123456", "%a": urllib.parse.quote(text), "%I": ref}
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
        assert client.get(_mo("+32470000001", "STOP", "k-1", sign(KEY, DLR_PURPOSE, "kannel"))).status_code == 403
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


async def test_a_members_reply_confirms_once_and_tells_the_dialer(world: World, tmp_path: Path) -> None:
    await _one_sms_sending(world, tmp_path)
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
        assert client.get(_mo(number_of(world, person_id), "STOP", "k-2")).status_code == 200
    with session_scope(world.engine) as s:
        assert s.get_one(Person, person_id).sms_opt_out_at is not None


@pytest.mark.parametrize("sender,text,ref", [
    ("", "1", "k-1"), ("hello<script>", "1", "k-1"), ("+32470000001", "1", "k' OR 1=1"),
    ("+32470000001", "1" * 2000, "k-1"), ("123", "1", "k-1"), ("+32470000001", "1", "x" * 65),
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
