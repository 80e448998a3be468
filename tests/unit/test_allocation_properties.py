"""Stateful property test of the allocation rules (service.domain.allocation).

A random cable with random CPOs goes through random requests, usage reports, limit and base-load
changes, subscription changes, new blocks and the passing of time. After every step the safety
invariants are computed here (not only by `check_invariants`), and the ledger of the step is
checked: every change is replayable, has a `Reason`, and its direction and actor fit the rule.
"""

from copy import deepcopy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from service.domain.allocation import (
    AdjustStatus,
    BlockState,
    BudgetChange,
    CableBook,
    Ledger,
    PendingRequest,
    Policy,
    Reason,
    RequestOutcome,
    check_invariants,
    hand_out,
    new_block,
    reallocate,
    release_holds,
    request_capacity,
    resubscribe,
)
from service.domain.model import Cable, Subscription
from service.domain.units import ceil_grid, floor_grid

ZERO = Decimal(0)
GRID = Decimal("0.001")
Q = timedelta(minutes=15)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CPO_POOL = [f"cpo{i}" for i in range(8)]


Budgets = dict[datetime, dict[str, Decimal]]
Pendings = dict[datetime, dict[str, PendingRequest]]


def caps(high: int) -> st.SearchStrategy[Decimal]:
    """Grid quantities in [0, high], round numbers favoured."""
    return st.one_of(
        st.integers(0, high).map(Decimal),
        st.integers(0, high * 1000).map(lambda n: Decimal(n).scaleb(-3)),
    )


def on_grid(value: Decimal) -> bool:
    return value == value.quantize(GRID)


def flat(budgets: Budgets) -> dict[tuple[datetime, str], Decimal]:
    return {(start, cpo): v for start, per in budgets.items() for cpo, v in per.items() if v != 0}


def alerted(ledger: Ledger, start: datetime) -> bool:
    return any(start.isoformat() in alert for alert in ledger.alerts)


class AllocationMachine(RuleBasedStateMachine):
    book: CableBook
    policy: Policy
    now: datetime
    usage: dict[str, Decimal]

    # ------------------------------------------------------------------------------------------
    # set-up

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        cable = Cable(
            id="cable-1",
            name="prop",
            unit=data.draw(st.sampled_from(["A", "KW"]), label="unit"),  # type: ignore[arg-type]
            rated_limit=data.draw(st.one_of(caps(400), st.integers(100, 400).map(Decimal)), label="rated_limit"),
            phases=3,
            voltage_v=Decimal(230),
            margin=data.draw(st.one_of(st.just(ZERO), caps(50)), label="margin"),
            reserve_share=Decimal(data.draw(st.sampled_from(["0", "0.05", "0.1", "0.25", "0.333", "0.9"]))),
        )
        n_cpos = data.draw(st.integers(1, 6), label="n_cpos")
        subs = {cpo: self._draw_subscription(data, cpo) for cpo in CPO_POOL[:n_cpos]}
        self.policy = Policy(
            reclaim_notice=timedelta(minutes=data.draw(st.sampled_from([0, 15, 30, 60]), label="notice")),
            usage_margin_share=Decimal(data.draw(st.sampled_from(["0", "0.2", "0.5", "0.125"]), label="margin_share")),
        )
        # Blocks T0, T0+15', ...; now somewhere from 1.5 h before T0 to 20' after: some blocks
        # are inside the reclaim notice, some after it.
        self.now = T0 - timedelta(minutes=data.draw(st.integers(-20, 90), label="now_before_t0"))
        self.book = CableBook(cable=cable, subscriptions=subs, blocks={})
        self.told: dict[tuple[str, datetime], Decimal] = {}  # what each CPO confirmed, per block
        self.usage = {}
        for cpo in subs:  # some CPOs have reported usage from the start: reclaimable budget
            peak = data.draw(st.one_of(st.none(), caps(20)), label=f"{cpo}.usage_peak")
            if peak is not None:
                self.usage[cpo] = peak
        self.book.usage_peak = dict(self.usage)
        n_blocks = data.draw(st.integers(1, 6), label="n_blocks")
        for i in range(n_blocks):
            self._hand_out_block(T0 + i * Q, data.draw(st.one_of(caps(40), caps(150)), label="base_load"))

    @staticmethod
    def _draw_subscription(data: st.DataObject, cpo: str) -> Subscription:
        return Subscription(
            cable_id="cable-1",
            cpo_id=cpo,
            weight=data.draw(st.one_of(st.just(ZERO), caps(10)), label=f"{cpo}.weight"),
            # mostly feasible minimums, sometimes more than the cable can carry
            guaranteed_minimum=data.draw(st.one_of(st.just(ZERO), caps(30), caps(120)), label=f"{cpo}.minimum"),
        )

    # ------------------------------------------------------------------------------------------
    # checks shared by the rules

    def _snapshot(self) -> tuple[Budgets, Pendings]:
        return (
            {s: dict(b.budgets) for s, b in self.book.blocks.items()},
            {s: dict(b.pending) for s, b in self.book.blocks.items()},
        )

    def _check_replay(self, before: Budgets, ledger: Ledger) -> None:
        """Every change has a Reason, and replaying them from the prior budgets gives the new ones."""
        if ledger.alerts:
            event("alert")
        state = deepcopy(before)
        for change in ledger.changes:
            event(f"change: {change.reason}")
            assert isinstance(change.reason, Reason), change
            assert change.new != change.old, f"no-op change recorded: {change}"
            assert change.new >= 0, change
            assert on_grid(change.new), change
            current = state.setdefault(change.block_start, {}).get(change.cpo_id, ZERO)
            assert current == change.old, f"ledger old {change.old} != budget {current}: {change}"
            state[change.block_start][change.cpo_id] = change.new
        after, _ = self._snapshot()
        assert flat(state) == flat(after), "ledger does not reproduce the new budgets"
        for start in {c.block_start for c in ledger.changes if c.new > c.old}:
            block = self.book.blocks[start]
            promised = sum((max(b, self.told.get((cpo, start), ZERO)) for cpo, b in block.budgets.items()), ZERO) + sum(
                (t for (cpo, s), t in self.told.items() if s == start and cpo not in block.budgets), ZERO
            )
            assert promised <= block.available, f"block {start}: raised while {promised} is promised"

    @staticmethod
    def _check_served_pending(change: BudgetChange, pending_before: Pendings) -> None:
        assert change.new > change.old, change
        waiting = pending_before.get(change.block_start, {}).get(change.cpo_id)
        assert waiting is not None, f"PENDING_SERVED without a pending request: {change}"
        assert change.new <= waiting.target, f"served beyond the pending target {waiting.target}: {change}"

    def _check_reallocation_change(self, change: BudgetChange, ledger: Ledger, pending_before: Pendings) -> None:
        """Changes made by reallocate and resubscribe (other than SUBSCRIPTION_ENDED)."""
        if change.new > change.old:
            assert change.reason in (Reason.REALLOCATED_UP, Reason.PENDING_SERVED), change
            if change.reason is Reason.PENDING_SERVED:
                self._check_served_pending(change, pending_before)
            return
        assert change.reason in (Reason.REALLOCATED_DOWN, Reason.MINIMUMS_INFEASIBLE), change
        if change.reason is Reason.MINIMUMS_INFEASIBLE:
            assert alerted(ledger, change.block_start), f"MINIMUMS_INFEASIBLE without an alert: {change}"

    def _check_not_below_minimum(self, change: BudgetChange) -> None:
        if change.reason is Reason.REALLOCATED_DOWN:
            floor = min(change.old, self.book.minimum(change.cpo_id))
            assert change.new >= floor, f"REALLOCATED_DOWN below the minimum: {change}"

    # ------------------------------------------------------------------------------------------
    # rules

    def _hand_out_block(self, start: datetime, base_load: Decimal) -> None:
        before, _ = self._snapshot()
        block = new_block(self.book.cable, start, base_load)
        ledger = hand_out(self.book, [block])
        self._check_replay(before, ledger)
        subs = self.book.subscriptions
        for change in ledger.changes:
            assert change.reason is Reason.INITIAL_HAND_OUT, change
            assert change.block_start == start, change
            assert change.old == 0, change
            assert change.cpo_id in subs, change
        budgets = self.book.blocks[start].budgets
        allocated = sum(budgets.values(), ZERO)
        assert allocated <= block.available
        total_min = sum((s.guaranteed_minimum for s in subs.values()), ZERO)
        if total_min > block.available:
            assert alerted(ledger, start)
            return
        assert not ledger.alerts
        assert all(budgets.get(cpo, ZERO) >= s.guaranteed_minimum for cpo, s in subs.items())
        distributable = floor_grid(block.available * (1 - self.book.cable.reserve_share))
        if total_min <= distributable:
            # the reserve is kept back; the rest is shared out (each share floored to the grid)
            assert allocated <= distributable
            if any(s.weight > 0 for s in subs.values()):
                assert allocated + len(subs) * GRID >= distributable

    @rule(data=st.data())
    def extend_horizon(self, data: st.DataObject) -> None:
        self._hand_out_block(max(self.book.blocks) + Q, data.draw(caps(150), label="base_load"))

    @precondition(lambda self: bool(self.book.subscriptions))
    @rule(data=st.data())
    def request(self, data: st.DataObject) -> None:
        book = self.book
        cpo = data.draw(st.sampled_from(sorted(book.subscriptions)), label="requester")
        wanted = self._draw_targets(data, cpo)
        before, pending_before = self._snapshot()
        keep = {
            other: max(book.minimum(other), ceil_grid(peak * (1 + self.policy.usage_margin_share)))
            for other, peak in self.usage.items()
            if other != cpo and other in book.subscriptions
        }

        outcome = request_capacity(book, cpo, wanted, now=self.now, policy=self.policy)
        for start in wanted:  # the requester knows its answer: it confirms those budgets
            self.told.pop((cpo, start), None)

        self._check_replay(before, outcome.ledger)
        for start, budget in outcome.budgets.items():
            book.blocks[start].release(cpo, budget)  # as the store loads it next time
            self.told[(cpo, start)] = budget
        assert outcome.ledger.alerts == []
        for change in outcome.ledger.changes:
            assert change.block_start in wanted, f"changed a block that was not requested: {change}"
            if change.cpo_id == cpo:
                self._check_own_change(change, wanted[change.block_start])
            elif change.reason is Reason.RECLAIMED_UNUSED:
                self._check_reclaim(
                    change, keep, asked_more=wanted[change.block_start] > before[change.block_start].get(cpo, ZERO)
                )
            else:
                assert change.reason is Reason.PENDING_SERVED, change
                self._check_served_pending(change, pending_before)
        self._check_request_outcome(cpo, wanted, before, outcome)

    def _draw_targets(self, data: st.DataObject, cpo: str) -> dict[datetime, Decimal]:
        starts = data.draw(st.lists(st.sampled_from(sorted(self.book.blocks)), min_size=1, max_size=4, unique=True))
        wanted: dict[datetime, Decimal] = {}
        for start in starts:
            block = self.book.blocks[start]
            current = block.budgets.get(cpo, ZERO)
            kind = data.draw(st.sampled_from(["more", "more", "all", "less", "same", "zero"]), label="kind")
            wanted[start] = self._draw_target(data, kind, block, current)
        return wanted

    @staticmethod
    def _draw_target(data: st.DataObject, kind: str, block: BlockState, current: Decimal) -> Decimal:
        if kind == "more":
            return current + data.draw(caps(100), label="more")
        if kind == "all":
            return block.available + data.draw(caps(10), label="beyond")
        if kind == "less":
            return max(ZERO, current - data.draw(caps(100), label="less"))
        return current if kind == "same" else ZERO

    @staticmethod
    def _check_own_change(change: BudgetChange, target: Decimal) -> None:
        if change.reason is Reason.REQUEST_GRANTED:
            assert change.new > change.old, change
            assert change.new <= target, change
        else:
            assert change.reason is Reason.HANDED_BACK, change
            assert change.new < change.old, change
            assert change.new == target, change

    def _check_reclaim(self, change: BudgetChange, keep: dict[str, Decimal], *, asked_more: bool) -> None:
        assert change.new < change.old, change
        assert asked_more, f"reclaimed for a hand back: {change}"
        assert change.block_start >= self.now + self.policy.reclaim_notice, f"reclaimed inside the notice: {change}"
        assert change.cpo_id in keep, f"reclaimed from a CPO without usage reports: {change}"
        level = keep[change.cpo_id]
        assert change.new >= min(change.old, level), f"reclaimed below keep level {level}: {change}"

    def _check_request_outcome(
        self, cpo: str, wanted: dict[datetime, Decimal], before: Budgets, outcome: RequestOutcome
    ) -> None:
        fully = partly = nothing = 0
        for start, target in wanted.items():
            block = self.book.blocks[start]
            old = before[start].get(cpo, ZERO)
            new = block.budgets.get(cpo, ZERO)
            assert outcome.budgets[start] == new
            if target <= old:
                assert new == target, "a hand back is always accepted"
                assert cpo not in block.pending
                fully += 1
                continue
            assert old <= new <= target
            reclaimed = any(
                c.reason is Reason.RECLAIMED_UNUSED and c.block_start == start for c in outcome.ledger.changes
            )
            if reclaimed:
                assert block.unallocated == 0, "reclaimed while unallocated capacity was left"
            if new == target:
                assert cpo not in block.pending
                fully += 1
                continue
            assert block.unallocated == 0, "request left short while capacity was unallocated"
            assert block.pending[cpo] == PendingRequest(cpo, start, target, self.now)
            if new > old:
                partly += 1
            else:
                nothing += 1
                # nothing granted: at most budget taken from others for this request, still held for them
                moved = [c for c in outcome.ledger.changes if c.block_start == start]
                assert all(c.reason is Reason.RECLAIMED_UNUSED for c in moved), f"rejected but changed: {moved}"
                if moved:
                    assert block.held >= sum((c.old - c.new for c in moved), ZERO), "reclaimed but not held"
        event(f"request: {outcome.status}")
        if partly == nothing == 0:
            assert outcome.status is AdjustStatus.ACCEPTED
        elif fully == partly == 0:
            assert outcome.status is AdjustStatus.REJECTED
        else:
            assert outcome.status is AdjustStatus.PARTIALLY_ACCEPTED

    @rule(data=st.data())
    def report_usage(self, data: st.DataObject) -> None:
        subscribed = sorted(self.book.subscriptions)
        cpo = data.draw(st.sampled_from(subscribed or CPO_POOL), label="reporter")
        peak = data.draw(st.one_of(st.none(), caps(20), caps(150)), label="peak")
        if peak is None:
            self.usage.pop(cpo, None)
        else:
            self.usage[cpo] = peak
        self.book.usage_peak = dict(self.usage)

    @rule(data=st.data())
    def change_block_capacity(self, data: st.DataObject) -> None:
        book = self.book
        starts = data.draw(st.lists(st.sampled_from(sorted(book.blocks)), min_size=1, max_size=4, unique=True))
        updated = []
        for start in starts:
            block = book.blocks[start]
            limit = data.draw(st.one_of(st.just(block.limit), caps(400)), label="limit")
            base_load = data.draw(st.one_of(st.just(block.base_load), caps(150)), label="base_load")
            margin = data.draw(st.one_of(st.just(block.margin), caps(50)), label="margin")
            updated.append(BlockState(start=start, limit=limit, base_load=base_load, margin=margin))
        before, pending_before = self._snapshot()
        available_before = {s: book.blocks[s].available for s in starts}

        ledger = reallocate(book, updated)

        self._check_replay(before, ledger)
        for change in ledger.changes:
            assert change.block_start in starts, change
            self._check_reallocation_change(change, ledger, pending_before)
            self._check_not_below_minimum(change)
        for start in starts:
            self._check_reallocated_block(start, before[start], available_before[start], ledger)

    def _check_reallocated_block(
        self, start: datetime, old: dict[str, Decimal], available_before: Decimal, ledger: Ledger
    ) -> None:
        book = self.book
        block = book.blocks[start]
        allocated_before = sum(old.values(), ZERO)
        decreased = [c for c in ledger.changes if c.block_start == start and c.new < c.old]
        if allocated_before <= block.available:
            assert not decreased, "cut budgets that still fit"
        kept = sum((min(b, book.minimum(cpo)) for cpo, b in old.items()), ZERO)
        if kept <= block.available:
            assert not alerted(ledger, start), "alert although the minimums fit"
        if block.available <= available_before or allocated_before > block.available:
            return
        # grown: minimums restored when the headroom allows (what is held for CPOs that have yet to
        # confirm lower budgets is not headroom), the rest shared out by weight among the others
        subs = book.subscriptions
        deficit = sum((max(ZERO, s.guaranteed_minimum - old.get(cpo, ZERO)) for cpo, s in subs.items()), ZERO)
        held_before = sum((max(ZERO, t - old.get(cpo, ZERO)) for cpo, t in block.told.items()), ZERO)
        if deficit <= block.available - allocated_before - held_before:
            for cpo, s in subs.items():
                assert block.budgets.get(cpo, ZERO) >= s.guaranteed_minimum, f"minimum of {cpo} not restored"
        distributable = floor_grid(block.available * (1 - book.cable.reserve_share))
        if any(s.weight > 0 and block.own_hold(cpo) == 0 for cpo, s in subs.items()):
            assert block.allocated + block.held + len(subs) * GRID >= distributable, "headroom not shared out"

    def _resubscribe(self) -> None:
        book = self.book
        before, pending_before = self._snapshot()
        notice_from = self.now + self.policy.reclaim_notice

        ledger = resubscribe(book, now=self.now, policy=self.policy)  # a CPO that left keeps its holds

        self._check_replay(before, ledger)
        subs = book.subscriptions
        for change in ledger.changes:
            if change.reason is Reason.SUBSCRIPTION_ENDED:
                assert change.cpo_id not in subs, change
                assert change.new == 0, change
                continue
            assert change.cpo_id in subs, f"a budget for a CPO that left: {change}"
            if change.new < change.old:
                assert change.block_start >= notice_from, f"cut a remaining CPO inside the notice: {change}"
            self._check_reallocation_change(change, ledger, pending_before)
            self._check_not_below_minimum(change)

        total_min = sum((s.guaranteed_minimum for s in subs.values()), ZERO)
        for start, block in book.blocks.items():
            assert set(block.budgets) <= set(subs)
            assert set(block.pending) <= set(subs)
            if start < notice_from:
                continue
            if block.held:  # what is held is handed out afresh once the CPOs holding it confirm
                continue
            if total_min <= block.available:  # far blocks are handed out afresh
                assert all(block.budgets.get(c, ZERO) >= s.guaranteed_minimum for c, s in subs.items())
            else:
                assert alerted(ledger, start)

    @precondition(lambda self: len(self.book.subscriptions) < len(CPO_POOL))
    @rule(data=st.data())
    def add_subscription(self, data: st.DataObject) -> None:
        free = [cpo for cpo in CPO_POOL if cpo not in self.book.subscriptions]
        cpo = data.draw(st.sampled_from(free), label="new_cpo")
        self.book.subscriptions[cpo] = self._draw_subscription(data, cpo)
        self._resubscribe()

    @precondition(lambda self: bool(self.book.subscriptions))
    @rule(data=st.data())
    def remove_subscription(self, data: st.DataObject) -> None:
        cpo = data.draw(st.sampled_from(sorted(self.book.subscriptions)), label="leaving_cpo")
        del self.book.subscriptions[cpo]
        self._resubscribe()
        for block in self.book.blocks.values():
            assert cpo not in block.budgets
            assert cpo not in block.pending

    @precondition(lambda self: bool(self.book.subscriptions))
    @rule(data=st.data())
    def change_subscription(self, data: st.DataObject) -> None:
        cpo = data.draw(st.sampled_from(sorted(self.book.subscriptions)), label="changed_cpo")
        self.book.subscriptions[cpo] = self._draw_subscription(data, cpo)
        self._resubscribe()

    @precondition(lambda self: bool(self.book.subscriptions))
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        """A CPO Accepted a push of its current budgets: what it no longer holds is shared."""
        cpo = data.draw(st.sampled_from(sorted(self.book.subscriptions)), label="confirming")
        starts = data.draw(st.lists(st.sampled_from(sorted(self.book.blocks)), min_size=1, max_size=6, unique=True))
        values = {(cpo, s): self.book.blocks[s].budgets.get(cpo, ZERO) for s in starts}
        before, pending_before = self._snapshot()
        ledger = release_holds(self.book, values)
        self.told.update(values)
        self._check_replay(before, ledger)
        for change in ledger.changes:
            assert change.new > change.old, f"a confirmation took budget away: {change}"
            assert change.reason in (Reason.REALLOCATED_UP, Reason.PENDING_SERVED), change
            if change.reason is Reason.PENDING_SERVED:
                self._check_served_pending(change, pending_before)

    @precondition(lambda self: bool(self.told))
    @rule(data=st.data())
    def expire_hold(self, data: st.DataObject) -> None:
        """A CPO left a lower budget unconfirmed past the notice period: its hold ends."""
        cpo, start = data.draw(st.sampled_from(sorted(self.told)), label="expiring")
        before, _ = self._snapshot()
        del self.told[(cpo, start)]
        ledger = release_holds(self.book, {(cpo, start): None})
        self._check_replay(before, ledger)
        assert all(c.new > c.old for c in ledger.changes), ledger.changes

    @rule(minutes=st.integers(1, 40))
    def advance_time(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    # ------------------------------------------------------------------------------------------
    # invariants, computed here and by the code under test

    @invariant()
    def holds_follow_what_cpos_confirmed(self) -> None:
        for start, block in self.book.blocks.items():
            told = {cpo: t for (cpo, s), t in self.told.items() if s == start}
            assert block.told == told, f"block {start}: told {block.told} != confirmed {told}"
            held = sum((max(ZERO, t - block.budgets.get(c, ZERO)) for c, t in told.items()), ZERO)
            assert block.held == held, f"block {start}: held {block.held} != {held}"

    @invariant()
    def safety(self) -> None:
        for start, block in self.book.blocks.items():
            available = max(ZERO, block.limit - block.base_load - block.margin)
            total = sum(block.budgets.values(), ZERO)
            assert total <= available, f"block {start}: budgets {total} > available {available}"
            assert block.allocated == total, f"block {start}: allocated {block.allocated} != sum {total}"
            for cpo, budget in block.budgets.items():
                assert budget >= 0, f"block {start}: budget of {cpo} is {budget}"
                assert on_grid(budget), f"block {start}: budget of {cpo} is off the grid: {budget}"
            for cpo, pending in block.pending.items():
                assert pending.cpo_id == cpo, pending
                assert pending.block_start == start, pending
                assert pending.target > block.budgets.get(cpo, ZERO), pending
        check_invariants(self.book)


AllocationMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestAllocationMachine = AllocationMachine.TestCase
