"""What goes over the wire: marshmallow schemas that parse requests and document responses.

Parsing checks types and shapes only; the rules (aligned blocks, non-negative capacities, ...)
are the domain's, which raises InvalidInput with a message saying what to fix.
Datetimes must carry a UTC offset and are sent back in UTC; quantities are accepted as JSON
numbers or strings and sent back as JSON numbers.
"""

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from service.domain.blocks import FIRST_YEAR, LAST_YEAR
from service.domain.model import MAX_ENDPOINT_URL, MAX_NAME, MAX_REASON, MAX_USERNAME, Binding
from service.domain.units import MAX_QUANTITY, Unit
from service.usecases.cpos import MAX_PASSWORD_LENGTH

_SPACE_FOR_PLUS = re.compile(r"^(\S+T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$")


def utc_iso(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, e.g. 2026-03-29T16:00:00Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Moment(fields.AwareDateTime):
    """An RFC 3339 date-time with a UTC offset; naive input is rejected, output is UTC."""

    default_error_messages = {  # noqa: RUF012  (marshmallow merges these along the class tree)
        "invalid": "is not a date-time with offset such as 2026-03-29T18:00:00+02:00 or 2026-03-29T16:00:00Z",
        "invalid_awareness": (
            "has no UTC offset, so its meaning would depend on a server's time zone; "
            "add one, e.g. 2026-03-29T18:00:00+02:00 or 2026-03-29T16:00:00Z"
        ),
        "out_of_range": (
            "is {value}, outside the years {first} to {last} (UTC) that gridcap handles; send a date-time within them"
        ),
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {}).setdefault("example", "2026-03-29T18:00:00+02:00")
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if isinstance(value, str):
            # An unencoded '+' in a query string arrives as a space: 2026-03-29T18:00:00 02:00.
            value = _SPACE_FOR_PLUS.sub(r"\1+\2", value.strip())
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            year = moment.astimezone(UTC).year
        except OverflowError:  # e.g. 9999-12-31T23:45:00-01:00 is in the year 10000 in UTC
            year = None
        if year is None or not FIRST_YEAR <= year <= LAST_YEAR:
            raise self.make_error("out_of_range", value=moment.isoformat(), first=FIRST_YEAR, last=LAST_YEAR)
        return moment

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else utc_iso(value)


class Number(fields.Decimal):
    """A decimal quantity: a JSON number or a numeric string in, a JSON number out."""

    default_error_messages = {  # noqa: RUF012
        "invalid": "must be a number such as 12.5 (or the string '12.5')",
        "special": "must be a finite number (NaN and Infinity are not quantities)",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("validate", validate.Range(max=MAX_QUANTITY, error="must be at most {max}"))
        super().__init__(**kwargs)

    def _serialize(self, value: Decimal | None, attr: str | None, obj: Any, **kwargs: Any) -> float | None:  # type: ignore[override]
        return None if value is None else float(value)


class Strict(ma.Schema):
    """Unknown fields are rejected, and the error lists the fields the object accepts."""

    class Meta:
        unknown = ma.RAISE

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        accepted = sorted(f.data_key or name for name, f in self.load_fields.items())
        self.error_messages = {
            **self.error_messages,
            "unknown": f"unknown field; accepted here: {', '.join(accepted) or 'nothing'}",
        }


def storable(text: str) -> None:
    """Refuse text no database column can store: NUL characters and lone UTF-16 surrogates."""
    if "\x00" in text:
        raise ma.ValidationError("contains a NUL character (\\u0000), which cannot be stored; remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ma.ValidationError(
            f"contains a lone UTF-16 surrogate (\\u{ord(text[exc.start]):04x}) at position {exc.start}, "
            "which is not a character; send valid Unicode (a surrogate needs its pair)"
        ) from None


def text(max_length: int | None = None, **kwargs: Any) -> fields.String:
    """A string that fits its database column: at most `max_length` characters, storable."""
    checks: list[Any] = [storable]
    if max_length is not None:
        checks.insert(0, validate.Length(max=max_length, error="must be at most {max} characters long"))
    return fields.String(validate=checks, **kwargs)


def _id(description: str) -> fields.String:
    return text(required=True, metadata={"description": description, "example": "ls-kerkstraat-3"})


# --- cables and overrides -----------------------------------------------------------------------


class OverrideSchema(Strict):
    id = fields.Integer(dump_only=True)
    start = Moment(required=True, metadata={"description": "first block of the override (on a quarter hour)"})
    end = Moment(required=True, metadata={"description": "end of the last block (exclusive)"})
    limit = Number(required=True, metadata={"description": "the limit in this window, in the cable's unit"})
    reason = text(MAX_REASON, required=True, metadata={"example": "maintenance on joint 4"})


class CableSchema(Strict):
    id = _id("1-64 letters, digits, '.', '_', ':' or '-'")
    name = text(MAX_NAME, required=True)
    unit = fields.String(
        required=True,
        validate=validate.OneOf([u.value for u in Unit]),
        metadata={"description": "A: current per phase; KW: total power over all phases"},
    )
    rated_limit = Number(required=True)
    phases = fields.Integer(required=True, strict=True, metadata={"description": "1, 2 or 3"})
    voltage_v = Number(required=True, metadata={"description": "phase voltage, e.g. 230"})
    margin = Number(metadata={"description": "capacity never handed out (default 0)"})
    reserve_share = Number(metadata={"description": "share of available capacity kept back, in [0, 1) (0.1)"})
    base_load = Number(metadata={"description": "static non-EV load, in the cable's unit (default 0)"})
    overrides = fields.List(fields.Nested(OverrideSchema), dump_only=True)


class CablePatchSchema(Strict):
    """The fields to change; the rest stay. Changing `unit` is refused (409)."""

    name = text(MAX_NAME)
    unit = fields.String(validate=validate.OneOf([u.value for u in Unit]))
    rated_limit = Number()
    phases = fields.Integer(strict=True)
    voltage_v = Number()
    margin = Number()
    reserve_share = Number()
    base_load = Number()


# --- CPOs and subscriptions ---------------------------------------------------------------------


class CpoSchema(Strict):
    id = _id("1-64 letters, digits, '.', '_', ':' or '-'")
    name = text(MAX_NAME, required=True)
    username = text(MAX_USERNAME, required=True, metadata={"description": "the CPO's login for OSCP"})
    password = text(
        MAX_PASSWORD_LENGTH,
        required=True,
        load_only=True,
        metadata={"description": f"12 to {MAX_PASSWORD_LENGTH} characters; never returned"},
    )
    endpoint_url = text(MAX_ENDPOINT_URL, required=True, metadata={"example": "https://cpo.example/oscp"})
    binding = fields.String(required=True, validate=validate.OneOf([b.value for b in Binding]))


class CpoPatchSchema(Strict):
    """The fields to change; the rest stay."""

    name = text(MAX_NAME)
    username = text(MAX_USERNAME)
    password = text(MAX_PASSWORD_LENGTH, load_only=True)
    endpoint_url = text(MAX_ENDPOINT_URL)
    binding = fields.String(validate=validate.OneOf([b.value for b in Binding]))


class SubscriptionSchema(Strict):
    cable_id = fields.String(dump_only=True)
    cpo_id = _id("a CPO created with POST /api/v1/cpos")
    weight = Number(required=True, metadata={"description": "share of the capacity above the minimums"})
    guaranteed_minimum = Number(required=True, metadata={"description": "budget the CPO always gets"})


class SubscriptionPatchSchema(Strict):
    weight = Number()
    guaranteed_minimum = Number()


# --- capacity -----------------------------------------------------------------------------------


class CapacityQuerySchema(Strict):
    start = Moment(metadata={"description": "first block (default: the current block)"})
    end = Moment(metadata={"description": "end of the last block, exclusive (default: the horizon's end)"})


class BlockViewSchema(ma.Schema):
    start = Moment()
    end = Moment()
    limit = Number()
    base_load = Number()
    margin = Number()
    available = Number(metadata={"description": "limit - base_load - margin, at least 0"})
    unallocated = Number(metadata={"description": "available minus the sum of budgets"})
    budgets = fields.Dict(keys=fields.String(), values=Number(), metadata={"description": "CPO id -> budget"})
    handed_out = fields.Boolean(metadata={"description": "false for blocks the service never handed out"})


class CapacityViewSchema(ma.Schema):
    cable_id = fields.String()
    unit = fields.String()
    blocks = fields.List(fields.Nested(BlockViewSchema))


class _Block(Strict):
    start = Moment(required=True)
    end = Moment(required=True, metadata={"description": "start + 15 minutes"})


class RequestBlockSchema(_Block):
    capacity = Number(required=True, metadata={"description": "the budget wanted; below the current one hands back"})


class CapacityRequestSchema(Strict):
    cpo_id = _id("the CPO asking")
    blocks = fields.List(fields.Nested(RequestBlockSchema), required=True)


class BudgetBlockSchema(ma.Schema):
    start = Moment()
    end = Moment()
    budget = Number()


class RequestDecisionSchema(ma.Schema):
    decision_id = fields.Integer(metadata={"description": "see GET /api/v1/audit/decisions"})
    status = fields.String(validate=validate.OneOf(["Accepted", "PartiallyAccepted", "Rejected"]))
    blocks = fields.List(fields.Nested(BudgetBlockSchema))


class UsageBlockSchema(_Block):
    average_usage = Number(required=True, metadata={"description": "measured average EV load in the block"})


class UsageReportSchema(Strict):
    cpo_id = _id("the CPO reporting")
    blocks = fields.List(fields.Nested(UsageBlockSchema), required=True)


class UsageReceiptSchema(ma.Schema):
    decision_id = fields.Integer()


# --- audit and health ---------------------------------------------------------------------------


class AuditQuerySchema(Strict):
    cable_id = text(data_key="cable", metadata={"description": "only this cable"})
    cpo_id = text(data_key="cpo", metadata={"description": "only this CPO"})
    since = Moment(metadata={"description": "only entries at or after this moment"})
    limit = fields.Integer(metadata={"description": "at most this many, oldest first (1-10000, default 1000)"})


class LedgerEntrySchema(ma.Schema):
    id = fields.Integer()
    at = Moment()
    decision_id = fields.Integer()
    actor = fields.String()
    action = fields.String()
    cable_id = fields.String()
    cpo_id = fields.String()
    start = Moment()
    end = Moment()
    old_capacity = Number()
    new_capacity = Number()
    reason = fields.String()
    severity = fields.String()


class LedgerSchema(ma.Schema):
    entries = fields.List(fields.Nested(LedgerEntrySchema))


class DecisionSchema(ma.Schema):
    id = fields.Integer()
    at = Moment()
    actor = fields.String()
    action = fields.String()
    cable_id = fields.String(allow_none=True)
    cpo_id = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    severity = fields.String()
    message = fields.String()


class DecisionsSchema(ma.Schema):
    decisions = fields.List(fields.Nested(DecisionSchema))


class HealthSchema(ma.Schema):
    status = fields.String(metadata={"example": "ok"})
    database = fields.String(metadata={"example": "ok"})


class PresenceSchema(ma.Schema):
    cpo_id = fields.String()
    last_seen_at = Moment(allow_none=True, metadata={"description": "last call in, or answer to a call out"})
    online = fields.Boolean(metadata={"description": "heard from within three heartbeat intervals"})


class PresenceListSchema(ma.Schema):
    cpos = fields.List(fields.Nested(PresenceSchema))


class OutboxEntrySchema(ma.Schema):
    cpo_id = fields.String()
    depth = fields.Integer(
        metadata={"description": "undelivered pushes (one per transaction that changed its budgets on a cable)"}
    )
    oldest = Moment(metadata={"description": "when the oldest undelivered push was owed"})
    attempts = fields.Integer()
    next_attempt_at = Moment(
        metadata={"description": "when the CPO is next tried: its retry time after a failure, else at once"}
    )
    last_error = fields.String(allow_none=True)


class OutboxSchema(ma.Schema):
    cpos = fields.List(fields.Nested(OutboxEntrySchema))


class MessageQuerySchema(Strict):
    cpo_id = text(data_key="cpo", metadata={"description": "only this CPO"})
    since_id = fields.Integer(validate=validate.Range(min=0), metadata={"description": "only records after this id"})
    limit = fields.Integer(metadata={"description": "at most this many, oldest first (1-1000, default 100)"})


class MessageSchema(ma.Schema):
    id = fields.Integer()
    at = Moment()
    direction = fields.String(metadata={"description": "in (a CPO called) or out (the DSO called)"})
    cpo_id = fields.String(allow_none=True)
    binding = fields.String()
    operation = fields.String()
    outcome = fields.String(metadata={"description": "ok, a FaultCode, Rejected, or Unreachable"})
    http_status = fields.Integer(allow_none=True)
    duration_ms = fields.Float()
    detail = fields.String(allow_none=True)


class MessagesSchema(ma.Schema):
    messages = fields.List(fields.Nested(MessageSchema))


class MessageCountSchema(ma.Schema):
    direction = fields.String()
    operation = fields.String()
    outcome = fields.String()
    count = fields.Integer()


class MessageCountsSchema(ma.Schema):
    counts = fields.List(fields.Nested(MessageCountSchema))


class ForecastBlockSchema(ma.Schema):
    start = Moment()
    end = Moment()
    base_load = Number(metadata={"description": "what allocation subtracts from the limit (with the cable's margin)"})
    source = fields.String(
        metadata={
            "description": "forecast: P50 + recalibrated margin; historical_peak: no forecast covers the block; "
            "static: the cable was never forecast",
            "enum": ["forecast", "historical_peak", "static"],
        }
    )
    p50 = Number(allow_none=True)
    lower = Number(allow_none=True)
    upper = Number(allow_none=True, metadata={"description": "P50 plus the margin recalibrated on recent errors"})


class ForecastViewSchema(ma.Schema):
    cable_id = fields.String()
    unit = fields.String()
    status = fields.String(metadata={"description": "the last refresh: ok, failed, or never"})
    message = fields.String(metadata={"description": "what the last refresh did or why it failed"})
    attempted_at = Moment(allow_none=True)
    issued_at = Moment(allow_none=True, metadata={"description": "issue time of the forecast in use"})
    model = fields.String(allow_none=True, metadata={"example": "gbm"})
    peak = Number(allow_none=True, metadata={"description": "historical peak base load: the fallback"})
    quality = fields.Dict(allow_none=True, metadata={"description": "the data-quality report of the last refresh"})
    blocks = fields.List(fields.Nested(ForecastBlockSchema))


class ForecastMetricsSchema(ma.Schema):
    computed_at = Moment()
    metrics = fields.Dict(
        metadata={
            "description": "the last day-ahead backtest: model, mae, rmae, pinball, coverage, overload_rate, "
            "utilisation, the same for each baseline under baselines, and the period (from, to)"
        }
    )
