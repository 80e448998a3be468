"""`gridcap timeseries import/export` and `gridcap forecast run/backtest`, in process against a real
SQLite file and the embedded timeseries store in tmp_path."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import REPO, Cli, cli, demo, demo_template, ready  # noqa: F401 - fixtures

from service.domain.blocks import block_floor
from service.store import Database
from service.usecases import Context, forecasting, leases

WEEKS = 5


def weekly_kw(index: pd.DatetimeIndex) -> np.ndarray:
    hours = index.hour + index.minute / 60
    noise = np.random.default_rng(7).normal(0, 1.5, len(index))
    return np.asarray(40 + 30 * np.exp(-(((hours - 18.5) / 2.5) ** 2)) + noise, dtype="float64")


def write_csv(path: Path, weeks: int = WEEKS) -> pd.Series:
    end = block_floor(datetime.now(UTC))
    index = pd.date_range(end - timedelta(weeks=weeks), end, freq="15min", inclusive="left", tz=UTC)
    values = pd.Series(weekly_kw(index), index=index)
    lines = ["time,value", *(f"{t.isoformat()},{v:.3f}" for t, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return values


@pytest.fixture
def cable(ready: Cli) -> Cli:  # noqa: F811 - the fixture from test_cli
    assert (
        ready("cable", "add", "c1", "--name", "street", "--unit", "A", "--rated-limit", "250", "--base-load", "20") == 0
    ), ready.err
    return ready


def test_import_then_export_round_trips_and_forecast_run_uses_it(cable: Cli, tmp_path: Path) -> None:
    values = write_csv(tmp_path / "load.csv")
    assert cable("timeseries", "import", "--cable", "c1", "--unit", "KW", str(tmp_path / "load.csv")) == 0, cable.err
    assert f"{len(values)} points of cable c1 written to the embedded timeseries store" in cable.out

    start, end = values.index[0].isoformat(), (values.index[-1] + timedelta(minutes=15)).isoformat()
    assert cable("timeseries", "export", "--cable", "c1", "--from", start, "--to", end) == 0, cable.err
    lines = cable.out.splitlines()
    assert lines[0] == "time,value"
    assert len(lines) == len(values) + 1
    first_time, first_value = lines[1].split(",")
    assert datetime.fromisoformat(first_time) == values.index[0]
    assert float(first_value) == pytest.approx(values.iloc[0], abs=1e-3)

    report = cable.json("forecast", "run")
    assert report["failed"] == {}
    assert set(report["refreshed"]) == {"c1"}


def test_a_file_with_bad_rows_imports_nothing_and_names_the_lines(cable: Cli, tmp_path: Path) -> None:
    rows = [
        "time,value",
        "2026-11-01T00:30+01:00,10",
        "2026-11-01T00:45:00,11",  # naive
        "2026-11-01T01:00+01:00,twelve",
        "2026-11-01T00:15+01:00,13",  # goes back
        "2026-11-01T01:15+01:00,nan",
    ]
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    err = cable.fails(2, "timeseries", "import", "--cable", "c1", "--unit", "KW", str(tmp_path / "bad.csv"))
    assert "nothing was imported: 4 bad rows" in err
    for fragment in ("line 3", "no UTC offset", "line 4", "not a number", "line 5", "times must increase", "line 6"):
        assert fragment in err
    start = "2026-10-31T00:00+01:00"
    assert cable("timeseries", "export", "--cable", "c1", "--from", start, "--to", "2026-11-02T00:00+01:00") == 0
    assert cable.out.splitlines() == ["time,value"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cable", "nope", "--unit", "KW"], "nope"),
        (["--cable", "c1", "--unit", "MW"], "unit must be A"),
    ],
)
def test_import_refuses_unknown_cables_and_units(cable: Cli, tmp_path: Path, args: list[str], message: str) -> None:
    write_csv(tmp_path / "load.csv", weeks=1)
    assert message in cable.fails(2, "timeseries", "import", *args, str(tmp_path / "load.csv"))


def test_import_of_a_missing_file_says_so(cable: Cli, tmp_path: Path) -> None:
    err = cable.fails(2, "timeseries", "import", "--cable", "c1", "--unit", "KW", str(tmp_path / "none.csv"))
    assert "cannot read" in err


def test_forecast_run_without_measurements_fails_with_the_reason_and_the_fallback(cable: Cli) -> None:
    err = cable.fails(1, "forecast", "run")
    assert "forecasts failed on 1 of 1 cables" in err
    assert "historical peak" in err
    assert "c1" in cable.out


def test_backtest_prints_metrics_as_json_and_draws_the_plot(cable: Cli, tmp_path: Path) -> None:
    write_csv(tmp_path / "load.csv")
    assert cable("timeseries", "import", "--cable", "c1", "--unit", "KW", str(tmp_path / "load.csv")) == 0
    end = block_floor(datetime.now(UTC))
    start = (end - timedelta(days=7)).isoformat()
    plot = tmp_path / "backtest.png"
    assert cable("forecast", "backtest", "--cable", "c1", "--from", start, "--plot", str(plot), "--json") == 0, (
        cable.err
    )
    result = json.loads(cable.out)
    keys = {"mae", "rmae", "pinball", "coverage", "overload_rate", "utilisation"}
    assert keys <= set(result)
    assert {"last_week", "mean_weeks", "static"} <= set(result["baselines"])
    for metrics in result["baselines"].values():
        assert keys <= set(metrics)
    assert result["model"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 10_000

    assert cable("forecast", "backtest", "--cable", "c1", "--from", start) == 0, cable.err
    assert "(chosen)" in cable.out
    assert "RMAE" in cable.out


def test_gridcap_scheduler_runs_the_jobs_alone_and_forecasts_the_demo_cables(demo: Cli) -> None:  # noqa: F811
    """`gridcap scheduler` in its own process: it takes the lease, forecasts the demo cables from
    the demo measurements at once, and stops cleanly on SIGTERM, releasing the lease."""
    env = {**os.environ}  # carries the GRIDCAP_* variables the fixture set
    ctx = Context(Database(os.environ["GRIDCAP_DATABASE_URL"]))
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "scheduler"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        while forecasting.forecast(ctx, "demo-kerkstraat").status == "never" and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.5)
        assert forecasting.forecast(ctx, "demo-kerkstraat").status == "ok"
        holder = leases.holder(ctx, leases.SCHEDULER)
        assert holder is not None
        assert f":{process.pid}:" in holder
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        ctx.db.dispose()
    assert process.returncode == 0, output
    assert "gridcap scheduler: stopped" in output
    assert "Traceback" not in output
    assert leases.holder(ctx, leases.SCHEDULER) is None
