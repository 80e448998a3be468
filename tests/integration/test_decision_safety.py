"""Safety of decisions at the edges: stale clocks, blocks beyond the horizon, constraint races,
failing cables, adopted databases. On SQLite and PostgreSQL (see test_usecases for the grid).
"""

from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text
from test_usecases import H_END, T0, D, F, bq, last_decision, make_cable, standard_grid

from service.domain.allocation import AdjustStatus, BlockState
from service.domain.errors import Conflict, InvalidInput
from service.domain.model import LimitOverride
from service.store import Database, Repository
from service.store.engine import _alembic_config
from service.usecases import Context, audit, capacity, grid


@pytest.fixture
def c1(ctx: Context) -> Context:
    return standard_grid(ctx)


def stored_blocks(ctx: Context) -> dict[datetime, BlockState]:
    """Every block the database holds for c1 from the current one on, beyond any horizon too."""
    with ctx.db.read() as session:
        repo = Repository(session)
        return repo.load_book(repo.cable("c1"), T0, None).blocks


def test_a_limit_change_reaches_blocks_another_writer_handed_out_beyond_its_horizon(
    c1: Context,
    clock: Any,
) -> None:
    # A writer whose clock runs an hour ahead hands out four more blocks beyond our horizon.
    ahead = Context(c1.db, clock=lambda: clock.now + timedelta(hours=1))
    assert capacity.ensure_horizon(ahead, "c1") == 4
    # Our limit change must reach those blocks as well, or their budgets exceed the new limit.
    grid.add_override(c1, "c1", LimitOverride(T0, H_END + timedelta(hours=2), D(40), "joint repair"), actor="eng")
    beyond = [block for start, block in stored_blocks(c1).items() if start >= H_END]
    assert len(beyond) == 4
    for block in beyond:
        assert block.limit == 40
        assert block.allocated <= 40 - 20 - 10


def test_a_shorter_horizon_still_reallocates_every_handed_out_block(c1: Context) -> None:
    short = Context(c1.db, policy=type(c1.policy)(horizon=timedelta(hours=1)), clock=c1.clock)
    grid.update_cable(short, "c1", {"rated_limit": D(60)}, actor="eng")
    blocks = stored_blocks(c1)
    assert len(blocks) == 192
    for block in blocks.values():
        assert block.limit == 60
        assert block.allocated <= 60 - 20 - 10


def test_a_subscription_change_that_changes_nothing_keeps_granted_requests(c1: Context) -> None:
    result = capacity.request(c1, "c1", "a", [bq(F, 30)], actor="a")
    assert result.status is AdjustStatus.ACCEPTED
    decisions = len(audit.decisions(c1, limit=10_000))
    grid.update_subscription(c1, "c1", "a", {}, actor="eng")
    grid.update_subscription(c1, "c1", "a", {"weight": D(1)}, actor="eng")
    grid.update_cable(c1, "c1", {"rated_limit": D(100)}, actor="eng")
    assert len(audit.decisions(c1, limit=10_000)) == decisions
    assert capacity.capacity(c1, "c1", F, F + (F - T0) / 2).blocks[0].budgets["a"] == 30


def test_minimums_above_a_fallen_limit_can_still_be_lowered_but_not_raised(c1: Context) -> None:
    grid.update_cable(c1, "c1", {"rated_limit": D(40)}, actor="eng")  # 10 available < minimums 15
    assert last_decision(c1).severity == "critical"
    grid.update_subscription(c1, "c1", "b", {"weight": D(3)}, actor="eng")
    grid.update_subscription(c1, "c1", "a", {"guaranteed_minimum": D(8)}, actor="eng")
    with pytest.raises(Conflict, match="lower the minimums"):
        grid.update_subscription(c1, "c1", "a", {"guaranteed_minimum": D(9)}, actor="eng")


def test_one_failing_cable_does_not_stop_the_others_from_rolling(c1: Context, clock: Any) -> None:
    grid.create_cable(c1, make_cable("c2"), actor="eng")
    clock.advance(timedelta(minutes=30))

    class Broken:
        def base_load(self, repo: Any, cable: Any, starts: Any) -> dict[Any, D]:
            if cable.id == "c1":
                raise RuntimeError("measurements of c1 unreadable")
            return dict.fromkeys(starts, cable.base_load)

    result = capacity.roll_horizon(Context(c1.db, clock=clock, base_loads=Broken()))
    assert result.handed_out == {"c2": 2}
    assert result.failed == {"c1": "measurements of c1 unreadable"}


def test_a_constraint_violation_is_a_conflict_and_changes_nothing(c1: Context) -> None:
    before = len(audit.decisions(c1, limit=10_000))
    with pytest.raises(Conflict, match="retry"), c1.db.write() as session:
        session.execute(text("INSERT INTO subscriptions VALUES ('c1', 'no-such-cpo', 1, 0)"))
    with pytest.raises(Conflict, match="retry"), c1.db.write() as session:
        session.execute(text("DELETE FROM cpos WHERE id = 'a'"))  # still subscribed: no cascade
    assert len(audit.decisions(c1, limit=10_000)) == before
    assert {s.cpo_id for s in grid.list_subscriptions(c1, "c1")} == {"a", "b"}


def test_reserve_share_and_voltage_are_kept_as_the_database_stores_them(c1: Context) -> None:
    cable = grid.update_cable(c1, "c1", {"reserve_share": D("0.99999"), "voltage_v": D("230.129")}, actor="eng")
    assert (cable.reserve_share, cable.voltage_v) == (D("0.9999"), D("230.12"))
    assert grid.get_cable(c1, "c1") == cable  # and reading it back still works
    with pytest.raises(InvalidInput, match="voltage_v"):
        grid.update_cable(c1, "c1", {"voltage_v": D("0.001")}, actor="eng")


def test_a_database_made_before_migrations_is_adopted(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    with db.engine.begin() as conn:  # the schema init-db made before migrations: revision 0001, unmarked
        command.upgrade(_alembic_config(conn), "0001")
        conn.exec_driver_sql("DROP TABLE alembic_version")
    db.create_schema()
    db.create_schema()
    with db.engine.connect() as conn:
        assert "alembic_version" in inspect(conn).get_table_names()
    db.dispose()
