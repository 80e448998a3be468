"""Prometheus metrics of the DSO service, served at GET /metrics.

Two kinds, read two ways:

- Process metrics (OSCP messages, job runs) are counted where they happen, in each server process.
  Under gunicorn with several workers, prometheus_client runs in multiprocess mode (the environment
  variable PROMETHEUS_MULTIPROC_DIR, read when prometheus_client is first imported): every worker
  writes its values to files there and a scrape sums them, so any worker answers for all of them.
  See service/gunicorn_conf.py.
- Database metrics (the push outbox, CPO presence) are the shared state of every process. They are
  read from the database at scrape time by `DatabaseCollector`, so every worker answers the same.

Labels stay bounded: operations, bindings and outcomes come from fixed sets (an operation name a
caller made up counts as "unknown"); CPO ids appear only in the database gauges (one series per
configured CPO), never on the per-message counters.
"""

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as _values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from service.usecases import Context
from service.usecases import oscp as uc

log = logging.getLogger("gridcap.metrics")

PUSH = "UpdateCableCapacityForecast"
# The gateway records an operation it does not serve as "unknown"; the labels check again, as each
# new value would be a new series in every worker (and a file row) forever.
# The OSCP 1.0 operations of both roles: listed, not imported from service.oscp.v1.messages, as
# service.api imports this module and must not depend on the OSCP transport (import-linter); a
# unit test keeps the two lists in step.
KNOWN_OPERATIONS = frozenset(
    {"RequestAdjustedCapacity", "UpdateAggregatedUsage", "GetCapacityForecast", "Heartbeat", PUSH}
)
UNKNOWN = "unknown"

DATABASE_READ_MAX_AGE_S = 5.0  # how long a scrape's database read is reused (Prometheus scrapes every 15 s+)
# 1 ms .. 10 s: a local answer takes milliseconds, a call to a slow CPO up to its push timeout.
OSCP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# 10 ms .. 15 min: a push round is quick, a forecast refresh over many cables takes minutes.
JOB_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

OSCP_REQUESTS = Counter(
    "gridcap_oscp_requests_total",
    "OSCP messages received from CPOs, by outcome: ok, a fault code, or RateLimited.",
    ["operation", "binding", "outcome"],
)
OSCP_FAULTS = Counter(
    "gridcap_oscp_faults_total",
    "OSCP messages received from CPOs that were not answered ok (a subset of gridcap_oscp_requests_total).",
    ["operation", "fault"],
)
OSCP_OUTGOING = Counter(
    "gridcap_oscp_outgoing_total",
    "OSCP calls the service made to CPOs (pushes and heartbeats), by outcome: ok, Rejected, a fault code, "
    "or Unreachable.",
    ["operation", "binding", "outcome"],
)
OSCP_PUSHES = Counter(
    "gridcap_oscp_pushes_total",
    "UpdateCableCapacityForecast calls to CPOs (a subset of gridcap_oscp_outgoing_total).",
    ["binding", "outcome"],
)
OSCP_DURATION = Histogram(
    "gridcap_oscp_duration_seconds",
    "Time to handle an OSCP message (direction in) or to complete a call to a CPO (direction out).",
    ["direction", "operation"],
    buckets=OSCP_BUCKETS_S,
)
# The label is job_name, not job: Prometheus sets `job` on every scraped series (the scrape job),
# and would rename ours to exported_job.
JOB_DURATION = Histogram(
    "gridcap_job_duration_seconds",
    "Wall time of one scheduled job run in the process holding the scheduler lease.",
    ["job_name"],
    buckets=JOB_BUCKETS_S,
)
JOB_FAILURES = Counter("gridcap_job_failures_total", "Scheduled job runs that failed.", ["job_name"])


def observe_job(job: str, duration_s: float, ok: bool) -> None:
    """Count one scheduled job run; the scheduler calls this after every run."""
    try:
        JOB_DURATION.labels(job_name=job).observe(duration_s)
        if not ok:
            JOB_FAILURES.labels(job_name=job).inc()
    except Exception:  # a metric must never fail a job (e.g. a missing multiprocess directory)
        log.exception("could not record the run of job %r", job)


def observe_message(*, direction: str, binding: str, operation: str, outcome: str, duration_s: float) -> None:
    """Count one OSCP message in (a CPO called us) or out (we called a CPO); the Recorder calls this."""
    operation = operation if operation in KNOWN_OPERATIONS else UNKNOWN
    try:
        OSCP_DURATION.labels(direction=direction, operation=operation).observe(duration_s)
        if direction == "in":
            OSCP_REQUESTS.labels(operation=operation, binding=binding, outcome=outcome).inc()
            if outcome != "ok":
                OSCP_FAULTS.labels(operation=operation, fault=outcome).inc()
            return
        OSCP_OUTGOING.labels(operation=operation, binding=binding, outcome=outcome).inc()
        if operation == PUSH:
            OSCP_PUSHES.labels(binding=binding, outcome=outcome).inc()
    except Exception:  # a metric must never take the gateway down
        log.exception("could not count an OSCP %s message %s", direction, operation)


class DatabaseCollector:
    """Gauges read from the shared database: the same answer from every worker.

    A read is reused for `max_age_s`, so scrapes (public, like the health check) cannot crowd OSCP
    requests out of the database. A failed read still yields gridcap_database_up 0, so the scrape
    answers with the process metrics.
    """

    def __init__(
        self, ctx: Context, *, max_age_s: float = DATABASE_READ_MAX_AGE_S, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._ctx = ctx
        self._max_age_s = max_age_s
        self._timer = timer
        self._lock = threading.Lock()
        self._last: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("gridcap_database_up", "1 if the database answered this scrape's queries, else 0.")
        try:
            families = self._read_cached()
        except Exception as exc:  # noqa: BLE001 - a scrape answers without the database (no traceback each time)
            log.warning("metrics: the database did not answer (%s: %s)", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read_cached(self) -> list[Metric]:
        with self._lock:  # one read at a time per process; the others wait for it and reuse it
            if self._last is not None and self._timer() - self._last[0] < self._max_age_s:
                return self._last[1]
            families = self._read()
            self._last = (self._timer(), families)
            return families

    def _read(self) -> list[Metric]:
        now = self._ctx.clock()
        presence = uc.presence(self._ctx)
        backlog = {str(row["cpo_id"]): row for row in uc.outbox(self._ctx)}
        depth = GaugeMetricFamily(
            "gridcap_outbox_depth", "Pushes owed to the CPO and not delivered yet.", labels=["cpo"]
        )
        age = GaugeMetricFamily(
            "gridcap_outbox_oldest_age_seconds",
            "Age of the oldest undelivered push to the CPO; 0 when none is owed.",
            labels=["cpo"],
        )
        online = GaugeMetricFamily(
            "gridcap_cpo_online",
            "1 if the CPO was heard from within three heartbeat intervals, else 0.",
            labels=["cpo"],
        )
        last_seen = GaugeMetricFamily(
            "gridcap_cpo_last_seen_timestamp_seconds",
            "When the CPO was last heard from (Unix time); absent if never.",
            labels=["cpo"],
        )
        # Every configured CPO gets a series, 0 included, so alerts see an empty outbox, not a gap.
        cpo_ids = sorted({p.cpo_id for p in presence} | set(backlog))
        for cpo_id in cpo_ids:
            row = backlog.get(cpo_id, {})
            count, oldest = row.get("depth", 0), row.get("oldest")
            depth.add_metric([cpo_id], float(count) if isinstance(count, int) else 0.0)
            age.add_metric([cpo_id], max(0.0, (now - oldest).total_seconds()) if isinstance(oldest, datetime) else 0.0)
        for p in presence:
            online.add_metric([p.cpo_id], 1.0 if p.online else 0.0)
            if p.last_seen_at is not None:
                last_seen.add_metric([p.cpo_id], p.last_seen_at.timestamp())
        return [depth, age, online, last_seen]


def multiprocess_dir() -> str | None:
    """The directory the processes write their values to, or None when they are kept in memory.

    prometheus_client chose when it was first imported; ask it rather than the environment now, so
    a variable set too late cannot make a scrape read files nobody wrote.
    """
    if _values.ValueClass is _values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def scrape_registry(database: DatabaseCollector, multiprocess_path: str | None) -> CollectorRegistry:
    """A fresh registry for one scrape: the process metrics of every worker (multiprocess) or of this
    process (the default registry), and the database gauges."""
    registry = CollectorRegistry()
    if multiprocess_path:
        MultiProcessCollector(registry, path=multiprocess_path)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)
    registry.register(database)
    return registry


def exposition(database: DatabaseCollector) -> tuple[bytes, str]:
    """The body and content type of a scrape (Prometheus text format)."""
    return generate_latest(scrape_registry(database, multiprocess_dir())), CONTENT_TYPE_LATEST
