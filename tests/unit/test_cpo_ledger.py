"""Meter readings -> usage per block -> request / hand-back decisions (service.cpo.ledger).

Examples with numbers worked out by hand (block splits, a meter reset, power and current integration,
the A convention), then hypothesis properties: energy is conserved and never negative, hand-backs stay
at or above the floor, no block gets a request and a hand-back at once, and a steady state does not flap.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate, pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.v16 import enums

from service.cpo.ledger import (
    BlockState,
    Hysteresis,
    MeterSample,
    Outlook,
    UsageMeter,
    block_usage,
    constrained_demand,
    decide,
    parse_sampled_values,
)
from service.cpo.profiles import ChargePoint, Session
from service.domain.errors import InvalidInput
from service.domain.units import Unit

D = Decimal
A, KW = Unit.AMPERE, Unit.KILOWATT
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
MIN = timedelta(minutes=1)
REGISTER = "Energy.Active.Import.Register"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def stamp(minutes: float) -> str:
    return at(minutes).isoformat().replace("+00:00", "Z")


def sample(
    minutes: float, value: object, measurand: str = REGISTER, unit: str = "Wh", phase: str | None = None
) -> MeterSample:
    return MeterSample(at(minutes), measurand, D(str(value)), unit, phase, "Sample.Periodic")


def cp(cp_id: str, max_a: object = 32, phases: int = 3, cable: str = "cable-1", **changes: Any) -> ChargePoint:
    return ChargePoint(cp_id, cable, D(str(max_a)), phases, **changes)


# ---------------------------------------------------------------------------------------------
# parsing


class TestParse:
    def test_snake_case_as_the_ocpp_library_hands_it_over(self) -> None:
        samples = parse_sampled_values(
            [
                {
                    "timestamp": "2026-03-02T11:15:00+01:00",
                    "sampled_value": [
                        {"value": "1.5", "unit": "kWh", "context": "Sample.Clock"},
                        {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
                        {"value": "16.2", "measurand": "Current.Import", "phase": "L1"},
                        {"value": "AB12==", "format": "SignedData"},
                    ],
                }
            ]
        )
        assert samples == [
            MeterSample(at(15), REGISTER, D(1500), "Wh", None, "Sample.Clock"),
            MeterSample(at(15), "Power.Active.Import", D(7400), "W", None, None),
            MeterSample(at(15), "Current.Import", D("16.2"), "A", "L1", None),
        ]
        assert samples[0].at.tzinfo is UTC

    def test_camel_case_enum_values_and_datetime_objects(self) -> None:
        samples = parse_sampled_values(
            [
                {
                    "timestamp": at(0),
                    "sampledValue": [{"value": "12", "measurand": enums.Measurand.power_active_import}],
                },
                {"timestamp": stamp(1), "sampledValue": [{"value": "100", "unit": enums.UnitOfMeasure.wh}]},
            ]
        )
        assert [(s.measurand, s.value, s.unit) for s in samples] == [
            ("Power.Active.Import", D(12), "W"),
            (REGISTER, D(100), "Wh"),
        ]
        assert all(type(s.measurand) is str for s in samples)

    def test_empty_lists_give_no_samples(self) -> None:
        assert parse_sampled_values([]) == []
        assert parse_sampled_values([{"timestamp": stamp(0), "sampled_value": []}]) == []

    @pytest.mark.parametrize(
        ("meter_value", "message"),
        [
            ({"timestamp": "2026-03-02T10:00:00", "sampled_value": [{"value": "1"}]}, "no UTC offset"),
            ({"timestamp": "yesterday", "sampled_value": [{"value": "1"}]}, "not an ISO 8601"),
            ({"sampled_value": [{"value": "1"}]}, "timestamp is missing"),
            ({"timestamp": stamp(0), "sampled_value": [{"value": "twelve"}]}, "must be a number"),
            ({"timestamp": stamp(0), "sampled_value": [{"value": "NaN"}]}, "finite number"),
            ({"timestamp": stamp(0), "sampled_value": [{"unit": "Wh"}]}, "value is missing"),
            ({"timestamp": stamp(0), "sampled_value": [{"value": "-5"}]}, "cannot be negative"),
            ({"timestamp": stamp(0), "sampled_value": [{"value": "5", "unit": "A"}]}, "must be in Wh or kWh"),
            ({"timestamp": stamp(0), "sampled_value": "1"}, "must be a list"),
            ({"timestamp": stamp(0), "sampled_value": ["1"]}, "must be an object"),
        ],
    )
    def test_bad_values_are_refused_with_a_clear_message(self, meter_value: dict[str, object], message: str) -> None:
        with pytest.raises(InvalidInput, match=message) as caught:
            parse_sampled_values([meter_value])
        assert "meterValue[0]" in caught.value.message


# ---------------------------------------------------------------------------------------------
# the meter


def meter_with_readings(*readings: tuple[float, object]) -> UsageMeter:
    meter = UsageMeter()
    for minutes, wh in readings:
        meter.add("cp1", 1, [sample(minutes, wh)])
    return meter


class TestUsageMeter:
    def test_an_interval_across_a_block_boundary_is_split_pro_rata(self) -> None:
        # 10:10 -> 10:25, 600 Wh: 5 minutes in the 10:00 block, 10 in the 10:15 block
        meter = meter_with_readings((10, 1000), (25, 1600))
        assert meter.energy_wh("cp1", 1) == {at(0): D(200), at(15): D(400)}

    def test_an_uneven_split_still_adds_up_exactly(self) -> None:
        # 10:14 -> 10:17, 100 Wh: a third before 10:15 (floored to 0.001 Wh), the rest after
        meter = meter_with_readings((14, 0), (17, 100))
        blocks = meter.energy_wh("cp1", 1)
        assert blocks == {at(0): D("33.333"), at(15): D("66.667")}
        assert sum(blocks.values()) == 100

    def test_an_interval_over_several_blocks(self) -> None:
        # 10:05 -> 10:50, 4500 Wh at a steady rate: 10 min, 15, 15, 5 min
        meter = meter_with_readings((5, 0), (50, 4500))
        assert meter.energy_wh("cp1", 1) == {at(0): 1000, at(15): 1500, at(30): 1500, at(45): 500}

    def test_a_meter_reset_starts_over_without_negative_energy(self) -> None:
        # 400 Wh in the first block; reset at 10:20 (5 -> nothing); 10:20 -> 10:30 adds 300
        meter = meter_with_readings((0, 5000), (15, 5400), (20, 100), (30, 400))
        assert meter.energy_wh("cp1", 1) == {at(0): 400, at(15): 300}

    def test_late_and_duplicate_readings_are_ignored(self) -> None:
        meter = meter_with_readings((0, 1000), (15, 1200), (10, 1100), (15, 1200), (15, 9999), (5, 0))
        assert meter.energy_wh("cp1", 1) == {at(0): 200}

    def test_transaction_start_and_stop_are_readings_and_kwh_is_converted(self) -> None:
        meter = UsageMeter()
        meter.reading("cp1", 2, at(5), 10_000)  # meterStart
        samples = parse_sampled_values([{"timestamp": stamp(15), "sampled_value": [{"value": "11", "unit": "kWh"}]}])
        meter.add("cp1", 2, samples)
        meter.reading("cp1", 2, at(20), D(11_500))  # meterStop
        assert meter.energy_wh("cp1", 2) == {at(0): 1000, at(15): 500}
        assert meter.connectors("cp1") == [2]
        assert meter.energy_wh("cp1", 1) == {}

    def test_power_samples_are_integrated_when_there_is_no_register(self) -> None:
        # trapezoid: 7 kW then 11 kW over 15 minutes = 9 kW * 0.25 h; then 11 kW -> 0 kW over 15 minutes
        meter = UsageMeter()
        for minutes, watts in ((0, 7000), (15, 11000), (30, 0)):
            meter.add("cp1", 1, [sample(minutes, watts, "Power.Active.Import", "W")])
        assert meter.energy_wh("cp1", 1) == {at(0): 2250, at(15): 1375}

    def test_power_per_phase_adds_up_and_a_gap_adds_nothing(self) -> None:
        meter = UsageMeter(max_rate_gap=timedelta(minutes=20))
        for minutes in (0, 15, 60):  # 15 -> 60 is longer than the gap: the charge point was silent
            meter.add(
                "cp1", 1, [sample(minutes, 1000, "Power.Active.Import", "W", phase) for phase in ("L1-N", "L2", "L3")]
            )
        assert meter.energy_wh("cp1", 1) == {at(0): 750}

    def test_currents_stand_in_for_power(self) -> None:
        # 16 A on each line at 230 V = 11.04 kW; a quarter hour = 2760 Wh. The neutral does not count.
        meter = UsageMeter()
        for minutes in (0, 15):
            phased = [sample(minutes, 16, "Current.Import", "A", p) for p in ("L1", "L2", "L3", "N")]
            meter.add("cp1", 1, phased)
            meter.add("cp2", 1, [sample(minutes, 16, "Current.Import", "A")], phases=3)  # per phase, 3 in use
            meter.add("cp3", 1, [sample(minutes, 16, "Current.Import", "A")], voltage_v=D(220))
        assert meter.energy_wh("cp1", 1) == {at(0): 2760}
        assert meter.energy_wh("cp2", 1) == {at(0): 2760}
        assert meter.energy_wh("cp3", 1) == {at(0): 880}

    def test_power_wins_over_current(self) -> None:
        meter = UsageMeter()
        for minutes in (0, 15):
            meter.add(
                "cp1",
                1,
                [sample(minutes, 4000, "Power.Active.Import", "W"), sample(minutes, 32, "Current.Import", "A")],
            )
        assert meter.energy_wh("cp1", 1) == {at(0): 1000}

    def test_once_power_is_seen_current_only_messages_are_left_out(self) -> None:
        meter = UsageMeter()
        meter.add("cp1", 1, [sample(0, 4000, "Power.Active.Import", "W")])
        meter.add("cp1", 1, [sample(5, 32, "Current.Import", "A")])  # 7.36 kW if it counted
        meter.add("cp1", 1, [sample(15, 4000, "Power.Active.Import", "W")])
        assert meter.energy_wh("cp1", 1) == {at(0): 1000}

    def test_a_register_interval_replaces_the_estimate(self) -> None:
        meter = UsageMeter()
        for minutes, wh in ((0, 0), (15, 1800)):
            meter.add("cp1", 1, [sample(minutes, 8000, "Power.Active.Import", "W"), sample(minutes, wh)])
        # then power only: 10:15 -> 10:30 estimated at 8 kW
        meter.add("cp1", 1, [sample(30, 8000, "Power.Active.Import", "W")])
        assert meter.energy_wh("cp1", 1) == {at(0): 1800, at(15): 2000}
        # a register reading at 10:20 settles 10:15-10:20 and keeps the estimate for 10:20-10:30
        meter.add("cp1", 1, [sample(20, 1900)])
        assert meter.energy_wh("cp1", 1) == {at(0): 1800, at(15): D(100) + D("1333.333")}

    def test_power_older_than_the_last_register_reading_counts_only_after_it(self) -> None:
        meter = meter_with_readings((0, 0), (15, 1500))
        meter.add("cp1", 1, [sample(10, 6000, "Power.Active.Import", "W")])
        meter.add("cp1", 1, [sample(20, 6000, "Power.Active.Import", "W")])  # 10:10-10:20 at 6 kW: 1000 Wh
        assert meter.energy_wh("cp1", 1) == {at(0): 1500, at(15): 500}  # 10:10-10:15 is the register's

    def test_forget_before_drops_estimated_blocks_too(self) -> None:
        meter = UsageMeter()
        for minutes in (0, 15, 30):
            meter.add("cp1", 1, [sample(minutes, 4000, "Power.Active.Import", "W")])
        meter.forget_before(at(15))
        assert meter.energy_wh("cp1", 1) == {at(15): 1000}

    def test_forget_before_drops_old_blocks_and_later_readings_do_not_reach_them(self) -> None:
        meter = meter_with_readings((0, 0), (15, 100), (30, 300))
        meter.forget_before(at(15))
        assert meter.energy_wh("cp1", 1) == {at(15): 200}
        meter.add("cp1", 1, [sample(60, 900)])  # 10:30 -> 11:00: 300 each block
        assert meter.energy_wh("cp1", 1) == {at(15): 200, at(30): 300, at(45): 300}
        with pytest.raises(InvalidInput, match="quarter hour"):
            meter.forget_before(at(20))

    def test_bad_arguments(self) -> None:
        meter = UsageMeter()
        with pytest.raises(InvalidInput, match="no UTC offset"):
            meter.reading("cp1", 1, datetime(2026, 3, 2, 10, 0), 5)  # noqa: DTZ001
        with pytest.raises(InvalidInput, match=">= 0 Wh"):
            meter.reading("cp1", 1, at(0), -1)
        with pytest.raises(InvalidInput, match="connector_id"):
            meter.reading("cp1", -1, at(0), 1)
        with pytest.raises(InvalidInput, match="phases"):
            meter.add("cp1", 1, [], phases=4)
        with pytest.raises(InvalidInput, match="max_rate_gap"):
            UsageMeter(max_rate_gap=timedelta(0))


# ---------------------------------------------------------------------------------------------
# usage per cable


class TestBlockUsage:
    def test_kw_and_the_a_convention_with_known_answers(self) -> None:
        meter = UsageMeter()
        # cp3: 3-phase car, 2760 Wh in the block = 11.04 kW = 16 A per phase at 230 V
        meter.reading("cp3", 1, at(0), 0)
        meter.reading("cp3", 1, at(15), 2760)
        # cp1: 1-phase car, 920 Wh = 3.68 kW = 16 A on its phase
        meter.reading("cp1", 1, at(0), 0)
        meter.reading("cp1", 1, at(15), 920)
        points = [cp("cp3"), cp("cp1", phases=1)]
        usage = block_usage(meter, points, now=at(15), phases_in_use={("cp3", 1): 3, ("cp1", 1): 1})
        block = usage["cable-1"][at(0)]
        assert (block.energy_wh, block.power_kw, block.current_a) == (3680, D("14.720"), D("32.000"))
        assert block.in_unit(KW) == D("14.72")
        assert block.in_unit(A) == 32

    def test_unknown_phases_count_as_one(self) -> None:
        meter = meter_with_readings((0, 0), (15, 2760))
        usage = block_usage(meter, [cp("cp1")], now=at(15))
        assert usage["cable-1"][at(0)].current_a == 48  # 11.04 kW on one phase

    def test_only_closed_blocks_and_only_from_since(self) -> None:
        meter = meter_with_readings((0, 0), (15, 100), (30, 200), (40, 300))
        usage = block_usage(meter, [cp("cp1")], now=at(30) + timedelta(minutes=14))
        assert sorted(usage["cable-1"]) == [at(0), at(15)]
        usage = block_usage(meter, [cp("cp1")], now=at(45), since=at(15))
        assert sorted(usage["cable-1"]) == [at(15), at(30)]
        assert usage["cable-1"][at(30)].power_kw == D("0.400")  # 100 Wh in a quarter hour
        assert block_usage(meter, [cp("cp1")], now=at(14)) == {}
        # with time for the readings to come in, a block counts only once `settle` has passed
        assert sorted(block_usage(meter, [cp("cp1")], now=at(31), settle=2 * MIN)["cable-1"]) == [at(0)]
        assert sorted(block_usage(meter, [cp("cp1")], now=at(32), settle=2 * MIN)["cable-1"]) == [at(0), at(15)]

    def test_connector_zero_is_used_only_where_the_connectors_are_silent(self) -> None:
        meter = UsageMeter()
        # the main meter saw 10:00-10:30; connector 1 only 10:15-10:30
        for minutes, wh in ((0, 0), (15, 1000), (30, 3000)):
            meter.reading("cp1", 0, at(minutes), wh)
        for minutes, wh in ((15, 50), (30, 2000)):
            meter.reading("cp1", 1, at(minutes), wh)
        usage = block_usage(meter, [cp("cp1")], now=at(30))["cable-1"]
        assert {start: u.energy_wh for start, u in usage.items()} == {at(0): 1000, at(15): 1950}

    def test_cables_are_separate_and_rounding_is_to_the_grid(self) -> None:
        meter = UsageMeter()
        meter.reading("a", 1, at(0), 0)
        meter.reading("a", 1, at(15), 1)  # 1 Wh: 0.004 kW; 4 W / 230 V = 0.01739 A -> 0.017
        meter.reading("b", 1, at(0), 0)
        meter.reading("b", 1, at(15), 0)
        usage = block_usage(meter, [cp("a"), cp("b", cable="cable-2"), cp("idle")], now=at(30))
        assert usage["cable-1"][at(0)].power_kw == D("0.004")
        assert usage["cable-1"][at(0)].current_a == D("0.017")
        assert usage["cable-2"][at(0)].power_kw == 0
        assert set(usage) == {"cable-1", "cable-2"}

    def test_bad_arguments(self) -> None:
        meter = meter_with_readings((0, 0), (15, 10))
        with pytest.raises(InvalidInput, match="listed twice"):
            block_usage(meter, [cp("cp1"), cp("cp1")], now=at(15))
        with pytest.raises(InvalidInput, match="1, 2 or 3"):
            block_usage(meter, [cp("cp1")], now=at(15), phases_in_use={("cp1", 1): 0})
        with pytest.raises(InvalidInput, match="quarter hour"):
            block_usage(meter, [cp("cp1")], now=at(15), since=at(1))
        with pytest.raises(InvalidInput, match="settle"):
            block_usage(meter, [cp("cp1")], now=at(15), settle=-MIN)


# ---------------------------------------------------------------------------------------------
# demand


class TestConstrainedDemand:
    def test_observed_draw_or_rating_summed_in_a_and_kw(self) -> None:
        points = [cp("a", 32, 3), cp("b", 16, 1), cp("dead", 20, 3, unresponsive=True)]
        sessions = [Session("a", 1, 3), Session("b", 1, 1), Session("dead", 1, 3)]
        observed = {("a", 1): D(16)}
        # A: 16 (observed) + 16 (rating) + 20 (unresponsive: its rating) = 52
        assert constrained_demand(points, sessions, A, max_drawn_a=observed) == 52
        # KW: 16*230*3/1000 + 16*0.23 + 20*0.69 = 11.04 + 3.68 + 13.8
        assert constrained_demand(points, sessions, KW, max_drawn_a=observed) == D("28.52")

    def test_connectors_share_the_charge_point_rating(self) -> None:
        points = [cp("twin", 20, 3, connectors=2)]
        sessions = [Session("twin", 1, 3), Session("twin", 2, 1)]
        assert constrained_demand(points, sessions, A, max_drawn_a={("twin", 1): D(16), ("twin", 2): D(16)}) == 20
        assert constrained_demand(points, [], A) == 0
        with pytest.raises(InvalidInput, match="unknown charge point"):
            constrained_demand(points, [Session("x", 1, 1)], A)


# ---------------------------------------------------------------------------------------------
# the decision


POLICY = Hysteresis(request_band=D(1), handback_band=D(5), headroom=D(2), confirmations=2, cooldown=30 * MIN)


def run(outlook: dict[datetime, Outlook], state: Any, minutes: float, policy: Hysteresis = POLICY) -> Any:
    return decide(outlook, state, unit=A, now=at(minutes), policy=policy)


class TestDecide:
    def test_a_request_needs_two_confirmations_and_is_not_repeated_within_the_cooldown(self) -> None:
        view = {at(60): Outlook(budget=D(20), demand=D(30), usage=D(19))}
        first = run(view, {}, 0)
        assert first.adjustments == []
        second = run(view, first.state, 1)
        assert second.request is not None
        assert second.request.kind == "request"
        assert second.request.unit is A
        assert dict(second.request.blocks) == {at(60): 30}
        assert second.handback is None
        third = run(view, second.state, 5)
        assert third.adjustments == []
        higher = run({at(60): Outlook(budget=D(20), demand=D(35), usage=D(19))}, second.state, 6)
        assert higher.request is not None  # asking for more is news
        assert dict(higher.request.blocks) == {at(60): 35}
        later = run(view, third.state, 31)
        assert later.request is not None  # the cooldown is over: ask again

    def test_a_demand_within_the_band_or_a_broken_streak_asks_nothing(self) -> None:
        within = {at(60): Outlook(budget=D(20), demand=D(21), usage=D(19))}
        over = {at(60): Outlook(budget=D(20), demand=D(25), usage=D(19))}
        state = run(within, run(within, {}, 0).state, 1).state
        assert state[at(60)].over == 0
        s1 = run(over, {}, 0)
        s2 = run(within, s1.state, 1)
        s3 = run(over, s2.state, 2)
        assert [d.adjustments for d in (s1, s2, s3)] == [[], [], []]

    def test_hand_back_down_to_usage_plus_headroom_or_demand_never_below_the_floor(self) -> None:
        def handback(budget: int, demand: int, usage: int, floor: int) -> Any:
            decision = run({at(60): Outlook(D(budget), D(demand), D(usage), D(floor))}, {}, 0)
            return None if decision.handback is None else dict(decision.handback.blocks)[at(60)]

        assert handback(50, 8, 8, 0) == 10  # usage + headroom
        assert handback(50, 15, 8, 0) == 15  # the demand stays
        assert handback(50, 8, 8, 20) == 20  # the floor stays
        assert handback(50, 8, 8, 46) is None  # 50 - 46 is within the band
        assert handback(16, 8, 8, 0) == 10  # 16 - 10 = 6 is beyond the band
        assert handback(15, 8, 8, 0) is None  # 15 - 10 = 5 is within the band

    def test_no_hand_back_within_the_cooldown_after_a_raise_or_a_request(self) -> None:
        low = {at(60): Outlook(budget=D(20), demand=D(10), usage=D(8))}
        high = {at(60): Outlook(budget=D(40), demand=D(10), usage=D(8))}  # keeps 8 + 2 = 10
        raised = run(high, run(low, {}, 0).state, 1)  # the DSO raised the budget
        assert raised.handback is None
        assert run(high, raised.state, 30).handback is None
        after = run(high, raised.state, 31)
        assert after.handback is not None
        assert dict(after.handback.blocks) == {at(60): 10}
        # the same hand-back is not sent again within the cooldown, a deeper one is
        assert run(high, after.state, 32).handback is None
        deeper = run({at(60): Outlook(budget=D(40), demand=D(5), usage=D(5))}, after.state, 33)
        assert deeper.handback is not None
        assert dict(deeper.handback.blocks) == {at(60): 7}

    def test_blocks_are_decided_separately_and_the_state_keeps_only_current_blocks(self) -> None:
        view = {
            at(60): Outlook(budget=D(20), demand=D(30), usage=D(19)),
            at(75): Outlook(budget=D(50), demand=D(5), usage=D(5), floor=D(10)),
        }
        first = run(view, {at(0): BlockState(over=5)}, 0)
        assert first.request is None  # the first of two confirmations
        assert first.handback is not None
        assert dict(first.handback.blocks) == {at(75): 10}  # the floor
        assert set(first.state) == {at(60), at(75)}
        second = run(view, first.state, 1)
        assert second.request is not None
        assert dict(second.request.blocks) == {at(60): 30}
        assert second.handback is None  # sent a minute ago

    def test_bad_arguments(self) -> None:
        with pytest.raises(InvalidInput, match="confirmations"):
            Hysteresis(D(1), D(1), D(1), confirmations=0)
        with pytest.raises(InvalidInput, match="cooldown"):
            Hysteresis(D(1), D(1), D(1), cooldown=-MIN)
        with pytest.raises(InvalidInput, match="budget must be >= 0"):
            Outlook(budget=D(-1), demand=D(0), usage=D(0))
        with pytest.raises(InvalidInput, match="quarter hour"):
            run({at(1): Outlook(D(1), D(1), D(1))}, {}, 0)
        with pytest.raises(InvalidInput, match="no UTC offset"):
            decide({}, {}, unit=A, now=datetime(2026, 1, 1), policy=POLICY)  # noqa: DTZ001


# ---------------------------------------------------------------------------------------------
# properties


@st.composite
def readings(draw: st.DrawFn) -> list[tuple[int, Decimal]]:
    """Register readings at increasing seconds; sometimes the register resets."""
    count = draw(st.integers(2, 12))
    seconds = sorted(draw(st.sets(st.integers(0, 4 * 3600), min_size=count, max_size=count)))
    values: list[Decimal] = []
    value = D(draw(st.integers(0, 10**6)))
    for _ in seconds:
        if values and draw(st.integers(0, 9)) == 0:
            value = D(draw(st.integers(0, 1000)))  # reset or replaced meter
        else:
            value += D(draw(st.integers(0, 10**5))) / 1000
        values.append(value)
    return list(zip(seconds, values, strict=True))


@settings(max_examples=300, deadline=None)
@given(readings(), st.randoms(use_true_random=False))
def test_energy_is_conserved_never_negative_and_split_by_time(points: list[tuple[int, Decimal]], rnd: Any) -> None:
    meter = UsageMeter()
    shuffled = list(points)
    rnd.shuffle(shuffled)
    for second, wh in points:  # in order, then again shuffled: late and duplicate readings change nothing
        meter.reading("cp", 1, T0 + timedelta(seconds=second), wh)
    for second, wh in shuffled:
        meter.reading("cp", 1, T0 + timedelta(seconds=second), wh)
    blocks = meter.energy_wh("cp", 1)
    expected_total = sum((b - a for (_, a), (_, b) in pairwise(points) if b >= a), D(0))
    assert sum(blocks.values(), D(0)) == expected_total
    assert all(wh >= 0 for wh in blocks.values())
    # each block holds its time share of every interval, within the 0.001 Wh flooring of each part
    share: dict[datetime, Decimal] = {}
    for (s0, a), (s1, b) in pairwise(points):
        if b < a:
            continue
        for k in range(s0 // 900, (s1 - 1) // 900 + 1):
            overlap = min(s1, (k + 1) * 900) - max(s0, k * 900)
            start = T0 + k * Q
            share[start] = share.get(start, D(0)) + (b - a) * overlap / (s1 - s0)
    assert set(blocks) == set(share)
    for start, wh in blocks.items():
        assert abs(wh - share[start]) <= D("0.001") * len(points)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 1800), st.integers(-2000, 22000)), min_size=1, max_size=15))
def test_integrated_power_is_never_negative_and_matches_the_trapezoid(steps: list[tuple[int, int]]) -> None:
    meter = UsageMeter(max_rate_gap=timedelta(minutes=20))
    moment, expected = T0, D(0)
    previous: int | None = None
    meter.add("cp", 1, [MeterSample(moment, "Power.Active.Import", D(0), "W", None, None)])
    previous = 0
    for gap_s, watts in steps:
        moment += timedelta(seconds=gap_s)
        meter.add("cp", 1, [MeterSample(moment, "Power.Active.Import", D(watts), "W", None, None)])
        if gap_s <= 1200:
            expected += (D(previous) + max(0, watts)) * gap_s / 7200
        previous = max(0, watts)
    blocks = meter.energy_wh("cp", 1)
    assert all(wh >= 0 for wh in blocks.values())
    assert abs(sum(blocks.values(), D(0)) - expected) <= D("0.001") * (len(steps) + 1)


quantity = st.integers(0, 200).map(D)


@st.composite
def outlooks(draw: st.DrawFn) -> dict[datetime, Outlook]:
    count = draw(st.integers(1, 4))
    return {
        T0 + k * Q: Outlook(budget=draw(quantity), demand=draw(quantity), usage=draw(quantity), floor=draw(quantity))
        for k in range(count)
    }


policies = st.builds(
    Hysteresis,
    request_band=st.integers(0, 10).map(D),
    handback_band=st.integers(0, 20).map(D),
    headroom=st.integers(0, 10).map(D),
    confirmations=st.integers(1, 3),
    cooldown=st.integers(0, 60).map(lambda m: m * MIN),
)


@settings(max_examples=300, deadline=None)
@given(outlooks(), policies, st.lists(st.integers(0, 40), min_size=1, max_size=8))
def test_decisions_respect_the_floor_and_never_both_for_one_block(
    view: dict[datetime, Outlook], policy: Hysteresis, gaps: list[int]
) -> None:
    state: Any = {}
    minutes = 0
    for gap in gaps:
        minutes += gap
        decision = run(view, state, minutes, policy)
        requested = dict(decision.request.blocks) if decision.request else {}
        handed = dict(decision.handback.blocks) if decision.handback else {}
        assert not set(requested) & set(handed)
        for start, capacity in handed.items():
            block = view[start]
            assert block.floor <= capacity < block.budget
            assert capacity >= block.demand
            assert capacity >= block.usage + policy.headroom
        for start, capacity in requested.items():
            assert capacity > view[start].budget + policy.request_band
        state = decision.state


@settings(max_examples=300, deadline=None)
@given(outlooks(), policies, st.lists(st.tuples(st.integers(0, 40), st.floats(0, 1)), min_size=2, max_size=12))
def test_a_steady_state_does_not_flap(
    view: dict[datetime, Outlook], policy: Hysteresis, steps: list[tuple[int, float]]
) -> None:
    """Demand, usage and floor stay put; the DSO grants part or all of each request and accepts each
    hand-back. Once a block has seen one kind of adjustment it never sees the other."""
    state: Any = {}
    minutes = 0
    kinds: dict[datetime, set[str]] = {start: set() for start in view}
    for gap, granted_part in steps:
        minutes += gap
        decision = run(view, state, minutes, policy)
        state = decision.state
        for adjustment in decision.adjustments:
            for start, capacity in adjustment.blocks.items():
                kinds[start].add(adjustment.kind)
                old = view[start]
                if adjustment.kind == "request":
                    rise = ((capacity - old.budget) * D(str(granted_part))).quantize(D("0.001"))
                    budget = old.budget + rise
                else:
                    budget = capacity
                view[start] = Outlook(budget=budget, demand=old.demand, usage=old.usage, floor=old.floor)
    assert all(len(seen) <= 1 for seen in kinds.values()), kinds


@settings(max_examples=200, deadline=None)
@given(readings(), st.lists(st.integers(0, 22000), min_size=12, max_size=12), st.integers(0, 16))
def test_register_intervals_replace_power_estimates_exactly(
    points: list[tuple[int, Decimal]], watts: list[int], forget_after: int
) -> None:
    """Each message carries power and a register that never resets: the result is that of the register
    alone, also when old blocks are forgotten on the way (an estimate comes out to the last 0.001 Wh)."""
    both, registers_only = UsageMeter(max_rate_gap=timedelta(hours=5)), UsageMeter()
    rising = accumulate((wh for _, wh in points), max)
    for k, (second, wh) in enumerate(zip((second for second, _ in points), rising, strict=True)):
        moment = T0 + timedelta(seconds=second)
        power = MeterSample(moment, "Power.Active.Import", D(watts[k]), "W", None, None)
        both.add("cp", 1, [power, MeterSample(moment, REGISTER, wh, "Wh", None, None)])
        registers_only.add("cp", 1, [MeterSample(moment, REGISTER, wh, "Wh", None, None)])
        if k == forget_after:
            both.forget_before(T0 + Q)
            registers_only.forget_before(T0 + Q)
    expected = registers_only.energy_wh("cp", 1)
    assert {block: wh for block, wh in both.energy_wh("cp", 1).items() if block in expected or wh} == expected
