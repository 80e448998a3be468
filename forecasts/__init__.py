"""Base-load forecasting for gridcap: a pure package (numpy, pandas, LightGBM; no I/O, no web or database).

The base load of a cable is its load without EV charging. Per 15-minute block it is forecast as a
P50 with a band; the service hands out limit - upper (= P50 + the recalibrated margin) to CPOs.

- `check_history` / `check_histories`: raw measurements -> a regular 15-minute UTC series with gaps,
  flat-lines and spikes masked as NaN, plus a `QualityReport`.
- `base_load_history`: measured load less the EV usage CPOs reported.
- `forecast_core` (one cable) / `forecast_many` (a column per cable, vectorised): choose
  last_week, mean_weeks or a global LightGBM model per cable on its recent out-of-sample errors,
  and a conformal band from the same residuals. `select_model` says which model a cable gets.
- `backtest`: a day-ahead rolling-origin backtest with MAE, rMAE, pinball, coverage, overload rate
  and utilisation, beside last_week, mean_weeks and the static limit - historical peak.
- `forecasts.synthetic.demo_measurements`: seeded feeder-level demo data.

Everything is tz-aware (UTC inside; naive input is a ForecastError) and unit-agnostic (A or kW).
"""

from forecasts.backtest import BacktestResult, backtest
from forecasts.config import MODELS, ForecastConfig
from forecasts.core import CableForecast, forecast_core, forecast_many, select_model
from forecasts.errors import ForecastError
from forecasts.metrics import evaluate
from forecasts.quality import QualityReport, base_load_history, check_histories, check_history
from forecasts.timegrid import calendar_features

__all__ = [
    "MODELS",
    "BacktestResult",
    "CableForecast",
    "ForecastConfig",
    "ForecastError",
    "QualityReport",
    "backtest",
    "base_load_history",
    "calendar_features",
    "check_histories",
    "check_history",
    "evaluate",
    "forecast_core",
    "forecast_many",
    "select_model",
]
