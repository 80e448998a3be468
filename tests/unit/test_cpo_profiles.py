"""Budget -> per-connector limits -> OCPP 1.6 charging profiles (service.cpo.profiles).

Examples with numbers worked out by hand, then hypothesis properties whose checks are computed here
from the rules (not by calling the code under test): budget, ratings, 0-or-6 A, no idle capacity,
hysteresis, schedules and ordering.
"""

from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service.cpo.profiles import (
    Budget,
    ChargePoint,
    Key,
    Period,
    ProfileKind,
    ProfilePlan,
    Session,
    backup_limits,
    floor_limit,
    highest_from,
    lowers,
    next_kind,
    plan_profiles,
    pointwise_min,
    same_from,
    split_block,
    split_horizon,
    truncated,
)
from service.cpo.profiles import limit_at as profile_limit_at
from service.domain.errors import InvalidInput
from service.domain.units import Unit, floor_grid

D = Decimal
A, KW = Unit.AMPERE, Unit.KILOWATT
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
STEP = D("0.1")


def cp(cp_id: str, max_a: object = 32, phases: int = 3, **changes: Any) -> ChargePoint:
    return ChargePoint(cp_id, "cable-1", D(str(max_a)), phases, **changes)


def limits_of(result: dict[Key, Decimal]) -> dict[str, Decimal]:
    """{'cp0/1': limit} for short assertions."""
    return {f"{k[0]}/{k[1]}": v for k, v in result.items()}


# ---------------------------------------------------------------------------------------------
# examples


class TestSplitExamples:
    def test_two_cars_share_a_20_a_connection_one_alone_takes_it_all(self) -> None:
        points = [cp("a"), cp("b")]
        both = split_block(D(20), A, points, [Session("a", 1, 3), Session("b", 1, 3)])
        assert limits_of(both) == {"a/1": 10, "b/1": 10}
        assert limits_of(split_block(D(20), A, points, [Session("a", 1, 3)])) == {"a/1": 20}

    def test_a_car_drawing_little_leaves_the_rest_to_others(self) -> None:
        # a draws 4 A: cap max(6, 4 + 2) = 6 A; b and c share 32 - 6 = 26 A
        points = [cp("a", 16), cp("b", 16), cp("c", 16)]
        sessions = [Session("a", 1, 3, drawn_a=D(4)), Session("b", 1, 3), Session("c", 1, 3)]
        assert limits_of(split_block(D(32), A, points, sessions)) == {"a/1": 6, "b/1": 13, "c/1": 13}

    def test_never_above_the_rating(self) -> None:
        # c is protected at 10 A; a and b stop at their 16 A rating, the rest of the budget stays unused
        points = [cp("a", 16), cp("b", 16), cp("c", 32, protection_a=D(10))]
        sessions = [Session(p.id, 1, 3) for p in points]
        assert limits_of(split_block(D(100), A, points, sessions)) == {"a/1": 16, "b/1": 16, "c/1": 10}

    def test_pauses_the_session_that_charged_most_rather_than_giving_less_than_6_a(self) -> None:
        points = [cp("a"), cp("b"), cp("c")]
        sessions = [
            Session("a", 1, 3, energy_kwh=D(1)),
            Session("b", 1, 3, energy_kwh=D(5)),
            Session("c", 1, 3, energy_kwh=D(3)),
        ]
        # 15 A: room for two at 6 A; b has charged most and pauses; a and c share 7.5 A each
        assert limits_of(split_block(D(15), A, points, sessions)) == {"a/1": D("7.5"), "b/1": 0, "c/1": D("7.5")}

    def test_kw_budget_counts_the_phases_each_car_uses(self) -> None:
        # 3-phase car: 0.69 kW/A, 1-phase car: 0.23 kW/A; level 11.04 / 0.92 = 12 A each
        points = [cp("a"), cp("b")]
        result = split_block(D("11.04"), KW, points, [Session("a", 1, 3), Session("b", 1, 1)])
        assert limits_of(result) == {"a/1": 12, "b/1": 12}

    def test_connectors_share_their_charge_point_rating(self) -> None:
        # 3x32 A charge point behind 3x20 A protection, two cars: 10 A each; one drawing 4 A: 6 and 14
        points = [cp("a", 32, connectors=2, protection_a=D(20))]
        both = split_block(D(100), A, points, [Session("a", 1, 3), Session("a", 2, 3)])
        assert limits_of(both) == {"a/1": 10, "a/2": 10}
        lazy = split_block(D(100), A, points, [Session("a", 1, 3, drawn_a=D(4)), Session("a", 2, 3)])
        assert limits_of(lazy) == {"a/1": 6, "a/2": 14}

    def test_a_charge_point_that_ignores_profiles_has_its_rating_reserved(self) -> None:
        points = [cp("a"), cp("b"), cp("u", 16, unresponsive=True)]
        sessions = [Session("a", 1, 3), Session("b", 1, 3), Session("u", 1, 3)]
        assert limits_of(split_block(D(40), A, points, sessions)) == {"a/1": 12, "b/1": 12}
        # 3-phase 16 A at 230 V reserves 11.04 kW: 22.08 - 11.04 leaves 8 A for each of two 3-phase cars
        assert limits_of(split_block(D("22.08"), KW, points, sessions)) == {"a/1": 8, "b/1": 8}
        assert limits_of(split_block(D(10), A, points, sessions)) == {"a/1": 0, "b/1": 0}

    def test_hysteresis_holds_small_changes_when_they_fit(self) -> None:
        points = [cp("a"), cp("b")]
        # targets 10.5 / 10.5: b's rise of 0.5 A is held at 10, which leaves room to hold a at 11
        sessions = [Session("a", 1, 3, previous_limit_a=D(11)), Session("b", 1, 3, previous_limit_a=D(10))]
        assert limits_of(split_block(D(21), A, points, sessions)) == {"a/1": 11, "b/1": 10}
        # a change of a whole band goes through
        assert limits_of(split_block(D(20), A, points, sessions)) == {"a/1": 10, "b/1": 10}

    def test_hysteresis_never_holds_back_a_needed_reduction(self) -> None:
        points = [cp("a"), cp("b")]
        sessions = [Session("a", 1, 3, previous_limit_a=D("10.6")), Session("b", 1, 3, previous_limit_a=D(10))]
        assert limits_of(split_block(D(20), A, points, sessions)) == {"a/1": 10, "b/1": 10}

    def test_a_paused_car_resumes_only_with_room_for_6_a_plus_the_band(self) -> None:
        points = [cp("a"), cp("b")]
        paused = [Session("a", 1, 3, previous_limit_a=D(10)), Session("b", 1, 3, previous_limit_a=D(0))]
        assert limits_of(split_block(D("12.5"), A, points, paused)) == {"a/1": D("12.5"), "b/1": 0}
        assert limits_of(split_block(D(13), A, points, paused)) == {"a/1": D("6.5"), "b/1": D("6.5")}
        # a new car is not a paused one: 6 A is enough; a comes first on ties and takes the odd 0.1 A
        new = [Session("a", 1, 3, previous_limit_a=D(10)), Session("b", 1, 3)]
        assert limits_of(split_block(D("12.5"), A, points, new)) == {"a/1": D("6.3"), "b/1": D("6.2")}

    def test_a_horizon_applies_hysteresis_from_block_to_block(self) -> None:
        points = [cp("a"), cp("b")]
        budgets = [Budget(T0, D(20), A), Budget(T0 + Q, D(21), A), Budget(T0 + 2 * Q, D(15), A)]
        horizon = split_horizon(budgets, points, [Session("a", 1, 3), Session("b", 1, 3)])
        # 10.5 A each in the second block is a rise of less than the band: held at 10
        assert [limits_of(horizon[b.start]) for b in budgets] == [
            {"a/1": 10, "b/1": 10},
            {"a/1": 10, "b/1": 10},
            {"a/1": D("7.5"), "b/1": D("7.5")},
        ]

    def test_a_horizon_is_in_one_unit(self) -> None:
        with pytest.raises(InvalidInput, match="all in A or all in KW"):
            split_horizon([Budget(T0, D(20), A), Budget(T0 + Q, D(20), KW)], [cp("a")], [])

    @pytest.mark.parametrize(
        ("points", "sessions"),
        [
            ([cp("a")], [Session("x", 1, 3)]),  # unknown charge point
            ([cp("a")], [Session("a", 2, 3)]),  # no such connector
            ([cp("a", phases=1)], [Session("a", 1, 3)]),  # 3 phases on a 1-phase charge point
            ([cp("a")], [Session("a", 1, 3), Session("a", 1, 1)]),  # two cars on one connector
            ([cp("a"), cp("a")], []),  # listed twice
            ([cp("a"), ChargePoint("b", "cable-2", D(16), 3)], []),  # two cables
        ],
    )
    def test_inconsistent_input_is_refused(self, points: list[ChargePoint], sessions: list[Session]) -> None:
        with pytest.raises(InvalidInput):
            split_block(D(20), A, points, sessions)

    @pytest.mark.parametrize(
        "changes",
        [{"phases": 4}, {"max_current_a": D(-1)}, {"voltage_v": D(0)}, {"connectors": 0}, {"id": "bad id"}],
    )
    def test_invalid_charge_point_is_refused(self, changes: dict[str, Any]) -> None:
        fields: dict[str, Any] = {"id": "a", "cable_id": "cable-1", "max_current_a": D(16), "phases": 3}
        with pytest.raises(InvalidInput):
            ChargePoint(**(fields | changes))


class TestProfileExamples:
    def test_fallback_order(self) -> None:
        assert next_kind(ProfileKind.CHARGE_POINT_MAX) is ProfileKind.TX_DEFAULT
        assert next_kind(ProfileKind.TX_DEFAULT) is ProfileKind.TX
        assert next_kind(ProfileKind.TX) is None

    def test_limits_are_floored_to_0_1(self) -> None:
        assert floor_limit(D("41.400000000000006")) == D("41.4")
        assert floor_limit(D("7.99")) == D("7.9")
        assert floor_limit(D(0)) == 0

    def test_absolute_schedule_slightly_in_the_past_merged_and_ending_on_the_backup(self) -> None:
        limits = {T0: {("a", 1): D(10)}, T0 + Q: {("a", 1): D(10)}, T0 + 2 * Q: {("a", 1): D(16)}}
        now = T0 + timedelta(minutes=7, seconds=30)
        [plan] = plan_profiles([cp("a")], [Session("a", 1, 3)], limits, {"a": D(8)}, now)
        assert plan.kind is ProfileKind.CHARGE_POINT_MAX
        assert plan.connector_id == 0
        assert plan.start_schedule == T0 + timedelta(minutes=6)  # 12:07:30 to the minute, minus 60 s
        # 12:15 is 540 s after 12:06, 12:30 is 1440 s, the horizon ends at 12:45 = 2340 s
        # rises a minute later, falls a minute earlier (clock skew): 1440 + 60 and 2340 - 60
        assert plan.periods == (Period(0, D(10), 3), Period(1500, D(16), 3), Period(2280, D(8), 3))
        schedule = plan.charging_schedule()
        assert schedule["chargingRateUnit"] == "A"
        assert schedule["startSchedule"] == "2026-11-24T12:06:00Z"
        assert "duration" not in schedule  # the backup never expires

    def test_charge_point_max_sums_connectors_tx_default_splits_the_backup(self) -> None:
        point = cp("a", 32, connectors=2, protection_a=D(20))
        limits = {T0: {("a", 1): D(6), ("a", 2): D(14)}}
        sessions = [Session("a", 1, 1), Session("a", 2, 3)]
        [whole] = plan_profiles([point], sessions, limits, {"a": D(13)}, T0)
        assert whole.periods == (Period(0, D(20), 3), Period(900, D(13), 3))  # the fall a minute early
        per_connector = plan_profiles([point], sessions, limits, {"a": D(13)}, T0, kinds={"a": ProfileKind.TX_DEFAULT})
        # the 13 A backup is 6.5 A per connector; the 1-phase car's profile says 1 phase
        assert [(p.connector_id, p.periods) for p in per_connector] == [
            (1, (Period(0, D(6), 1), Period(1020, D("6.5"), 1))),  # a rise: a minute late
            (2, (Period(0, D(14), 3), Period(900, D("6.5"), 3))),  # a fall: a minute early
        ]

    def test_tx_profiles_only_where_a_car_is_and_none_for_unresponsive_points(self) -> None:
        points = [cp("a", connectors=2), cp("u", unresponsive=True)]
        plans = plan_profiles(points, [Session("a", 2, 3)], {T0: {("a", 2): D(8)}}, {}, T0, kinds={"a": ProfileKind.TX})
        assert [(p.key, p.periods) for p in plans] == [(("a", 2), (Period(0, D(8), 3), Period(900, D(0), 3)))]

    def test_backup_obeys_the_rating_and_the_6_a_rule(self) -> None:
        [low] = plan_profiles([cp("a", 16)], [], {}, {"a": D("5.9")}, T0)
        [high] = plan_profiles([cp("a", 16)], [], {}, {"a": D(40)}, T0)
        assert low.periods == (Period(0, D(0), 3),)
        assert high.periods == (Period(0, D(16), 3),)

    def test_gaps_between_blocks_are_refused(self) -> None:
        with pytest.raises(InvalidInput, match="follow each other"):
            plan_profiles([cp("a")], [], {T0: {}, T0 + 2 * Q: {}}, {}, T0)


# ---------------------------------------------------------------------------------------------
# properties

VOLTAGES = [D(230), D(220), D(240), D("230.5")]
RATINGS = [D(n) for n in (6, 10, 13, 16, 20, 25, 32)]


def amps(high: int) -> st.SearchStrategy[Decimal]:
    """Currents on the 0.01 A grid, round values favoured."""
    return st.one_of(st.sampled_from(RATINGS), st.integers(0, high * 100).map(lambda n: D(n).scaleb(-2)))


def ratings() -> st.SearchStrategy[Decimal]:
    """Mostly real ratings; now and then one too low to charge at all."""
    return st.one_of(st.sampled_from([*RATINGS, *RATINGS, D(5)]), st.integers(600, 4000).map(lambda n: D(n).scaleb(-2)))


@st.composite
def cables(draw: st.DrawFn) -> tuple[list[ChargePoint], list[Session]]:
    points, sessions = [], []
    for i in range(draw(st.integers(1, 7), label="n_points")):
        point = ChargePoint(
            f"cp{i}",
            "cable-1",
            draw(ratings()),
            draw(st.sampled_from([1, 3])),
            voltage_v=draw(st.sampled_from(VOLTAGES)),
            connectors=draw(st.integers(1, 3)),
            protection_a=draw(st.one_of(st.none(), st.none(), ratings())),
            connector_max_current_a=draw(st.one_of(st.none(), st.none(), ratings())),
            unresponsive=draw(st.sampled_from([False] * 9 + [True])),
        )
        points.append(point)
        for connector in range(1, point.connectors + 1):
            if draw(st.booleans()):
                sessions.append(
                    Session(
                        point.id,
                        connector,
                        draw(st.integers(1, point.phases)),
                        drawn_a=draw(st.one_of(st.none(), amps(40))),
                        previous_limit_a=draw(st.one_of(st.none(), st.just(D(0)), amps(40))),
                        energy_kwh=draw(st.integers(0, 5).map(D)),
                    )
                )
    return points, sessions


@st.composite
def cases(draw: st.DrawFn) -> tuple[Unit, Decimal, list[ChargePoint], list[Session]]:
    """A cable and a budget: any size, or mostly a share of what its cars could draw (sharing, pausing and
    rounding matter there)."""
    unit = draw(st.sampled_from([A, KW]))
    points, sessions = draw(cables())
    by_id = {p.id: p for p in points}
    demand = reserved(points, unit) + sum(
        (floor01(by_id[s.charge_point_id].connector_rating_a) * load_per_a(by_id[s.charge_point_id], s, unit))
        for s in sessions
    )
    share = draw(st.integers(0, 1200), label="budget_per_mille")
    budget = st.just(floor_grid(demand * share / 1000))
    anything = st.integers(0, 100_000).map(lambda n: D(n).scaleb(-3))
    return unit, draw(st.one_of(budget, budget, anything), label="budget"), points, sessions


def floor01(value: Decimal) -> Decimal:
    return value.quantize(STEP, rounding=ROUND_FLOOR)


def load_per_a(point: ChargePoint, session: Session, unit: Unit) -> Decimal:
    """What 1 A of this session costs on the cable: every car on L1 for A budgets; P = I x V x phases for
    KW budgets, where a charge point that shares its rating among connectors counts at its own phases."""
    if unit is A:
        return D(1)
    phases = session.phases_in_use if point.connectors == 1 else point.phases
    return point.voltage_v * phases / 1000


def reserved(points: list[ChargePoint], unit: Unit) -> Decimal:
    per_a = {A: lambda p: D(1), KW: lambda p: p.voltage_v * p.phases / 1000}[unit]
    return sum((floor01(p.rating_a) * per_a(p) for p in points if p.unresponsive), D(0))


def cap_a(point: ChargePoint, session: Session, headroom_a: Decimal) -> Decimal:
    hard = floor01(point.connector_rating_a)
    if session.drawn_a is None:
        return hard
    return min(hard, max(D(6), floor01(session.drawn_a + headroom_a)))


class Slack:
    """What is left of the budget and of each charge point's rating after `limits`."""

    def __init__(self, unit: Unit, budget: Decimal, points: list[ChargePoint], sessions: list[Session], limits: Any):
        self.points = {p.id: p for p in points}
        self.sessions = {s.key: s for s in sessions}
        used = sum((limit * load_per_a(self.points[k[0]], self.sessions[k], unit) for k, limit in limits.items()), D(0))
        self.cable = budget - reserved(points, unit) - used
        self.point = {p.id: floor01(p.rating_a) for p in points}
        for (cp_id, _), limit in limits.items():
            self.point[cp_id] -= limit

    def fits(self, key: Key, rise_a: Decimal, unit: Unit) -> bool:
        cost = rise_a * load_per_a(self.points[key[0]], self.sessions[key], unit)
        return cost <= self.cable and rise_a <= self.point[key[0]]


def check_safe(unit: Unit, budget: Decimal, points: list[ChargePoint], sessions: list[Session], limits: Any) -> None:
    by_id = {p.id: p for p in points}
    expected_keys = {s.key for s in sessions if not by_id[s.charge_point_id].unresponsive}
    assert set(limits) == expected_keys
    for key, limit in limits.items():
        assert limit == 0 or limit >= 6, f"{key}: {limit} A is neither a pause nor >= 6 A"
        assert limit == limit.quantize(STEP), f"{key}: {limit} is not on the 0.1 A grid"
        assert limit <= by_id[key[0]].connector_rating_a, f"{key}: {limit} A above the connector rating"
    slack = Slack(unit, budget, points, sessions, limits)
    assert all(left >= 0 for left in slack.point.values()), f"a charge point is above its rating: {slack.point}"
    if any(limits.values()):
        assert slack.cable >= 0, f"limits exceed the budget by {-slack.cable} {unit}"


@settings(max_examples=300, deadline=None)
@given(cases())
def test_limits_are_safe_and_leave_no_usable_capacity_idle(case: tuple[Unit, Decimal, list, list]) -> None:
    unit, budget, points, sessions = case
    limits = split_block(budget, unit, points, sessions, band_a=D(0))
    check_safe(unit, budget, points, sessions, limits)
    slack = Slack(unit, budget, points, sessions, limits)
    by_id = {p.id: p for p in points}
    for s in sessions:
        if s.key not in limits:
            continue
        cap = cap_a(by_id[s.charge_point_id], s, D(2))
        limit = limits[s.key]
        if cap >= 6 and limit < cap:
            rise = STEP if limit > 0 else D(6)
            assert not slack.fits(s.key, rise, unit), f"{s.key} at {limit} A could take {rise} A more (cap {cap})"


@settings(max_examples=300, deadline=None)
@given(cases(), st.sampled_from([D("0.5"), D(1), D(2)]), st.one_of(st.none(), st.integers(-3000, 3000)))
def test_hysteresis_holds_only_what_fits_and_never_flaps(
    case: tuple[Unit, Decimal, list, list], band_a: Decimal, budget_change: int | None
) -> None:
    unit, budget, points, sessions = case
    if budget_change is not None:
        # the previous limits are a split of a slightly different budget: small changes are common
        before = split_block(budget, unit, points, sessions, band_a=D(0))
        sessions = [with_previous(s, before.get(s.key)) for s in sessions]
        budget = max(D(0), budget + D(budget_change).scaleb(-3))
    limits = split_block(budget, unit, points, sessions, band_a=band_a)
    check_safe(unit, budget, points, sessions, limits)
    slack = Slack(unit, budget, points, sessions, limits)
    by_id = {p.id: p for p in points}
    for s in sessions:
        limit, previous = limits.get(s.key), s.previous_limit_a
        if limit is None or previous is None or limit == 0 or floor01(previous) < 6:
            continue
        previous = floor01(previous)
        assert not previous < limit < previous + band_a, f"{s.key}: a rise of less than the band went out"
        if limit < previous < limit + band_a and previous <= by_id[s.charge_point_id].connector_rating_a:
            # a small reduction went out: it must have been needed
            assert not slack.fits(s.key, previous - limit, unit), f"{s.key}: an unneeded small reduction went out"
    # the result as the previous limits changes nothing: no flapping from one block to the next
    settled = [with_previous(s, limits.get(s.key)) for s in sessions]
    assert split_block(budget, unit, points, settled, band_a=band_a) == limits


def with_previous(session: Session, previous_limit_a: Decimal | None) -> Session:
    s = session
    return Session(s.charge_point_id, s.connector_id, s.phases_in_use, s.drawn_a, previous_limit_a, s.energy_kwh)


def limit_at(plan: ProfilePlan, moment: datetime) -> Decimal:
    offset = (moment - plan.start_schedule).total_seconds()
    return [p.limit_a for p in plan.periods if p.start_period_s <= offset][-1]


@settings(max_examples=150, deadline=None)
@given(
    cables(),
    st.lists(st.lists(amps(40), min_size=9, max_size=9), min_size=0, max_size=8),
    st.integers(-20 * 60, 130 * 60),
    amps(60),
    st.sampled_from(list(ProfileKind)),
)
def test_schedules_follow_the_blocks_and_end_on_the_backup(
    cable: tuple[list[ChargePoint], list[Session]],
    rows: list[list[Decimal]],
    now_s: int,
    backup_a: Decimal,
    kind: ProfileKind,
) -> None:
    points, sessions = cable
    keys = [(p.id, c) for p in points for c in range(1, p.connectors + 1)]
    block_limits = {T0 + k * Q: dict(zip(keys, row, strict=False)) for k, row in enumerate(rows)}
    now = T0 + timedelta(seconds=now_s)
    plans = plan_profiles(
        points,
        sessions,
        block_limits,
        dict.fromkeys((p.id for p in points), backup_a),
        now,
        kinds=dict.fromkeys((p.id for p in points), kind),
    )
    by_id = {p.id: p for p in points}
    assert {p.charge_point_id for p in plans} <= {p.id for p in points if not p.unresponsive}
    horizon_end = T0 + len(rows) * Q
    for plan in plans:
        point = by_id[plan.charge_point_id]
        assert plan.start_schedule <= now < plan.start_schedule + timedelta(minutes=2)
        offsets = [p.start_period_s for p in plan.periods]
        assert all(a.limit_a != b.limit_a for a, b in pairwise(plan.periods)), "equal neighbours must merge"
        assert offsets[0] == 0
        assert offsets == sorted(set(offsets))
        for p in plan.periods:
            assert p.limit_a == p.limit_a.quantize(STEP)
            assert p.limit_a >= 0
        rating = point.rating_a if plan.connector_id == 0 else point.connector_rating_a
        share = backup_a if plan.connector_id == 0 else backup_a / point.connectors
        backup = floor01(min(share, rating))
        assert plan.periods[-1].limit_a == (backup if backup >= 6 else 0), "the last period must be the backup"
        skew = timedelta(seconds=60)  # rises come this much later, falls this much earlier
        assert limit_at(plan, max(horizon_end + skew, plan.start_schedule)) == plan.periods[-1].limit_a
        if rows and now < T0 - skew:  # until a horizon that starts later, the safe value
            assert limit_at(plan, plan.start_schedule) == plan.periods[-1].limit_a
        wanted_at: list[tuple[datetime, datetime, Decimal]] = []
        for k in range(len(rows)):
            start = T0 + k * Q
            wanted = sum(
                (
                    limit
                    for (cp_id, c), limit in block_limits[start].items()
                    if cp_id == point.id and plan.connector_id in (0, c)
                ),
                D(0),
            )
            wanted_at.append((start, start + Q, floor01(wanted)))
            middle = max(start + skew, plan.start_schedule)
            if middle < start + Q - skew:  # away from the boundaries: exactly the block's limit
                assert limit_at(plan, middle) == floor01(wanted), f"block {k} of {plan.key}"
        # never above any block's limit within the skew of a moment (a charger's clock may be that far off)
        for k in range(0, 130 * 60, 20):
            moment = T0 - timedelta(minutes=20) + timedelta(seconds=k)
            if moment < now:  # the profile arrives now; what it says of the past does not apply
                continue
            near = [w for a, b, w in wanted_at if a - skew <= moment < b + skew]
            if near:
                assert limit_at(plan, moment) <= min(near), f"{plan.key} at {moment}"


def timeline_plan(start_offset_s: int, steps: list[tuple[int, int]]) -> ProfilePlan:
    """A ChargePointMax plan starting `start_offset_s` after T0, with (gap in minutes, limit A) periods."""
    periods, offset = [], 0
    for k, (gap_min, limit) in enumerate(steps):
        offset += 0 if k == 0 else gap_min * 60
        periods.append(Period(offset, D(limit), 3))
    start = T0 + timedelta(seconds=start_offset_s)
    return ProfilePlan("cp", 0, ProfileKind.CHARGE_POINT_MAX, start, tuple(periods))


timelines = st.lists(st.tuples(st.integers(1, 60), st.integers(0, 32)), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.integers(-10, 10), timelines, st.integers(-10, 10), timelines, st.integers(0, 60))
def test_lowers_and_same_from_compare_the_limits_at_every_moment_from_now(
    new_start_min: int,
    new_steps: list[tuple[int, int]],
    old_start_min: int,
    old_steps: list[tuple[int, int]],
    now_min: int,
) -> None:
    new, old = timeline_plan(new_start_min * 60, new_steps), timeline_plan(old_start_min * 60, old_steps)
    now = T0 + timedelta(minutes=now_min)
    # both plans change only on whole minutes after T0: checking every minute from now checks every moment
    moments = [now + timedelta(minutes=m) for m in range(8 * 60)]
    assert lowers(new, old, now) == any(profile_limit_at(new, t) < profile_limit_at(old, t) for t in moments)
    assert same_from(new, old, now) == all(profile_limit_at(new, t) == profile_limit_at(old, t) for t in moments)
    assert lowers(new, None, now)  # nothing accepted before: the charge point may be unlimited


def test_a_plan_made_minutes_later_for_the_same_budgets_is_the_same_from_now() -> None:
    earlier = ProfilePlan("cp", 0, ProfileKind.CHARGE_POINT_MAX, T0, (Period(0, D(10), 3), Period(900, D(8), 3)))
    periods = (Period(0, D(10), 3), Period(600, D(8), 3))
    later = ProfilePlan("cp", 0, ProfileKind.CHARGE_POINT_MAX, T0 + timedelta(minutes=5), periods)
    now = T0 + timedelta(minutes=6)
    assert same_from(later, earlier, now)
    assert not lowers(later, earlier, now)
    assert not same_from(ProfilePlan("cp", 1, ProfileKind.TX_DEFAULT, later.start_schedule, periods), earlier, now)
    assert highest_from(earlier, T0 + timedelta(minutes=20)) == 8
    assert highest_from(earlier, T0) == 10


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([4, 6, 10, 16, 32]), st.sampled_from([1, 3]), st.booleans()), min_size=1, max_size=12
    ),
    st.integers(0, 200),
    st.sampled_from([A, KW]),
)
def test_backup_shares_stay_within_the_backup_and_are_0_or_at_least_6_a(
    rows: list[tuple[int, int, bool]], capacity: int, unit: Unit
) -> None:
    points = [cp(f"cp{i}", rating, phases, unresponsive=stuck) for i, (rating, phases, stuck) in enumerate(rows)]
    shares = backup_limits(D(capacity), unit, points)
    assert set(shares) == {p.id for p in points if not p.unresponsive}
    by_id = {p.id: p for p in points}

    def cost(point: ChargePoint, current_a: Decimal) -> Decimal:
        return current_a * point.voltage_v * point.phases / 1000 if unit is KW else current_a

    reserved = sum((cost(p, p.rating_a) for p in points if p.unresponsive), D(0))
    used = sum((cost(by_id[i], a) for i, a in shares.items()), D(0))
    assert used == 0 or used + reserved <= capacity
    for cp_id, limit in shares.items():
        assert limit == 0 or D(6) <= limit <= by_id[cp_id].rating_a
        assert limit == floor01(limit)


@settings(max_examples=200, deadline=None)
@given(st.integers(-10, 10), timelines, st.integers(-10, 10), timelines, st.integers(0, 60))
@example(2, [(1, 1)], 0, [(1, 0), (1, 1)], 0)  # the new plan starts after now: no period before its start
def test_the_lowering_step_is_the_lower_of_both_plans_at_every_moment(
    new_start_min: int,
    new_steps: list[tuple[int, int]],
    old_start_min: int,
    old_steps: list[tuple[int, int]],
    now_min: int,
) -> None:
    new, old = timeline_plan(new_start_min * 60, new_steps), timeline_plan(old_start_min * 60, old_steps)
    now = T0 + timedelta(minutes=now_min)
    step = pointwise_min(new, old, now)
    offsets = [q.start_period_s for q in step.periods]
    assert offsets[0] == 0  # as OCPP requires: from 0, rising
    assert offsets == sorted(set(offsets))
    for t in (now + timedelta(minutes=m) for m in range(8 * 60)):
        assert profile_limit_at(step, t) == min(profile_limit_at(new, t), profile_limit_at(old, t))
    assert not lowers(new, step, now)  # after the step, the rest of the change only raises


@settings(max_examples=200, deadline=None)
@given(timelines, st.integers(1, 8))
def test_a_schedule_cut_to_the_chargers_maximum_never_allows_more(steps: list[tuple[int, int]], most: int) -> None:
    plan = timeline_plan(0, steps)
    cut = truncated(plan, most)
    assert len(cut.periods) <= most
    for t in (T0 + timedelta(minutes=m) for m in range(8 * 60)):
        assert profile_limit_at(cut, t) <= profile_limit_at(plan, t)
    if len(plan.periods) <= most:
        assert cut == plan
