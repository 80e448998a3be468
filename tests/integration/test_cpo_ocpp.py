"""The OCPP 1.6-J central system (service.cpo.central) against simulated charge points (service.cpo.simulator)
over real websockets on 127.0.0.1: sessions reaching the Events sink, the configuration after boot, every
outcome of SetChargingProfile, a charge point that accepts and ignores, frames that are not OCPP, refused
handshakes, a reconnect that replaces the old connection, and many charge points at once."""

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from ocpp_support import RecordingEvents, central_system, exchange, profile, raw_client, run
from websockets.exceptions import ConnectionClosed, InvalidStatus

from service.cpo.central import ALIGNED_INTERVAL_S, METER_MEASURANDS, CompositeSchedule
from service.cpo.ledger import MeterSample
from service.cpo.simulator import (
    Behaviour,
    Car,
    ChargePointSpec,
    Fleet,
    ProfileAnswer,
    SimClock,
    SimulatedChargePoint,
    fleet_specs,
    run_fleet,
)
from service.domain.errors import InvalidInput

SECRET = "a long enough secret"  # noqa: S105 - test credentials
WRONG_SECRET = "not the secret"  # noqa: S105
ENERGY = "Energy.Active.Import.Register"


def _values(samples: list[MeterSample], measurand: str) -> dict[str | None, Decimal]:
    return {s.phase: s.value for s in samples if s.measurand == measurand}


def _has(samples: list[MeterSample], measurand: str, value: str, context: str | None = None) -> bool:
    return any(
        s.measurand == measurand and s.value == Decimal(value) and (context is None or s.context == context)
        for s in samples
    )


def test_a_session_reaches_the_events_with_its_values() -> None:
    events = RecordingEvents(authorized={"TAG-1"})

    async def scenario() -> None:
        async with central_system(events) as (central, url):
            cp = SimulatedChargePoint("cp-1", tick_s=0.1, meter_interval_s=1, register_wh=1000.0)
            await cp.connect(url)
            try:
                await events.wait("connected")
                assert central.connected_ids() == {"cp-1"}
                assert await events.wait("booted") == ("cp-1", "gridcap", "Simulator", None)
                (_, configuration) = await events.wait("configured")
                assert configuration["ChargingScheduleAllowedChargingRateUnit"] == "Current"
                assert configuration["ChargeProfileMaxStackLevel"] == "8"
                assert configuration["SupportedFeatureProfiles"].split(",").count("SmartCharging") == 1
                await events.wait("status", lambda a: a[1:4] == (1, "Available", "NoError"))

                # the central asks for quarter-hour readings and for the measurands the adapter needs
                since = 0.0
                for key in ("ClockAlignedDataInterval", "MeterValuesAlignedData", "MeterValuesSampledData"):
                    received = await cp.wait_for("ChangeConfiguration", since=since)
                    since = received.at + 1e-9
                    assert received.payload["key"] == key
                assert cp.setting("ClockAlignedDataInterval") == str(ALIGNED_INTERVAL_S) == "900"
                assert cp.setting("MeterValuesSampledData") == METER_MEASURANDS

                transaction_id = await cp.plug_in(1, Car(phases=3, max_current_a=Decimal(16)), id_tag="TAG-1")
                assert await events.wait("authorize") == ("cp-1", "TAG-1")
                started = await events.wait("transaction_started")
                assert started[:4] == ("cp-1", 1, "TAG-1", 1000)
                assert started[4].tzinfo is UTC
                assert started[5] == transaction_id
                await events.wait("status", lambda a: a[1:3] == (1, "Preparing"))
                await events.wait("status", lambda a: a[1:3] == (1, "Charging"))

                # sampled meter values during the transaction: 16 A on each phase, offered 16 A
                (_, connector, tx, samples) = await events.wait(
                    "meter_values", lambda a: a[2] is not None and _has(a[3], "Current.Import", "16.0")
                )
                assert (connector, tx) == (1, transaction_id)
                assert _values(samples, "Current.Import") == {"L1": 16, "L2": 16, "L3": 16}
                assert _values(samples, "Current.Offered") == {None: 16}
                assert {s.context for s in samples} == {"Sample.Periodic"}
                assert all(s.unit == "A" for s in samples if s.measurand.startswith("Current."))
                (register,) = _values(samples, ENERGY).values()
                assert register >= 1000

                # clock-aligned readings, made quick: every second, stamped on the second
                assert await central.change_configuration("cp-1", "ClockAlignedDataInterval", "1") == "Accepted"
                (_, _, _, aligned) = await events.wait(
                    "meter_values", lambda a: any(s.context == "Sample.Clock" for s in a[3])
                )
                assert all(s.at.microsecond == 0 for s in aligned)
                assert {s.measurand for s in aligned} == set(METER_MEASURANDS.split(","))

                # 11 kW is about 3 Wh a second
                await events.wait("meter_values", lambda a: _values(a[3], ENERGY).get(None, 0) > 1000)
                mark = events.mark()
                await cp.unplug(1)
                stopped = await events.wait("transaction_stopped")
                assert stopped[:2] == ("cp-1", transaction_id)
                assert stopped[2] > 1000
                assert stopped[4] == "EVDisconnected"
                (_, _, _, end) = await events.wait(
                    "meter_values", lambda a: any(s.context == "Transaction.End" for s in a[3])
                )
                assert _values(end, ENERGY) == {None: Decimal(stopped[2])}
                await events.wait("status", lambda a: a[1:3] == (1, "Finishing"), since=mark)
                await events.wait("status", lambda a: a[1:3] == (1, "Available"), since=mark)

                # an id tag the sink refuses: Invalid, and no transaction starts
                assert await cp.plug_in(1, Car(), id_tag="STRANGER") is None
                assert events.of("authorize")[-1] == ("cp-1", "STRANGER")
                assert len(events.of("transaction_started")) == 1
                assert cp.connector(1).status == "Preparing"
                await cp.unplug(1)
            finally:
                await cp.close()
            await events.wait("disconnected")
            assert central.connected_ids() == set()

    run(scenario)
    assert events.names("cp-1")[:3] == ["admit", "connected", "booted"]
    assert events.names("cp-1")[-1] == "disconnected"


def test_set_charging_profile_reports_every_outcome() -> None:
    events = RecordingEvents()
    behaviours = {
        "accepts": Behaviour(),
        "rejects": Behaviour(ProfileAnswer.REJECT),
        "unsupported": Behaviour(ProfileAnswer.NOT_SUPPORTED),
        "silent": Behaviour(ProfileAnswer.TIMEOUT),
        "no-cp-max": Behaviour(rejected_purposes=frozenset({"ChargePointMaxProfile"})),
    }

    async def scenario() -> None:
        async with central_system(events, call_timeout_s=2.0) as (central, url):
            cps = [SimulatedChargePoint(cp_id, behaviour=b) for cp_id, b in behaviours.items()]
            await asyncio.gather(*(cp.connect(url) for cp in cps))
            try:
                ids = [*behaviours, "not-connected"]
                results = await asyncio.gather(*(central.set_charging_profile(i, 0, profile()) for i in ids))
                assert dict(zip(ids, results, strict=True)) == {
                    "accepts": "Accepted",
                    "rejects": "Rejected",
                    "unsupported": "NotSupported",
                    "silent": "Timeout",
                    "no-cp-max": "Rejected",
                    "not-connected": "Offline",
                }
                # the fallback the adapter takes: a TxDefaultProfile on every connector
                assert await central.set_charging_profile("no-cp-max", 1, profile("TxDefaultProfile")) == "Accepted"
                # a silent charger still got the profile and still answers other requests
                assert (await cps[3].wait_for("SetChargingProfile")).payload["connectorId"] == 0
                configuration = await central.get_configuration("silent", ["NumberOfConnectors", "NoSuchKey"])
                assert configuration == {"NumberOfConnectors": "1"}
                # every other request says Offline for a charge point that is not connected
                assert await central.clear_charging_profile("not-connected") == "Offline"
                assert await central.get_composite_schedule("not-connected", 0, 60) == "Offline"
                assert await central.get_configuration("not-connected") == "Offline"
                assert await central.change_configuration("not-connected", "HeartbeatInterval", "60") == "Offline"
            finally:
                await asyncio.gather(*(cp.close() for cp in cps))

    run(scenario)


def test_a_limit_is_applied_and_an_ignored_one_shows() -> None:
    events = RecordingEvents()

    def offered(cp_id: str, value: str) -> Callable[[tuple[Any, ...]], bool]:
        return lambda a: a[0] == cp_id and _has(a[3], "Current.Offered", value)

    async def scenario() -> None:
        async with central_system(events) as (central, url):
            obeys = SimulatedChargePoint("obeys", tick_s=0.1, meter_interval_s=1)
            ignores = SimulatedChargePoint(
                "ignores", tick_s=0.1, meter_interval_s=1, behaviour=Behaviour(ProfileAnswer.IGNORE)
            )
            cps = (obeys, ignores)
            await asyncio.gather(*(cp.connect(url) for cp in cps))
            try:
                for cp in cps:
                    await _configured(cp)
                    await cp.plug_in(1, Car(phases=3, max_current_a=Decimal(32)), id_tag="TAG")
                await events.wait("meter_values", offered("obeys", "16.0"))  # the charge point's rating
                mark = events.mark()
                for cp in cps:
                    assert await central.set_charging_profile(cp.id, 0, profile(limit=Decimal("10.55"))) == "Accepted"

                composite = await central.get_composite_schedule("obeys", 1, 3600)
                assert isinstance(composite, CompositeSchedule)
                assert composite.periods == ((0, Decimal("10.5")),)
                assert (composite.unit, composite.duration_s) == ("A", 3600)
                assert composite.start is not None
                assert composite.start.tzinfo is UTC
                (_, _, _, samples) = await events.wait("meter_values", offered("obeys", "10.5"), since=mark)
                assert _values(samples, "Current.Import") == {p: Decimal("10.5") for p in ("L1", "L2", "L3")}
                assert obeys.connector(1).drawn_a == Decimal("10.5")
                assert obeys.connector(1).status == "Charging"

                # accepted, yet the composite and Current.Offered show its full rating (16 A)
                composite = await central.get_composite_schedule("ignores", 1, 3600)
                assert isinstance(composite, CompositeSchedule)
                assert composite.periods == ((0, Decimal(16)),)
                (_, _, _, samples) = await events.wait("meter_values", offered("ignores", "16.0"), since=mark)
                assert _values(samples, "Current.Import")["L1"] == 16
                assert ignores.connector(1).drawn_a == 16
                assert len(ignores.ignored) == 1

                # below 6 A the car pauses
                mark = events.mark()
                assert await central.set_charging_profile("obeys", 0, profile(limit=Decimal(4))) == "Accepted"
                await events.wait("status", lambda a: a[:3] == ("obeys", 1, "SuspendedEVSE"), since=mark)
                (_, _, _, samples) = await events.wait("meter_values", offered("obeys", "0.0"), since=mark)
                assert _values(samples, "Current.Import") == dict.fromkeys(("L1", "L2", "L3"), 0)
                # cleared: the car charges at the charge point's rating again
                mark = events.mark()
                assert await central.clear_charging_profile("obeys", purpose="ChargePointMaxProfile") == "Accepted"
                await events.wait("status", lambda a: a[:3] == ("obeys", 1, "Charging"), since=mark)
                assert obeys.connector(1).drawn_a == 16
                assert await central.clear_charging_profile("obeys", profile_id=1) == "Unknown"
            finally:
                await asyncio.gather(*(cp.close() for cp in cps))

    run(scenario)


async def _configured(cp: SimulatedChargePoint) -> None:
    """Waits until the central's set-up after boot reached `cp`: the measurand settings come last."""
    since = 0.0
    while cp.setting("MeterValuesSampledData") != METER_MEASURANDS:
        since = (await cp.wait_for("ChangeConfiguration", since=since)).at + 1e-9


def test_cars_draw_what_they_can_and_stop_when_full() -> None:
    """Simulated time at 600x: a 3-phase car sharing the charge point is full (10 kWh) after some real seconds."""
    events = RecordingEvents()

    async def scenario() -> None:
        async with central_system(events) as (_, url):
            cp = SimulatedChargePoint(
                "physics", connectors=2, max_current_a=Decimal(32), clock=SimClock(speed=600), tick_s=0.05
            )
            await cp.connect(url)
            try:
                await _configured(cp)
                # one phase at its own maximum of 20 A: it loads L1 only
                await cp.plug_in(1, Car(phases=1, max_current_a=Decimal(20), energy_need_kwh=Decimal(50)))
                assert cp.connector(1).drawn_a == 20
                # the two cars share the 32 A rating: 16 A each
                await cp.plug_in(2, Car(phases=3, max_current_a=Decimal(32), energy_need_kwh=Decimal(10)))
                assert (cp.connector(1).drawn_a, cp.connector(2).drawn_a) == (Decimal(16), Decimal(16))
                (_, _, _, samples) = await events.wait(
                    "meter_values", lambda a: a[1] == 1 and a[2] is not None and _has(a[3], "Current.Import", "16.0")
                )
                assert _values(samples, "Current.Import") == {"L1": 16, "L2": 0, "L3": 0}
                await events.wait("status", lambda a: a[1:3] == (2, "SuspendedEV"))
                full = cp.connector(2)
                assert full.delivered_wh == 10_000
                assert (full.drawn_a, full.phases_in_use) == (Decimal(0), 3)
                assert (cp.connector(1).drawn_a, cp.connector(1).phases_in_use) == (Decimal(20), 1)
                await cp.unplug(2)
                await cp.unplug(1)
                await events.wait("transaction_stopped", lambda _: len(events.of("transaction_stopped")) == 2)
            finally:
                await cp.close()

    run(scenario)
    first, second = sorted(events.of("transaction_started"), key=lambda a: a[1])
    meter_stop = {a[1]: a[2] for a in events.of("transaction_stopped")}
    assert meter_stop[second[5]] - second[3] == 10_000
    assert meter_stop[first[5]] - first[3] > 0


def test_a_fleet_runs_sessions_and_stops_cleanly() -> None:
    events = RecordingEvents()
    specs = fleet_specs(8, prefix="demo", seed=7)

    async def scenario() -> None:
        async with central_system(events) as (central, url):
            stop = asyncio.Event()
            fleet = asyncio.create_task(
                run_fleet(specs, url, stop=stop, speed=600, seed=7, mean_idle_s=300, mean_stay_s=900, tick_s=0.1)
            )
            await events.wait("transaction_stopped", lambda _: len(events.of("transaction_stopped")) >= 3)
            assert central.connected_ids() == {s.id for s in specs}
            stop.set()
            async with asyncio.timeout(60):
                await fleet
            await events.wait("disconnected", lambda _: len(events.of("disconnected")) == len(specs))
            assert central.connected_ids() == set()

    run(scenario)
    started = events.of("transaction_started")
    assert len({a[2] for a in started}) == len(started)  # every session its own id tag
    assert {a[4] for a in events.of("transaction_stopped")} == {"EVDisconnected"}


def test_limits_go_on_the_wire_with_one_decimal() -> None:
    events = RecordingEvents()
    frames: list[str] = []

    async def scenario() -> None:
        async with central_system(events) as (central, url):
            websocket = await raw_client(url, "raw-1")
            try:
                await events.wait("connected")
                body = profile(limit=Decimal("41.45"))
                body["chargingSchedule"]["chargingSchedulePeriod"] = [
                    {"startPeriod": 0, "limit": Decimal("41.45"), "numberPhases": 3},
                    {"startPeriod": 900, "limit": 41.400000000000006},
                    {"startPeriod": 1800, "limit": Decimal(16)},
                    {"startPeriod": 2700, "limit": Decimal("6.00")},
                ]
                sending = asyncio.create_task(central.set_charging_profile("raw-1", 0, body))
                async with asyncio.timeout(60):
                    frame = await websocket.recv()
                frames.append(str(frame))
                message = json.loads(frame)
                await websocket.send(json.dumps([3, message[1], {"status": "Accepted"}]))
                assert await sending == "Accepted"

                with pytest.raises(InvalidInput, match=r"not valid OCPP 1\.6"):
                    await central.set_charging_profile("raw-1", 0, {"chargingProfileId": 1})
                # a charge point answering with a payload the schema refuses: CallError, not an exception
                sending = asyncio.create_task(central.set_charging_profile("raw-1", 0, profile()))
                async with asyncio.timeout(60):
                    message = json.loads(await websocket.recv())
                await websocket.send(json.dumps([3, message[1], {"status": "Maybe"}]))
                assert await sending == "CallError"
                asking = asyncio.create_task(central.get_configuration("raw-1"))
                async with asyncio.timeout(60):
                    message = json.loads(await websocket.recv())
                await websocket.send(json.dumps([4, message[1], "InternalError", "broken", {}]))
                assert await asking == "CallError"
            finally:
                await websocket.close()

    run(scenario)
    (frame,) = frames
    assert '"limit":41.4,' in frame
    assert '"limit":16}' in frame
    assert '"limit":6}' in frame
    assert "41.45" not in frame
    assert "41.400000000000006" not in frame


def test_frames_that_are_not_ocpp_get_a_callerror_and_reach_no_event() -> None:
    events = RecordingEvents()
    naive = "2026-03-29T12:00:00"
    cases: list[tuple[str | list[object], str, str]] = [
        ("this is not JSON", "-1", "FormationViolation"),
        ('{"not": "an array"}', "-1", "ProtocolError"),
        ('[2, "m1", "Heartbeat"]', "m1", "ProtocolError"),
        ([2, "m2", "NoSuchAction", {}], "m2", "NotSupported"),
        ([2, "m3", "BootNotification", {"chargePointVendor": "v"}], "m3", "ProtocolError"),
        (
            [2, "m4", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m", "x": 1}],
            "m4",
            "FormationViolation",
        ),
        (
            [2, "m5", "BootNotification", {"chargePointVendor": 7, "chargePointModel": "m"}],
            "m5",
            "TypeConstraintViolation",
        ),
        ([2, "m6", "Authorize", {"idTag": "a-tag-that-is-far-too-long-for-ocpp"}], "m6", "TypeConstraintViolation"),
        (
            [
                2,
                "m7",
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": naive},
            ],
            "m7",
            "PropertyConstraintViolation",
        ),
        (
            [2, "m8", "StartTransaction", {"connectorId": 1, "idTag": "t", "meterStart": 0, "timestamp": naive}],
            "m8",
            "PropertyConstraintViolation",
        ),
        (
            [
                2,
                "m9",
                "StartTransaction",
                {"connectorId": -1, "idTag": "t", "meterStart": 0, "timestamp": "2026-03-29T12:00:00Z"},
            ],
            "m9",
            "PropertyConstraintViolation",
        ),
        (
            [
                2,
                "m10",
                "MeterValues",
                {"connectorId": 1, "meterValue": [{"timestamp": naive, "sampledValue": [{"value": "1"}]}]},
            ],
            "m10",
            "PropertyConstraintViolation",
        ),
        (
            [2, "m11", "StopTransaction", {"meterStop": 5, "timestamp": "yesterday", "transactionId": 1}],
            "m11",
            "TypeConstraintViolation",
        ),
        (
            [2, "m12", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}],
            "m12",
            "FormationViolation",
        ),
    ]

    async def scenario() -> None:
        async with central_system(events) as (_, url):
            websocket = await raw_client(url, "raw-2")
            try:
                await events.wait("connected")
                for frame, unique_id, code in cases:
                    answer = await exchange(websocket, frame)
                    assert answer[:3] == [4, unique_id, code], frame
                    assert isinstance(answer[3], str)
                    assert isinstance(answer[4], dict)
                # a broken CALLRESULT gets no answer; the connection still works afterwards
                await websocket.send('[3, "nobody-asked"]')
                answer = await exchange(websocket, [2, "ok", "Heartbeat", {}])
                assert answer[:2] == [3, "ok"]
                assert datetime.fromisoformat(answer[2]["currentTime"]).tzinfo is not None
            finally:
                await websocket.close()
            await events.wait("disconnected")

    run(scenario)
    assert events.names("raw-2") == ["admit", "connected", "disconnected"]


def test_handshakes_are_refused_with_a_status_and_a_reason() -> None:
    events = RecordingEvents(known={"open": None, "locked": SECRET})

    async def refused(
        url: str, charge_point_id: str, *, subprotocol: bool = True, password: str | None = None
    ) -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as refusal:
            await raw_client(url, charge_point_id, subprotocol=subprotocol, password=password)
        response = refusal.value.response
        return response.status_code, response.body.decode()

    async def scenario() -> None:
        async with central_system(events) as (central, url):
            status, reason = await refused(url, "stranger")
            assert (status, reason) == (404, "unknown charge point stranger\n")
            status, reason = await refused(url, "locked", password=WRONG_SECRET)
            assert status == 401
            assert "locked" in reason
            assert (await refused(url, "locked"))[0] == 401
            status, reason = await refused(url, "open", subprotocol=False)
            assert status == 400
            assert "ocpp1.6" in reason
            assert (await refused(url.removesuffix("/ocpp") + "/other", "open"))[0] == 404
            assert (await refused(url, "bad%20id"))[0] == 404

            websocket = await raw_client(url, "locked", password=SECRET)
            assert websocket.subprotocol == "ocpp1.6"
            await events.wait("connected")
            assert central.connected_ids() == {"locked"}
            await websocket.close()
            await events.wait("disconnected")

    run(scenario)
    assert ("locked", "locked", WRONG_SECRET) in events.of("admit")
    assert [args[0] for args in events.of("connected")] == ["locked"]


def test_a_second_connection_with_the_same_id_replaces_the_first() -> None:
    events = RecordingEvents()

    async def scenario() -> None:
        async with central_system(events) as (central, url):
            first = await raw_client(url, "twice")
            await events.wait("connected")
            second = await raw_client(url, "twice")
            try:
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(60):
                        await first.recv()
                assert first.close_code == 1000
                await events.wait("connected", lambda _: len(events.of("connected")) == 2)
                assert central.connected_ids() == {"twice"}
                # requests go to the new connection
                asking = asyncio.create_task(central.get_configuration("twice", ["HeartbeatInterval"]))
                async with asyncio.timeout(60):
                    message = json.loads(await second.recv())
                assert message[2] == "GetConfiguration"
                await second.send(json.dumps([3, message[1], {"configurationKey": []}]))
                assert await asking == {}
            finally:
                await first.close()
                await second.close()
            await events.wait("disconnected", lambda _: len(events.of("disconnected")) == 2)

    run(scenario)
    assert events.names("twice") == ["admit", "connected", "admit", "disconnected", "connected", "disconnected"]


def test_fifty_charge_points_get_their_profiles_at_once() -> None:
    events = RecordingEvents()
    specs = [ChargePointSpec(f"many-{n:02d}", connectors=1 + n % 2) for n in range(50)]

    async def scenario() -> None:
        async with central_system(events) as (central, url), Fleet(specs, url, connect_concurrency=25) as fleet:
            assert central.connected_ids() == {s.id for s in specs}
            since = time.monotonic()
            results = await asyncio.gather(
                *(central.set_charging_profile(s.id, 0, profile(limit=Decimal("12.3"))) for s in specs)
            )
            assert results == ["Accepted"] * len(specs)
            received = await fleet.wait_all("SetChargingProfile", since=since)
            assert set(received) == {s.id for s in specs}
            limits = {
                r.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
                for r in received.values()
            }
            assert limits == {Decimal("12.3")}
            assert all(cp.installed for cp in fleet.charge_points.values())

    run(scenario)
    assert len(events.of("booted")) == 50
