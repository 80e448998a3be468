"""Dataset checks: raw measurements in, a regular 15-minute UTC series (NaN where unusable) and a report out.

What is checked, and what happens to it:

- **gaps**: blocks without any reading stay NaN; each run is reported ("12 blocks missing between ...").
- **duplicates**: readings with the same timestamp as another. Equal values are kept once; conflicting
  values are dropped (we cannot know which is right), so their block is NaN unless other readings fill it.
- **out of order**: readings earlier than one received before them (late arrivals). They are sorted
  into place and reported.
- **flat-lines**: a stuck sensor repeats one value; `flatline_blocks` or more equal consecutive block
  means are masked. Real feeder load is never exactly constant for that long (a dead zero is masked too).
- **spikes**: a Hampel-type filter on the block means: a block is masked when its distance from the centred
  9-block rolling median exceeds both `spike_threshold` robust standard deviations (the day-long rolling
  90 % quantile of those distances / 1.645, which stays above 0 on smooth ramps where a median-based MAD
  collapses) and half the day's typical level. Only gross errors (dropouts to zero at peak, unit slips,
  overflow) qualify; on the demo data no base-load block is masked, while on measured load about 0.3 % of
  blocks are: 15-30 minute EV sessions on small cables look exactly like spikes. The centred median
  follows steps and ramps, so switching operations and long EV sessions are not spikes.

Non-finite readings (NaN, inf) count as absent. Nothing is repaired by interpolation: the models
handle NaN, and a filled value would look like evidence that was never measured.
"""

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from forecasts.errors import ForecastError
from forecasts.timegrid import BLOCK, BLOCK_NS, block_range, iso, on_grid, utc_index

FLATLINE_BLOCKS = 8  # 2 h of an identical value
SPIKE_THRESHOLD = 8.0  # robust standard deviations; Gaussian noise never gets there
SPIKE_MIN_SHARE = 0.5  # ... and more than half the day's typical level: only gross errors are spikes
MEDIAN_BLOCKS = 9  # centred: +-1 h
SCALE_BLOCKS = 97  # centred: +-12 h
MAX_SENTENCES = 5  # per kind of issue; the rest is summed up


@dataclass(frozen=True)
class QualityReport:
    """What a dataset check found. Counts are readings (points, duplicates, out_of_order) or 15-min blocks."""

    points: int  # finite readings received
    gaps: int  # runs of blocks without any reading
    duplicates: int  # readings sharing a timestamp with an earlier one
    out_of_order: int  # readings earlier than one received before them
    flatline_points: int  # blocks masked as a stuck sensor
    spikes: int  # blocks masked as spikes
    first: datetime | None  # first and last reading, UTC
    last: datetime | None
    issues: tuple[str, ...] = ()  # human sentences
    blocks: int = 0  # blocks from the first to the last reading
    missing_blocks: int = 0  # blocks without any reading (the sum over the gaps)
    conflicting: int = 0  # timestamps with duplicates of different values (dropped)
    usable_blocks: int = 0  # blocks with a value after masking

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: datetimes as ISO 8601 strings, issues as a list."""
        return {
            "points": self.points,
            "blocks": self.blocks,
            "usable_blocks": self.usable_blocks,
            "gaps": self.gaps,
            "missing_blocks": self.missing_blocks,
            "duplicates": self.duplicates,
            "conflicting": self.conflicting,
            "out_of_order": self.out_of_order,
            "flatline_points": self.flatline_points,
            "spikes": self.spikes,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "issues": list(self.issues),
        }


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of True in a 1-D bool array."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    change = np.diff(padded)
    return np.flatnonzero(change == 1), np.flatnonzero(change == -1)


def _run_sentences(mask: np.ndarray, index: pd.DatetimeIndex, what: str, *, limit: int = MAX_SENTENCES) -> list[str]:
    starts, ends = _runs(mask)
    out = [
        f"{e - s} block{'s' if e - s > 1 else ''} {what} between {iso(index[s])} and {iso(index[e - 1] + BLOCK)}"
        for s, e in zip(starts[:limit], ends[:limit], strict=True)
    ]
    if len(starts) > limit:
        rest = int((ends[limit:] - starts[limit:]).sum())
        out.append(f"... and {len(starts) - limit} more such runs ({rest} blocks {what})")
    return out


def fault_masks(
    values: np.ndarray, *, flatline_blocks: int = FLATLINE_BLOCKS, spike_threshold: float = SPIKE_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Flat-line and spike masks of block values shaped (blocks, cables); NaN is never flagged."""
    if flatline_blocks < 2 or spike_threshold <= 0:
        raise ForecastError("flatline_blocks must be >= 2 and spike_threshold > 0")
    n_blocks, n_cables = values.shape
    finite = ~np.isnan(values)
    # flat-lines: label runs of equal consecutive values per column (NaN != NaN breaks a run)
    starts = np.ones_like(finite)
    starts[1:] = values[1:] != values[:-1]
    run_id = np.cumsum(starts.T.ravel()) - 1  # column by column, so runs never cross columns
    run_len = np.bincount(run_id)[run_id].reshape(n_cables, n_blocks).T
    flat = (run_len >= flatline_blocks) & finite
    # spikes: Hampel filter on what is left after the flat-lines
    frame = pd.DataFrame(np.where(flat, np.nan, values))
    median = frame.rolling(MEDIAN_BLOCKS, center=True, min_periods=MEDIAN_BLOCKS // 2 + 1).median()
    deviation = (frame - median).abs()
    # the 90 % quantile, not the median: on smooth ramps most points ARE their window's median (deviation 0)
    scale = deviation.rolling(SCALE_BLOCKS, center=True, min_periods=MEDIAN_BLOCKS).quantile(0.9) / 1.645
    level = frame.abs().rolling(SCALE_BLOCKS, center=True, min_periods=MEDIAN_BLOCKS).median()
    limit = np.maximum(spike_threshold * scale.to_numpy(), SPIKE_MIN_SHARE * level.to_numpy())
    with np.errstate(invalid="ignore"):
        spikes = (deviation.to_numpy() > limit) & ~flat & finite
    return flat, spikes


def check_history(
    raw: pd.Series, *, flatline_blocks: int = FLATLINE_BLOCKS, spike_threshold: float = SPIKE_THRESHOLD
) -> tuple[pd.Series, QualityReport]:
    """Regularise raw readings to 15-minute block means (UTC, NaN for missing or masked blocks) and report.

    `raw` may be irregular, duplicated or out of order; its index must be tz-aware (else ForecastError).
    The result runs from the block of the first reading to the block of the last one.
    """
    if not isinstance(raw, pd.Series):
        raise ForecastError(f"check_history expects a pandas Series of readings, not {type(raw).__name__}")
    index = utc_index(raw.index, "the measurements")
    try:
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"the measurements must be numbers (A or kW); {exc}") from exc
    keep = np.isfinite(values)
    stamps, values = index.asi8[keep], values[keep]
    if len(values) == 0:
        empty = pd.Series([], index=pd.DatetimeIndex([], tz="UTC", name=raw.index.name), dtype="float64", name=raw.name)
        return empty, QualityReport(0, 0, 0, 0, 0, 0, None, None, ("no measurements",))

    out_of_order = int((stamps[1:] < np.maximum.accumulate(stamps)[:-1]).sum())
    order = np.argsort(stamps, kind="stable")
    stamps, values = stamps[order], values[order]
    unique, first_at = np.unique(stamps, return_index=True)
    duplicates = len(stamps) - len(unique)
    low = np.minimum.reduceat(values, first_at)
    high = np.maximum.reduceat(values, first_at)
    conflicting = low != high
    # a reading per timestamp; conflicting ones are dropped, but still prove the block was measured
    block_of = unique - unique % BLOCK_NS
    origin = int(block_of[0])
    n_blocks = int((block_of[-1] - origin) // BLOCK_NS) + 1
    pos = (block_of - origin) // BLOCK_NS
    good = ~conflicting
    sums = np.bincount(pos[good], weights=low[good], minlength=n_blocks)
    hits = np.bincount(pos[good], minlength=n_blocks)
    received = np.bincount(pos, minlength=n_blocks) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        block_values = np.where(hits > 0, sums / np.maximum(hits, 1), np.nan)

    grid = block_range(pd.Timestamp(origin, tz="UTC"), n_blocks)
    flat, spikes = fault_masks(block_values[:, None], flatline_blocks=flatline_blocks, spike_threshold=spike_threshold)
    flat, spikes = flat[:, 0], spikes[:, 0]
    cleaned = np.where(flat | spikes, np.nan, block_values)

    missing = ~received
    issues = _run_sentences(missing, grid, "missing")
    if duplicates:
        issues.append(
            f"{duplicates} readings repeat a timestamp; {int(conflicting.sum())} timestamps had different values "
            "and were dropped"
        )
    if out_of_order:
        issues.append(f"{out_of_order} readings arrived out of order (sorted by time before use)")
    issues += _run_sentences(flat, grid, f"masked as a flat-line (one value repeated for >= {flatline_blocks} blocks)")
    issues += _run_sentences(spikes, grid, f"masked as spikes (> {spike_threshold:g} robust deviations)")
    starts, _ = _runs(missing)
    report = QualityReport(
        points=len(values),
        gaps=len(starts),
        duplicates=duplicates,
        out_of_order=out_of_order,
        flatline_points=int(flat.sum()),
        spikes=int(spikes.sum()),
        first=pd.Timestamp(int(unique[0]), tz="UTC").to_pydatetime(),
        last=pd.Timestamp(int(unique[-1]), tz="UTC").to_pydatetime(),
        issues=tuple(issues),
        blocks=n_blocks,
        missing_blocks=int(missing.sum()),
        conflicting=int(conflicting.sum()),
        usable_blocks=int((~np.isnan(cleaned)).sum()),
    )
    return pd.Series(cleaned, index=grid.rename(raw.index.name), name=raw.name, dtype="float64"), report


def check_histories(
    raw: pd.DataFrame, *, flatline_blocks: int = FLATLINE_BLOCKS, spike_threshold: float = SPIKE_THRESHOLD
) -> tuple[pd.DataFrame, dict[str, QualityReport]]:
    """check_history for a column per cable. A frame already on the 15-minute grid, sorted and without
    duplicate timestamps (what a server's 15-minute means give) is checked in one vectorised pass; any
    other frame column by column. The result has one grid from the first to the last timestamp."""
    if not isinstance(raw, pd.DataFrame):
        raise ForecastError(f"check_histories expects a DataFrame with a column per cable, not {type(raw).__name__}")
    index = utc_index(raw.index, "the measurements")
    names = [str(c) for c in raw.columns]
    if len(index) == 0 or not (index.is_monotonic_increasing and index.is_unique and on_grid(index)):
        checked = {
            n: check_history(raw.iloc[:, i], flatline_blocks=flatline_blocks, spike_threshold=spike_threshold)
            for i, n in enumerate(names)
        }
        frame = pd.DataFrame({n: c for n, (c, _) in checked.items()}, columns=names)
        if len(frame.index) == 0:
            frame.index = pd.DatetimeIndex([], tz="UTC")
        return frame, {n: r for n, (_, r) in checked.items()}
    grid = block_range(index[0], int((index[-1] - index[0]).value // BLOCK_NS) + 1)
    try:
        values = raw.set_axis(index).reindex(grid).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"the measurements must be numbers (A or kW); {exc}") from exc
    values = np.where(np.isfinite(values), values, np.nan)
    flat, spikes = fault_masks(values, flatline_blocks=flatline_blocks, spike_threshold=spike_threshold)
    cleaned = np.where(flat | spikes, np.nan, values)
    reports = {}
    for i, name in enumerate(names):
        received = ~np.isnan(values[:, i])
        if not received.any():
            reports[name] = QualityReport(0, 0, 0, 0, 0, 0, None, None, ("no measurements",))
            continue
        first, last = (int(k) for k in np.flatnonzero(received)[[0, -1]])
        span = slice(first, last + 1)
        missing, f, sp = ~received[span], flat[span, i], spikes[span, i]
        issues = _run_sentences(missing, grid[span], "missing")
        issues += _run_sentences(
            f, grid[span], f"masked as a flat-line (one value repeated for >= {flatline_blocks} blocks)"
        )
        issues += _run_sentences(sp, grid[span], f"masked as spikes (> {spike_threshold:g} robust deviations)")
        reports[name] = QualityReport(
            points=int(received.sum()),
            gaps=len(_runs(missing)[0]),
            duplicates=0,
            out_of_order=0,
            flatline_points=int(f.sum()),
            spikes=int(sp.sum()),
            first=grid[first].to_pydatetime(),
            last=grid[last].to_pydatetime(),
            issues=tuple(issues),
            blocks=last - first + 1,
            missing_blocks=int(missing.sum()),
            usable_blocks=int((~np.isnan(cleaned[span, i])).sum()),
        )
    return pd.DataFrame(cleaned, index=grid, columns=raw.columns, copy=False), reports


def summary_of(values: np.ndarray, origin: pd.Timestamp) -> QualityReport:
    """A report of block values on the grid from `origin` (NaN = no value): points, gaps, first, last."""
    valid = ~np.isnan(values)
    if not valid.any():
        return QualityReport(0, 0, 0, 0, 0, 0, None, None, ("no measurements",))
    first, last = (int(i) for i in np.flatnonzero(valid)[[0, -1]])
    missing = ~valid[first : last + 1]
    starts, _ = _runs(missing)
    begin = origin + first * BLOCK
    issues: tuple[str, ...] = ()
    if len(starts):  # the index only for the sentences: most cables have no gaps
        issues = tuple(_run_sentences(missing, block_range(begin, last - first + 1), "without a value"))
    return QualityReport(
        points=int(valid.sum()),
        gaps=len(starts),
        duplicates=0,
        out_of_order=0,
        flatline_points=0,
        spikes=0,
        first=begin.to_pydatetime(),
        last=(origin + last * BLOCK).to_pydatetime(),
        issues=issues,
        blocks=last - first + 1,
        missing_blocks=int(missing.sum()),
        usable_blocks=int(valid.sum()),
    )


def base_load_history(measured: pd.Series, ev_usage: pd.Series | None) -> pd.Series:
    """Measured cable load less the EV usage CPOs reported for the same blocks.

    Missing usage counts as 0, which errs on the safe side: the base load then includes that EV load.
    Usage off the block grid is averaged per block first; usage outside the measured blocks is ignored.
    NaN measurements stay NaN.
    """
    if not isinstance(measured, pd.Series):
        raise ForecastError(f"base_load_history expects the measured load as a Series, not {type(measured).__name__}")
    index = utc_index(measured.index, "the measured load")
    base = pd.Series(measured.to_numpy(dtype="float64", na_value=np.nan), index=index, name=measured.name)
    if ev_usage is None or len(ev_usage) == 0:
        return base
    ev_index = utc_index(ev_usage.index, "the EV usage")
    usage = pd.Series(ev_usage.to_numpy(dtype="float64", na_value=np.nan), index=ev_index)
    if not on_grid(ev_index) or not ev_index.is_unique:
        usage = usage.groupby(ev_index.floor("15min")).mean()
    aligned = usage.reindex(index).fillna(0.0).to_numpy(dtype=np.float64)
    return pd.Series(base.to_numpy() - aligned, index=index, name=measured.name)
