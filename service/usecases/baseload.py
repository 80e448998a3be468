"""Where allocation gets each block's base load: the newest forecast while one covers the block,
then the historical peak of the last refresh, then the static value a DSO engineer set.

Never zero by silence: a cable without forecasts keeps the static base load its engineer set,
and the forecast endpoint says which source each block used.
"""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from service.domain.model import Cable
from service.store import Repository


class BaseLoadSource(Protocol):
    """The non-EV load expected on a cable per block, in the cable's unit, read in the caller's transaction."""

    def base_load(self, repo: Repository, cable: Cable, starts: Sequence[datetime]) -> dict[datetime, Decimal]: ...


class Source(StrEnum):
    FORECAST = "forecast"  # P50 plus the recalibrated margin of the newest forecast
    PEAK = "historical_peak"  # no forecast covers the block: the peak base load seen in the history
    STATIC = "static"  # never forecast: the value set on the cable


def base_loads(repo: Repository, cable: Cable, starts: Sequence[datetime]) -> dict[datetime, tuple[Decimal, Source]]:
    found = {s: (upper, Source.FORECAST) for s, upper in repo.forecast_upper(cable.id, starts).items()}
    missing = [s for s in starts if s not in found]
    if missing:
        run = repo.forecast_run(cable.id)
        fallback = (
            (run.peak, Source.PEAK) if run is not None and run.peak is not None else (cable.base_load, Source.STATIC)
        )
        found.update(dict.fromkeys(missing, fallback))
    return found


class ForecastBaseLoad:
    """The default source: forecasts, then the historical peak, then the static value."""

    def base_load(self, repo: Repository, cable: Cable, starts: Sequence[datetime]) -> dict[datetime, Decimal]:
        return {s: load for s, (load, _) in base_loads(repo, cable, starts).items()}
