"""The simulated charge point's composite-schedule engine (OCPP 1.6 smart charging rules), its checks on
SetChargingProfile, how connectors share a charge point, and the scripting types. No network here; the
simulator against the central system is in tests/integration/test_cpo_ocpp.py."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from service.cpo.simulator import (
    Behaviour,
    Car,
    InstalledProfile,
    ProfileAnswer,
    ProfileRefused,
    SchedulePeriod,
    SimClock,
    SimulatedChargePoint,
    clear,
    composite_schedule,
    install,
    limit_at,
    parse_profile,
    profile_limit,
    share,
)
from service.domain.errors import InvalidInput

T0 = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
CP_MAX, TX_DEFAULT, TX = "ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"


def p(
    purpose: str = CP_MAX,
    *limits: tuple[int, str],
    profile_id: int = 1,
    connector_id: int = 0,
    stack_level: int = 0,
    start: datetime | None = T0,
    **options: Any,
) -> InstalledProfile:
    """A profile with periods given as (start_period_s, limit) pairs; one 16 A period by default."""
    periods = tuple(SchedulePeriod(s, Decimal(limit)) for s, limit in (limits or ((0, "16"),)))
    return InstalledProfile(
        id=profile_id,
        connector_id=connector_id,
        purpose=purpose,
        stack_level=stack_level,
        periods=periods,
        start_schedule=start,
        **options,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- installing and clearing


def test_a_profile_with_the_same_id_or_the_same_purpose_and_stack_level_replaces_the_old_one() -> None:
    first = p(CP_MAX, (0, "10"), profile_id=1)
    other_level = p(CP_MAX, (0, "12"), profile_id=2, stack_level=1)
    installed = install(install([], first), other_level)
    assert installed == [first, other_level]

    same_id = p(TX_DEFAULT, (0, "8"), profile_id=1, connector_id=1)
    assert install(installed, same_id) == [other_level, same_id]

    same_slot = p(CP_MAX, (0, "9"), profile_id=7, stack_level=1)
    assert install(installed, same_slot) == [first, same_slot]

    other_connector = p(TX_DEFAULT, profile_id=3, connector_id=2)
    assert install([same_id], other_connector) == [same_id, other_connector]


def test_clear_removes_what_matches_every_given_filter() -> None:
    a = p(CP_MAX, profile_id=1)
    b = p(TX_DEFAULT, profile_id=2, connector_id=1)
    c = p(TX_DEFAULT, profile_id=3, connector_id=1, stack_level=2)
    d = p(TX_DEFAULT, profile_id=4, connector_id=2)
    installed = [a, b, c, d]
    assert clear(installed, purpose=TX_DEFAULT, connector_id=1) == ([a, d], 2)
    assert clear(installed, purpose=TX_DEFAULT, connector_id=1, stack_level=2) == ([a, b, d], 1)
    assert clear(installed, profile_id=1, purpose=TX_DEFAULT) == (installed, 0)
    assert clear(installed, profile_id=4) == ([a, b, c], 1)
    assert clear(installed) == ([], 4)


# -- one profile over time


def test_an_absolute_profile_follows_its_periods_from_start_schedule_until_its_duration() -> None:
    profile = p(CP_MAX, (0, "16"), (900, "10.5"), (1800, "0"), duration_s=2700)
    assert profile_limit(profile, at(-1)) is None  # not started
    assert profile_limit(profile, at(0)) == 16
    assert profile_limit(profile, at(899.9)) == 16
    assert profile_limit(profile, at(900)) == Decimal("10.5")
    assert profile_limit(profile, at(1800)) == 0
    assert profile_limit(profile, at(2699)) == 0
    assert profile_limit(profile, at(2700)) is None  # past its duration
    # without a duration the last period lasts for ever
    assert profile_limit(p(CP_MAX, (0, "16"), (900, "8")), at(10**7)) == 8


def test_valid_from_and_valid_to_bound_a_profile() -> None:
    profile = p(CP_MAX, valid_from=at(100), valid_to=at(200))
    assert [profile_limit(profile, at(s)) for s in (99, 100, 199, 200)] == [None, 16, 16, None]


def test_relative_and_recurring_profiles() -> None:
    relative = p(TX_DEFAULT, (0, "6"), (600, "16"), kind="Relative", start=None)
    assert profile_limit(relative, at(300), session_start=at(0)) == 6
    assert profile_limit(relative, at(900), session_start=at(0)) == 16
    assert profile_limit(relative, at(900)) == 6  # no session: it starts now

    daily = p(CP_MAX, (0, "10"), (3600, "20"), kind="Recurring", recurrency_kind="Daily", duration_s=7200)
    assert profile_limit(daily, at(86_400 * 3 + 60)) == 10
    assert profile_limit(daily, at(86_400 * 3 + 3600)) == 20
    assert profile_limit(daily, at(86_400 * 3 + 7200)) is None
    weekly = p(CP_MAX, (0, "10"), kind="Recurring", recurrency_kind="Weekly", duration_s=3600)
    assert profile_limit(weekly, at(86_400)) is None
    assert profile_limit(weekly, at(7 * 86_400 + 10)) == 10


# -- the composite


def test_the_composite_is_the_lower_of_charge_point_max_and_the_transaction_limit() -> None:
    installed = [p(CP_MAX, (0, "20"), profile_id=1), p(TX_DEFAULT, (0, "12"), profile_id=2, connector_id=1)]
    assert limit_at(installed, 1, at(0)) == 12
    assert limit_at(installed, 2, at(0)) == 20  # that TxDefaultProfile is on connector 1 only
    assert limit_at(installed, 0, at(0)) == 20
    assert limit_at([], 1, at(0)) is None


def test_a_tx_profile_beats_the_tx_default_profile_while_its_transaction_runs() -> None:
    installed = [
        p(TX_DEFAULT, (0, "8"), profile_id=1, connector_id=0),
        p(TX, (0, "14"), profile_id=2, connector_id=1, transaction_id=42),
    ]
    assert limit_at(installed, 1, at(0), transaction_id=42) == 14
    assert limit_at(installed, 1, at(0), transaction_id=43) == 8  # another transaction's profile
    assert limit_at(installed, 1, at(0)) == 8  # no transaction: no TxProfile
    assert limit_at(installed, 2, at(0), transaction_id=42) == 8  # the default on connector 0 covers all


def test_a_tx_default_profile_on_the_connector_overrides_the_one_on_connector_0() -> None:
    installed = [
        p(TX_DEFAULT, (0, "8"), profile_id=1, connector_id=0, stack_level=5),
        p(TX_DEFAULT, (0, "13"), profile_id=2, connector_id=1, stack_level=0),
    ]
    assert limit_at(installed, 1, at(0)) == 13
    assert limit_at(installed, 2, at(0)) == 8


def test_the_highest_stack_level_that_applies_wins() -> None:
    installed = [
        p(CP_MAX, (0, "20"), profile_id=1, stack_level=0),
        p(CP_MAX, (0, "10"), profile_id=2, stack_level=3, start=at(600), duration_s=600),
        p(CP_MAX, (0, "14"), profile_id=3, stack_level=1),
    ]
    assert limit_at(installed, 1, at(0)) == 14  # level 3 has not started: level 1 applies
    assert limit_at(installed, 1, at(600)) == 10
    assert limit_at(installed, 1, at(1200)) == 14  # level 3 has ended


def test_the_composite_schedule_has_a_period_wherever_the_limit_changes() -> None:
    installed = [
        p(CP_MAX, (0, "16"), (900, "10"), (1800, "16"), profile_id=1),
        p(TX_DEFAULT, (0, "12"), profile_id=2, connector_id=1, start=at(1200), duration_s=1200),
    ]
    periods = composite_schedule(installed, 1, at(300), 3600)
    # 10 A from 900 s; the TxDefaultProfile's 12 A from 1200 s matters once the 10 A ends at 1800 s; it ends
    # at 2400 s (all relative to T0; the composite counts from 300 s)
    assert periods == [(0, Decimal(16)), (600, Decimal(10)), (1500, Decimal(12)), (2100, Decimal(16))]
    # from a start between whole seconds, each change is reported at or just after it happens
    assert composite_schedule(installed, 1, at(299.5), 700)[1] == (601, Decimal(10))
    assert composite_schedule([], 1, at(0), 600) == [(0, None)]


# -- the charge point's checks and answers


def ocpp_profile(purpose: str = CP_MAX, limit: str = "10.5", **changes: Any) -> dict[str, Any]:
    """csChargingProfiles with snake_case keys, as the ocpp library hands it to a handler."""
    schedule = {
        "charging_rate_unit": "A",
        "start_schedule": "2026-03-29T12:00:00Z",
        "charging_schedule_period": [{"start_period": 0, "limit": Decimal(limit)}],
    }
    schedule.update(changes.pop("schedule", {}))
    return {
        "charging_profile_id": 1,
        "stack_level": 0,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Absolute",
        "charging_schedule": schedule,
        **changes,
    }


def test_parse_profile_reads_the_ocpp_object_and_refuses_what_a_charger_would() -> None:
    parsed = parse_profile(0, ocpp_profile(), at(5))
    assert parsed == InstalledProfile(1, 0, CP_MAX, 0, (SchedulePeriod(0, Decimal("10.5")),), start_schedule=T0)
    no_start = ocpp_profile(schedule={"start_schedule": None})
    assert parse_profile(0, no_start, at(5)).start_schedule == at(5)  # starts on arrival

    refused = {
        "in A only": ocpp_profile(schedule={"charging_rate_unit": "W"}),
        "start at 0": ocpp_profile(schedule={"charging_schedule_period": [{"start_period": 60, "limit": 6}]}),
        "increase": ocpp_profile(
            schedule={"charging_schedule_period": [{"start_period": 0, "limit": 6}, {"start_period": 0, "limit": 8}]}
        ),
        "no UTC offset": ocpp_profile(valid_from="2026-03-29T12:00:00"),
        "Recurring": ocpp_profile(charging_profile_kind="Recurring"),
        ">= 0": ocpp_profile(limit="-1"),
    }
    for expected, profile in refused.items():
        with pytest.raises(ProfileRefused, match=expected):
            parse_profile(0, profile, at(5))


def answer(cp: SimulatedChargePoint, connector_id: int, profile: dict[str, Any]) -> str:
    return str(cp.on_set_charging_profile(connector_id, profile).status)


def test_a_charge_point_rejects_profiles_that_break_the_rules() -> None:
    cp = SimulatedChargePoint("rules", connectors=2, max_periods=2, max_stack_level=3)
    assert answer(cp, 1, ocpp_profile(CP_MAX)) == "Rejected"  # connector 0 only
    assert answer(cp, 1, ocpp_profile(TX)) == "Rejected"  # no transaction running
    assert answer(cp, 3, ocpp_profile(TX_DEFAULT)) == "Rejected"  # no connector 3
    assert answer(cp, 0, ocpp_profile(stack_level=4)) == "Rejected"
    periods = [{"start_period": s, "limit": Decimal(6)} for s in (0, 60, 120)]
    assert answer(cp, 0, ocpp_profile(schedule={"charging_schedule_period": periods})) == "Rejected"
    assert answer(cp, 0, ocpp_profile(schedule={"charging_rate_unit": "W"})) == "Rejected"
    assert cp.installed == []
    assert len(cp.refusals) == 6
    assert answer(cp, 0, ocpp_profile(CP_MAX)) == "Accepted"
    assert answer(cp, 2, ocpp_profile(TX_DEFAULT, "8", charging_profile_id=2)) == "Accepted"
    assert [(i.connector_id, i.purpose) for i in cp.installed] == [(0, CP_MAX), (2, TX_DEFAULT)]
    assert cp.composite(2, 600)[0][1] == 8
    assert cp.composite(1, 600)[0][1] == Decimal("10.5")


def test_scripted_answers() -> None:
    assert answer(SimulatedChargePoint("r", behaviour=Behaviour(ProfileAnswer.REJECT)), 0, ocpp_profile()) == "Rejected"
    unsupported = SimulatedChargePoint("n", behaviour=Behaviour(ProfileAnswer.NOT_SUPPORTED))
    assert answer(unsupported, 0, ocpp_profile()) == "NotSupported"

    picky = SimulatedChargePoint("p", behaviour=Behaviour(rejected_purposes=frozenset({CP_MAX})))
    assert answer(picky, 0, ocpp_profile(CP_MAX)) == "Rejected"
    assert answer(picky, 1, ocpp_profile(TX_DEFAULT)) == "Accepted"

    ignores = SimulatedChargePoint("i", max_current_a=Decimal(16), behaviour=Behaviour(ProfileAnswer.IGNORE))
    assert answer(ignores, 0, ocpp_profile(CP_MAX, "6")) == "Accepted"
    assert ignores.installed == []
    assert ignores.composite(1, 3600) == [(0, Decimal(16))]
    assert ignores.composite(0, 3600) == [(0, Decimal(16))]


def test_get_composite_schedule_and_configuration_answers() -> None:
    cp = SimulatedChargePoint("answers", max_current_a=Decimal(32))
    assert answer(cp, 0, ocpp_profile(CP_MAX, "20.05")) == "Accepted"
    result = cp.on_get_composite_schedule(1, 900)
    assert result.status == "Accepted"
    assert result.charging_schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 20.0}]
    assert cp.on_get_composite_schedule(1, 900, "W").status == "Rejected"
    assert cp.on_get_composite_schedule(2, 900).status == "Rejected"

    configuration = cp.on_get_configuration(["ConnectorPhaseRotation", "Nonsense"])
    assert configuration.configuration_key == [
        {"key": "ConnectorPhaseRotation", "readonly": False, "value": "0.RST,1.RST"}
    ]
    assert configuration.unknown_key == ["Nonsense"]
    assert cp.on_change_configuration("ClockAlignedDataInterval", "900").status == "Accepted"
    assert cp.setting("ClockAlignedDataInterval") == "900"
    assert cp.on_change_configuration("ClockAlignedDataInterval", "soon").status == "Rejected"
    assert cp.on_change_configuration("MeterValuesAlignedData", "Current.Import,Voltage").status == "Rejected"
    assert cp.on_change_configuration("ChargingScheduleMaxPeriods", "5").status == "Rejected"  # read-only
    assert cp.on_change_configuration("NoSuchKey", "1").status == "NotSupported"


# -- sharing a charge point


def test_connectors_share_the_capacity_and_pause_below_6_a() -> None:
    assert share(Decimal(32), {1: Decimal(16)}) == {1: Decimal(16)}
    assert share(Decimal(32), {1: Decimal(32), 2: Decimal(32)}) == {1: Decimal(16), 2: Decimal(16)}
    assert share(Decimal(32), {1: Decimal(10), 2: Decimal(32)}) == {1: Decimal(10), 2: Decimal(22)}
    assert share(Decimal(32), {1: Decimal(0), 2: Decimal(32)}) == {1: Decimal(0), 2: Decimal(32)}
    # 10 A for two cars is 5 A each: the higher connector pauses and the other takes 10 A
    assert share(Decimal(10), {1: Decimal(16), 2: Decimal(16)}) == {1: Decimal(10), 2: Decimal(0)}
    assert share(Decimal(4), {1: Decimal(16)}) == {1: Decimal(0)}


# -- scripting types


def test_scripting_types_check_their_input() -> None:
    assert Behaviour("timeout").answer is ProfileAnswer.TIMEOUT  # type: ignore[arg-type]  # text from a command line
    with pytest.raises(InvalidInput, match="one of accept"):
        Behaviour("sulk")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown purposes"):
        Behaviour(rejected_purposes=frozenset({"MaxProfile"}))
    with pytest.raises(InvalidInput, match="1, 2 or 3 phases"):
        Car(phases=4)
    with pytest.raises(InvalidInput, match="max_current_a"):
        Car(max_current_a=Decimal(0))
    with pytest.raises(InvalidInput, match="not a valid id"):
        SimulatedChargePoint("no spaces")


def test_simulated_time_runs_at_its_speed() -> None:
    clock = SimClock(speed=1000, start=T0)
    time.sleep(0.01)
    assert clock.now() >= T0 + timedelta(seconds=10)
    assert clock.real_seconds(900) == pytest.approx(0.9)
    with pytest.raises(InvalidInput, match="speed"):
        SimClock(speed=0)
