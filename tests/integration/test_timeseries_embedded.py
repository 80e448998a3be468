"""The embedded SQLite store: its file, its speed, and use from several threads."""

import sqlite3
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.timeseries import LoadLayout, TimeseriesError
from service.timeseries.embedded import EmbeddedStore

KW = LoadLayout("cable_load", "value", "cable", "", "KW")
START = datetime(2026, 9, 7, tzinfo=UTC)


def test_the_file_is_private_in_a_new_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "timeseries.db"
    store = EmbeddedStore(path, layout=KW)
    store.write_load("a", pd.Series([1.0], index=pd.DatetimeIndex([START])))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for sidecar in path.parent.glob("timeseries.db-*"):  # -wal and -shm, while they exist
        assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    store.close()


def test_eight_weeks_of_four_cables_in_well_under_a_second(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "timeseries.db", layout=KW)
    end = START + timedelta(weeks=8)
    index = pd.date_range(START, end, freq="15min", inclusive="left", unit="ns")
    rng = np.random.default_rng(1)
    for cable_id in "abcd":
        store.write_load(cable_id, pd.Series(rng.uniform(0, 100, len(index)), index=index))
    started = time.perf_counter()
    frame = store.read_load(list("abcd"), START, end)
    elapsed = time.perf_counter() - started
    assert frame.shape == (5376, 4)
    assert frame.notna().all().all()
    assert elapsed < 1.0, f"read_load took {elapsed:.2f} s"


def test_threads_share_one_store(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "timeseries.db", layout=KW)
    errors: list[BaseException] = []

    def work(cable_id: str) -> None:
        try:
            for hour in range(10):
                moment = START + timedelta(hours=hour)
                store.write_load(cable_id, pd.Series([float(hour)], index=pd.DatetimeIndex([moment])))
                store.read_load([cable_id], START, START + timedelta(hours=10))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"c{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    frame = store.read_load([f"c{i}" for i in range(6)], START, START + timedelta(hours=10))
    assert frame.notna().sum().tolist() == [10] * 6


def test_the_unit_is_fixed_when_the_file_is_made(tmp_path: Path) -> None:
    EmbeddedStore(tmp_path / "timeseries.db", layout=KW).ensure_ready()
    amperes = EmbeddedStore(tmp_path / "timeseries.db", layout=LoadLayout("m", "f", "cable", "", "A"))
    with pytest.raises(TimeseriesError, match="holds load in KW, but load_unit is A"):
        amperes.read_load(["a"], START, START + timedelta(hours=1))


def test_a_file_that_is_not_sqlite_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "timeseries.db"
    path.write_text("not a database\n" * 100, encoding="utf-8")
    with pytest.raises(TimeseriesError, match="not a usable timeseries file"):
        EmbeddedStore(path, layout=KW).ensure_ready()


def test_a_directory_in_the_way_is_reported(tmp_path: Path) -> None:
    (tmp_path / "timeseries.db").mkdir()
    with pytest.raises(TimeseriesError, match=r"cannot create the timeseries file .*check timeseries_path"):
        EmbeddedStore(tmp_path / "timeseries.db", layout=KW).ping()
