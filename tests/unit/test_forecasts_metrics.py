"""Metrics on tiny examples computed by hand, and their properties on random input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasts import evaluate
from forecasts.metrics import pinball_loss

ACTUAL = np.array([10.0, 20.0, 30.0, 40.0])
P50 = np.array([12.0, 18.0, 30.0, 44.0])
LOWER = np.array([8.0, 15.0, 25.0, 41.0])
UPPER = np.array([14.0, 19.0, 33.0, 46.0])
LIMIT = 50.0


def test_metrics_of_a_hand_computed_example() -> None:
    m = evaluate(ACTUAL, P50, LOWER, UPPER, LIMIT, coverage=0.9)
    # |errors| 2, 2, 0, 4
    assert m["mae"] == pytest.approx(2.0)
    # P1 = 10 + 0.03 * 10 = 10.3, P99 = 30 + 0.97 * 10 = 39.7 (linear interpolation)
    assert m["rmae"] == pytest.approx(2.0 / 29.4)
    # inside: 10 in [8, 14], 30 in [25, 33]; outside: 20 > 19, 40 < 41
    assert m["coverage"] == pytest.approx(0.5)
    # handed out 50 - upper = 36, 31, 17, 4; actual + handed = 46, 51, 47, 44: one block over 50
    assert m["overload_rate"] == pytest.approx(0.25)
    # free 40 + 30 + 20 + 10 = 100, handed 88
    assert m["utilisation"] == pytest.approx(0.88)
    # tau 0.05 on lower: y - q = 2, 5, 5, -1 -> 0.1, 0.25, 0.25, 0.95 -> 0.3875
    # tau 0.5 on p50: 1, 1, 0, 2 -> 1.0; tau 0.95 on upper: y - q = -4, 1, -3, -6 -> 0.2, 0.95, 0.15, 0.3 -> 0.4
    assert m["pinball"] == pytest.approx((0.3875 + 1.0 + 0.4) / 3)


def test_blocks_without_an_actual_value_are_left_out() -> None:
    actual = np.r_[ACTUAL, np.nan]

    def extend(values: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.r_[values, 1000.0]  # a forecast for the missing block, far off
        return out

    m = evaluate(actual, extend(P50), extend(LOWER), extend(UPPER), np.r_[[LIMIT] * 4, 1.0], coverage=0.9)
    assert m == pytest.approx(evaluate(ACTUAL, P50, LOWER, UPPER, LIMIT, coverage=0.9))


def test_a_limit_per_block_and_undefined_metrics() -> None:
    m = evaluate(ACTUAL, P50, LOWER, UPPER, np.array([50.0, 19.0, 50.0, 50.0]), coverage=0.9)
    # block 2: limit 19 < actual 20: nothing handed out, but the cable is over its limit all the same
    assert m["overload_rate"] == pytest.approx(0.25)
    assert m["utilisation"] == pytest.approx((36 + 0 + 17 + 4) / (40 + 0 + 20 + 10))
    flat = evaluate(np.full(3, 5.0), np.full(3, 5.0), np.full(3, 5.0), np.full(3, 5.0), 5.0, coverage=0.9)
    assert np.isnan(flat["rmae"])
    assert np.isnan(flat["utilisation"])
    empty = evaluate(np.array([np.nan]), P50[:1], LOWER[:1], UPPER[:1], LIMIT, coverage=0.9)
    assert all(np.isnan(v) for v in empty.values())


def test_pinball_loss_weights_the_two_sides() -> None:
    assert pinball_loss(np.array([10.0]), np.array([8.0]), 0.9) == pytest.approx(1.8)  # under: tau * 2
    assert pinball_loss(np.array([10.0]), np.array([12.0]), 0.9) == pytest.approx(0.2)  # over: (1 - tau) * 2


values = st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=50)


@settings(max_examples=60, deadline=None)
@given(values, st.floats(0, 2000))
def test_a_perfect_forecast(actual_list: list[float], limit: float) -> None:
    actual = np.array(actual_list)
    m = evaluate(actual, actual, actual, actual, limit, coverage=0.95)
    assert m["mae"] == 0
    assert m["pinball"] == 0
    assert m["coverage"] == 1
    # every block's handed-out capacity is exactly what is free: no overload unless actual > limit
    assert m["overload_rate"] == pytest.approx(np.mean(actual > limit))
    if np.any(actual < limit):
        assert m["utilisation"] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(values, st.floats(-50, 50), st.floats(0, 100), st.floats(0, 2000))
def test_metric_ranges(actual_list: list[float], bias: float, width: float, limit: float) -> None:
    actual = np.array(actual_list)
    p50 = actual + bias
    m = evaluate(actual, p50, p50 - width, p50 + width, limit, coverage=0.9)
    assert m["mae"] == pytest.approx(abs(bias))
    assert 0 <= m["coverage"] <= 1
    assert 0 <= m["overload_rate"] <= 1
    assert m["pinball"] >= 0
    # a band that contains every actual value never overloads a cable whose limit is above the load
    if width >= abs(bias) + 1e-6 and np.all(actual <= limit):  # a margin for rounding
        assert m["coverage"] == 1
        assert m["overload_rate"] == 0
        assert np.isnan(m["utilisation"]) or m["utilisation"] <= 1 + 1e-12
