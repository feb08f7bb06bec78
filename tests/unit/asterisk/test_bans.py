"""The SIP ban list as a PJSIP ACL file: pure rendering, parsing it back (the file is the state), the file."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from ivr.asterisk.bans import (
    ACL_SECTION,
    BANS_FILE,
    bans_path,
    parse_bans,
    read_bans,
    render_bans,
    write_bans,
)
from ivr.domain.sip_bans import Ban
from tests.unit.asterisk.test_officers import _sections

UNTIL = dt.datetime(2026, 12, 6, 13, 0, tzinfo=dt.timezone.utc)


def test_bans_render_as_one_acl_that_denies_each_address() -> None:
    text = render_bans([Ban("198.51.100.7", UNTIL, 5), Ban("2001:db8::1", UNTIL, 6)])
    assert _sections(text) == [(ACL_SECTION, {"type": ["acl"], "deny": ["198.51.100.7/32", "2001:db8::1/128"]})]


def test_no_bans_define_nothing() -> None:
    assert _sections(render_bans([])) == []


def test_the_file_gives_its_bans_back() -> None:
    bans = [Ban("198.51.100.7", UNTIL, 5), Ban("127.0.0.2", UNTIL + dt.timedelta(hours=1), 3)]
    assert parse_bans(render_bans(bans)) == {b.address: b for b in bans}
    # Lines it did not write (a hand edit) are ignored rather than trusted.
    assert parse_bans("deny = 203.0.113.1/32\ndeny = nonsense ; until=x failures=1\n") == {}


@pytest.mark.parametrize("ban", [Ban("198.51.100.7/24", UNTIL, 1), Ban("host.example", UNTIL, 1),
                                 Ban("198.51.100.7\n[evil]", UNTIL, 1), Ban("198.51.100.7", UNTIL.replace(tzinfo=None), 1)])
def test_what_is_not_an_address_or_a_dated_ban_is_refused(ban: Ban) -> None:
    with pytest.raises(ValueError):
        render_bans([ban])


def test_the_file_is_replaced_whole_and_kept_from_others(tmp_path: Path) -> None:
    assert read_bans(tmp_path) == {}
    path = write_bans(tmp_path, [Ban("198.51.100.7", UNTIL, 5)])
    assert path == bans_path(tmp_path) == tmp_path / "etc" / BANS_FILE
    assert BANS_FILE.parent == Path("officers")  # the service's one writable folder under etc
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert set(read_bans(tmp_path)) == {"198.51.100.7"}
    write_bans(tmp_path, [])
    assert read_bans(tmp_path) == {} and not list(path.parent.glob("*.tmp"))
