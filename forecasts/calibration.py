"""Rolling (split-conformal) recalibration of the forecast band.

The band of a cable is p50 + the empirical quantiles of its own out-of-sample residuals
(actual - p50) over the last `calibration_days`, per local time-of-day bucket (the evening peak is
noisier than the night). A quantile trained once drifts with the season (a nominal 95 % covers
79-92 % the next season); recomputing it every issue from the latest residuals keeps it near nominal.

With n residuals the upper bound is the ceil((n + 1) * (1 + coverage) / 2)-th smallest, the lower
bound the mirror image (the finite-sample conformal rule, never an interpolation that undercovers).
A bucket with fewer than `MIN_PER_BUCKET` residuals uses the cable's pooled residuals.
"""

import numpy as np

MIN_PER_BUCKET = 40  # the 97.5 % conformal quantile needs >= 39 residuals to be finite


def conformal_quantiles(residuals: np.ndarray, coverage: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of `residuals` (NaN ignored): lower and upper conformal bounds and the residual count.
    Rows without residuals get NaN bounds."""
    count = (~np.isnan(residuals)).sum(axis=1)
    if residuals.shape[1] == 0:
        nan = np.full(len(residuals), np.nan)
        return nan, nan.copy(), count
    ordered = np.sort(residuals, axis=1)  # NaN sort last
    tail = (1.0 - coverage) / 2.0
    k_high = np.ceil((count + 1) * (1.0 - tail)).astype(np.int64)
    k_low = count + 1 - k_high  # the mirror rank from the bottom
    k_high = np.clip(k_high, 1, np.maximum(count, 1)) - 1
    k_low = np.clip(k_low, 1, np.maximum(count, 1)) - 1
    rows = np.arange(len(residuals))
    empty = count == 0
    low = np.where(empty, np.nan, ordered[rows, k_low])
    high = np.where(empty, np.nan, ordered[rows, k_high])
    return low, high, count


def bucket_bounds(
    residuals: np.ndarray, buckets: np.ndarray, n_buckets: int, coverage: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounds per (row, bucket) from residuals (rows, m) whose columns belong to `buckets` (m,).
    Returns low (rows, n_buckets), high (rows, n_buckets), total residual count per row."""
    pooled_low, pooled_high, total = conformal_quantiles(residuals, coverage)
    low = np.repeat(pooled_low[:, None], n_buckets, axis=1)
    high = np.repeat(pooled_high[:, None], n_buckets, axis=1)
    for bucket in range(n_buckets):
        columns = buckets == bucket
        if not columns.any():
            continue
        b_low, b_high, count = conformal_quantiles(residuals[:, columns], coverage)
        enough = count >= MIN_PER_BUCKET
        low[enough, bucket] = b_low[enough]
        high[enough, bucket] = b_high[enough]
    return low, high, total
