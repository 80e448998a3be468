"""Support for the OCPP tests: a recording Events sink, a central system on 127.0.0.1 and raw OCPP-J clients;
this module holds no tests."""

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from service.cpo.central import CentralSystem
from service.cpo.ledger import MeterSample

T = TypeVar("T")
SCENARIO_TIMEOUT_S = 180.0  # a whole scenario; generous for a slow 2-core machine
WAIT_S = 60.0  # one expected event


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async scenario in a fresh event loop, bounded so a hang fails instead of blocking the suite."""

    async def bounded() -> T:
        async with asyncio.timeout(SCENARIO_TIMEOUT_S):
            return await scenario()

    return asyncio.run(bounded())


class RecordingEvents:
    """An Events sink that records every call. `known`: charge point id -> password (None: no credentials
    needed); None admits every id without credentials. `authorized`: accepted id tags (None: all)."""

    def __init__(self, known: dict[str, str | None] | None = None, authorized: set[str] | None = None) -> None:
        self.known = known
        self.authorized = authorized
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._next_transaction = 100

    # -- recording and waiting

    def _record(self, name: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((name, args))
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(None)

    def mark(self) -> int:
        """A position in the record: `wait(..., since=mark)` only looks at calls made after it."""
        with self._lock:
            return len(self.calls)

    def of(self, name: str, charge_point_id: str | None = None, *, since: int = 0) -> list[tuple[Any, ...]]:
        with self._lock:
            return [
                args
                for n, args in self.calls[since:]
                if n == name and (charge_point_id is None or args[0] == charge_point_id)
            ]

    def names(self, charge_point_id: str) -> list[str]:
        with self._lock:
            return [n for n, args in self.calls if args and args[0] == charge_point_id]

    async def wait(
        self,
        name: str,
        match: Callable[[tuple[Any, ...]], bool] = lambda _: True,
        *,
        since: int = 0,
        timeout_s: float = WAIT_S,
    ) -> tuple[Any, ...]:
        """The first `name` call since `since` whose arguments satisfy `match`, waiting for it if need be."""
        self._loop = asyncio.get_running_loop()

        def found() -> tuple[Any, ...] | None:
            return next((args for args in self.of(name, since=since) if match(args)), None)

        future: asyncio.Future[None] = self._loop.create_future()
        waiter = (lambda: found() is not None, future)
        self._waiters.append(waiter)
        try:
            if found() is None:
                await asyncio.wait_for(future, timeout_s)
        finally:
            self._waiters.remove(waiter)
        result = found()
        assert result is not None
        return result

    # -- Events

    def admit(self, charge_point_id: str, username: str | None, password: str | None) -> bool | None:
        self._record("admit", charge_point_id, username, password)
        if self.known is None:
            return True
        if charge_point_id not in self.known:
            return None
        expected = self.known[charge_point_id]
        return expected is None or (username == charge_point_id and password == expected)

    def connected(self, charge_point_id: str) -> None:
        self._record("connected", charge_point_id)

    def disconnected(self, charge_point_id: str) -> None:
        self._record("disconnected", charge_point_id)

    def booted(self, charge_point_id: str, vendor: str, model: str, firmware: str | None) -> None:
        self._record("booted", charge_point_id, vendor, model, firmware)

    def configured(self, charge_point_id: str, configuration: dict[str, str]) -> None:
        self._record("configured", charge_point_id, configuration)

    def status(self, charge_point_id: str, connector_id: int, status: str, error_code: str, at: datetime) -> None:
        self._record("status", charge_point_id, connector_id, status, error_code, at)

    def authorize(self, charge_point_id: str, id_tag: str) -> bool:
        self._record("authorize", charge_point_id, id_tag)
        return self.authorized is None or id_tag in self.authorized

    def transaction_started(
        self, charge_point_id: str, connector_id: int, id_tag: str, meter_start_wh: int, at: datetime
    ) -> int:
        with self._lock:
            self._next_transaction += 1
            transaction_id = self._next_transaction
        self._record("transaction_started", charge_point_id, connector_id, id_tag, meter_start_wh, at, transaction_id)
        return transaction_id

    def transaction_stopped(
        self, charge_point_id: str, transaction_id: int, meter_stop_wh: int, at: datetime, reason: str | None
    ) -> None:
        self._record("transaction_stopped", charge_point_id, transaction_id, meter_stop_wh, at, reason)

    def meter_values(
        self, charge_point_id: str, connector_id: int, transaction_id: int | None, samples: list[MeterSample]
    ) -> None:
        self._record("meter_values", charge_point_id, connector_id, transaction_id, samples)


@asynccontextmanager
async def central_system(events: RecordingEvents, **options: Any) -> AsyncIterator[tuple[CentralSystem, str]]:
    """A CentralSystem on a free loopback port; yields it and the URL prefix charge points append their id to."""
    central = CentralSystem(events, **options)
    port = await central.start("127.0.0.1", 0)
    try:
        yield central, f"ws://127.0.0.1:{port}/ocpp"
    finally:
        await central.stop()


async def raw_client(
    url: str, charge_point_id: str, *, subprotocol: bool = True, password: str | None = None
) -> ClientConnection:
    """A bare websocket client at url/{id}: the test writes and reads OCPP-J frames itself."""
    headers = None
    if password is not None:
        headers = {"Authorization": "Basic " + base64.b64encode(f"{charge_point_id}:{password}".encode()).decode()}
    return await connect(
        f"{url}/{charge_point_id}",
        subprotocols=[Subprotocol("ocpp1.6")] if subprotocol else None,
        additional_headers=headers,
        compression=None,
        open_timeout=WAIT_S,
    )


async def exchange(websocket: ClientConnection, frame: str | list[Any]) -> list[Any]:
    """Send a frame (text as is, a list as JSON) and return the answer to it."""
    await websocket.send(frame if isinstance(frame, str) else json.dumps(frame))
    async with asyncio.timeout(WAIT_S):
        return list(json.loads(await websocket.recv()))


def profile(
    purpose: str = "ChargePointMaxProfile",
    limit: object = 10,
    *,
    profile_id: int = 1,
    stack_level: int = 0,
    start: str = "2020-01-01T00:00:00Z",
    transaction_id: int | None = None,
) -> dict[str, Any]:
    """An Absolute csChargingProfiles object with one period, camelCase as the adapter builds it."""
    body: dict[str, Any] = {
        "chargingProfileId": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "startSchedule": start,
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": 3}],
        },
    }
    if transaction_id is not None:
        body["transactionId"] = transaction_id
    return body
