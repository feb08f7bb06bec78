"""The admin line against the real Asterisk: an admin phones in, types the PIN and the BIN, hears the
newest message with its confirmation count and recording, then the older one. Every replay is in
the audit log, and what the simulated phone heard holds both original recordings."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.telephony.call import Recorded
from ivr.media.compare import hear_file, read_wav_mono
from ivr.media.voice import PromptRenderer
from ivr.police_line.store import Officer
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import CallerScript, Listen, Press, Wait
from storage.db import session_scope
from storage.models import AuditEntry, Campaign, Confirmation, Message, Person, PhoneNumber, RoleAssignment
from ivr.domain.vocabulary import CampaignStatus, Language, MessageStatus, PhoneRank, Role, Urgency
from storage.pins import hash_pin
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import Binfoon, start_binfoon
from storage.recordings import open_recording

pytestmark = pytest.mark.integration

NEWER_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "01.wav"
OLDER_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
ADMIN_PHONE, ADMIN_PIN = "+3292999001", "8642"
ADMIN_LINE = "+3250000300"  # the admin_line_number default, as the lab's Asterisk routes it
#: When the two messages were sent (UTC): 14:32 and 08:05 in Brussels.
NEWER_AT = dt.datetime(2026, 11, 27, 13, 32, tzinfo=dt.timezone.utc)
OLDER_AT = dt.datetime(2026, 11, 20, 7, 5, tzinfo=dt.timezone.utc)


def _seconds(path: Path) -> float:
    samples, rate = read_wav_mono(path)
    return len(samples) / rate


async def _heard_s(renderer: PromptRenderer, prompts: list[tuple[str, dict[str, object]]],
                   clip: Path) -> float:
    """How long ``prompts`` (rendered now, so the flow finds them cached) and then ``clip`` play."""
    return sum([_seconds(await renderer.wav(p, "nl", **v)) for p, v in prompts]) + _seconds(clip)


def _add_people(binfoon: Binfoon) -> int:
    """An admin with a PIN and four members of BIN 12; returns the admin's id."""
    with session_scope(binfoon.world.engine) as s:
        admin = Person(name="Beheerder", language=Language.NL, pin_hash=hash_pin(ADMIN_PIN))
        admin.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=ADMIN_PHONE))
        admin.roles.append(RoleAssignment(role=Role.ADMIN))
        members = []
        for i in range(1, 5):
            member = Person(name=f"Lid {i}", language=Language.NL)
            member.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=f"+3291100{i:03d}"))
            member.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=binfoon.world.bin_id))
            members.append(member)
        s.add_all([admin, *members])
        s.flush()
        return admin.id


async def _sent(binfoon: Binfoon, clip: Path, at: dt.datetime, urgency: Urgency,
                confirmed: int | None) -> int:
    """A message of BIN 12 spoken as ``clip``, already delivered (``confirmed`` of the members
    confirmed) or, with ``None``, never delivered. Written as done so the service leaves it alone."""
    desk = binfoon.app.desk
    officer = Officer(binfoon.world.officer_id, "P", "nl", None)
    message_id = await desk.create_draft(officer, binfoon.world.bin_id, urgency)
    spool = binfoon.settings.data_dir / f"spool-{message_id}.wav"
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_bytes(clip.read_bytes())
    await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    with session_scope(binfoon.world.engine) as s:
        message = s.get_one(Message, message_id)
        message.status = MessageStatus.DONE if confirmed is not None else MessageStatus.REJECTED
        message.submitted_take, message.submitted_at = 1, at
        if confirmed is not None:
            campaign = Campaign(message_id=message_id, status=CampaignStatus.DONE, created_at=at,
                                finished_at=at)
            s.add(campaign)
            s.flush()
            members = s.scalars(select(Person.id).join(RoleAssignment)
                                .where(RoleAssignment.role == Role.MEMBER).order_by(Person.id)).all()
            s.add_all([Confirmation(campaign_id=campaign.id, person_id=pid, confirmed_at=at, via="call")
                       for pid in members[:confirmed]])
    return message_id


async def test_an_admin_hears_the_latest_messages_with_their_counts(lab: PhoneLab, tmp_path: Path,
                                                                     renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    try:
        admin_id = _add_people(binfoon)
        older = await _sent(binfoon, OLDER_CLIP, OLDER_AT, Urgency.PREVENTIVE, None)
        newer = await _sent(binfoon, NEWER_CLIP, NEWER_AT, Urgency.URGENT, 3)
        # What the admin hears before each menu at the least: the script waits that long, then for the
        # menu to end (3 s of quiet: longer than any pause inside the prompts, shorter than the wait
        # for a key), so that its key comes after the whole recording however loaded the machine is.
        newest_s = await _heard_s(renderer, [
            ("admin_message_count", {"count": 2, "name": "Kerkwijk"}),
            ("admin_message_header", {"position": 1, "total": 2, "urgency": "Dringend", "day": 27,
                                      "month": "november", "hour": 14, "minute": 32}),
            ("report_counts", {"confirmed": 3, "members": 4})], NEWER_CLIP)
        older_s = await _heard_s(renderer, [
            ("admin_message_header", {"position": 2, "total": 2, "urgency": "Preventief", "day": 20,
                                      "month": "november", "hour": 8, "minute": 5}),
            ("admin_not_delivered", {})], OLDER_CLIP)
        counts = await renderer.wav("report_counts", "nl", confirmed=3, members=4)
        script = CallerScript.of(
            Listen(), Press(ADMIN_PIN + "#"),
            Listen(), Press("12#"),
            Listen(), Press("1"),                 # "you chose BIN 12, Kerkwijk; 1 if right"
            Wait(newest_s), Listen(2500, 60), Press("2"),   # the newest heard: next, the older one
            Wait(older_s), Listen(2500, 60), Press("*"),    # heard too: stop
            Listen(timeout_s=10),                 # "tot ziens"
        )
        call = await (await lab.call_in(ADMIN_PHONE, script, ADMIN_LINE)).wait(120)
        [flow] = await binfoon.timeline.wait_for_flows("admin_replay", 1, timeout_s=10)
        assert flow.end == "done", call.steps_done

        # Both replays are in the audit log, newest first, by the admin, on the admin line.
        with session_scope(binfoon.world.engine) as s:
            played = [e for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.played")
                                           .order_by(AuditEntry.id)) if e.details.get("via") == "admin_line"]
            pins = s.scalars(select(AuditEntry.action).where(AuditEntry.action.like("admin_line.%"))).all()
            # The stored files are sealed: what the phone must have heard is their verified plaintext.
            stored = {m: open_recording(Path(r.path), r.sha256)
                      for m in (newer, older) for r in [s.get_one(Message, m).recordings[0]]}
        assert [(e.actor, e.subject) for e in played] == [(f"person:{admin_id}", f"message:{newer}"),
                                                          (f"person:{admin_id}", f"message:{older}")]
        assert pins == ["admin_line.pin_ok"]
        # The phone heard "3 van de 4 leden hebben bevestigd" and both original recordings.
        heard = await asyncio.to_thread(call.heard_audio)
        hearings = {reference: hear_file(reference, heard) for reference in (counts, stored[newer], stored[older])}
        assert all(hearing.whole for hearing in hearings.values()), hearings
        # Newest first.
        assert hearings[stored[newer]].lag_s < hearings[stored[older]].lag_s  # type: ignore[operator]
    finally:
        await binfoon.app.stop()
