"""Operational data for Grafana: the SQL record of what happened, counted per minute into InfluxDB.

The database stays the source of truth; this is a copy shaped for dashboards (names in
`service.monitoring.names`). Each export reads the rows of a time window in one read transaction,
aggregates them here and writes the points in one call:

  * OSCP traffic, budget changes (the ledger) and capacity requests per whole minute of the window;
  * one limit-change point per decision that set a cable's limit or a temporary override;
  * a snapshot of every CPO (heartbeat, owed pushes) at the export's moment;
  * the runs of this process's scheduled jobs, buffered by `JobRuns` until the export writes them.

A minute's points depend only on that minute's rows, and InfluxDB keeps one point per series and
time, so exporting a minute again overwrites it: `Exporter` re-exports the last few minutes every
time, counting records that were committed late (the OSCP recorder flushes in batches). A write
that fails (InfluxDB down) fails nothing else: the exporter keeps its place and the job runs, and
retries them at its next run, reading back at most `CATCH_UP` (older minutes of a longer outage
stay unexported; the SQL record still has them).
"""

import logging
import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np

from service.domain.blocks import as_utc
from service.domain.units import ZERO
from service.monitoring import names
from service.store import Repository
from service.timeseries import Point, TimeseriesError, TimeseriesStore
from service.usecases.context import Context, hold_rules

log = logging.getLogger("gridcap.monitoring")

REEXPORT = timedelta(minutes=5)  # exported again every time: records committed this late still count
CATCH_UP = timedelta(hours=1)  # the most an export reads back: after a restart or a long InfluxDB outage
MAX_JOB_RUNS = 10_000  # job runs kept while InfluxDB is away (a few hours); the oldest go first
UNKNOWN = "-"  # a tag value that is missing, e.g. the OSCP caller was not identified

REQUEST = "request"
LIMIT_ACTIONS = ("cable_created", "cable_updated", "override_added", "override_removed")

# A character line protocol cannot carry in a tag would fail the whole write: anything beyond these
# becomes "_" (the gateway already records operations it does not serve as "unknown").
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]")


# --- the rows, as read -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    at: datetime
    cpo_id: str | None
    direction: str
    operation: str
    outcome: str
    duration_ms: float


@dataclass(frozen=True, slots=True)
class LedgerChange:
    at: datetime
    cable_id: str
    cpo_id: str
    reason: str
    old: Decimal
    new: Decimal
    unit: str | None  # None: the cable was deleted since


@dataclass(frozen=True, slots=True)
class AuditedDecision:
    at: datetime
    action: str
    cable_id: str | None
    cpo_id: str | None
    status: str | None
    actor: str
    message: str


@dataclass(frozen=True, slots=True)
class CpoSnapshot:
    cpo_id: str
    last_seen_at: datetime | None  # None: never heard from
    outbox_depth: int
    push_attempts: int  # the most attempts an owed push has had
    oldest_push_at: datetime | None  # when the oldest owed push was queued; None: none owed


# --- pure aggregation ----------------------------------------------------------------------------


def minute_floor(moment: datetime) -> datetime:
    """The start of the UTC minute `moment` falls in."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, interpolated between the closest ranks (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), 95))


def _tag(value: str) -> str:
    return _TAG_UNSAFE.sub("_", value)[:64] or UNKNOWN


def oscp_points(messages: Iterable[Message], prefix: str = names.DEFAULT_PREFIX) -> list[Point]:
    """Per minute, CPO, direction, operation and outcome: count, mean, p95 and max duration (ms)."""
    groups: dict[tuple[datetime, str, str, str, str], list[float]] = {}
    for m in messages:
        key = (minute_floor(m.at), m.cpo_id or UNKNOWN, m.direction, _tag(m.operation), _tag(m.outcome))
        groups.setdefault(key, []).append(float(m.duration_ms))
    n = names.OSCP
    points = []
    for (minute, cpo, direction, operation, outcome), durations in sorted(groups.items()):
        durations.sort()  # the same rows in any order give the very same floats
        tags = {n.cpo: cpo, n.direction: direction, n.operation: operation, n.outcome: outcome}
        fields: dict[str, float | int | bool | str] = {
            n.count: len(durations),
            n.mean_ms: math.fsum(durations) / len(durations),
            n.p95_ms: p95(durations),
            n.max_ms: durations[-1],
        }
        points.append(Point(n.measurement(prefix), tags, fields, minute))
    return points


def allocation_points(changes: Iterable[LedgerChange], prefix: str = names.DEFAULT_PREFIX) -> list[Point]:
    """Per minute, cable, CPO and reason: how many budgets changed, and the sums of the increases and
    of the decreases (both positive, in the cable's unit)."""
    groups: dict[tuple[datetime, str, str, str], tuple[int, Decimal, Decimal, str | None]] = {}
    for c in changes:
        key = (minute_floor(c.at), c.cable_id, c.cpo_id, c.reason)
        count, up, down, _ = groups.get(key, (0, ZERO, ZERO, None))
        step = c.new - c.old
        groups[key] = (count + 1, up + max(ZERO, step), down + max(ZERO, -step), c.unit)
    n = names.ALLOCATION
    points = []
    for (minute, cable_id, cpo_id, reason), (count, up, down, unit) in sorted(groups.items()):
        tags = {n.cable: cable_id, n.cpo: cpo_id, n.reason: reason}
        fields: dict[str, float | int | bool | str] = {n.changes: count, n.increase: float(up), n.decrease: float(down)}
        if unit:  # none once the cable is deleted
            fields[n.unit] = unit
        points.append(Point(n.measurement(prefix), tags, fields, minute))
    return points


def request_points(decisions: Iterable[AuditedDecision], prefix: str = names.DEFAULT_PREFIX) -> list[Point]:
    """Per minute, cable, CPO and status: how many capacity requests were decided."""
    counts: dict[tuple[datetime, str, str, str], int] = {}
    for d in decisions:
        if d.action != REQUEST or d.cable_id is None:
            continue
        key = (minute_floor(d.at), d.cable_id, d.cpo_id or UNKNOWN, d.status or UNKNOWN)
        counts[key] = counts.get(key, 0) + 1
    n = names.REQUESTS
    return [
        Point(n.measurement(prefix), {n.cable: cable_id, n.cpo: cpo_id, n.status: status}, {n.count: count}, minute)
        for (minute, cable_id, cpo_id, status), count in sorted(counts.items())
    ]


def limit_change_points(decisions: Iterable[AuditedDecision], prefix: str = names.DEFAULT_PREFIX) -> list[Point]:
    """One point per decision that set a cable's limit or an override, at the decision's moment."""
    n = names.LIMIT_CHANGE
    return [
        Point(
            n.measurement(prefix),
            {n.cable: d.cable_id, n.action: d.action},
            {n.text: d.message, n.actor: d.actor},
            d.at.astimezone(UTC),
        )
        for d in decisions
        if d.action in LIMIT_ACTIONS and d.cable_id is not None
    ]


def cpo_state_points(
    cpos: Iterable[CpoSnapshot], *, at: datetime, offline_before: datetime, prefix: str = names.DEFAULT_PREFIX
) -> list[Point]:
    """One point per CPO at `at`; a CPO last heard from before `offline_before` is offline."""
    n = names.CPO_STATE
    points = []
    for cpo in sorted(cpos, key=lambda c: c.cpo_id):
        online = cpo.last_seen_at is not None and cpo.last_seen_at >= offline_before
        fields: dict[str, float | int | bool | str] = {n.online: int(online)}
        if cpo.last_seen_at is not None:  # ages never go negative: a record may be a moment newer than `at`
            fields[n.heartbeat_age_s] = max(0.0, (at - cpo.last_seen_at).total_seconds())
        fields[n.outbox_depth] = cpo.outbox_depth
        fields[n.push_attempts] = cpo.push_attempts
        oldest = cpo.oldest_push_at
        fields[n.oldest_push_age_s] = max(0.0, (at - oldest).total_seconds()) if oldest is not None else 0.0
        points.append(Point(n.measurement(prefix), {n.cpo: cpo.cpo_id}, fields, at))
    return points


# --- the export -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportReport:
    since: datetime  # the first whole minute aggregated
    until: datetime  # the end of the last whole minute aggregated (exclusive)
    points: dict[str, int] = field(default_factory=dict)  # measurement -> points built
    error: str | None = None  # why nothing (or not all) was written; None: every point was

    @property
    def written(self) -> bool:
        return self.error is None


def export(
    ctx: Context, store: TimeseriesStore, *, since: datetime, until: datetime, extra: Sequence[Point] = ()
) -> ExportReport:
    """Aggregate the whole minutes of [since, until) and snapshot every CPO at `until`, then write that
    and `extra` (job runs) in one call. A write failure is returned in the report, never raised."""
    moment = as_utc(until, "until")
    start, end = minute_floor(as_utc(since, "since")), minute_floor(moment)
    offline_before = hold_rules(ctx, moment).offline_before
    with ctx.db.read() as session:
        repo = Repository(session)
        messages = [Message(*row) for row in repo.messages_between(start, end)]
        changes = [LedgerChange(*row) for row in repo.ledger_between(start, end)]
        decisions = [AuditedDecision(*row) for row in repo.decisions_between(start, end, (REQUEST, *LIMIT_ACTIONS))]
        last_seen = repo.last_seen()
        owed = {row["cpo_id"]: row for row in repo.outbox()}
        nothing_owed = {"depth": 0, "attempts": 0, "oldest": None}
        cpos = [
            CpoSnapshot(
                cpo.id,
                last_seen.get(cpo.id),
                int(owed.get(cpo.id, nothing_owed)["depth"]),
                int(owed.get(cpo.id, nothing_owed)["attempts"] or 0),
                owed.get(cpo.id, nothing_owed)["oldest"],
            )
            for cpo in repo.cpos()
        ]
    prefix = ctx.results_prefix
    points = [
        *oscp_points(messages, prefix),
        *allocation_points(changes, prefix),
        *request_points(decisions, prefix),
        *limit_change_points(decisions, prefix),
        *cpo_state_points(cpos, at=moment, offline_before=offline_before, prefix=prefix),
        *extra,
    ]
    counts: dict[str, int] = {}
    for point in points:
        counts[point.measurement] = counts.get(point.measurement, 0) + 1
    try:
        store.write_points(points)
    except TimeseriesError as exc:  # monitoring never fails the job: the caller retries at its next run
        return ExportReport(start, end, counts, error=_short(exc))
    except Exception as exc:  # nor does a bug in writing; said loudly
        log.exception("writing the monitoring points failed")
        return ExportReport(start, end, counts, error=_short(exc))
    return ExportReport(start, end, counts)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# --- job runs and the exporter the scheduler keeps ---------------------------------------------------


class JobRuns:
    """The runs of this process's scheduled jobs, kept until the export writes them: a job never waits
    for InfluxDB, and an outage loses runs only once more than `keep` are waiting."""

    def __init__(self, prefix: str = names.DEFAULT_PREFIX, *, keep: int = MAX_JOB_RUNS) -> None:
        self.prefix = prefix
        self.keep = keep
        self._lock = threading.Lock()
        self._points: list[Point] = []

    def record(self, job: str, started_at: datetime, duration_s: float, ok: bool) -> None:
        n = names.JOB
        point = Point(
            n.measurement(self.prefix), {n.job: job}, {n.duration_s: float(duration_s), n.ok: int(ok)}, started_at
        )
        with self._lock:
            self._points.append(point)
            del self._points[: -self.keep]

    def drain(self) -> list[Point]:
        with self._lock:
            points, self._points = self._points, []
        return points

    def put_back(self, points: Sequence[Point]) -> None:
        """Runs whose write failed wait for the next one, before those recorded meanwhile."""
        with self._lock:
            self._points = [*points, *self._points][-self.keep :]

    def __len__(self) -> int:
        with self._lock:
            return len(self._points)


class Exporter:
    """Exports from where the last successful export ended (less `overlap`, exported again) to now,
    at most `catch_up` back; with `runs`, writes the job runs waiting there too."""

    def __init__(
        self,
        ctx: Context,
        store: TimeseriesStore,
        runs: JobRuns | None = None,
        *,
        overlap: timedelta = REEXPORT,
        catch_up: timedelta = CATCH_UP,
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.runs = runs
        self.overlap = overlap
        self.catch_up = catch_up
        self.done_until: datetime | None = None  # the end of the last export that was written

    def run(self) -> ExportReport:
        now = self.ctx.clock()
        since = now - self.catch_up
        if self.done_until is not None:
            since = max(since, self.done_until - self.overlap)
        pending = self.runs.drain() if self.runs is not None else []
        try:
            report = export(self.ctx, self.store, since=since, until=now, extra=pending)
        except BaseException:  # the database failed: the runs wait for the next export
            if self.runs is not None:
                self.runs.put_back(pending)
            raise
        if report.written:
            self.done_until = report.until
        elif self.runs is not None:
            self.runs.put_back(pending)
        return report
