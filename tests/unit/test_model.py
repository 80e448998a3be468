"""Validation of cables, CPOs, overrides and subscriptions (service.domain.model)."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from service.domain.errors import InvalidInput
from service.domain.model import Binding, Cable, Cpo, LimitOverride, Subscription
from service.domain.units import Unit

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


def cable(**changes: Any) -> Cable:
    fields: dict[str, Any] = {
        "id": "cable-1",
        "name": "Kerkstraat LS-3",
        "unit": "A",
        "rated_limit": Decimal(250),
        "phases": 3,
        "voltage_v": Decimal(230),
    }
    fields.update(changes)
    return Cable(**fields)


def cpo(**changes: Any) -> Cpo:
    fields: dict[str, Any] = {
        "id": "cpo-1",
        "name": "ChargeCo",
        "username": "chargeco",
        "endpoint_url": "https://cpo.example/oscp",
        "binding": "soap11",
    }
    fields.update(changes)
    return Cpo(**fields)


def override(start: datetime, end: datetime, limit: object, reason: str = "maintenance on joint 4") -> LimitOverride:
    return LimitOverride(start=start, end=end, limit=limit, reason=reason)  # type: ignore[arg-type]


BAD_IDS = ["", "-leading-dash", ".dot", "has space", "slash/inside", "x" * 65, "ümlaut", "semi;colon"]
GOOD_IDS = ["a", "cable-1", "CPO_2", "ean:871685900000000001", "x" * 64, "9.8-7_6:5"]


class TestCable:
    def test_valid_cable_is_normalised(self) -> None:
        c = cable(unit="KW", rated_limit="250.12345", margin=5, base_load="1.5", reserve_share="0.25", voltage_v=230)
        assert c.unit is Unit.KILOWATT
        assert c.rated_limit == Decimal("250.123")
        assert c.margin == Decimal("5.000")
        assert c.base_load == Decimal("1.500")
        assert c.reserve_share == Decimal("0.25")
        assert c.voltage_v == Decimal(230)
        assert isinstance(c.voltage_v, Decimal)

    @pytest.mark.parametrize("bad", BAD_IDS)
    def test_bad_id_rejected(self, bad: str) -> None:
        with pytest.raises(InvalidInput, match=r"^cable id .* is not a valid id"):
            cable(id=bad)

    @pytest.mark.parametrize("good", GOOD_IDS)
    def test_good_id_accepted(self, good: str) -> None:
        assert cable(id=good).id == good

    def test_non_string_id_rejected(self) -> None:
        with pytest.raises(InvalidInput, match="cable id"):
            cable(id=42)

    def test_id_with_trailing_newline_rejected(self) -> None:
        with pytest.raises(InvalidInput):
            cable(id="cable-1\n")

    @pytest.mark.parametrize("name", ["", "   "])
    def test_empty_name_rejected(self, name: str) -> None:
        with pytest.raises(InvalidInput, match="cable name must not be empty"):
            cable(name=name)

    @pytest.mark.parametrize("unit", ["W", "kw", "a", "amps", "", None])
    def test_bad_unit_rejected(self, unit: object) -> None:
        with pytest.raises(InvalidInput, match=r"^unit must be 'A' .* or 'KW'"):
            cable(unit=unit)

    @pytest.mark.parametrize("unit", ["A", "KW", Unit.AMPERE, Unit.KILOWATT])
    def test_good_unit_accepted(self, unit: object) -> None:
        assert cable(unit=unit).unit in (Unit.AMPERE, Unit.KILOWATT)

    @pytest.mark.parametrize("phases", [0, 4, -1, "3", 3.5])
    def test_bad_phases_rejected(self, phases: object) -> None:
        with pytest.raises(InvalidInput, match="phases must be 1, 2 or 3"):
            cable(phases=phases)

    @pytest.mark.parametrize("share", [Decimal("-0.1"), Decimal(1), Decimal("1.5"), "NaN", "Infinity", -1])
    def test_bad_reserve_share_rejected(self, share: object) -> None:
        with pytest.raises(InvalidInput, match=r"^reserve_share must be (in \[0, 1\)|a finite number)"):
            cable(reserve_share=share)

    @pytest.mark.parametrize("share", [0, "0", Decimal("0.1"), Decimal("0.999")])
    def test_good_reserve_share_accepted(self, share: object) -> None:
        assert cable(reserve_share=share).reserve_share == Decimal(str(share))

    @pytest.mark.parametrize("voltage", [0, -230, 1001, "NaN", "Infinity"])
    def test_bad_voltage_rejected(self, voltage: object) -> None:
        with pytest.raises(InvalidInput, match=r"voltage_v must be a (low-voltage phase voltage|finite number)"):
            cable(voltage_v=voltage)

    @pytest.mark.parametrize("field", ["voltage_v", "reserve_share"])
    def test_non_numeric_voltage_or_share_is_invalid_input(self, field: str) -> None:
        with pytest.raises(InvalidInput):
            cable(**{field: "abc"})

    @pytest.mark.parametrize("field", ["rated_limit", "margin", "base_load"])
    def test_negative_capacity_rejected_naming_the_field(self, field: str) -> None:
        with pytest.raises(InvalidInput, match=rf"^{field} must be >= 0"):
            cable(**{field: Decimal(-1)})

    def test_frozen(self) -> None:
        with pytest.raises(AttributeError):
            cable().rated_limit = Decimal(1)  # type: ignore[misc]


class TestCpo:
    def test_valid_cpo(self) -> None:
        c = cpo(binding="json", endpoint_url="http://10.0.0.5:8080/oscp/1.0")
        assert c.binding is Binding.JSON

    @pytest.mark.parametrize("bad", BAD_IDS)
    def test_bad_id_rejected(self, bad: str) -> None:
        with pytest.raises(InvalidInput, match=r"^cpo id .* is not a valid id"):
            cpo(id=bad)

    @pytest.mark.parametrize("name", ["", " \t"])
    def test_empty_name_rejected(self, name: str) -> None:
        with pytest.raises(InvalidInput, match="cpo name must not be empty"):
            cpo(name=name)

    @pytest.mark.parametrize("username", ["", "has space", "x" * 65, "colon:in", "slash/in"])
    def test_bad_username_rejected(self, username: str) -> None:
        with pytest.raises(InvalidInput, match="username must be"):
            cpo(username=username)

    @pytest.mark.parametrize("username", ["a", "ops@chargeco.example", "x" * 64, "a.b_c-d"])
    def test_good_username_accepted(self, username: str) -> None:
        assert cpo(username=username).username == username

    @pytest.mark.parametrize(
        "url",
        ["", "cpo.example/oscp", "ftp://cpo.example", "https://", "https:///path", "https:// space", "javascript:x"],
    )
    def test_bad_endpoint_url_rejected(self, url: str) -> None:
        with pytest.raises(InvalidInput, match="endpoint_url must be an http"):
            cpo(endpoint_url=url)

    @pytest.mark.parametrize("url", ["http://cpo.example", "https://cpo.example:8443/oscp/1.0/soap"])
    def test_good_endpoint_url_accepted(self, url: str) -> None:
        assert cpo(endpoint_url=url).endpoint_url == url

    @pytest.mark.parametrize("binding", ["soap", "SOAP11", "xml", "", None])
    def test_bad_binding_rejected(self, binding: object) -> None:
        with pytest.raises(InvalidInput, match="binding must be soap11, soap12 or json"):
            cpo(binding=binding)

    @pytest.mark.parametrize("binding", ["soap11", "soap12", "json", Binding.SOAP12])
    def test_good_binding_coerced(self, binding: object) -> None:
        assert isinstance(cpo(binding=binding).binding, Binding)


class TestLimitOverride:
    def test_valid_override_is_normalised_to_utc(self) -> None:
        plus_two = timezone(timedelta(hours=2))
        o = override(
            datetime(2026, 6, 1, 14, 0, tzinfo=plus_two), datetime(2026, 6, 1, 15, 0, tzinfo=plus_two), "80.0009"
        )
        assert o.start == T0
        assert o.end == T0 + 4 * Q
        assert o.limit == Decimal("80.000")

    @pytest.mark.parametrize("reason", ["", "   ", "\n"])
    def test_empty_reason_rejected(self, reason: str) -> None:
        with pytest.raises(InvalidInput, match=r"override\.reason must say why"):
            override(T0, T0 + Q, 80, reason)

    @pytest.mark.parametrize("end", [T0, T0 - Q])
    def test_end_not_after_start_rejected(self, end: datetime) -> None:
        with pytest.raises(InvalidInput, match=r"override\.end must be after override\.start"):
            override(T0, end, 80)

    def test_misaligned_start_rejected(self) -> None:
        with pytest.raises(InvalidInput, match=r"^override\.start .* is not on a quarter hour"):
            override(T0 + timedelta(minutes=5), T0 + Q, 80)

    def test_misaligned_end_rejected(self) -> None:
        with pytest.raises(InvalidInput, match=r"^override\.end .* is not on a quarter hour"):
            override(T0, T0 + timedelta(minutes=20), 80)

    def test_naive_start_rejected(self) -> None:
        with pytest.raises(InvalidInput, match=r"^override\.start has no UTC offset"):
            override(T0.replace(tzinfo=None), T0 + Q, 80)

    @pytest.mark.parametrize("limit", [-1, "NaN", "abc"])
    def test_bad_limit_rejected(self, limit: object) -> None:
        with pytest.raises(InvalidInput, match=r"override\.limit"):
            override(T0, T0 + Q, limit)

    def test_covers_is_half_open(self) -> None:
        o = override(T0, T0 + 2 * Q, 80)
        assert not o.covers(T0 - Q)
        assert o.covers(T0)
        assert o.covers(T0 + Q)
        assert not o.covers(T0 + 2 * Q)


class TestLimitAt:
    def test_rated_limit_without_overrides(self) -> None:
        assert cable(rated_limit=250).limit_at(T0) == Decimal(250)

    def test_rated_limit_outside_overrides(self) -> None:
        c = cable(rated_limit=250, overrides=(override(T0, T0 + 4 * Q, 80),))
        assert c.limit_at(T0 - Q) == Decimal(250)
        assert c.limit_at(T0 + 4 * Q) == Decimal(250)
        assert c.limit_at(T0) == Decimal(80)
        assert c.limit_at(T0 + 3 * Q) == Decimal(80)

    def test_lowest_covering_override_wins(self) -> None:
        c = cable(
            rated_limit=250,
            overrides=(
                override(T0, T0 + 8 * Q, 120, "summer derating"),
                override(T0 + 2 * Q, T0 + 4 * Q, 60, "maintenance on joint 4"),
                override(T0 + 3 * Q, T0 + 6 * Q, 90, "temporary feeder switch"),
            ),
        )
        assert [c.limit_at(T0 + i * Q) for i in range(9)] == [
            Decimal(v) for v in (120, 120, 60, 60, 90, 90, 120, 120, 250)
        ]

    def test_order_of_overrides_does_not_matter(self) -> None:
        a = override(T0, T0 + 4 * Q, 60)
        b = override(T0, T0 + 4 * Q, 40)
        assert cable(overrides=(a, b)).limit_at(T0) == cable(overrides=(b, a)).limit_at(T0) == Decimal(40)

    def test_override_may_raise_the_limit(self) -> None:
        winter = override(T0, T0 + 96 * Q, 300, "winter rating")
        c = cable(rated_limit=250, overrides=(winter,))
        assert c.limit_at(T0 + 10 * Q) == Decimal(300)
        assert c.limit_at(T0 - Q) == Decimal(250)

    def test_lower_override_inside_a_raising_one_wins(self) -> None:
        c = cable(
            rated_limit=250,
            overrides=(override(T0, T0 + 96 * Q, 300, "winter rating"), override(T0 + Q, T0 + 2 * Q, 100)),
        )
        assert (c.limit_at(T0), c.limit_at(T0 + Q), c.limit_at(T0 + 2 * Q)) == (
            Decimal(300),
            Decimal(100),
            Decimal(300),
        )


class TestSubscription:
    def test_valid_subscription_is_on_the_grid(self) -> None:
        s = Subscription(cable_id="cable-1", cpo_id="cpo-1", weight="1.5", guaranteed_minimum="10.0001")  # type: ignore[arg-type]
        assert s.weight == Decimal("1.500")
        assert s.guaranteed_minimum == Decimal("10.000")

    @pytest.mark.parametrize(("weight", "minimum"), [(-1, 0), (1, -1), ("NaN", 0), (1, "inf"), ("abc", 0)])
    def test_bad_numbers_rejected(self, weight: object, minimum: object) -> None:
        with pytest.raises(InvalidInput, match=r"^(weight|guaranteed_minimum) must"):
            Subscription(cable_id="cable-1", cpo_id="cpo-1", weight=weight, guaranteed_minimum=minimum)  # type: ignore[arg-type]

    def test_zero_weight_and_minimum_allowed(self) -> None:
        s = Subscription(cable_id="cable-1", cpo_id="cpo-1", weight=Decimal(0), guaranteed_minimum=Decimal(0))
        assert (s.weight, s.guaranteed_minimum) == (Decimal(0), Decimal(0))

    @pytest.mark.parametrize("field", ["cable_id", "cpo_id"])
    def test_bad_ids_rejected(self, field: str) -> None:
        fields: dict[str, Any] = {"cable_id": "cable-1", "cpo_id": "cpo-1", "weight": 1, "guaranteed_minimum": 0}
        fields[field] = "has space"
        with pytest.raises(InvalidInput):
            Subscription(**fields)
