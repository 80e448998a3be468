"""Demo data: seeded, consistent, household- and EV-shaped, with faults only on request."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from forecasts import ForecastError, check_history
from forecasts.synthetic import DemoData, demo_measurements, dutch_holidays

AMS = ZoneInfo("Europe/Amsterdam")
START = datetime(2025, 1, 6, tzinfo=AMS)
END = START + timedelta(weeks=10)
CABLES = ["k1", "k2", "k3", "k4"]


@pytest.fixture(scope="module")
def demo() -> DemoData:
    return demo_measurements(CABLES, start=START, end=END, seed=7)


def test_the_same_seed_gives_the_same_data(demo: DemoData) -> None:
    again = demo_measurements(CABLES, start=START, end=END, seed=7)
    pd.testing.assert_frame_equal(again.measured, demo.measured)
    pd.testing.assert_frame_equal(again.ev_usage, demo.ev_usage)
    assert again.connections == demo.connections
    assert again.limit_kw == demo.limit_kw
    other = demo_measurements(CABLES, start=START, end=END, seed=8)
    assert not np.allclose(other.measured.to_numpy(), demo.measured.to_numpy())


def test_shapes_units_and_consistency(demo: DemoData) -> None:
    assert list(demo.measured.columns) == CABLES
    assert len(demo.measured) == 10 * 7 * 96
    assert demo.measured.index[0] == pd.Timestamp("2025-01-05T23:00Z")
    assert str(demo.measured.index.tz) == "UTC"
    assert np.allclose(demo.measured, demo.base_load + demo.ev_usage)
    assert (demo.ev_usage.to_numpy() >= 0).all()
    assert (demo.base_load.to_numpy() >= 0).all()
    assert all(50 <= n <= 200 for n in demo.connections.values())
    assert not demo.measured.isna().any().any()
    for cable in CABLES:
        peak = demo.base_load[cable].max()
        assert peak <= demo.limit_kw[cable] <= 1.1 * peak + 1.0 * demo.evs[cable] + 0.1
        # households use 2,200-3,400 kWh a year (x the winter season factor of about 1.2)
        mean_per_household = demo.base_load[cable].mean() / demo.connections[cable]
        assert 0.2 < mean_per_household < 0.55


def test_household_and_ev_rhythm(demo: DemoData) -> None:
    local = demo.base_load.index.tz_convert(AMS)
    base = demo.base_load.sum(axis=1)
    ev = demo.ev_usage.sum(axis=1)
    hour, weekday = local.hour, local.day_of_week
    evening, night = (hour >= 18) & (hour < 21), (hour >= 2) & (hour < 5)
    assert base[evening].mean() > 2 * base[night].mean()
    midday = (hour >= 11) & (hour < 14)
    assert base[midday & (weekday == 6)].mean() > 1.15 * base[midday & (weekday < 5)].mean()  # Sunday cooking
    assert ev[evening & (weekday < 5)].mean() > 5 * ev[night].mean()  # arrivals after work
    # the EV load congests the cable at evening peaks: measured load goes over the suggested limit
    over = sum((demo.measured[c] > demo.limit_kw[c]).sum() for c in CABLES)
    assert over > 0


def test_winter_is_heavier_than_summer() -> None:
    data = demo_measurements(["a", "b"], start=START, end=datetime(2025, 8, 1, tzinfo=AMS), seed=2)
    base = data.base_load.sum(axis=1)
    month = base.index.tz_convert(AMS).month
    assert base[month == 1].mean() > 1.3 * base[month == 7].mean()  # BDEW dynamisation: 1.24 vs 0.8


def test_noise_shrinks_with_aggregation() -> None:
    data = demo_measurements([f"c{i}" for i in range(40)], start=START, end=START + timedelta(weeks=3), seed=1)
    base = data.base_load
    smooth = base.rolling(9, center=True).mean()
    relative_noise = ((base - smooth).std() / base.mean()).to_numpy()
    households = np.array([data.connections[c] for c in base.columns])
    assert np.corrcoef(relative_noise, 1 / np.sqrt(households))[0, 1] > 0.8


def test_holidays_follow_the_sunday_shape() -> None:
    assert {date(2025, 4, 21), date(2025, 4, 26), date(2025, 5, 29), date(2025, 12, 25)} <= dutch_holidays([2025])
    assert date(2025, 5, 5) in dutch_holidays([2025])
    assert date(2026, 5, 5) not in dutch_holidays([2026])
    start, end = datetime(2025, 4, 14, tzinfo=AMS), datetime(2025, 4, 28, tzinfo=AMS)
    plain = demo_measurements(["a"], start=start, end=end, seed=3).base_load["a"]
    holiday = demo_measurements(["a"], start=start, end=end, seed=3, holidays=True)
    assert date(2025, 4, 21) in holiday.holidays
    local = plain.index.tz_convert(AMS)
    easter_monday_noon = (local.date == date(2025, 4, 21)) & (local.hour == 12)
    assert holiday.base_load["a"][easter_monday_noon].mean() > 1.1 * plain[easter_monday_noon].mean()


def test_faults_only_on_request_and_check_history_finds_them() -> None:
    data = demo_measurements(["a", "b"], start=START, end=START + timedelta(weeks=3), seed=4, faults=True)
    for cable in ("a", "b"):
        _, report = check_history(data.measured[cable].dropna())
        assert report.gaps == 1
        assert report.flatline_points >= 16
        assert report.spikes >= 3
        _, clean = check_history(data.base_load[cable])
        assert clean.spikes == clean.flatline_points == clean.gaps == 0


def test_naive_or_empty_ranges_are_rejected() -> None:
    with pytest.raises(ForecastError, match="naive"):
        demo_measurements(["a"], start=datetime(2025, 1, 1), end=END)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ForecastError, match="end after start"):
        demo_measurements(["a"], start=END, end=START)
    assert demo_measurements(["a"], start=datetime(2025, 1, 1, 0, 7, tzinfo=UTC), end=END).measured.index[0] == (
        pd.Timestamp("2025-01-01T00:15Z")
    )
