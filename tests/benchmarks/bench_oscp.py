"""Throughput and latency of RequestAdjustedCapacity over SOAP and JSON, against a bare Flask endpoint.

All three run under waitress on 127.0.0.1 with the same 4 threads, driven by 4 client threads for
a fixed time each, interleaved so that each figure has its baseline beside it. The bare endpoint
returns a fixed body of the same size as the SOAP answer. The gateway's requests are real
decisions, on SQLite and (with `make bench`, which starts one) on PostgreSQL: each client thread is
one CPO asking for one block, alternating between two values, so every request changes a budget,
writes the ledger and owes a push. The 4 CPOs share one cable: their requests are decided in
batches, one transaction each, and the figures say how many requests a transaction carried. Targets: SOAP >= 0.5 and
JSON >= 0.7 of the bare endpoint's throughput. Run with `make bench`.

Two more pairs of lines say where the limit lies. Both send the same requests through the same
gateway (credentials, rate limit, codec, record) and batching; "fixed" answers them without a
decision, "raw" (SQLite only) with `raw_decision`, the least a decision must read and write, in raw
SQL. The real decision does more than that, so it cannot beat the "raw" line on this machine.
"""

import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from bench_rest import serve
from flask import Flask, Response

from service.app import create_app, wiring
from service.domain.allocation import AdjustStatus, Reason
from service.domain.model import Binding, Cable, Cpo, Subscription
from service.domain.units import ZERO, Unit
from service.oscp.v1 import handlers
from service.oscp.v1 import messages as m
from service.oscp.v1.gateway import WSDL_DIR
from service.oscp.v1.json import JsonCodec
from service.oscp.v1.soap import SoapCodec, SoapVersion
from service.settings import Settings
from service.store import Database
from service.usecases import Context, capacity, cpos, grid

NOW = datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC)
BLOCK_START = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
PASSWORD = "benchmark password"  # noqa: S105
CLIENTS = 4
SECONDS = 6.0
ROUNDS = 2


def request_message(capacity: int) -> m.RequestAdjustedCapacityRequest:
    block = m.ForecastedBlock(
        Decimal(capacity),
        m.PhaseIndicator.ALL,
        m.UnitOfMeasure.A,
        BLOCK_START,
        BLOCK_START + timedelta(minutes=15),
    )
    return m.RequestAdjustedCapacityRequest("c1", (block,))


Send = Callable[[requests.Session, int, int], requests.Response]  # (session, CPO number, its request number)


def load(send: Send) -> tuple[float, list[float], float]:
    """Requests per second, latencies (ms) and CPU time per request (ms, of the whole process:
    server and client threads) of CLIENTS threads sending for SECONDS."""
    stop = time.perf_counter() + SECONDS
    times: list[list[float]] = [[] for _ in range(CLIENTS)]

    def client(i: int) -> None:
        with requests.Session() as http:
            n = 0
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = send(http, i, n)
                assert response.status_code == 200, response.text[:500]
                times[i].append((time.perf_counter() - started) * 1000)
                n += 1

    started, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    flat = [x for ts in times for x in ts]
    return len(flat) / elapsed, flat, cpu * 1000 / len(flat)


def percentiles(times: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return cuts[49], cuts[94]


def bare_app(body: bytes, content_type: str) -> Flask:
    app = Flask("bare")

    @app.post("/fixed")
    def fixed() -> Response:
        return Response(body, 200, content_type=content_type)

    return app


def test_request_adjusted_capacity_throughput(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(db_url)
    db.create_schema()
    batches = Decisions(monkeypatch, db)
    ctx = Context(db, clock=lambda: NOW)
    cable = Cable("c1", "bench", Unit.AMPERE, Decimal(400), 3, Decimal(230))
    grid.create_cable(ctx, cable, actor="bench")
    for i in range(CLIENTS):
        cpos.create_cpo(ctx, Cpo(f"cpo{i}", "bench", f"user{i}", "http://127.0.0.1:9/oscp", Binding.JSON), PASSWORD,
                        actor="bench")  # fmt: skip
        grid.subscribe(ctx, Subscription("c1", f"cpo{i}", Decimal(1), Decimal(0)), actor="bench")
    app = create_app(Settings(admin_token="b" * 32, log_level="WARNING", oscp_rate_per_minute=1_000_000), ctx)

    soap = SoapCodec(WSDL_DIR / "oscp-1.0-dso.wsdl", m.DSO_OPERATIONS)
    codec = JsonCodec(m.DSO_OPERATIONS)
    op = m.DSO_OPERATIONS["RequestAdjustedCapacity"]
    soap_bodies = [soap.encode_request(SoapVersion.SOAP11, op, request_message(v)) for v in (20, 21)]
    json_bodies = [codec.encode_request(request_message(v)) for v in (20, 21)]
    soap_headers = {"Content-Type": "text/xml; charset=utf-8"}
    json_headers = {"Content-Type": "application/json"}

    with serve(app) as url, requests.Session() as probe:
        sample = probe.post(f"{url}/oscp/1.0/soap", data=soap_bodies[0], headers=soap_headers, auth=("user0", PASSWORD))
        assert sample.status_code == 200, sample.text
        with serve(bare_app(sample.content, "text/xml; charset=utf-8")) as bare_url:

            def bare(http: requests.Session, _cpo: int, n: int) -> requests.Response:
                return http.post(f"{bare_url}/fixed", data=soap_bodies[n % 2], headers=soap_headers)

            def soap_call(http: requests.Session, cpo: int, n: int) -> requests.Response:
                auth = (f"user{cpo}", PASSWORD)
                return http.post(f"{url}/oscp/1.0/soap", data=soap_bodies[n % 2], headers=soap_headers, auth=auth)

            def json_call(http: requests.Session, cpo: int, n: int) -> requests.Response:
                auth = (f"user{cpo}", PASSWORD)
                path = f"{url}/oscp/1.0/json/RequestAdjustedCapacity"
                return http.post(path, data=json_bodies[n % 2], headers=json_headers, auth=auth)

            for send in (bare, soap_call, json_call):  # warm up: credentials cached, WSDL model loaded
                with requests.Session() as http:
                    for n in range(20):
                        assert send(http, n % CLIENTS, n).status_code == 200
            phases = [("bare", bare, "real")] + [
                (f"{name} {mode}" if mode != "real" else name, call, mode)
                for mode in batches.modes
                for name, call in (("soap", soap_call), ("json", json_call))
            ]
            results: dict[str, list[tuple[float, list[float], float]]] = {name: [] for name, _, _ in phases}
            transactions = dict.fromkeys(results, 0)
            for _ in range(ROUNDS):
                for name, sender, mode in phases:
                    before, batches.mode = batches.count, mode
                    results[name].append(load(sender))
                    if mode != "fixed" and name != "bare":
                        transactions[name] += batches.count - before
            batches.mode = "real"
    steps = breakdown(ctx, soap, codec, soap_bodies, json_bodies)
    wiring(app).close()
    db.dispose()

    print(f"\nRequestAdjustedCapacity, 1 block, {CLIENTS} client threads x {SECONDS:.0f} s x {ROUNDS} rounds, "
          f"waitress 4 threads, {db.dialect}")  # fmt: skip
    print(f"{'':10} {'req/s':>8} {'x bare':>8} {'p50 ms':>8} {'p95 ms':>8} {'CPU ms':>8} {'req/txn':>8}")
    bare_rate = statistics.mean(r for r, _, _ in results["bare"])
    for name, runs in results.items():
        rate = statistics.mean(r for r, _, _ in runs)
        latencies = [t for _, ts, _ in runs for t in ts]
        p50, p95 = percentiles(latencies)
        cpu_ms = statistics.mean(c for _, _, c in runs)
        per_txn = f"{len(latencies) / transactions[name]:8.2f}" if transactions[name] else ""
        print(f"{name:10} {rate:8.0f} {rate / bare_rate:8.2f} {p50:8.1f} {p95:8.1f} {cpu_ms:8.2f} {per_txn}")
    print("CPU ms: the process's CPU time per request, server and client threads together; the GIL")
    print("lets it use about one core, so throughput follows it.")
    print("fixed: the decision replaced by a fixed answer (the gateway alone); raw: by raw_decision, the")
    print("least a decision must read and write, in raw SQL (SQLite only).")
    print("In-process medians of one request's steps (ms):")
    for step, ms in steps.items():
        print(f"  {step:48} {ms:6.2f}")


class Decisions:
    """Counts the batches in which requests were decided (one transaction each, but for "fixed").
    `mode` chooses who decides: the use case ("real"), `raw_decision` ("raw") or a fixed answer
    without the database ("fixed")."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, db: Database) -> None:
        self.count = 0
        self.mode = "real"
        deciders = {"real": capacity._decide_requests, "fixed": fixed_decision}
        if db.dialect == "sqlite":
            deciders["raw"] = raw_decision
        self.modes = tuple(deciders)

        def counted(ctx: Context, cable_id: str, asks: Sequence[Any]) -> Any:
            self.count += 1
            return deciders[self.mode](ctx, cable_id, asks)

        monkeypatch.setattr(capacity, "_decide_requests", counted)


def fixed_decision(_ctx: Context, _cable_id: str, asks: Sequence[Any]) -> list[capacity.RequestResult]:
    """Every request granted, nothing read or written: what the gateway costs without a decision."""
    return [capacity.RequestResult(0, AdjustStatus.ACCEPTED, dict(a.wanted), dict(a.wanted), Unit.AMPERE, ZERO)
            for a in asks]  # fmt: skip


def raw_decision(ctx: Context, cable_id: str, asks: Sequence[Any]) -> list[capacity.RequestResult]:
    """The least a decision can do, in raw SQL on SQLite, in the same write transaction as the real
    one (the process's writer lock, BEGIN IMMEDIATE): read the block's free capacity and budgets,
    grant each request what fits, and write what every real decision writes (the decision; where a
    budget changed, the budget, its ledger line and the push owed), several rows a statement where
    the database allows it. The real decision also reads subscriptions, offline CPOs, notice periods,
    pending requests and usage, checks the horizon and the invariants, and converts every value
    through its column type."""
    at = ctx.clock().strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's DATETIME text on SQLite
    start = BLOCK_START.strftime("%Y-%m-%d %H:%M:%S.%f")
    in_block = (cable_id, start)
    with ctx.db.write((cable_id,)) as session:
        db = session.connection().connection.driver_connection
        assert isinstance(db, sqlite3.Connection)
        (free,) = db.execute(_FREE, in_block).fetchone()
        budgets = dict(db.execute(_BUDGETS, in_block).fetchall())
        results, budget_rows, ledger_rows, owed = [], [], [], []
        for ask in asks:
            (wanted,) = (int(v * 1000) for v in ask.wanted.values())  # stored in thousandths
            old = budgets.get(ask.cpo_id, 0)
            budgets[ask.cpo_id] = new = min(wanted, free - sum(budgets.values()) + old)
            status = AdjustStatus.ACCEPTED if new == wanted else AdjustStatus.PARTIALLY_ACCEPTED
            decision = (at, ask.actor, cable_id, ask.cpo_id, status.value, f"{ask.cpo_id} asked for {wanted / 1000}")
            (decision_id,) = db.execute(_DECISION, decision).fetchone()
            if new != old:
                reason = Reason.REQUEST_GRANTED if new > old else Reason.HANDED_BACK
                budget_rows.append((cable_id, start, ask.cpo_id, new, new))
                ledger_rows.append((decision_id, at, cable_id, ask.cpo_id, start, old, new, reason.value))
                owed.append((ask.cpo_id, cable_id, at, at))
            budget = {BLOCK_START: Decimal(new) / 1000}
            results.append(capacity.RequestResult(decision_id, status, budget, dict(ask.wanted), Unit.AMPERE, ZERO))
        db.executemany(_BUDGET, budget_rows)
        db.executemany(_LEDGER, ledger_rows)
        db.executemany(_OUTBOX, owed)
    return results


_FREE = 'SELECT "limit" - base_load - margin FROM blocks WHERE cable_id = ? AND start = ?'
_BUDGETS = "SELECT cpo_id, capacity FROM budgets WHERE cable_id = ? AND start = ?"
_DECISION = """INSERT INTO decisions (at, actor, action, cable_id, cpo_id, status, severity, message)
VALUES (?, ?, 'request', ?, ?, ?, 'info', ?) RETURNING id"""
_BUDGET = """INSERT INTO budgets (cable_id, start, cpo_id, capacity, told) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (cable_id, start, cpo_id) DO UPDATE SET capacity = excluded.capacity, told = excluded.told"""
_LEDGER = """INSERT INTO ledger (decision_id, at, cable_id, cpo_id, start, old_capacity, new_capacity, reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
_OUTBOX = "INSERT INTO outbox (cpo_id, cable_id, created_at, attempts, next_attempt_at) VALUES (?, ?, ?, 0, ?)"


def median_ms(action: Callable[[int], object], runs: int = 200) -> float:
    times = []
    for n in range(runs):
        started = time.perf_counter()
        action(n)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def breakdown(
    ctx: Context, soap: SoapCodec, codec: JsonCodec, soap_bodies: list[bytes], json_bodies: list[bytes]
) -> dict[str, float]:
    """Where a request's time goes: the codecs against the decision they carry."""
    op = m.DSO_OPERATIONS["RequestAdjustedCapacity"]
    call = soap.decode_request(soap_bodies[0], "text/xml")
    reply = handlers.request_adjusted_capacity(ctx, "cpo0", call.message)  # type: ignore[arg-type]
    return {
        "SOAP decode (parse, XSD, zeep model)": median_ms(
            lambda n: soap.decode_request(soap_bodies[n % 2], "text/xml")
        ),
        "SOAP encode": median_ms(lambda _: soap.encode_response(SoapVersion.SOAP11, op, reply)),
        "JSON decode (parse, JSON Schema)": median_ms(lambda n: codec.decode_request(op, json_bodies[n % 2])),
        "JSON encode": median_ms(lambda _: codec.encode_response(reply)),
        f"the decision (use case, {ctx.db.dialect})": median_ms(
            lambda n: handlers.request_adjusted_capacity(ctx, "cpo0", request_message(20 + n % 2))
        ),
    }
