"""Pushes, the outbox, holds and heartbeats, against a real CPO endpoint on loopback."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import Clock
from oscp_support import DSO_PASSWORD, DSO_USER, CpoEndpoint, live_server, make_grid
from test_usecases import T0, D, F, Q, bq, budgets, pending

from service.domain.allocation import AdjustStatus
from service.domain.model import Binding
from service.oscp.v1 import messages as m
from service.oscp.v1.client import OscpClient
from service.oscp.v1.gateway import WSDL_DIR
from service.oscp.v1.link import OscpPeerLink
from service.oscp.v1.recorder import Recorder
from service.store import Database
from service.usecases import Context, capacity, grid, oscp

ALL_BLOCKS = 192


class Cpos:
    """Two CPOs' endpoint on loopback, and the DSO's link to it."""

    def __init__(self, ctx: Context, endpoint: CpoEndpoint, url: str) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.url = url
        self.recorder = Recorder(ctx)
        client = OscpClient(wsdl_dir=WSDL_DIR, username=DSO_USER, password=DSO_PASSWORD, timeout_s=5)
        self.link = OscpPeerLink(client, self.recorder)

    def deliver(self) -> oscp.DeliveryResult:
        return oscp.deliver_pushes(self.ctx, self.link)

    def last_push(self, cpo_user: str = "dso") -> m.UpdateCableCapacityForecastRequest:
        return self.endpoint.pushes()[-1]


@pytest.fixture(params=[Binding.SOAP11, Binding.SOAP12, Binding.JSON], ids=lambda b: b.value)
def binding(request: pytest.FixtureRequest) -> Binding:
    return Binding(request.param)


@pytest.fixture
def cpos(ctx: Context) -> Iterator[Cpos]:
    endpoint = CpoEndpoint()
    with live_server(endpoint.app()) as url:
        make_grid(ctx, endpoint=f"{url}/oscp/1.0", binding=Binding.SOAP11)
        link = Cpos(ctx, endpoint, url)
        yield link
        link.recorder.close()


def pushed_budgets(push: m.UpdateCableCapacityForecastRequest) -> dict[object, D]:
    (forecast,) = push.capacity_forecast
    return {b.start_time: b.capacity for b in forecast.forecasted_block}


def confirm_all(cpos: Cpos) -> None:
    """Both CPOs Accept their pushes: from now on they know their budgets."""
    result = cpos.deliver()
    assert result.failed == {}, result


# ---------------------------------------------------------------------------------------------
# pushes


def test_every_budget_change_is_pushed_over_the_cpos_binding(ctx: Context, binding: Binding) -> None:
    endpoint = CpoEndpoint()
    with live_server(endpoint.app()) as url:
        make_grid(ctx, endpoint=f"{url}/oscp/1.0", binding=binding)
        link = Cpos(ctx, endpoint, url)
        assert link.deliver().delivered == {"a": 2, "b": 1}  # a: subscribed, then shared with b
        assert [b for b, _, _ in endpoint.received] == [binding.value] * 2
        assert {user for _, _, user in endpoint.received} == {DSO_USER}
        for push in endpoint.pushes():
            (forecast,) = push.capacity_forecast
            assert forecast.cable_id == "c1"
            assert len(forecast.forecasted_block) == ALL_BLOCKS
            assert forecast.backup_capacity is not None
            assert forecast.forecasted_block[0].start_time == T0
            assert {(b.unit, b.phase) for b in forecast.forecasted_block} == {(m.UnitOfMeasure.A, m.PhaseIndicator.ALL)}
        by_backup = {p.capacity_forecast[0].backup_capacity.capacity for p in endpoint.pushes()}  # type: ignore[union-attr]
        assert by_backup == {D(10), D(5)}  # each CPO's minimum

        grid.update_cable(ctx, "c1", {"rated_limit": D(90)}, actor="engineer")  # a reallocation
        assert link.deliver().delivered == {"a": 1, "b": 1}
        view = budgets(ctx)
        for push in endpoint.pushes()[-2:]:
            (forecast,) = push.capacity_forecast
            cpo = "a" if forecast.backup_capacity and forecast.backup_capacity.capacity == D(10) else "b"
            assert {b.start_time: b.capacity for b in forecast.forecasted_block} == {s: v[cpo] for s, v in view.items()}
        assert link.deliver().delivered == {}  # nothing more is owed
        link.recorder.close()
    sent = [(r["direction"], r["cpo_id"], r["binding"], r["operation"], r["outcome"]) for r in oscp.messages(ctx)]
    assert sorted(sent) == [("out", cpo, binding.value, "UpdateCableCapacityForecast", "ok") for cpo in "aabb"]


def test_pushes_of_several_decisions_go_out_once_with_the_newest_budgets(cpos: Cpos) -> None:
    ctx = cpos.ctx
    confirm_all(cpos)
    before = len(cpos.endpoint.pushes())
    for limit in (95, 90, 85):
        grid.update_cable(ctx, "c1", {"rated_limit": D(limit)}, actor="engineer")
    owed = oscp.outbox(ctx)
    assert {(r["cpo_id"], r["depth"]) for r in owed} == {("a", 3), ("b", 2)}  # 95 only cut a
    assert cpos.deliver().delivered == {"a": 3, "b": 2}
    pushes = cpos.endpoint.pushes()[before:]
    assert len(pushes) == 2  # one per CPO, carrying what the three decisions left
    view = budgets(ctx)
    assert {s: v["a"] for s, v in view.items()} in [pushed_budgets(p) for p in pushes]


def test_a_changed_minimum_is_pushed_even_where_no_budget_changes(cpos: Cpos) -> None:
    ctx = cpos.ctx
    confirm_all(cpos)
    grid.update_subscription(ctx, "c1", "a", {"guaranteed_minimum": D(12)}, actor="engineer")
    assert {r["cpo_id"]: r["depth"] for r in oscp.outbox(ctx)}["a"] == 1  # its budgets changed too: one push
    grid.unsubscribe(ctx, "c1", "a", actor="engineer")
    grid.update_cable(ctx, "c1", {"reserve_share": D(0)}, actor="engineer")
    grid.update_subscription(ctx, "c1", "b", {"guaranteed_minimum": D(6)}, actor="engineer")  # b gets all
    confirm_all(cpos)
    before = budgets(ctx)
    grid.update_subscription(ctx, "c1", "b", {"guaranteed_minimum": D(7)}, actor="engineer")
    assert budgets(ctx) == before  # only b's backup capacity changed
    assert cpos.deliver().delivered == {"b": 1}
    (forecast,) = cpos.last_push().capacity_forecast
    assert forecast.backup_capacity is not None
    assert forecast.backup_capacity.capacity == D(7)
    grid.update_subscription(ctx, "c1", "b", {"weight": D(3)}, actor="engineer")
    assert budgets(ctx) == before
    assert cpos.deliver().delivered == {}  # neither its budgets nor its backup capacity changed


def test_a_new_block_entering_the_horizon_is_pushed(cpos: Cpos, clock: Clock) -> None:
    confirm_all(cpos)
    clock.advance(Q)
    assert capacity.roll_horizon(cpos.ctx).handed_out == {"c1": 1}
    assert cpos.deliver().delivered == {"a": 1, "b": 1}
    blocks = pushed_budgets(cpos.last_push())
    assert min(blocks) == T0 + Q
    assert len(blocks) == ALL_BLOCKS


# ---------------------------------------------------------------------------------------------
# the outbox


def test_the_outbox_survives_a_restart_and_retries_with_backoff(ctx: Context, clock: Clock, db_url: str) -> None:
    endpoint = CpoEndpoint(answer="fail")
    with live_server(endpoint.app()) as url:
        make_grid(ctx, endpoint=f"{url}/oscp/1.0")
        link = Cpos(ctx, endpoint, url)
        result = link.deliver()
        assert set(result.failed) == {"a", "b"}
        assert "500" in result.failed["a"]
        row_a, _ = oscp.outbox(ctx)
        assert (row_a["cpo_id"], row_a["depth"], row_a["attempts"]) == ("a", 2, 1)
        assert "500" in row_a["last_error"]
        assert row_a["next_attempt_at"] > clock.now  # backing off: not retried before it is due
        assert link.deliver().failed == {}
        assert link.deliver().delivered == {}

        # The DSO restarts: a new process, a new engine, the same database.
        ctx.db.dispose()
        restarted = Context(Database(db_url), clock=clock)
        endpoint.answer = "Accepted"
        clock.advance(timedelta(seconds=6))
        relinked = Cpos(restarted, endpoint, url)
        assert relinked.deliver().delivered == {"a": 2, "b": 1}
        assert oscp.outbox(restarted) == []
        relinked.recorder.close()
        restarted.db.dispose()
        link.recorder.close()


def test_a_push_owed_while_backing_off_waits_for_the_retry(ctx: Context, clock: Clock) -> None:
    endpoint = CpoEndpoint(answer="fail")
    with live_server(endpoint.app()) as url:
        make_grid(ctx, endpoint=f"{url}/oscp/1.0")
        link = Cpos(ctx, endpoint, url)
        assert set(link.deliver().failed) == {"a", "b"}
        retry_at = {r["cpo_id"]: r["next_attempt_at"] for r in oscp.outbox(ctx)}
        grid.update_cable(ctx, "c1", {"rated_limit": D(80)}, actor="engineer")  # owes both a new push
        owed = {r["cpo_id"]: r for r in oscp.outbox(ctx)}
        assert {cpo: (r["depth"], r["attempts"]) for cpo, r in owed.items()} == {"a": (3, 1), "b": (2, 1)}
        assert {cpo: r["next_attempt_at"] for cpo, r in owed.items()} == retry_at
        calls = len(endpoint.pushes())
        assert link.deliver() == oscp.DeliveryResult()  # neither is tried before its retry time
        assert len(endpoint.pushes()) == calls
        endpoint.answer = "Accepted"
        clock.advance(timedelta(minutes=1))
        assert link.deliver().delivered == {"a": 3, "b": 2}
        link.recorder.close()


def test_backoff_doubles_up_to_five_minutes() -> None:
    waits = [oscp.backoff(n).total_seconds() for n in range(12)]
    assert 4 <= waits[0] <= 5
    assert 8 <= waits[1] <= 10
    assert max(waits) <= 300
    assert waits[-1] >= 240


def test_a_rejected_push_is_retried_and_what_it_offered_stays_held(cpos: Cpos) -> None:
    cpos.endpoint.answer = "Rejected"
    result = cpos.deliver()
    assert "test says no" in result.failed["a"]
    assert oscp.outbox(cpos.ctx)[0]["depth"] == 2
    # a may have read the budgets before rejecting them: they count as what it may use
    assert told(cpos.ctx, "a") == {s: v["a"] for s, v in budgets(cpos.ctx).items()}


def told(ctx: Context, cpo_id: str) -> dict[object, D]:
    from service.store.tables import BudgetRow

    with ctx.db.read() as session:
        rows = session.query(BudgetRow).filter(BudgetRow.cpo_id == cpo_id, BudgetRow.told.is_not(None)).all()
        return {r.start: r.told for r in rows}


# ---------------------------------------------------------------------------------------------
# reclaim safely: capacity taken from b reaches a only after b Accepted, or after the notice


def reclaim_from_b(cpos: Cpos, block: datetime = F) -> None:
    """b confirmed its budgets and reported low usage; a asks for more than is unallocated."""
    ctx = cpos.ctx
    confirm_all(cpos)
    capacity.report_usage(ctx, "c1", "b", [bq(T0, 2)], actor="b")
    assert budgets(ctx)[block] == {"a": D(26), "b": D(37)}  # 63 of 70 handed out, 7 kept back
    result = capacity.request(ctx, "c1", "a", [bq(block, 50)], actor="a")
    # 7 unallocated go to a at once; the other 17 are taken from b (which keeps at least its
    # minimum 5 > peak 2 * 1.2) but held for b until it confirms
    assert result.status is AdjustStatus.PARTIALLY_ACCEPTED
    assert budgets(ctx)[block] == {"a": D(33), "b": D(20)}
    assert pending(ctx) == {("a", block): D(50)}


def test_reclaimed_capacity_waits_for_the_cpo_it_was_taken_from_to_accept(cpos: Cpos) -> None:
    reclaim_from_b(cpos)
    ctx = cpos.ctx
    assert oscp.release_expired_holds(ctx) == {}  # the notice period has not passed
    assert budgets(ctx)[F] == {"a": D(33), "b": D(20)}

    result = cpos.deliver()  # b Accepts its lower budget (a gets its own push too)
    assert result.failed == {}
    assert budgets(ctx)[F] == {"a": D(50), "b": D(20)}
    assert pending(ctx) == {}
    assert cpos.deliver().delivered == {"a": 1}  # a is told it got the rest
    assert pushed_budgets(cpos.last_push())[F] == D(50)


def test_an_unanswered_reclaim_is_granted_after_the_notice_period(cpos: Cpos, clock: Clock) -> None:
    reclaim_from_b(cpos)
    ctx = cpos.ctx
    cpos.endpoint.answer = "fail"
    assert set(cpos.deliver().failed) == {"a", "b"}
    for _ in range(7):
        clock.advance(timedelta(minutes=2))
        oscp.seen(ctx, "b")  # b is online (it heartbeats), it just does not accept the push
    assert oscp.release_expired_holds(ctx) == {}
    assert budgets(ctx)[F]["a"] == D(33)
    clock.advance(timedelta(minutes=1))
    assert oscp.release_expired_holds(ctx) == {}
    assert budgets(ctx)[F] == {"a": D(50), "b": D(20)}


def test_an_offline_cpo_keeps_what_it_was_told(cpos: Cpos, clock: Clock) -> None:
    ctx = cpos.ctx
    confirm_all(cpos)  # both were heard from now
    capacity.report_usage(ctx, "c1", "b", [bq(T0, 2)], actor="b")
    clock.advance(timedelta(minutes=3, seconds=1))  # three heartbeat intervals of silence
    assert [(p.cpo_id, p.online) for p in oscp.presence(ctx)] == [("a", False), ("b", False)]
    oscp.seen(ctx, "a")
    far = F + 4 * Q
    result = capacity.request(ctx, "c1", "a", [bq(far, 50)], actor="a")
    assert result.status is AdjustStatus.PARTIALLY_ACCEPTED
    assert budgets(ctx)[far] == {"a": D(33), "b": D(37)}  # nothing reclaimed from offline b

    grid.update_cable(ctx, "c1", {"rated_limit": D(90)}, actor="engineer")  # b's budget must shrink
    grid.update_cable(ctx, "c1", {"rated_limit": D(100)}, actor="engineer")  # and the room comes back
    view = budgets(ctx)[far]
    assert view["b"] < D(37)
    assert view["a"] + D(37) <= D(70)  # b's told 37 stays reserved while it is offline


def test_heartbeats_both_ways_keep_a_cpo_online(cpos: Cpos, clock: Clock) -> None:
    ctx = cpos.ctx
    assert [p.last_seen_at for p in oscp.presence(ctx)] == [None, None]
    assert oscp.send_heartbeats(ctx, cpos.link) == {}
    assert [(p.cpo_id, p.online) for p in oscp.presence(ctx)] == [("a", True), ("b", True)]
    clock.advance(timedelta(minutes=3, seconds=1))
    assert not any(p.online for p in oscp.presence(ctx))
    cpos.endpoint.answer = "fail"
    failed = oscp.send_heartbeats(ctx, cpos.link)
    assert set(failed) == {"a", "b"}
    assert not any(p.online for p in oscp.presence(ctx))
    cpos.recorder.flush()
    outcomes = {(r["operation"], r["outcome"]) for r in oscp.messages(ctx)}
    assert outcomes == {("Heartbeat", "ok"), ("Heartbeat", "Unreachable")}


def test_a_cpo_back_from_offline_gets_a_full_notice_period(cpos: Cpos, clock: Clock) -> None:
    later = F + 12 * Q
    reclaim_from_b(cpos, later)  # 17 taken from b is held until b confirms
    ctx = cpos.ctx
    cpos.endpoint.answer = "fail"
    assert set(cpos.deliver().failed) == {"a", "b"}
    clock.advance(timedelta(hours=1))  # b was offline all along: its hold never expired
    oscp.seen(ctx, "a")
    assert oscp.release_expired_holds(ctx) == {}
    assert budgets(ctx)[later]["a"] == D(33)
    oscp.seen(ctx, "b")  # b is back; it could not have answered while away
    assert {r["cpo_id"]: r["next_attempt_at"] for r in oscp.outbox(ctx)}["b"] == clock.now  # pushed at once
    for _ in range(7):  # online from now on, still not answering pushes
        clock.advance(timedelta(minutes=2))
        oscp.seen(ctx, "b")
    assert oscp.release_expired_holds(ctx) == {}
    assert budgets(ctx)[later]["a"] == D(33)  # still held: the notice runs from b's return
    clock.advance(timedelta(minutes=1))
    assert oscp.release_expired_holds(ctx) == {}
    assert budgets(ctx)[later]["a"] == D(50)


def test_a_push_in_flight_holds_what_it_offers(cpos: Cpos) -> None:
    ctx = cpos.ctx
    capacity.report_usage(ctx, "c1", "b", [bq(T0, 2)], actor="b")
    forecast = oscp.offer(ctx, "b", "c1")  # the push to b leaves; b may use its 37 from now on
    assert forecast is not None
    assert forecast.budgets[F] == D(37)
    assert told(ctx, "b")[F] == D(37)
    # Before b answers, a asks for more: 17 is taken from b but held, as b may be using it.
    capacity.request(ctx, "c1", "a", [bq(F, 50)], actor="a")
    assert budgets(ctx)[F] == {"a": D(33), "b": D(20)}
    oscp.confirm(ctx, "b", forecast)  # b accepts the 37 it was sent: still more than its budget
    assert budgets(ctx)[F]["a"] == D(33)
    assert cpos.deliver().failed == {}  # the push of 20 is accepted: now a gets it
    assert budgets(ctx)[F] == {"a": D(50), "b": D(20)}


def test_a_cpo_removed_from_a_cable_keeps_what_it_was_told_until_it_confirms(cpos: Cpos) -> None:
    ctx = cpos.ctx
    confirm_all(cpos)
    capacity.request(ctx, "c1", "a", [bq(F, 60)], actor="a")  # waits for b's capacity
    assert budgets(ctx)[F]["a"] == D(33)
    grid.unsubscribe(ctx, "c1", "b", actor="engineer")
    assert budgets(ctx)[F]["a"] == D(33)  # b's 37 is held until b learns its budget is 0
    assert cpos.deliver().failed == {}
    pushed_to_b = [p for p in cpos.endpoint.pushes() if pushed_budgets(p)[F] == 0]
    assert pushed_to_b, "b was told its budget is 0"
    assert budgets(ctx)[F]["a"] == D(63)  # its request served, then topped up to the reserve line


def test_a_client_that_keeps_failing_to_log_in_is_refused_without_a_check(ctx: Context) -> None:
    from oscp_support import PASSWORD
    from test_api_support import make_app

    from service.oscp.v1.gateway import FAILED_LOGINS_PER_MINUTE

    make_grid(ctx)
    client = make_app(ctx).test_client()

    def heartbeat(password: str) -> int:
        return client.post("/oscp/1.0/json/Heartbeat", json={}, auth=("user-a", password)).status_code

    assert [heartbeat("wrong password!") for _ in range(FAILED_LOGINS_PER_MINUTE)] == [401] * FAILED_LOGINS_PER_MINUTE
    assert heartbeat(PASSWORD) == 429  # even the right password: guessing stops here


def test_a_changed_password_stops_working_at_once(ctx: Context) -> None:
    from oscp_support import PASSWORD
    from test_api_support import TOKEN, make_app

    make_grid(ctx)
    client = make_app(ctx).test_client()

    def heartbeat(password: str) -> int:
        return client.post("/oscp/1.0/json/Heartbeat", json={}, auth=("user-a", password)).status_code

    assert heartbeat(PASSWORD) == 200  # verified, and remembered
    changed = client.patch(
        "/api/v1/cpos/a", json={"password": "a brand new password"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert changed.status_code == 200
    assert heartbeat(PASSWORD) == 401
    assert heartbeat("a brand new password") == 200


def test_the_wsdl_advertises_the_configured_public_url(ctx: Context) -> None:
    from test_api_support import make_app

    client = make_app(ctx, public_url="https://dso.example/grid").test_client()
    wsdl = client.get("/oscp/1.0/soap?wsdl", headers={"Host": "attacker.example"}).get_data(as_text=True)
    assert 'location="https://dso.example/grid/oscp/1.0/soap"' in wsdl
    assert "attacker.example" not in wsdl


def test_the_scheduler_delivers_pushes_on_its_own(cpos: Cpos, tmp_path: Path) -> None:
    import time

    from service.jobs.scheduler import build_scheduler
    from service.settings import Settings
    from service.timeseries import build_timeseries

    store = build_timeseries(Settings(timeseries_backend="embedded", timeseries_path=str(tmp_path / "ts.db")))
    scheduler = build_scheduler(cpos.ctx, cpos.link, store)
    assert {job.name for job in scheduler.get_jobs()} == {
        "renew the scheduler lease",
        "deliver owed pushes",
        "heartbeat every CPO",
        "release holds past the notice period",
        "hand out blocks entering the horizon",
        "refresh base-load forecasts",
        "backtest the forecasts",
        "write monitoring to InfluxDB",
    }
    scheduler.start()
    try:
        deadline = time.monotonic() + 15
        while oscp.outbox(cpos.ctx) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        scheduler.shutdown(wait=True)
    assert oscp.outbox(cpos.ctx) == []
    assert {user for _, _, user in cpos.endpoint.received} == {DSO_USER}
    assert len(cpos.endpoint.pushes()) == 2


def test_a_request_in_watts_on_a_kw_cable_reports_its_shortfall_in_kw(ctx: Context) -> None:
    import dataclasses

    from test_usecases import add_cpo, make_cable

    from service.domain.model import Subscription
    from service.domain.units import Unit
    from service.usecases.capacity import BlockQuantity

    grid.create_cable(ctx, dataclasses.replace(make_cable(), unit=Unit.KILOWATT), actor="engineer")
    add_cpo(ctx, "a")
    grid.subscribe(ctx, Subscription("c1", "a", D(1), D(0)), actor="engineer")
    outcome = oscp.request(ctx, "a", "c1", [BlockQuantity(F, F + Q, D(80_000), "W")])
    assert outcome.result.budgets == {F: D(70)}  # all 70 kW available, the reserve included
    assert outcome.reason is not None
    assert "short by 10.000 KW" in outcome.reason
