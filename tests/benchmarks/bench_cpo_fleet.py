"""A budget change reaching 500 connected charge points as SetChargingProfile: target <= 5 s.

Figures, not checks: nothing here asserts a speed. Run with
    .venv/bin/python -m pytest -q -s --benchmarks tests/benchmarks/bench_cpo_fleet.py

The adapter runs as `gridcap cpo serve` runs it (its loop thread, its SQLite file); 500 simulated charge
points (the `ocpp` library, real websockets on 127.0.0.1) connect to it from another thread, spread over
5 cables, each with a car charging. Timed: from handing the adapter a lower budget for every cable to the
moment the last charge point has received its new SetChargingProfile (split, plans, reductions first,
500 calls answered, each recorded). The yardstick in the same run: 500 SetChargingProfile calls sent
straight through the central system at once, with no adapter logic, so the figure reads as a ratio.
"""

import asyncio
import statistics
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from service.cpo.adapter import AdapterSettings
from service.cpo.app import build_adapter_service
from service.cpo.central import CentralSystem
from service.cpo.dso import ReceivedBudgets
from service.cpo.profiles import ChargePoint
from service.cpo.simulator import Car, ChargePointSpec, Fleet
from service.domain.blocks import BLOCK, block_floor
from service.settings import load_settings

D = Decimal
N_POINTS, N_CABLES, TARGET_S, ROUNDS = 500, 5, 5.0, 3
TOKEN = "an admin token for the benchmark"  # noqa: S105
CAR = Car(phases=3, max_current_a=D(32), energy_need_kwh=D(80))


def budgets(per_cable_a: int) -> list[ReceivedBudgets]:
    first = block_floor(datetime.now(UTC))
    blocks = {first + k * BLOCK: D(per_cable_a) for k in range(96)}
    return [ReceivedBudgets(f"cable-{c}", "A", blocks, D(0)) for c in range(N_CABLES)]


async def send_all(central: CentralSystem, ids: list[str], profile: dict[str, object]) -> list[str]:
    return list(await asyncio.gather(*(central.set_charging_profile(i, 0, profile) for i in ids)))


def test_a_budget_change_reaches_500_charge_points(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "GRIDCAP_CPO_DATABASE_URL": f"sqlite:///{tmp_path / 'cpo.db'}",
            "GRIDCAP_CPO_DSO_PASSWORD": "the DSO's password to the adapter",
            "GRIDCAP_CPO_OPEN_CHARGE_POINTS": "true",
            "GRIDCAP_ADMIN_TOKEN": TOKEN,
        }
    )
    quiet = AdapterSettings(recompute_every_s=3600, compliance_after_s=3600, debounce_s=0.05)
    service = build_adapter_service(settings, admin_token=TOKEN, adapter_settings=quiet, ocpp_port=0)
    ids = [f"bench-{n:04d}" for n in range(N_POINTS)]
    for n, cp_id in enumerate(ids):
        service.adapter.store.add_charge_point(ChargePoint(cp_id, f"cable-{n % N_CABLES}", D(16), 3))
    port = service.start()
    url = f"ws://127.0.0.1:{port}/ocpp"
    per_cable = N_POINTS // N_CABLES

    async def scenario() -> tuple[list[float], list[float]]:
        specs = [ChargePointSpec(cp_id) for cp_id in ids]
        async with Fleet(specs, url, meter_interval_s=3600, tick_s=5.0) as fleet:
            service.adapter.receive(budgets(per_cable * 12))
            await asyncio.gather(*(cp.plug_in(1, CAR) for cp in fleet.charge_points.values()))
            await fleet.wait_all("SetChargingProfile", timeout_s=300)
            await asyncio.sleep(2)  # let the plug-in recomputes settle
            adapter_s: list[float] = []
            for k in range(ROUNDS):  # 12 A each -> 8 A -> 12 A ...: every profile changes
                started = time.monotonic()
                service.adapter.receive(budgets(per_cable * (8 if k % 2 == 0 else 12)))
                await fleet.wait_all("SetChargingProfile", since=started, timeout_s=300)
                last = max(
                    max(r.at for r in cp.received if r.action == "SetChargingProfile")
                    for cp in fleet.charge_points.values()
                )
                adapter_s.append(last - started)
                await asyncio.sleep(1)
            direct_s: list[float] = []
            central = service.adapter.central
            loop = service._loop
            assert loop is not None
            for k in range(ROUNDS):
                profile = {
                    "chargingProfileId": 1000,
                    "stackLevel": 1,
                    "chargingProfilePurpose": "ChargePointMaxProfile",
                    "chargingProfileKind": "Absolute",
                    "chargingSchedule": {
                        "chargingRateUnit": "A",
                        "startSchedule": datetime.now(UTC).isoformat(),
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": D(10 + k)}],
                    },
                }
                started = time.monotonic()

                answers = await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(send_all(central, ids, profile), loop)
                )
                assert set(answers) == {"Accepted"}
                direct_s.append(time.monotonic() - started)
                await asyncio.sleep(1)
            return adapter_s, direct_s

    try:
        adapter_s, direct_s = asyncio.run(scenario())
    finally:
        service.close()
    adapter_med, direct_med = statistics.median(adapter_s), statistics.median(direct_s)
    print(
        f"\nbudget change -> {N_POINTS} charge points ({N_CABLES} cables): "
        f"median {adapter_med:.2f} s over {ROUNDS} rounds ({', '.join(f'{s:.2f}' for s in adapter_s)}), "
        f"target {TARGET_S:.0f} s; {N_POINTS} bare SetChargingProfile calls: median {direct_med:.2f} s; "
        f"ratio {adapter_med / direct_med:.1f}x"
    )
