"""Seeded demo data: feeder-level load of household cables with EV charging on top (pure numpy).

Each cable aggregates 50-200 households. Its expected base load per block is

    households x annual kWh / 8760 h x shape(local day type, local quarter hour) x season(day of year) x weather(day)

- shape: the BDEW H0 standard household load profile (VDEW 1999) as 24 hourly anchor values per day type
  (workday, Saturday, Sunday), read off the published winter curves by hand and interpolated to quarter
  hours; each day type is scaled to the official weekly mean. An approximation of the shape, not the table.
- season: BDEW's dynamisation polynomial of the day of year (-3.92e-10 d^4 + 3.2e-7 d^3 - 7.02e-5 d^2
  + 2.1e-3 d + 1.24): about 1.24 in January, 0.8 in July.
- weather: a day-level multiplicative AR(1) factor, partly shared by all cables (regional weather,
  phi 0.8, sd 5 %) and partly per cable (phi 0.5, sd 2 %).
- noise: households are independent, so the aggregate's noise sd is 0.8 x sqrt(households) x the
  per-household mean (a relative 11 % at 50 households, 6 % at 200), AR(1) with phi 0.6 per 15 minutes.
- holidays (optional): Dutch public holidays follow the Sunday shape.
- EV charging: 10-25 % of households have an EV; on a workday 50 % of them plug in (35 % at weekends),
  arriving around 18:00 local (sd 1.5 h; weekends 15:00, sd 3 h) with 2-40 kWh at 11, 7.4 or 3.7 kW.
  CPOs report exactly that load (`ev_usage`).
- faults (off by default): a gap, a stuck sensor and spikes per cable in `measured`, for tests.

The suggested limit per cable is 1.0-1.1 x its peak base load + 1 kW per EV: without control, the
measured load goes over it on 15-30 % of evenings.
Everything is vectorised; 10,000 cables x 8 weeks take a few seconds.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from forecasts.errors import ForecastError
from forecasts.timegrid import BLOCK, utc_moment

# BDEW H0 winter shapes, W per 1,000 kWh/a at each full hour 00:00..23:00 (hand-digitised approximation)
H0_HOURLY = {
    "workday": [
        70,
        55,
        47,
        44,
        43,
        46,
        62,
        97,
        112,
        112,
        112,
        120,
        137,
        131,
        115,
        105,
        108,
        134,
        170,
        180,
        170,
        150,
        124,
        95,
    ],
    "saturday": [
        80,
        63,
        52,
        47,
        45,
        46,
        52,
        70,
        100,
        125,
        138,
        148,
        155,
        145,
        130,
        122,
        122,
        138,
        165,
        172,
        162,
        150,
        132,
        105,
    ],
    "sunday": [
        88,
        70,
        56,
        49,
        46,
        45,
        47,
        55,
        80,
        115,
        140,
        165,
        180,
        160,
        130,
        120,
        120,
        135,
        160,
        168,
        158,
        142,
        120,
        95,
    ],
}
NOISE_CV = 0.8  # per-household coefficient of variation of 15-minute load
EV_POWERS_KW = np.array([11.0, 7.4, 3.7])
EV_POWER_SHARES = np.array([0.6, 0.2, 0.2])


@dataclass(frozen=True, eq=False)
class DemoData:
    """Demo measurements in kW; frames are indexed by UTC block starts with a column per cable."""

    measured: pd.DataFrame  # what the cable meter sees: base load + EV charging (+ faults if asked)
    ev_usage: pd.DataFrame  # what CPOs report
    base_load: pd.DataFrame  # the true non-EV load (measured - ev_usage without faults)
    connections: dict[str, int]  # households per cable
    evs: dict[str, int]  # EVs per cable
    limit_kw: dict[str, float]  # a suggested limit that evening peaks exceed
    holidays: frozenset[date] = field(default_factory=frozenset)  # local dates given the Sunday shape


def _shapes() -> np.ndarray:
    """(3, 96) quarter-hour shapes of workday, Saturday, Sunday, relative to the weekly mean."""
    hours = np.arange(25)
    quarter = np.arange(96) / 4 + 0.125  # mid-block
    table = np.array(
        [np.interp(quarter, hours, [*values, values[0]]) for values in H0_HOURLY.values()], dtype=np.float64
    )
    weekly_mean = (5 * table[0].mean() + table[1].mean() + table[2].mean()) / 7
    shapes: np.ndarray = table / weekly_mean
    return shapes


def _season(day_of_year: np.ndarray) -> np.ndarray:
    d = day_of_year.astype(np.float64)
    return -3.92e-10 * d**4 + 3.2e-7 * d**3 - 7.02e-5 * d**2 + 2.1e-3 * d + 1.24


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month = (h + ell - 7 * m + 114) // 31
    day = (h + ell - 7 * m + 114) % 31 + 1
    return date(year, month, day)


def dutch_holidays(years: Sequence[int]) -> frozenset[date]:
    """Public holidays in the Netherlands (New Year, Easter Monday, King's Day, Ascension, Whit Monday,
    Christmas); Liberation Day only in lustrum years."""
    out: set[date] = set()
    for year in years:
        easter = _easter(year)
        kings = date(year, 4, 27)
        if kings.weekday() == 6:  # moved to Saturday when it falls on a Sunday
            kings -= timedelta(days=1)
        out |= {date(year, 1, 1), easter + timedelta(days=1), kings, easter + timedelta(days=39)}
        out |= {easter + timedelta(days=50), date(year, 12, 25), date(year, 12, 26)}
        if year % 5 == 0:
            out.add(date(year, 5, 5))
    return frozenset(out)


def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """Stationary AR(1) along axis 0 with the shocks' (unit) variance, computed in place."""
    scale = np.sqrt(1.0 - phi * phi)
    for i in range(1, len(shocks)):
        shocks[i] *= scale
        shocks[i] += phi * shocks[i - 1]
    return shocks


def demo_measurements(
    cable_ids: Sequence[str],
    *,
    start: datetime,
    end: datetime,
    seed: int = 0,
    tz: str = "Europe/Amsterdam",
    holidays: bool = False,
    faults: bool = False,
) -> DemoData:
    """Seeded demo data for [start, end) (tz-aware; block-aligned to 15 minutes). See the module docstring."""
    first = utc_moment(start, "start").ceil(BLOCK)
    stop = utc_moment(end, "end").floor(BLOCK)
    if stop <= first or not cable_ids:
        raise ForecastError("demo_measurements needs cable ids and end after start")
    index = pd.date_range(first, stop, freq=BLOCK, inclusive="left", unit="ns")
    n, t = len(cable_ids), len(index)
    rng = np.random.default_rng(seed)
    wall = index.tz_convert(tz).tz_localize(None)
    local_days = wall.normalize()
    day_list = pd.DatetimeIndex(local_days.unique())
    day_of = np.searchsorted(day_list.to_numpy(), local_days.to_numpy())
    holiday_set = dutch_holidays(sorted({d.year for d in day_list})) if holidays else frozenset()
    weekday = wall.day_of_week.to_numpy()
    day_type = np.where(weekday < 5, 0, np.where(weekday == 5, 1, 2))
    if holiday_set:
        is_holiday = np.isin(local_days.to_numpy(), np.array(sorted(holiday_set), dtype="datetime64[ns]"))
        day_type = np.where(is_holiday, 2, day_type)
    slot = (wall.hour * 4 + wall.minute // 15).to_numpy()
    profile = _shapes()[day_type, slot] * _season(wall.day_of_year.to_numpy())  # (t,)

    households = rng.integers(50, 201, n)
    kwh_per_year = rng.uniform(2200, 3400, n)
    mean_kw = households * kwh_per_year / 8760.0
    regional = _ar1(rng.standard_normal(len(day_list)), 0.8) * 0.05
    local = _ar1(rng.standard_normal((len(day_list), n)), 0.5) * 0.02
    weather = 1.0 + regional[:, None] + local  # (days, n)
    expected = profile[:, None] * mean_kw[None, :] * weather[day_of]  # (t, n)
    base = _ar1(rng.standard_normal((t, n)), 0.6)
    base *= expected
    base *= (NOISE_CV / np.sqrt(households))[None, :]  # independent households: sd grows with sqrt(households)
    base += expected
    np.maximum(base, 0.0, out=base)
    del expected

    evs = np.round(households * rng.uniform(0.10, 0.25, n)).astype(np.int64)
    ev = _ev_load(rng, evs, day_list, tz, index, weekday_of_day=day_list.day_of_week.to_numpy())
    measured = base + ev
    if faults:
        measured = _add_faults(rng, measured)
    peak = base.max(axis=0)
    limit = peak * rng.uniform(1.0, 1.1, n) + 1.0 * evs  # uncontrolled, 15-30 % of evenings go over
    ids = [str(c) for c in cable_ids]

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=index, columns=ids, copy=False)

    return DemoData(
        measured=frame(measured),
        ev_usage=frame(ev),
        base_load=frame(base),
        connections=dict(zip(ids, households.tolist(), strict=True)),
        evs=dict(zip(ids, evs.tolist(), strict=True)),
        limit_kw=dict(zip(ids, np.round(limit, 1).tolist(), strict=True)),
        holidays=holiday_set,
    )


def _ev_load(
    rng: np.random.Generator,
    evs: np.ndarray,
    days: pd.DatetimeIndex,
    tz: str,
    index: pd.DatetimeIndex,
    *,
    weekday_of_day: np.ndarray,
) -> np.ndarray:
    """EV charging per block and cable (t, n): sessions added as a difference array, then summed up."""
    t, n = len(index), len(evs)
    midnights = days.tz_localize(tz, nonexistent="shift_forward", ambiguous=True).tz_convert("UTC")
    day_pos = ((midnights - index[0]) // BLOCK).to_numpy(dtype=np.int64)
    weekend = weekday_of_day >= 5
    plug_prob = np.where(weekend, 0.35, 0.5)
    counts = rng.binomial(evs[None, :], plug_prob[:, None])  # sessions per (day, cable)
    day_of = np.repeat(np.repeat(np.arange(len(days)), n), counts.ravel())
    cable_of = np.repeat(np.tile(np.arange(n), len(days)), counts.ravel())
    sessions = len(day_of)
    arrive_h = np.where(weekend[day_of], rng.normal(15.0, 3.0, sessions), rng.normal(18.0, 1.5, sessions)).clip(
        6.0, 23.75
    )
    energy = rng.gamma(2.0, 5.0, sessions).clip(2.0, 40.0)
    power = rng.choice(EV_POWERS_KW, sessions, p=EV_POWER_SHARES)
    quarters = energy / power * 4.0
    full = np.floor(quarters).astype(np.int64)
    start = day_pos[day_of] + np.round(arrive_h * 4).astype(np.int64)
    inside = (start >= 0) & (start < t)  # sessions are whole or not at all
    start, full, power, quarters, cable_of = (a[inside] for a in (start, full, power, quarters, cable_of))
    part = quarters - full
    # a difference array, block-major like the frames: +power at the start, the partial last block, -rest
    at = np.concatenate([start, start + full, start + full + 1])
    amount = np.concatenate([power, power * (part - 1.0), -power * part])
    keep = at < t  # the end of a session cut off by the end of the data
    cables = np.tile(cable_of, 3)[keep]
    diff = np.zeros((t, n))
    np.add.at(diff.reshape(-1), at[keep] * n + cables, amount[keep])
    load = np.cumsum(diff, axis=0, out=diff)
    return np.maximum(load, 0.0, out=load)


def _add_faults(rng: np.random.Generator, measured: np.ndarray) -> np.ndarray:
    """Per cable: an 8-24 block gap, a 16-block stuck value and 3 spikes at random places."""
    out = measured.copy()
    t, n = out.shape
    for c in range(n):
        gap = rng.integers(0, t - 24)
        out[gap : gap + rng.integers(8, 25), c] = np.nan
        stuck = rng.integers(1, t - 16)
        out[stuck : stuck + 16, c] = out[stuck - 1, c]
        for at in rng.integers(0, t, 3):
            out[at, c] = out[at, c] * 4 + 50.0
    return out
