"""Use cases of DSO engineers: cables, their limits and overrides, and which CPO is on which cable.

Every change that moves capacity reallocates every handed-out block from the current one on, in
the same transaction, so the new limit and the budgets that respect it are committed together.
"""

import dataclasses
from decimal import Decimal
from typing import Any

from service.domain.allocation import BudgetChange, available_capacity, new_block, reallocate, resubscribe
from service.domain.errors import Conflict, NotFound
from service.domain.model import Cable, LimitOverride, Subscription
from service.domain.units import ZERO
from service.store import DecisionRecord, Repository
from service.usecases.context import Context, commit, open_book


def list_cables(ctx: Context) -> list[Cable]:
    with ctx.db.read() as session:
        return Repository(session).cables()


def get_cable(ctx: Context, cable_id: str) -> Cable:
    with ctx.db.read() as session:
        return Repository(session).cable(cable_id)


def create_cable(ctx: Context, cable: Cable, *, actor: str) -> Cable:
    with ctx.db.write() as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        if repo.cable_exists(cable.id):
            raise Conflict(f"cable {cable.id!r} already exists; update it instead of creating it again")
        repo.save_cable(dataclasses.replace(cable, overrides=()), now)
        for override in cable.overrides:  # stored, so the cable and its handed-out blocks agree
            repo.add_override(cable.id, override)
        cable = repo.cable(cable.id)  # as stored: overrides with their ids
        h_start, _ = ctx.horizon(now)
        horizon = open_book(repo, ctx, cable, now, start=h_start, end=h_start)
        message = f"cable {cable.id} created: rated limit {cable.rated_limit} {cable.unit}"
        commit(repo, horizon, DecisionRecord(now, actor, "cable_created", message, cable_id=cable.id))
    return cable


def update_cable(ctx: Context, cable_id: str, changes: dict[str, Any], *, actor: str) -> Cable:
    """Change a cable's properties; capacity changes reallocate its horizon at once."""
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        old = repo.cable(cable_id)
        new = dataclasses.replace(old, **changes)  # validates
        if new.unit != old.unit:
            raise Conflict(
                f"cable {cable_id} has budgets in {old.unit}; its unit cannot change. "
                "Create a new cable in the other unit instead"
            )
        if new == old:
            return old  # nothing to decide, nothing to audit
        repo.save_cable(new, now)
        described = ", ".join(
            f"{name} {getattr(old, name)} -> {getattr(new, name)}"
            for name in changes
            if getattr(old, name) != getattr(new, name)
        )
        message = f"cable {cable_id} updated: {described}"
        reallocate_cable(repo, ctx, new, DecisionRecord(now, actor, "cable_updated", message, cable_id=cable_id))
        return new


def delete_cable(ctx: Context, cable_id: str, *, actor: str) -> None:
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        repo.cable(cable_id)
        subscribers = sorted(repo.subscriptions(cable_id))
        if subscribers:
            raise Conflict(
                f"cable {cable_id} still has subscribers ({', '.join(subscribers)}); remove their subscriptions first"
            )
        repo.delete_cable(cable_id)
        repo.record(DecisionRecord(now, actor, "cable_deleted", f"cable {cable_id} deleted", cable_id=cable_id), [])


def add_override(ctx: Context, cable_id: str, override: LimitOverride, *, actor: str) -> LimitOverride:
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        repo.cable(cable_id)
        saved = repo.add_override(cable_id, override)
        message = (
            f"limit override {saved.id} on cable {cable_id}: {saved.limit} from {saved.start.isoformat()} "
            f"to {saved.end.isoformat()} ({saved.reason})"
        )
        reallocate_cable(
            repo, ctx, repo.cable(cable_id), DecisionRecord(now, actor, "override_added", message, cable_id=cable_id)
        )
        return saved


def remove_override(ctx: Context, cable_id: str, override_id: int, *, actor: str) -> None:
    with ctx.db.write((cable_id,)) as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        repo.cable(cable_id)
        if not repo.delete_override(cable_id, override_id):
            raise NotFound(f"cable {cable_id} has no limit override {override_id}")
        message = f"limit override {override_id} on cable {cable_id} removed"
        decision = DecisionRecord(now, actor, "override_removed", message, cable_id=cable_id)
        reallocate_cable(repo, ctx, repo.cable(cable_id), decision)


def reallocate_cable(
    repo: Repository, ctx: Context, cable: Cable, decision: DecisionRecord, *, deadband: Decimal = ZERO
) -> None:
    """Recompute every block from the current one on from the cable as it is now, and move
    budgets to fit. Every stored block, not just the horizon: a block another writer handed out
    (or a longer horizon did) must not keep an old limit.

    A base load lower than the block's by no more than `deadband` is not taken (a higher one
    always is): forecasts that wobble would otherwise move and push every budget every refresh."""
    now = decision.at
    horizon = open_book(repo, ctx, cable, now, start=ctx.horizon(now)[0], end=None)
    book = horizon.book
    old_starts = sorted(set(book.blocks) - set(horizon.new_starts))
    loads = ctx.base_loads.base_load(repo, cable, old_starts)
    for s in old_starts:
        if ZERO < book.blocks[s].base_load - loads[s] <= deadband:
            loads[s] = book.blocks[s].base_load
    updated = [new_block(cable, s, loads[s]) for s in old_starts]
    ledger = reallocate(book, updated)
    commit(repo, horizon, decision, ledger, touched=old_starts)


# --- subscriptions ------------------------------------------------------------------------------


def list_subscriptions(ctx: Context, cable_id: str) -> list[Subscription]:
    with ctx.db.read() as session:
        repo = Repository(session)
        repo.cable(cable_id)
        return list(repo.subscriptions(cable_id).values())


def get_subscription(ctx: Context, cable_id: str, cpo_id: str) -> Subscription:
    with ctx.db.read() as session:
        repo = Repository(session)
        repo.cable(cable_id)
        return _subscription(repo.subscriptions(cable_id), cable_id, cpo_id)


def _subscription(subs: dict[str, Subscription], cable_id: str, cpo_id: str) -> Subscription:
    if cpo_id not in subs:
        raise NotFound(f"CPO {cpo_id} is not subscribed to cable {cable_id}; add the subscription first")
    return subs[cpo_id]


def subscribe(ctx: Context, sub: Subscription, *, actor: str) -> Subscription:
    """Subscribe a CPO to a cable and re-share the cable's budgets."""
    with ctx.db.write((sub.cable_id,), lock_cpos=(sub.cpo_id,)) as session:
        repo = Repository(session)
        repo.cpo(sub.cpo_id)
        if sub.cpo_id in repo.subscriptions(repo.cable(sub.cable_id).id):
            raise Conflict(
                f"CPO {sub.cpo_id} is already subscribed to cable {sub.cable_id}; "
                "update the subscription instead of adding it again"
            )
        _save_subscription(repo, ctx, sub, actor=actor, verb="added")
    return sub


def update_subscription(
    ctx: Context, cable_id: str, cpo_id: str, changes: dict[str, Any], *, actor: str
) -> Subscription:
    """Change a subscription's weight or minimum; read and written under the cable's lock."""
    with ctx.db.write((cable_id,), lock_cpos=(cpo_id,)) as session:
        repo = Repository(session)
        repo.cable(cable_id)
        old = _subscription(repo.subscriptions(cable_id), cable_id, cpo_id)
        new = dataclasses.replace(old, **changes)  # validates
        if new != old:  # re-sharing for nothing would take back granted requests
            _save_subscription(repo, ctx, new, actor=actor, verb="changed")
    return new


def _save_subscription(repo: Repository, ctx: Context, sub: Subscription, *, actor: str, verb: str) -> None:
    now = ctx.clock()
    cable = repo.cable(sub.cable_id)
    subs = repo.subscriptions(cable.id)
    _check_minimums(cable, before=subs, after={**subs, sub.cpo_id: sub})
    repo.save_subscription(sub)
    message = (
        f"subscription of {sub.cpo_id} to cable {sub.cable_id} {verb}: weight {sub.weight}, "
        f"guaranteed minimum {sub.guaranteed_minimum} {cable.unit}"
    )
    decision = DecisionRecord(now, actor, f"subscription_{verb}", message, cable_id=cable.id, cpo_id=sub.cpo_id)
    changes = _resubscribe(repo, ctx, cable, decision)
    old = subs.get(sub.cpo_id)
    new_backup = old is None or old.guaranteed_minimum != sub.guaranteed_minimum
    if new_backup and sub.cpo_id not in {c.cpo_id for c in changes}:  # owed no push for its budgets
        repo.enqueue_pushes(cable.id, [sub.cpo_id], now)


def unsubscribe(ctx: Context, cable_id: str, cpo_id: str, *, actor: str) -> None:
    with ctx.db.write((cable_id,), lock_cpos=(cpo_id,)) as session:
        now = ctx.clock()  # under the lock
        repo = Repository(session)
        cable = repo.cable(cable_id)
        if cpo_id not in repo.subscriptions(cable_id):
            raise NotFound(f"CPO {cpo_id} is not subscribed to cable {cable_id}")
        repo.delete_subscription(cable_id, cpo_id)
        message = f"subscription of {cpo_id} to cable {cable_id} removed"
        decision = DecisionRecord(now, actor, "subscription_removed", message, cable_id=cable_id, cpo_id=cpo_id)
        _resubscribe(repo, ctx, cable, decision)
        repo.delete_budgets_of(cable_id, cpo_id, since=ctx.horizon(now)[0])


def _check_minimums(cable: Cable, *, before: dict[str, Subscription], after: dict[str, Subscription]) -> None:
    """Guarantees must fit the cable at its rated limit, or they guarantee nothing. A change that
    does not raise their total is always allowed, so a cable whose limit fell can still be fixed."""
    total = sum((s.guaranteed_minimum for s in after.values()), ZERO)
    ceiling = available_capacity(cable.rated_limit, cable.base_load, cable.margin)
    if total > ceiling and total > sum((s.guaranteed_minimum for s in before.values()), ZERO):
        raise Conflict(
            f"guaranteed minimums on cable {cable.id} would total {total} {cable.unit}, but the cable offers "
            f"at most {ceiling} (rated limit - margin - base load); lower the minimums"
        )


def _resubscribe(repo: Repository, ctx: Context, cable: Cable, decision: DecisionRecord) -> list[BudgetChange]:
    """Re-share the cable's budgets; returns the changes, each of which is owed a push."""
    now = decision.at
    horizon = open_book(repo, ctx, cable, now, start=ctx.horizon(now)[0], end=None)
    ledger = resubscribe(horizon.book, now=now, policy=ctx.policy)
    commit(repo, horizon, decision, ledger, touched=list(horizon.book.blocks))
    return [*horizon.hand_out.changes, *ledger.changes]
