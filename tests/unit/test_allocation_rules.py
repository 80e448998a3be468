"""The allocation rules (service.domain.allocation), one hand-computed example per rule."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from service.domain.allocation import (
    AdjustStatus,
    BlockState,
    BudgetChange,
    CableBook,
    PendingRequest,
    Policy,
    Reason,
    check_invariants,
    hand_out,
    new_block,
    reallocate,
    request_capacity,
    resubscribe,
)
from service.domain.errors import InvalidInput, InvariantViolation
from service.domain.model import Cable, LimitOverride, Subscription
from service.domain.units import Unit

D = Decimal
Q = timedelta(minutes=15)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # start of the first block
FAR = T0 - timedelta(hours=1)  # a "now" for which every block is past the reclaim notice
POLICY = Policy()  # 15 min reclaim notice, 20 % usage margin


def make_cable(
    limit: str | int = 100, *, margin: str | int = 0, reserve: str = "0.1", base_load: str | int = 0
) -> Cable:
    return Cable(
        id="cable-1",
        name="Kerkstraat LS-3",
        unit=Unit.AMPERE,
        rated_limit=D(limit),
        phases=3,
        voltage_v=D(230),
        margin=D(margin),
        reserve_share=D(reserve),
        base_load=D(base_load),
    )


def sub(cpo: str, weight: str | int, minimum: str | int = 0) -> Subscription:
    return Subscription(cable_id="cable-1", cpo_id=cpo, weight=D(weight), guaranteed_minimum=D(minimum))


def make_book(cable: Cable, subs: list[Subscription], n_blocks: int = 1) -> CableBook:
    book = CableBook(cable=cable, subscriptions={s.cpo_id: s for s in subs}, blocks={})
    hand_out(book, [new_block(cable, T0 + i * Q, cable.base_load) for i in range(n_blocks)])
    check_invariants(book)
    return book


def budgets(book: CableBook, start: datetime = T0) -> dict[str, Decimal]:
    return {cpo: b for cpo, b in book.blocks[start].budgets.items() if b}


def with_base_load(book: CableBook, base_load: str | int, start: datetime = T0) -> BlockState:
    block = book.blocks[start]
    return BlockState(start=start, limit=block.limit, base_load=D(base_load), margin=block.margin)


# ---------------------------------------------------------------------------------------------
# initial hand-out


class TestHandOut:
    def test_minimums_first_then_weights_reserve_kept_back(self) -> None:
        # available = 100 - 20 base - 10 margin = 70; 10 % reserve -> 63 distributable;
        # minimums 10 + 5, the remaining 48 split 1:2 -> a = 10 + 16, b = 5 + 32.
        c = make_cable(100, margin=10, base_load=20)
        book = CableBook(c, {"a": sub("a", 1, 10), "b": sub("b", 2, 5)}, {})
        ledger = hand_out(book, [new_block(c, T0, c.base_load)])
        block = book.blocks[T0]
        assert block.available == D(70)
        assert block.budgets == {"a": D(26), "b": D(37)}
        assert block.unallocated == D(7)
        assert ledger.alerts == []
        assert sorted(ledger.changes) == [
            BudgetChange("a", T0, D(0), D(26), Reason.INITIAL_HAND_OUT),
            BudgetChange("b", T0, D(0), D(37), Reason.INITIAL_HAND_OUT),
        ]

    def test_shares_are_floored_to_the_grid(self) -> None:
        book = make_book(make_cable(10, reserve="0"), [sub("a", 1), sub("b", 1), sub("c", 1)])
        assert budgets(book) == {"a": D("3.333"), "b": D("3.333"), "c": D("3.333")}
        assert book.blocks[T0].allocated == D("9.999")

    def test_minimums_above_distributable_are_paid_from_the_reserve(self) -> None:
        # available 70, distributable 63 < minimums 40 + 28 = 68 <= 70: everyone gets exactly the minimum.
        c = make_cable(100, margin=10, base_load=20)
        book = CableBook(c, {"a": sub("a", 1, 40), "b": sub("b", 5, 28)}, {})
        ledger = hand_out(book, [new_block(c, T0, c.base_load)])
        assert budgets(book) == {"a": D(40), "b": D(28)}
        assert ledger.alerts == []

    def test_minimums_above_available_are_cut_in_proportion_with_an_alert(self) -> None:
        # available 70 < minimums 60 + 20 = 80 -> 70 * 60/80 = 52.5 and 70 * 20/80 = 17.5
        c = make_cable(100, margin=10, base_load=20)
        book = CableBook(c, {"a": sub("a", 1, 60), "b": sub("b", 1, 20)}, {})
        ledger = hand_out(book, [new_block(c, T0, c.base_load)])
        assert budgets(book) == {"a": D("52.5"), "b": D("17.5")}
        assert len(ledger.alerts) == 1
        assert "cable-1" in ledger.alerts[0]
        assert T0.isoformat() in ledger.alerts[0]
        assert {ch.reason for ch in ledger.changes} == {Reason.INITIAL_HAND_OUT}

    def test_available_never_below_zero(self) -> None:
        book = make_book(make_cable(100, margin=30, base_load=90), [sub("a", 1)])
        assert book.blocks[T0].available == D(0)
        assert budgets(book) == {}

    def test_override_sets_the_block_limit(self) -> None:
        c = Cable(
            id="cable-1",
            name="x",
            unit=Unit.AMPERE,
            rated_limit=D(100),
            phases=3,
            voltage_v=D(230),
            reserve_share=D(0),
            overrides=(LimitOverride(T0 + Q, T0 + 2 * Q, D(40), "maintenance"),),
        )
        book = make_book(c, [sub("a", 1)], n_blocks=3)
        assert [book.blocks[T0 + i * Q].budgets["a"] for i in range(3)] == [D(100), D(40), D(100)]


# ---------------------------------------------------------------------------------------------
# requests for more


class TestRequestMore:
    @staticmethod
    def _book() -> CableBook:
        # available 70, a = 26, b = 37, 7 unallocated (the reserve)
        return make_book(make_cable(100, margin=10, base_load=20), [sub("a", 1, 10), sub("b", 2, 5)])

    def test_fully_from_unallocated_is_accepted(self) -> None:
        book = self._book()
        outcome = request_capacity(book, "a", {T0: D(30)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.ACCEPTED
        assert outcome.budgets == {T0: D(30)}
        assert budgets(book) == {"a": D(30), "b": D(37)}
        assert outcome.ledger.changes == [BudgetChange("a", T0, D(26), D(30), Reason.REQUEST_GRANTED)]
        assert book.blocks[T0].pending == {}

    def test_the_whole_reserve_can_be_granted(self) -> None:
        book = self._book()
        outcome = request_capacity(book, "a", {T0: D(33)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.ACCEPTED
        assert book.blocks[T0].unallocated == 0

    def test_partial_grant_records_a_pending_request(self) -> None:
        book = self._book()
        outcome = request_capacity(book, "a", {T0: D(40)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.PARTIALLY_ACCEPTED
        assert outcome.budgets == {T0: D(33)}
        assert outcome.ledger.changes == [BudgetChange("a", T0, D(26), D(33), Reason.REQUEST_GRANTED)]
        assert book.blocks[T0].pending == {"a": PendingRequest("a", T0, D(40), FAR)}
        assert budgets(book)["b"] == D(37)  # b reported no usage: nothing reclaimed

    def test_rejected_when_nothing_can_be_given(self) -> None:
        book = make_book(make_cable(70, reserve="0"), [sub("a", 1), sub("b", 1)])  # 35 + 35, nothing free
        outcome = request_capacity(book, "a", {T0: D(40)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.REJECTED
        assert outcome.budgets == {T0: D(35)}
        assert outcome.ledger.changes == []
        assert book.blocks[T0].pending["a"].target == D(40)

    def test_mixed_outcomes_over_blocks_are_partially_accepted(self) -> None:
        book = make_book(make_cable(70, reserve="0"), [sub("a", 1), sub("b", 1)], n_blocks=2)
        request_capacity(book, "b", {T0 + Q: D(30)}, now=FAR, policy=POLICY)  # frees 5 in the 2nd block
        outcome = request_capacity(book, "a", {T0: D(40), T0 + Q: D(40)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.PARTIALLY_ACCEPTED
        assert outcome.budgets == {T0: D(35), T0 + Q: D(40)}

    def test_a_new_request_replaces_the_pending_one(self) -> None:
        book = make_book(make_cable(70, reserve="0"), [sub("a", 1), sub("b", 1)])
        request_capacity(book, "a", {T0: D(50)}, now=FAR, policy=POLICY)
        later = FAR + Q
        request_capacity(book, "a", {T0: D(45)}, now=later, policy=POLICY)
        assert book.blocks[T0].pending == {"a": PendingRequest("a", T0, D(45), later)}
        request_capacity(book, "a", {T0: D(35)}, now=later, policy=POLICY)  # same as budget: nothing pending
        assert book.blocks[T0].pending == {}


class TestReclaim:
    @staticmethod
    def _book(min_b: int = 5) -> CableBook:
        return make_book(make_cable(70, reserve="0"), [sub("a", 1, min_b), sub("b", 1, min_b)])  # a = b = 35

    def test_reclaims_down_to_the_keep_level(self) -> None:
        # b used at most 10 -> keeps ceil(10 * 1.2) = 12 (> its minimum 5); 35 - 12 = 23 is unused.
        book = self._book()
        book.usage_peak = {"b": D(10)}
        outcome = request_capacity(book, "a", {T0: D(60)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.PARTIALLY_ACCEPTED
        assert budgets(book) == {"a": D(58), "b": D(12)}
        assert outcome.ledger.changes == [
            BudgetChange("b", T0, D(35), D(12), Reason.RECLAIMED_UNUSED),
            BudgetChange("a", T0, D(35), D(58), Reason.REQUEST_GRANTED),
        ]
        assert book.blocks[T0].pending["a"].target == D(60)

    def test_never_below_the_minimum(self) -> None:
        # keep = max(minimum 20, 12) = 20 -> only 15 is reclaimable.
        book = self._book(min_b=20)
        book.usage_peak = {"b": D(10)}
        outcome = request_capacity(book, "a", {T0: D(60)}, now=FAR, policy=POLICY)
        assert budgets(book) == {"a": D(50), "b": D(20)}
        assert outcome.status is AdjustStatus.PARTIALLY_ACCEPTED

    def test_keep_level_is_rounded_up_to_the_grid(self) -> None:
        book = self._book(min_b=0)
        book.usage_peak = {"b": D("10.0001")}  # 12.00012 -> keeps 12.001
        request_capacity(book, "a", {T0: D(70)}, now=FAR, policy=POLICY)
        assert budgets(book) == {"a": D("57.999"), "b": D("12.001")}

    def test_reclaimed_from_the_largest_unused_budget_first(self) -> None:
        # 90 split 30/30/30. b keeps ceil(5 * 1.2) = 6 (24 unused), c keeps 18 (12 unused).
        # a needs 18: b alone has that much unused and gives it all; c is not disturbed.
        book = make_book(make_cable(90, reserve="0"), [sub("a", 1), sub("b", 1), sub("c", 1)])
        book.usage_peak = {"b": D(5), "c": D(15)}
        outcome = request_capacity(book, "a", {T0: D(48)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.ACCEPTED
        assert budgets(book) == {"a": D(48), "b": D(12), "c": D(30)}
        assert {c.cpo_id for c in outcome.ledger.changes if c.reason is Reason.RECLAIMED_UNUSED} == {"b"}

    def test_reclaim_moves_on_to_the_next_largest_when_one_is_not_enough(self) -> None:
        # Same grid; a needs 30: b gives its 24 unused, c the remaining 6 of its 12.
        book = make_book(make_cable(90, reserve="0"), [sub("a", 1), sub("b", 1), sub("c", 1)])
        book.usage_peak = {"b": D(5), "c": D(15)}
        outcome = request_capacity(book, "a", {T0: D(60)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.ACCEPTED
        assert budgets(book) == {"a": D(60), "b": D(6), "c": D(24)}
        assert {(ch.cpo_id, ch.reason) for ch in outcome.ledger.changes} == {
            ("a", Reason.REQUEST_GRANTED),
            ("b", Reason.RECLAIMED_UNUSED),
            ("c", Reason.RECLAIMED_UNUSED),
        }

    def test_unallocated_is_used_before_reclaiming(self) -> None:
        # reserve 10 % of 70 -> 7 free; a = b = 31.5. a wants 10 more: 7 free + 3 reclaimed from b.
        book = make_book(make_cable(70), [sub("a", 1), sub("b", 1)])
        book.usage_peak = {"b": D(1)}
        request_capacity(book, "a", {T0: D("41.5")}, now=FAR, policy=POLICY)
        assert budgets(book) == {"a": D("41.5"), "b": D("28.5")}

    def test_no_reclaim_from_a_cpo_without_usage_reports(self) -> None:
        book = self._book()
        book.usage_peak = {"a": D(0)}  # only the requester reported; that does not count
        outcome = request_capacity(book, "a", {T0: D(60)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.REJECTED
        assert budgets(book) == {"a": D(35), "b": D(35)}
        assert outcome.ledger.changes == []

    def test_no_reclaim_from_a_cpo_that_uses_its_budget(self) -> None:
        book = self._book()
        book.usage_peak = {"b": D(30)}  # keeps 36 > 35
        outcome = request_capacity(book, "a", {T0: D(60)}, now=FAR, policy=POLICY)
        assert outcome.status is AdjustStatus.REJECTED
        assert budgets(book) == {"a": D(35), "b": D(35)}

    def test_no_reclaim_for_a_block_inside_the_notice(self) -> None:
        book = self._book()
        book.usage_peak = {"b": D(10)}
        now = T0 - timedelta(minutes=10)  # T0 < now + 15 min
        outcome = request_capacity(book, "a", {T0: D(60)}, now=now, policy=POLICY)
        assert outcome.status is AdjustStatus.REJECTED
        assert budgets(book) == {"a": D(35), "b": D(35)}
        assert book.blocks[T0].pending["a"] == PendingRequest("a", T0, D(60), now)

    def test_reclaim_allowed_exactly_at_the_notice(self) -> None:
        book = self._book()
        book.usage_peak = {"b": D(10)}
        request_capacity(book, "a", {T0: D(60)}, now=T0 - POLICY.reclaim_notice, policy=POLICY)
        assert budgets(book) == {"a": D(58), "b": D(12)}

    def test_notice_comes_from_the_policy(self) -> None:
        book = self._book()
        book.usage_peak = {"b": D(10)}
        long_notice = Policy(reclaim_notice=timedelta(hours=2))
        request_capacity(book, "a", {T0: D(60)}, now=FAR, policy=long_notice)  # FAR is only 1 h ahead
        assert budgets(book) == {"a": D(35), "b": D(35)}


# ---------------------------------------------------------------------------------------------
# hand back


class TestHandBack:
    def test_hand_back_is_accepted_and_frees_capacity(self) -> None:
        book = make_book(make_cable(70, reserve="0"), [sub("a", 1, 20), sub("b", 1)])
        outcome = request_capacity(book, "a", {T0: D(5)}, now=FAR, policy=POLICY)  # below its own minimum: fine
        assert outcome.status is AdjustStatus.ACCEPTED
        # a = 20 + 50/2 = 45, b = 25
        assert outcome.ledger.changes == [BudgetChange("a", T0, D(45), D(5), Reason.HANDED_BACK)]
        assert book.blocks[T0].unallocated == D(40)

    def test_hand_back_inside_the_notice_is_accepted(self) -> None:
        book = make_book(make_cable(70, reserve="0"), [sub("a", 1), sub("b", 1)])
        outcome = request_capacity(book, "a", {T0: D(0)}, now=T0 + timedelta(minutes=5), policy=POLICY)
        assert outcome.status is AdjustStatus.ACCEPTED
        assert budgets(book) == {"b": D(35)}

    def test_freed_capacity_goes_to_the_oldest_pending_request_first(self) -> None:
        # 90 = 30/30/30, nothing free. b asks for 40 at t1, a asks for 40 at t2 > t1 (both wait).
        # c hands back 12: b (older, although 'a' sorts first) gets its 10, a gets the last 2.
        book = make_book(make_cable(90, reserve="0"), [sub("a", 1), sub("b", 1), sub("c", 1)])
        t1, t2, t3 = FAR, FAR + timedelta(minutes=1), FAR + timedelta(minutes=2)
        assert request_capacity(book, "b", {T0: D(40)}, now=t1, policy=POLICY).status is AdjustStatus.REJECTED
        assert request_capacity(book, "a", {T0: D(40)}, now=t2, policy=POLICY).status is AdjustStatus.REJECTED
        outcome = request_capacity(book, "c", {T0: D(18)}, now=t3, policy=POLICY)
        assert outcome.status is AdjustStatus.ACCEPTED
        assert outcome.ledger.changes == [
            BudgetChange("c", T0, D(30), D(18), Reason.HANDED_BACK),
            BudgetChange("b", T0, D(30), D(40), Reason.PENDING_SERVED),
            BudgetChange("a", T0, D(30), D(32), Reason.PENDING_SERVED),
        ]
        assert book.blocks[T0].pending == {"a": PendingRequest("a", T0, D(40), t2)}

    def test_handing_back_cancels_the_own_pending_request(self) -> None:
        book = make_book(make_cable(70, reserve="0"), [sub("a", 1), sub("b", 1)])
        request_capacity(book, "a", {T0: D(50)}, now=FAR, policy=POLICY)
        request_capacity(book, "a", {T0: D(30)}, now=FAR, policy=POLICY)
        assert book.blocks[T0].pending == {}
        assert budgets(book) == {"a": D(30), "b": D(35)}


class TestRequestInput:
    def test_negative_target_is_invalid(self) -> None:
        book = make_book(make_cable(70), [sub("a", 1)])
        with pytest.raises(InvalidInput, match="must be >= 0"):
            request_capacity(book, "a", {T0: D("-0.001")}, now=FAR, policy=POLICY)

    def test_unknown_block_is_invalid(self) -> None:
        book = make_book(make_cable(70), [sub("a", 1)])
        with pytest.raises(InvalidInput, match="outside the allocation horizon"):
            request_capacity(book, "a", {T0 + 5 * Q: D(1)}, now=FAR, policy=POLICY)

    def test_off_grid_target_never_makes_an_off_grid_budget(self) -> None:
        book = make_book(make_cable(100, reserve="0"), [sub("a", 1)])
        try:
            request_capacity(book, "a", {T0: D("50.0005")}, now=FAR, policy=POLICY)
        except InvalidInput:
            return
        budget = book.blocks[T0].budgets["a"]
        assert budget == budget.quantize(D("0.001"))

    def test_nan_target_is_invalid_input(self) -> None:
        book = make_book(make_cable(100), [sub("a", 1)])
        with pytest.raises(InvalidInput):
            request_capacity(book, "a", {T0: D("NaN")}, now=FAR, policy=POLICY)


# ---------------------------------------------------------------------------------------------
# reallocate


class TestReallocate:
    @staticmethod
    def _book() -> CableBook:
        # available 90, no reserve; a (w2, min 20) = 20 + 40 = 60, b (w1, min 10) = 10 + 20 = 30
        return make_book(make_cable(100, reserve="0", base_load=10), [sub("a", 2, 20), sub("b", 1, 10)])

    def test_down_cuts_the_part_above_the_minimums_proportionally(self) -> None:
        # base load 10 -> 65: available 35, deficit 55 of 60 reducible (a 40, b 20):
        # a cut ceil(55 * 40/60) = 36.667 -> 23.333, b cut ceil(55 * 20/60) = 18.334 -> 11.666
        book = self._book()
        assert budgets(book) == {"a": D(60), "b": D(30)}
        ledger = reallocate(book, [with_base_load(book, 65)])
        assert budgets(book) == {"a": D("23.333"), "b": D("11.666")}
        assert {ch.reason for ch in ledger.changes} == {Reason.REALLOCATED_DOWN}
        assert ledger.alerts == []
        check_invariants(book)

    def test_down_to_exactly_the_minimums(self) -> None:
        book = self._book()
        ledger = reallocate(book, [with_base_load(book, 70)])  # available 30 = 20 + 10
        assert budgets(book) == {"a": D(20), "b": D(10)}
        assert ledger.changes == [
            BudgetChange("a", T0, D(60), D(20), Reason.REALLOCATED_DOWN),
            BudgetChange("b", T0, D(30), D(10), Reason.REALLOCATED_DOWN),
        ]

    def test_down_that_still_fits_changes_nothing(self) -> None:
        book = make_book(make_cable(100, base_load=10), [sub("a", 2, 20), sub("b", 1, 10)])  # 81 of 90
        ledger = reallocate(book, [with_base_load(book, 15)])  # available 85 >= 81
        assert ledger.changes == []
        assert budgets(book) == {"a": D(54), "b": D(27)}

    def test_infeasible_minimums_cut_in_proportion_with_an_alert(self) -> None:
        # available 15 < minimums 30: a = 15 * 20/30 = 10, b = 15 * 10/30 = 5
        book = self._book()
        ledger = reallocate(book, [with_base_load(book, 85)])
        assert budgets(book) == {"a": D(10), "b": D(5)}
        assert {ch.reason for ch in ledger.changes} == {Reason.MINIMUMS_INFEASIBLE}
        assert len(ledger.alerts) == 1
        assert T0.isoformat() in ledger.alerts[0]

    def test_up_restores_minimums_serves_pending_then_tops_up_by_weight(self) -> None:
        # reserve 10 %, available 100: a = 20 + 40 = 60, b = 10 + 20 = 30.
        book = make_book(make_cable(100), [sub("a", 2, 20), sub("b", 1, 10)])
        reallocate(book, [with_base_load(book, 85)])  # available 15: a 10, b 5 (infeasible)
        assert budgets(book) == {"a": D(10), "b": D(5)}
        assert request_capacity(book, "b", {T0: D(12)}, now=FAR, policy=POLICY).status is AdjustStatus.REJECTED
        # back to 100: minimums a 20, b 10; b's pending 12; pool 90 - 32 = 58 by weight 2:1.
        ledger = reallocate(book, [with_base_load(book, 0)])
        assert ledger.changes == [
            BudgetChange("a", T0, D(10), D(20), Reason.REALLOCATED_UP),
            BudgetChange("b", T0, D(5), D(10), Reason.REALLOCATED_UP),
            BudgetChange("b", T0, D(10), D(12), Reason.PENDING_SERVED),
            BudgetChange("a", T0, D(20), D("58.666"), Reason.REALLOCATED_UP),
            BudgetChange("b", T0, D(12), D("31.333"), Reason.REALLOCATED_UP),
        ]
        assert book.blocks[T0].pending == {}
        assert book.blocks[T0].unallocated == D("10.001")
        assert ledger.alerts == []

    def test_up_with_little_headroom_restores_minimums_in_proportion(self) -> None:
        book = self._book()
        reallocate(book, [with_base_load(book, 85)])  # a 10, b 5
        reallocate(book, [with_base_load(book, 79)])  # available 21: 6 free for deficits 10 + 5
        assert budgets(book) == {"a": D(14), "b": D(7)}

    def test_only_listed_blocks_change(self) -> None:
        c = make_cable(100, reserve="0", base_load=10)
        book = make_book(c, [sub("a", 2, 20), sub("b", 1, 10)], n_blocks=3)
        ledger = reallocate(book, [with_base_load(book, 70, T0 + Q)])
        assert {ch.block_start for ch in ledger.changes} == {T0 + Q}
        assert budgets(book, T0) == budgets(book, T0 + 2 * Q) == {"a": D(60), "b": D(30)}


# ---------------------------------------------------------------------------------------------
# resubscribe


class TestResubscribe:
    def test_removed_cpo_loses_its_budgets_and_others_get_them(self) -> None:
        # 100 available, 10 % reserve: a = b = 45 in both blocks; block 0 near, block 1 far.
        book = make_book(make_cable(100), [sub("a", 1), sub("b", 1)], n_blocks=2)
        now = T0 - timedelta(minutes=5)
        del book.subscriptions["b"]
        ledger = resubscribe(book, now=now, policy=POLICY)
        ended = [ch for ch in ledger.changes if ch.reason is Reason.SUBSCRIPTION_ENDED]
        assert sorted(ended) == [
            BudgetChange("b", T0, D(45), D(0), Reason.SUBSCRIPTION_ENDED),
            BudgetChange("b", T0 + Q, D(45), D(0), Reason.SUBSCRIPTION_ENDED),
        ]
        for start in (T0, T0 + Q):
            assert "b" not in book.blocks[start].budgets
            assert budgets(book, start) == {"a": D(90)}  # near: topped up; far: handed out afresh
        check_invariants(book)

    def test_removed_cpo_loses_its_pending_requests(self) -> None:
        book = make_book(make_cable(70, reserve="0"), [sub("a", 1), sub("b", 1)])
        request_capacity(book, "b", {T0: D(50)}, now=FAR, policy=POLICY)
        del book.subscriptions["b"]
        resubscribe(book, now=FAR, policy=POLICY)
        assert book.blocks[T0].pending == {}
        assert budgets(book) == {"a": D(70)}

    def test_new_cpo_gets_its_share_far_ahead_and_only_headroom_nearby(self) -> None:
        # a alone: 90 of 100 in both blocks. c joins (w1, min 10).
        # far block: afresh, 10 + 80/2 = 50 for c, a 40; near block: c gets its minimum from the 10 free.
        book = make_book(make_cable(100), [sub("a", 1)], n_blocks=2)
        book.subscriptions["c"] = sub("c", 1, 10)
        ledger = resubscribe(book, now=T0 - timedelta(minutes=5), policy=POLICY)
        assert budgets(book, T0) == {"a": D(90), "c": D(10)}
        assert budgets(book, T0 + Q) == {"a": D(40), "c": D(50)}
        assert ledger.changes == [
            BudgetChange("c", T0, D(0), D(10), Reason.REALLOCATED_UP),
            BudgetChange("a", T0 + Q, D(90), D(40), Reason.REALLOCATED_DOWN),
            BudgetChange("c", T0 + Q, D(0), D(50), Reason.REALLOCATED_UP),
        ]

    def test_new_cpo_without_minimum_gets_nothing_nearby_when_nothing_is_free(self) -> None:
        book = make_book(make_cable(100, reserve="0"), [sub("a", 1)], n_blocks=2)
        book.subscriptions["c"] = sub("c", 3)
        resubscribe(book, now=T0 - timedelta(minutes=5), policy=POLICY)
        assert budgets(book, T0) == {"a": D(100)}
        assert budgets(book, T0 + Q) == {"a": D(25), "c": D(75)}

    def test_cut_below_minimum_is_labelled_minimums_infeasible(self) -> None:
        # a alone holds 100 (min 60). b joins with min 60: 120 > 100, so a is cut to 50 < 60.
        book = make_book(make_cable(100, reserve="0"), [sub("a", 1, 60)])
        book.subscriptions["b"] = sub("b", 1, 60)
        ledger = resubscribe(book, now=FAR, policy=POLICY)
        assert budgets(book) == {"a": D(50), "b": D(50)}
        assert ledger.alerts
        cut = next(ch for ch in ledger.changes if ch.cpo_id == "a")
        assert cut.reason is Reason.MINIMUMS_INFEASIBLE


class TestCheckInvariants:
    def test_over_allocation_is_refused(self) -> None:
        book = make_book(make_cable(70), [sub("a", 1)])
        book.blocks[T0].assign("a", D(71))
        with pytest.raises(InvariantViolation, match="exceed available"):
            check_invariants(book)

    def test_negative_budget_is_refused(self) -> None:
        book = make_book(make_cable(70), [sub("a", 1)])
        book.blocks[T0].assign("a", D(-1))
        with pytest.raises(InvariantViolation, match="would be -1"):
            check_invariants(book)

    def test_only_the_given_blocks_are_checked(self) -> None:
        book = make_book(make_cable(70), [sub("a", 1)], n_blocks=2)
        book.blocks[T0 + Q].assign("a", D(71))
        check_invariants(book, [T0])
        with pytest.raises(InvariantViolation):
            check_invariants(book, [T0 + Q])


class TestPendingBookkeeping:
    def test_a_request_met_by_resubscribe_is_no_longer_pending(self) -> None:
        # a holds the whole 1 A (its minimum); b waits for 1. a leaves: b is handed the 1 A afresh.
        book = make_book(make_cable(1, reserve="0"), [sub("a", 0, 1), sub("b", 1)])
        assert request_capacity(book, "b", {T0: D(1)}, now=FAR, policy=POLICY).status is AdjustStatus.REJECTED
        del book.subscriptions["a"]
        resubscribe(book, now=FAR, policy=POLICY)
        assert budgets(book) == {"b": D(1)}
        assert book.blocks[T0].pending == {}

    def test_a_request_met_by_reallocate_is_no_longer_pending(self) -> None:
        # 10 A: b (minimum 5) = 5, a = 5. Down to 2 A (infeasible): b 2, a 0. b asks for 5 and waits.
        # Back to 5 A: restoring b's minimum gives it exactly 5, nothing is left over.
        book = make_book(make_cable(10, reserve="0"), [sub("a", 1), sub("b", 0, 5)])
        reallocate(book, [with_base_load(book, 8)])
        assert request_capacity(book, "b", {T0: D(5)}, now=FAR, policy=POLICY).status is AdjustStatus.REJECTED
        reallocate(book, [with_base_load(book, 5)])
        assert budgets(book) == {"b": D(5)}
        assert book.blocks[T0].pending == {}
