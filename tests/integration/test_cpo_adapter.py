"""The CPO adapter enforcing budgets on simulated charge points over real websockets on 127.0.0.1.

The adapter runs as `gridcap cpo serve` runs it (its own loop thread, its own SQLite file); the charge
points are `service.cpo.simulator` fleets on the `ocpp` library, scripted to accept, reject, answer
NotSupported, time out, or accept and ignore. Budgets arrive as they would from the DSO (`receive`).
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from service.cpo.adapter import AdapterSettings
from service.cpo.app import AdapterService, build_adapter_service
from service.cpo.dso import ReceivedBudgets
from service.cpo.profiles import ChargePoint
from service.cpo.simulator import Behaviour, Car, ChargePointSpec, Fleet, ProfileAnswer, SimulatedChargePoint
from service.domain.blocks import BLOCK, block_floor
from service.settings import load_settings

D = Decimal
TOKEN = "an admin token for the adapter tests"  # noqa: S105 - test credentials
WAIT_S = 60.0


@contextmanager
def adapter_running(
    tmp_path: Path, points: list[ChargePoint], *, call_timeout_s: int = 10, **options: Any
) -> Iterator[tuple[AdapterService, str]]:
    settings = load_settings(
        {
            "GRIDCAP_CPO_DATABASE_URL": f"sqlite:///{tmp_path / 'cpo.db'}",
            "GRIDCAP_CPO_DSO_PASSWORD": "the DSO's password to the adapter",
            "GRIDCAP_CPO_OPEN_CHARGE_POINTS": "true",
            "GRIDCAP_OCPP_CALL_TIMEOUT_S": str(call_timeout_s),
            "GRIDCAP_ADMIN_TOKEN": TOKEN,
        }
    )
    tuned = AdapterSettings(**{"compliance_after_s": 2.0, "debounce_s": 0.05, "recompute_every_s": 3.0, **options})
    service = build_adapter_service(settings, admin_token=TOKEN, adapter_settings=tuned, ocpp_port=0)
    for cp in points:
        service.adapter.store.add_charge_point(cp)
    port = service.start()
    try:
        yield service, f"ws://127.0.0.1:{port}/ocpp"
    finally:
        service.close()


def point(cp_id: str, *, max_current_a: int = 16, phases: int = 3, connectors: int = 1) -> ChargePoint:
    return ChargePoint(cp_id, "c1", D(max_current_a), phases, connectors=connectors)


def spec(cp: ChargePoint, answer: ProfileAnswer = ProfileAnswer.ACCEPT, **behaviour: Any) -> ChargePointSpec:
    return ChargePointSpec(
        cp.id,
        connectors=cp.connectors,
        max_current_a=cp.max_current_a,
        phases=cp.phases,
        behaviour=Behaviour(answer, **behaviour),
    )


def budget(
    capacity: int, *, backup: int = 0, blocks: int = 8, unit: str = "A", first: datetime | None = None
) -> ReceivedBudgets:
    first = first or block_floor(datetime.now(UTC))
    return ReceivedBudgets("c1", unit, {first + k * BLOCK: D(capacity) for k in range(blocks)}, D(backup))


def car(max_current_a: int = 32, phases: int = 3) -> Car:
    return Car(phases=phases, max_current_a=D(max_current_a), energy_need_kwh=D(60))


async def until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def last_profile(cp: SimulatedChargePoint) -> dict[str, Any]:
    found = [r for r in cp.received if r.action == "SetChargingProfile"]
    assert found, f"{cp.id} received no SetChargingProfile"
    payload: dict[str, Any] = found[-1].payload
    return payload


def periods(cp: SimulatedChargePoint) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = last_profile(cp)["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
    return found


def transaction_of_last_profile(cp: SimulatedChargePoint) -> object:
    found = [r for r in cp.received if r.action == "SetChargingProfile"]
    return found[-1].payload["csChargingProfiles"].get("transactionId") if found else None


def limit_now(cp: SimulatedChargePoint) -> Decimal | None:
    """The limit in force now in the last profile `cp` received (None: none yet). Not simply the first
    period: startSchedule lies up to two minutes back, so that may still be the previous block's."""
    found = [r for r in cp.received if r.action == "SetChargingProfile"]
    if not found:
        return None
    schedule = found[-1].payload["csChargingProfiles"]["chargingSchedule"]
    elapsed_s = (datetime.now(UTC) - datetime.fromisoformat(schedule["startSchedule"])).total_seconds()
    started = [q for q in schedule["chargingSchedulePeriod"] if q["startPeriod"] <= elapsed_s]
    return D(str(started[-1]["limit"]))


def offered(fleet: Fleet, cp_id: str, connector: int = 1) -> Decimal:
    return fleet.charge_points[cp_id].connector(connector).offered_a


def in_force(service: AdapterService) -> dict[str, Any]:
    return {v["charge_point_id"]: v["limit_a"] for v in service.adapter.limits_view()}


def kind_of(service: AdapterService, cp_id: str) -> Any:
    return service.adapter.charge_point_view(cp_id)["profile_kind"]


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------------


def test_a_budget_becomes_charge_point_max_profiles_that_share_it_fairly(tmp_path: Path) -> None:
    points = [point("cp1"), point("cp2"), point("cp3")]
    with adapter_running(tmp_path, points) as (service, url):

        async def scenario() -> None:
            async with Fleet([spec(cp) for cp in points], url, meter_interval_s=5) as fleet:
                service.adapter.receive([budget(30, backup=12)])
                await fleet.charge_points["cp1"].plug_in(1, car())
                await fleet.charge_points["cp2"].plug_in(1, car())
                await until(
                    lambda: offered(fleet, "cp1") == 15 and offered(fleet, "cp2") == 15, "cp1 and cp2 at 15 A each"
                )
                for cp_id in ("cp1", "cp2", "cp3"):
                    profile = last_profile(fleet.charge_points[cp_id])
                    assert profile["connectorId"] == 0
                    cs = profile["csChargingProfiles"]
                    assert cs["chargingProfilePurpose"] == "ChargePointMaxProfile"
                    assert cs["chargingProfileKind"] == "Absolute"
                    start = datetime.fromisoformat(cs["chargingSchedule"]["startSchedule"])
                    assert start < datetime.now(UTC)  # slightly in the past, against clock drift
                    assert "duration" not in cs["chargingSchedule"]  # the last period never expires
                assert limit_now(fleet.charge_points["cp3"]) == 0  # no car: no share
                # the backup (12 A for the cable) is shared: 6 A for two charge points, in id order
                backups = [periods(fleet.charge_points[c])[-1]["limit"] for c in ("cp1", "cp2", "cp3")]
                assert backups == [6, 6, 0]
                # the adapter records a limit once the charge point's answer is in, a moment after it applies it
                expected = {"cp1": D(15), "cp2": D(15), "cp3": D(0)}
                await until(lambda: in_force(service) == expected, "the limits in force as the adapter reports them")

        run(scenario)


def test_reductions_are_accepted_before_anyone_is_raised(tmp_path: Path) -> None:
    points = [point("cp0"), point("cp1"), point("cp2")]  # cp0 first in every listing
    with adapter_running(tmp_path, points) as (service, url):

        async def scenario() -> None:
            async with Fleet([spec(cp) for cp in points], url, meter_interval_s=5) as fleet:
                cps = fleet.charge_points
                service.adapter.receive([budget(30)])
                await cps["cp1"].plug_in(1, car())
                await cps["cp2"].plug_in(1, car())
                await until(lambda: offered(fleet, "cp1") == 15 and offered(fleet, "cp2") == 15, "15 A each")
                since = time.monotonic()
                await cps["cp0"].plug_in(1, car())  # three cars on 30 A: 10 each
                await until(lambda: all(offered(fleet, c) == 10 for c in ("cp0", "cp1", "cp2")), "10 A each")
                arrivals = {
                    c: min(r.at for r in cps[c].received if r.action == "SetChargingProfile" and r.at >= since)
                    for c in ("cp0", "cp1", "cp2")
                }
                assert arrivals["cp0"] > max(arrivals["cp1"], arrivals["cp2"])  # the raise came last

        run(scenario)


def test_a_rejected_charge_point_max_profile_falls_back_to_tx_default(tmp_path: Path) -> None:
    points = [point("picky")]
    with adapter_running(tmp_path, points) as (service, url):

        async def scenario() -> None:
            rejects_max = spec(points[0], rejected_purposes=frozenset({"ChargePointMaxProfile"}))
            async with Fleet([rejects_max], url, meter_interval_s=5) as fleet:
                service.adapter.receive([budget(12)])
                await fleet.charge_points["picky"].plug_in(1, car())
                await until(lambda: offered(fleet, "picky") == 12, "12 A through a TxDefaultProfile")
                profile = last_profile(fleet.charge_points["picky"])
                assert profile["connectorId"] == 1
                assert profile["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile"
                await until(lambda: kind_of(service, "picky") == "TxDefaultProfile", "TxDefaultProfile recorded")
                statuses = [r.status for r in service.adapter.store.recent_profiles(charge_point_id="picky")]
                assert "Rejected" in statuses

        run(scenario)


@pytest.mark.parametrize("answer", [ProfileAnswer.REJECT, ProfileAnswer.NOT_SUPPORTED, ProfileAnswer.IGNORE])
def test_a_charge_point_that_cannot_be_steered_has_its_rating_reserved(tmp_path: Path, answer: ProfileAnswer) -> None:
    points = [point("stubborn"), point("good")]
    with adapter_running(tmp_path, points) as (service, url):

        async def scenario() -> None:
            async with Fleet([spec(points[0], answer), spec(points[1])], url, meter_interval_s=2) as fleet:
                service.adapter.receive([budget(30)])
                await fleet.charge_points["stubborn"].plug_in(1, car())
                await fleet.charge_points["good"].plug_in(1, car())
                await until(lambda: service.adapter.charge_point_view("stubborn")["excluded"] is not None, "exclusion")
                # 30 A less the stubborn charge point's 16 A rating: 14 A for the good one
                good = fleet.charge_points["good"]
                await until(lambda: offered(fleet, "good") == limit_now(good) == 14, "the good charge point at 14 A")
                assert "stubborn" in service.adapter.status_view()["ocpp"]["excluded"]

        run(scenario)


def test_a_charge_point_that_does_not_answer_is_held_at_its_rating(tmp_path: Path) -> None:
    points = [point("silent"), point("good")]
    with adapter_running(tmp_path, points, call_timeout_s=1) as (service, url):

        async def scenario() -> None:
            specs = [spec(points[0], ProfileAnswer.TIMEOUT), spec(points[1])]
            async with Fleet(specs, url, meter_interval_s=5) as fleet:
                service.adapter.receive([budget(30)])
                await fleet.charge_points["good"].plug_in(1, car())
                await until(lambda: service.adapter.charge_point_view("silent")["unconfirmed"] == "Timeout", "Timeout")
                await until(lambda: offered(fleet, "good") == 14, "the good charge point at 30 - 16 A")

        run(scenario)


def test_the_backup_applies_where_the_known_blocks_end(tmp_path: Path) -> None:
    points = [point("cp1")]
    with adapter_running(tmp_path, points) as (service, url):

        async def scenario() -> None:
            async with Fleet([spec(points[0])], url, meter_interval_s=5) as fleet:
                first = block_floor(datetime.now(UTC))
                service.adapter.receive([budget(20, backup=8, blocks=2, first=first)])
                await fleet.charge_points["cp1"].plug_in(1, car())
                cp1 = fleet.charge_points["cp1"]
                await until(
                    lambda: offered(fleet, "cp1") == limit_now(cp1) == 16, "16 A (the rating) in the known blocks"
                )
                cs = last_profile(fleet.charge_points["cp1"])["csChargingProfiles"]["chargingSchedule"]
                periods = cs["chargingSchedulePeriod"]
                start = datetime.fromisoformat(cs["startSchedule"])
                end_of_known = first + 2 * BLOCK
                # 16 A falls to the 8 A backup a minute early: a charger's clock may be a minute off
                assert start + timedelta(seconds=periods[-1]["startPeriod"]) == end_of_known - timedelta(minutes=1)
                assert D(str(periods[-1]["limit"])) == 8

        run(scenario)


def test_a_block_the_dso_left_out_gets_the_backup_and_later_blocks_still_count(tmp_path: Path) -> None:
    points = [point("cp1")]
    with adapter_running(tmp_path, points) as (service, url):

        async def scenario() -> None:
            async with Fleet([spec(points[0])], url, meter_interval_s=5) as fleet:
                first = block_floor(datetime.now(UTC))
                blocks = {first: D(16), first + BLOCK: D(16), first + 3 * BLOCK: D(7)}  # no word on the third
                service.adapter.receive([ReceivedBudgets("c1", "A", blocks, D(12))])
                await fleet.charge_points["cp1"].plug_in(1, car())
                cp1 = fleet.charge_points["cp1"]
                await until(lambda: offered(fleet, "cp1") == limit_now(cp1) == 16, "16 A now")
                cs = last_profile(fleet.charge_points["cp1"])["csChargingProfiles"]["chargingSchedule"]
                start = datetime.fromisoformat(cs["startSchedule"])
                steps = [
                    (start + timedelta(seconds=q["startPeriod"]), q["limit"]) for q in cs["chargingSchedulePeriod"]
                ]
                minute = timedelta(minutes=1)  # falls a minute early, rises a minute late (clock skew)
                expected = [
                    (first + 2 * BLOCK - minute, 12),
                    (first + 3 * BLOCK - minute, 7),
                    (first + 4 * BLOCK + minute, 12),
                ]
                assert steps[-3:] == expected

        run(scenario)


def test_every_car_on_a_tx_profile_charge_point_gets_its_own_profile(tmp_path: Path) -> None:
    points = [point("txonly", connectors=2), point("other")]
    with adapter_running(tmp_path, points) as (service, url):

        async def scenario() -> None:
            only_tx = spec(points[0], rejected_purposes=frozenset({"ChargePointMaxProfile", "TxDefaultProfile"}))
            async with Fleet([only_tx, spec(points[1])], url, meter_interval_s=5) as fleet:
                cp = fleet.charge_points["txonly"]
                service.adapter.receive([budget(40)])
                first_tx = await cp.plug_in(1, car())
                await until(lambda: transaction_of_last_profile(cp) == first_tx, "a TxProfile for the first car")
                await until(lambda: kind_of(service, "txonly") == "TxProfile", "TxProfile recorded")
                # connector 2 has no car and so no profile: its 16 A stay reserved for whoever plugs in
                await fleet.charge_points["other"].plug_in(1, car())
                other = fleet.charge_points["other"]
                await until(lambda: 0 < offered(fleet, "other") == limit_now(other), "the other charging on a profile")
                assert offered(fleet, "other") <= 40 - 16 - offered(fleet, "txonly")
                await cp.unplug(1)
                second_tx = await cp.plug_in(1, car())
                assert second_tx != first_tx
                await until(lambda: transaction_of_last_profile(cp) == second_tx, "a TxProfile for the second car")

        run(scenario)


def test_a_raise_left_unanswered_is_held_as_if_it_applied(tmp_path: Path) -> None:
    points = [point("a", max_current_a=32), point("b", max_current_a=32)]
    with adapter_running(tmp_path, points, call_timeout_s=1) as (service, url):

        async def scenario() -> None:
            async with Fleet([spec(cp) for cp in points], url, meter_interval_s=5) as fleet:
                service.adapter.receive([budget(32)])
                await fleet.charge_points["a"].plug_in(1, car())
                await fleet.charge_points["b"].plug_in(1, car())
                await until(lambda: offered(fleet, "a") == 16 and offered(fleet, "b") == 16, "16 A each")
                fleet.charge_points["a"].behaviour = Behaviour(ProfileAnswer.TIMEOUT)  # a goes quiet
                await fleet.charge_points["b"].unplug(1)  # a is offered 32 A and does not answer
                await until(lambda: service.adapter.charge_point_view("a")["unconfirmed"] == "Timeout", "a timeout")
                await fleet.charge_points["b"].plug_in(1, car())

                def b_limit() -> object:
                    return next(
                        (v["limit_a"] for v in service.adapter.sessions_view() if v["charge_point_id"] == "b"), None
                    )

                await until(lambda: b_limit() is not None, "a share computed for b's car")
                # a may be drawing the 32 A it never confirmed: nothing is left for b
                assert b_limit() == 0
                await until(lambda: offered(fleet, "b") == limit_now(fleet.charge_points["b"]) == 0, "b held at 0 A")

        run(scenario)
