"""The CPO adapter's database (service.cpo.store) on a SQLite file: charge points and their credentials,
budgets, transactions, the usage outbox (disk buffer), profiles and adapter state; reopening the file
("restart"), concurrent writers, and bad input that must write nothing."""

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import Clock

from service.cpo.profiles import ChargePoint, Period, ProfileKind, ProfilePlan
from service.cpo.store import CpoStore
from service.domain.errors import Conflict, InvalidInput, NotFound
from service.domain.units import Unit

D = Decimal
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
A, KW = Unit.AMPERE, Unit.KILOWATT
PASSWORD = "correct horse battery"  # noqa: S105 - a test password


def cp(cp_id: str = "cp-1", cable: str = "cable-1", max_a: str = "32", **changes: object) -> ChargePoint:
    return ChargePoint(cp_id, cable, D(max_a), 3, **changes)  # type: ignore[arg-type]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "cpo.sqlite"  # the folder does not exist yet


@pytest.fixture
def store(path: Path, clock: Clock) -> Iterator[CpoStore]:
    with CpoStore(f"sqlite:///{path}", clock=clock) as opened:
        yield opened


def reopen(store: CpoStore, path: Path, clock: Clock, **options: bool) -> CpoStore:
    store.close()
    return CpoStore(f"sqlite:///{path}", clock=clock, **options)


def table_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as raw:
        return raw.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - a fixed table name


# ---------------------------------------------------------------------------------------------
# charge points


class TestChargePoints:
    def test_add_get_list_update_remove(self, store: CpoStore, clock: Clock) -> None:
        added = store.add_charge_point(cp("cp-2", voltage_v=D("231.5"), protection_a=D("25.5"), connectors=2))
        store.add_charge_point(cp("cp-1", cable="cable-2"))
        assert added.created_at == clock.now
        got = store.get_charge_point("cp-2")
        assert got is not None
        assert got.charge_point == cp("cp-2", voltage_v=D("231.5"), protection_a=D("25.5"), connectors=2)
        assert got.charge_point.protection_a == D("25.5")
        assert got.created_at.tzinfo is UTC
        assert [r.charge_point.id for r in store.charge_points()] == ["cp-1", "cp-2"]
        assert [r.charge_point.id for r in store.charge_points("cable-2")] == ["cp-1"]
        clock.advance(timedelta(minutes=1))
        updated = store.update_charge_point(cp("cp-2", max_a="16"))
        assert updated.charge_point.max_current_a == 16
        assert updated.charge_point.protection_a is None
        assert (updated.created_at, updated.updated_at) == (clock.now - timedelta(minutes=1), clock.now)
        store.remove_charge_point("cp-2")
        assert store.get_charge_point("cp-2") is None
        with pytest.raises(NotFound):
            store.remove_charge_point("cp-2")
        with pytest.raises(NotFound):
            store.update_charge_point(cp("cp-2"))

    def test_a_duplicate_id_is_refused_and_the_first_stays(self, store: CpoStore) -> None:
        store.add_charge_point(cp("cp-1", max_a="20"))
        with pytest.raises(Conflict, match="cp-1 exists"):
            store.add_charge_point(cp("cp-1", max_a="32"), password=PASSWORD)
        record = store.get_charge_point("cp-1")
        assert record is not None
        assert record.charge_point.max_current_a == 20
        assert not record.has_password

    def test_passwords_are_scrypt_hashes_and_checked(self, store: CpoStore, path: Path) -> None:
        store.add_charge_point(cp("cp-1"), password=PASSWORD)
        store.add_charge_point(cp("cp-2"), username="station-2", password=PASSWORD)
        store.add_charge_point(cp("open"))
        hashes = {row[0]: row[9] for row in table_rows(path, "charge_points")}
        assert str(hashes["cp-1"]).startswith("scrypt$")
        assert PASSWORD not in str(hashes)
        assert store.verify_charge_point("cp-1", "cp-1", PASSWORD)  # the username is the identity
        assert not store.verify_charge_point("cp-1", "cp-1", PASSWORD + "x")
        assert not store.verify_charge_point("cp-1", "someone", PASSWORD)
        assert not store.verify_charge_point("cp-1", None, None)
        assert store.verify_charge_point("cp-2", "station-2", PASSWORD)
        assert not store.verify_charge_point("cp-2", "cp-2", PASSWORD)
        assert not store.verify_charge_point("ghost", "ghost", PASSWORD)
        assert not store.verify_charge_point("open", None, None)  # open charge points are not allowed here

    def test_open_charge_points_only_when_the_store_allows_them(
        self, store: CpoStore, path: Path, clock: Clock
    ) -> None:
        store.add_charge_point(cp("open"))
        store.add_charge_point(cp("locked"), password=PASSWORD)
        permissive = reopen(store, path, clock, allow_open_charge_points=True)
        try:
            assert permissive.verify_charge_point("open", None, None)
            assert not permissive.verify_charge_point("locked", None, None)
            assert not permissive.verify_charge_point("ghost", None, None)
            permissive.set_credentials("open", username=None, password=PASSWORD)
            assert not permissive.verify_charge_point("open", None, None)
            assert permissive.verify_charge_point("open", "open", PASSWORD)
            permissive.set_credentials("locked", username=None, password=None)
            assert permissive.verify_charge_point("locked", None, None)
        finally:
            permissive.close()

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"password": "short"}, "at least 8"),
            ({"username": "cp-1"}, "needs a password"),
            ({"username": "", "password": PASSWORD}, "username"),
        ],
    )
    def test_bad_credentials_are_refused_and_nothing_is_written(
        self, store: CpoStore, path: Path, kwargs: dict[str, str], message: str
    ) -> None:
        with pytest.raises(InvalidInput, match=message):
            store.add_charge_point(cp("cp-1"), **kwargs)
        assert table_rows(path, "charge_points") == []


# ---------------------------------------------------------------------------------------------
# budgets


class TestBudgets:
    def test_the_last_budget_per_block_counts(self, store: CpoStore) -> None:
        store.replace_budgets(
            "cable-1", {T0: D("20.5"), T0 + Q: D(20), T0 + 2 * Q: D(18)}, A, backup=D(6), received_at=T0
        )
        store.replace_budgets("cable-1", {T0 + Q: D("12.345")}, "A", received_at=T0 + Q)
        stored = store.budgets("cable-1")
        assert [(b.start, b.capacity, b.unit) for b in stored] == [
            (T0, D("20.5"), A),
            (T0 + Q, D("12.345"), A),
            (T0 + 2 * Q, D(18), A),
        ]
        assert [b.received_at for b in stored] == [T0, T0 + Q, T0]
        assert str(stored[1].capacity) == "12.345"
        backup = store.backup("cable-1")
        assert backup is not None
        assert (backup.capacity, backup.unit) == (6, A)  # None kept it
        assert [b.start for b in store.budgets("cable-1", since=T0 + Q)] == [T0 + Q, T0 + 2 * Q]
        assert store.budgets("cable-2") == []
        assert store.budget_cables() == ["cable-1"]

    def test_times_in_any_zone_are_stored_as_utc(self, store: CpoStore) -> None:
        cet = timezone(timedelta(hours=1))
        store.replace_budgets("cable-1", {datetime(2026, 11, 24, 13, 0, tzinfo=cet): D(7)}, KW, received_at=T0)
        (stored,) = store.budgets("cable-1")
        assert stored.start == T0
        assert stored.start.tzinfo is UTC

    def test_a_unit_change_drops_the_old_unit(self, store: CpoStore) -> None:
        store.replace_budgets("cable-1", {T0: D(20), T0 + Q: D(20)}, A, received_at=T0)
        store.replace_budgets("cable-1", {T0 + Q: D(11)}, KW, received_at=T0)
        assert [(b.start, b.unit) for b in store.budgets("cable-1")] == [(T0 + Q, KW)]

    def test_blocks_older_than_a_day_are_pruned(self, store: CpoStore) -> None:
        store.replace_budgets("cable-1", {T0: D(1), T0 + Q: D(2)}, A, received_at=T0)
        store.replace_budgets("cable-2", {T0 + 4 * Q: D(3)}, A, received_at=T0 + timedelta(days=1, minutes=10))
        assert [b.start for b in store.budgets("cable-1")] == [T0 + Q]
        assert store.prune_budgets(T0 + 5 * Q) == 2
        assert store.budget_cables() == []

    @pytest.mark.parametrize(
        ("blocks", "unit", "message"),
        [
            ({T0: D(1), T0 + timedelta(minutes=7): D(1)}, A, "quarter hour"),
            ({T0: D(1), T0 + Q: D(-1)}, A, ">= 0"),
            ({T0: D(1), T0 + Q: "lots"}, A, "must be a number"),
            ({T0: D(1), datetime(2026, 11, 24, 12, 15): D(1)}, A, "no UTC offset"),  # noqa: DTZ001
            ({T0: D(1)}, "W", "'A' or 'KW'"),
            ({T0: D(1), "12:15": D(1)}, A, "must be a date-time"),
        ],
    )
    def test_bad_input_writes_nothing(
        self, store: CpoStore, path: Path, blocks: dict[datetime, object], unit: str, message: str
    ) -> None:
        store.replace_budgets("cable-1", {T0: D(9)}, A, received_at=T0)
        with pytest.raises(InvalidInput, match=message):
            store.replace_budgets("cable-1", blocks, unit, backup=D(1), received_at=T0)  # type: ignore[arg-type]
        assert [(b.start, b.capacity) for b in store.budgets("cable-1")] == [(T0, 9)]
        assert store.backup("cable-1") is None
        assert len(table_rows(path, "budgets")) == 1


# ---------------------------------------------------------------------------------------------
# transactions


class TestTransactions:
    def test_start_stop_open_recent(self, store: CpoStore) -> None:
        first = store.start_transaction("cp-1", 1, "TAG-1", 1000, T0)
        second = store.start_transaction("cp-2", 2, "TAG-2", 0, T0 + Q)
        assert [t.id for t in store.open_transactions()] == [first, second]
        stopped = store.stop_transaction(first, 5000, T0 + 2 * Q, "Local")
        assert (stopped.meter_stop_wh, stopped.stopped_at, stopped.reason) == (5000, T0 + 2 * Q, "Local")
        assert not stopped.is_open
        assert store.stop_transaction(first, 5000, T0 + 2 * Q, "Local") == stopped  # a repeated message
        with pytest.raises(Conflict, match="stopped already"):
            store.stop_transaction(first, 6000, T0 + 3 * Q)
        assert [t.id for t in store.open_transactions()] == [second]
        assert store.open_transactions("cp-1") == []
        assert [t.id for t in store.recent_transactions(limit=5)] == [second, first]
        got = store.get_transaction(second)
        assert got is not None
        assert (got.charge_point_id, got.connector_id, got.id_tag, got.meter_start_wh) == ("cp-2", 2, "TAG-2", 0)
        assert got.started_at.tzinfo is UTC
        with pytest.raises(NotFound):
            store.stop_transaction(999, 1, T0)
        with pytest.raises(InvalidInput, match="cannot stop earlier"):
            store.stop_transaction(second, 1, T0)
        assert store.get_transaction(second) == got

    def test_ids_are_unique_across_restarts(self, store: CpoStore, path: Path, clock: Clock) -> None:
        ids = [store.start_transaction("cp-1", 1, "T", 0, T0) for _ in range(3)]
        store.stop_transaction(ids[-1], 10, T0 + Q)
        assert store.prune_history(T0 + 2 * Q)["transactions"] == 1  # the newest row is gone
        store = reopen(store, path, clock)
        try:
            ids += [store.start_transaction("cp-1", 1, "T", 0, T0) for _ in range(3)]
            assert len(set(ids)) == 6
            assert ids == sorted(ids)
        finally:
            store.close()

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("cp 1", 1, "T", 0), "not a valid id"),
            (("cp-1", 0, "T", 0), "connector >= 1"),
            (("cp-1", -1, "T", 0), "connector_id"),
            (("cp-1", 1, "", 0), "id_tag"),
            (("cp-1", 1, "x" * 21, 0), "id_tag"),
            (("cp-1", 1, "T", -5), "meter_start_wh"),
            (("cp-1", 1, "T", 1.5), "meter_start_wh"),
        ],
    )
    def test_bad_starts_write_nothing(
        self, store: CpoStore, path: Path, args: tuple[object, ...], message: str
    ) -> None:
        with pytest.raises(InvalidInput, match=message):
            store.start_transaction(*args, T0)  # type: ignore[arg-type, call-arg]
        with pytest.raises(InvalidInput, match="no UTC offset"):
            store.start_transaction("cp-1", 1, "T", 0, datetime(2026, 1, 1))  # noqa: DTZ001
        assert table_rows(path, "transactions") == []


# ---------------------------------------------------------------------------------------------
# the usage outbox


class TestOutbox:
    def test_queue_order_replace_and_final_once_sent(self, store: CpoStore) -> None:
        assert store.enqueue_usage("cable-1", {T0 + Q: D("4.5"), T0: D(3)}, A) == {T0: "queued", T0 + Q: "queued"}
        store.enqueue_usage("cable-2", {T0: D("11.04")}, KW)
        assert store.enqueue_usage("cable-1", {T0: D("3.25"), T0 + Q: D("4.5")}, A) == {
            T0: "replaced",
            T0 + Q: "unchanged",
        }
        pending = store.pending()
        assert [(p.cable_id, p.block_start, p.value, p.unit) for p in pending] == [
            ("cable-1", T0, D("3.25"), A),  # replaced in place: it keeps its turn
            ("cable-1", T0 + Q, D("4.5"), A),
            ("cable-2", T0, D("11.04"), KW),
        ]
        assert [p.seq for p in pending] == sorted(p.seq for p in pending)
        assert len(store.outbox("cable-1")) == 2
        assert store.mark_sent([pending[0].seq], sent_at=T0 + 2 * Q) == 1
        assert store.mark_sent([pending[0].seq]) == 0  # not pending any more
        assert store.enqueue_usage("cable-1", {T0: D(99)}, A) == {T0: "already sent"}
        (sent, _) = store.outbox("cable-1")
        assert (sent.value, sent.sent_at, sent.attempts) == (D("3.25"), T0 + 2 * Q, 1)
        assert [p.block_start for p in store.pending(cable_id="cable-1")] == [T0 + Q]
        assert len(store.pending(limit=1)) == 1

    def test_failures_count_attempts_and_keep_the_error(self, store: CpoStore) -> None:
        store.enqueue_usage("cable-1", {T0: D(1)}, A)
        (item,) = store.pending()
        store.record_failure([item.seq], "connection refused\n  by the DSO")
        store.record_failure([item.seq], "HTTP 503")
        (item,) = store.pending()
        assert (item.attempts, item.last_error) == (2, "HTTP 503")
        store.mark_sent([item.seq])
        (item,) = store.outbox("cable-1")
        assert (item.attempts, item.last_error) == (3, None)

    def test_the_buffer_survives_a_restart_in_order(self, store: CpoStore, path: Path, clock: Clock) -> None:
        order = [("cable-2", T0), ("cable-1", T0), ("cable-2", T0 + Q), ("cable-1", T0 + Q), ("cable-3", T0)]
        for k, (cable, start) in enumerate(order):
            store.enqueue_usage(cable, {start: D(k) + D("0.125")}, A)
        store.mark_sent([store.pending()[1].seq])
        store = reopen(store, path, clock)
        try:
            replay = [(p.cable_id, p.block_start, p.value) for p in store.pending()]
            expected = [(c, s, D(k) + D("0.125")) for k, (c, s) in enumerate(order) if k != 1]
            assert replay == expected
        finally:
            store.close()

    def test_bad_input_writes_nothing(self, store: CpoStore, path: Path) -> None:
        with pytest.raises(InvalidInput, match=">= 0"):
            store.enqueue_usage("cable-1", {T0: D(1), T0 + Q: D(-1)}, A)
        with pytest.raises(InvalidInput, match="quarter hour"):
            store.enqueue_usage("cable-1", {T0: D(1), T0 + timedelta(minutes=1): D(1)}, A)
        with pytest.raises(InvalidInput, match="no UTC offset"):
            store.enqueue_usage("cable-1", {T0: D(1), datetime(2026, 11, 24, 12, 15): D(2)}, A)  # noqa: DTZ001
        with pytest.raises(InvalidInput, match="seq"):
            store.mark_sent([-1])
        assert table_rows(path, "usage_outbox") == []


# ---------------------------------------------------------------------------------------------
# profiles and state


def plan(limit: str) -> ProfilePlan:
    periods = (Period(0, D(limit), 3), Period(900, D("6.0"), 3))
    return ProfilePlan("cp-1", 0, ProfileKind.CHARGE_POINT_MAX, T0, periods)


class TestProfilesAndState:
    def test_profiles_latest_per_connector_and_exact_schedules(self, store: CpoStore, clock: Clock) -> None:
        first = store.record_profile(
            "cp-1", 0, purpose="ChargePointMaxProfile", stack_level=1, schedule=plan("41.4").charging_schedule(),
            status="Rejected", charging_profile_id=7,
        )  # fmt: skip
        clock.advance(timedelta(seconds=5))
        second = store.record_profile(
            "cp-1", 0, purpose="TxDefaultProfile", stack_level=1, schedule=plan("16.1").charging_schedule(),
            status="Accepted", detail="fell back after a rejection",
        )  # fmt: skip
        other = store.record_profile(
            "cp-1", 2, purpose="TxProfile", stack_level=2, schedule={"limit": D("0.1")}, status="Timeout",
            transaction_id=12,
        )  # fmt: skip
        assert first.sent_at == T0 + timedelta(minutes=7, seconds=30)
        latest = store.latest_profiles()
        assert {key: r.id for key, r in latest.items()} == {("cp-1", 0): second.id, ("cp-1", 2): other.id}
        assert latest["cp-1", 0].schedule["chargingSchedulePeriod"][0]["limit"] == D("16.1")
        assert store.latest_profiles("cp-9") == {}
        assert [r.id for r in store.recent_profiles()] == [other.id, second.id, first.id]
        assert store.recent_profiles(charge_point_id="cp-1", limit=1)[0].transaction_id == 12
        assert first.schedule["startSchedule"] == "2026-11-24T12:00:00Z"
        assert str(first.schedule["chargingSchedulePeriod"][0]["limit"]) == "41.4"
        with pytest.raises(InvalidInput, match="schedule"):
            store.record_profile("cp-1", 0, purpose="X", stack_level=0, schedule={"x": object()}, status="Accepted")
        assert len(store.recent_profiles()) == 3

    def test_state_values_times_and_counters_survive_a_restart(self, store: CpoStore, path: Path, clock: Clock) -> None:
        assert store.get_state("dso") is None
        store.set_state("dso", "up")
        store.set_state("dso", "down")
        store.set_time("dso_heartbeat", datetime(2026, 11, 24, 13, 0, tzinfo=timezone(timedelta(hours=1))))
        assert [store.next_number("profile_id") for _ in range(3)] == [1, 2, 3]
        assert store.next_number("other", first=100) == 100
        store = reopen(store, path, clock)
        try:
            assert store.get_state("dso") == "down"
            assert store.get_time("dso_heartbeat") == T0
            assert store.get_time("dso_heartbeat").tzinfo is not None  # type: ignore[union-attr]
            assert store.next_number("profile_id") == 4
            with pytest.raises(InvalidInput):
                store.set_state("", "x")
        finally:
            store.close()


# ---------------------------------------------------------------------------------------------
# concurrency


def test_concurrent_writers_lose_nothing(store: CpoStore, path: Path, clock: Clock) -> None:
    """Threads on one store and on a second store of the same file (as another process would) write at
    once; every row arrives, every id and counter value is distinct."""
    second = CpoStore(f"sqlite:///{path}", clock=clock)
    threads_n, blocks_n = 6, 12
    results: dict[int, tuple[list[int], list[int]]] = {}
    errors: list[BaseException] = []
    go = threading.Event()

    def work(worker: int) -> None:
        target = store if worker % 2 else second
        try:
            go.wait(timeout=60)
            tx_ids: list[int] = []
            numbers: list[int] = []
            for k in range(blocks_n):
                target.enqueue_usage(f"cable-{worker}", {T0 + k * Q: D(k)}, A)
                tx_ids.append(target.start_transaction(f"cp-{worker}", 1, "T", k, T0))
                numbers.append(target.next_number("profile_id"))
            results[worker] = (tx_ids, numbers)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(threads_n)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(timeout=300)
    second.close()
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    all_tx = [i for tx_ids, _ in results.values() for i in tx_ids]
    all_numbers = [n for _, numbers in results.values() for n in numbers]
    assert len(set(all_tx)) == threads_n * blocks_n
    assert sorted(all_numbers) == list(range(1, threads_n * blocks_n + 1))
    pending = store.pending()
    assert len(pending) == threads_n * blocks_n
    for worker in range(threads_n):
        mine = [p.block_start for p in pending if p.cable_id == f"cable-{worker}"]
        assert mine == [T0 + k * Q for k in range(blocks_n)]  # each writer's order is kept


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="needs a SQLite file"):
        CpoStore(url)
