"""OCPP 1.6-J central system: the websocket endpoint the charge points connect to. Transport only.

Every message a charge point sends becomes one call on an `Events` sink; requests to a charge point
(SetChargingProfile, ...) return plain results and never raise for what a charge point does. The `ocpp`
library checks every frame against the official JSON schemas; a frame it refuses gets a CALLERROR and
never reaches the sink. Each connection serialises its own calls (OCPP-J allows one open CALL per
direction); calls to different charge points run concurrently.
"""

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from http import HTTPStatus
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import unquote, urlsplit

from ocpp.exceptions import (
    FormationViolationError,
    FormatViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    TypeConstraintViolationError,
)
from ocpp.messages import Call, CallError, unpack, validate_payload
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHeader
from websockets.headers import parse_authorization_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from service.cpo.background import Background
from service.cpo.ledger import MeterSample, parse_sampled_values
from service.domain.blocks import as_utc
from service.domain.errors import InvalidInput
from service.domain.model import check_id

log = logging.getLogger("gridcap.ocpp")

SUBPROTOCOL = Subprotocol("ocpp1.6")
PATH_PREFIX = "/ocpp/"

# Results of outbound requests besides the statuses a charge point answers
TIMEOUT = "Timeout"  # no answer within call_timeout_s
OFFLINE = "Offline"  # not connected, or the connection ended before the answer
CALL_ERROR = "CallError"  # answered with a CALLERROR or with a payload that breaks the schema

ALIGNED_INTERVAL_S = 900  # quarter-hour meter readings, the Dutch procurement rule
METER_MEASURANDS = "Energy.Active.Import.Register,Current.Import,Current.Offered"
_LIMIT_STEP = Decimal("0.1")


class Events(Protocol):
    """What the central system reports. Every method is sync, fast and thread-safe."""

    def admit(self, charge_point_id: str, username: str | None, password: str | None) -> bool | None:
        """True: let it connect. False: wrong or missing credentials (HTTP 401). None: unknown charge
        point (HTTP 404). May be slow (a password hash): it runs in a worker thread."""
        ...

    def connected(self, charge_point_id: str) -> None: ...

    def disconnected(self, charge_point_id: str) -> None: ...

    def booted(self, charge_point_id: str, vendor: str, model: str, firmware: str | None) -> None: ...

    def configured(self, charge_point_id: str, configuration: dict[str, str]) -> None: ...

    def status(self, charge_point_id: str, connector_id: int, status: str, error_code: str, at: datetime) -> None: ...

    def authorize(self, charge_point_id: str, id_tag: str) -> bool: ...

    def transaction_started(
        self, charge_point_id: str, connector_id: int, id_tag: str, meter_start_wh: int, at: datetime
    ) -> int: ...

    def transaction_stopped(
        self, charge_point_id: str, transaction_id: int, meter_stop_wh: int, at: datetime, reason: str | None
    ) -> None: ...

    def meter_values(
        self, charge_point_id: str, connector_id: int, transaction_id: int | None, samples: list[MeterSample]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class CompositeSchedule:
    """A charge point's answer to GetCompositeSchedule: the limits it will apply from `start`."""

    start: datetime | None
    periods: tuple[tuple[int, Decimal], ...]  # (start_period_s, limit) in `unit`, per phase for A
    unit: str = "A"
    duration_s: int | None = None


# ---------------------------------------------------------------------------------------------
# typed views of the untyped `ocpp` decorators

_F = TypeVar("_F", bound=Callable[..., Any])


def _on(action: Action) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], on(action))


def _after(action: Action) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], after(action))


class QuietLibraryLog(logging.LoggerAdapter[logging.Logger]):
    """For the `ocpp` and `websockets` libraries, which log every frame or connection at INFO and every
    refused frame with a stack trace: INFO goes to DEBUG, protocol errors become one WARNING line, and any
    other exception keeps its stack trace (a bug)."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = sys.exc_info()[1]
        if level <= logging.INFO:
            level = logging.DEBUG
        elif not kwargs.get("exc_info"):
            level = logging.WARNING
        elif isinstance(error, OCPPError):
            kwargs.pop("exc_info")
            cause = error.details.get("cause", "") if isinstance(error.details, dict) else ""
            msg, args = f"{msg}: %s %s", (*args, error.code, cause)
            level = logging.WARNING
        super().log(level, msg, *args, **kwargs)


_LIBRARY_LOG = QuietLibraryLog(logging.getLogger("gridcap.ocpp.frames"))
_WEBSOCKETS_LOG = QuietLibraryLog(logging.getLogger("gridcap.ocpp.websockets"))  # a line per connection otherwise


# ---------------------------------------------------------------------------------------------
# conversions


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamp(value: object, field_name: str) -> datetime:
    """An incoming date-time; naive ones are refused (their meaning depends on the charger's zone)."""
    if not isinstance(value, str):
        raise TypeConstraintViolationError(details={"cause": f"{field_name} must be a date-time string"})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise TypeConstraintViolationError(
            details={"cause": f"{field_name} {value!r} is not an ISO 8601 date-time; send e.g. 2026-03-29T16:00:00Z"}
        ) from None
    try:
        return as_utc(moment, field_name)
    except InvalidInput as error:
        raise PropertyConstraintViolationError(details={"cause": error.message}) from None


def _connector(value: int, *, minimum: int, field_name: str = "connectorId") -> int:
    if value < minimum:
        raise PropertyConstraintViolationError(details={"cause": f"{field_name} must be >= {minimum}, got {value}"})
    return value


def _samples(meter_value: list[Any], field_name: str) -> list[MeterSample]:
    try:
        return parse_sampled_values(meter_value)
    except InvalidInput as error:
        raise PropertyConstraintViolationError(details={"cause": f"{field_name}: {error.message}"}) from None


def _wire_number(value: Decimal | float) -> int | float:
    """A rate on the 0.1 grid, rounded down, as a JSON number with at most one decimal (41.4, 16)."""
    try:
        number = value if isinstance(value, Decimal) else Decimal(repr(value))
        tenths = int((number / _LIMIT_STEP).to_integral_value(ROUND_FLOOR))
    except (InvalidOperation, ValueError, OverflowError):
        raise InvalidInput(f"charging profile number {value!r} is not finite") from None
    # float(Decimal("41.4")) is the float whose shortest repr is 41.4: json.dumps writes exactly that
    return tenths // 10 if tenths % 10 == 0 else float(Decimal(tenths) * _LIMIT_STEP)


def _wire(value: object) -> object:
    """A charging profile made JSON-ready: Decimal/float rates floored to 0.1, datetimes as UTC text."""
    if isinstance(value, Mapping):
        return {str(key): _wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal | float):
        return _wire_number(value)
    if isinstance(value, datetime):
        return as_utc(value, "charging profile date-time").isoformat().replace("+00:00", "Z")
    return value


def _to_ocpp16(error: OCPPError) -> OCPPError:
    """The library names a few OCPP 2.0 error codes; OCPP 1.6 spells FormatViolation as FormationViolation.
    The details keep the cause only: echoing the whole frame back helps nobody."""
    cause = error.details.get("cause") if isinstance(error.details, dict) else None
    details = {"cause": str(cause)} if cause else {}
    if isinstance(error, FormatViolationError):
        return FormationViolationError(details=details)
    return type(error)(description=error.description, details=details)


def _frame_id(raw: str | bytes) -> tuple[str, bool]:
    """The unique id of a frame the library cannot unpack ("-1" if unreadable) and whether it is a CALL
    (a broken CALLRESULT or CALLERROR gets no answer)."""
    try:
        frame = json.loads(raw)
    except ValueError:
        return "-1", True
    if not isinstance(frame, list) or not frame:
        return "-1", True
    is_call = frame[0] not in (3, 4)
    if len(frame) > 1 and isinstance(frame[1], str) and 0 < len(frame[1]) <= 36:
        return frame[1], is_call
    return "-1", is_call


def _charge_point_id(path: str) -> str:
    """The id in /ocpp/{chargePointId}; raises InvalidInput with what is wrong."""
    route = urlsplit(path).path
    if not route.startswith(PATH_PREFIX) or "/" in route[len(PATH_PREFIX) :]:
        raise InvalidInput(f"no OCPP endpoint at {route!r}; connect to {PATH_PREFIX}{{chargePointId}}")
    return check_id(unquote(route[len(PATH_PREFIX) :]), "charge point id")


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [
        item.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for item in value.split(",") if item.strip()
    ]


# ---------------------------------------------------------------------------------------------
# one charge point's connection


class _Connection(ChargePoint):  # type: ignore[misc]  # the ocpp package ships no type hints
    """The handlers for one connected charge point; each maps a message to one `Events` call."""

    def __init__(
        self,
        charge_point_id: str,
        websocket: ServerConnection,
        events: Events,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        *,
        call_timeout_s: float,
        heartbeat_interval_s: int,
    ) -> None:
        super().__init__(charge_point_id, websocket, response_timeout=call_timeout_s, logger=_LIBRARY_LOG)
        self.websocket = websocket
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.replaced = False
        self._events = events
        self._spawn = spawn
        self._heartbeat_interval_s = heartbeat_interval_s
        self._connectors: dict[int, int] = {}  # transaction id -> connector, for StopTransaction's meter values

    # -- receiving

    async def start(self) -> None:
        """Handle frames until the connection closes; one bad frame never ends the connection."""
        while True:
            raw = await self.websocket.recv()
            try:
                await self.route_message(raw)
            except ConnectionClosed:
                raise
            except Exception:  # log it and keep serving this charge point
                log.exception("%s: a frame could not be handled; the connection stays open", self.id)

    async def route_message(self, raw_msg: str | bytes) -> None:
        try:
            unpack(raw_msg)
        except OCPPError as error:
            # the library only logs frames it cannot unpack; OCPP-J wants a CALLERROR for a broken CALL
            unique_id, is_call = _frame_id(raw_msg)
            refusal = _to_ocpp16(error)
            log.warning("%s sent a frame that is not OCPP-J (%s): %.200r", self.id, refusal.code, raw_msg)
            if is_call:
                await self._send(CallError(unique_id, refusal.code, refusal.description, refusal.details).to_json())
            return
        await super().route_message(raw_msg)

    async def _handle_call(self, msg: Call) -> Any:
        try:
            return await super()._handle_call(msg)
        except OCPPError as error:
            raise _to_ocpp16(error) from None

    # -- outbound

    async def request(self, payload: object) -> Any:
        """Send a CALL; the response payload or TIMEOUT / OFFLINE / CALL_ERROR."""
        action = type(payload).__name__
        sending = asyncio.ensure_future(self.call(payload, suppress=False))
        try:
            await asyncio.wait({sending, self.closed}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            sending.cancel()
            raise
        if not sending.done():  # the connection ended first: no answer can come
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            return OFFLINE
        try:
            return sending.result()
        except TimeoutError:
            log.warning("%s did not answer %s within %.1f s", self.id, action, self._response_timeout)
            return TIMEOUT
        except ConnectionClosed:
            return OFFLINE
        except OCPPError as error:
            log.warning("%s answered %s with an error: %s %s", self.id, action, error.code, error.details)
            return CALL_ERROR
        except Exception as error:  # noqa: BLE001 - e.g. an error code OCPP does not define: still the charger's fault
            log.warning("%s answered %s with something unusable: %s", self.id, action, error)
            return CALL_ERROR

    async def configure(self) -> None:
        """After a boot: read the configuration, then ask for quarter-hour and per-transaction meter values."""
        answer = await self.request(call.GetConfiguration())
        configuration = _configuration(answer)
        if configuration is None:
            log.warning("%s: GetConfiguration failed (%s); meter value settings are sent anyway", self.id, answer)
            configuration = {}
        else:
            self._events.configured(self.id, configuration)
        wanted = {
            "ClockAlignedDataInterval": str(ALIGNED_INTERVAL_S),
            "MeterValuesAlignedData": METER_MEASURANDS,
            "MeterValuesSampledData": METER_MEASURANDS,
        }
        for key, value in wanted.items():
            if configuration.get(key) == value:
                continue
            result = await self.request(call.ChangeConfiguration(key=key, value=value))
            status = getattr(result, "status", result)
            if status != "Accepted":
                log.warning("%s: ChangeConfiguration %s=%s answered %s", self.id, key, value, status)

    # -- handlers: validate, then one Events call

    @_on(Action.boot_notification)
    def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, firmware_version: str | None = None, **_: object
    ) -> call_result.BootNotification:
        self._events.booted(self.id, charge_point_vendor, charge_point_model, firmware_version)
        return call_result.BootNotification(
            current_time=_utc_now(), interval=self._heartbeat_interval_s, status=RegistrationStatus.accepted
        )

    @_after(Action.boot_notification)
    def after_boot_notification(self, **_: object) -> None:
        self._spawn(self.configure())  # a CALL from inside the handler would wait for its own answer

    @_on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_utc_now())

    @_on(Action.status_notification)
    def on_status_notification(
        self, connector_id: int, error_code: str, status: str, timestamp: str | None = None, **_: object
    ) -> call_result.StatusNotification:
        connector = _connector(connector_id, minimum=0)
        at = datetime.now(UTC) if timestamp is None else _timestamp(timestamp, "timestamp")
        self._events.status(self.id, connector, str(status), str(error_code), at)
        return call_result.StatusNotification()

    @_on(Action.authorize)
    def on_authorize(self, id_tag: str) -> call_result.Authorize:
        accepted = self._events.authorize(self.id, id_tag)
        status = AuthorizationStatus.accepted if accepted else AuthorizationStatus.invalid
        return call_result.Authorize(id_tag_info=IdTagInfo(status=status))

    @_on(Action.start_transaction)
    def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: object
    ) -> call_result.StartTransaction:
        connector = _connector(connector_id, minimum=1)
        if meter_start < 0:
            raise PropertyConstraintViolationError(details={"cause": f"meterStart must be >= 0, got {meter_start}"})
        at = _timestamp(timestamp, "timestamp")
        transaction_id = self._events.transaction_started(self.id, connector, id_tag, meter_start, at)
        self._connectors[transaction_id] = connector
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted)
        )

    @_on(Action.stop_transaction)
    def on_stop_transaction(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        transaction_data: list[Any] | None = None,
        **_: object,
    ) -> call_result.StopTransaction:
        if meter_stop < 0:
            raise PropertyConstraintViolationError(details={"cause": f"meterStop must be >= 0, got {meter_stop}"})
        at = _timestamp(timestamp, "timestamp")
        samples = _samples(transaction_data, "transactionData") if transaction_data else []
        connector = self._connectors.pop(transaction_id, None)
        if samples and connector is not None:
            self._events.meter_values(self.id, connector, transaction_id, samples)
        elif samples:
            log.info("%s: transactionData of transaction %s skipped: its connector is unknown", self.id, transaction_id)
        self._events.transaction_stopped(
            self.id, transaction_id, meter_stop, at, None if reason is None else str(reason)
        )
        return call_result.StopTransaction(id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted))

    @_on(Action.meter_values)
    def on_meter_values(
        self, connector_id: int, meter_value: list[Any], transaction_id: int | None = None, **_: object
    ) -> call_result.MeterValues:
        connector = _connector(connector_id, minimum=0)
        samples = _samples(meter_value, "meterValue")
        self._events.meter_values(self.id, connector, transaction_id, samples)
        return call_result.MeterValues()

    @_on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: object) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")

    @_on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, status: str) -> call_result.FirmwareStatusNotification:
        log.info("%s: firmware %s", self.id, status)
        return call_result.FirmwareStatusNotification()

    @_on(Action.diagnostics_status_notification)
    def on_diagnostics_status_notification(self, status: str) -> call_result.DiagnosticsStatusNotification:
        log.info("%s: diagnostics %s", self.id, status)
        return call_result.DiagnosticsStatusNotification()


def _configuration(answer: object) -> dict[str, str] | None:
    """The keys of a GetConfiguration answer that have a value; None when the request failed."""
    if isinstance(answer, str):
        return None
    configuration: dict[str, str] = {}
    for item in getattr(answer, "configuration_key", None) or []:
        if isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("value"), str):
            configuration[item["key"]] = item["value"]
    return configuration


def _composite(answer: object) -> CompositeSchedule | str:
    status = getattr(answer, "status", answer)
    if status != "Accepted":
        return str(status)
    schedule = getattr(answer, "charging_schedule", None) or {}
    start_text = schedule.get("start_schedule") or getattr(answer, "schedule_start", None)
    try:
        start = None if start_text is None else _timestamp(start_text, "scheduleStart")
    except OCPPError as error:
        log.warning("composite schedule refused: %s", error.details.get("cause"))
        return CALL_ERROR
    periods = tuple(
        (int(p["start_period"]), Decimal(str(p["limit"]))) for p in schedule.get("charging_schedule_period", [])
    )
    return CompositeSchedule(
        start=start,
        periods=periods,
        unit=str(schedule.get("charging_rate_unit", "A")),
        duration_s=schedule.get("duration"),
    )


# ---------------------------------------------------------------------------------------------
# the server


class CentralSystem:
    """The websocket server at ws://host:port/ocpp/{chargePointId}, subprotocol ocpp1.6, HTTP Basic auth
    (OCPP security profile 1; TLS for profile 2 belongs to a reverse proxy)."""

    def __init__(self, events: Events, *, call_timeout_s: float = 10.0, heartbeat_interval_s: int = 300) -> None:
        if not call_timeout_s > 0:
            raise InvalidInput(f"call_timeout_s must be > 0, got {call_timeout_s}")
        if not heartbeat_interval_s > 0:
            raise InvalidInput(f"heartbeat_interval_s must be > 0, got {heartbeat_interval_s}")
        self._events = events
        self._call_timeout_s = call_timeout_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._connections: dict[str, _Connection] = {}
        self._background = Background(log, "OCPP background task")
        self._server: Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port (port 0 picks a free one)."""
        if self._server is not None:
            raise InvalidInput("the central system is already running; stop() it first")
        self._server = await serve(
            self._serve,
            host,
            port,
            subprotocols=[SUBPROTOCOL],
            process_request=self._check_handshake,
            compression=None,  # OCPP frames are small: deflate costs more CPU and memory than it saves
            backlog=1024,  # a fleet reconnects at once after a restart
            logger=_WEBSOCKETS_LOG,
        )
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("OCPP 1.6-J central system listening on ws://%s:%d%s{chargePointId}", host, bound, PATH_PREFIX)
        return bound

    async def stop(self) -> None:
        """Close every connection (code 1001) and stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        await self._background.cancel_all()

    def connected_ids(self) -> set[str]:
        return set(self._connections)

    # -- handshake and connections

    async def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            charge_point_id = _charge_point_id(request.path)
        except InvalidInput as error:
            return connection.respond(HTTPStatus.NOT_FOUND, f"{error.message}\n")
        if SUBPROTOCOL not in _offered_subprotocols(request.headers):
            return connection.respond(
                HTTPStatus.BAD_REQUEST,
                f"OCPP 1.6-J needs the websocket subprotocol: Sec-WebSocket-Protocol: {SUBPROTOCOL}\n",
            )
        username = password = None
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            try:
                username, password = parse_authorization_basic(authorization)
            except InvalidHeader:
                return _unauthorized(connection, "the Authorization header is not HTTP Basic user:password")
        # admit may check a password hash, slow by design: keep it off the event loop
        admitted = await asyncio.to_thread(self._events.admit, charge_point_id, username, password)
        if admitted is None:
            log.info("refused unknown charge point %s", charge_point_id)
            return connection.respond(HTTPStatus.NOT_FOUND, f"unknown charge point {charge_point_id}\n")
        if not admitted:
            log.warning("refused charge point %s: wrong or missing credentials", charge_point_id)
            return _unauthorized(connection, f"wrong or missing credentials for charge point {charge_point_id}")
        return None

    async def _serve(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None  # noqa: S101 - the handshake passed, so there was a request
        charge_point_id = _charge_point_id(websocket.request.path)
        connection = _Connection(
            charge_point_id,
            websocket,
            self._events,
            self._background.spawn,
            call_timeout_s=self._call_timeout_s,
            heartbeat_interval_s=self._heartbeat_interval_s,
        )
        previous = self._connections.get(charge_point_id)
        self._connections[charge_point_id] = connection
        if previous is not None:
            # the charger reconnected (often after a reset) before the old socket timed out
            log.info("%s connected again; closing its previous connection", charge_point_id)
            previous.replaced = True
            self._background.spawn(_close(previous, "replaced by a new connection"))
            self._events.disconnected(charge_point_id)
        log.info("%s connected from %s", charge_point_id, websocket.remote_address)
        self._events.connected(charge_point_id)
        try:
            await connection.start()
        except ConnectionClosed:
            pass
        finally:
            connection.closed.set_result(None)
            if self._connections.get(charge_point_id) is connection:
                del self._connections[charge_point_id]
                log.info("%s disconnected", charge_point_id)
                self._events.disconnected(charge_point_id)

    def _connection(self, charge_point_id: str) -> _Connection | None:
        return self._connections.get(charge_point_id)

    # -- requests to charge points

    async def set_charging_profile(self, charge_point_id: str, connector_id: int, profile: Mapping[str, object]) -> str:
        """Install `profile` (the OCPP csChargingProfiles object, camelCase; limits may be Decimal).
        Accepted | Rejected | NotSupported | Timeout | Offline | CallError. An invalid profile raises
        InvalidInput: that is the caller's mistake, not the charge point's."""
        wire = cast(dict[str, object], _wire(profile))
        check = Call("check", "SetChargingProfile", {"connectorId": connector_id, "csChargingProfiles": wire})
        try:
            await validate_payload(check, "1.6")
        except OCPPError as error:
            cause = error.details.get("cause") if isinstance(error.details, dict) else error.description
            raise InvalidInput(f"charging profile for {charge_point_id} is not valid OCPP 1.6: {cause}") from None
        except TypeError as error:  # a value JSON cannot carry
            raise InvalidInput(f"charging profile for {charge_point_id} is not valid OCPP 1.6: {error}") from None
        connection = self._connection(charge_point_id)
        if connection is None:
            return OFFLINE
        answer = await connection.request(call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=wire))
        return str(getattr(answer, "status", answer))

    async def clear_charging_profile(
        self,
        charge_point_id: str,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> str:
        """Accepted | Unknown | Timeout | Offline | CallError. The filters are ANDed; none clears everything."""
        connection = self._connection(charge_point_id)
        if connection is None:
            return OFFLINE
        answer = await connection.request(
            call.ClearChargingProfile(
                id=profile_id, connector_id=connector_id, charging_profile_purpose=purpose, stack_level=stack_level
            )
        )
        return str(getattr(answer, "status", answer))

    async def get_composite_schedule(
        self, charge_point_id: str, connector_id: int, duration_s: int
    ) -> CompositeSchedule | str:
        """What the charge point will apply (in A) for the next `duration_s`, or the failure as text."""
        connection = self._connection(charge_point_id)
        if connection is None:
            return OFFLINE
        answer = await connection.request(
            call.GetCompositeSchedule(connector_id=connector_id, duration=duration_s, charging_rate_unit="A")
        )
        return _composite(answer)

    async def get_configuration(self, charge_point_id: str, keys: list[str] | None = None) -> dict[str, str] | str:
        """The keys the charge point reports with a value (all without `keys`), or the failure as text."""
        connection = self._connection(charge_point_id)
        if connection is None:
            return OFFLINE
        answer = await connection.request(call.GetConfiguration(key=keys))
        configuration = _configuration(answer)
        return str(answer) if configuration is None else configuration

    async def change_configuration(self, charge_point_id: str, key: str, value: str) -> str:
        """Accepted | Rejected | RebootRequired | NotSupported | Timeout | Offline | CallError."""
        if not 0 < len(key) <= 50 or len(value) > 500:
            raise InvalidInput("a configuration key has 1-50 characters and a value at most 500 (OCPP 1.6)")
        connection = self._connection(charge_point_id)
        if connection is None:
            return OFFLINE
        answer = await connection.request(call.ChangeConfiguration(key=key, value=value))
        return str(getattr(answer, "status", answer))


def _unauthorized(connection: ServerConnection, reason: str) -> Response:
    response = connection.respond(HTTPStatus.UNAUTHORIZED, f"{reason}\n")
    response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
    return response


async def _close(connection: _Connection, reason: str) -> None:
    await connection.websocket.close(code=1000, reason=reason)
