"""``UtcDateTime``: stored exactly as ``DateTime(timezone=True)`` stores it; read back as aware UTC."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, select, text

from storage.db import make_engine, open_database, session_scope
from storage.models import Base, Bin, Message, PoliceZone, Timestamp, UtcDateTime, as_utc
from ivr.domain.vocabulary import Urgency

UTC = dt.timezone.utc
BRUSSELS = zoneinfo.ZoneInfo("Europe/Brussels")


def test_every_datetime_column_is_utc() -> None:
    columns = [c for t in Base.metadata.sorted_tables for c in t.columns
               if isinstance(c.type, (DateTime, UtcDateTime))]
    assert columns and all(isinstance(c.type, UtcDateTime) for c in columns), \
        [str(c) for c in columns if not isinstance(c.type, UtcDateTime)]


def test_as_utc() -> None:
    naive = dt.datetime(2026, 11, 23, 14, 5)
    assert as_utc(naive) == naive.replace(tzinfo=UTC)
    assert as_utc(dt.datetime(2026, 11, 23, 15, 5, tzinfo=BRUSSELS)) == naive.replace(tzinfo=UTC)
    assert as_utc(dt.datetime(2026, 11, 23, 15, 5, tzinfo=BRUSSELS)).tzinfo is UTC


def test_stored_as_before_and_read_back_aware(db_url: str) -> None:
    engine = make_engine(db_url)
    meta = MetaData()
    before = Table("t_before", meta, Column("id", Integer, primary_key=True),
                   Column("at", DateTime(timezone=True)))
    now = Table("t_now", meta, Column("id", Integer, primary_key=True), Column("at", Timestamp))
    meta.create_all(engine)
    summer = dt.datetime(2026, 7, 1, 12, 30, 15, 123456, tzinfo=UTC)
    winter = dt.datetime(2026, 1, 5, 23, 59, 59, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            for table in (before, now):
                conn.execute(insert(table), [{"id": 1, "at": summer}, {"id": 2, "at": winter},
                                             {"id": 3, "at": summer.replace(tzinfo=None)}])
            # The schema is the same column type.
            cast = "CAST(at AS TEXT)"
            stored = {name: conn.execute(text(f"SELECT id, {cast} FROM {name} ORDER BY id")).all()
                      for name in ("t_before", "t_now")}
            assert stored["t_before"] == stored["t_now"]
            # Read back: aware UTC, the same instant.
            back = conn.execute(select(now.c.id, now.c.at).order_by(now.c.id)).all()
            assert [at for _, at in back] == [summer, winter, summer]
            assert all(at.tzinfo is not None and at.utcoffset() == dt.timedelta(0) for _, at in back)
            # An aware time in another zone is written as its UTC instant.
            conn.execute(insert(now), [{"id": 4, "at": summer.astimezone(BRUSSELS)}])
            conn.execute(insert(before), [{"id": 4, "at": summer}])
            assert conn.execute(text(f"SELECT {cast} FROM t_now WHERE id = 4")).scalar() == \
                conn.execute(text(f"SELECT {cast} FROM t_before WHERE id = 4")).scalar()
            assert conn.execute(select(now.c.at).where(now.c.id == 4)).scalar() == summer
            # Comparisons bind through the type too.
            later = summer.astimezone(BRUSSELS) - dt.timedelta(seconds=1)
            assert conn.execute(select(now.c.id).where(now.c.at > later, now.c.id == 4)).scalar() == 4
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_orm_rows_come_back_aware(db_url: str) -> None:
    engine = open_database(db_url)
    with session_scope(engine) as s:
        zone = PoliceZone(code="5415", name="Gent")
        bin_ = Bin(number=12, name="Noord", zone=zone)
        s.add_all([zone, bin_])
        s.flush()
        s.add(Message(bin_id=bin_.id, urgency=Urgency.URGENT,
                      deliver_at=dt.datetime(2026, 11, 23, 15, 5, tzinfo=BRUSSELS)))
    with session_scope(engine) as s:
        message = s.scalars(select(Message)).one()
        assert message.created_at.tzinfo is not None and message.created_at.utcoffset() == dt.timedelta(0)
        assert message.deliver_at == dt.datetime(2026, 11, 23, 14, 5, tzinfo=UTC)
        assert message.deliver_at.tzinfo is UTC
    engine.dispose()
