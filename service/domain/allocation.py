"""The allocation rules: how a cable's available capacity becomes budgets per CPO and block.

A `CableBook` holds one cable's blocks, loaded under that cable's lock. The rule functions change
budgets only through `Ledger.set`, so every change carries a `Reason`, and `check_invariants`
runs before anything is saved:

- for every block, the sum of budgets <= available capacity, and no budget is negative;
- capacity taken from one CPO is granted to another only for blocks that start after the notice
  period, so the CPO it was taken from has been told before the block begins;
- capacity a CPO was told it may use stays reserved (`BlockState.told`, `held`) until it has
  confirmed a lower budget, or the notice period has passed while it was online: a decision never
  raises a budget in a block whose budgets and holds together exceed what is available.
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
    # Both sides call Heartbeat this often; three missed intervals make a peer offline.
    heartbeat_interval: timedelta = timedelta(seconds=60)


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
    # What a CPO may still be using although its budget is lower: the last budget it confirmed,
    # while the lower one is unconfirmed and within the notice period, or while it is offline.
    told: dict[str, Decimal] = field(default_factory=dict)
    allocated: Decimal = ZERO  # sum of budgets, kept in step by `assign` and `Ledger.set`
    held: Decimal = ZERO  # sum of told - budget where positive, kept in step likewise

    def __post_init__(self) -> None:
        self.allocated = sum(self.budgets.values(), ZERO)
        self.held = sum((max(ZERO, t - self.budgets.get(c, ZERO)) for c, t in self.told.items()), ZERO)

    @property
    def available(self) -> Decimal:
        return available_capacity(self.limit, self.base_load, self.margin)

    @property
    def unallocated(self) -> Decimal:
        """What may be granted: available less the budgets and the capacity still held."""
        return max(ZERO, self.available - self.allocated - self.held)

    def grantable(self, cpo_id: str) -> Decimal:
        """What this CPO may be given: the unallocated capacity and what is held for itself."""
        if self.overpromised:
            return ZERO  # nothing may grow until CPOs confirm
        return self.unallocated + self.own_hold(cpo_id)

    @property
    def overpromised(self) -> bool:
        """Capacity fell below what CPOs may still be using: it cannot be helped, only not worsened."""
        return self.allocated + self.held > self.available

    def own_hold(self, cpo_id: str) -> Decimal:
        """What is held for this CPO above its budget: giving it back costs nobody anything."""
        told = self.told.get(cpo_id)
        return _held(told, self.budgets.get(cpo_id, ZERO)) if told is not None else ZERO

    def assign(self, cpo_id: str, budget: Decimal) -> None:
        old = self.budgets.get(cpo_id, ZERO)
        self.allocated += budget - old
        self.budgets[cpo_id] = budget
        if cpo_id in self.told:
            self.held += _held(self.told[cpo_id], budget) - _held(self.told[cpo_id], old)

    def drop(self, cpo_id: str) -> None:
        """Forget a CPO the DSO removed from the cable. What it was told stays held: it may use
        that until it confirms the zero budget pushed to it, or the notice period passes."""
        self.assign(cpo_id, ZERO)
        del self.budgets[cpo_id]
        self.pending.pop(cpo_id, None)

    def release(self, cpo_id: str, told: Decimal | None) -> None:
        """The CPO confirmed `told` (None: its hold expired); what it no longer holds is free."""
        budget = self.budgets.get(cpo_id, ZERO)
        if cpo_id in self.told:
            self.held -= _held(self.told.pop(cpo_id), budget)
        if told is not None:
            self.told[cpo_id] = told
            self.held += _held(told, budget)


def _held(told: Decimal, budget: Decimal) -> Decimal:
    return told - budget if told > budget else ZERO


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
            if block.told and (told := block.told.get(cpo_id)) is not None:
                block.held += _held(told, new) - _held(told, old)
            self.changes.append(BudgetChange(cpo_id, block.start, old, new, reason))


@dataclass(slots=True)
class CableBook:
    """One cable's allocation state: enough to apply every rule without further I/O."""

    cable: Cable
    subscriptions: dict[str, Subscription]
    blocks: dict[datetime, BlockState]
    # Peak reported usage per CPO within the policy's lookback; absent = no evidence.
    usage_peak: Mapping[str, Decimal] = field(default_factory=dict)
    # CPOs silent for three heartbeat intervals: they run on what they were told, so nothing of
    # theirs is reclaimed until they are back.
    offline: frozenset[str] = frozenset()

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


def _serve_pending(block: BlockState, ledger: Ledger, *, from_own_hold: bool = True) -> None:
    """Give a block's unallocated capacity to earlier unmet requests, oldest first; with
    `from_own_hold`, also what is held for the requester itself."""
    if not block.pending:
        return
    for request in sorted(block.pending.values(), key=lambda p: (p.requested_at, p.cpo_id)):
        current = block.budgets.get(request.cpo_id, ZERO)
        room = block.grantable(request.cpo_id) if from_own_hold else block.unallocated
        grant = min(request.target - current, room)
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
    """Share new headroom: restore minimums, serve waiting requests, then top up by weight.

    A CPO below its minimum first gets back what is held for it anyway. The top-up skips CPOs
    that hold more than their budget: they get theirs when they confirm (`release_holds`)."""
    deficits = {
        cpo: sub.guaranteed_minimum - block.budgets.get(cpo, ZERO)
        for cpo, sub in book.subscriptions.items()
        if block.budgets.get(cpo, ZERO) < sub.guaranteed_minimum
    }
    for cpo in [c for c in deficits if block.own_hold(c) > 0 and not block.overpromised]:
        give = min(deficits[cpo], block.own_hold(cpo))
        ledger.set(block, cpo, block.budgets.get(cpo, ZERO) + give, Reason.REALLOCATED_UP)
        if give == deficits[cpo]:
            del deficits[cpo]
        else:
            deficits[cpo] -= give
    if deficits:
        free = block.unallocated
        total_deficit = sum(deficits.values(), ZERO)
        for cpo, short in deficits.items():
            give = short if total_deficit <= free else _proportional(free, short, total_deficit)
            ledger.set(block, cpo, block.budgets.get(cpo, ZERO) + give, Reason.REALLOCATED_UP)
    _serve_pending(block, ledger)
    pool = floor_grid(block.available * (1 - book.cable.reserve_share)) - block.allocated - block.held
    weights = {cpo: sub.weight for cpo, sub in book.subscriptions.items() if block.own_hold(cpo) == 0}
    total_weight = sum(weights.values(), ZERO)
    if pool > 0 and total_weight > 0:
        for cpo, weight in weights.items():
            extra = floor_grid(pool * weight / total_weight)
            if extra > 0:
                ledger.set(block, cpo, block.budgets.get(cpo, ZERO) + extra, Reason.REALLOCATED_UP)


def check_invariants(
    book: CableBook, starts: Iterable[datetime] | None = None, changes: Iterable[BudgetChange] = ()
) -> None:
    """Raise before anything is saved if a block would be promised twice: budgets above what is
    available, or a budget raised (by `changes`) while capacity held for another CPO is needed."""
    raised = {c.block_start for c in changes if c.new > c.old}
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
        if start in raised and block.overpromised:
            raise InvariantViolation(
                f"cable {book.cable.id} block {start.isoformat()}: a budget was raised although budgets "
                f"{block.allocated} and unconfirmed holds {block.held} exceed available {block.available}"
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
    answered: bool = True,
) -> RequestOutcome:
    """Request more (capacity above the budget) or hand back (below it), per block.

    More comes from unallocated capacity (the reserve included) first, then from budget other
    CPOs demonstrably do not use (largest first), never below their minimum, and only for blocks
    that start after the reclaim notice. What cannot be granted waits as a pending request.

    answered: the requester itself receives the answer (OSCP), so what it was told before no
    longer holds; an engineer acting for it (REST, CLI) leaves that hold in place.
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
        if answered:
            block.release(cpo_id, None)  # the answer replaces whatever the requester was told
        if target <= current:
            ledger.set(block, cpo_id, target, Reason.HANDED_BACK)
            _serve_pending(block, ledger)
            fully += 1
            continue
        need = target - current
        granted = min(need, block.unallocated)
        if granted < need and start >= reclaim_from:
            # What was taken is grantable at once only if its holder had not been told it;
            # otherwise it stays held until the holder confirms, and this request waits.
            _reclaim_unused(block, need - granted, keep, ledger)
            granted = min(need, block.unallocated)
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
        if cpo != requester and cpo in book.subscriptions and cpo not in book.offline
    }


def _reclaim_unused(block: BlockState, need: Decimal, keep: Mapping[str, Decimal], ledger: Ledger) -> None:
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
                    new, reason = min(target, current + block.grantable(cpo)), Reason.REALLOCATED_UP  # holds first
                else:  # below a minimum only when the minimums cannot all be met
                    new, reason = target, Reason.MINIMUMS_INFEASIBLE if alert else Reason.REALLOCATED_DOWN
                ledger.set(block, cpo, new, reason)
            if alert:
                ledger.alerts.append(f"{alert} (block {block.start.isoformat()})")
            _serve_pending(block, ledger, from_own_hold=False)  # a hold taken for minimums stays taken
        else:
            _shrink_to_available(book, block, ledger)
            _grow(book, block, ledger)
    return ledger


def release_holds(book: CableBook, confirmed: Mapping[tuple[str, datetime], Decimal | None]) -> Ledger:
    """CPOs confirmed budgets ((cpo, block) -> the value they now know; None: the hold expired).

    What a CPO no longer holds is shared as any other freed capacity: minimums restored, waiting
    requests served oldest first, then the rest by weight.
    """
    freed = []
    for (cpo_id, start), told in confirmed.items():
        block = book.blocks.get(start)
        if block is None:
            continue
        before = block.held
        block.release(cpo_id, told)
        if block.held < before:
            freed.append(start)
    return share_freed(book, freed)


def share_freed(book: CableBook, starts: Iterable[datetime]) -> Ledger:
    """Share capacity that became free in these blocks, as a reallocation upwards does."""
    ledger = Ledger()
    for start in sorted(set(starts)):
        _grow(book, book.blocks[start], ledger)
    return ledger
