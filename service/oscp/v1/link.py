"""The DSO's calls to CPOs (pushes and heartbeats) over each CPO's binding, recorded."""

import time
from collections.abc import Sequence

from service.domain.model import Cpo
from service.oscp.v1 import messages as m
from service.oscp.v1.client import CallFailed, OscpClient
from service.oscp.v1.handlers import capacity_forecast
from service.oscp.v1.recorder import Recorder
from service.usecases.oscp import CpoForecast, PeerUnreachable


class OscpPeerLink:
    """`service.usecases.oscp.PeerLink` over OSCP 1.0."""

    def __init__(self, client: OscpClient, recorder: Recorder) -> None:
        self._client = client
        self._recorder = recorder

    def push(self, cpo: Cpo, forecasts: Sequence[CpoForecast]) -> str | None:
        request = m.UpdateCableCapacityForecastRequest(tuple(capacity_forecast(f) for f in forecasts))
        reply = self._call(cpo, "UpdateCableCapacityForecast", request)
        if not isinstance(reply, m.UpdateCableCapacityForecastResponse):
            raise PeerUnreachable(f"{cpo.id} answered UpdateCableCapacityForecast with {type(reply).__name__}")
        if reply.status is m.ResponseStatus.ACCEPTED:
            return None
        return reply.reason or "no reason given"

    def heartbeat(self, cpo: Cpo) -> None:
        self._call(cpo, "Heartbeat", m.HeartbeatRequest())

    def _call(self, cpo: Cpo, operation: str, request: m.Message) -> m.Message:
        started = time.perf_counter()
        try:
            reply = self._client.call(cpo.endpoint_url, cpo.binding.value, request, peer="cpo")
        except CallFailed as exc:
            outcome = exc.fault.code.value if exc.fault else "Unreachable"
            self._record(cpo, operation, outcome, started, str(exc))
            raise PeerUnreachable(f"{operation} to {cpo.id} at {cpo.endpoint_url} failed: {exc}") from None
        rejected = getattr(reply, "status", None) is m.ResponseStatus.REJECTED
        self._record(cpo, operation, "Rejected" if rejected else "ok", started, None)
        return reply

    def _record(self, cpo: Cpo, operation: str, outcome: str, started: float, detail: str | None) -> None:
        self._recorder.record(
            direction="out",
            cpo_id=cpo.id,
            binding=cpo.binding.value,
            operation=operation,
            outcome=outcome,
            http_status=None,
            started=started,
            detail=detail,
        )
