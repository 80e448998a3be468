"""Prepared statements: the same values, errors and transaction as SQLAlchemy's own execution."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import cast

import pytest
from sqlalchemy import Dialect, Table, bindparam, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.exc import IntegrityError, StatementError

from service.domain.errors import Conflict
from service.store import Database
from service.store.prepared import Prepared, link
from service.store.tables import BlockRow, CableRow, OutboxRow

T0 = datetime(2026, 3, 29, 0, 45, tzinfo=UTC)  # the night clocks go forward in Europe
_BLOCKS = cast(Table, BlockRow.__table__)
_INSERT = Prepared(insert(_BLOCKS), keys=["cable_id", "start", "limit", "base_load", "margin"])
_BETWEEN = Prepared(
    select(_BLOCKS.c.start, _BLOCKS.c.limit, _BLOCKS.c.margin)
    .where(_BLOCKS.c.cable_id == bindparam("cable_id"), _BLOCKS.c.start >= bindparam("from_"))
    .where(_BLOCKS.c.limit > Decimal("0.5"))  # a literal: its value is bound, not given
    .order_by(_BLOCKS.c.start)
)


@pytest.fixture
def cable(db: Database) -> str:
    with db.write() as session:
        session.add(CableRow(id="c1", name="Kerkstraat", unit="A", rated_limit=Decimal(100), phases=3,
                             voltage_v=Decimal(230), margin=Decimal(0), reserve_share=Decimal(0), base_load=Decimal(0),
                             created_at=T0, updated_at=T0))  # fmt: skip
    return "c1"


def block(start: datetime, limit: str) -> dict[str, object]:
    return {"cable_id": "c1", "start": start, "limit": Decimal(limit), "base_load": Decimal(0),
            "margin": Decimal("1.5")}  # fmt: skip


def test_values_come_back_as_the_column_types_make_them(db: Database, cable: str) -> None:
    starts = [T0 + timedelta(minutes=15 * i) for i in range(4)]
    with db.write() as session:
        _INSERT.run(link(session), [block(s, f"{40 + i}.125") for i, s in enumerate(starts)])
        _INSERT.run(link(session), [block(T0 - timedelta(minutes=15), "0.25")])  # below the literal
    with db.read() as session:
        rows = _BETWEEN.rows(link(session), {"cable_id": cable, "from_": T0 - timedelta(hours=1)})
        orm = session.execute(select(BlockRow.start, BlockRow.limit, BlockRow.margin).order_by(BlockRow.start)).all()
    assert [(r.start, r.limit, r.margin) for r in rows] == [tuple(r) for r in orm[1:]]
    assert [r.start for r in rows] == starts
    assert all(r.start.tzinfo is not None and r.start.utcoffset() == timedelta(0) for r in rows)
    assert [r.limit for r in rows] == [Decimal("40.125"), Decimal("41.125"), Decimal("42.125"), Decimal("43.125")]
    assert {type(r.margin) for r in rows} == {Decimal}


def test_a_local_time_is_stored_as_its_utc_instant(db: Database, cable: str) -> None:
    amsterdam = datetime(2026, 3, 29, 3, 0, tzinfo=UTC).astimezone()  # any aware time: stored in UTC
    with db.write() as session:
        _INSERT.run(link(session), [block(amsterdam, "10")])
    with db.read() as session:
        (row,) = _BETWEEN.rows(link(session), {"cable_id": cable, "from_": T0})
    assert row.start == amsterdam
    assert row.start.tzinfo == UTC


def test_it_runs_in_the_transaction_and_rolls_back_with_it(db: Database, cable: str) -> None:
    def abandoned() -> None:
        with db.write() as session:
            _INSERT.run(link(session), [block(T0, "10")])
            assert len(_BETWEEN.rows(link(session), {"cable_id": cable, "from_": T0})) == 1  # seen inside
            raise RuntimeError("abandon the decision")

    with pytest.raises(RuntimeError):
        abandoned()
    with db.read() as session:
        assert _BETWEEN.rows(link(session), {"cable_id": cable, "from_": T0}) == []


def test_a_constraint_error_is_sqlalchemys_and_becomes_a_conflict(db: Database, cable: str) -> None:
    with db.write() as session:
        _INSERT.run(link(session), [block(T0, "10")])
    with db.write() as session, pytest.raises(IntegrityError) as raised:
        _INSERT.run(link(session), [block(T0, "20.375")])
    assert raised.value.orig is not None
    assert "20.375" not in str(raised.value)  # parameters hidden, as the engines hide them
    with pytest.raises(Conflict, match="clashes"), db.write() as session:
        _INSERT.run(link(session), [block(T0, "20.375")])


def test_a_naive_datetime_is_refused_before_anything_is_written(db: Database, cable: str) -> None:
    with pytest.raises(StatementError, match="naive datetime"), db.write() as session:
        _INSERT.run(link(session), [block(T0, "10"), block(datetime(2026, 3, 29, 2, 30), "10")])  # noqa: DTZ001
    with db.read() as session:
        assert _BETWEEN.rows(link(session), {"cable_id": cable, "from_": T0 - timedelta(days=1)}) == []


def test_a_missing_parameter_is_named() -> None:
    with pytest.raises(KeyError, match="from_"):
        Prepared._params(_BETWEEN._for(_dialect()), {"cable_id": "c1"})


def test_an_expanding_in_is_refused_when_compiled() -> None:
    statement = Prepared(select(_BLOCKS.c.start).where(_BLOCKS.c.cable_id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="expanding IN"):
        statement._for(_dialect())


def _dialect() -> Dialect:
    return sqlite.dialect()


def test_a_column_left_to_a_python_default_is_refused_when_compiled() -> None:
    keys = ["cpo_id", "cable_id", "created_at", "next_attempt_at"]
    outbox = Prepared(insert(cast(Table, OutboxRow.__table__)), keys=keys)
    with pytest.raises(ValueError, match="defaults"):
        outbox._for(_dialect())  # attempts has a default of 0 that would be written as NULL


def test_an_insert_returns_nothing_it_was_not_asked_for() -> None:
    keys = ["cpo_id", "cable_id", "created_at", "attempts", "next_attempt_at"]
    outbox = Prepared(insert(cast(Table, OutboxRow.__table__)), keys=keys)  # its id is generated
    for dialect in (_dialect(), psycopg.dialect()):  # type: ignore[no-untyped-call]
        assert "RETURNING" not in outbox._for(dialect).sql
