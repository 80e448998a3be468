"""The allocation rules: how a cable's available capacity becomes budgets per CPO and block.

A `CableBook` holds one cable's blocks, loaded under that cable's lock. The rule functions change
budgets only through `Ledger.set`, so every change carries a `Reason`, and `check_invariants`
runs before anything is saved:

- for every block, the sum of budgets <= available capacity, and no budget is negative;
- capacity taken from one CPO is granted to another only for blocks that start after the notice
  period, so the CPO it was taken from has been told before the block begins.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

from service.domain.errors import InvalidInput, InvariantViolation, NotSubscribed
from service.domain.model import Cable, Subscription
from service.domain.units import ZERO, ceil_grid, floor_grid, to_capacity


class Reason(StrEnum):
    """Why a budget changed. Nothing else may change one."""

    INITIAL_HAND_OUT = "initial_hand_out"  # the block entered the horizon
    REQUEST_GRANTED = "request_granted"  # the CPO asked for more and got (part of) it
    RECLAIMED_UNUSED = "reclaimed_unused"  # taken from a CPO that demonstrably does not use it
    HANDED_BACK = "handed_back"  # the CPO asked for less
    PENDING_SERVED = "pending_request_served"  # freed capacity went to an earlier unmet request
    REALLOCATED_DOWN = "reallocated_down"  # less capacity: scaled down, minimums respected
    MINIMUMS_INFEASIBLE = "minimums_infeasible"  # less capacity than the minimums: proportional cut
    REALLOCATED_UP = "reallocated_up"  # more capacity: minimums restored, then shared by weight
    SUBSCRIPTION_ENDED = "subscription_ended"  # the CPO left the cable


class AdjustStatus(StrEnum):
    ACCEPTED = "Accepted"
    PARTIALLY_ACCEPTED = "PartiallyAccepted"
    REJECTED = "Rejected"


@dataclass(frozen=True, slots=True)
class Policy:
    """Rule parameters that are the DSO's choice, not a cable's property."""

    horizon: timedelta = timedelta(hours=48)
    # Capacity reclaimed from a CPO may go to another only for blocks starting this long from now.
    reclaim_notice: timedelta = timedelta(minutes=15)
    # A CPO keeps its recent peak reported usage times (1 + this share) when others ask for more.
    usage_margin_share: Decimal = Decimal("0.2")
    # How far back reported usage counts as evidence of what a CPO uses.
    usage_lookback: timedelta = timedelta(hours=24)


def available_capacity(limit: Decimal, base_load: Decimal, margin: Decimal) -> Decimal:
    """What a block can hand out: the limit less the base load and the safety margin, at least 0."""
    return max(ZERO, limit - base_load - margin)


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """The unmet part of a request: the CPO still wants `target` in this block."""

    cpo_id: str
    block_start: datetime
    target: Decimal
    requested_at: datetime


@dataclass(slots=True)
class BlockState:
    """One 15-minute block of one cable: what limits it, who holds which budget, who waits."""

    start: datetime
    limit: Decimal
    base_load: Decimal
    margin: Decimal
    budgets: dict[str, Decimal] = field(default_factory=dict)
    pending: dict[str, PendingRequest] = field(default_factory=dict)
    allocated: Decimal = ZERO  # sum of budgets, kept in step by `assign`

    def __post_init__(self) -> None:
        self.allocated = sum(self.budgets.values(), ZERO)

    @property
    def available(self) -> Decimal:
        return available_capacity(self.limit, self.base_load, self.margin)

    @property
    def unallocated(self) -> Decimal:
        return max(ZERO, self.available - self.allocated)

    def assign(self, cpo_id: str, budget: Decimal) -> None:
        self.allocated += budget - self.budgets.get(cpo_id, ZERO)
        self.budgets[cpo_id] = budget

    def drop(self, cpo_id: str) -> None:
        self.allocated -= self.budgets.pop(cpo_id, ZERO)
        self.pending.pop(cpo_id, None)


class BudgetChange(NamedTuple):  # a tuple: decisions can create thousands of these
    cpo_id: str
    block_start: datetime
    old: Decimal
    new: Decimal
    reason: Reason


@dataclass(slots=True)
class Ledger:
    """Collects every budget change of one decision, and the loud alerts it raised."""

    changes: list[BudgetChange] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    def set(self, block: BlockState, cpo_id: str, new: Decimal, reason: Reason) -> None:
        budgets = block.budgets
        old = budgets.get(cpo_id, ZERO)
        if new != old:  # inlined BlockState.assign: this is the hot path of every decision
            budgets[cpo_id] = new
            block.allocated += new - old
            self.changes.append(BudgetChange(cpo_id, block.start, old, new, reason))


@dataclass(slots=True)
class CableBook:
    """One cable's allocation state: enough to apply every rule without further I/O."""

    cable: Cable
    subscriptions: dict[str, Subscription]
    blocks: dict[datetime, BlockState]
    # Peak reported usage per CPO within the policy's lookback; absent = no evidence.
    usage_peak: Mapping[str, Decimal] = field(default_factory=dict)

    def minimum(self, cpo_id: str) -> Decimal:
        sub = self.subscriptions.get(cpo_id)
        return sub.guaranteed_minimum if sub else ZERO


# ---------------------------------------------------------------------------------------------
# Building blocks


def new_block(cable: Cable, start: datetime, base_load: Decimal) -> BlockState:
    return BlockState(start=start, limit=cable.limit_at(start), base_load=base_load, margin=cable.margin)


def hand_out_targets(book: CableBook, available: Decimal) -> tuple[dict[str, Decimal], str | None]:
    """Initial shares of `available`: minimums first, the rest by weight, the reserve kept back.

    Returns the targets and, when the minimums cannot all be met, the alert to record.
    """
    subs = book.subscriptions
    minimums = {cpo: s.guaranteed_minimum for cpo, s in subs.items()}
    total_min = sum(minimums.values(), ZERO)
    distributable = floor_grid(available * (1 - book.cable.reserve_share))
    if total_min <= distributable:
        rest = distributable - total_min
        total_weight = sum((s.weight for s in subs.values()), ZERO)
        if total_weight == 0:
            return dict(minimums), None
        return {cpo: minimums[cpo] + floor_grid(rest * s.weight / total_weight) for cpo, s in subs.items()}, None
    if total_min <= available:
        return dict(minimums), None  # the reserve pays for the guarantees
    alert = (
        f"cable {book.cable.id}: available capacity {available} {book.cable.unit} is below the sum of "
        f"guaranteed minimums {total_min}; budgets cut in proportion to the minimums"
    )
    return {cpo: _proportional(available, m, total_min) for cpo, m in minimums.items()}, alert


def _proportional(whole: Decimal, part: Decimal, total: Decimal) -> Decimal:
    """floor(whole * part / total), exact when part == total."""
    if part == total:
        return floor_grid(whole)
    return floor_grid(whole * part / total)


def _serve_pending(block: BlockState, ledger: Ledger) -> None:
    """Give a block's unallocated capacity to earlier unmet requests, oldest first."""
    if not block.pending:
        return
    for request in sorted(block.pending.values(), key=lambda p: (p.requested_at, p.cpo_id)):
        current = block.budgets.get(request.cpo_id, ZERO)
        grant = min(request.target - current, block.unallocated)
        if grant > 0:
            ledger.set(block, request.cpo_id, current + grant, Reason.PENDING_SERVED)
        if current + max(grant, ZERO) >= request.target:  # served now, or met by another rule before
            del block.pending[request.cpo_id]


def _shrink_to_available(book: CableBook, block: BlockState, ledger: Ledger) -> None:
    """Cut budgets until they fit: above-minimum parts first, proportionally."""
    deficit = block.allocated - block.available
    if deficit <= 0:
        return
    reducible = {cpo: b - min(b, book.minimum(cpo)) for cpo, b in block.budgets.items()}
    total_reducible = sum(reducible.values(), ZERO)
    if total_reducible >= deficit:
        for cpo, room in reducible.items():
            if room > 0:
                cut = min(room, ceil_grid(deficit * room / total_reducible))
                ledger.set(block, cpo, block.budgets[cpo] - cut, Reason.REALLOCATED_DOWN)
        return
    kept = {cpo: min(b, book.minimum(cpo)) for cpo, b in block.budgets.items()}
    total_kept = sum(kept.values(), ZERO)
    for cpo in block.budgets:
        new = _proportional(block.available, kept[cpo], total_kept) if total_kept else ZERO
        ledger.set(block, cpo, min(new, block.budgets[cpo]), Reason.MINIMUMS_INFEASIBLE)
    ledger.alerts.append(
        f"cable {book.cable.id} block {block.start.isoformat()}: available capacity {block.available} "
        f"{book.cable.unit} is below the guaranteed minimums {total_kept}; budgets cut in proportion "
        "to the minimums"
    )


def _grow(book: CableBook, block: BlockState, ledger: Ledger) -> None:
    """Share new headroom: restore minimums, serve waiting requests, then top up by weight."""
    deficits = {
        cpo: sub.guaranteed_minimum - block.budgets.get(cpo, ZERO)
        for cpo, sub in book.subscriptions.items()
        if block.budgets.get(cpo, ZERO) < sub.guaranteed_minimum
    }
    if deficits:
        free = block.unallocated
        total_deficit = sum(deficits.values(), ZERO)
        for cpo, short in deficits.items():
            give = short if total_deficit <= free else _proportional(free, short, total_deficit)
            ledger.set(block, cpo, block.budgets.get(cpo, ZERO) + give, Reason.REALLOCATED_UP)
    _serve_pending(block, ledger)
    pool = floor_grid(block.available * (1 - book.cable.reserve_share)) - block.allocated
    total_weight = sum((s.weight for s in book.subscriptions.values()), ZERO)
    if pool > 0 and total_weight > 0:
        for cpo, sub in book.subscriptions.items():
            extra = floor_grid(pool * sub.weight / total_weight)
            if extra > 0:
                ledger.set(block, cpo, block.budgets.get(cpo, ZERO) + extra, Reason.REALLOCATED_UP)


def check_invariants(book: CableBook, starts: Iterable[datetime] | None = None) -> None:
    """Raise before anything is saved if a block would be promised twice."""
    for start in book.blocks if starts is None else starts:
        block = book.blocks[start]
        for cpo, budget in block.budgets.items():
            if budget < 0:
                raise InvariantViolation(f"budget of {cpo} on {book.cable.id} at {start} would be {budget}")
        if block.allocated > block.available:
            raise InvariantViolation(
                f"cable {book.cable.id} block {start.isoformat()}: budgets {block.allocated} would "
                f"exceed available {block.available}"
            )


def check_blocks_follow_cable(book: CableBook, starts: Iterable[datetime]) -> None:
    """Raise if a block was decided against another limit or margin than the cable has now:
    a reallocation missed it, and its budgets may exceed what the cable can carry."""
    cable = book.cable
    for start in starts:
        block = book.blocks[start]
        if block.limit != cable.limit_at(start) or block.margin != cable.margin:
            raise InvariantViolation(
                f"cable {cable.id} block {start.isoformat()} holds limit {block.limit} and margin "
                f"{block.margin}, but the cable now has {cable.limit_at(start)} and {cable.margin}"
            )


# ---------------------------------------------------------------------------------------------
# The rules


def hand_out(book: CableBook, blocks: Iterable[BlockState]) -> Ledger:
    """Initial hand-out of blocks entering the horizon."""
    ledger = Ledger()
    for block in blocks:
        book.blocks[block.start] = block
        targets, alert = hand_out_targets(book, block.available)
        for cpo, target in targets.items():
            ledger.set(block, cpo, target, Reason.INITIAL_HAND_OUT)
        if alert:
            ledger.alerts.append(f"{alert} (block {block.start.isoformat()})")
    return ledger


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    status: AdjustStatus
    ledger: Ledger
    budgets: dict[datetime, Decimal]  # the requester's budget per requested block, afterwards


def request_capacity(
    book: CableBook,
    cpo_id: str,
    wanted: Mapping[datetime, Decimal],
    *,
    now: datetime,
    policy: Policy,
) -> RequestOutcome:
    """Request more (capacity above the budget) or hand back (below it), per block.

    More comes from unallocated capacity (the reserve included) first, then from budget other
    CPOs demonstrably do not use (largest first), never below their minimum, and only for blocks
    that start after the reclaim notice. What cannot be granted waits as a pending request.
    """
    targets = _valid_targets(book, cpo_id, wanted)
    ledger = Ledger()
    fully, partly, nothing = 0, 0, 0
    reclaim_from = now + policy.reclaim_notice
    keep = _keep_levels(book, cpo_id, policy)
    for start, target in targets.items():
        block = book.blocks[start]
        current = block.budgets.get(cpo_id, ZERO)
        block.pending.pop(cpo_id, None)
        if target <= current:
            ledger.set(block, cpo_id, target, Reason.HANDED_BACK)
            _serve_pending(block, ledger)
            fully += 1
            continue
        need = target - current
        granted = min(need, block.unallocated)
        if granted < need and start >= reclaim_from:
            granted += _reclaim_unused(block, need - granted, keep, ledger)
        if granted:
            ledger.set(block, cpo_id, current + granted, Reason.REQUEST_GRANTED)
        if granted == need:
            fully += 1
        else:
            block.pending[cpo_id] = PendingRequest(cpo_id, start, target, now)
            partly, nothing = (partly + 1, nothing) if granted else (partly, nothing + 1)
    if partly == 0 and nothing == 0:
        status = AdjustStatus.ACCEPTED
    elif fully == 0 and partly == 0:
        status = AdjustStatus.REJECTED
    else:
        status = AdjustStatus.PARTIALLY_ACCEPTED
    budgets = {start: book.blocks[start].budgets.get(cpo_id, ZERO) for start in wanted}
    return RequestOutcome(status, ledger, budgets)


def _valid_targets(book: CableBook, cpo_id: str, wanted: Mapping[datetime, Decimal]) -> dict[datetime, Decimal]:
    """Validate a whole request before anything changes."""
    if cpo_id not in book.subscriptions:
        raise NotSubscribed(f"CPO {cpo_id!r} is not subscribed to cable {book.cable.id!r}")
    targets = {}
    for start, value in wanted.items():
        if start not in book.blocks:
            raise InvalidInput(f"block {start.isoformat()} is outside the allocation horizon")
        try:
            targets[start] = to_capacity(value, "capacity")
        except InvalidInput as exc:  # name the block only when needed: this loop is hot
            raise InvalidInput(f"block {start.isoformat()}: {exc.message}") from None
    return targets


def _keep_levels(book: CableBook, requester: str, policy: Policy) -> dict[str, Decimal]:
    """What each other CPO keeps when capacity is reclaimed: its recent peak usage plus the margin,
    never below its minimum. A CPO that reported no usage is absent: nothing of it is
    demonstrably unused."""
    return {
        cpo: max(book.minimum(cpo), ceil_grid(peak * (1 + policy.usage_margin_share)))
        for cpo, peak in sorted(book.usage_peak.items())  # id order, so ties break the same everywhere
        if cpo != requester and cpo in book.subscriptions
    }


def _reclaim_unused(block: BlockState, need: Decimal, keep: Mapping[str, Decimal], ledger: Ledger) -> Decimal:
    """Take up to `need` from budget above the keep levels, largest unused budget first.

    Largest first disturbs the fewest CPOs: each one cut must be told and re-plan its charging,
    and none loses what it demonstrably uses.
    """
    budgets = block.budgets
    unused = {cpo: budget - level for cpo, level in keep.items() if (budget := budgets.get(cpo, ZERO)) > level}
    taken = ZERO
    while taken < need and unused:
        cpo = max(unused, key=unused.__getitem__)  # ties: the first in id order
        share = min(unused.pop(cpo), need - taken)
        ledger.set(block, cpo, budgets[cpo] - share, Reason.RECLAIMED_UNUSED)
        taken += share
    return taken


def reallocate(book: CableBook, updated: Iterable[BlockState]) -> Ledger:
    """Apply new limits, base loads or margins: shrink what no longer fits, share what was freed."""
    ledger = Ledger()
    for new in updated:
        block = book.blocks[new.start]
        before = block.available
        block.limit, block.base_load, block.margin = new.limit, new.base_load, new.margin
        if block.available < before or block.allocated > block.available:
            _shrink_to_available(book, block, ledger)
        elif block.available > before:
            _grow(book, block, ledger)
    return ledger


def resubscribe(book: CableBook, *, now: datetime, policy: Policy) -> Ledger:
    """Bring budgets in line after a subscription was added, changed or removed.

    A CPO that left loses its budgets at once. Blocks far enough ahead (after the reclaim notice)
    are handed out afresh; sooner blocks only share what is unallocated, since nobody can be told
    in time that their budget shrank.
    """
    ledger = Ledger()
    for block in book.blocks.values():
        for cpo in [c for c in {*block.budgets, *block.pending} if c not in book.subscriptions]:
            ledger.set(block, cpo, ZERO, Reason.SUBSCRIPTION_ENDED)
            block.drop(cpo)
        if block.start >= now + policy.reclaim_notice:
            targets, alert = hand_out_targets(book, block.available)
            ordered = sorted(targets.items(), key=lambda item: item[1] - block.budgets.get(item[0], ZERO))
            for cpo, target in ordered:  # decreases first, so the sum never exceeds available
                current = block.budgets.get(cpo, ZERO)
                if target >= current:
                    reason = Reason.REALLOCATED_UP
                else:  # below a minimum only when the minimums cannot all be met
                    reason = Reason.MINIMUMS_INFEASIBLE if alert else Reason.REALLOCATED_DOWN
                ledger.set(block, cpo, target, reason)
            if alert:
                ledger.alerts.append(f"{alert} (block {block.start.isoformat()})")
            _serve_pending(block, ledger)
        else:
            _shrink_to_available(book, block, ledger)
            _grow(book, block, ledger)
    return ledger
