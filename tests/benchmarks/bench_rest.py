"""Latency of GET /api/v1/cables/{id}/capacity over real HTTP, against a bare Flask endpoint.

A cable with 20 subscribed CPOs, the whole 48-hour horizon (192 blocks) per request, the app on
SQLite under waitress on 127.0.0.1, 300 sequential requests after a warm-up. Prints figures; the
target is p95 < 50 ms. Run with `make bench` (or pytest --benchmarks tests/benchmarks/bench_rest.py).
"""

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, jsonify
from waitress import wasyncore
from waitress.server import create_server

from service.api.capacity import view_json
from service.api.schemas import CapacityViewSchema
from service.app import create_app
from service.settings import Settings
from service.store import Database
from service.usecases import Context, capacity

TOKEN = "b" * 32
NOW = datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC)
CPOS = 20
WARM_UP = 30
RUNS = 300


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()


def seed(app: Flask) -> None:
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cable = {"id": "c1", "name": "bench", "unit": "A", "rated_limit": 400, "phases": 3, "voltage_v": 230}
    assert client.post("/api/v1/cables", json=cable, headers=auth).status_code == 201
    for i in range(CPOS):
        cpo = {"id": f"cpo-{i:02}", "name": f"CPO {i}", "username": f"cpo{i}", "password": "benchmark password",
               "endpoint_url": "https://cpo.example/oscp", "binding": "json"}  # fmt: skip
        assert client.post("/api/v1/cpos", json=cpo, headers=auth).status_code == 201
        sub = {"cpo_id": f"cpo-{i:02}", "weight": 1 + i % 3, "guaranteed_minimum": 1}
        assert client.post("/api/v1/cables/c1/subscriptions", json=sub, headers=auth).status_code == 201


def latencies(url: str, headers: dict[str, str]) -> tuple[list[float], int]:
    with requests.Session() as http:
        for _ in range(WARM_UP):
            http.get(url, headers=headers, timeout=30).raise_for_status()
        times = []
        size = 0
        for _ in range(RUNS):
            started = time.perf_counter()
            response = http.get(url, headers=headers, timeout=30)
            response.raise_for_status()
            size = len(response.content)
            times.append((time.perf_counter() - started) * 1000)
    return times, size


def figures(times: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def median_ms(action: Callable[[], object], runs: int = 50) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def breakdown(app: Flask, ctx: Context) -> dict[str, float]:
    """In-process medians of the steps of one request: where the time goes."""
    view = capacity.capacity(ctx, "c1")
    schema = CapacityViewSchema()
    with app.app_context():
        return {
            "use case (store: load_book, ensure_horizon)": median_ms(lambda: capacity.capacity(ctx, "c1")),
            "API: view_json (the dump in use)": median_ms(lambda: view_json(view)),
            "API: marshmallow dump (for comparison)": median_ms(lambda: schema.dump(view), runs=20),
            "API: jsonify": median_ms(lambda: jsonify(view_json(view))),
        }


def bare_app(body: Any) -> Flask:
    app = Flask("bare")

    @app.get("/capacity")
    def capacity() -> Response:
        return jsonify(body)

    return app


def test_rest_capacity_latency(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'bench.db'}")
    db.create_schema()
    ctx = Context(db, clock=lambda: NOW)
    app = create_app(Settings(admin_token=TOKEN, log_level="WARNING"), ctx)
    seed(app)
    try:
        with serve(app) as base:
            url = f"{base}/api/v1/cables/c1/capacity"
            payload = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
            assert len(payload["blocks"]) == 192
            assert len(payload["blocks"][-1]["budgets"]) == CPOS
            api_times, size = latencies(url, {"Authorization": f"Bearer {TOKEN}"})
        steps = breakdown(app, ctx)
        with serve(bare_app(payload)) as base:
            bare_times, bare_size = latencies(f"{base}/capacity", {})
    finally:
        db.dispose()

    api, bare = figures(api_times), figures(bare_times)
    print(f"\nGET /cables/c1/capacity: {CPOS} CPOs, 192 blocks, {size} bytes, {RUNS} sequential requests (waitress)")
    print(f"  gridcap API : p50 {api['p50']:6.1f} ms  p95 {api['p95']:6.1f} ms  p99 {api['p99']:6.1f} ms")
    print(f"  bare Flask  : p50 {bare['p50']:6.1f} ms  p95 {bare['p95']:6.1f} ms  p99 {bare['p99']:6.1f} ms"
          f"  ({bare_size} bytes, jsonify of the same body)")  # fmt: skip
    print("  ratio       : " + "  ".join(f"{k} {api[k] / bare[k]:5.1f}x" for k in ("p50", "p95", "p99")))
    print(f"  target p95 < 50 ms: {'met' if api['p95'] < 50 else 'NOT met'}")
    print("  where the time goes (in-process medians):")
    for step, ms in steps.items():
        print(f"    {step:45} {ms:6.1f} ms")
