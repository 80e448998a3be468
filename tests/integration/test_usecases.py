"""The use cases end to end on SQLite and PostgreSQL, with hand-computed numbers.

The standard cable: rated limit 100 A, base load 20, margin 10 -> available 70 per block; 10 %
reserve -> 63 distributable. CPO a (weight 1, minimum 10) and b (weight 2, minimum 5) share it as
a = 10 + 48/3 = 26, b = 5 + 2*48/3 = 37, 7 unallocated. The clock stands at 12:07:30 UTC, so the
horizon is the 192 blocks from 12:00; the 12:00 and 12:15 blocks start within the 15-minute
reclaim notice, and when b subscribed they only got what was unallocated: a = 63, b = 5.
"""

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from service.domain.allocation import AdjustStatus
from service.domain.blocks import block_floor
from service.domain.errors import Conflict, InvalidInput, NotFound, NotSubscribed, UnknownCable, UnknownCpo
from service.domain.model import Binding, Cable, Cpo, LimitOverride, Subscription
from service.store import Database
from service.store.tables import Base
from service.usecases import Context, audit, capacity, cpos, grid
from service.usecases.capacity import BlockQuantity

D = Decimal
Q = timedelta(minutes=15)
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # the current block (the clock is at 12:07:30)
NEAR = T0 + Q  # starts within the reclaim notice
F = T0 + 2 * Q  # the first block far enough ahead to reclaim in
H_END = T0 + timedelta(hours=48)
AMS = ZoneInfo("Europe/Amsterdam")
FAR_BUDGETS = {"a": D(26), "b": D(37)}
NEAR_BUDGETS = {"a": D(63), "b": D(5)}


# ---------------------------------------------------------------------------------------------
# helpers


def make_cable(cable_id: str = "c1", limit: int = 100) -> Cable:
    return Cable(
        id=cable_id,
        name=f"Kerkstraat {cable_id}",
        unit="A",  # type: ignore[arg-type]
        rated_limit=D(limit),
        phases=3,
        voltage_v=D(230),
        margin=D(10),
        reserve_share=D("0.1"),
        base_load=D(20),
    )


def add_cpo(ctx: Context, cpo_id: str) -> None:
    cpo = Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", f"https://{cpo_id}.example", Binding.JSON)
    cpos.create_cpo(ctx, cpo, "a long enough password", actor="test")


def bq(start: datetime, value: str | int) -> BlockQuantity:
    return BlockQuantity(start, start + Q, D(value))


def budgets(ctx: Context, start: datetime | None = None, end: datetime | None = None) -> dict[datetime, dict[str, D]]:
    return {b.start: b.budgets for b in capacity.capacity(ctx, "c1", start, end).blocks}


def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: 'nothing changed' means this is equal before and after."""
    with db.read() as session:
        return {
            table.name: sorted((tuple(row) for row in session.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
        }


def pending(ctx: Context) -> dict[tuple[str, datetime], D]:
    rows = dump(ctx.db)["pending_requests"]  # cable_id, start, cpo_id, target, requested_at
    return {(r[2], r[1]): r[3] for r in rows}


def changes(ctx: Context, decision_id: int) -> list[tuple[str, datetime, D, D, str]]:
    return [
        (e.cpo_id, e.start, e.old_capacity, e.new_capacity, e.reason)
        for e in audit.ledger(ctx, limit=10_000)
        if e.decision_id == decision_id
    ]


def last_decision(ctx: Context) -> audit.Decision:
    return audit.decisions(ctx, limit=10_000)[-1]


@contextmanager
def unchanged(ctx: Context, cable_id: str = "c1") -> Iterator[None]:
    """Assert that the block leaves every table and the API's capacity view as they were."""
    before = dump(ctx.db), capacity.capacity(ctx, cable_id), len(audit.decisions(ctx, limit=10_000))
    yield
    assert (dump(ctx.db), capacity.capacity(ctx, cable_id), len(audit.decisions(ctx, limit=10_000))) == before


@pytest.fixture
def c1(ctx: Context) -> Context:
    return standard_grid(ctx)


def standard_grid(ctx: Context) -> Context:
    """The standard cable with a and b subscribed."""
    grid.create_cable(ctx, make_cable(), actor="engineer")
    for cpo_id, weight, minimum in (("a", 1, 10), ("b", 2, 5)):
        add_cpo(ctx, cpo_id)
        grid.subscribe(ctx, Subscription("c1", cpo_id, D(weight), D(minimum)), actor="engineer")
    return ctx


# ---------------------------------------------------------------------------------------------
# cables and subscriptions


def test_cable_creation_hands_out_the_whole_horizon_even_without_subscribers(ctx: Context) -> None:
    grid.create_cable(ctx, make_cable(), actor="engineer")

    view = capacity.capacity(ctx, "c1")
    assert len(view.blocks) == 192  # 48 h of 15 minutes
    assert view.blocks[0].start == T0
    assert view.blocks[-1].end == H_END
    assert all(b.handed_out and b.budgets == {} for b in view.blocks)
    assert {(b.limit, b.base_load, b.margin, b.available, b.unallocated) for b in view.blocks} == {
        (D(100), D(20), D(10), D(70), D(70))
    }
    assert [(d.action, d.actor, d.cable_id) for d in audit.decisions(ctx)] == [
        ("hand_out", "system", "c1"),
        ("cable_created", "engineer", "c1"),
    ]
    assert "192 blocks" in audit.decisions(ctx)[0].message
    assert audit.ledger(ctx) == []
    assert capacity.ensure_horizon(ctx, "c1") == 0
    assert len(dump(ctx.db)["blocks"]) == 192

    with unchanged(ctx), pytest.raises(Conflict, match="already exists"):
        grid.create_cable(ctx, make_cable(limit=50), actor="engineer")


def test_a_cable_created_with_an_override_keeps_it_and_its_blocks_agree(ctx: Context) -> None:
    start = T0 + timedelta(hours=4)
    override = LimitOverride(start, start + Q, D(50), "seasonal rating")
    created = grid.create_cable(ctx, dataclasses.replace(make_cable(), overrides=(override,)), actor="engineer")

    stored = grid.get_cable(ctx, "c1")
    assert [(o.start, o.end, o.limit, o.reason) for o in stored.overrides] == [
        (start, start + Q, D(50), "seasonal rating")
    ]
    assert created == stored
    view = capacity.capacity(ctx, "c1", start - Q, start + 2 * Q)
    assert [b.limit for b in view.blocks] == [D(100), D(50), D(100)]
    # reallocating from the stored cable finds nothing to change
    grid.update_cable(ctx, "c1", {"name": "renamed"}, actor="engineer")
    assert capacity.capacity(ctx, "c1", start - Q, start + 2 * Q) == view


def test_subscriptions_hand_out_minimums_then_weights_and_keep_the_reserve(ctx: Context) -> None:
    grid.create_cable(ctx, make_cable(), actor="engineer")
    add_cpo(ctx, "a")
    add_cpo(ctx, "b")

    grid.subscribe(ctx, Subscription("c1", "a", D(1), D(10)), actor="engineer")
    # alone: 10 minimum + all of the 53 left of the distributable 63; the reserve of 7 stays
    assert [(b.start, b.budgets, b.unallocated) for b in capacity.capacity(ctx, "c1").blocks] == [
        (T0 + i * Q, {"a": D(63)}, D(7)) for i in range(192)
    ]
    first = last_decision(ctx)
    assert (first.action, first.cpo_id, first.severity) == ("subscription_added", "a", "info")
    # far blocks: 0 -> 63 at once; the two near ones: the minimum first, then the share by weight
    assert ("a", T0, D(0), D(10), "reallocated_up") in changes(ctx, first.id)
    assert ("a", T0, D(10), D(63), "reallocated_up") in changes(ctx, first.id)
    assert len(changes(ctx, first.id)) == 190 + 2 * 2
    assert {c[4] for c in changes(ctx, first.id)} == {"reallocated_up"}

    grid.subscribe(ctx, Subscription("c1", "b", D(2), D(5)), actor="engineer")
    view = capacity.capacity(ctx, "c1")
    assert view.blocks[0].budgets == view.blocks[1].budgets == NEAR_BUDGETS  # b got only the unallocated 5 (of 7)
    assert (view.blocks[0].unallocated, view.blocks[1].unallocated) == (D(2), D(2))
    assert all(b.budgets == FAR_BUDGETS and b.unallocated == D(7) for b in view.blocks[2:])
    second = last_decision(ctx)
    moved = changes(ctx, second.id)
    assert ("a", F, D(63), D(26), "reallocated_down") in moved
    assert ("b", F, D(0), D(37), "reallocated_up") in moved
    assert ("b", T0, D(0), D(5), "reallocated_up") in moved
    assert not [c for c in moved if c[0] == "a" and c[1] in (T0, NEAR)]  # nobody could be told in time
    assert len(moved) == 2 + 190 * 2

    with unchanged(ctx), pytest.raises(Conflict, match="already subscribed"):
        grid.subscribe(ctx, Subscription("c1", "b", D(1), D(1)), actor="engineer")
    add_cpo(ctx, "c")
    with unchanged(ctx), pytest.raises(Conflict, match="minimums"):  # 10 + 5 + 56 > 100 - 10 - 20
        grid.subscribe(ctx, Subscription("c1", "c", D(1), D(56)), actor="engineer")


def test_changing_a_subscription_reshares_the_far_blocks(c1: Context) -> None:
    changed = grid.update_subscription(c1, "c1", "b", {"weight": D(1)}, actor="engineer")
    assert changed == Subscription("c1", "b", D(1), D(5))
    assert last_decision(c1).action == "subscription_changed"
    # 63 - 15 = 48 shared 1:1 -> a = 10 + 24, b = 5 + 24
    assert budgets(c1, F, F + Q) == {F: {"a": D(34), "b": D(29)}}
    assert budgets(c1, T0, F) == {T0: NEAR_BUDGETS, NEAR: NEAR_BUDGETS}
    add_cpo(c1, "z")
    with unchanged(c1), pytest.raises(NotFound, match="not subscribed"):
        grid.update_subscription(c1, "c1", "z", {"weight": D(1)}, actor="engineer")
    with unchanged(c1), pytest.raises(Conflict, match="minimums"):
        grid.update_subscription(c1, "c1", "b", {"guaranteed_minimum": D(61)}, actor="engineer")


# ---------------------------------------------------------------------------------------------
# requests and hand-backs


def test_request_more_from_unallocated_then_beyond_then_served_by_a_hand_back(c1: Context) -> None:
    accepted = capacity.request(c1, "c1", "b", [bq(F, 42)], actor="b")
    assert accepted.status is AdjustStatus.ACCEPTED
    assert accepted.budgets == {F: D(42)}
    view = capacity.capacity(c1, "c1", F, F + Q).blocks[0]
    assert (view.budgets, view.unallocated) == ({"a": D(26), "b": D(42)}, D(2))
    assert changes(c1, accepted.decision_id) == [("b", F, D(37), D(42), "request_granted")]
    decision = last_decision(c1)
    assert (decision.action, decision.actor, decision.cpo_id, decision.status) == ("request", "b", "b", "Accepted")

    # 8 more wanted, 2 unallocated, and a reported no usage: nothing of it is demonstrably unused
    partial = capacity.request(c1, "c1", "b", [bq(F, 50)], actor="b")
    assert partial.status is AdjustStatus.PARTIALLY_ACCEPTED
    assert partial.budgets == {F: D(44)}
    assert budgets(c1, F, F + Q) == {F: {"a": D(26), "b": D(44)}}
    assert pending(c1) == {("b", F): D(50)}
    assert last_decision(c1).status == "PartiallyAccepted"

    rejected = capacity.request(c1, "c1", "b", [bq(F, 60)], actor="b")
    assert rejected.status is AdjustStatus.REJECTED
    assert rejected.budgets == {F: D(44)}
    assert changes(c1, rejected.decision_id) == []
    assert pending(c1) == {("b", F): D(60)}  # the newer wish replaces the older
    capacity.request(c1, "c1", "b", [bq(F, 50)], actor="b")
    assert pending(c1) == {("b", F): D(50)}

    # a hands back 6; the waiting request of b takes them
    handed = capacity.request(c1, "c1", "a", [bq(F, 20)], actor="a")
    assert handed.status is AdjustStatus.ACCEPTED
    assert handed.budgets == {F: D(20)}
    assert changes(c1, handed.decision_id) == [
        ("a", F, D(26), D(20), "handed_back"),
        ("b", F, D(44), D(50), "pending_request_served"),
    ]
    assert budgets(c1, F, F + Q) == {F: {"a": D(20), "b": D(50)}}
    assert pending(c1) == {}
    assert capacity.capacity(c1, "c1", F, F + Q).blocks[0].unallocated == D(0)
    # every other block is as it was
    assert all(b == (NEAR_BUDGETS if s < F else FAR_BUDGETS) for s, b in budgets(c1).items() if s != F)


def test_reclaim_takes_unused_budget_only_in_blocks_after_the_notice(c1: Context) -> None:
    # a reports a peak of 10: it keeps 10 * 1.2 = 12 (above its minimum of 10)
    capacity.report_usage(c1, "c1", "a", [bq(T0 - Q, 8), bq(T0, 10)], actor="a")
    decision = last_decision(c1)
    assert (decision.action, decision.cpo_id) == ("usage_reported", "a")
    assert "peak 10" in decision.message

    result = capacity.request(c1, "c1", "b", [bq(NEAR, 20), bq(F, 55)], actor="b")
    # NEAR (12:15 < 12:07:30 + 15 min): only the 2 unallocated -> 7, waiting for 20.
    # F: 7 unallocated + 11 of a's unused 26 - 12 = 14 -> 55; a keeps 15.
    assert result.status is AdjustStatus.PARTIALLY_ACCEPTED
    assert result.budgets == {NEAR: D(7), F: D(55)}
    assert budgets(c1, NEAR, F + Q) == {NEAR: {"a": D(63), "b": D(7)}, F: {"a": D(15), "b": D(55)}}
    assert sorted(changes(c1, result.decision_id)) == [
        ("a", F, D(26), D(15), "reclaimed_unused"),
        ("b", NEAR, D(5), D(7), "request_granted"),
        ("b", F, D(37), D(55), "request_granted"),
    ]
    assert pending(c1) == {("b", NEAR): D(20)}

    # never below the keep level of 12: of 10 more wanted only a's 3 spare are taken
    more = capacity.request(c1, "c1", "b", [bq(F, 65)], actor="b")
    assert (more.status, more.budgets) == (AdjustStatus.PARTIALLY_ACCEPTED, {F: D(58)})
    assert budgets(c1, F, F + Q) == {F: {"a": D(12), "b": D(58)}}
    # b reported no usage: a cannot take anything from b
    back = capacity.request(c1, "c1", "a", [bq(F + Q, 40)], actor="a")
    assert (back.status, back.budgets) == (AdjustStatus.PARTIALLY_ACCEPTED, {F + Q: D(33)})
    assert budgets(c1, F + Q, F + 2 * Q) == {F + Q: {"a": D(33), "b": D(37)}}


@pytest.mark.parametrize(
    ("age", "b_gets"), [(timedelta(hours=23, minutes=45), D(50)), (timedelta(hours=24, minutes=15), D(44))]
)
def test_usage_counts_as_evidence_only_within_the_lookback(c1: Context, clock: Any, age: timedelta, b_gets: D) -> None:
    capacity.report_usage(c1, "c1", "a", [bq(T0, 1)], actor="a")  # a keeps its minimum of 10
    clock.advance(age)
    target = block_floor(clock.now) + 4 * Q  # far ahead, handed out as 26 / 37
    result = capacity.request(c1, "c1", "b", [bq(target, 50)], actor="b")
    assert result.budgets == {target: b_gets}  # 7 unallocated + 6 of a's 16 unused, or only the 7


ERROR_CASES = [
    ("future usage", lambda c: capacity.report_usage(c, "c1", "a", [bq(NEAR, 5)], actor="a"), InvalidInput),
    ("usage, not subscribed", lambda c: capacity.report_usage(c, "c1", "z", [bq(T0, 5)], actor="z"), NotSubscribed),
    ("usage, unknown cable", lambda c: capacity.report_usage(c, "c9", "a", [bq(T0, 5)], actor="a"), UnknownCable),
    ("usage, no blocks", lambda c: capacity.report_usage(c, "c1", "a", [], actor="a"), InvalidInput),
    ("usage, negative", lambda c: capacity.report_usage(c, "c1", "a", [bq(T0, -1)], actor="a"), InvalidInput),
    ("ended block", lambda c: capacity.request(c, "c1", "b", [bq(T0 - Q, 40)], actor="b"), InvalidInput),
    ("beyond horizon", lambda c: capacity.request(c, "c1", "b", [bq(F, 40), bq(H_END, 40)], actor="b"), InvalidInput),
    ("negative", lambda c: capacity.request(c, "c1", "b", [bq(F, 40), bq(F + Q, -1)], actor="b"), InvalidInput),
    ("duplicate block", lambda c: capacity.request(c, "c1", "b", [bq(F, 40), bq(F, 41)], actor="b"), InvalidInput),
    (
        "misaligned",
        lambda c: capacity.request(c, "c1", "b", [bq(F + timedelta(minutes=5), 40)], actor="b"),
        InvalidInput,
    ),
    (
        "not 15 minutes",
        lambda c: capacity.request(c, "c1", "b", [BlockQuantity(F, F + 2 * Q, D(40))], actor="b"),
        InvalidInput,
    ),
    ("not subscribed", lambda c: capacity.request(c, "c1", "z", [bq(F, 40)], actor="z"), NotSubscribed),
    ("unknown cpo", lambda c: capacity.request(c, "c1", "nobody", [bq(F, 40)], actor="x"), UnknownCpo),
    ("unknown cable", lambda c: capacity.request(c, "c9", "b", [bq(F, 40)], actor="b"), UnknownCable),
    ("view beyond horizon", lambda c: capacity.capacity(c, "c1", F, H_END + Q), InvalidInput),
    ("view unknown cable", lambda c: capacity.capacity(c, "c9"), UnknownCable),
    ("cable unit change", lambda c: grid.update_cable(c, "c1", {"unit": "KW"}, actor="e"), Conflict),
    ("negative limit", lambda c: grid.update_cable(c, "c1", {"rated_limit": D(-1)}, actor="e"), InvalidInput),
    ("delete with subscribers", lambda c: grid.delete_cable(c, "c1", actor="e"), Conflict),
    ("unsubscribe stranger", lambda c: grid.unsubscribe(c, "c1", "z", actor="e"), NotFound),
    ("audit limit", lambda c: audit.decisions(c, limit=0), InvalidInput),
    ("audit limit too high", lambda c: audit.ledger(c, limit=10_001), InvalidInput),
]


def test_errors_change_nothing(c1: Context) -> None:
    add_cpo(c1, "z")  # a CPO that exists but is not on c1
    capacity.request(c1, "c1", "b", [bq(F, 50)], actor="b")  # some pending state to keep
    for case, call, error in ERROR_CASES:
        try:
            with unchanged(c1), pytest.raises(error):
                call(c1)
        except AssertionError as failure:
            failure.add_note(f"error case: {case}")
            raise


# ---------------------------------------------------------------------------------------------
# limit changes


def test_limit_decrease_and_increase_via_update_cable_reallocate_with_reasons(c1: Context) -> None:
    capacity.request(c1, "c1", "b", [bq(F + Q, 50)], actor="b")  # b: 44, waiting for 50

    grid.update_cable(c1, "c1", {"rated_limit": D(90)}, actor="engineer")
    # available 60. Far: 3 too much, cut from the above-minimum parts 16 : 32 -> a 25, b 35.
    # Near: 8 too much, only a is above its minimum -> a 55. F+Q: a 26, b 44 -> cut 10 in 16 : 39.
    view = budgets(c1)
    assert view[T0] == view[NEAR] == {"a": D(55), "b": D(5)}
    assert view[F] == {"a": D(25), "b": D(35)}
    assert view[F + Q] == {"a": D("23.090"), "b": D("36.909")}  # 26 - ceil(10*16/55), 44 - ceil(10*39/55)
    assert all(view[s] == {"a": D(25), "b": D(35)} for s in list(view)[4:])
    assert {b.available for b in capacity.capacity(c1, "c1").blocks} == {D(60)}
    decision = last_decision(c1)
    assert (decision.action, decision.actor, decision.severity) == ("cable_updated", "engineer", "info")
    assert "rated_limit 100.000 -> 90.000" in decision.message
    moved = changes(c1, decision.id)
    assert {c[4] for c in moved} == {"reallocated_down"}
    assert len(moved) == 2 + 190 * 2
    assert grid.get_cable(c1, "c1").rated_limit == D(90)

    grid.update_cable(c1, "c1", {"rated_limit": D(110)}, actor="engineer")
    # available 80: the waiting request is served first (b 36.909 -> 50 of the 20.001 free),
    # then the rest up to the 72 distributable is shared by weight.
    view = budgets(c1)
    assert view[F + Q]["b"] == D(50)
    assert pending(c1) == {}
    assert view[F] == {"a": D(29), "b": D(43)}  # 60 -> 72 distributable: 12 more, shared 1 : 2
    moved = changes(c1, last_decision(c1).id)
    assert ("b", F + Q, D("36.909"), D(50), "pending_request_served") in moved
    assert {c[4] for c in moved} == {"reallocated_up", "pending_request_served"}


def test_limit_override_reallocates_only_its_window(c1: Context) -> None:
    before = budgets(c1)
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    saved = grid.add_override(
        c1, "c1", LimitOverride(start.astimezone(AMS), end.astimezone(AMS), D(50), "joint 4 maintenance"), actor="e"
    )
    assert saved.id is not None
    assert (saved.start, saved.end) == (start, end)
    # available 20 in the window: 43 too much, cut in proportion 16 : 32 of the above-minimum parts
    # a: 26 - ceil(43*16/48) = 26 - 14.334, b: 37 - ceil(43*32/48) = 37 - 28.667
    after = budgets(c1)
    window = [start + i * Q for i in range(4)]
    assert {s: after[s] for s in window} == {s: {"a": D("11.666"), "b": D("8.333")} for s in window}
    assert {s: b for s, b in after.items() if s not in window} == {s: b for s, b in before.items() if s not in window}
    view = capacity.capacity(c1, "c1", start - Q, end + Q).blocks
    assert [b.limit for b in view] == [D(100), D(50), D(50), D(50), D(50), D(100)]
    decision = last_decision(c1)
    assert (decision.action, decision.severity) == ("override_added", "info")
    assert "joint 4 maintenance" in decision.message
    moved = changes(c1, decision.id)
    assert sorted((c[0], c[1]) for c in moved) == sorted((cpo, s) for s in window for cpo in "ab")
    assert {c[4] for c in moved} == {"reallocated_down"}
    assert grid.get_cable(c1, "c1").overrides == (saved,)

    grid.remove_override(c1, "c1", saved.id, actor="e")
    back = budgets(c1)
    assert all(back[s]["a"] >= D(10) and back[s]["b"] >= D(5) for s in window)
    assert {c[4] for c in changes(c1, last_decision(c1).id)} == {"reallocated_up"}
    with unchanged(c1), pytest.raises(NotFound, match="no limit override"):
        grid.remove_override(c1, "c1", saved.id, actor="e")


def test_minimums_that_cannot_be_met_are_cut_proportionally_and_flagged_critical(c1: Context) -> None:
    block = T0 + timedelta(hours=3)
    grid.add_override(c1, "c1", LimitOverride(block, block + Q, D(40), "cable fault"), actor="e")
    # available 10 < minimums 15: cut in proportion 10 : 5
    assert budgets(c1, block, block + Q) == {block: {"a": D("6.666"), "b": D("3.333")}}
    decision = last_decision(c1)
    assert (decision.action, decision.severity) == ("override_added", "critical")
    assert "below the guaranteed minimums" in decision.message
    assert {c[4] for c in changes(c1, decision.id)} == {"minimums_infeasible"}
    assert {e.severity for e in audit.ledger(c1, cable_id="c1") if e.decision_id == decision.id} == {"critical"}
    assert all(d.severity == "info" for d in audit.decisions(c1)[:-1])


def test_unsubscribe_zeroes_future_budgets_and_keeps_the_past(c1: Context, clock: Any) -> None:
    capacity.request(c1, "c1", "b", [bq(F + 4 * Q, 50)], actor="b")  # leaves a pending request
    clock.advance(timedelta(hours=1))  # 12:00 - 12:45 are now past
    capacity.ensure_horizon(c1, "c1")

    grid.unsubscribe(c1, "c1", "b", actor="engineer")
    decision = last_decision(c1)
    assert (decision.action, decision.cpo_id) == ("subscription_removed", "b")
    ended = [c for c in changes(c1, decision.id) if c[0] == "b"]
    assert len(ended) == 192
    assert {(c[3], c[4]) for c in ended} == {(D(0), "subscription_ended")}
    future = budgets(c1)
    assert all("b" not in b for b in future.values())
    # a alone: 63 everywhere (far blocks handed out afresh, near ones topped up from what b left)
    assert {b["a"] for b in future.values()} == {D(63)}
    assert pending(c1) == {}
    assert grid.list_subscriptions(c1, "c1") == [Subscription("c1", "a", D(1), D(10))]
    # the past shows what was handed out then
    assert budgets(c1, T0, T0 + 4 * Q) == {T0: NEAR_BUDGETS, NEAR: NEAR_BUDGETS, F: FAR_BUDGETS, F + Q: FAR_BUDGETS}
    with pytest.raises(NotSubscribed):
        capacity.request(c1, "c1", "b", [bq(H_END, 1)], actor="b")

    grid.unsubscribe(c1, "c1", "a", actor="engineer")
    grid.delete_cable(c1, "c1", actor="engineer")
    with pytest.raises(UnknownCable):
        capacity.capacity(c1, "c1")
    tables = dump(c1.db)
    assert not any(tables[t] for t in ("cables", "blocks", "budgets", "pending_requests", "subscriptions"))
    assert last_decision(c1).action == "cable_deleted"


# ---------------------------------------------------------------------------------------------
# the horizon moves on


def test_blocks_entering_the_horizon_are_handed_out_on_the_next_touch(c1: Context, clock: Any) -> None:
    clock.advance(timedelta(hours=1))
    assert capacity.ensure_horizon(c1, "c1") == 4
    decision = last_decision(c1)
    assert (decision.action, decision.actor, decision.cable_id) == ("hand_out", "system", "c1")
    new = [H_END + i * Q for i in range(4)]
    assert sorted(changes(c1, decision.id)) == sorted(
        (cpo, s, D(0), FAR_BUDGETS[cpo], "initial_hand_out") for s in new for cpo in "ab"
    )
    assert capacity.ensure_horizon(c1, "c1") == 0
    assert last_decision(c1).id == decision.id
    view = capacity.capacity(c1, "c1")
    assert len(view.blocks) == 192
    assert view.blocks[0].start == T0 + timedelta(hours=1)
    assert view.blocks[-1].budgets == FAR_BUDGETS

    # the next touch is a request: it hands out the two new blocks before deciding
    clock.advance(timedelta(minutes=30))
    result = capacity.request(c1, "c1", "b", [bq(H_END + 5 * Q, 40)], actor="b")
    assert result.status is AdjustStatus.ACCEPTED
    hand, req = audit.decisions(c1)[-2:]
    assert (hand.action, req.action, req.id) == ("hand_out", "request", result.decision_id)
    assert len(changes(c1, hand.id)) == 4
    assert budgets(c1, H_END + 4 * Q, H_END + 6 * Q) == {
        H_END + 4 * Q: FAR_BUDGETS,
        H_END + 5 * Q: {"a": D(26), "b": D(40)},
    }
    assert capacity.roll_horizon(c1) == capacity.RollResult({"c1": 0}, {})
    clock.advance(timedelta(minutes=15))
    assert capacity.roll_horizon(c1) == capacity.RollResult({"c1": 1}, {})


@pytest.mark.parametrize(("day", "n_blocks"), [(date(2026, 3, 29), 92), (date(2026, 10, 25), 100)])
def test_capacity_view_over_a_dst_day(ctx: Context, clock: Any, day: date, n_blocks: int) -> None:
    midnight = datetime(day.year, day.month, day.day, tzinfo=AMS)
    next_midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=AMS)
    clock.now = (midnight - timedelta(minutes=52, seconds=30)).astimezone(UTC)  # the day is all far ahead
    grid.create_cable(ctx, make_cable(), actor="engineer")
    for cpo_id, weight, minimum in (("a", 1, 10), ("b", 2, 5)):
        add_cpo(ctx, cpo_id)
        grid.subscribe(ctx, Subscription("c1", cpo_id, D(weight), D(minimum)), actor="engineer")

    view = capacity.capacity(ctx, "c1", midnight, next_midnight)
    assert len(view.blocks) == n_blocks
    assert view.blocks[0].start == midnight.astimezone(UTC)
    assert view.blocks[-1].end == next_midnight.astimezone(UTC)
    assert all(b.end - b.start == Q and b.start.tzinfo == UTC for b in view.blocks)
    assert all(later.start == earlier.end for earlier, later in zip(view.blocks, view.blocks[1:], strict=False))
    assert all(b.handed_out and b.budgets == FAR_BUDGETS for b in view.blocks)
    local_hours = [b.start.astimezone(AMS).hour for b in view.blocks]
    assert local_hours.count(2) == (0 if n_blocks == 92 else 8)  # skipped, or lived twice
    # a request in local time on the day lands on the right UTC block
    three_thirty = datetime(day.year, day.month, day.day, 3, 30, tzinfo=AMS)
    result = capacity.request(ctx, "c1", "b", [bq(three_thirty, 40)], actor="b")
    assert result.budgets == {three_thirty.astimezone(UTC): D(40)}


def test_view_of_past_blocks_shows_what_was_handed_out_then(c1: Context, clock: Any) -> None:
    capacity.request(c1, "c1", "b", [bq(F, 42)], actor="b")
    clock.advance(timedelta(hours=3))
    grid.update_cable(c1, "c1", {"rated_limit": D(50)}, actor="engineer")  # after the fact: not the past

    past = capacity.capacity(c1, "c1", T0, T0 + 4 * Q).blocks
    assert [b.budgets for b in past] == [NEAR_BUDGETS, NEAR_BUDGETS, {"a": D(26), "b": D(42)}, FAR_BUDGETS]
    assert all(b.handed_out and b.limit == D(100) and b.available == D(70) for b in past)
    assert past[2].unallocated == D(2)
    # blocks from before the service knew the cable: limits as now, nothing handed out
    before = capacity.capacity(c1, "c1", T0 - 2 * Q, T0).blocks
    assert [(b.handed_out, b.budgets, b.limit, b.available, b.unallocated) for b in before] == [
        (False, {}, D(50), D(20), D(20))
    ] * 2
    # a past block can no longer be asked for
    with unchanged(c1), pytest.raises(InvalidInput, match="already ended"):
        capacity.request(c1, "c1", "b", [bq(F, 1)], actor="b")


def test_naive_datetimes_are_rejected_everywhere(c1: Context) -> None:
    naive = datetime(2026, 11, 24, 13, 0)  # noqa: DTZ001 - the point of the test
    calls = [
        lambda: capacity.capacity(c1, "c1", naive, naive + Q),
        lambda: capacity.capacity(c1, "c1", F, naive),
        lambda: capacity.request(c1, "c1", "b", [bq(naive, 40)], actor="b"),
        lambda: capacity.request(c1, "c1", "b", [BlockQuantity(F, naive, D(40))], actor="b"),
        lambda: capacity.report_usage(c1, "c1", "a", [bq(naive - timedelta(hours=2), 4)], actor="a"),
        lambda: audit.decisions(c1, since=naive),
        lambda: audit.ledger(c1, since=naive),
        lambda: grid.add_override(c1, "c1", LimitOverride(naive, naive + Q, D(1), "x"), actor="e"),
    ]
    for call in calls:
        with unchanged(c1), pytest.raises(InvalidInput, match="no UTC offset"):
            call()


# ---------------------------------------------------------------------------------------------
# audit


def test_audit_filters_by_cable_cpo_since_and_limit(c1: Context, clock: Any) -> None:
    grid.create_cable(c1, make_cable("c2"), actor="engineer")
    grid.subscribe(c1, Subscription("c2", "a", D(1), D(0)), actor="engineer")
    clock.advance(timedelta(minutes=1))
    t1 = clock.now
    capacity.request(c1, "c1", "b", [bq(F, 40)], actor="b")
    capacity.request(c1, "c2", "a", [bq(F, 70)], actor="a")

    every = audit.decisions(c1)
    assert [d.id for d in every] == sorted(d.id for d in every)
    on_c2 = audit.decisions(c1, cable_id="c2")
    assert [d.action for d in on_c2] == ["hand_out", "cable_created", "subscription_added", "request"]
    assert {d.cable_id for d in on_c2} == {"c2"}
    of_b = audit.decisions(c1, cpo_id="b")
    assert [d.action for d in of_b] == ["cpo_created", "subscription_added", "request"]
    recent = audit.decisions(c1, since=t1)
    assert [(d.action, d.cable_id, d.cpo_id) for d in recent] == [("request", "c1", "b"), ("request", "c2", "a")]
    assert audit.decisions(c1, since=t1.astimezone(AMS)) == recent
    assert audit.decisions(c1, limit=3) == every[:3]
    assert audit.decisions(c1, cable_id="c2", cpo_id="a", since=t1) == recent[1:]
    assert audit.decisions(c1, cable_id="c9") == []

    entries = audit.ledger(c1)
    assert {e.cable_id for e in audit.ledger(c1, cable_id="c2")} == {"c2"}
    assert {e.cpo_id for e in audit.ledger(c1, cpo_id="b")} == {"b"}
    assert len(audit.ledger(c1, cable_id="c1", cpo_id="b")) == len([e for e in entries if e.cpo_id == "b"])
    assert [
        (e.cable_id, e.cpo_id, e.start, e.end, e.old_capacity, e.new_capacity, e.reason, e.action)
        for e in audit.ledger(c1, since=t1)
    ] == [
        ("c1", "b", F, F + Q, D(37), D(40), "request_granted", "request"),
        ("c2", "a", F, F + Q, D(63), D(70), "request_granted", "request"),
    ]
    assert audit.ledger(c1, limit=5) == entries[:5]
    assert audit.ledger(c1, since=clock.now + timedelta(seconds=1)) == []
