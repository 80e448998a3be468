"""The influx2 back-end: the real influxdb-client against recorded InfluxDB 2.x answers on loopback.

tests/contract/influx2/ holds the responses (annotated CSV and JSON, see its README); a small HTTP
server on 127.0.0.1 serves them, records what the client sent, and the tests check the Flux text,
the written line protocol and the frames parsed from the answers.
"""

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from service.timeseries import LoadLayout, Point, TimeseriesRejected, TimeseriesUnavailable
from service.timeseries.influx2 import Influx2Store

RECORDED = Path(__file__).parents[1] / "contract" / "influx2"
KW = LoadLayout("cable_load", "value", "cable", "", "KW")
T = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
TOKEN = "test-token"  # noqa: S105 - the recorded server's token


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeInflux2:
    """Answers each path with the recorded file set for it; keeps every request."""

    url: str = ""
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def answer(self, path: str, status: int, recorded: str = "") -> None:
        self.answers[path] = (status, recorded)

    def sent(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def flux(self) -> str:
        (request,) = self.sent("/api/v2/query")
        return str(json.loads(request.body)["query"])


@pytest.fixture
def influx2() -> Iterator[FakeInflux2]:
    fake = FakeInflux2()
    fake.answer("/ping", 204)
    fake.answer("/api/v2/write", 204)

    class Handler(BaseHTTPRequestHandler):
        def handle_request(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            fake.requests.append(
                Recorded(self.command, parts.path, parse_qs(parts.query), dict(self.headers), self.rfile.read(length))
            )
            status, name = fake.answers.get(parts.path, (404, "error_404_query_bucket.json"))
            body = (RECORDED / name).read_bytes() if name else b""
            if name.endswith(".csv"):
                body = body.replace(b"\n", b"\r\n")  # as InfluxDB sends it
            self.send_response(status)
            self.send_header("X-Influxdb-Version", "v2.7.10")
            self.send_header("X-Influxdb-Build", "OSS")
            if body:
                kind = "text/csv; charset=utf-8" if name.endswith(".csv") else "application/json; charset=utf-8"
                self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = handle_request  # noqa: N815 - http.server's names

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def open_store(url: str, layout: LoadLayout = KW, timeout_s: float = 10) -> Influx2Store:
    return Influx2Store(url, token=TOKEN, org="dso", bucket="gridcap", layout=layout, timeout_s=timeout_s)


def test_read_load_sends_the_flux_and_parses_the_means(influx2: FakeInflux2) -> None:
    influx2.answer("/api/v2/query", 200, "load_mean.csv")
    store = open_store(influx2.url)
    special = 'with space, "quote"'
    frame = store.read_load(["a", special, "none"], T, T + timedelta(hours=1))
    store.close()

    (request,) = influx2.sent("/api/v2/query")
    assert request.query == {"org": ["dso"]}
    assert request.headers["Authorization"] == f"Token {TOKEN}"
    assert influx2.flux() == (
        'from(bucket: "gridcap")\n'
        "  |> range(start: 2026-11-02T12:00:00Z, stop: 2026-11-02T13:00:00Z)\n"
        '  |> filter(fn: (r) => r._measurement == "cable_load" and r._field == "value")\n'
        '  |> filter(fn: (r) => r["cable"] == "a" or r["cable"] == "with space, \\"quote\\"" or r["cable"] == "none")\n'
        '  |> group(columns: ["cable"])\n'
        '  |> aggregateWindow(every: 15m, fn: mean, createEmpty: false, timeSrc: "_start")\n'
        '  |> keep(columns: ["_time", "_value", "cable"])\n'
    )
    assert list(frame.columns) == ["a", special, "none"]
    assert frame.index.equals(pd.date_range(T, periods=4, freq="15min", unit="ns", name="time"))
    np.testing.assert_array_equal(frame["a"].to_numpy(), [10.5, 11.0, np.nan, 12.25])
    np.testing.assert_array_equal(frame[special].to_numpy(), [np.nan, np.nan, 3.125, np.nan])
    assert frame["none"].isna().all()


@pytest.mark.parametrize(("unit", "highest", "expected"), [("A", False, 30.0), ("KW", False, 60.0), ("KW", True, 30.0)])
def test_phases_are_grouped_by_the_server_and_combined_here(
    influx2: FakeInflux2, unit: str, highest: bool, expected: float
) -> None:
    influx2.answer("/api/v2/query", 200, "load_mean_phases.csv")
    store = open_store(influx2.url, LoadLayout("cable_load", "value", "cable", "phase", unit))
    frame = store.read_load(["c"], T, T + timedelta(hours=1), highest_phase=highest)
    store.close()
    assert '|> group(columns: ["cable", "phase"])' in influx2.flux()
    assert frame["c"].iloc[0] == expected
    assert frame["c"].iloc[1:].isna().all()  # 12:15 has no L3: missing, not low


def test_read_raw(influx2: FakeInflux2) -> None:
    influx2.answer("/api/v2/query", 200, "raw.csv")
    store = open_store(influx2.url)
    raw = store.read_raw("a", T, T + timedelta(minutes=1, microseconds=1))
    store.close()
    assert "range(start: 2026-11-02T12:00:00Z, stop: 2026-11-02T12:01:00.000001000Z)" in influx2.flux()
    assert '|> filter(fn: (r) => r["cable"] == "a")' in influx2.flux()
    assert raw.tolist() == [1.5, 2.0, 2.75]
    assert list(raw.index) == [T + timedelta(seconds=s) for s in (0.25, 1, 2)]
    assert str(raw.index.tz) == "UTC"


def test_an_empty_answer_gives_an_empty_frame(influx2: FakeInflux2) -> None:
    influx2.answer("/api/v2/query", 200, "empty.csv")
    store = open_store(influx2.url)
    frame = store.read_load(["a"], T, T + timedelta(minutes=30))
    store.close()
    assert frame.shape == (2, 1)
    assert frame["a"].isna().all()


def test_write_load_posts_line_protocol_with_second_precision(influx2: FakeInflux2) -> None:
    store = open_store(influx2.url, LoadLayout("cable_load", "value", "cable", "phase", "A"))
    index = pd.date_range(T, periods=3, freq="1min", unit="ns").tz_convert("Europe/Amsterdam")
    assert store.write_load("a b", pd.Series([1.0, np.nan, 2.5], index=index), phase="L1") == 2
    store.close()
    (request,) = influx2.sent("/api/v2/write")
    assert request.query == {"org": ["dso"], "bucket": ["gridcap"], "precision": ["s"]}
    assert request.body.decode() == (
        "cable_load,cable=a\\ b,phase=L1 value=1.0 1793620800\ncable_load,cable=a\\ b,phase=L1 value=2.5 1793620920"
    )


def test_write_points_batches_with_nanosecond_precision(influx2: FakeInflux2) -> None:
    store = open_store(influx2.url)
    points = [
        Point("gridcap_capacity", {"cable": "a"}, {"free": float(i)}, T + timedelta(minutes=i)) for i in range(7001)
    ]
    store.write_points(points)
    store.close()
    requests = influx2.sent("/api/v2/write")
    assert [len(r.body.decode().split("\n")) for r in requests] == [5000, 2001]
    assert requests[0].query["precision"] == ["ns"]
    assert requests[0].body.decode().split("\n")[1] == "gridcap_capacity,cable=a free=1.0 1793620860000000000"


def test_read_points_merges_fields_of_one_series_and_time(influx2: FakeInflux2) -> None:
    influx2.answer("/api/v2/query", 200, "points.csv")
    store = open_store(influx2.url)
    points = store.read_points("gridcap_forecast", T, T + timedelta(hours=1), tags={"cable": "a b"})
    store.close()
    assert influx2.flux().endswith(
        '  |> filter(fn: (r) => r._measurement == "gridcap_forecast" and r["cable"] == "a b")\n'
    )
    tags = {"cable": "a b", "issued_at": "2026-11-01T12:00:00Z"}
    assert [(p.time, dict(p.tags), dict(p.fields)) for p in points] == [
        (T, tags, {"p50": 10.5, "p95": 14.0, "members": 3, "calibrated": True}),
        (T + timedelta(minutes=15), tags, {"p50": 11.0, "p95": 15.25}),
    ]


def test_ensure_ready_checks_the_bucket(influx2: FakeInflux2) -> None:
    store = open_store(influx2.url)
    influx2.answer("/api/v2/buckets", 200, "buckets_found.json")
    store.ensure_ready()
    assert influx2.sent("/api/v2/buckets")[0].query["name"] == ["gridcap"]
    influx2.answer("/api/v2/buckets", 200, "buckets_none.json")
    with pytest.raises(TimeseriesRejected, match=r"no bucket 'gridcap'.*influx bucket create --name gridcap --org dso"):
        store.ensure_ready()
    store.ping()
    store.close()


@pytest.mark.parametrize(
    ("path", "status", "recorded", "message"),
    [
        ("/api/v2/query", 401, "error_401.json", r"refused the token \(unauthorized access\); check influx_token"),
        ("/api/v2/query", 404, "error_404_query_bucket.json", r"could not find bucket .*check influx_org"),
        ("/api/v2/query", 400, "error_400_query.json", r"HTTP 400: compilation failed"),
        ("/api/v2/query", 200, "query_error.csv", r"refused the query: runtime error .*string == float"),
        ("/api/v2/write", 404, "error_404_write_bucket.json", r'bucket "gridcap" not found.*influx bucket create'),
        ("/api/v2/write", 401, "error_401.json", r"refused the token"),
    ],
)
def test_refusals_are_rejected_with_the_servers_message(
    influx2: FakeInflux2, path: str, status: int, recorded: str, message: str
) -> None:
    influx2.answer(path, status, recorded)
    store = open_store(influx2.url)
    if path == "/api/v2/write":
        action = lambda: store.write_load("a", pd.Series([1.0], index=pd.DatetimeIndex([T])))  # noqa: E731
    else:
        action = lambda: store.read_load(["a"], T, T + timedelta(hours=1))  # noqa: E731
    with pytest.raises(TimeseriesRejected, match=message) as caught:
        action()
    store.close()
    assert TOKEN not in str(caught.value)


def test_a_failing_server_is_unavailable(influx2: FakeInflux2) -> None:
    influx2.answer("/api/v2/query", 503, "error_503.json")
    store = open_store(influx2.url)
    with pytest.raises(TimeseriesUnavailable, match=r"did not answer \(HTTP 503: service unavailable\)"):
        store.read_load(["a"], T, T + timedelta(hours=1))
    store.close()
