"""Budget -> limits -> profiles for 1,000 charge points x 96 blocks: target <= 1 s in-process.

Figures, not checks: nothing here asserts a speed. Run with
    .venv/bin/python -m pytest -q -s --benchmarks tests/benchmarks/bench_cpo_profiles.py

One cable, A budget, 1,000 charge points (a fifth with two connectors, a tenth 1-phase, 2% unresponsive)
and about 1,100 sessions, half with a known draw. The budget follows a day curve between 10% and 60% of
the charge points' ratings, so some blocks pause cars and most are shared. Timed: `split_horizon` (96
blocks, hysteresis on), and `plan_profiles` (one ChargePointMaxProfile per charge point).
A naive equal split (budget / sessions, floored to 0.1 A, per block, as Decimal) is timed in the same run
as a yardstick, so the figures can be read as ratios on a noisy machine.
"""

import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from service.cpo.profiles import Budget, ChargePoint, Session, plan_profiles, split_horizon
from service.domain.units import Unit

D = Decimal
Q = timedelta(minutes=15)
T0 = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=3, seconds=20)
N_POINTS, N_BLOCKS, TARGET_S = 1000, 96, 1.0


def make_cable(seed: int = 5) -> tuple[list[ChargePoint], list[Session], list[Budget]]:
    rng = random.Random(seed)
    points: list[ChargePoint] = []
    sessions: list[Session] = []
    for i in range(N_POINTS):
        point = ChargePoint(
            f"cp-{i:04d}",
            "bench",
            D(rng.choice([16, 32])),
            1 if rng.random() < 0.1 else 3,
            connectors=2 if rng.random() < 0.2 else 1,
            protection_a=D(20) if rng.random() < 0.3 else None,
            unresponsive=rng.random() < 0.02,
        )
        points.append(point)
        for connector in range(1, point.connectors + 1):
            if rng.random() < 0.9:
                sessions.append(
                    Session(
                        point.id,
                        connector,
                        rng.choice([1, point.phases]),
                        drawn_a=D(rng.randint(0, 320)).scaleb(-1) if rng.random() < 0.5 else None,
                        previous_limit_a=D(rng.choice([0, 6, 10, 16])),
                        energy_kwh=D(rng.randint(0, 60)),
                    )
                )
    rating_a = sum(p.rating_a for p in points)
    day = [D(0.35 + 0.25 * math.sin(k / N_BLOCKS * 2 * math.pi)) for k in range(N_BLOCKS)]
    budgets = [Budget(T0 + k * Q, (rating_a * share).quantize(D(1)), Unit.AMPERE) for k, share in enumerate(day)]
    return points, sessions, budgets


def naive_equal_split(sessions: list[Session], budgets: list[Budget]) -> dict[datetime, dict[tuple[str, int], Decimal]]:
    keys = [(s.charge_point_id, s.connector_id) for s in sessions]
    result = {}
    for b in budgets:
        share = (b.capacity / len(keys)).quantize(D("0.1"), ROUND_FLOOR)
        result[b.start] = dict.fromkeys(keys, share)
    return result


def best_of(runs: int, work: Callable[[], object]) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(runs):
        began = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - began)
    return best, result


def test_split_and_plan_1000_charge_points_96_blocks() -> None:
    points, sessions, budgets = make_cable()
    split_s, horizon = best_of(5, lambda: split_horizon(budgets, points, sessions))
    assert isinstance(horizon, dict)
    backups = {p.id: D(6) for p in points}
    plan_s, plans = best_of(5, lambda: plan_profiles(points, sessions, horizon, backups, NOW))
    assert isinstance(plans, list)
    naive_s, _ = best_of(5, lambda: naive_equal_split(sessions, budgets))
    naive_s = (naive_s + best_of(5, lambda: naive_equal_split(sessions, budgets))[0]) / 2  # before and after

    paused = sum(1 for limits in horizon.values() for v in limits.values() if v == 0)
    cells = sum(len(limits) for limits in horizon.values())
    periods = sum(len(p.periods) for p in plans)
    total_s = split_s + plan_s
    print(f"\nCPO core: {len(points)} charge points, {len(sessions)} sessions, {len(budgets)} blocks (best of 5)")
    print(f"{'step':<34}{'seconds':>9}{'x naive':>9}")
    for name, seconds in (
        ("split_horizon (hysteresis on)", split_s),
        ("plan_profiles", plan_s),
        ("total", total_s),
        ("baseline: naive equal split", naive_s),
    ):
        print(f"{name:<34}{seconds:>9.3f}{seconds / naive_s:>9.1f}")
    print(f"target {TARGET_S:.1f} s: {'met' if total_s <= TARGET_S else 'MISSED'}")
    print(f"{cells:,} session-blocks, {paused:,} paused; {len(plans):,} profiles, {periods:,} periods")
