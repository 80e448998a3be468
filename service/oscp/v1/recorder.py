"""The record of every OSCP message in or out (counted from it by the REST API), also counted in the
Prometheus metrics (service.monitoring.metrics) as it is recorded.

Records are buffered and written by one background thread in batches, so recording costs a
request no database write of its own; `close()` writes what is left. A crash loses at most the
last `FLUSH_INTERVAL_S` of records, never a decision (those are audited in their transaction).
"""

import logging
import threading
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from service.monitoring import metrics
from service.usecases import Context
from service.usecases import oscp as uc

log = logging.getLogger("gridcap.oscp.record")

FLUSH_INTERVAL_S = 0.5
MAX_DETAIL = 500


@dataclass(frozen=True, slots=True)
class MessageRecord:
    at: datetime
    direction: str  # in | out
    cpo_id: str | None
    binding: str  # soap11 | soap12 | json
    operation: str
    outcome: str  # ok, a FaultCode, RateLimited, or Unreachable
    http_status: int | None
    duration_ms: float
    detail: str | None = None


class Recorder:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._buffer: list[MessageRecord] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def record(
        self,
        *,
        direction: str,
        cpo_id: str | None,
        binding: str,
        operation: str,
        outcome: str,
        http_status: int | None,
        started: float,
        detail: str | None = None,
    ) -> None:
        duration_s = time.perf_counter() - started
        entry = MessageRecord(
            datetime.now(UTC),
            direction,
            cpo_id,
            binding,
            operation[:64],
            outcome,
            http_status,
            round(duration_s * 1000, 3),
            detail[:MAX_DETAIL] if detail else None,
        )
        metrics.observe_message(
            direction=direction,
            binding=binding,
            operation=entry.operation,
            outcome=outcome,
            duration_s=duration_s,
        )
        with self._lock:
            self._buffer.append(entry)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="oscp-recorder", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_INTERVAL_S)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return
        try:
            uc.record_messages(self._ctx, [_row(r) for r in batch])
        except Exception:  # the record must never take the gateway down; say so loudly
            log.exception("could not write %d OSCP message records", len(batch))

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()


_FIELDS = tuple(f.name for f in fields(MessageRecord))


def _row(record: MessageRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in _FIELDS}  # asdict() deep-copies: slow, and needless here
