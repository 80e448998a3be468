"""15-minute blocks (service.domain.blocks) and capacity quantities (service.domain.units)."""

from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.blocks import BLOCK, aligned, as_utc, block_floor, block_of, block_starts, is_aligned
from service.domain.errors import InvalidInput
from service.domain.units import (
    GRID,
    MAX_QUANTITY,
    ceil_grid,
    current_a_from_power_kw,
    floor_grid,
    power_kw_from_current_a,
    to_capacity,
)

AMS = ZoneInfo("Europe/Amsterdam")
PLUS_TWO = timezone(timedelta(hours=2))


def naive(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A datetime without offset, the thing every entry point must refuse."""
    return datetime(year, month, day, hour, minute)  # noqa: DTZ001


# ---------------------------------------------------------------------------------------------
# blocks


class TestNaiveDatetimes:
    def test_as_utc_rejects_naive_and_names_the_field(self) -> None:
        with pytest.raises(InvalidInput, match=r"^delivery\.start has no UTC offset"):
            as_utc(naive(2026, 3, 29, 18, 0), "delivery.start")

    def test_block_of_names_the_naive_start(self) -> None:
        with pytest.raises(InvalidInput) as info:
            block_of(naive(2026, 3, 29, 18, 0), datetime(2026, 3, 29, 18, 15, tzinfo=UTC), "requestedBlock")
        assert "requestedBlock.start" in info.value.message
        assert "offset" in info.value.message

    def test_block_of_names_the_naive_end(self) -> None:
        with pytest.raises(InvalidInput) as info:
            block_of(datetime(2026, 3, 29, 18, 0, tzinfo=UTC), naive(2026, 3, 29, 18, 15), "requestedBlock")
        assert "requestedBlock.end" in info.value.message

    def test_block_starts_rejects_naive_bounds(self) -> None:
        with pytest.raises(InvalidInput, match=r"^start has no UTC offset"):
            list(block_starts(naive(2026, 1, 1), datetime(2026, 1, 2, tzinfo=UTC)))
        with pytest.raises(InvalidInput, match=r"^end has no UTC offset"):
            list(block_starts(datetime(2026, 1, 1, tzinfo=UTC), naive(2026, 1, 2)))

    def test_tzinfo_without_offset_counts_as_naive(self) -> None:
        class NoOffset(tzinfo):  # a tzinfo that does not know its offset
            def utcoffset(self, dt: datetime | None) -> None:
                return None

            def dst(self, dt: datetime | None) -> None:
                return None

            def tzname(self, dt: datetime | None) -> str:
                return "?"

        with pytest.raises(InvalidInput, match="no UTC offset"):
            as_utc(datetime(2026, 1, 1, tzinfo=NoOffset()), "x")


class TestAlignment:
    @pytest.mark.parametrize(
        "moment",
        [
            datetime(2026, 5, 1, 12, 7, tzinfo=UTC),
            datetime(2026, 5, 1, 12, 15, 1, tzinfo=UTC),
            datetime(2026, 5, 1, 12, 15, 0, 1, tzinfo=UTC),
            datetime(2026, 5, 1, 12, 50, tzinfo=UTC),
        ],
    )
    def test_misaligned_start_rejected(self, moment: datetime) -> None:
        assert not is_aligned(moment)
        with pytest.raises(InvalidInput, match=r"^block\.start .* is not on a quarter hour"):
            block_of(moment, moment + BLOCK)

    @pytest.mark.parametrize("minute", [0, 15, 30, 45])
    def test_quarter_hours_are_aligned(self, minute: int) -> None:
        moment = datetime(2026, 5, 1, 12, minute, tzinfo=UTC)
        assert is_aligned(moment)
        assert aligned(moment, "x") == moment

    def test_offset_of_a_half_hour_zone_is_judged_in_utc(self) -> None:
        # 12:00 at +05:30 is 06:30 UTC: aligned. 12:10 at +05:45 is 06:25 UTC: not aligned.
        assert aligned(datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))), "x") == datetime(
            2026, 5, 1, 6, 30, tzinfo=UTC
        )
        with pytest.raises(InvalidInput):
            aligned(datetime(2026, 5, 1, 12, 10, tzinfo=timezone(timedelta(hours=5, minutes=45))), "x")

    def test_block_floor(self) -> None:
        assert block_floor(datetime(2026, 5, 1, 12, 44, 59, 999999, tzinfo=UTC)) == datetime(
            2026, 5, 1, 12, 30, tzinfo=UTC
        )
        assert block_floor(datetime(2026, 5, 1, 14, 7, tzinfo=PLUS_TWO)) == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class TestBlockLength:
    def test_exactly_fifteen_minutes_is_accepted(self) -> None:
        start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
        assert block_of(start, start + timedelta(minutes=15)) == start

    @pytest.mark.parametrize("minutes", [0, 14, 16, 30, -15])
    def test_other_lengths_are_rejected(self, minutes: int) -> None:
        start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
        with pytest.raises(InvalidInput, match="a block is exactly 15 minutes"):
            block_of(start, start + timedelta(minutes=minutes))

    def test_length_is_measured_across_offsets(self) -> None:
        # 18:00+02:00 .. 16:15Z is one block; 18:00+02:00 .. 18:15Z is 2h15.
        start = datetime(2026, 3, 29, 18, 0, tzinfo=PLUS_TWO)
        assert block_of(start, datetime(2026, 3, 29, 16, 15, tzinfo=UTC)) == datetime(2026, 3, 29, 16, 0, tzinfo=UTC)
        with pytest.raises(InvalidInput):
            block_of(start, datetime(2026, 3, 29, 18, 15, tzinfo=UTC))


class TestBlockStartsOverLocalDays:
    @staticmethod
    def _local_day(day: date) -> list[datetime]:
        """Blocks from local midnight to the next local midnight in Europe/Amsterdam."""
        start = datetime.combine(day, time(0), tzinfo=AMS)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=AMS)
        return list(block_starts(start, end))

    def test_spring_forward_day_has_92_blocks(self) -> None:
        starts = self._local_day(date(2026, 3, 29))
        assert len(starts) == 92
        assert starts[0] == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 CET
        assert starts[-1] == datetime(2026, 3, 29, 21, 45, tzinfo=UTC)  # 23:45 CEST

    def test_fall_back_day_has_100_blocks(self) -> None:
        starts = self._local_day(date(2026, 10, 25))
        assert len(starts) == 100
        assert starts[0] == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # 00:00 CEST
        assert starts[-1] == datetime(2026, 10, 25, 22, 45, tzinfo=UTC)  # 23:45 CET

    @pytest.mark.parametrize("day", [date(2026, 1, 15), date(2026, 6, 15), date(2026, 3, 28), date(2026, 10, 26)])
    def test_ordinary_day_has_96_blocks(self, day: date) -> None:
        assert len(self._local_day(day)) == 96

    def test_starts_are_consecutive_utc_quarters(self) -> None:
        starts = self._local_day(date(2026, 10, 25))
        assert all(s.tzinfo is UTC for s in starts)
        assert all(b - a == BLOCK for a, b in pairwise(starts))
        assert len(set(starts)) == len(starts)

    def test_end_must_be_after_start(self) -> None:
        start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
        with pytest.raises(InvalidInput, match="must be after start"):
            list(block_starts(start, start))
        with pytest.raises(InvalidInput, match="must be after start"):
            list(block_starts(start, start - BLOCK))

    def test_misaligned_bounds_rejected(self) -> None:
        start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
        with pytest.raises(InvalidInput, match=r"^end .* is not on a quarter hour"):
            list(block_starts(start, start + timedelta(minutes=20)))


class TestUtcConversion:
    def test_plus_two_hours_input_becomes_utc(self) -> None:
        local = datetime(2026, 3, 29, 18, 0, tzinfo=PLUS_TWO)
        utc = as_utc(local, "start")
        assert utc == datetime(2026, 3, 29, 16, 0, tzinfo=UTC)
        assert utc.tzinfo is UTC
        assert utc.hour == 16  # the wall clock changed, not just the tzinfo

    def test_block_of_returns_the_utc_start(self) -> None:
        start = block_of(datetime(2026, 3, 29, 18, 0, tzinfo=PLUS_TWO), datetime(2026, 3, 29, 18, 15, tzinfo=PLUS_TWO))
        assert start == datetime(2026, 3, 29, 16, 0, tzinfo=UTC)
        assert start.utcoffset() == timedelta(0)

    def test_zoneinfo_input_becomes_utc(self) -> None:
        assert as_utc(datetime(2026, 7, 1, 12, 0, tzinfo=AMS), "x") == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
        assert as_utc(datetime(2026, 1, 1, 12, 0, tzinfo=AMS), "x") == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# units


class TestKwAmpereConversion:
    def test_three_phase_16_a_is_11_04_kw(self) -> None:
        assert power_kw_from_current_a(Decimal(16), phases=3, voltage_v=Decimal(230)) == Decimal("11.04")

    def test_single_phase_6_a_is_1_38_kw(self) -> None:
        assert power_kw_from_current_a(Decimal(6), phases=1, voltage_v=Decimal(230)) == Decimal("1.38")

    def test_back_from_kw(self) -> None:
        assert current_a_from_power_kw(Decimal("11.04"), phases=3, voltage_v=Decimal(230)) == Decimal(16)
        assert current_a_from_power_kw(Decimal("1.38"), phases=1, voltage_v=Decimal(230)) == Decimal(6)

    @settings(max_examples=200, deadline=None)
    @given(
        current=st.integers(min_value=0, max_value=10**7).map(lambda n: Decimal(n) / 1000),
        phases=st.sampled_from([1, 2, 3]),
        voltage=st.sampled_from([Decimal(230), Decimal(220), Decimal(240), Decimal("231.5")]),
    )
    def test_round_trip(self, current: Decimal, phases: int, voltage: Decimal) -> None:
        kw = power_kw_from_current_a(current, phases=phases, voltage_v=voltage)
        assert current_a_from_power_kw(kw, phases=phases, voltage_v=voltage) == current


class TestToCapacity:
    @pytest.mark.parametrize("value", [-1, Decimal("-0.001"), "-0.0001", -0.5])
    def test_negative_rejected(self, value: object) -> None:
        with pytest.raises(InvalidInput, match=r"^budget must be >= 0"):
            to_capacity(value, "budget")

    @pytest.mark.parametrize("value", [Decimal("NaN"), "nan", float("nan"), Decimal("sNaN")])
    def test_nan_rejected(self, value: object) -> None:
        with pytest.raises(InvalidInput, match=r"^limit must be a finite number"):
            to_capacity(value, "limit")

    @pytest.mark.parametrize("value", [Decimal("Infinity"), "inf", float("inf"), float("-inf"), "-Infinity"])
    def test_infinity_rejected(self, value: object) -> None:
        with pytest.raises(InvalidInput, match=r"^limit must be a finite number"):
            to_capacity(value, "limit")

    @pytest.mark.parametrize("value", ["abc", "", None, object(), [1], "1,5", True])
    def test_non_numbers_rejected(self, value: object) -> None:
        with pytest.raises(InvalidInput, match=r"^margin must be a number"):
            to_capacity(value, "margin")

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("1.2349", Decimal("1.234")),
            (Decimal("1.9999"), Decimal("1.999")),
            (Decimal("0.0009"), Decimal("0.000")),
            (5, Decimal("5.000")),
            (0.1, Decimal("0.100")),  # floats go through str(): no binary noise
            ("1e3", Decimal("1000.000")),
            (Decimal("2.5"), Decimal("2.500")),
        ],
    )
    def test_floors_to_the_grid(self, value: object, expected: Decimal) -> None:
        result = to_capacity(value, "x")
        assert result == expected
        assert result.as_tuple().exponent == -3

    @settings(max_examples=200, deadline=None)
    @given(st.decimals(min_value=0, max_value=MAX_QUANTITY, allow_nan=False, allow_infinity=False, places=6))
    def test_result_is_the_largest_grid_value_not_above_the_input(self, value: Decimal) -> None:
        result = to_capacity(value, "x")
        assert result <= value < result + GRID
        assert result == result.quantize(GRID)

    def test_floor_and_ceil_grid(self) -> None:
        assert floor_grid(Decimal("2.0001")) == Decimal("2.000")
        assert ceil_grid(Decimal("2.0001")) == Decimal("2.001")
        assert floor_grid(Decimal("2")) == ceil_grid(Decimal("2")) == Decimal("2.000")

    def test_huge_value_is_invalid_input(self) -> None:
        with pytest.raises(InvalidInput):
            to_capacity("1E+30", "limit")
