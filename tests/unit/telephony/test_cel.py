"""The CEL CSV reader: durable confirmations written by Asterisk, read after a checkpoint."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from ivr.asterisk.install import AsteriskRuntime
from ivr.asterisk.instance import CONF_TEMPLATES, AsteriskInstance, InstanceOptions
from ivr.telephony.cel import (
    CEL_CSV_NAME,
    COLUMNS,
    CelConfirmation,
    cel_csv_path,
    read_cel_rows,
    read_confirmations,
)

ATTEMPT = "cbc486d9-c8b3-4093-8593-ed82c9d238e3"
# A line exactly as Asterisk 22.10 wrote it for `EXEC CELGenUserEvent BINFOON_CONFIRM,<attempt>`.
REAL_LINE = (
    '"USER_DEFINED","BINFOON_CONFIRM","1795423733.229856","cbc486d9-c8b3-4093-8593-ed82c9d238e3",'
    '"cbc486d9-c8b3-4093-8593-ed82c9d238e3","Local/+3291000001@sim-phone-00000000;1","CELGenUserEvent",'
    '"BINFOON_CONFIRM,cbc486d9-c8b3-4093-8593-ed82c9d238e3","{""extra"":""cbc486d9-c8b3-4093-8593-ed82c9d238e3""}"\n'
)


def line(attempt: str, *, event: str = "USER_DEFINED", name: str = "BINFOON_CONFIRM",
         when: str = "1767225600.000042", extra: str | None = None, app_data: str | None = None) -> str:
    extra = f'{{""extra"":""{attempt}""}}' if extra is None else extra
    app_data = f"{name},{attempt}" if app_data is None else app_data
    fields = [event, name, when, attempt, attempt, "PJSIP/trunk-00000001", "CELGenUserEvent", app_data]
    return ",".join(f'"{f}"' for f in fields) + f',"{extra}"\n'


def test_a_line_asterisk_wrote_is_read_as_a_confirmation(tmp_path: Path) -> None:
    path = tmp_path / "cel.csv"
    path.write_text(REAL_LINE)

    found, offset = read_confirmations(path, 0)

    at = dt.datetime(2026, 11, 23, 8, 48, 53, 229856, tzinfo=dt.timezone.utc)
    assert found == [CelConfirmation(attempt_id=ATTEMPT, at=at, uniqueid=ATTEMPT)]
    assert found[0].at.utcoffset() == dt.timedelta(0)
    assert offset == path.stat().st_size


def test_missing_file_gives_nothing_and_keeps_the_offset(tmp_path: Path) -> None:
    assert read_confirmations(tmp_path / "absent.csv", 0) == ([], 0)
    assert read_confirmations(tmp_path / "absent.csv", 1234) == ([], 1234)


def test_only_lines_after_the_offset_are_read(tmp_path: Path) -> None:
    path = tmp_path / "cel.csv"
    path.write_text(line("a-1"))
    first, offset = read_confirmations(path, 0)
    with open(path, "a") as f:
        f.write(line("a-2"))
        f.write(line("a-3"))

    second, offset2 = read_confirmations(path, offset)
    again, offset3 = read_confirmations(path, offset2)

    assert [c.attempt_id for c in first] == ["a-1"]
    assert [c.attempt_id for c in second] == ["a-2", "a-3"]
    assert again == [] and offset3 == offset2 == path.stat().st_size


def test_a_line_being_written_is_never_consumed(tmp_path: Path) -> None:
    path = tmp_path / "cel.csv"
    whole = line("a-1")
    partial = line("a-2")
    path.write_text(whole + partial[:40])

    found, offset = read_confirmations(path, 0)
    assert [c.attempt_id for c in found] == ["a-1"]
    assert offset == len(whole.encode())

    # Only the start of a line, nothing complete after the offset: nothing read, offset kept.
    assert read_confirmations(path, offset) == ([], offset)
    # The missing end quote and newline would make a broken line: it must not come out half.
    with open(path, "a") as f:
        f.write(partial[40:])
    found, offset = read_confirmations(path, offset)
    assert [c.attempt_id for c in found] == ["a-2"] and offset == path.stat().st_size


def test_a_rotated_or_truncated_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "cel.csv"
    path.write_text(line("old-1") + line("old-2") + line("old-3"))
    _, offset = read_confirmations(path, 0)
    path.write_text(line("new-1"))  # logrotate: a new, shorter file

    found, new_offset = read_confirmations(path, offset)

    assert [c.attempt_id for c in found] == ["new-1"]
    assert new_offset == path.stat().st_size


def test_other_events_and_malformed_lines_are_passed_over(tmp_path: Path) -> None:
    path = tmp_path / "cel.csv"
    path.write_text(
        line("x-1", name="SOMETHING_ELSE")
        + line("x-2", event="HANGUP", name="")
        + '"too","few","fields"\n'
        + line("x-3", when="yesterday")
        + "\n"
        + line("a-1")
    )
    found, offset = read_confirmations(path, 0)
    assert [c.attempt_id for c in found] == ["a-1"]
    assert offset == path.stat().st_size
    rows, _ = read_cel_rows(path, 0)
    assert [r.user_event for r in rows] == ["SOMETHING_ELSE", "", "BINFOON_CONFIRM"]


def test_the_attempt_id_comes_from_the_extra_or_else_the_arguments(tmp_path: Path) -> None:
    path = tmp_path / "cel.csv"
    path.write_text(
        line("u-1", extra="a-plain")                  # an extra that is not JSON
        + line("u-2", extra="")                       # no extra: the application's argument
        + line("u-3", extra="", app_data="BINFOON_CONFIRM")  # nothing at all: passed over
    )
    found, _ = read_confirmations(path, 0)
    assert [(c.attempt_id, c.uniqueid) for c in found] == [("a-plain", "u-1"), ("u-2", "u-2")]


def test_microseconds_and_whole_seconds(tmp_path: Path) -> None:
    path = tmp_path / "cel.csv"
    path.write_text(line("a-1", when="1767225600.000042") + line("a-2", when="1767225601"))
    found, _ = read_confirmations(path, 0)
    assert [c.at for c in found] == [
        dt.datetime(2026, 1, 1, 0, 0, 0, 42, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc),
    ]


def test_the_reader_matches_the_rendered_cel_custom_conf(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("asterisk:x:101:101::/var/lib/asterisk:/x\n")
    runtime = AsteriskRuntime(root=root, version="22.10.1",
                              module_dir="/usr/lib/x86_64-linux-gnu/asterisk/modules")
    instance = AsteriskInstance(runtime, InstanceOptions(name="unit", agi_port=4999),
                                root / "srv" / "binfoon")
    instance.render()

    conf = (instance.run_dir / "etc" / "cel_custom.conf").read_text()
    # The output file is the path the reader looks at, as Asterisk (in its root) sees it.
    [section] = re.findall(r"^\[(.+)\]$", conf, re.M)
    assert section == f"{instance.inner_dir}/log/{CEL_CSV_NAME}"
    assert runtime.host_path(section) == cel_csv_path(instance)
    [fields] = re.findall(r"^fields = (.+)$", conf, re.M)
    assert tuple(f.strip() for f in fields.split(",")) == COLUMNS
    cel = (instance.run_dir / "etc" / "cel.conf").read_text()
    assert re.search(r"^enable = yes$", cel, re.M) and re.search(r"^events = USER_DEFINED$", cel, re.M)
    assert not re.search(r"^dateformat", cel, re.M)  # the reader expects epoch seconds
    assert (CONF_TEMPLATES / "cel_custom.conf").exists()
