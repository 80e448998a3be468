"""The Prometheus metrics: what each observation counts, the database gauges, and GET /metrics.

The process metrics live in prometheus_client's default registry (this test process is not in
multiprocess mode), so each test compares values before and after; tests/integration/
test_metrics_gunicorn.py covers several worker processes.
"""

import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import Clock
from integration.oscp_support import kerkstraat
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.domain.model import Binding, Cpo, Subscription
from service.monitoring import metrics
from service.oscp.v1.messages import CPO_OPERATIONS, DSO_OPERATIONS
from service.oscp.v1.recorder import Recorder
from service.settings import Settings
from service.store import Database
from service.usecases import Context, cpos, grid, oscp

TOKEN = "an admin token of enough length"  # noqa: S105 - test credentials
CPO_PASSWORD = "a CPO password nobody may see"  # noqa: S105


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def families(body: bytes) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """name -> (type, [(sample name, labels, value)]) of a text exposition."""
    return {
        f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(body.decode())
    }


def samples(body: bytes, name: str) -> dict[str, float]:
    """The samples of a gauge family by their cpo label."""
    return {labels["cpo"]: v for _, labels, v in families(body)[name][1]}


@pytest.fixture
def ctx(tmp_path: Path, clock: Clock) -> Iterator[Context]:
    db = Database(f"sqlite:///{tmp_path / 'gridcap.db'}")
    db.create_schema()
    yield Context(db, clock=clock)
    db.dispose()


def make_grid(ctx: Context) -> None:
    """Cable c1 with CPOs a and b subscribed, and c (no cable): a owes 2 pushes, b 1, c none."""
    grid.create_cable(ctx, kerkstraat("c1"), actor="test")
    for cpo_id in ("a", "b", "c"):
        cpo = Cpo(cpo_id, f"CPO {cpo_id}", f"user-{cpo_id}", "http://127.0.0.1:9/oscp/1.0/soap", Binding.SOAP11)
        cpos.create_cpo(ctx, cpo, CPO_PASSWORD, actor="test")
    for cpo_id in ("a", "b"):
        grid.subscribe(ctx, Subscription("c1", cpo_id, Decimal(1), Decimal(5)), actor="test")


# --- the process metrics ------------------------------------------------------------------------


def test_the_known_operations_are_those_of_oscp_1_0() -> None:
    assert set(DSO_OPERATIONS) | set(CPO_OPERATIONS) == metrics.KNOWN_OPERATIONS


def test_a_message_in_counts_a_request_and_its_duration() -> None:
    labels = {"operation": "Heartbeat", "binding": "json", "outcome": "ok"}
    before = value("gridcap_oscp_requests_total", **labels)
    count = value("gridcap_oscp_duration_seconds_count", direction="in", operation="Heartbeat")
    total_s = value("gridcap_oscp_duration_seconds_sum", direction="in", operation="Heartbeat")
    le_5ms = value("gridcap_oscp_duration_seconds_bucket", direction="in", operation="Heartbeat", le="0.005")
    faults = value("gridcap_oscp_faults_total", operation="Heartbeat", fault="ok")

    metrics.observe_message(direction="in", binding="json", operation="Heartbeat", outcome="ok", duration_s=0.004)

    assert value("gridcap_oscp_requests_total", **labels) == before + 1
    assert value("gridcap_oscp_duration_seconds_count", direction="in", operation="Heartbeat") == count + 1
    assert value("gridcap_oscp_duration_seconds_sum", direction="in", operation="Heartbeat") == pytest.approx(
        total_s + 0.004
    )
    assert (
        value("gridcap_oscp_duration_seconds_bucket", direction="in", operation="Heartbeat", le="0.005") == le_5ms + 1
    )
    assert value("gridcap_oscp_faults_total", operation="Heartbeat", fault="ok") == faults == 0


@pytest.mark.parametrize("fault", ["NotAuthorized", "InvalidRequest", "RateLimited"])
def test_a_message_in_that_fails_counts_a_fault_too(fault: str) -> None:
    op = "RequestAdjustedCapacity"
    before = value("gridcap_oscp_requests_total", operation=op, binding="soap12", outcome=fault)
    faults = value("gridcap_oscp_faults_total", operation=op, fault=fault)

    metrics.observe_message(direction="in", binding="soap12", operation=op, outcome=fault, duration_s=0.01)

    assert value("gridcap_oscp_requests_total", operation=op, binding="soap12", outcome=fault) == before + 1
    assert value("gridcap_oscp_faults_total", operation=op, fault=fault) == faults + 1


def test_an_operation_a_caller_made_up_counts_as_unknown() -> None:
    before = value("gridcap_oscp_requests_total", operation="unknown", binding="json", outcome="InvalidRequest")
    metrics.observe_message(
        direction="in", binding="json", operation="Made-Up-1234", outcome="InvalidRequest", duration_s=0.001
    )
    after = value("gridcap_oscp_requests_total", operation="unknown", binding="json", outcome="InvalidRequest")
    assert after == before + 1
    assert (
        REGISTRY.get_sample_value(
            "gridcap_oscp_requests_total", {"operation": "Made-Up-1234", "binding": "json", "outcome": "InvalidRequest"}
        )
        is None
    )


@pytest.mark.parametrize(("operation", "pushes"), [("UpdateCableCapacityForecast", 1), ("Heartbeat", 0)])
def test_a_call_out_counts_as_outgoing_and_a_push_as_a_push(operation: str, pushes: int) -> None:
    outgoing = value("gridcap_oscp_outgoing_total", operation=operation, binding="soap11", outcome="Unreachable")
    pushed = value("gridcap_oscp_pushes_total", binding="soap11", outcome="Unreachable")
    incoming = value("gridcap_oscp_requests_total", operation=operation, binding="soap11", outcome="Unreachable")
    count = value("gridcap_oscp_duration_seconds_count", direction="out", operation=operation)

    metrics.observe_message(
        direction="out", binding="soap11", operation=operation, outcome="Unreachable", duration_s=2.0
    )

    assert value("gridcap_oscp_outgoing_total", operation=operation, binding="soap11", outcome="Unreachable") == (
        outgoing + 1
    )
    assert value("gridcap_oscp_pushes_total", binding="soap11", outcome="Unreachable") == pushed + pushes
    assert value("gridcap_oscp_requests_total", operation=operation, binding="soap11", outcome="Unreachable") == (
        incoming
    )
    assert value("gridcap_oscp_duration_seconds_count", direction="out", operation=operation) == count + 1


def test_the_recorder_counts_what_it_records(ctx: Context) -> None:
    labels = {"operation": "GetCapacityForecast", "binding": "soap11", "outcome": "UnknownCable"}
    before = value("gridcap_oscp_requests_total", **labels)
    recorder = Recorder(ctx)
    try:
        recorder.record(
            direction="in",
            cpo_id="a",
            binding="soap11",
            operation="GetCapacityForecast",
            outcome="UnknownCable",
            http_status=500,
            started=time.perf_counter(),
        )
    finally:
        recorder.close()
    assert value("gridcap_oscp_requests_total", **labels) == before + 1


def test_observe_job_counts_runs_durations_and_failures() -> None:
    job = "unit-test job"
    runs = value("gridcap_job_duration_seconds_count", job_name=job)
    total_s = value("gridcap_job_duration_seconds_sum", job_name=job)
    failures = value("gridcap_job_failures_total", job_name=job)

    metrics.observe_job(job, 1.5, True)
    metrics.observe_job(job, 30.0, False)

    assert value("gridcap_job_duration_seconds_count", job_name=job) == runs + 2
    assert value("gridcap_job_duration_seconds_sum", job_name=job) == pytest.approx(total_s + 31.5)
    assert value("gridcap_job_duration_seconds_bucket", job_name=job, le="30.0") == runs + 2
    assert value("gridcap_job_failures_total", job_name=job) == failures + 1


def test_the_exposition_names_every_metric_with_its_type_and_labels(ctx: Context) -> None:
    metrics.observe_message(direction="in", binding="json", operation="Heartbeat", outcome="ok", duration_s=0.001)
    metrics.observe_message(
        direction="in", binding="json", operation="Heartbeat", outcome="NotAuthorized", duration_s=0.001
    )
    metrics.observe_message(direction="out", binding="json", operation=metrics.PUSH, outcome="ok", duration_s=0.1)
    metrics.observe_job("push", 0.2, False)
    make_grid(ctx)

    body, content_type = metrics.exposition(metrics.DatabaseCollector(ctx))

    assert content_type.startswith("text/plain")
    found = families(body)
    expected = {  # family (counters without _total) -> (type, label names)
        "gridcap_oscp_requests": ("counter", {"operation", "binding", "outcome"}),
        "gridcap_oscp_faults": ("counter", {"operation", "fault"}),
        "gridcap_oscp_outgoing": ("counter", {"operation", "binding", "outcome"}),
        "gridcap_oscp_pushes": ("counter", {"binding", "outcome"}),
        "gridcap_oscp_duration_seconds": ("histogram", {"direction", "operation"}),
        "gridcap_job_duration_seconds": ("histogram", {"job_name"}),
        "gridcap_job_failures": ("counter", {"job_name"}),
        "gridcap_database_up": ("gauge", set()),
        "gridcap_outbox_depth": ("gauge", {"cpo"}),
        "gridcap_outbox_oldest_age_seconds": ("gauge", {"cpo"}),
        "gridcap_cpo_online": ("gauge", {"cpo"}),
    }
    for name, (kind, labels) in expected.items():
        assert name in found, name
        assert found[name][0] == kind, name
        for sample_name, sample_labels, _ in found[name][1]:
            if not sample_name.endswith("_created"):
                assert set(sample_labels) - {"le"} == labels, (sample_name, sample_labels)


# --- the database gauges ------------------------------------------------------------------------


def test_the_database_gauges_show_the_outbox_and_presence_of_every_cpo(ctx: Context, clock: Clock) -> None:
    make_grid(ctx)
    owed = {row["cpo_id"]: row["depth"] for row in oscp.outbox(ctx)}
    assert owed == {"a": 2, "b": 1}  # what the gauges must show
    clock.advance(timedelta(seconds=90))
    oscp.seen(ctx, "a")  # heard from now; b and c never

    body, _ = metrics.exposition(metrics.DatabaseCollector(ctx))

    assert families(body)["gridcap_database_up"][1][0][2] == 1
    assert samples(body, "gridcap_outbox_depth") == {"a": 2, "b": 1, "c": 0}
    assert samples(body, "gridcap_outbox_oldest_age_seconds") == {"a": 90, "b": 90, "c": 0}
    assert samples(body, "gridcap_cpo_online") == {"a": 1, "b": 0, "c": 0}
    assert samples(body, "gridcap_cpo_last_seen_timestamp_seconds") == {"a": clock.now.timestamp()}


class Accepting:
    """A CPO link whose every push is accepted."""

    def push(self, cpo: Cpo, forecasts: object) -> None:
        return None

    def heartbeat(self, cpo: Cpo) -> None:
        return None


def test_the_database_gauges_follow_delivery(ctx: Context) -> None:
    make_grid(ctx)

    oscp.deliver_pushes(ctx, Accepting())  # type: ignore[arg-type]
    body, _ = metrics.exposition(metrics.DatabaseCollector(ctx))
    assert samples(body, "gridcap_outbox_depth") == {"a": 0, "b": 0, "c": 0}


@pytest.mark.parametrize("broken", ["no schema", "no such directory"])
def test_a_scrape_answers_without_the_database(tmp_path: Path, broken: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "empty.db" if broken == "no schema" else tmp_path / "missing" / "gridcap.db"
    db = Database(f"sqlite:///{path}")
    metrics.observe_message(direction="in", binding="json", operation="Heartbeat", outcome="ok", duration_s=0.001)
    try:
        body, _ = metrics.exposition(metrics.DatabaseCollector(Context(db)))
    finally:
        db.dispose()
    found = families(body)
    assert found["gridcap_database_up"][1][0][2] == 0
    assert "gridcap_outbox_depth" not in found
    requests = found["gridcap_oscp_requests"][1]
    assert any(labels.get("operation") == "Heartbeat" and v >= 1 for _, labels, v in requests)
    assert "the database did not answer" in caplog.text


# --- GET /metrics -------------------------------------------------------------------------------


def test_get_metrics_needs_no_token_and_reveals_no_secret(ctx: Context) -> None:
    make_grid(ctx)
    client = create_app(Settings(admin_token=TOKEN), ctx).test_client()

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert response.headers["Cache-Control"] == "no-store"
    assert samples(response.data, "gridcap_outbox_depth") == {"a": 2, "b": 1, "c": 0}
    text = response.get_data(as_text=True)
    assert TOKEN not in text
    assert CPO_PASSWORD not in text
    assert "user-a" not in text  # CPO usernames are half a credential; ids are enough


def test_get_metrics_answers_200_when_the_database_is_gone(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'missing' / 'gridcap.db'}")
    client = create_app(Settings(admin_token=TOKEN), Context(db)).test_client()
    response = client.get("/metrics")
    db.dispose()
    assert response.status_code == 200
    assert families(response.data)["gridcap_database_up"][1][0][2] == 0
    assert "Traceback" not in response.get_data(as_text=True)


def test_a_database_read_is_reused_for_a_few_seconds(ctx: Context) -> None:
    make_grid(ctx)
    now_s = [100.0]
    database = metrics.DatabaseCollector(ctx, max_age_s=5.0, timer=lambda: now_s[0])
    assert samples(metrics.exposition(database)[0], "gridcap_outbox_depth") == {"a": 2, "b": 1, "c": 0}

    oscp.deliver_pushes(ctx, Accepting())  # type: ignore[arg-type]
    now_s[0] += 4.9  # a flood of scrapes costs the database one read per few seconds
    assert samples(metrics.exposition(database)[0], "gridcap_outbox_depth") == {"a": 2, "b": 1, "c": 0}
    now_s[0] += 0.2
    assert samples(metrics.exposition(database)[0], "gridcap_outbox_depth") == {"a": 0, "b": 0, "c": 0}
