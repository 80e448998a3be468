"""The Grafana dashboards, built from the names in `service.monitoring.names` and the settings'
defaults, and written to grafana/dashboards/ as JSON.

    python -m service.monitoring.dashboards [DIRECTORY]

rewrites the checked-in files; a test fails when they differ from what `build` returns, so the
dashboards cannot query a name the service no longer writes. Every query is raw InfluxQL against the
datasource provisioned with uid `DATASOURCE_UID` (grafana/provisioning/datasources/gridcap.yaml).
"""

# ruff: noqa: S608 - InfluxQL built from the fixed names in `names` and settings, for Grafana to run

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.domain.allocation import Reason
from service.monitoring.names import (
    ALLOCATION,
    BUDGET,
    CAPACITY,
    CPO_STATE,
    FORECAST,
    FORECAST_QUALITY,
    JOB,
    LIMIT_CHANGE,
    OSCP,
    REQUESTS,
    USAGE,
)
from service.settings import ConfigError, Settings, load_settings

Json = dict[str, Any]

DATASOURCE_UID = "gridcap-influxdb"
DATASOURCE: Json = {"type": "influxdb", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
BLOCK_INTERVAL = "15m"  # no bucket is finer than a capacity block
DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"

OVERVIEW_UID = "gridcap-grid-overview"
CABLE_DETAIL_UID = "gridcap-cable-detail"
FORECAST_QUALITY_UID = "gridcap-forecast-quality"
CPO_VIEW_UID = "gridcap-cpo-view"
SERVICE_HEALTH_UID = "gridcap-service-health"

CABLE_VAR = "$cable"
CPO_VAR = "$cpo"
MINUTE_INTERVAL = "1m"  # the operational measurements are per minute
DAY_INTERVAL = "1d"  # forecast quality is per day
PUSH = "UpdateCableCapacityForecast"
ISSUED_AT_VAR = "$issued_at"


def q(name: str) -> str:
    """An InfluxQL identifier, double-quoted."""
    return '"' + name.replace('"', '\\"') + '"'


# --- panel building blocks ---------------------------------------------------------------------


def target(ref_id: str, query: str, *, alias: str = "", table: bool = False) -> Json:
    result: Json = {
        "datasource": DATASOURCE,
        "query": query,
        "rawQuery": True,
        "refId": ref_id,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        result["alias"] = alias
    return result


def grid_pos(x: int, y: int, w: int, h: int) -> Json:
    return {"h": h, "w": w, "x": x, "y": y}


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def panel(
    panel_id: int,
    kind: str,
    title: str,
    pos: Json,
    targets: Sequence[Json],
    *,
    description: str = "",
    unit: str = "",
    custom: Json | None = None,
    overrides: Sequence[Json] = (),
    options: Json | None = None,
    extra: Json | None = None,
    interval: str = BLOCK_INTERVAL,
) -> Json:
    defaults: Json = {"custom": custom or {}}
    if unit:
        defaults["unit"] = unit
    result: Json = {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "gridPos": pos,
        "id": panel_id,
        "interval": interval,
        "options": options or {},
        "targets": list(targets),
        "title": title,
        "type": kind,
    }
    result.update(extra or {})
    return result


def timeseries_custom(*, stacked: bool = False, fill: int = 0, bars: bool = False) -> Json:
    return {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": fill,
        "lineInterpolation": "stepAfter",
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
    }


def timeseries_options() -> Json:
    return {
        "legend": {"calcs": ["max", "min"], "displayMode": "table", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def by_name(name: str, *properties: tuple[str, Any]) -> Json:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key, "value": value} for key, value in properties],
    }


def query_variable(name: str, label: str, query: str, *, sort: int, description: str) -> Json:
    """A template variable from a query, one value at a time (sort 1: alphabetical, 2: descending)."""
    return {
        "current": {},
        "datasource": DATASOURCE,
        "definition": query,
        "description": description,
        "hide": 0,
        "includeAll": False,
        "label": label,
        "multi": False,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,  # on time range change: new cables and forecasts appear
        "regex": "",
        "skipUrlSync": False,
        "sort": sort,
        "type": "query",
    }


def dashboard(
    uid: str,
    title: str,
    *,
    description: str,
    time_from: str,
    time_to: str,
    panels: list[Json],
    variables: list[Json],
    annotations: Sequence[Json] = (),
    refresh: str = "5m",
) -> Json:
    return {
        "annotations": {"list": list(annotations)},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "tags": ["gridcap"],
                "title": "gridcap dashboards",
                "type": "dashboards",
            }
        ],
        "panels": panels,
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["gridcap"],
        "templating": {"list": variables},
        "time": {"from": time_from, "to": time_to},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --- queries -----------------------------------------------------------------------------------


class Queries:
    """The InfluxQL the dashboards run, with the measurement names a deployment's settings give."""

    def __init__(self, settings: Settings) -> None:
        prefix = settings.results_prefix
        self.forecast = q(FORECAST.measurement(prefix))
        self.capacity = q(CAPACITY.measurement(prefix))
        self.budget = q(BUDGET.measurement(prefix))
        self.usage = q(USAGE.measurement(prefix))
        self.quality = q(FORECAST_QUALITY.measurement(prefix))
        self.limit_change = q(LIMIT_CHANGE.measurement(prefix))
        self.oscp = q(OSCP.measurement(prefix))
        self.allocation = q(ALLOCATION.measurement(prefix))
        self.requests = q(REQUESTS.measurement(prefix))
        self.cpo_state = q(CPO_STATE.measurement(prefix))
        self.job = q(JOB.measurement(prefix))
        self.coverage_target = float(settings.forecast_coverage)
        self.local_tz = settings.forecast_local_tz  # the backtests' days are local days
        self.load = q(settings.load_measurement)
        self.load_field = q(settings.load_field)
        self.load_cable = q(settings.load_cable_tag)
        self.load_phase = q(settings.load_phase_tag) if settings.load_phase_tag else ""
        self.load_unit = "kwatt" if settings.load_unit.upper() == "KW" else "amp"

    @staticmethod
    def cable_is(tag: str = CAPACITY.cable) -> str:
        return f"{q(tag)} = '{CABLE_VAR}'"

    @staticmethod
    def cpo_is(tag: str = CPO_STATE.cpo) -> str:
        return f"{q(tag)} = '{CPO_VAR}'"

    def cpos(self) -> str:
        return f"SHOW TAG VALUES FROM {self.cpo_state} WITH KEY = {q(CPO_STATE.cpo)}"

    def limit_changes(self) -> str:
        lc = LIMIT_CHANGE
        return (
            f"SELECT {q(lc.text)}, {q(lc.action)}, {q(lc.actor)} FROM {self.limit_change} "
            f"WHERE {self.cable_is(lc.cable)} AND $timeFilter"
        )

    def messages(self, where: str, by: str) -> str:
        """OSCP messages per bucket, one series per value of the tag `by`."""
        return (
            f"SELECT sum({q(OSCP.count)}) FROM {self.oscp} WHERE {where} AND $timeFilter "
            f"GROUP BY time($__interval), {q(by)} fill(0)"
        )

    def loading(self) -> str:
        """Per block: base load and budgets together, in % of the effective limit."""
        c = CAPACITY
        return (
            f"SELECT ({q(c.base_load)} + {q(c.allocated)}) / {q(c.limit)} * 100 AS {q('loading')}, "
            f"{q(c.available)}, {q(c.pending)} FROM {self.capacity} WHERE $timeFilter GROUP BY {q(c.cable)}"
        )

    def cables(self) -> str:
        return f"SHOW TAG VALUES FROM {self.capacity} WITH KEY = {q(CAPACITY.cable)}"

    def issues(self) -> str:
        return (
            f"SHOW TAG VALUES FROM {self.forecast} WITH KEY = {q(FORECAST.issued_at)} "
            f"WHERE {self.cable_is(FORECAST.cable)}"
        )

    def measured(self) -> str:
        group = f"time($__interval), {self.load_phase}" if self.load_phase else "time($__interval)"
        return (
            f"SELECT mean({self.load_field}) AS {q('measured')} FROM {self.load} "
            f"WHERE {self.load_cable} = '{CABLE_VAR}' AND $timeFilter GROUP BY {group} fill(none)"
        )


def cable_variable(queries: Queries) -> Json:
    return query_variable(
        "cable", "Cable", queries.cables(), sort=1, description="The cables the service writes capacity for."
    )


# --- the dashboards ----------------------------------------------------------------------------


def grid_overview(queries: Queries) -> Json:
    c = CAPACITY
    loading_unit = [("unit", "percent"), ("thresholds", thresholds((None, "green"), (90, "orange"), (100, "red")))]
    detail_link = {
        "targetBlank": False,
        "title": "Cable detail",
        "url": f"/d/{CABLE_DETAIL_UID}?var-cable=${{__data.fields.cable}}&${{__url_time_range}}",
    }
    ranking = panel(
        1,
        "table",
        "Cables ranked by peak loading",
        grid_pos(0, 0, 14, 10),
        [
            target(
                "A",
                f"SELECT max({q('loading')}) AS {q('peak loading')}, min({q(c.available)}) AS {q('least available')}, "
                f"max({q(c.pending)}) AS {q('most pending')} FROM ({queries.loading()}) "
                f"WHERE $timeFilter GROUP BY {q(c.cable)}",
                table=True,
            )
        ],
        description="Per cable over the time range (by default the next 24 h): the highest base load plus "
        "allocated budgets as a share of the effective limit, the least capacity available to CPOs (in the "
        "cable's unit) and the most requests waiting for capacity in any block. Click a cable for its detail.",
        overrides=[
            by_name("peak loading", *loading_unit, ("custom.cellOptions", {"type": "color-background"})),
            by_name("cable", ("links", [detail_link])),
        ],
        options={"showHeader": True, "sortBy": [{"desc": True, "displayName": "peak loading"}]},
        extra={"transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]},
    )
    congested = panel(
        2,
        "bargauge",
        "Congested blocks",
        grid_pos(14, 0, 10, 10),
        [
            target(
                "A",
                f"SELECT count({q(c.congested)}) AS {q('congested blocks')} FROM {queries.capacity} "
                f"WHERE {q(c.congested)} = true AND $timeFilter GROUP BY {q(c.cable)}",
                alias="$tag_cable",
            )
        ],
        description="Blocks in the time range where requests wait for capacity or less is available than the "
        "CPOs' guaranteed minimums. A cable without congested blocks is not listed.",
        unit="none",
        options={
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["sum"], "fields": "", "values": False},
            "showUnfilled": True,
        },
    )
    congested["fieldConfig"]["defaults"]["thresholds"] = thresholds((None, "green"), (1, "orange"), (8, "red"))
    loading = panel(
        3,
        "timeseries",
        "Loading versus limit per cable",
        grid_pos(0, 10, 24, 9),
        [
            target(
                "A",
                f"SELECT max({q('loading')}) FROM ({queries.loading()}) WHERE $timeFilter "
                f"GROUP BY time($__interval), {q(c.cable)} fill(none)",
                alias="$tag_cable",
            )
        ],
        description="Base load plus allocated budgets in % of the effective limit, per block; above 100 % the "
        "cable is committed beyond its limit.",
        unit="percent",
        custom={**timeseries_custom(), "thresholdsStyle": {"mode": "line"}},
        options=timeseries_options(),
    )
    loading["fieldConfig"]["defaults"]["thresholds"] = thresholds((None, "green"), (100, "red"))
    utilisation = panel(
        4,
        "table",
        "Budget utilisation per cable, last 24 h",
        grid_pos(0, 19, 24, 8),
        [
            target(
                "A",
                f"SELECT sum({q(USAGE.usage)}) AS {q('usage')} FROM {queries.usage} WHERE $timeFilter "
                f"GROUP BY {q(USAGE.cable)}",
                table=True,
            ),
            target(
                "B",
                f"SELECT sum({q(BUDGET.budget)}) AS {q('budget')} FROM {queries.budget} WHERE $timeFilter "
                f"GROUP BY {q(BUDGET.cable)}",
                table=True,
            ),
        ],
        description="The EV load the CPOs reported against the budgets they held, summed over the blocks of the "
        "last 24 h (cable's unit x blocks); utilisation is their ratio. Low utilisation: capacity handed out "
        "but not used.",
        overrides=[
            by_name(
                "utilisation",
                ("unit", "percentunit"),
                ("custom.cellOptions", {"mode": "basic", "type": "gauge"}),
                ("max", 1),
                ("min", 0),
            )
        ],
        options={"showHeader": True, "sortBy": [{"desc": True, "displayName": "utilisation"}]},
        extra={
            "timeFrom": "24h",
            "transformations": [
                {"id": "merge", "options": {}},
                {
                    "id": "calculateField",
                    "options": {
                        "alias": "utilisation",
                        "binary": {"left": "usage", "operator": "/", "right": "budget"},
                        "mode": "binary",
                        "reduce": {"reducer": "sum"},
                    },
                },
                {"id": "organize", "options": {"excludeByName": {"Time": True}}},
            ],
        },
    )
    return dashboard(
        OVERVIEW_UID,
        "gridcap: grid overview",
        description="Which cables are congested or close to their limit over the next 24 h, and whether CPOs use the "
        "budgets they hold.",
        time_from="now",
        time_to="now+24h",
        panels=[ranking, congested, loading, utilisation],
        variables=[],
    )


def cable_detail(queries: Queries) -> Json:
    c, f = CAPACITY, FORECAST
    cable = queries.cable_is()
    band = [
        by_name("forecast upper", ("custom.fillBelowTo", "forecast lower"), ("custom.lineWidth", 0)),
        by_name("forecast lower", ("custom.lineWidth", 0)),
        by_name("forecast upper", ("custom.fillOpacity", 20), ("color", {"fixedColor": "blue", "mode": "fixed"})),
        by_name("forecast p50", ("color", {"fixedColor": "blue", "mode": "fixed"})),
        by_name("effective limit", ("color", {"fixedColor": "red", "mode": "fixed"}), ("custom.lineWidth", 2)),
        by_name("base load in use", ("color", {"fixedColor": "orange", "mode": "fixed"})),
    ]
    forecast_panel = panel(
        1,
        "timeseries",
        "Base-load forecast and effective limit: $cable",
        grid_pos(0, 0, 24, 10),
        [
            target(
                "A",
                f"SELECT last({q(c.limit)}) AS {q('effective limit')}, last({q(c.base_load)}) AS "
                f"{q('base load in use')} FROM {queries.capacity} WHERE {cable} AND $timeFilter "
                "GROUP BY time($__interval) fill(none)",
                alias="$col",
            ),
            target(
                "B",
                f"SELECT last({q(f.p50)}) AS {q('forecast p50')}, last({q(f.lower)}) AS {q('forecast lower')}, "
                f"last({q(f.upper)}) AS {q('forecast upper')} FROM {queries.forecast} "
                f"WHERE {queries.cable_is(f.cable)} AND {q(f.issued_at)} = '{ISSUED_AT_VAR}' AND $timeFilter "
                "GROUP BY time($__interval) fill(none)",
                alias="$col",
            ),
        ],
        description="The forecast issued at $issued_at (p50 and its band) in the cable's unit, the base load "
        "allocation uses (the band's upper bound where a forecast covers the block) and the effective limit.",
        custom=timeseries_custom(),
        overrides=band,
        options=timeseries_options(),
    )
    measured = panel(
        2,
        "timeseries",
        "Measured load: $cable",
        grid_pos(0, 10, 12, 8),
        [target("A", queries.measured(), alias="$col $tag_phase" if queries.load_phase else "$col")],
        description="The load measured on the cable, as the measurements arrive (unit of the load_unit setting).",
        unit=queries.load_unit,
        custom=timeseries_custom(),
        options=timeseries_options(),
    )
    available = panel(
        3,
        "timeseries",
        "Available capacity: $cable",
        grid_pos(12, 10, 12, 8),
        [
            target(
                "A",
                f"SELECT last({q(c.available)}) AS {q('available')}, last({q(c.allocated)}) AS {q('allocated')}, "
                f"last({q(c.unallocated)}) AS {q('unallocated')} FROM {queries.capacity} WHERE {cable} AND "
                "$timeFilter GROUP BY time($__interval) fill(none)",
                alias="$col",
            )
        ],
        description="What the CPOs can get (limit minus base load and margin), how much of it is allocated as "
        "budgets and what is still unallocated, in the cable's unit.",
        custom=timeseries_custom(),
        options=timeseries_options(),
    )
    budgets = panel(
        4,
        "timeseries",
        "Budgets per CPO (stacked): $cable",
        grid_pos(0, 18, 12, 8),
        [
            target(
                "A",
                f"SELECT last({q(BUDGET.budget)}) FROM {queries.budget} WHERE {queries.cable_is(BUDGET.cable)} "
                f"AND $timeFilter GROUP BY time($__interval), {q(BUDGET.cpo)} fill(none)",
                alias="$tag_cpo",
            )
        ],
        description="The budget each CPO holds per block, stacked: the top is what is allocated.",
        custom=timeseries_custom(stacked=True, fill=60),
        options=timeseries_options(),
    )
    usage = panel(
        5,
        "timeseries",
        "Reported EV usage per CPO (stacked): $cable",
        grid_pos(12, 18, 12, 8),
        [
            target(
                "A",
                f"SELECT last({q(USAGE.usage)}) FROM {queries.usage} WHERE {queries.cable_is(USAGE.cable)} "
                f"AND $timeFilter GROUP BY time($__interval), {q(USAGE.cpo)} fill(none)",
                alias="$tag_cpo",
            )
        ],
        description="The average EV load each CPO reported per block, stacked.",
        custom=timeseries_custom(stacked=True, fill=60),
        options=timeseries_options(),
    )
    stat_options = {
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["min"], "fields": "", "values": False},
        "textMode": "auto",
    }
    least = panel(
        6,
        "stat",
        "Least available",
        grid_pos(0, 26, 8, 4),
        [
            target(
                "A",
                f"SELECT min({q(c.available)}) FROM {queries.capacity} WHERE {cable} AND $timeFilter",
                alias="least available",
            )
        ],
        description="The least capacity available to CPOs in any block of the time range.",
        options=stat_options,
    )
    least["fieldConfig"]["defaults"]["thresholds"] = thresholds((None, "red"), (0, "orange"), (10, "green"))
    pending = panel(
        7,
        "stat",
        "Most requests pending",
        grid_pos(8, 26, 8, 4),
        [
            target(
                "A",
                f"SELECT max({q(c.pending)}) FROM {queries.capacity} WHERE {cable} AND $timeFilter",
                alias="most pending",
            )
        ],
        description="The most requests waiting for capacity in any block of the time range.",
        options={**stat_options, "reduceOptions": {"calcs": ["max"], "fields": "", "values": False}},
    )
    pending["fieldConfig"]["defaults"]["thresholds"] = thresholds((None, "green"), (1, "red"))
    margin = panel(
        8,
        "stat",
        "Margin",
        grid_pos(16, 26, 8, 4),
        [
            target(
                "A",
                f"SELECT last({q(c.margin)}) FROM {queries.capacity} WHERE {cable} AND $timeFilter",
                alias="margin",
            )
        ],
        description="The safety margin kept free below the limit, in the cable's unit.",
        options={
            **stat_options,
            "colorMode": "none",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
    )
    issued = query_variable(
        "issued_at",
        "Forecast issued at",
        queries.issues(),
        sort=2,
        description="The forecast shown; the latest by default.",
    )
    return dashboard(
        CABLE_DETAIL_UID,
        "gridcap: cable detail",
        description="One cable: measured load, the base-load forecast with its band, the effective limit, the capacity "
        "available to CPOs, their budgets and the EV usage they reported.",
        time_from="now-24h",
        time_to="now+48h",
        panels=[forecast_panel, measured, available, budgets, usage, least, pending, margin],
        variables=[cable_variable(queries), issued],
        annotations=[limit_change_annotation(queries)],
    )


def limit_change_annotation(queries: Queries) -> Json:
    """A marker wherever the cable's limit changed (rated limit or a temporary override), as audited."""
    return {
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "name": "Limit changes",
        "query": queries.limit_changes(),
        "tagsColumn": f"{LIMIT_CHANGE.action},{LIMIT_CHANGE.actor}",
        "textColumn": LIMIT_CHANGE.text,
    }


def forecast_quality(queries: Queries) -> Json:
    f = FORECAST
    versus = panel(
        1,
        "timeseries",
        "Measured load versus forecast: $cable",
        grid_pos(0, 0, 24, 10),
        [
            target("A", queries.measured(), alias="$col"),
            target(
                "B",
                f"SELECT mean({q(f.p50)}) AS {q('forecast p50')}, min({q(f.lower)}) AS {q('forecast lower')}, "
                f"max({q(f.upper)}) AS {q('forecast upper')} FROM {queries.forecast} "
                f"WHERE {queries.cable_is(f.cable)} AND $timeFilter GROUP BY time($__interval) fill(none)",
                alias="$col",
            ),
        ],
        description="The measured load (right axis, unit of the load_unit setting) against every forecast "
        "issued for the same blocks: the mean p50 and the widest band, in the cable's unit. The measured load "
        "should stay inside the band (after converting kW to the cable's unit where they differ).",
        custom=timeseries_custom(),
        overrides=[
            by_name("measured", ("custom.axisPlacement", "right"), ("color", {"fixedColor": "red", "mode": "fixed"})),
            by_name("forecast upper", ("custom.fillBelowTo", "forecast lower"), ("custom.fillOpacity", 20)),
        ],
        options=timeseries_options(),
    )
    revisions = panel(
        2,
        "timeseries",
        "Forecast p50 per issue: $cable",
        grid_pos(0, 10, 24, 9),
        [
            target(
                "A",
                f"SELECT mean({q(f.p50)}) FROM {queries.forecast} WHERE {queries.cable_is(f.cable)} "
                f"AND $timeFilter GROUP BY time($__interval), {q(f.issued_at)} fill(none)",
                alias="issued $tag_issued_at",
            )
        ],
        description="Each forecast issue as its own line: how much successive forecasts for the same block change.",
        custom=timeseries_custom(),
        options={
            **timeseries_options(),
            "legend": {"displayMode": "hidden", "placement": "bottom", "showLegend": False},
        },
    )
    width = panel(
        3,
        "timeseries",
        "Band width relative to p50 per cable",
        grid_pos(0, 19, 16, 9),
        [
            target(
                "A",
                f"SELECT mean({q('width')}) FROM (SELECT ({q(f.upper)} - {q(f.lower)}) / {q(f.p50)} * 100 "
                f"AS {q('width')} FROM {queries.forecast} WHERE $timeFilter GROUP BY {q(f.cable)}) "
                f"WHERE $timeFilter GROUP BY time($__interval), {q(f.cable)} fill(none)",
                alias="$tag_cable",
            )
        ],
        description="(upper - lower) / p50: how wide the forecast band is; a wide band keeps more capacity back "
        "as base load.",
        unit="percent",
        custom=timeseries_custom(),
        options=timeseries_options(),
    )
    models = panel(
        4,
        "table",
        "Forecasts per cable",
        grid_pos(16, 19, 8, 9),
        [
            target(
                "A",
                f"SELECT last({q(f.model)}) AS {q('latest model')}, count({q(f.p50)}) AS {q('forecast blocks')} "
                f"FROM {queries.forecast} WHERE $timeFilter GROUP BY {q(f.cable)}",
                table=True,
            )
        ],
        description="The model of the latest forecast and how many forecast blocks were written in the range.",
        options={"showHeader": True},
        extra={"transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]},
    )
    fq = FORECAST_QUALITY
    per_day = f"GROUP BY time($__interval), {q(fq.cable)} fill(none) tz('{queries.local_tz}')"
    rmae = panel(
        5,
        "timeseries",
        "rMAE per cable and day",
        grid_pos(0, 28, 12, 9),
        [
            target(
                "A", f"SELECT mean({q(fq.rmae)}) FROM {queries.quality} WHERE $timeFilter {per_day}", alias="$tag_cable"
            )
        ],
        description="Day-ahead forecast error per local day, from the backtests: mean absolute error over the "
        "spread of that day's load (P99 - P1), so noisier than the four-week figure of GET "
        "/cables/{id}/forecast/metrics. Lower is better; a rise means the load changed in a way the models miss.",
        unit="percentunit",
        custom={**timeseries_custom(), "drawStyle": "points", "showPoints": "always", "pointSize": 6},
        options=timeseries_options(),
        interval=DAY_INTERVAL,
    )
    coverage = panel(
        6,
        "timeseries",
        "Band coverage per cable and day",
        grid_pos(12, 28, 12, 9),
        [
            target(
                "A",
                f"SELECT mean({q(fq.coverage)}) FROM {queries.quality} WHERE $timeFilter {per_day}",
                alias="$tag_cable",
            )
        ],
        description=f"Share of measured blocks inside the forecast band per local day. The band is meant to hold "
        f"{queries.coverage_target:.0%} of them (the line); below it the margin under the limit is thinner than "
        "planned.",
        unit="percentunit",
        custom={
            **timeseries_custom(),
            "drawStyle": "points",
            "showPoints": "always",
            "pointSize": 6,
            "thresholdsStyle": {"mode": "line"},
        },
        options=timeseries_options(),
        interval=DAY_INTERVAL,
    )
    coverage["fieldConfig"]["defaults"]["thresholds"] = thresholds((None, "red"), (queries.coverage_target, "green"))
    latest = panel(
        7,
        "table",
        "Backtest figures per cable over the range",
        grid_pos(0, 37, 24, 7),
        [
            target(
                "A",
                f"SELECT mean({q(fq.rmae)}) AS {q('rMAE')}, mean({q(fq.coverage)}) AS {q('coverage')}, "
                f"mean({q(fq.mae)}) AS {q('MAE')}, mean({q(fq.overload_rate)}) AS {q('overload rate')}, "
                f"count({q(fq.rmae)}) AS {q('days')} FROM {queries.quality} WHERE $timeFilter GROUP BY {q(fq.cable)}",
                table=True,
            )
        ],
        description="Mean of the daily figures in the range. MAE is in the cable's unit; overload rate is the share "
        "of blocks where the load exceeded what was available to the base load.",
        overrides=[
            by_name("rMAE", ("unit", "percentunit")),
            by_name("coverage", ("unit", "percentunit")),
            by_name("overload rate", ("unit", "percentunit")),
        ],
        options={"showHeader": True, "sortBy": [{"desc": True, "displayName": "rMAE"}]},
        extra={"transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]},
    )
    return dashboard(
        FORECAST_QUALITY_UID,
        "gridcap: forecast quality",
        description="Base-load forecasts against the measured load, how they change between issues, how wide their "
        "bands are, and the backtests' rMAE and band coverage per cable and day.",
        time_from="now-30d",
        time_to="now+2d",
        panels=[versus, revisions, width, models, rmae, coverage, latest],
        variables=[cable_variable(queries)],
    )


def stat_options(calc: str) -> Json:
    return {
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": [calc], "fields": "", "values": False},
        "textMode": "auto",
    }


def minute_panel(panel_id: int, kind: str, title: str, pos: Json, targets: Sequence[Json], **kwargs: Any) -> Json:
    return panel(panel_id, kind, title, pos, targets, interval=MINUTE_INTERVAL, **kwargs)


GRANTS = (Reason.REQUEST_GRANTED, Reason.PENDING_SERVED)


def cpo_view(queries: Queries) -> Json:
    st, a, r, o = CPO_STATE, ALLOCATION, REQUESTS, OSCP
    cpo = queries.cpo_is()
    online = minute_panel(
        1,
        "stat",
        "Heartbeat: $cpo",
        grid_pos(0, 0, 6, 5),
        [target("A", f"SELECT last({q(st.online)}) FROM {queries.cpo_state} WHERE {cpo} AND $timeFilter")],
        description="Online: heard from within three heartbeat intervals. Offline, its last budgets and then its "
        "backup capacity stay reserved for it.",
        options=stat_options("lastNotNull"),
    )
    online["fieldConfig"]["defaults"]["mappings"] = [
        {"type": "value", "options": {"0": {"color": "red", "text": "offline", "index": 0}}},
        {"type": "value", "options": {"1": {"color": "green", "text": "online", "index": 1}}},
    ]
    age = minute_panel(
        2,
        "stat",
        "Last heard from",
        grid_pos(6, 0, 6, 5),
        [target("A", f"SELECT last({q(st.heartbeat_age_s)}) FROM {queries.cpo_state} WHERE {cpo} AND $timeFilter")],
        description="Seconds since the CPO's last message (any OSCP call counts as a heartbeat).",
        unit="s",
        options=stat_options("lastNotNull"),
    )
    owed = minute_panel(
        3,
        "stat",
        "Pushes owed",
        grid_pos(12, 0, 6, 5),
        [target("A", f"SELECT last({q(st.outbox_depth)}) FROM {queries.cpo_state} WHERE {cpo} AND $timeFilter")],
        description="UpdateCableCapacityForecast pushes waiting in the outbox for this CPO. Capacity taken from it "
        "is not handed to others before the push is accepted or the notice period has passed.",
        options=stat_options("lastNotNull"),
    )
    owed["fieldConfig"]["defaults"]["thresholds"] = thresholds((None, "green"), (1, "orange"), (10, "red"))
    pushed = minute_panel(
        4,
        "bargauge",
        "Pushes in the range by outcome",
        grid_pos(18, 0, 6, 5),
        [
            target(
                "A",
                f"SELECT sum({q(o.count)}) FROM {queries.oscp} WHERE {queries.cpo_is(o.cpo)} AND "
                f"{q(o.direction)} = 'out' AND {q(o.operation)} = '{PUSH}' AND $timeFilter GROUP BY {q(o.outcome)}",
                alias="$tag_outcome",
            )
        ],
        description="UpdateCableCapacityForecast calls to this CPO by outcome: anything but ok is a failure "
        "(unreachable, a fault, or not accepted), retried with back-off.",
        overrides=[
            {
                "matcher": {"id": "byRegexp", "options": "^(?!ok$).*"},
                "properties": [{"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}}],
            },
            by_name("ok", ("color", {"fixedColor": "green", "mode": "fixed"})),
        ],
        options={
            "displayMode": "basic",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["sum"], "fields": "", "values": False},
            "showUnfilled": True,
        },
    )
    requests = minute_panel(
        5,
        "timeseries",
        "Requests for capacity by answer: $cpo",
        grid_pos(0, 5, 12, 8),
        [
            target(
                "A",
                f"SELECT sum({q(r.count)}) FROM {queries.requests} WHERE {queries.cpo_is(r.cpo)} AND $timeFilter "
                f"GROUP BY time($__interval), {q(r.status)} fill(0)",
                alias="$tag_status",
            )
        ],
        description="RequestAdjustedCapacity calls the CPO made, by the answer it got (all its cables).",
        custom=timeseries_custom(stacked=True, fill=80, bars=True),
        options=timeseries_options(),
    )
    grants = "|".join(GRANTS)
    changes = minute_panel(
        6,
        "timeseries",
        "Grants, hand-backs and reclaims: $cpo",
        grid_pos(12, 5, 12, 8),
        [
            target(
                "A",
                f"SELECT sum({q(a.increase)}) FROM {queries.allocation} WHERE {queries.cpo_is(a.cpo)} AND "
                f"{q(a.reason)} =~ /^({grants})$/ AND $timeFilter GROUP BY time($__interval) fill(0)",
                alias="granted",
            ),
            target(
                "B",
                f"SELECT sum({q(a.decrease)}) * -1 FROM {queries.allocation} WHERE {queries.cpo_is(a.cpo)} AND "
                f"{q(a.reason)} = '{Reason.HANDED_BACK}' AND $timeFilter GROUP BY time($__interval) fill(0)",
                alias="handed back",
            ),
            target(
                "C",
                f"SELECT sum({q(a.decrease)}) * -1 FROM {queries.allocation} WHERE {queries.cpo_is(a.cpo)} AND "
                f"{q(a.reason)} = '{Reason.RECLAIMED_UNUSED}' AND $timeFilter GROUP BY time($__interval) fill(0)",
                alias="reclaimed",
            ),
        ],
        description="Budget the CPO was granted on request (up) and gave up (down): handed back on its own request, "
        "or reclaimed because it demonstrably did not use it. Sum over blocks and cables, in the cables' unit.",
        custom=timeseries_custom(stacked=True, fill=80, bars=True),
        options=timeseries_options(),
    )
    reasons = minute_panel(
        7,
        "table",
        "Every budget change in the range by reason: $cpo",
        grid_pos(0, 13, 12, 8),
        [
            target(
                "A",
                f"SELECT sum({q(a.changes)}) AS {q('changes')}, sum({q(a.increase)}) AS {q('increase')}, "
                f"sum({q(a.decrease)}) AS {q('decrease')} FROM {queries.allocation} WHERE {queries.cpo_is(a.cpo)} "
                f"AND $timeFilter GROUP BY {q(a.cable)}, {q(a.reason)}",
                table=True,
            )
        ],
        description="Budget changes (one per block) per cable and reason, as the ledger records them: grants, "
        "hand-backs, reclaims, hand-outs of new blocks and reallocations after a limit or forecast change.",
        options={"showHeader": True},
        extra={"transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]},
    )
    pushes = minute_panel(
        8,
        "timeseries",
        "Pushes to $cpo by outcome",
        grid_pos(12, 13, 12, 8),
        [
            target(
                "A",
                queries.messages(
                    f"{queries.cpo_is(o.cpo)} AND {q(o.direction)} = 'out' AND {q(o.operation)} = '{PUSH}'", o.outcome
                ),
                alias="$tag_outcome",
            )
        ],
        description="UpdateCableCapacityForecast calls to the CPO: ok, or why they failed.",
        custom=timeseries_custom(stacked=True, fill=80, bars=True),
        options=timeseries_options(),
    )
    state = minute_panel(
        9,
        "timeseries",
        "Heartbeat age and pushes owed: $cpo",
        grid_pos(0, 21, 12, 8),
        [
            target(
                "A",
                f"SELECT last({q(st.heartbeat_age_s)}) AS {q('heartbeat age')} FROM {queries.cpo_state} "
                f"WHERE {cpo} AND $timeFilter GROUP BY time($__interval) fill(none)",
                alias="$col",
            ),
            target(
                "B",
                f"SELECT last({q(st.outbox_depth)}) AS {q('pushes owed')} FROM {queries.cpo_state} "
                f"WHERE {cpo} AND $timeFilter GROUP BY time($__interval) fill(none)",
                alias="$col",
            ),
        ],
        description="Seconds since the CPO was last heard from (left) and pushes waiting for it (right).",
        unit="s",
        custom=timeseries_custom(),
        overrides=[by_name("pushes owed", ("custom.axisPlacement", "right"), ("unit", "none"))],
        options=timeseries_options(),
    )
    calls = minute_panel(
        10,
        "timeseries",
        "Calls from $cpo by operation",
        grid_pos(12, 21, 12, 8),
        [
            target(
                "A",
                queries.messages(f"{queries.cpo_is(o.cpo)} AND {q(o.direction)} = 'in'", o.operation),
                alias="$tag_operation",
            )
        ],
        description="The OSCP calls the CPO made to the DSO, per operation (faults included).",
        custom=timeseries_custom(stacked=True, fill=80, bars=True),
        options=timeseries_options(),
    )
    cpo_variable = query_variable(
        "cpo", "CPO", queries.cpos(), sort=1, description="The CPOs the service keeps state for."
    )
    return dashboard(
        CPO_VIEW_UID,
        "gridcap: CPO view",
        description="One CPO: whether it is online, its requests and the answers, budget granted, handed back and "
        "reclaimed, and the pushes owed to it and how they went.",
        time_from="now-6h",
        time_to="now",
        panels=[online, age, owed, pushed, requests, changes, reasons, pushes, state, calls],
        variables=[cpo_variable],
        refresh="1m",
    )


def service_health(queries: Queries) -> Json:
    o, st, j = OSCP, CPO_STATE, JOB
    incoming = f"{q(o.direction)} = 'in'"
    requests = minute_panel(
        1,
        "timeseries",
        "OSCP calls received by operation",
        grid_pos(0, 0, 12, 8),
        [target("A", queries.messages(incoming, o.operation), alias="$tag_operation")],
        description="Every OSCP call CPOs made, SOAP and JSON, faults included.",
        custom=timeseries_custom(stacked=True, fill=80, bars=True),
        options=timeseries_options(),
    )
    faults = minute_panel(
        2,
        "timeseries",
        "Faults answered by kind",
        grid_pos(12, 0, 12, 8),
        [
            target(
                "A",
                f"SELECT sum({q(o.count)}) FROM {queries.oscp} WHERE {incoming} AND {q(o.outcome)} != 'ok' AND "
                f"$timeFilter GROUP BY time($__interval), {q(o.outcome)}, {q(o.cpo)} fill(0)",
                alias="$tag_outcome ($tag_cpo)",
            )
        ],
        description="Calls answered with a fault, by fault code (and CPO; '-' when the caller was not identified): "
        "many Unauthorized may be a misconfigured CPO or an attack, RateLimited a CPO calling too often.",
        custom=timeseries_custom(stacked=True, fill=80, bars=True),
        options=timeseries_options(),
    )
    latency = minute_panel(
        3,
        "timeseries",
        "Latency p95 by operation (slowest CPO)",
        grid_pos(0, 8, 12, 8),
        [
            target(
                "A",
                f"SELECT max({q(o.p95_ms)}) FROM {queries.oscp} WHERE {q(o.outcome)} = 'ok' AND $timeFilter "
                f"GROUP BY time($__interval), {q(o.direction)}, {q(o.operation)} fill(none)",
                alias="$tag_direction $tag_operation",
            )
        ],
        description="The 95th percentile of the time to answer a call (in) or to make one (out), of the CPO "
        "with the slowest calls in each minute; calls that succeeded only (a CPO that is down would show its "
        "timeout). Out includes the CPO's own response time.",
        unit="ms",
        custom=timeseries_custom(),
        options=timeseries_options(),
    )
    outbox = minute_panel(
        4,
        "timeseries",
        "Outbox: pushes owed and the oldest one's age",
        grid_pos(12, 8, 12, 8),
        [
            target(
                "A",
                f"SELECT sum({q('owed')}) AS {q('pushes owed')} FROM (SELECT last({q(st.outbox_depth)}) AS {q('owed')} "
                f"FROM {queries.cpo_state} WHERE $timeFilter GROUP BY time($__interval), {q(st.cpo)}) "
                "WHERE $timeFilter GROUP BY time($__interval) fill(none)",
                alias="$col",
            ),
            target(
                "B",
                f"SELECT max({q(st.oldest_push_age_s)}) AS {q('oldest owed push')} FROM {queries.cpo_state} "
                "WHERE $timeFilter GROUP BY time($__interval) fill(none)",
                alias="$col",
            ),
        ],
        description="Pushes waiting to be delivered, all CPOs together, and how long the oldest has waited (right "
        "axis). A growing outbox means a CPO is unreachable or rejects its forecasts.",
        custom=timeseries_custom(),
        overrides=[by_name("oldest owed push", ("custom.axisPlacement", "right"), ("unit", "s"))],
        options=timeseries_options(),
    )
    jobs = minute_panel(
        5,
        "timeseries",
        "Job durations",
        grid_pos(0, 16, 12, 8),
        [
            target(
                "A",
                f"SELECT max({q(j.duration_s)}) FROM {queries.job} WHERE $timeFilter "
                f"GROUP BY time($__interval), {q(j.job)} fill(none)",
                alias="$tag_job",
            )
        ],
        description="How long each scheduled job ran (the longest run per bucket). A job slower than its interval "
        "falls behind: its next run is skipped.",
        unit="s",
        custom={**timeseries_custom(), "showPoints": "always"},
        options=timeseries_options(),
    )
    runs = minute_panel(
        6,
        "table",
        "Job runs in the range",
        grid_pos(12, 16, 12, 8),
        [
            target(
                "A",
                f"SELECT count({q(j.duration_s)}) AS {q('runs')}, sum({q(j.ok)}) AS {q('ok')}, "
                f"mean({q(j.duration_s)}) AS {q('mean s')}, max({q(j.duration_s)}) AS {q('max s')} "
                f"FROM {queries.job} WHERE $timeFilter GROUP BY {q(j.job)}",
                table=True,
            )
        ],
        description="Runs per job, how many finished without an error (failed = runs - ok; see the service log), "
        "and their mean and longest duration.",
        options={"showHeader": True},
        extra={
            "transformations": [
                {
                    "id": "calculateField",
                    "options": {
                        "alias": "failed",
                        "binary": {"left": "runs", "operator": "-", "right": "ok"},
                        "mode": "binary",
                    },
                },
                {"id": "organize", "options": {"excludeByName": {"Time": True}}},
            ]
        },
    )
    cpos = minute_panel(
        7,
        "table",
        "CPOs: heartbeat and outbox",
        grid_pos(0, 24, 24, 7),
        [
            target(
                "A",
                f"SELECT last({q(st.online)}) AS {q('online')}, last({q(st.heartbeat_age_s)}) AS {q('last heard s')}, "
                f"last({q(st.outbox_depth)}) AS {q('pushes owed')}, last({q(st.push_attempts)}) AS "
                f"{q('most attempts')} FROM {queries.cpo_state} WHERE $timeFilter GROUP BY {q(st.cpo)}",
                table=True,
            )
        ],
        description="Per CPO at the latest export: online (1) or offline (0), seconds since it was last heard from, "
        "pushes owed and the most attempts one of them has had.",
        overrides=[by_name("online", ("custom.cellOptions", {"type": "color-background"}))],
        options={"showHeader": True, "sortBy": [{"desc": True, "displayName": "pushes owed"}]},
        extra={"transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]},
    )
    return dashboard(
        SERVICE_HEALTH_UID,
        "gridcap: service health",
        description="The service itself: OSCP calls, faults and latency, the push outbox and the scheduled jobs.",
        time_from="now-6h",
        time_to="now",
        panels=[requests, faults, latency, outbox, jobs, runs, cpos],
        variables=[],
        refresh="1m",
    )


def build(settings: Settings | None = None) -> dict[str, Json]:
    """Every dashboard by file name, for the measurement names `settings` give (default: the defaults)."""
    queries = Queries(settings or Settings())
    return {
        "grid-overview.json": grid_overview(queries),
        "cable-detail.json": cable_detail(queries),
        "forecast-quality.json": forecast_quality(queries),
        "cpo-view.json": cpo_view(queries),
        "service-health.json": service_health(queries),
    }


def render(board: Json) -> str:
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path = DASHBOARDS_DIR, settings: Settings | None = None) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in build(settings).items():
        path = directory / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.monitoring.dashboards", description="Write the Grafana dashboards as JSON."
    )
    parser.add_argument("directory", nargs="?", type=Path, default=DASHBOARDS_DIR, help="default: grafana/dashboards")
    parser.add_argument(
        "--settings",
        action="store_true",
        help="use this deployment's measurement names (GRIDCAP_CONFIG and GRIDCAP_* variables), not the defaults "
        "the checked-in files use",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings() if args.settings else Settings()
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    written = write(args.directory, settings)
    sys.stdout.write("".join(f"{path}\n" for path in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
