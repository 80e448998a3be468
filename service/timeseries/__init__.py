"""The timeseries layer: measured cable load in, results for monitoring out.

Back-ends (settings.timeseries_backend):
  * embedded: a SQLite file (timeseries_path); the default, for `make run`.
  * influx1:  InfluxDB's v1 HTTP API (line protocol + InfluxQL) with `requests`. InfluxDB 1.x, and
              2.x/3.x through their v1 compatibility endpoints (a DBRP mapping names the database).
              Tested live against InfluxDB 1.6.7.
  * influx2:  InfluxDB 2.x through `influxdb-client` (Flux). Tested on recorded responses only.

Common behaviour:
  * Times are tz-aware (a naive datetime or index raises TimeseriesError), UTC inside, and written as
    integer timestamps computed here, never converted by a client library.
  * read_load(cable_ids, start, end): start and end on quarter hours. A DataFrame indexed by every
    UTC block start in [start, end) (name "time"), one float column per cable id in the order given
    (duplicates dropped), NaN where a cable has no data in a block; the 15-minute means are computed
    by the server. With a phase tag the per-phase means of a block are combined: A (or any unit with
    highest_phase=True) -> the highest phase (the limit holds per phase), KW -> the sum of the
    phases; a block missing a phase the cable has elsewhere is missing (NaN), never low.
  * read_raw(cable_id, start, end, *, phase=None): the raw points in [start, end), time-sorted, UTC
    index. Without a phase tag `phase` must be None. With one, phase="L1" gives that phase's points;
    phase=None gives all phases combined per timestamp by the rule above (A: max, KW: sum).
  * write_load(cable_id, values, *, phase=None): values in layout.unit, tz-aware index; NaN values are
    skipped; returns the points written. A point with the same series and time replaces the old one.
  * write_points / read_points: result points (InfluxDB semantics: the same series and time again
    merges the fields, the new ones win).
  * Cable ids, tag values and keys may hold spaces, commas, quotes, '=' and backslashes. InfluxDB line
    protocol cannot spell a backslash right before a space, comma or '=' or at the end, nor a line
    break; such names are refused with TimeseriesError by the InfluxDB back-ends.
"""

from service.settings import Settings
from service.timeseries.base import (
    LoadLayout,
    Point,
    TimeseriesError,
    TimeseriesRejected,
    TimeseriesStore,
    TimeseriesUnavailable,
)

__all__ = [
    "LoadLayout",
    "Point",
    "TimeseriesError",
    "TimeseriesRejected",
    "TimeseriesStore",
    "TimeseriesUnavailable",
    "build_timeseries",
]


def build_timeseries(settings: Settings) -> TimeseriesStore:
    """The back-end named by settings.timeseries_backend; nothing is contacted until it is used."""
    backend = settings.timeseries_backend
    if backend == "embedded":
        from service.timeseries.embedded import EmbeddedStore

        return EmbeddedStore.from_settings(settings)
    if backend == "influx1":
        from service.timeseries.influx1 import Influx1Store

        return Influx1Store.from_settings(settings)
    if backend == "influx2":
        from service.timeseries.influx2 import Influx2Store

        return Influx2Store.from_settings(settings)
    raise TimeseriesError(f"timeseries_backend must be embedded, influx1 or influx2, got {backend!r}")
