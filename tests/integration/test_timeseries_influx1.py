"""The influx1 back-end against the real influxd 1.6.7: what the server is asked, auth, errors, timeouts."""

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from conftest import InfluxAuthServer, influx_query

from service.timeseries import LoadLayout, TimeseriesError, TimeseriesRejected, TimeseriesUnavailable
from service.timeseries import influx1 as influx1_module
from service.timeseries.influx1 import Influx1Store

pytestmark = pytest.mark.influx

KW = LoadLayout("cable_load", "value", "cable", "", "KW")
START = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
def store(influx_url: str, influx_database: str) -> Iterator[Influx1Store]:
    opened = Influx1Store(influx_url, influx_database, layout=KW, timeout_s=30)
    yield opened
    opened.close()


def spy_statements(store: Influx1Store, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record every InfluxQL statement and how many rows the server sent back for it."""
    seen: list[tuple[str, int]] = []
    original = store._query

    def query(statement: str, *, epoch: str = "s") -> Iterator[dict[str, Any]]:
        series = list(original(statement, epoch=epoch))
        seen.append((statement, sum(len(s.get("values", [])) for s in series)))
        return iter(series)

    monkeypatch.setattr(store, "_query", query)
    return seen


def test_the_server_computes_the_means(store: Influx1Store, monkeypatch: pytest.MonkeyPatch) -> None:
    seconds = pd.date_range(START, periods=3600, freq="1s", unit="ns")
    store.write_load("a", pd.Series(np.arange(3600, dtype=float), index=seconds))
    seen = spy_statements(store, monkeypatch)
    frame = store.read_load(["a"], START, START + timedelta(hours=1))
    assert frame["a"].tolist() == [449.5, 1349.5, 2249.5, 3149.5]
    ((statement, rows),) = seen
    assert 'GROUP BY time(15m), "cable" fill(none)' in statement
    assert rows == 4  # 4 means crossed the wire, not 3,600 points


def test_batches_bound_each_query(store: Influx1Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(influx1_module, "ROWS_PER_QUERY", 96 * 10)  # a day: 10 cables per query
    cables = [f"c{i}" for i in range(25)]
    for i, cable_id in enumerate(cables):
        store.write_load(cable_id, pd.Series([float(i)], index=pd.DatetimeIndex([START])))
    seen = spy_statements(store, monkeypatch)
    frame = store.read_load(cables, START, START + timedelta(days=1))
    assert len(seen) == 3
    assert sorted(statement.count(" OR ") + 1 for statement, _ in seen) == [5, 10, 10]
    assert frame.iloc[0].tolist() == [float(i) for i in range(25)]


@pytest.mark.parametrize("cable_id", ["ends with\\", "a\\ b", "a\\,b", "a\\=b", "line\nbreak", ""])
def test_ids_line_protocol_cannot_spell_are_refused(store: Influx1Store, cable_id: str) -> None:
    with pytest.raises(TimeseriesError, match=r"cannot|line break|non-empty"):
        store.write_load(cable_id, pd.Series([1.0], index=pd.DatetimeIndex([START])))


def test_a_field_type_conflict_is_rejected_with_the_servers_message(store: Influx1Store, influx_url: str) -> None:
    store.ensure_ready()
    body = f'cable_load,cable=a value="text" {int(START.timestamp())}'
    requests.post(f"{influx_url}/write", params={"db": store.database, "precision": "s"}, data=body, timeout=10)
    with pytest.raises(TimeseriesRejected, match="field type conflict"):
        store.write_load("a", pd.Series([1.0], index=pd.DatetimeIndex([START + timedelta(minutes=1)])))


def test_unknown_database_is_rejected(influx_url: str) -> None:
    store = Influx1Store(influx_url, f"missing_{uuid.uuid4().hex[:8]}", layout=KW)
    with pytest.raises(TimeseriesRejected, match=r"has no database 'missing_.*set influx_database"):
        store.read_load(["a"], START, START + timedelta(hours=1))
    with pytest.raises(TimeseriesRejected, match="has no database"):
        store.write_load("a", pd.Series([1.0], index=pd.DatetimeIndex([START])))
    store.close()


def test_ensure_ready_creates_the_database(influx_url: str) -> None:
    name = f"created_{uuid.uuid4().hex[:8]}"
    store = Influx1Store(influx_url, name, layout=KW)
    try:
        store.ensure_ready()
        store.ensure_ready()  # already there: fine
        store.write_load("a", pd.Series([2.0], index=pd.DatetimeIndex([START])))
        assert store.read_load(["a"], START, START + timedelta(minutes=15))["a"].tolist() == [2.0]
    finally:
        store.close()
        influx_query(influx_url, f'DROP DATABASE "{name}"')


def test_ping_answers_and_refuses_a_server_that_is_not_influxdb(store: Influx1Store) -> None:
    store.ping()

    def no_version(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(204)
        handler.end_headers()

    with serve(no_version) as url:
        other = Influx1Store(url, "gridcap", layout=KW)
        with pytest.raises(TimeseriesRejected, match="not InfluxDB"):
            other.ping()
        other.close()


# --- auth (a second influxd with auth-enabled = true) --------------------------------------------


def test_basic_auth_works(influx_auth_server: InfluxAuthServer) -> None:
    name = f"auth_{uuid.uuid4().hex[:8]}"
    user, password = influx_auth_server.admin
    store = Influx1Store(influx_auth_server.url, name, layout=KW, username=user, password=password)
    try:
        store.ensure_ready()
        store.write_load("a", pd.Series([4.0], index=pd.DatetimeIndex([START])))
        assert store.read_load(["a"], START, START + timedelta(minutes=15))["a"].tolist() == [4.0]
    finally:
        store.close()
        influx_query(influx_auth_server.url, f'DROP DATABASE "{name}"', auth=influx_auth_server.admin)


def test_answers_longer_than_the_servers_row_limit_arrive_whole(influx_auth_server: InfluxAuthServer) -> None:
    """Queries ask for chunked answers, which max-row-limit (1,000 on this server) does not cut."""
    name = f"rows_{uuid.uuid4().hex[:8]}"
    user, password = influx_auth_server.admin
    store = Influx1Store(influx_auth_server.url, name, layout=KW, username=user, password=password)
    try:
        store.ensure_ready()
        index = pd.date_range(START, periods=3000, freq="1min", unit="ns")
        for cable_id in ("a", "b"):
            store.write_load(cable_id, pd.Series(np.arange(3000, dtype=float), index=index))
        assert len(store.read_raw("a", START, START + timedelta(days=3))) == 3000
        frame = store.read_load(["a", "b"], START, START + timedelta(days=3))
        assert frame.notna().sum().tolist() == [200, 200]  # 3,000 minutes = 200 blocks each: 400 rows
        unchunked = influx_query(
            influx_auth_server.url, 'SELECT "value" FROM "cable_load"', auth=influx_auth_server.admin, db=name
        )
        assert len(unchunked["results"][0]["series"][0]["values"]) == 1000  # type: ignore[index]
    finally:
        store.close()
        influx_query(influx_auth_server.url, f'DROP DATABASE "{name}"', auth=influx_auth_server.admin)


def test_a_wrong_password_is_rejected_without_showing_it(influx_auth_server: InfluxAuthServer) -> None:
    wrong = "wrong-secret-123"
    store = Influx1Store(influx_auth_server.url, "gridcap", layout=KW, username="admin", password=wrong)
    for action in (
        store.ensure_ready,
        lambda: store.read_load(["a"], START, START + timedelta(hours=1)),
        lambda: store.write_load("a", pd.Series([1.0], index=pd.DatetimeIndex([START]))),
    ):
        with pytest.raises(
            TimeseriesRejected, match=r"refused user 'admin'.*check influx_username and influx_password"
        ) as caught:
            action()
        assert wrong not in str(caught.value)
        assert caught.value.status == 401
    store.close()


def test_no_credentials_are_rejected(influx_auth_server: InfluxAuthServer) -> None:
    store = Influx1Store(influx_auth_server.url, "gridcap", layout=KW)
    with pytest.raises(TimeseriesRejected, match="refused requests without a user"):
        store.read_load(["a"], START, START + timedelta(hours=1))
    store.close()


def test_a_user_without_privileges_is_told_what_to_ask_for(influx_auth_server: InfluxAuthServer) -> None:
    user, password = influx_auth_server.nobody
    name = f"nope_{uuid.uuid4().hex[:8]}"
    store = Influx1Store(influx_auth_server.url, name, layout=KW, username=user, password=password)
    with pytest.raises(TimeseriesRejected, match=r"would not create it.*administrator run CREATE DATABASE"):
        store.ensure_ready()
    influx_query(influx_auth_server.url, f'CREATE DATABASE "{name}"', auth=influx_auth_server.admin)
    try:
        with pytest.raises(TimeseriesRejected, match=r"user 'nobody' may not do this .*grant it READ/WRITE") as caught:
            store.write_load("a", pd.Series([1.0], index=pd.DatetimeIndex([START])))
        assert caught.value.status == 403
        with pytest.raises(TimeseriesRejected, match="not authorized"):
            store.read_load(["a"], START, START + timedelta(hours=1))
    finally:
        store.close()
        influx_query(influx_auth_server.url, f'DROP DATABASE "{name}"', auth=influx_auth_server.admin)


# --- a server that is down, slow or failing ------------------------------------------------------


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections in the kernel, never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        store = Influx1Store(url, "gridcap", layout=KW, timeout_s=1)
        started = time.monotonic()
        with pytest.raises(TimeseriesUnavailable, match=r"no answer within 1 s \(influx_timeout_s\)"):
            store.read_load(["a"], START, START + timedelta(hours=1))
        assert 0.9 < time.monotonic() - started < 5
        store.close()


def test_a_failing_server_is_unavailable_and_credentials_in_the_url_are_not_shown() -> None:
    def fail(handler: BaseHTTPRequestHandler) -> None:
        body = b'{"error":"timeout"}'
        handler.send_response(500)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with serve(fail) as url:
        store = Influx1Store(url.replace("http://", "http://user:pw-in-url@"), "gridcap", layout=KW)
        with pytest.raises(TimeseriesUnavailable, match=r"did not answer \(HTTP 500: timeout\)") as caught:
            store.read_load(["a"], START, START + timedelta(hours=1))
        assert "pw-in-url" not in str(caught.value)
        assert url in str(caught.value)
        store.close()


@contextlib.contextmanager
def serve(answer: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1 answering every request with `answer(handler)`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer(self)

        def do_POST(self) -> None:
            answer(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
