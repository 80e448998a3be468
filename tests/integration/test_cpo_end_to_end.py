"""DSO -> CPO adapter -> charge points, end to end: the DSO service and the adapter talk OSCP over real
HTTP on 127.0.0.1 (zeep for SOAP, the JSON variant), the adapter talks OCPP 1.6-J over real websockets to
simulated charge points, and usage flows back to the DSO."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from oscp_support import DSO_PASSWORD, DSO_USER, PASSWORD, live_server, make_grid
from test_cpo_adapter import TOKEN, car, limit_now, offered, point, spec, until

from service.app import create_app, wiring
from service.cpo.adapter import Adapter, AdapterSettings
from service.cpo.app import AdapterService, build_adapter_service, dso_endpoint
from service.cpo.dso import DsoLink, MessageLog, ReceivedBudgets
from service.cpo.ledger import MeterSample
from service.cpo.simulator import Fleet
from service.cpo.store import CpoStore
from service.domain.blocks import BLOCK, block_floor
from service.domain.errors import Conflict
from service.domain.model import Binding
from service.oscp.v1.client import OscpClient
from service.oscp.v1.gateway import WSDL_DIR
from service.oscp.v1.link import OscpPeerLink
from service.oscp.v1.recorder import Recorder
from service.settings import load_settings
from service.store import Database
from service.store.repository import Repository
from service.usecases import Context, cpos, grid
from service.usecases import oscp as dso_oscp

D = Decimal
ENERGY = "Energy.Active.Import.Register"


@contextmanager
def dso_running(tmp_path: Path) -> Iterator[tuple[Context, str]]:
    """The DSO service on a real clock (the adapter and the charge points run on real time too)."""
    db = Database(f"sqlite:///{tmp_path / 'dso.db'}")
    db.create_schema()
    ctx = Context(db, clock=lambda: datetime.now(UTC))
    settings = load_settings({"GRIDCAP_ADMIN_TOKEN": TOKEN, "GRIDCAP_OSCP_PASSWORD": DSO_PASSWORD})
    app = create_app(settings, ctx)
    try:
        with live_server(app) as url:
            yield ctx, url
    finally:
        wiring(app).close()
        db.dispose()


def adapter_settings(tmp_path: Path, dso_url: str, binding: Binding) -> Any:
    return load_settings(
        {
            "GRIDCAP_CPO_DATABASE_URL": f"sqlite:///{tmp_path / 'cpo.db'}",
            "GRIDCAP_CPO_DSO_URL": dso_url,
            "GRIDCAP_CPO_DSO_BINDING": binding.value,
            "GRIDCAP_CPO_USERNAME": "user-a",
            "GRIDCAP_CPO_PASSWORD": PASSWORD,
            "GRIDCAP_CPO_DSO_USERNAME": DSO_USER,
            "GRIDCAP_CPO_DSO_PASSWORD": DSO_PASSWORD,
            "GRIDCAP_CPO_OPEN_CHARGE_POINTS": "true",
            "GRIDCAP_ADMIN_TOKEN": TOKEN,
        }
    )


def push(ctx: Context) -> dso_oscp.DeliveryResult:
    """One round of the DSO's push job."""
    client = OscpClient(wsdl_dir=WSDL_DIR, username=DSO_USER, password=DSO_PASSWORD)
    recorder = Recorder(ctx)
    try:
        return dso_oscp.deliver_pushes(ctx, OscpPeerLink(client, recorder))
    finally:
        recorder.close()
        client.close()


def budget_of_a(ctx: Context, start: datetime) -> Decimal:
    return next(f.budgets[start] for f in dso_oscp.forecasts(ctx, "a", "c1"))


@pytest.mark.parametrize("binding", [Binding.SOAP11, Binding.SOAP12, Binding.JSON])
def test_dso_budgets_reach_the_charge_points_over_oscp_and_ocpp(tmp_path: Path, binding: Binding) -> None:
    with dso_running(tmp_path) as (ctx, dso_url):
        quick = AdapterSettings(debounce_s=0.05, recompute_every_s=3.0, compliance_after_s=2.0)
        service: AdapterService = build_adapter_service(
            adapter_settings(tmp_path, dso_url, binding), admin_token=TOKEN, adapter_settings=quick, ocpp_port=0
        )
        points = [point("cp1"), point("cp2")]
        for cp in points:
            service.adapter.store.add_charge_point(cp)
        with live_server(service.app) as adapter_url:
            make_grid(ctx, endpoint=f"{adapter_url}/oscp/1.0", binding=binding)  # CPO a: this adapter
            elsewhere = {"endpoint_url": "http://127.0.0.1:9/oscp/1.0/soap", "binding": Binding.SOAP11}
            cpos.update_cpo(ctx, "b", elsewhere, actor="test")  # b is another CPO, not reachable here
            port = service.start()
            try:

                async def scenario() -> None:
                    now_block = block_floor(datetime.now(UTC))
                    # on start the adapter pulls its forecasts (GetCapacityForecast) from the DSO
                    await until(lambda: _known(service.adapter, now_block) is not None, "the pulled forecast")
                    assert _known(service.adapter, now_block) == budget_of_a(ctx, now_block)
                    async with Fleet([spec(cp) for cp in points], f"ws://127.0.0.1:{port}/ocpp") as fleet:
                        await fleet.charge_points["cp1"].plug_in(1, car())
                        await fleet.charge_points["cp2"].plug_in(1, car())
                        granted = budget_of_a(ctx, now_block)
                        cps = fleet.charge_points.values()
                        await until(
                            lambda: (
                                all(limit_now(cp) is not None for cp in cps)
                                and offered(fleet, "cp1") + offered(fleet, "cp2") > 0
                            ),
                            "charging on profiles",
                        )
                        assert offered(fleet, "cp1") + offered(fleet, "cp2") <= granted

                        # the DSO lowers the cable: the push reaches the adapter, which lowers the profiles
                        await asyncio.to_thread(grid.update_cable, ctx, "c1", {"rated_limit": D(50)}, actor="test")
                        lowered = budget_of_a(ctx, now_block)
                        assert lowered < granted
                        result = await asyncio.to_thread(push, ctx)
                        assert "a" in result.delivered, result
                        await until(lambda: _known(service.adapter, now_block) == lowered, "the pushed budget")
                        await until(
                            lambda: offered(fleet, "cp1") + offered(fleet, "cp2") <= lowered, "profiles within it"
                        )
                        statuses = {r.status for r in service.adapter.store.recent_profiles()}
                        assert statuses == {"Accepted"}

                asyncio.run(scenario())
            finally:
                service.close()
        counted = {(c["direction"], c["operation"]) for c in service.messages.counts()}
        assert ("in", "UpdateCableCapacityForecast") in counted
        assert ("out", "GetCapacityForecast") in counted


def _known(adapter: Adapter, start: datetime) -> Decimal | None:
    for cable in adapter.budgets_view():
        for block in cable["blocks"]:
            if cable["cable_id"] == "c1" and block["start"] == start:
                found: Decimal = block["capacity"]
                return found
    return None


class Later:
    """The adapter's clock, moved on by hand (the DSO runs on real time)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def test_usage_is_buffered_while_the_dso_is_unreachable_and_replayed_in_order(tmp_path: Path) -> None:
    clock = Later()
    store = CpoStore(f"sqlite:///{tmp_path / 'cpo.db'}", clock=clock)
    store.add_charge_point(point("cp1"))
    store.add_charge_point(replace(point("elsewhere"), cable_id="c-unknown"))  # a cable the DSO does not know
    dead = DsoLink(
        OscpClient(wsdl_dir=WSDL_DIR, username="user-a", password=PASSWORD, timeout_s=2),
        MessageLog(),
        url="http://127.0.0.1:9/oscp/1.0/soap",
        binding="soap11",
    )
    adapter = Adapter(store, dso=dead, clock=clock)
    start = block_floor(datetime.now(UTC)) - 3 * BLOCK  # three blocks ago: measured, and begun for the DSO
    clock.offset = timedelta(minutes=3)  # the last of them has settled, whenever the test runs
    for cp_id in ("cp1", "elsewhere"):
        tx = adapter.transaction_started(cp_id, 1, "tag", 1_000, start)
        for k in range(1, 4):  # 11.04 kW on three phases, 16 A: 2760 Wh per block
            at = start + k * BLOCK
            register = MeterSample(at, "Energy.Active.Import.Register", D(1_000 + 2_760 * k), "Wh", None, None)
            currents = [MeterSample(at, "Current.Import", D(16), "A", f"L{n}", None) for n in (1, 2, 3)]
            adapter.meter_values(cp_id, 1, tx, [register, *currents])
    adapter.receive([_budgets_in_a("c-unknown"), _budgets_in_a()])
    asyncio.run(adapter.report_usage())
    pending = store.pending()
    for cable_id in ("c-unknown", "c1"):  # each cable's blocks queued in time order
        assert [i.block_start for i in pending if i.cable_id == cable_id] == [start + k * BLOCK for k in range(3)]
    assert pending[0].attempts == 1  # the first batch failed; nothing later was tried before it
    assert "cannot connect" in (pending[0].last_error or "")
    assert {i.attempts for i in pending[3:]} == {0}
    assert adapter.status_view()["dso"]["usage_buffered"] == 6
    dead.close()
    store.close()

    with dso_running(tmp_path) as (ctx, dso_url):
        make_grid(ctx)
        store = CpoStore(f"sqlite:///{tmp_path / 'cpo.db'}", clock=clock)  # the adapter restarted
        live = DsoLink(
            OscpClient(wsdl_dir=WSDL_DIR, username="user-a", password=PASSWORD),
            MessageLog(),
            url=dso_endpoint(dso_url, "soap11"),
            binding="soap11",
        )
        adapter = Adapter(store, dso=live, clock=clock)
        asyncio.run(adapter.report_usage())
        assert store.pending() == []  # the DSO refused c-unknown's (kept as sent with the fault), then took c1's
        (refused,) = {i.last_error for i in store.outbox("c-unknown")}
        assert refused is not None
        assert "UnknownCable" in refused
        with ctx.db.read() as session:
            reported = Repository(session).usage("c1", start, start + 3 * BLOCK)
        # 2760 Wh in a quarter hour = 11.04 kW = 16 A on each phase of a three-phase car
        assert {s: v["a"] for s, v in reported.items()} == {start + k * BLOCK: D(16) for k in range(3)}
        live.close()
        store.close()


def _budgets_in_a(cable_id: str = "c1") -> ReceivedBudgets:
    first = block_floor(datetime.now(UTC))
    return ReceivedBudgets(cable_id, "A", {first: D(30)}, D(10))


def connected_adapter(tmp_path: Path, dso_url: str, **options: Any) -> Adapter:
    """An adapter on the live DSO (no OCPP loop: sessions come straight through the events) with the
    forecasts pulled, as its start does."""
    store = CpoStore(f"sqlite:///{tmp_path / 'cpo.db'}")
    for n in range(1, 6):
        store.add_charge_point(point(f"cp{n}"))
    link = DsoLink(
        OscpClient(wsdl_dir=WSDL_DIR, username="user-a", password=PASSWORD),
        MessageLog(),
        url=dso_endpoint(dso_url, "soap11"),
        binding="soap11",
    )
    adapter = Adapter(store, dso=link, settings=AdapterSettings(**options))
    adapter.receive(link.capacity_forecasts())
    return adapter


def test_held_back_sessions_ask_the_dso_for_more(tmp_path: Path) -> None:
    with dso_running(tmp_path) as (ctx, dso_url):
        make_grid(ctx)
        adapter = connected_adapter(tmp_path, dso_url)
        now = datetime.now(UTC)
        first = block_floor(now)
        before = budget_of_a(ctx, first)
        for n in range(1, 6):  # five cars drawing 16 A each: 80 A wanted, above a's budget and the cable's 70 A
            tx = adapter.transaction_started(f"cp{n}", 1, "tag", 0, now)
            currents = [MeterSample(now, "Current.Import", D(16), "A", f"L{p}", None) for p in (1, 2, 3)]
            adapter.meter_values(f"cp{n}", 1, tx, currents)
        assert before < 80 - 2
        asyncio.run(adapter.adjust_all())  # once is not enough: hysteresis wants it confirmed
        assert budget_of_a(ctx, first) == before
        asyncio.run(adapter.adjust_all())
        after = budget_of_a(ctx, first)
        assert after > before  # granted from the cable's headroom (the rest waits as a pending request)
        assert _known(adapter, first) == after  # the answer's budgets are kept
        link = adapter.dso
        assert link is not None
        asked = [r for r in link.messages.recent() if r["operation"] == "RequestAdjustedCapacity"]
        assert len(asked) == 1
        adapter.dso.close()  # type: ignore[union-attr]
        adapter.store.close()


def test_unused_budget_is_handed_back_down_to_the_backup(tmp_path: Path) -> None:
    with dso_running(tmp_path) as (ctx, dso_url):
        make_grid(ctx)
        adapter = connected_adapter(tmp_path, dso_url, cooldown=timedelta(0))
        first = block_floor(datetime.now(UTC))
        assert budget_of_a(ctx, first) > 10 + 6  # a's guaranteed minimum is 10 A
        asyncio.run(adapter.adjust_all())  # no car anywhere: keep only the backup capacity
        for k in range(AdapterSettings().adjust_blocks):
            assert budget_of_a(ctx, first + k * BLOCK) == 10
        assert budget_of_a(ctx, first + 8 * BLOCK) > 10  # beyond the next hour nothing is handed back
        adapter.dso.close()  # type: ignore[union-attr]
        adapter.store.close()


def test_the_dso_is_offline_after_three_silent_heartbeat_intervals_and_the_budgets_stay(tmp_path: Path) -> None:
    clock = Later()
    store = CpoStore(f"sqlite:///{tmp_path / 'cpo.db'}", clock=clock)
    adapter = Adapter(store, dso=None, settings=AdapterSettings(heartbeat_interval_s=60), clock=clock)
    assert not adapter.dso_online()  # never heard of
    first = block_floor(datetime.now(UTC))
    adapter.receive([ReceivedBudgets("c1", "A", {first: D(30), first + BLOCK: D(30)}, D(10))])
    assert adapter.status_view()["dso"]["online"]
    clock.offset = timedelta(seconds=175)
    assert adapter.dso_online()
    clock.offset = timedelta(seconds=181)
    assert not adapter.status_view()["dso"]["online"]
    assert _known(adapter, block_floor(clock())) == 30  # what the DSO said still counts; the backup follows it
    assert adapter.budgets_view()[0]["backup_capacity"] == 10
    store.close()


def test_stop_transaction_always_ends_the_session(tmp_path: Path) -> None:
    store = CpoStore(f"sqlite:///{tmp_path / 'cpo.db'}")
    store.add_charge_point(point("cp1", connectors=2))
    adapter = Adapter(store, dso=None)
    now = datetime.now(UTC)
    tx = adapter.transaction_started("cp1", 2, "tag", 100, now)
    # a charger whose clock was corrected mid-session stops "before" it started
    adapter.transaction_stopped("cp1", tx, 200, now - timedelta(minutes=5), "Local")
    assert adapter.sessions_view() == []
    assert store.get_transaction(tx).stopped_at == now  # type: ignore[union-attr]
    adapter.transaction_stopped("cp1", tx + 99, 300, now, None)  # unknown: logged and ignored
    adapter.transaction_stopped("cp1", tx, 999, now + timedelta(minutes=1), None)  # another stop: the first stands
    assert store.get_transaction(tx).meter_stop_wh == 200  # type: ignore[union-attr]
    # a charge point cannot lose the connector a car is on
    again = adapter.transaction_started("cp1", 2, "tag", 300, now)
    with pytest.raises(Conflict, match="connector 2"):
        adapter.update_charge_point(point("cp1", connectors=1))
    adapter.transaction_stopped("cp1", again, 400, now, None)
    assert adapter.update_charge_point(point("cp1", connectors=1))["connectors"] == 1
    store.close()


def test_usage_of_each_block_uses_the_phases_of_the_car_that_drew_it(tmp_path: Path) -> None:
    clock = Later()
    store = CpoStore(f"sqlite:///{tmp_path / 'cpo.db'}", clock=clock)
    store.add_charge_point(point("cp1"))
    adapter = Adapter(store, dso=None, clock=clock)
    adapter.receive([_budgets_in_a()])
    start = block_floor(datetime.now(UTC)) - 2 * BLOCK
    clock.offset = timedelta(minutes=3)
    # a 3-phase car at 16 A for a block (2760 Wh), then a 1-phase car at 16 A for the next (920 Wh)
    for begin, wh, lines in ((start, 2_760, (1, 2, 3)), (start + BLOCK, 920, (1,))):
        tx = adapter.transaction_started("cp1", 1, "tag", 10_000, begin)
        at = begin + BLOCK - timedelta(seconds=1)
        samples = [MeterSample(at, "Energy.Active.Import.Register", D(10_000 + wh), "Wh", None, None)]
        samples += [MeterSample(at, "Current.Import", D(16), "A", f"L{n}", None) for n in lines]
        adapter.meter_values("cp1", 1, tx, samples)
        adapter.transaction_stopped("cp1", tx, 10_000 + wh, at, None)
    asyncio.run(adapter.report_usage())  # no DSO here: the blocks wait in the queue
    queued = {i.block_start: i.value for i in store.pending()}
    assert queued == {start: D(16), start + BLOCK: D(16)}
    store.close()


def test_usage_the_dso_refuses_for_now_stays_queued(tmp_path: Path) -> None:
    clock = Later()
    with dso_running(tmp_path) as (ctx, dso_url):
        make_grid(ctx)
        store = CpoStore(f"sqlite:///{tmp_path / 'cpo.db'}", clock=clock)
        store.add_charge_point(point("cp1"))
        wrong = DsoLink(
            OscpClient(wsdl_dir=WSDL_DIR, username="user-a", password="not the password"),  # noqa: S106
            MessageLog(),
            url=dso_endpoint(dso_url, "soap11"),
            binding="soap11",
        )
        adapter = Adapter(store, dso=wrong, clock=clock)
        adapter.receive([_budgets_in_a()])
        start = block_floor(datetime.now(UTC)) - BLOCK
        clock.offset = timedelta(minutes=3)
        tx = adapter.transaction_started("cp1", 1, "tag", 0, start)
        adapter.meter_values("cp1", 1, tx, [MeterSample(start + BLOCK, ENERGY, D(2_760), "Wh", None, None)])
        asyncio.run(adapter.report_usage())
        (queued,) = store.pending()  # NotAuthorized (a login being changed) passes: the row waits
        assert "NotAuthorized" in (queued.last_error or "")
        wrong.close()
        store.close()


def test_a_charge_point_that_does_not_answer_is_tried_again_with_back_off(tmp_path: Path) -> None:
    clock = Later()
    store = CpoStore(f"sqlite:///{tmp_path / 'cpo.db'}", clock=clock)
    store.add_charge_point(point("cp1"))
    adapter = Adapter(store, dso=None, clock=clock)  # its central system has no connections: Offline
    adapter.receive([_budgets_in_a()])
    adapter.connected("cp1")

    def tries() -> int:
        return len(store.recent_profiles(charge_point_id="cp1"))

    asyncio.run(adapter.enforce("c1"))
    assert (tries(), adapter.charge_point_view("cp1")["unconfirmed"]) == (1, "Offline")
    for wait_s, expected in ((29, 1), (2, 2), (59, 2), (2, 3), (119, 3), (2, 4)):  # 30 s, 1 min, 2 min
        clock.offset += timedelta(seconds=wait_s)
        asyncio.run(adapter.recompute_all())
        asyncio.run(adapter.enforce("c1"))
        assert tries() == expected, (clock.offset, tries())
    store.close()


def test_readings_from_a_charger_with_its_clock_far_off_are_not_counted(tmp_path: Path) -> None:
    clock = Later()
    store = CpoStore(f"sqlite:///{tmp_path / 'cpo.db'}", clock=clock)
    store.add_charge_point(point("cp1"))
    adapter = Adapter(store, dso=None, clock=clock)
    adapter.receive([_budgets_in_a()])
    long_ago = datetime(2016, 1, 1, tzinfo=UTC)  # a charger that lost its clock
    tx = adapter.transaction_started("cp1", 1, "tag", 0, long_ago)
    adapter.meter_values("cp1", 1, tx, [MeterSample(datetime.now(UTC), ENERGY, D(5_000), "Wh", None, None)])
    clock.offset = timedelta(minutes=20)
    asyncio.run(adapter.report_usage())
    assert store.pending() == []  # not spread over ten years of blocks
    assert [s["transaction_id"] for s in adapter.sessions_view()] == [tx]  # the session itself counts
    store.close()
