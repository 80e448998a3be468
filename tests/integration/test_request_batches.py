"""Requests on one cable decided together, in one transaction, end exactly as if each had been
decided alone after the ones before it: the same answers, errors, budgets, holds, pending
requests and audit. Only the pushes owed are coalesced: one per CPO and batch.

The cable: 100 A, base load 20, margin 10 -> 70 available, 63 distributable; a (weight 1,
minimum 10) and b (weight 2, minimum 5) subscribed, c a CPO that is not; a reported usage, so
what it does not use can be reclaimed for b.
"""

import dataclasses
import itertools
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from service.domain.errors import GridcapError
from service.domain.model import Binding, Cable, Cpo, Subscription
from service.domain.units import Unit
from service.store import Database
from service.store.tables import Base, BudgetRow
from service.usecases import Context, capacity, cpos, grid
from service.usecases.capacity import BlockQuantity, RequestResult

D = Decimal
Q = timedelta(minutes=15)
NOW = datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # the current block; T0 + Q starts within the notice
BLOCKS = [T0 - Q, T0, T0 + Q, T0 + 2 * Q, T0 + 3 * Q, T0 + 4 * Q]  # the first has ended


def standard_cable(path: Path) -> Context:
    db = Database(f"sqlite:///{path}")
    db.create_schema()
    ctx = Context(db, clock=lambda: NOW)
    cable = Cable("c1", "Kerkstraat", Unit.AMPERE, D(100), 3, D(230), margin=D(10), base_load=D(20))
    grid.create_cable(ctx, cable, actor="engineer")
    for cpo_id in ("a", "b", "c"):
        cpo = Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", f"https://{cpo_id}.example", Binding.JSON)
        cpos.create_cpo(ctx, cpo, "a long enough password", actor="engineer")
    for cpo_id, weight, minimum in (("a", 1, 10), ("b", 2, 5)):
        grid.subscribe(ctx, Subscription("c1", cpo_id, D(weight), D(minimum)), actor="engineer")
    capacity.report_usage(ctx, "c1", "a", [BlockQuantity(T0 - Q, T0, D(12))], actor="a")
    return ctx


def ask(cpo_id: str, values: dict[datetime, int], *, answered: bool = True) -> capacity._Ask:
    blocks = [BlockQuantity(s, s + Q, D(v)) for s, v in values.items()]
    wanted = capacity._blocks(blocks, "blocks", "capacity")
    return capacity._Ask(cpo_id, blocks, wanted, f"cpo:{cpo_id}", "blocks", answered)


def asks(seed: int, n: int) -> list[capacity._Ask]:
    """Requests and hand-backs by a and b, answered or not, for one to three blocks; somewhere
    among them two that must fail: an ended block, and a CPO that is not subscribed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        starts = rng.sample(BLOCKS[1:], rng.randint(1, 3))
        out.append(ask(rng.choice("ab"), {s: rng.randint(0, 70) for s in starts}, answered=rng.random() < 0.7))
    out.insert(rng.randint(0, n), ask("a", {BLOCKS[0]: 5, BLOCKS[3]: 5}))
    out.insert(rng.randint(0, n), ask("c", {BLOCKS[3]: 5}))
    return out


def outcome(result: RequestResult | GridcapError) -> tuple[Any, ...]:
    if isinstance(result, GridcapError):
        return (type(result).__name__, result.message)
    return (result.decision_id, result.status, result.budgets, result.asked, result.backup)


def state(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows but the CPOs'; of the outbox only who is owed a push on which cable."""
    with db.read() as session:
        tables = {
            t.name: sorted((tuple(row) for row in session.execute(select(t))), key=repr)
            for t in Base.metadata.sorted_tables
            if t.name not in {"outbox", "cpos"}  # CPOs: salted password hashes differ
        }
        outbox = Base.metadata.tables["outbox"]
        tables["outbox"] = sorted({tuple(row) for row in session.execute(select(outbox.c.cpo_id, outbox.c.cable_id))})
    return tables


@pytest.mark.parametrize("seed", range(12))
def test_a_batch_ends_as_its_requests_one_by_one(tmp_path: Path, seed: int) -> None:
    together, alone = standard_cable(tmp_path / "together.db"), standard_cable(tmp_path / "alone.db")
    batch = asks(seed, 12)

    batched = capacity._decide_requests(together, "c1", batch)
    one_by_one = [capacity._decide_requests(alone, "c1", [ask])[0] for ask in batch]

    assert [outcome(r) for r in batched] == [outcome(r) for r in one_by_one]
    assert state(together.db) == state(alone.db)
    assert sorted(type(r).__name__ for r in batched) == ["InvalidInput", "NotSubscribed"] + ["RequestResult"] * 12


def test_what_a_cpo_was_answered_in_a_batch_is_held_for_it_against_later_requests(tmp_path: Path) -> None:
    """b's answered request takes what a does not use in T0 + 2Q. a then learns it has less, but
    a request of b's in the same batch may not take what b itself was just told, nor may a get
    back what it was told before the notice: exactly as one by one."""
    ctx = standard_cable(tmp_path / "c.db")
    far = T0 + 2 * Q
    b_result, a_result = capacity._decide_requests(ctx, "c1", [ask("b", {far: 50}), ask("a", {far: 40})])
    assert isinstance(b_result, RequestResult)
    assert isinstance(a_result, RequestResult)
    # a keeps its peak 12 + 20 % -> 15 (ceil); b gets 37 + 7 unallocated + 11 reclaimed = 50 at most
    assert b_result.budgets == {far: D(50)}
    assert a_result.budgets[far] < D(40)
    view = capacity.capacity(ctx, "c1", far, far + Q).blocks[0]
    assert sum(view.budgets.values()) <= view.available


def test_concurrent_requests_are_decided_in_batches_and_each_gets_its_own_answer(tmp_path: Path) -> None:
    """Threads asking at once through the public use case: every one is answered, the answers
    add up, and fewer transactions than requests were needed."""
    ctx = standard_cable(tmp_path / "c.db")
    transactions = 0
    write = ctx.db.write

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal transactions
        transactions += 1
        return write(*args, **kwargs)

    ctx.db.write = counted  # type: ignore[method-assign]
    far = T0 + 4 * Q
    results: dict[int, RequestResult] = {}
    errors: list[BaseException] = []

    def request(i: int) -> None:
        try:
            cpo_id = "ab"[i % 2]
            blocks = [BlockQuantity(far, far + Q, D(10 + i % 7))]
            results[i] = capacity.request(ctx, "c1", cpo_id, blocks, actor=f"cpo:{cpo_id}", answered=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(40)]
    with write(("c1",)):  # the first to come waits for this lock, the others queue behind it
        for t in threads:
            t.start()
        time.sleep(0.5)
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(results) == 40
    assert len({r.decision_id for r in results.values()}) == 40
    assert transactions < 40
    final = capacity.capacity(ctx, "c1", far, far + Q).blocks[0]
    last = {cpo: max((r for i, r in results.items() if "ab"[i % 2] == cpo), key=lambda r: r.decision_id)
            for cpo in "ab"}  # fmt: skip
    assert final.budgets == {cpo: r.budgets[far] for cpo, r in last.items()}
    assert sum(final.budgets.values()) <= final.available


def test_pending_requests_of_one_batch_wait_in_the_order_they_arrived(tmp_path: Path) -> None:
    """d, then b ask for more than T0 + Q has free, then a hands back: what a frees goes to d,
    which asked first, as one by one; not to whichever CPO id sorts first."""

    def cable(path: Path) -> Context:
        ctx = standard_cable(path)
        cpos.create_cpo(ctx, Cpo("d", "CPO d", "user-d", "https://d.example", Binding.JSON), "a long password",
                        actor="engineer")  # fmt: skip
        grid.subscribe(ctx, Subscription("c1", "d", D(1), D(0)), actor="engineer")
        ticks = itertools.count()
        return dataclasses.replace(ctx, clock=lambda: NOW + timedelta(milliseconds=next(ticks)))

    near = T0 + Q  # budgets a 63, b 5, d 0: nothing is reclaimed this close
    batch = [ask("d", {near: 30}), ask("b", {near: 40}), ask("a", {near: 20})]
    together, alone = cable(tmp_path / "together.db"), cable(tmp_path / "alone.db")
    capacity._decide_requests(together, "c1", batch)
    for one in batch:
        capacity._decide_requests(alone, "c1", [one])

    expected = {"a": D(20), "b": D(20), "d": D(30)}
    assert capacity.capacity(alone, "c1", near, near + Q).blocks[0].budgets == expected
    assert capacity.capacity(together, "c1", near, near + Q).blocks[0].budgets == expected


def test_a_cpo_whose_hold_expired_counts_as_knowing_its_budget_and_a_cut_holds_the_difference(
    tmp_path: Path,
) -> None:
    """a confirmed 40 in T0 + 2Q once; its budget went down to 26 and it let the notice period
    pass while online, so it counts as knowing 26. What b then reclaims from it stays held for a
    notice period of its own, in a batch as one by one: never granted at once."""
    far = T0 + 2 * Q

    def cable(path: Path) -> Context:
        ctx = standard_cable(path)
        with ctx.db.write(("c1",)) as session:
            session.execute(
                update(BudgetRow)
                .where(BudgetRow.cable_id == "c1", BudgetRow.cpo_id == "a", BudgetRow.start == far)
                .values(told=D(40), reduced_at=NOW - timedelta(hours=1))
            )
        return ctx

    batch = [ask("b", {far: 50}), ask("b", {far: 40}), ask("b", {far: 50})]
    together, alone = cable(tmp_path / "together.db"), cable(tmp_path / "alone.db")
    batched = capacity._decide_requests(together, "c1", batch)
    one_by_one = [capacity._decide_requests(alone, "c1", [one])[0] for one in batch]

    assert [outcome(r) for r in batched] == [outcome(r) for r in one_by_one]
    assert state(together.db) == state(alone.db)
    with together.db.read() as session:
        rows = {r.cpo_id: r for r in session.scalars(select(BudgetRow).where(BudgetRow.start == far))}
    held = sum((max(D(0), r.told - r.capacity) for r in rows.values() if r.told is not None and r.reduced_at == NOW),
               D(0))  # fmt: skip
    assert rows["a"].told == D(26)  # what it counts as knowing, not the 40 of long ago
    assert sum(r.capacity for r in rows.values()) + held <= D(70)
