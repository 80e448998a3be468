"""Process entry points for test_concurrency.py (multiprocessing 'spawn' imports them by name).

Each worker builds its own Database and Context, as a separate server process would, and reports
through a Queue: ("done", name, payload) or ("error", name, traceback). A worker never lets an
exception escape silently: the parent fails the test on any "error" or non-zero exit code.
Arguments are positional because Process(args=...) passes them so.
"""

# ruff: noqa: PLR0917

import os
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event, Semaphore
from typing import Any

from sqlalchemy import func, select

from service.domain.allocation import request_capacity
from service.store import Database, DecisionRecord, Repository
from service.store.tables import BudgetRow, LedgerRow, PendingRequestRow
from service.usecases import Context, capacity, grid
from service.usecases.capacity import BlockQuantity
from service.usecases.context import commit, open_book

Q = timedelta(minutes=15)
START_TIMEOUT = 120.0  # seconds a worker waits for the start signal before giving up


def _context(url: str, now: datetime) -> Context:
    db = Database(url)
    with db.read() as session:  # connect now, so the start signal finds every worker ready
        session.execute(select(1))
    return Context(db, clock=lambda: now)


def _run(name: str, results: "Queue[Any]", body: Callable[[], Any]) -> None:
    try:
        payload = body()
    except BaseException:  # report everything, including SystemExit and KeyboardInterrupt
        results.put(("error", name, traceback.format_exc()))
        raise
    results.put(("done", name, payload))


def stamp(counter: "Synchronized[int]") -> int:
    """The next number of a sequence shared by all processes: orders events without clocks."""
    with counter.get_lock():
        counter.value += 1
        return counter.value


def _start(ready: Semaphore, go: Event) -> None:
    ready.release()
    if not go.wait(START_TIMEOUT):
        raise TimeoutError("no start signal from the test")


# ---------------------------------------------------------------------------------------------
# many decisions on the same cable


def random_requests(
    name: str,
    url: str,
    now: datetime,
    cable_id: str,
    cpo_ids: list[str],
    window: list[datetime],
    n: int,
    seed: int,
    ready: Semaphore,
    go: Event,
    counter: "Synchronized[int]",
    results: "Queue[Any]",
) -> None:
    """`n` request-more / hand-back decisions on random overlapping blocks of one cable."""

    def body() -> dict[str, Any]:
        ctx = _context(url, now)
        rng = random.Random(seed)
        statuses: Counter[str] = Counter()
        _start(ready, go)
        first = stamp(counter)
        for _ in range(n):
            cpo_id = rng.choice(cpo_ids)
            starts = rng.sample(window, rng.randint(1, 6))
            blocks = [BlockQuantity(s, s + Q, Decimal(rng.randint(0, 45_000)).scaleb(-3)) for s in starts]
            result = capacity.request(ctx, cable_id, cpo_id, blocks, actor=name)
            statuses[result.status.value] += 1
        last = stamp(counter)
        ctx.db.dispose()
        return {"requests": sum(statuses.values()), "statuses": dict(statuses), "first": first, "last": last}

    _run(name, results, body)


def limit_changes(
    name: str,
    url: str,
    now: datetime,
    cable_id: str,
    limits: list[Decimal],
    seed: int,
    ready: Semaphore,
    go: Event,
    results: "Queue[Any]",
) -> None:
    """Change the cable's rated limit a few times while the requests run."""

    def body() -> dict[str, Any]:
        ctx = _context(url, now)
        rng = random.Random(seed)
        _start(ready, go)
        for limit in limits:
            time.sleep(rng.uniform(0.0, 0.3))  # spread the changes over the requests' run
            grid.update_cable(ctx, cable_id, {"rated_limit": limit}, actor=name)
        ctx.db.dispose()
        return {"changes": len(limits)}

    _run(name, results, body)


# ---------------------------------------------------------------------------------------------
# two writers, one after the other


def hold_the_cable(
    url: str,
    now: datetime,
    cable_id: str,
    cpo_id: str,
    start: datetime,
    target: Decimal,
    locked: Event,
    waiter_started: Event,
    counter: "Synchronized[int]",
    results: "Queue[Any]",
) -> None:
    """Decide a request inside a write transaction on the cable, then keep it open a while."""

    def body() -> dict[str, Any]:
        ctx = _context(url, now)
        with ctx.db.write((cable_id,)) as session:
            repo = Repository(session)
            horizon = open_book(repo, ctx, repo.cable(cable_id), now, start=start, end=start + Q)
            outcome = request_capacity(horizon.book, cpo_id, {start: target}, now=now, policy=ctx.policy)
            decision = DecisionRecord(
                now, "holder", "request", "held", cable_id=cable_id, cpo_id=cpo_id, status=outcome.status.value
            )
            decision_id = commit(repo, horizon, decision, outcome.ledger, touched=[start])
            locked.set()  # the budgets are written, not committed
            if not waiter_started.wait(START_TIMEOUT):
                raise TimeoutError("the second writer never started")
            time.sleep(0.5)  # let it reach the lock; if it does not wait for us it finishes meanwhile
            released = stamp(counter)
        ctx.db.dispose()
        return {"released": released, "status": outcome.status.value, "decision_id": decision_id}

    _run("holder", results, body)


def request_while_held(
    url: str,
    now: datetime,
    cable_id: str,
    cpo_id: str,
    start: datetime,
    target: Decimal,
    locked: Event,
    waiter_started: Event,
    counter: "Synchronized[int]",
    results: "Queue[Any]",
) -> None:
    """Ask for capacity while the other process holds the cable."""

    def body() -> dict[str, Any]:
        ctx = _context(url, now)
        if not locked.wait(START_TIMEOUT):
            raise TimeoutError("the holder never took the cable")
        started = stamp(counter)
        waiter_started.set()
        result = capacity.request(ctx, cable_id, cpo_id, [BlockQuantity(start, start + Q, target)], actor="waiter")
        done = stamp(counter)
        ctx.db.dispose()
        return {
            "started": started,
            "done": done,
            "status": result.status.value,
            "budget": result.budgets[start],
            "decision_id": result.decision_id,
        }

    _run("waiter", results, body)


# ---------------------------------------------------------------------------------------------
# crashes


def die_before_commit(
    url: str, now: datetime, cable_id: str, cpo_id: str, wanted: dict[datetime, Decimal], conn: Connection
) -> None:
    """Run a request, and kill the process once its budgets are written but before the commit."""
    ctx = _context(url, now)

    def record_then_die(self: Repository, decisions: list[tuple[DecisionRecord, Any]]) -> list[int]:
        session = self.session
        ((decision, changes),) = decisions
        seen = {
            "action": decision.action,
            "changes": len(changes),
            "budgets": {
                s: session.scalar(
                    select(BudgetRow.capacity).where(
                        BudgetRow.cable_id == cable_id, BudgetRow.cpo_id == cpo_id, BudgetRow.start == s
                    )
                )
                for s in wanted
            },
            "pending": session.scalar(select(func.count()).select_from(PendingRequestRow)),
            "ledger": session.scalar(select(func.count()).select_from(LedgerRow)),
        }
        conn.send(seen)  # a pipe write: on its way before we die
        conn.close()
        os._exit(1)

    Repository.record_all = record_then_die  # type: ignore[method-assign]
    blocks = [BlockQuantity(s, s + Q, v) for s, v in wanted.items()]
    capacity.request(ctx, cable_id, cpo_id, blocks, actor="doomed")
    os._exit(3)  # not reached: record_all() ends the process


def one_request(
    url: str, now: datetime, cable_id: str, cpo_id: str, wanted: dict[datetime, Decimal], results: "Queue[Any]"
) -> None:
    def body() -> dict[str, Any]:
        ctx = _context(url, now)
        blocks = [BlockQuantity(s, s + Q, v) for s, v in wanted.items()]
        result = capacity.request(ctx, cable_id, cpo_id, blocks, actor="after")
        ctx.db.dispose()
        return {"status": result.status.value, "budgets": result.budgets}

    _run("after", results, body)
