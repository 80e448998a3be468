"""Forecast and grid metrics over aligned arrays of blocks.

- mae: mean |actual - p50|.
- rmae: mae / (P99 - P1 of actual): scale-free, comparable across cables (OpenSTEF's rMAE).
- pinball: the mean over the lower, median and upper quantiles of the mean pinball loss
  max(tau (y - q), (tau - 1)(y - q)), with tau = (1 - coverage) / 2, 0.5, (1 + coverage) / 2.
- coverage: share of actual values inside [lower, upper].
- overload_rate: share of blocks where actual base load + handed-out capacity > limit, with
  handed-out = max(0, limit - upper): every CPO uses its whole budget.
- utilisation: sum of handed-out / sum of max(0, limit - actual), the physically free capacity.

Blocks without an actual value are left out. A metric without a defined value (no blocks, a flat
actual for rmae, no free capacity for utilisation) is NaN.
"""

import numpy as np

METRICS = ("mae", "rmae", "pinball", "coverage", "overload_rate", "utilisation")


def handed_out(limit: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Capacity handed out to CPOs per block: what the limit leaves above the band."""
    given: np.ndarray = np.maximum(0.0, limit - upper)
    return given


def pinball_loss(actual: np.ndarray, quantile: np.ndarray, tau: float) -> float:
    diff = actual - quantile
    return float(np.mean(np.maximum(tau * diff, (tau - 1.0) * diff)))


def evaluate(
    actual: np.ndarray,
    p50: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    limit: np.ndarray | float,
    *,
    coverage: float,
) -> dict[str, float]:
    """The six metrics (see the module docstring) of one forecast against what happened."""
    actual = np.asarray(actual, dtype=np.float64)
    limits = np.broadcast_to(np.asarray(limit, dtype=np.float64), actual.shape)
    keep = ~np.isnan(actual)
    y, mid, low, high, lim = (
        actual[keep],
        np.asarray(p50, np.float64)[keep],
        np.asarray(lower, np.float64)[keep],
        np.asarray(upper, np.float64)[keep],
        limits[keep],
    )
    if len(y) == 0:
        return dict.fromkeys(METRICS, float("nan"))
    mae = float(np.mean(np.abs(y - mid)))
    spread = float(np.percentile(y, 99) - np.percentile(y, 1))
    tail = (1.0 - coverage) / 2.0
    given = handed_out(lim, high)
    free = float(np.sum(np.maximum(0.0, lim - y)))
    return {
        "mae": mae,
        "rmae": mae / spread if spread > 0 else float("nan"),
        "pinball": (pinball_loss(y, low, tail) + pinball_loss(y, mid, 0.5) + pinball_loss(y, high, 1.0 - tail)) / 3,
        "coverage": float(np.mean((y >= low) & (y <= high))),
        # actual + max(0, limit - upper) > limit, written without the sum that rounds at equality
        "overload_rate": float(np.mean(np.where(lim > high, y > high, y > lim))),
        "utilisation": float(np.sum(given)) / free if free > 0 else float("nan"),
    }
