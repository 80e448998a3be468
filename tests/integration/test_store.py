"""The store on SQLite and PostgreSQL: exact quantities, UTC datetimes, upserts, cascading deletes."""

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import StatementError
from test_usecases import make_cable

from service.domain.allocation import CableBook, Ledger, PendingRequest, Reason, hand_out, new_block
from service.domain.model import Binding, Cpo, LimitOverride, Subscription
from service.domain.units import GRID
from service.store import Database, DecisionRecord, Repository
from service.store.prepared import Prepared
from service.store.tables import (
    Base,
    BlockRow,
    BudgetRow,
    CableRow,
    CpoRow,
    DecisionRow,
    LedgerRow,
    LimitOverrideRow,
    PendingRequestRow,
    SubscriptionRow,
    UsageRow,
)

D = Decimal
Q = timedelta(minutes=15)
NOW = datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
AMS = ZoneInfo("Europe/Amsterdam")


def make_cpo(cpo_id: str) -> Cpo:
    return Cpo(
        id=cpo_id,
        name=f"CPO {cpo_id}",
        username=f"user-{cpo_id}",
        endpoint_url="https://cpo.example",
        binding=Binding.JSON,
    )


def count(db: Database, table: type[Base], **where: object) -> int:
    with db.read() as session:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(getattr(table, column) == value)
        return int(session.scalar(query) or 0)


# ---------------------------------------------------------------------------------------------
# column types


@pytest.mark.parametrize("value", ["0", "0.001", "123456789.999"])
def test_quantity_round_trips_exactly(db: Database, value: str) -> None:
    with db.write() as session:
        session.add(UsageRow(cable_id="c1", cpo_id="a", start=T0, average_usage=D(value), reported_at=NOW))
        session.add(
            CableRow(
                id="c1",
                name="n",
                unit="A",
                rated_limit=D(value),
                phases=3,
                voltage_v=D(230),
                margin=D(value),
                reserve_share=D("0.1"),
                base_load=D(0),
                created_at=NOW,
                updated_at=NOW,
            )
        )
    with db.read() as session:
        usage = session.scalar(select(UsageRow.average_usage))
        limit = session.scalar(select(CableRow.rated_limit))
        peak = session.scalar(select(func.max(UsageRow.average_usage)))  # aggregates keep the type
    for got in (usage, limit, peak):
        assert isinstance(got, Decimal)
        assert got == D(value)
        assert str(got) == str(D(value).quantize(GRID))  # on the 0.001 grid, no float on the way


def test_utc_datetime_comes_back_aware_utc_whatever_zone_went_in(db: Database) -> None:
    # 01:30 in Amsterdam on the spring DST day is still winter time: 00:30 UTC.
    local = datetime(2026, 3, 29, 1, 30, tzinfo=AMS)
    summer = datetime(2026, 3, 29, 4, 45, tzinfo=AMS)  # +02:00 -> 02:45 UTC
    with db.write() as session:
        session.add(UsageRow(cable_id="c1", cpo_id="a", start=local, average_usage=D(1), reported_at=summer))
    with db.read() as session:
        row = session.scalars(select(UsageRow)).one()
        # a bound parameter in another zone finds the same instant
        found = session.scalar(
            select(func.count()).select_from(UsageRow).where(UsageRow.start == local.astimezone(AMS))
        )
        found_utc = session.scalar(
            select(func.count()).select_from(UsageRow).where(UsageRow.start == datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
        )
        later = session.scalar(
            select(func.count()).select_from(UsageRow).where(UsageRow.start > datetime(2026, 3, 29, 0, 29, tzinfo=UTC))
        )
    for got, sent in ((row.start, local), (row.reported_at, summer)):
        assert got.tzinfo is not None
        assert got.utcoffset() == timedelta(0)
        assert got.tzinfo == UTC
        assert got == sent
    assert row.start == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert row.reported_at == datetime(2026, 3, 29, 2, 45, tzinfo=UTC)
    assert (found, found_utc, later) == (1, 1, 1)


def test_utc_datetime_refuses_naive_datetimes_and_writes_nothing(db: Database) -> None:
    naive = datetime(2026, 11, 24, 12, 0)  # noqa: DTZ001 - the point of the test

    def write_two() -> None:
        with db.write() as session:
            session.add(UsageRow(cable_id="c1", cpo_id="a", start=T0, average_usage=D(1), reported_at=NOW))
            session.flush()
            session.add(UsageRow(cable_id="c1", cpo_id="b", start=naive, average_usage=D(1), reported_at=NOW))
            session.flush()

    with pytest.raises(StatementError, match="naive datetime"):
        write_two()
    assert count(db, UsageRow) == 0  # the whole transaction rolled back
    with pytest.raises(StatementError, match="naive datetime"), db.read() as session:
        session.execute(select(UsageRow).where(UsageRow.start >= naive))


# ---------------------------------------------------------------------------------------------
# upserts


def test_upserts_replace_rows_instead_of_duplicating_them(db: Database) -> None:
    cable = make_cable()
    with db.write() as session:
        repo = Repository(session)
        repo.save_cable(cable, NOW)
        repo.save_cpo(make_cpo("a"), NOW, "hash-1")
        repo.save_subscription(Subscription("c1", "a", D(1), D(10)))
        repo.save_usage("c1", "a", {T0: D(5), T0 - Q: D(7)}, NOW)
        book = CableBook(cable, repo.subscriptions("c1"), {})
        ledger = hand_out(book, [new_block(cable, T0 + i * Q, cable.base_load) for i in range(2)])
        repo.save_book(book, [T0, T0 + Q], ledger.changes, NOW)

    later = NOW + timedelta(hours=1)
    changed = dataclasses.replace(cable, rated_limit=D(80), name="renamed")
    with db.write() as session:
        repo = Repository(session)
        repo.save_cable(changed, later)
        repo.save_cpo(Cpo("a", "Renamed", "user-a2", "https://other.example", Binding.SOAP12), later)  # no new hash
        repo.save_subscription(Subscription("c1", "a", D(3), D(4)))
        repo.save_usage("c1", "a", {T0: D("6.5")}, later)
        book = repo.load_book(changed, T0, T0 + 2 * Q)
        block = book.blocks[T0]
        block.limit, block.base_load, block.margin = D(80), D(1), D(2)
        block.pending["a"] = PendingRequest("a", T0, D(99), later)
        ledger = Ledger()
        ledger.set(block, "a", D("12.5"), Reason.REALLOCATED_DOWN)
        repo.save_book(book, [T0], ledger.changes, later)

    with db.read() as session:
        repo = Repository(session)
        assert repo.cable("c1").rated_limit == D(80)
        assert repo.cable("c1").name == "renamed"
        assert session.get(CableRow, "c1").created_at == NOW  # type: ignore[union-attr]
        assert session.get(CableRow, "c1").updated_at == later  # type: ignore[union-attr]
        assert repo.cpo("a").username == "user-a2"
        assert repo.password_hash("a") == "hash-1"  # kept when no new one is given
        assert repo.subscriptions("c1") == {"a": Subscription("c1", "a", D(3), D(4))}
        assert repo.usage("c1", T0 - Q, T0 + Q) == {T0: {"a": D("6.5")}, T0 - Q: {"a": D(7)}}
        book = repo.load_book(changed, T0, T0 + 2 * Q)
        assert (book.blocks[T0].limit, book.blocks[T0].base_load, book.blocks[T0].margin) == (D(80), D(1), D(2))
        assert book.blocks[T0].budgets == {"a": D("12.5")}
        assert book.blocks[T0].pending == {"a": PendingRequest("a", T0, D(99), later)}
        assert book.blocks[T0 + Q].budgets == {"a": D(63)}  # not touched
    for table, n in (
        (CableRow, 1),
        (CpoRow, 1),
        (SubscriptionRow, 1),
        (UsageRow, 2),
        (BlockRow, 2),
        (BudgetRow, 2),
        (PendingRequestRow, 1),
    ):
        assert count(db, table) == n, table.__tablename__


def spy_statements(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first word of every statement run, through SQLAlchemy or as a prepared statement."""
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2].split()[0]))
    run = Prepared._run

    def spied(dialect: Any, compiled: Any, execute: Any, params: Any) -> None:
        statements.append(compiled.sql.split()[0])
        run(dialect, compiled, execute, params)

    monkeypatch.setattr(Prepared, "_run", staticmethod(spied))
    return statements


def test_saving_a_book_writes_only_what_changed_and_what_changed_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks whose limit, base load, margin and pending requests are as stored are not written
    again; a change undone later in the same transaction is written back."""
    _populate(db, "c1")  # the block at T0 has a limit override and a pending request
    statements = spy_statements(db, monkeypatch)
    with db.write() as session:
        repo = Repository(session)
        book = repo.load_book(repo.cable("c1"), T0, T0 + Q)
        block = book.blocks[T0]
        stored = block.limit
        statements.clear()
        repo.save_book(book, [T0], [], NOW)
        assert statements == []  # nothing changed, nothing written
        block.limit = stored + 10
        block.pending.clear()
        repo.save_book(book, [T0], [], NOW)
        assert statements == ["INSERT", "DELETE"]  # the block; its pending request
        block.limit = stored
        repo.save_book(book, [T0], [], NOW)

    with db.read() as session:
        assert Repository(session).load_book(make_cable("c1"), T0, T0 + Q).blocks[T0].limit == stored
    assert count(db, PendingRequestRow, cable_id="c1") == 0


def test_recording_no_decisions_writes_nothing(db: Database) -> None:
    with db.write() as session:
        assert Repository(session).record_all([]) == []
    assert count(db, DecisionRow) == 0


# ---------------------------------------------------------------------------------------------
# delete_cable


def _populate(db: Database, cable_id: str) -> None:
    cable = make_cable(cable_id)
    with db.write() as session:
        repo = Repository(session)
        repo.save_cable(cable, NOW)
        for cpo in ("a", "b"):
            if not repo.cpo_exists(cpo):
                repo.save_cpo(make_cpo(cpo), NOW, "hash")
            repo.save_subscription(Subscription(cable_id, cpo, D(1), D(5)))
        repo.add_override(cable_id, LimitOverride(T0, T0 + 4 * Q, D(50), "maintenance"))
        repo.save_usage(cable_id, "a", {T0 - Q: D(3)}, NOW)
        book = CableBook(repo.cable(cable_id), repo.subscriptions(cable_id), {})
        starts = [T0 + i * Q for i in range(3)]
        ledger = hand_out(book, [new_block(book.cable, s, cable.base_load) for s in starts])
        book.blocks[T0].pending["b"] = PendingRequest("b", T0, D(40), NOW)
        repo.save_book(book, starts, ledger.changes, NOW)
        repo.record(DecisionRecord(NOW, "test", "hand_out", "handed out", cable_id=cable_id), ledger.changes)


DEPENDENT = (BlockRow, BudgetRow, PendingRequestRow, UsageRow, SubscriptionRow, LimitOverrideRow)


def test_delete_cable_removes_every_dependent_row_and_only_that_cable(db: Database) -> None:
    _populate(db, "c1")
    _populate(db, "c2")
    before_c2 = {t.__tablename__: count(db, t, cable_id="c2") for t in DEPENDENT}
    assert all(before_c2.values()), before_c2
    assert before_c2 == {t.__tablename__: count(db, t, cable_id="c1") for t in DEPENDENT}

    with db.write() as session:
        Repository(session).delete_cable("c1")

    for table in DEPENDENT:
        assert count(db, table, cable_id="c1") == 0, table.__tablename__
    assert count(db, CableRow, id="c1") == 0
    assert {t.__tablename__: count(db, t, cable_id="c2") for t in DEPENDENT} == before_c2
    assert count(db, CableRow, id="c2") == 1
    assert count(db, CpoRow) == 2  # CPOs are not the cable's
    # the audit trail is history: it outlives the cable
    assert count(db, DecisionRow, cable_id="c1") == 1
    assert count(db, LedgerRow, cable_id="c1") == 6
    with db.read() as session:
        assert Repository(session).cables() == [Repository(session).cable("c2")]


def test_a_cpo_is_due_when_its_oldest_push_is_and_after_a_failure_when_the_retry_is(db: Database) -> None:
    """Rows owed by processes whose clocks run ahead never keep a CPO from being pushed; after a
    failure every row waits for the retry time, new ones too."""
    second = timedelta(seconds=1)
    with db.write() as session:
        repo = Repository(session)
        repo.save_cpo(Cpo("a", "A", "a", "https://a.example/oscp", Binding.JSON), NOW, "hash")
        repo.enqueue_pushes("c1", ["a"], NOW)
        repo.enqueue_pushes("c1", ["a"], NOW + second)  # from a clock a second ahead
        assert repo.cpos_with_due_pushes(NOW) == ["a"]
        assert repo.cpos_with_due_pushes(NOW - second) == []
        ids = [row[0] for row in repo.pending_pushes("a")]
        repo.pushes_failed(ids, 1, "HTTP 500", NOW + 60 * second)
        repo.enqueue_pushes("c1", ["a"], NOW + 2 * second)  # owed while backing off
        assert repo.cpos_with_due_pushes(NOW + 59 * second) == []
        assert repo.cpos_with_due_pushes(NOW + 60 * second) == ["a"]
        assert [row["next_attempt_at"] for row in repo.outbox()] == [NOW + 60 * second]
        repo.push_now("a", NOW + 3 * second)  # back from offline: pushed at once
        assert repo.cpos_with_due_pushes(NOW + 3 * second) == ["a"]
