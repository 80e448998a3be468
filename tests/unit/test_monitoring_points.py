"""The monitoring export's pure aggregation: minute buckets, percentiles, idempotence, unknown CPOs,
budget increases and decreases, CPO snapshots, job runs, and a backtest's quality per local day."""

import itertools
import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

import forecasts
from forecasts import ForecastConfig
from service.monitoring import names
from service.timeseries import Point
from service.timeseries import lineprotocol as lp
from service.usecases import forecasting
from service.usecases.monitoring import (
    AuditedDecision,
    CpoSnapshot,
    JobRuns,
    LedgerChange,
    Message,
    allocation_points,
    cpo_state_points,
    limit_change_points,
    minute_floor,
    oscp_points,
    p95,
    request_points,
)

D = Decimal
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def msg(
    seconds: float, duration_ms: float, cpo: str | None = "a", outcome: str = "ok", op: str = "Heartbeat"
) -> Message:
    return Message(T0 + timedelta(seconds=seconds), cpo, "in", op, outcome, duration_ms)


def by_key(points: list[Point], *tags: str) -> dict[tuple[object, ...], Point]:
    return {(p.time, *(p.tags[t] for t in tags)): p for p in points}


def test_messages_count_in_the_whole_minute_they_fall_in() -> None:
    points = oscp_points([msg(0, 1), msg(59.999, 3), msg(60, 5), msg(125, 7)])

    assert [(p.time, p.fields[names.OSCP.count]) for p in points] == [
        (T0, 2),
        (T0 + timedelta(minutes=1), 1),
        (T0 + timedelta(minutes=2), 1),
    ]
    assert {p.measurement for p in points} == {"gridcap_oscp"}
    assert points[0].tags == {"cpo": "a", "direction": "in", "operation": "Heartbeat", "outcome": "ok"}
    assert minute_floor(datetime(2026, 11, 24, 13, 59, 59, 999999, tzinfo=UTC)) == datetime(
        2026, 11, 24, 13, 59, tzinfo=UTC
    )


def test_a_minute_has_the_mean_p95_and_max_of_its_durations() -> None:
    durations = [float(v) for v in range(1, 101)]  # 1..100 ms
    random.Random(1).shuffle(durations)

    (point,) = oscp_points([msg(i * 0.5, d) for i, d in enumerate(durations)])

    assert point.fields == {"count": 100, "mean_ms": 50.5, "p95_ms": pytest.approx(95.05), "max_ms": 100.0}
    assert p95([10.0]) == 10.0
    assert p95([0.0, 100.0]) == pytest.approx(95.0)


def test_field_types_never_change_between_minutes() -> None:
    """InfluxDB refuses a point whose field type differs from the one stored: counts are always
    integers, durations always floats, even when every duration is a whole number."""
    (point,) = oscp_points([Message(T0, "a", "out", "Heartbeat", "ok", 4)])  # an int from the database

    assert isinstance(point.fields["count"], int)
    assert all(type(point.fields[f]) is float for f in ("mean_ms", "p95_ms", "max_ms"))


def test_outcomes_directions_and_cpos_are_separate_series_and_unknown_callers_are_dash() -> None:
    messages = [msg(1, 1), msg(2, 2, outcome="Unauthorized", cpo=None), msg(3, 3, cpo=None, outcome="Unauthorized")]
    messages.append(Message(T0, "a", "out", "UpdateCableCapacityForecast", "Unreachable", 5000.0))

    points = by_key(oscp_points(messages), "cpo", "direction", "outcome")

    assert {k: p.fields["count"] for k, p in points.items()} == {
        (T0, "a", "in", "ok"): 1,
        (T0, "-", "in", "Unauthorized"): 2,
        (T0, "a", "out", "Unreachable"): 1,
    }


def test_exporting_the_same_rows_again_gives_the_same_points() -> None:
    rng = random.Random(7)
    messages = [msg(rng.uniform(0, 300), rng.uniform(0.1, 80), cpo=rng.choice(["a", "b", None])) for _ in range(200)]
    changes = [
        LedgerChange(T0 + timedelta(seconds=rng.uniform(0, 300)), "c1", "a", "request_granted", D("1.1"), D("2.3"), "A")
        for _ in range(50)
    ]
    shuffled = messages[:]
    rng.shuffle(shuffled)

    assert oscp_points(messages) == oscp_points(shuffled)  # same floats to the last bit, same order
    assert allocation_points(changes) == allocation_points(list(reversed(changes)))
    # Rows of a later minute leave the points of the earlier minutes as they were.
    later = [*messages, msg(301, 1), msg(400, 2)]
    first_minutes = [p for p in oscp_points(later) if p.time < T0 + timedelta(minutes=5)]
    assert first_minutes == oscp_points(messages)


def test_operation_names_from_the_wire_are_written_safely() -> None:
    """The JSON binding records the operation named in the URL: anyone can send one line protocol
    cannot carry, and one bad tag would fail every point of the export."""
    (point,) = oscp_points([msg(0, 1, cpo=None, op="evil\\ name\nwith=stuff", outcome="NotFound")])

    assert point.tags["operation"] == "evil__name_with_stuff"
    lp.point_line(point)  # writable


def test_budget_changes_sum_their_increases_and_decreases() -> None:
    t = T0 + timedelta(seconds=10)
    changes = [
        LedgerChange(t, "c1", "a", "reallocated_up", D("10.1"), D("15.3"), "A"),  # +5.2
        LedgerChange(t, "c1", "a", "reallocated_up", D("0"), D("0.1"), "A"),  # +0.1
        LedgerChange(t, "c1", "a", "reallocated_up", D("12.2"), D("12"), "A"),  # -0.2 under the same reason
        LedgerChange(t + timedelta(minutes=1), "c1", "a", "reallocated_up", D("1"), D("2"), "A"),
        LedgerChange(t, "c1", "b", "reallocated_down", D("9"), D("2.5"), "A"),
        LedgerChange(t, "k9", "b", "handed_back", D("3"), D("1"), None),  # its cable was deleted since
    ]

    points = by_key(allocation_points(changes), "cable", "cpo", "reason")

    up = points[(T0, "c1", "a", "reallocated_up")]
    assert up.fields == {"changes": 3, "increase": 5.3, "decrease": 0.2, "unit": "A"}  # exact: summed as decimals
    assert "unit" not in up.tags  # a field: a cable recreated in another unit must not split the series
    assert points[(T0 + timedelta(minutes=1), "c1", "a", "reallocated_up")].fields["changes"] == 1
    assert points[(T0, "c1", "b", "reallocated_down")].fields == {
        "changes": 1,
        "increase": 0.0,
        "decrease": 6.5,
        "unit": "A",
    }
    assert "unit" not in points[(T0, "k9", "b", "handed_back")].fields  # the cable is gone
    assert {p.measurement for p in points.values()} == {"gridcap_allocation"}


def decision(seconds: float, action: str, status: str | None = None, cpo: str | None = "a") -> AuditedDecision:
    return AuditedDecision(T0 + timedelta(seconds=seconds), action, "c1", cpo, status, "eng", f"{action} said so")


def test_requests_count_per_minute_and_status_and_nothing_else() -> None:
    decisions = [
        decision(1, "request", "Accepted"),
        decision(2, "request", "Accepted"),
        decision(3, "request", "Rejected"),
        decision(4, "request", "Accepted", cpo="b"),
        decision(61, "request", "PartiallyAccepted"),
        decision(5, "usage_reported"),
        decision(6, "cable_updated", cpo=None),
    ]

    points = request_points(decisions, prefix="x_")

    assert {(p.time, p.tags["cpo"], p.tags["status"]): p.fields["count"] for p in points} == {
        (T0, "a", "Accepted"): 2,
        (T0, "a", "Rejected"): 1,
        (T0, "b", "Accepted"): 1,
        (T0 + timedelta(minutes=1), "a", "PartiallyAccepted"): 1,
    }
    assert {p.measurement for p in points} == {"x_requests"}


def test_each_limit_change_is_one_point_at_its_moment() -> None:
    decisions = [
        decision(1.5, "cable_created", cpo=None),
        decision(2, "request", "Accepted"),
        decision(3, "cable_updated", cpo=None),
        decision(4, "override_added", cpo=None),
        decision(5, "override_removed", cpo=None),
        decision(6, "subscription_added"),
    ]

    points = limit_change_points(decisions)

    assert [(p.time, p.tags, p.fields) for p in points] == [
        (d.at, {"cable": "c1", "action": d.action}, {"text": d.message, "actor": "eng"})
        for d in decisions
        if d.action in {"cable_created", "cable_updated", "override_added", "override_removed"}
    ]
    assert points[0].time == T0 + timedelta(seconds=1.5)  # not floored to the minute


def test_every_cpo_gets_a_state_point_with_or_without_pushes_owed() -> None:
    at = T0 + timedelta(minutes=10)
    cpos = [
        CpoSnapshot("b", at - timedelta(seconds=30), 3, 2, at - timedelta(minutes=4)),
        CpoSnapshot("a", at - timedelta(minutes=5), 0, 0, None),
        CpoSnapshot("c", None, 0, 0, None),
        CpoSnapshot("d", at + timedelta(seconds=1), 1, 0, at - timedelta(seconds=1)),  # recorded a moment after `at`
    ]

    points = {p.tags["cpo"]: p for p in cpo_state_points(cpos, at=at, offline_before=at - timedelta(minutes=3))}

    assert points["b"].fields == {
        "online": 1,
        "heartbeat_age_s": 30.0,
        "outbox_depth": 3,
        "push_attempts": 2,
        "oldest_push_age_s": 240.0,
    }
    assert points["a"].fields == {
        "online": 0,
        "heartbeat_age_s": 300.0,
        "outbox_depth": 0,
        "push_attempts": 0,
        "oldest_push_age_s": 0.0,
    }
    assert points["c"].fields == {"online": 0, "outbox_depth": 0, "push_attempts": 0, "oldest_push_age_s": 0.0}
    assert points["d"].fields["heartbeat_age_s"] == 0.0
    assert {p.time for p in points.values()} == {at}
    assert list(points) == ["a", "b", "c", "d"]


def test_job_runs_wait_in_order_and_the_oldest_go_first_when_too_many_wait() -> None:
    runs = JobRuns("p_", keep=3)
    for i in range(4):
        runs.record(f"job{i}", T0 + timedelta(seconds=i), 0.25, ok=i != 2)

    drained = runs.drain()

    assert [p.tags["job"] for p in drained] == ["job1", "job2", "job3"]
    assert drained[1] == Point("p_job", {"job": "job2"}, {"duration_s": 0.25, "ok": 0}, T0 + timedelta(seconds=2))
    assert runs.drain() == []
    runs.record("later", T0, 1, ok=True)
    runs.put_back(drained)  # a failed write: they go before the later run, the oldest dropped
    assert [p.tags["job"] for p in runs.drain()] == ["job2", "job3", "later"]
    runs.record("x", T0, 1, ok=True)
    assert type(runs.drain()[0].fields["duration_s"]) is float


# --- forecast quality per local day ----------------------------------------------------------------


def backtest_frame(tz: str) -> pd.DataFrame:
    """Three local days of day-ahead blocks: a normal one, one with a flat actual (rMAE undefined),
    and one not measured at all."""
    day_starts = [pd.Timestamp(f"2026-03-{d}").tz_localize(tz).tz_convert("UTC") for d in (28, 29, 30, 31)]
    index = pd.DatetimeIndex(
        [t for a, b in itertools.pairwise(day_starts) for t in pd.date_range(a, b, freq="15min", inclusive="left")]
    )
    rng = np.random.default_rng(3)
    actual = 50 + 10 * rng.standard_normal(len(index))
    day = index.tz_convert(tz).date
    actual[day == pd.Timestamp("2026-03-29").date()] = 40.0
    actual[day == pd.Timestamp("2026-03-30").date()] = np.nan
    p50 = actual + rng.normal(0, 3, len(index))
    return pd.DataFrame(
        {
            "actual": actual,
            "p50": np.where(np.isnan(p50), 45.0, p50),
            "lower": np.full(len(index), 38.0),
            "upper": np.full(len(index), 62.0),
            "limit": np.full(len(index), 70.0),
            "available": np.full(len(index), 8.0),
            "model": np.where(index < day_starts[1], "mean_weeks", "last_week").astype(object),
            "issued_at": index,
        },
        index=index.rename("start"),
    )


def test_a_backtest_gives_one_quality_point_per_measured_local_day() -> None:
    tz = "Europe/Amsterdam"
    config = ForecastConfig(local_tz=tz, coverage=0.9)
    frame = backtest_frame(tz)

    points = forecasting.quality_points("c1", frame, config)

    # 2026-03-29 is 23 hours long there (DST starts); the 30th has no measurement: no point
    assert [p.time for p in points] == [datetime(2026, 3, 27, 23, tzinfo=UTC), datetime(2026, 3, 28, 23, tzinfo=UTC)]
    first, second = points
    assert first.measurement == "gridcap_forecast_quality"
    assert first.tags == second.tags == {"cable": "c1"}  # a day backtested again hits the same series
    assert first.fields["model"] == "mean_weeks"
    assert second.fields["model"] == "last_week"
    day = frame[(frame.index >= "2026-03-27T23:00Z") & (frame.index < "2026-03-28T23:00Z")]
    expected = forecasts.evaluate(
        day["actual"].to_numpy(),
        day["p50"].to_numpy(),
        day["lower"].to_numpy(),
        day["upper"].to_numpy(),
        70.0,
        coverage=0.9,
    )
    assert set(first.fields) == {"rmae", "coverage", "mae", "overload_rate", "model"}
    for name, value in first.fields.items():
        if name != "model":
            assert value == pytest.approx(expected[name])
    assert len(frame[(frame.index >= "2026-03-28T23:00Z") & (frame.index < "2026-03-29T22:00Z")]) == 92
    assert "rmae" not in second.fields  # a flat day: rMAE is NaN, and NaN is never written
    assert second.fields["coverage"] == 1.0
    assert all(math.isfinite(v) for p in points for v in p.fields.values() if isinstance(v, float))


def test_a_backtest_day_starts_at_local_midnight_in_another_zone() -> None:
    tz = "America/New_York"
    points = forecasting.quality_points("c9", backtest_frame(tz), ForecastConfig(local_tz=tz), prefix="q_")

    assert [p.time.hour for p in points] == [4, 4]  # EDT: midnight is 04:00 UTC
    assert {p.measurement for p in points} == {"q_forecast_quality"}
