"""The database schema (SQLAlchemy 2). Quantities are exact; datetimes are UTC and tz-aware."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from service.domain.units import GRID


class UtcDateTime(TypeDecorator[datetime]):
    """timestamptz on PostgreSQL; on SQLite (no time zones) naive UTC. Naive input is a bug."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} reached the database layer")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Quantity(TypeDecorator[Decimal]):
    """A capacity on the 0.001 grid: numeric(14,3) on PostgreSQL, integer thousandths on SQLite
    (whose REAL would round it)."""

    impl = Numeric(14, 3)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(14, 3, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return int(value.scaleb(3)) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(value).scaleb(-3)  # thousandths: exponent -3 already, on the grid
        return Decimal(value).quantize(GRID)


class Base(DeclarativeBase):
    pass


class CableRow(Base):
    __tablename__ = "cables"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    unit: Mapped[str] = mapped_column(String(2))
    rated_limit: Mapped[Decimal] = mapped_column(Quantity)
    phases: Mapped[int] = mapped_column(Integer)
    voltage_v: Mapped[Decimal] = mapped_column(Numeric(8, 2))
    margin: Mapped[Decimal] = mapped_column(Quantity)
    reserve_share: Mapped[Decimal] = mapped_column(Numeric(5, 4))
    base_load: Mapped[Decimal] = mapped_column(Quantity)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LimitOverrideRow(Base):
    __tablename__ = "limit_overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cable_id: Mapped[str] = mapped_column(ForeignKey("cables.id"), index=True)
    start: Mapped[datetime] = mapped_column(UtcDateTime)
    end: Mapped[datetime] = mapped_column(UtcDateTime)
    limit: Mapped[Decimal] = mapped_column(Quantity)
    reason: Mapped[str] = mapped_column(Text)


class CpoRow(Base):
    __tablename__ = "cpos"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    endpoint_url: Mapped[str] = mapped_column(String(2000))
    binding: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SubscriptionRow(Base):
    __tablename__ = "subscriptions"

    cable_id: Mapped[str] = mapped_column(ForeignKey("cables.id"), primary_key=True)
    cpo_id: Mapped[str] = mapped_column(ForeignKey("cpos.id"), primary_key=True, index=True)
    weight: Mapped[Decimal] = mapped_column(Quantity)
    guaranteed_minimum: Mapped[Decimal] = mapped_column(Quantity)


class BlockRow(Base):
    """A block that has been handed out, with what limited it at the last decision."""

    __tablename__ = "blocks"

    cable_id: Mapped[str] = mapped_column(ForeignKey("cables.id"), primary_key=True)
    start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    limit: Mapped[Decimal] = mapped_column(Quantity)
    base_load: Mapped[Decimal] = mapped_column(Quantity)
    margin: Mapped[Decimal] = mapped_column(Quantity)


class BudgetRow(Base):
    __tablename__ = "budgets"

    cable_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    cpo_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    capacity: Mapped[Decimal] = mapped_column(Quantity)
    # The last budget the CPO confirmed for this block (push Accepted, or its own request); None:
    # never confirmed. While it exceeds `capacity`, the difference is held for the CPO.
    told: Mapped[Decimal | None] = mapped_column(Quantity, nullable=True)
    reduced_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # when capacity fell below told


class PendingRequestRow(Base):
    __tablename__ = "pending_requests"

    cable_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    cpo_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[Decimal] = mapped_column(Quantity)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)


class UsageRow(Base):
    """Average measured usage a CPO reported for a block on a cable."""

    __tablename__ = "usage_reports"

    cable_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cpo_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    average_usage: Mapped[Decimal] = mapped_column(Quantity)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DecisionRow(Base):
    """One audited decision: who did what and why. Its budget changes are in the ledger."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    cable_id: Mapped[str | None] = mapped_column(String(64), index=True)
    cpo_id: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str | None] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class LedgerRow(Base):
    __tablename__ = "ledger"
    __table_args__ = (Index("ix_ledger_cable_cpo", "cable_id", "cpo_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    cable_id: Mapped[str] = mapped_column(String(64))
    cpo_id: Mapped[str] = mapped_column(String(64))
    start: Mapped[datetime] = mapped_column(UtcDateTime)
    old_capacity: Mapped[Decimal] = mapped_column(Quantity)
    new_capacity: Mapped[Decimal] = mapped_column(Quantity)
    reason: Mapped[str] = mapped_column(String(32))


class OutboxRow(Base):
    """A push owed to a CPO: its budgets on a cable changed. Delivered in id order per CPO."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_cpo_pending", "cpo_id", "delivered_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cpo_id: Mapped[str] = mapped_column(String(64))
    cable_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class PresenceRow(Base):
    """When a CPO was last heard from: any authenticated call in, or any call out it answered."""

    __tablename__ = "cpo_presence"

    cpo_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OscpMessageRow(Base):
    """Every OSCP message in or out: when, with whom, what, how it ended and how long it took."""

    __tablename__ = "oscp_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    cpo_id: Mapped[str | None] = mapped_column(String(64), index=True)
    binding: Mapped[str] = mapped_column(String(8))
    operation: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))  # ok, a FaultCode, or a transport failure
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_ms: Mapped[float] = mapped_column(Float)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class BaseLoadForecastRow(Base):
    """The newest forecast of a cable's base load for a block. `upper` (P50 plus the recalibrated
    margin) is what allocation subtracts from the limit; a row outlives a failed refresh."""

    __tablename__ = "base_load_forecasts"

    cable_id: Mapped[str] = mapped_column(ForeignKey("cables.id"), primary_key=True)
    start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    model: Mapped[str] = mapped_column(String(32))
    p50: Mapped[Decimal] = mapped_column(Quantity)
    lower: Mapped[Decimal] = mapped_column(Quantity)
    upper: Mapped[Decimal] = mapped_column(Quantity)


class ForecastRunRow(Base):
    """How the last forecast refresh of a cable went, and what to fall back on when none covers a block."""

    __tablename__ = "forecast_runs"

    cable_id: Mapped[str] = mapped_column(ForeignKey("cables.id"), primary_key=True)
    attempted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16))  # ok | failed
    message: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # of the last good forecast
    model: Mapped[str | None] = mapped_column(String(32), nullable=True)
    peak: Mapped[Decimal | None] = mapped_column(Quantity, nullable=True)  # historical peak base load
    quality: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: the last data-quality report
    metrics: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: the last backtest's metrics
    metrics_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class LeaseRow(Base):
    """A named lease one process holds until it expires, e.g. the right to run the scheduler's jobs."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
