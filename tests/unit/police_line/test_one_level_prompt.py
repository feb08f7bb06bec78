"""The officer hears where the message goes: to the coordinators, straight to the members of a
one-level BIN, or (urgent, zone with a second approver) first to a second police officer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.domain.vocabulary import MessageStatus
from storage.db import session_scope
from storage.models import Bin, PoliceZone
from tests.unit.police_line.test_flow import SPEECH, _messages, _run
from tests.fakes import Speak
from tests.world import OFFICER_PIN, World


@pytest.mark.parametrize(("one_level", "second", "urgency_key", "prompt"), [
    (False, True, "1", "police_sent"),
    (True, False, "1", "police_sent_one_level"),
    (True, True, "2", "police_sent_one_level"),           # preventive: no second officer
    (True, True, "1", "police_sent_awaiting_approval"),
])
async def test_the_officer_hears_where_the_message_goes(world: World, tmp_path: Path, one_level: bool, second: bool,
                                                        urgency_key: str, prompt: str) -> None:
    with session_scope(world.engine) as s:
        s.get_one(Bin, world.bin_id).one_level = one_level
        s.get_one(PoliceZone, world.zone_id).second_approver = second
    _end, call = await _run(world, [OFFICER_PIN, "12", "1", urgency_key, Speak(SPEECH), "3"], tmp_path)
    assert call.said[-1] == prompt and call.hung_up
    [message] = _messages(world)
    assert message.status is MessageStatus.RECORDED  # the review side acts on it (ivr.review.rounds)
