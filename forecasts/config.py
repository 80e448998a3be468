"""Settings of the forecasts, validated once when the config is made."""

from dataclasses import dataclass, field
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from forecasts.errors import ForecastError

BLOCKS_PER_DAY = 96
BLOCKS_PER_WEEK = 7 * BLOCKS_PER_DAY
MODELS = ("last_week", "mean_weeks", "gbm")  # simplest first: selection prefers the earlier on a near tie


@dataclass(frozen=True)
class ForecastConfig:
    """How forecasts are made, selected, calibrated and backtested. Units follow the data (A or kW)."""

    horizon_blocks: int = 192  # 48 h ahead
    coverage: float = 0.95  # two-sided band; `upper` is the (1 + coverage) / 2 quantile
    calibration_days: int = 28  # rolling (conformal) recalibration window of recent residuals
    mean_weeks: int = 4  # "mean of the last N weeks' same slot"
    min_history_days: int = 7  # less than this: ForecastError (too short)
    local_tz: str = "Europe/Amsterdam"  # calendar features and the backtest's issue time are local
    issue_time: str = "12:00"  # backtest: day-ahead issue time, local
    # --- additions ---
    holidays: frozenset[date] = field(default_factory=frozenset)  # local dates; a gbm feature
    calibration_stride: int = 3  # residuals on every n-th block of the window: a third of the gbm cost
    margin_buckets: int = 4  # local time-of-day buckets with their own margin (4: 6 h each)
    min_calibration_blocks: int = 96  # fewer residuals than this: the band widens to the historical range
    selection_tolerance: float = 0.02  # a more complex model must beat a simpler one's MAE by this share
    max_gap_share: float = 0.2  # more missing blocks than this in gbm's recent window: a naive model
    gbm_min_fit_days: int = 7  # days of training targets gbm needs before the calibration window
    gbm_max_train_rows: int = 200_000  # rows sampled across all cables for the one global model
    refit_days: int = 7  # backtest: gbm is refit every this many days (never on data after the issue)
    seed: int = 0
    predict_threads: int = 2  # lightgbm training always uses 1 thread: deterministic and no spin-waits

    def __post_init__(self) -> None:
        if not 1 <= self.horizon_blocks <= BLOCKS_PER_WEEK:
            raise ForecastError(
                f"horizon_blocks must be 1..{BLOCKS_PER_WEEK} (at most a week: last_week needs its slot to be "
                f"measured at issue time), got {self.horizon_blocks}"
            )
        if not 0.0 < self.coverage < 1.0:
            raise ForecastError(f"coverage must be between 0 and 1 (0.95 = 95 %), got {self.coverage}")
        for name in ("calibration_days", "mean_weeks", "min_history_days", "calibration_stride", "margin_buckets"):
            if getattr(self, name) < 1:
                raise ForecastError(f"{name} must be at least 1, got {getattr(self, name)}")
        if 24 % self.margin_buckets:
            raise ForecastError(
                f"margin_buckets must divide 24 hours (1, 2, 3, 4, 6, 8, 12, 24), got {self.margin_buckets}"
            )
        if not 0.0 <= self.selection_tolerance < 1.0 or not 0.0 <= self.max_gap_share <= 1.0:
            raise ForecastError("selection_tolerance must be in [0, 1) and max_gap_share in [0, 1]")
        if self.refit_days < 1 or self.gbm_min_fit_days < 1 or self.gbm_max_train_rows < 1000:
            raise ForecastError("refit_days and gbm_min_fit_days must be >= 1, gbm_max_train_rows >= 1000")
        try:
            ZoneInfo(self.local_tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ForecastError(
                f"local_tz {self.local_tz!r} is not a known time zone (e.g. 'Europe/Amsterdam')"
            ) from exc
        self.issue_hour_minute()

    def issue_hour_minute(self) -> tuple[int, int]:
        """`issue_time` as (hour, minute); ForecastError unless it is 'HH:MM' on the 15-minute grid."""
        try:
            hour, minute = (int(part) for part in self.issue_time.split(":"))
        except ValueError:
            hour, minute = -1, -1
        if not (0 <= hour < 24 and 0 <= minute < 60 and minute % 15 == 0):
            raise ForecastError(
                f"issue_time must be 'HH:MM' local on a quarter hour, e.g. '12:00'; got {self.issue_time!r}"
            )
        return hour, minute
