"""Allocation is safe across processes, and a decision is all or nothing (SQLite file and PostgreSQL).

Workers are separate OS processes ('spawn'), each with its own Database and Context, as separate
server processes would be; their code is in _workers_concurrency.py.
"""

import multiprocessing
import queue
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import _workers_concurrency as workers
import pytest
from sqlalchemy import func, select

from service.domain.errors import InvariantViolation
from service.domain.model import Binding, Cable, Cpo, LimitOverride, Subscription
from service.store import Database
from service.store.tables import Base, BlockRow, BudgetRow, CableRow, DecisionRow, LedgerRow
from service.usecases import Context, audit, capacity, cpos, grid
from service.usecases.capacity import BlockQuantity

D = Decimal
Q = timedelta(minutes=15)
NOW = datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # the current block
NEAR = T0 + Q  # within the 15-minute reclaim notice
F = T0 + 2 * Q  # the first block capacity may be reclaimed in
SPAWN = multiprocessing.get_context("spawn")
SEED = 20261124


# ---------------------------------------------------------------------------------------------
# processes


class Workers:
    """Processes started by one test, with one queue for their reports."""

    def __init__(self) -> None:
        self.results: Any = SPAWN.Queue()
        self.processes: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any, with_queue: bool = True) -> Any:
        process = SPAWN.Process(target=target, args=(*args, self.results) if with_queue else args, daemon=True)
        process.start()
        self.processes.append(process)
        return process

    def wait_ready(self, ready: Any, n: int, timeout: float) -> None:
        """Wait until `n` workers released `ready`; fail at once if one of them died."""
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        for _ in range(n):
            while not ready.acquire(timeout=0.5):
                dead = [(p.name, p.exitcode) for p in self.processes if p.exitcode is not None]
                if dead or datetime.now(UTC) > deadline:
                    self._fail(f"workers not ready within {timeout} s; exited: {dead}")

    def _fail(self, message: str) -> None:
        try:
            kind, name, payload = self.results.get(timeout=1)
            message += f"\nfirst report: {kind} from {name}:\n{payload}"
        except queue.Empty:
            pass
        pytest.fail(message)

    def collect(self, n: int, timeout: float) -> dict[str, Any]:
        """Wait for `n` reports and for every process to exit 0; fail on any error or hang."""
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        done: dict[str, Any] = {}
        while len(done) < n:
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            try:
                kind, name, payload = self.results.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                codes = [p.exitcode for p in self.processes]
                pytest.fail(f"only {sorted(done)} of {n} workers reported within {timeout} s; exit codes {codes}")
            if kind == "error":
                pytest.fail(f"worker {name} failed:\n{payload}")
            done[name] = payload
        self.join(timeout=max((deadline - datetime.now(UTC)).total_seconds(), 5.0))
        return done

    def join(self, timeout: float) -> None:
        for process in self.processes:
            process.join(timeout)
        hung = [p.name for p in self.processes if p.is_alive()]
        assert not hung, f"processes did not exit: {hung}"

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(10)
        self.results.close()
        self.results.join_thread()


@pytest.fixture
def spawn() -> Iterator[Workers]:
    started = Workers()
    yield started
    started.stop()


# ---------------------------------------------------------------------------------------------
# set-up and checks


def make_cable(limit: int, *, margin: int, base_load: int) -> Cable:
    return Cable(
        id="c1",
        name="Kerkstraat LS-3",
        unit="A",  # type: ignore[arg-type]
        rated_limit=D(limit),
        phases=3,
        voltage_v=D(230),
        margin=D(margin),
        reserve_share=D("0.1"),
        base_load=D(base_load),
    )


def set_up(ctx: Context, cable: Cable, subscriptions: dict[str, tuple[int, int]]) -> None:
    grid.create_cable(ctx, cable, actor="engineer")
    for cpo_id, (weight, minimum) in subscriptions.items():
        cpo = Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", f"https://{cpo_id}.example", Binding.JSON)
        cpos.create_cpo(ctx, cpo, "a long enough password", actor="engineer")
        grid.subscribe(ctx, Subscription(cable.id, cpo_id, D(weight), D(minimum)), actor="engineer")


def standard_cable(ctx: Context) -> None:
    """Available 70 per block: a 26, b 37 and 7 unallocated in far blocks (see test_usecases)."""
    set_up(ctx, make_cable(100, margin=10, base_load=20), {"a": (1, 10), "b": (2, 5)})


def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    with db.read() as session:
        return {
            table.name: sorted((tuple(row) for row in session.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
        }


def allocation_problems(db: Database) -> list[str]:
    """Everything wrong with the stored budgets: over-allocation, negatives, an unfaithful ledger."""
    with db.read() as session:
        available = {
            (r.cable_id, r.start): max(D(0), r.limit - r.base_load - r.margin)
            for r in session.scalars(select(BlockRow))
        }
        budgets = {(r.cable_id, r.start, r.cpo_id): r.capacity for r in session.scalars(select(BudgetRow))}
        entries = session.scalars(select(LedgerRow).order_by(LedgerRow.id)).all()
    problems = []
    allocated: dict[tuple[str, datetime], D] = defaultdict(D)
    for (cable_id, start, cpo_id), budget in budgets.items():
        allocated[cable_id, start] += budget
        if budget < 0:
            problems.append(f"budget of {cpo_id} at {start} is {budget}")
        if (cable_id, start) not in available:
            problems.append(f"budget of {cpo_id} at {start} for a block that was never handed out")
    for block, total in allocated.items():
        if total > available.get(block, D(0)):
            problems.append(f"block {block[1]}: budgets {total} exceed available {available.get(block)}")
    chains: dict[tuple[str, datetime, str], list[LedgerRow]] = defaultdict(list)
    for entry in entries:
        chains[entry.cable_id, entry.start, entry.cpo_id].append(entry)
    for key, chain in chains.items():
        held = D(0)
        for entry in chain:
            if entry.old_capacity != held:
                problems.append(f"ledger {key}: entry {entry.id} starts from {entry.old_capacity}, budget was {held}")
            held = entry.new_capacity
        if budgets.get(key, D(0)) != held:
            problems.append(f"ledger {key} ends at {held}, the stored budget is {budgets.get(key)}")
    problems += [f"budget {key} = {b} has no ledger entries" for key, b in budgets.items() if b and key not in chains]
    return problems


# ---------------------------------------------------------------------------------------------
# many processes, one cable

CPOS = {"a": (1, 5), "b": (2, 5), "c": (1, 0), "d": (3, 10), "e": (1, 0)}  # weight, guaranteed minimum
LIMITS = [D(60), D(120), D(30), D(90), D(75)]  # 30: available 10, below the minimums of 20
REQUESTERS, REQUESTS_EACH = 4, 25


def test_allocation_is_safe_across_processes(db: Database, spawn: Workers) -> None:
    url = db.url
    ctx = Context(db, clock=lambda: NOW)
    # available 100 - 15 - 5 = 80 per block, tight for five CPOs asking for up to 45 each
    set_up(ctx, make_cable(100, margin=5, base_load=15), CPOS)
    for cpo_id, peak in (("a", "3"), ("c", "6.5"), ("d", "12")):  # evidence, so others can reclaim from them
        blocks = [BlockQuantity(T0 - Q, T0, D(peak) / 2), BlockQuantity(T0, T0 + Q, D(peak))]
        capacity.report_usage(ctx, "c1", cpo_id, blocks, actor=cpo_id)
    assert allocation_problems(db) == []
    window = [T0 + i * Q for i in range(12)]  # two blocks within the reclaim notice, ten after it

    ready, go, counter = SPAWN.Semaphore(0), SPAWN.Event(), SPAWN.Value("i", 0)
    plan = (sorted(CPOS), window, REQUESTS_EACH)
    for i in range(REQUESTERS):
        spawn.start(workers.random_requests, f"cpo-{i}", url, NOW, "c1", *plan, SEED + i, ready, go, counter)
    spawn.start(workers.limit_changes, "engineer", url, NOW, "c1", LIMITS, SEED, ready, go)
    spawn.wait_ready(ready, REQUESTERS + 1, timeout=120)  # every process is up and connected...
    go.set()  # ...so they really run at the same time
    reports = spawn.collect(REQUESTERS + 1, timeout=150)

    assert allocation_problems(db) == []
    requested = sum(reports[f"cpo-{i}"]["requests"] for i in range(REQUESTERS))
    assert requested == REQUESTERS * REQUESTS_EACH
    statuses: Counter[str] = Counter()
    for i in range(REQUESTERS):
        statuses.update(reports[f"cpo-{i}"]["statuses"])
    with db.read() as session:
        stored = dict(
            session.execute(
                select(DecisionRow.status, func.count())
                .where(DecisionRow.action == "request")
                .group_by(DecisionRow.status)
            ).all()
        )
        updates = session.scalar(select(func.count()).where(DecisionRow.action == "cable_updated"))
        limit = session.scalar(select(CableRow.rated_limit))
        block_limits = set(session.scalars(select(BlockRow.limit)))
        reasons = Counter(session.scalars(select(LedgerRow.reason)))
        actors = list(
            session.scalars(
                select(DecisionRow.actor)
                .where(DecisionRow.action.in_(["request", "cable_updated"]))
                .order_by(DecisionRow.id)
            )
        )
    assert stored == statuses
    assert sum(stored.values()) == requested
    assert updates == len(LIMITS)
    # the last limit change reached every block: no request wrote back a block it read before
    assert limit == LIMITS[-1]
    assert block_limits == {LIMITS[-1]}
    # every requester was under way before any had finished: they really overlapped
    requesters = [reports[f"cpo-{i}"] for i in range(REQUESTERS)]
    assert max(r["first"] for r in requesters) < min(r["last"] for r in requesters)
    # ...and the run exercised the rules it is meant to stress
    turns = 1 + sum(1 for x, y in pairwise(actors) if x != y)
    print(f"turns taken {turns}; statuses {dict(statuses)}; ledger reasons {dict(reasons)}")
    assert {"request_granted", "handed_back", "reclaimed_unused", "reallocated_down", "reallocated_up"} <= set(reasons)


def test_a_writer_waits_for_the_one_holding_the_cable_and_sees_its_commit(db: Database, spawn: Workers) -> None:
    ctx = Context(db, clock=lambda: NOW)
    standard_cable(ctx)
    locked, waiter_started, counter = SPAWN.Event(), SPAWN.Event(), SPAWN.Value("i", 0)
    # the holder takes the 7 unallocated for a (26 -> 33) and keeps its transaction open;
    # the waiter asks the same 7 for b (37 -> 44). Deciding on the old state would promise 77 of 70.
    args = (locked, waiter_started, counter)
    spawn.start(workers.hold_the_cable, db.url, NOW, "c1", "a", F, D(33), *args)
    spawn.start(workers.request_while_held, db.url, NOW, "c1", "b", F, D(44), *args)
    reports = spawn.collect(2, timeout=90)
    holder, waiter = reports["holder"], reports["waiter"]

    assert holder["status"] == "Accepted"
    assert waiter["started"] < holder["released"] < waiter["done"]  # it started first and finished after
    assert waiter["decision_id"] > holder["decision_id"]
    assert (waiter["status"], waiter["budget"]) == ("Rejected", D(37))  # it saw the 7 were gone
    assert capacity.capacity(ctx, "c1", F, F + Q).blocks[0].budgets == {"a": D(33), "b": D(37)}
    assert allocation_problems(db) == []


# ---------------------------------------------------------------------------------------------
# all or nothing


def test_a_process_dying_mid_decision_leaves_nothing_behind(db: Database, spawn: Workers) -> None:
    ctx = Context(db, clock=lambda: NOW)
    standard_cable(ctx)
    capacity.report_usage(ctx, "c1", "a", [BlockQuantity(T0, T0 + Q, D(10))], actor="a")  # a keeps 12
    # b: NEAR 5 -> 7 (+ a pending request for 20); F 37 -> 55 with 11 reclaimed from a
    wanted = {NEAR: D(20), F: D(55)}
    before = dump(db)
    view = capacity.capacity(ctx, "c1")

    receiver, sender = SPAWN.Pipe(duplex=False)
    doomed = spawn.start(workers.die_before_commit, db.url, NOW, "c1", "b", wanted, sender, with_queue=False)
    sender.close()
    assert receiver.poll(90), "the worker never reached the commit"
    seen = receiver.recv()
    doomed.join(30)
    assert doomed.exitcode == 1
    # inside its transaction the decision was written...
    assert seen["action"] == "request"
    assert seen["changes"] == 3
    assert seen["budgets"] == {NEAR: D(7), F: D(55)}
    assert seen["pending"] == 1
    assert seen["ledger"] == len(before["ledger"])  # record_all() had not inserted its entries yet
    # ...and none of it survived
    assert dump(db) == before
    assert capacity.capacity(ctx, "c1") == view

    # the lock died with the process: another process decides the same request on the same state
    spawn.start(workers.one_request, db.url, NOW, "c1", "b", wanted)
    after = spawn.collect(1, timeout=90)["after"]
    assert after == {"status": "PartiallyAccepted", "budgets": {NEAR: D(7), F: D(55)}}
    assert allocation_problems(db) == []


def _raise(*_: Any, **__: Any) -> None:
    raise InvariantViolation("injected: a rule would promise a block twice")


DECISIONS: dict[str, Callable[[Context], object]] = {
    "request": lambda c: capacity.request(c, "c1", "b", [BlockQuantity(F, F + Q, D(44))], actor="b"),
    "hand back": lambda c: capacity.request(c, "c1", "a", [BlockQuantity(F, F + Q, D(1))], actor="a"),
    "limit change": lambda c: grid.update_cable(c, "c1", {"rated_limit": D(60), "name": "renamed"}, actor="e"),
    "override": lambda c: grid.add_override(c, "c1", LimitOverride(F, F + 4 * Q, D(40), "maintenance"), actor="e"),
    "subscription change": lambda c: grid.update_subscription(c, "c1", "b", {"weight": D(5)}, actor="e"),
    "new subscription": lambda c: grid.subscribe(c, Subscription("c1", "c", D(1), D(1)), actor="e"),
    "unsubscribe": lambda c: grid.unsubscribe(c, "c1", "a", actor="e"),
}


INJECT_AT = {
    "check_invariants": "service.usecases.context.check_invariants",  # before the budgets are saved
    "record": "service.store.repository.Repository.record_all",  # after they are, before the audit
}


@pytest.mark.parametrize("inject_at", list(INJECT_AT))
@pytest.mark.parametrize("decision", list(DECISIONS))
def test_an_invariant_violation_in_commit_rolls_everything_back(
    db: Database, monkeypatch: pytest.MonkeyPatch, decision: str, inject_at: str
) -> None:
    ctx = Context(db, clock=lambda: NOW)
    standard_cable(ctx)
    cpos.create_cpo(ctx, Cpo("c", "CPO c", "user-c", "https://c.example", Binding.JSON), "x" * 12, actor="e")
    capacity.request(ctx, "c1", "b", [BlockQuantity(F + Q, F + 2 * Q, D(50))], actor="b")  # a pending request
    before = dump(db)
    api = (
        capacity.capacity(ctx, "c1"),
        grid.get_cable(ctx, "c1"),
        grid.list_subscriptions(ctx, "c1"),
        audit.decisions(ctx),
        audit.ledger(ctx, limit=10_000),
    )

    monkeypatch.setattr(INJECT_AT[inject_at], _raise)
    with pytest.raises(InvariantViolation, match="injected"):
        DECISIONS[decision](ctx)
    monkeypatch.undo()

    assert dump(db) == before
    after = (
        capacity.capacity(ctx, "c1"),
        grid.get_cable(ctx, "c1"),
        grid.list_subscriptions(ctx, "c1"),
        audit.decisions(ctx),
        audit.ledger(ctx, limit=10_000),
    )
    assert after == api
    DECISIONS[decision](ctx)  # the same decision goes through once the rules hold
    assert allocation_problems(db) == []
