"""Base-load forecasts per cable: what each block's base load is and where it comes from, and how
well the forecasts did in their last backtest."""

from dataclasses import asdict
from typing import Any

from service.api.blueprint import Blueprint
from service.api.schemas import ForecastMetricsSchema, ForecastViewSchema
from service.usecases import Context, forecasting


def blueprint(ctx: Context) -> Blueprint:
    blp = Blueprint(
        "forecasts",
        __name__,
        url_prefix="/api/v1",
        description="Base-load forecasts: per block over the horizon, with their source, and backtest metrics.",
    )

    @blp.route("/cables/<cable_id>/forecast", methods=["GET"])
    @blp.response(200, ForecastViewSchema)
    def forecast(cable_id: str) -> dict[str, Any]:
        """The base load of each horizon block, its source, the forecast band and the last refresh

        A block uses the newest forecast that covers it (P50 plus the recalibrated margin), else
        the historical peak base load, else the static base load set on the cable.
        """
        return asdict(forecasting.forecast(ctx, cable_id))

    @blp.route("/cables/<cable_id>/forecast/metrics", methods=["GET"])
    @blp.response(200, ForecastMetricsSchema)
    def metrics(cable_id: str) -> dict[str, Any]:
        """Metrics of the cable's last day-ahead backtest against its baselines (404 if none ran yet)"""
        computed_at, values = forecasting.metrics(ctx, cable_id)
        return {"computed_at": computed_at, "metrics": values}

    return blp
