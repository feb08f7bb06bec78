"""``binfoon campaign stop|renotify``, ``message cancel|retract`` and ``message send --as`` as typed."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.cli import main
from ivr.domain.vocabulary import CampaignStatus, MessageKind, MessageStatus
from storage.db import session_scope
from storage.models import AuditEntry, Campaign, Message
from tests.unit.delivery.test_campaign_runner import _add_members, _approved
from tests.world import World, build_world


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BINFOON_CONFIG", os.devnull)
    monkeypatch.setenv("BINFOON_AGI_PORT", str(_free_port()))  # no service answers there
    return build_world(f"sqlite:///{tmp_path / 'var' / 'binfoon.db'}", tmp_path / "var" / "recordings")


async def test_stop_renotify_retract_from_the_command_line(world: World, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _add_members(world, 3)
    message_id = await _approved(world, tmp_path)
    with session_scope(world.engine) as s:
        campaign_id = s.scalars(select(Campaign.id)).one()
    member = _add_members(world, 1, prefix="+3296")[0]
    assert main(["campaign", "stop", str(campaign_id), "--as", f"person:{member}"]) == 1
    assert "refused" in capsys.readouterr().err
    assert main(["campaign", "stop", str(campaign_id), "--as", "person:4242"]) == 1
    assert "no such person" in capsys.readouterr().err
    assert main(["campaign", "stop", str(campaign_id), "--as", f"person:{world.coordinators[0][0]}"]) == 0
    assert "0 of 4 members had confirmed; 4 never called" in capsys.readouterr().out
    assert main(["campaign", "report", str(campaign_id)]) == 0
    out = capsys.readouterr().out
    assert ": stopped;" in out and f"as person:{world.coordinators[0][0]}" in out and out.count("not_called") == 4
    assert main(["campaign", "watch", str(campaign_id), "--once"]) == 0
    out = capsys.readouterr().out
    assert f"campaign {campaign_id} (stopped)" in out and "never called (stopped) 4" in out and "STOPPED" in out
    csv = tmp_path / "r.csv"
    assert main(["campaign", "report", str(campaign_id), "--csv", str(csv)]) == 0
    assert main(["campaign", "report", str(campaign_id), "--csv", str(csv)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["campaign", "report", str(campaign_id), "--csv", str(csv), "--force"]) == 0
    assert main(["campaign", "renotify", str(campaign_id)]) == 0
    assert "round 2 calls 4 member(s)" in capsys.readouterr().out
    with session_scope(world.engine) as s:
        assert s.get_one(Campaign, campaign_id).status is CampaignStatus.RUNNING
    assert main(["message", "retract", str(message_id), "--text", "Vergeet het vorige bericht."]) == 0
    captured = capsys.readouterr()
    assert "approved at once" in captured.out and "service is not running" in captured.err
    with session_scope(world.engine) as s:
        retraction = s.scalars(select(Message).where(Message.kind == MessageKind.CANCELLATION)).one()
        assert retraction.status is MessageStatus.APPROVED and retraction.follow_up_of_id == message_id
        assert s.get_one(Campaign, campaign_id).status is CampaignStatus.CANCELLED  # stopped again first
    assert main(["message", "cancel", str(message_id)]) == 1
    assert "stop its campaign instead" in capsys.readouterr().err


def test_send_records_its_author_and_warns(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    member = _add_members(world, 1)[0]
    assert main(["message", "send", "--bin", "12", "--urgent", "--text", "Test.", "--as", f"person:{member}"]) == 1
    assert "not an active police officer or admin" in capsys.readouterr().err
    assert main(["message", "send", "--bin", "12", "--urgent", "--text", "Test.",
                 "--as", f"person:{world.officer_id}"]) == 0
    captured = capsys.readouterr()
    assert "the service is not running" in captured.err and "no coordinator" not in captured.err
    with session_scope(world.engine) as s:
        message = s.scalars(select(Message)).one()
        assert message.created_by_id == world.officer_id
        assert s.scalar(select(AuditEntry.actor).where(AuditEntry.action == "message.submitted")).endswith(
            f"as person:{world.officer_id}")
    assert main(["message", "send", "--bin", "99", "--urgent", "--text", "Test."]) == 0
    assert "BIN 99 has no coordinator" in capsys.readouterr().err
    assert main(["message", "cancel", "1"]) == 0
    with session_scope(world.engine) as s:
        assert s.get_one(Message, 1).status is MessageStatus.CANCELLED
