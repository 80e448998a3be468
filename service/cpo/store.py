"""The CPO adapter's own database: charge points, budgets received, transactions, the usage outbox (the
disk buffer of usage reports, replayed in order), profiles sent, and a little key-value state.

SQLAlchemy 2 Core with its own MetaData; the tables are created on open. SQLite by default (WAL, a busy
timeout and BEGIN IMMEDIATE for writes, as the DSO store does), any SQLAlchemy URL otherwise.
Every write is one transaction; input is checked before it starts, so bad input writes nothing.
Decimals are stored as text (exact); datetimes are stored as UTC and come back tz-aware.
"""

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Connection,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.exc import IntegrityError

from service.cpo.profiles import ChargePoint, Key
from service.domain.blocks import aligned, as_utc
from service.domain.errors import Conflict, InvalidInput, NotFound
from service.domain.model import check_id
from service.domain.units import Unit, to_capacity
from service.security import hash_password, same_secret, verify_password
from service.store.engine import _READ_ONLY, make_engine
from service.store.tables import UtcDateTime

DEFAULT_URL = "sqlite:///var/cpo.sqlite"
BUDGET_RETENTION = timedelta(days=1)
MAX_ID_TAG = 20  # OCPP 1.6 IdToken is CiString20
MAX_METER_WH = 2**53  # far beyond a charge point's register; keeps JSON readers exact


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal as its exact text (no float, no fixed scale)."""

    impl = String(48)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"{value!r} is not a finite Decimal")
        return str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


@cache
def _dummy_hash() -> str:
    """Checked for unknown charge points, so that they cost the same time as known ones."""
    return hash_password("no charge point has this password")


metadata = MetaData()

charge_points = Table(
    "charge_points",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("cable_id", String(64), nullable=False, index=True),
    Column("max_current_a", ExactDecimal, nullable=False),
    Column("phases", Integer, nullable=False),
    Column("voltage_v", ExactDecimal, nullable=False),
    Column("connectors", Integer, nullable=False),
    Column("protection_a", ExactDecimal),
    Column("connector_max_current_a", ExactDecimal),
    Column("username", String(64)),
    Column("password_hash", String(300)),  # scrypt, service.security; None: no password set
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

budgets = Table(
    "budgets",
    metadata,
    Column("cable_id", String(64), primary_key=True),
    Column("start", UtcDateTime, primary_key=True),
    Column("capacity", ExactDecimal, nullable=False),
    Column("unit", String(2), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

backups = Table(
    "backups",
    metadata,
    Column("cable_id", String(64), primary_key=True),
    Column("capacity", ExactDecimal, nullable=False),
    Column("unit", String(2), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

transactions = Table(
    "transactions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("charge_point_id", String(64), nullable=False),
    Column("connector_id", Integer, nullable=False),
    Column("id_tag", String(MAX_ID_TAG), nullable=False),
    Column("meter_start_wh", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("meter_stop_wh", Integer),
    Column("stopped_at", UtcDateTime),
    Column("reason", String(64)),
    Index("ix_transactions_open", "stopped_at", "charge_point_id"),
    sqlite_autoincrement=True,  # an id is never used twice, not even after deleting the newest row
)

usage_outbox = Table(
    "usage_outbox",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("cable_id", String(64), nullable=False),
    Column("block_start", UtcDateTime, nullable=False),
    Column("value", ExactDecimal, nullable=False),
    Column("unit", String(2), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    UniqueConstraint("cable_id", "block_start", name="uq_usage_outbox_block"),
    Index("ix_usage_outbox_pending", "sent_at", "seq"),
    sqlite_autoincrement=True,
)

profiles = Table(
    "profiles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("charge_point_id", String(64), nullable=False),
    Column("connector_id", Integer, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("stack_level", Integer, nullable=False),
    Column("charging_profile_id", Integer),
    Column("transaction_id", Integer),
    Column("sent_at", UtcDateTime, nullable=False),
    Column("status", String(32), nullable=False),
    Column("schedule", Text, nullable=False),  # JSON; decimals as exact numbers
    Column("detail", Text),
    Index("ix_profiles_key", "charge_point_id", "connector_id", "id"),
    sqlite_autoincrement=True,
)

adapter_state = Table(
    "adapter_state",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True, slots=True)
class ChargePointRecord:
    charge_point: ChargePoint
    username: str | None
    has_password: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredBudget:
    cable_id: str
    start: datetime
    capacity: Decimal
    unit: Unit
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Backup:
    cable_id: str
    capacity: Decimal
    unit: Unit
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Transaction:
    id: int
    charge_point_id: str
    connector_id: int
    id_tag: str
    meter_start_wh: int
    started_at: datetime
    meter_stop_wh: int | None
    stopped_at: datetime | None
    reason: str | None

    @property
    def is_open(self) -> bool:
        return self.stopped_at is None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    cable_id: str
    block_start: datetime
    value: Decimal
    unit: Unit
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    id: int
    charge_point_id: str
    connector_id: int
    purpose: str
    stack_level: int
    charging_profile_id: int | None
    transaction_id: int | None
    schedule: dict[str, Any]
    status: str
    detail: str | None
    sent_at: datetime


Enqueued = Literal["queued", "replaced", "unchanged", "already sent"]


# ---------------------------------------------------------------------------------------------
# checks (all before a transaction starts)


def _non_negative_int(value: object, field_name: str, maximum: int = MAX_METER_WH) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidInput(f"{field_name} must be a whole number in [0, {maximum}], got {value!r}")
    return value


def _connector_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 99:
        raise InvalidInput(f"connector_id must be 0-99 (0 is the whole charge point), got {value!r}")
    return value


def _text(value: object, field_name: str, max_length: int, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > max_length or (not empty and not value):
        raise InvalidInput(f"{field_name} must be text of 1-{max_length} characters, got {value!r}")
    return value


def _unit(value: object) -> Unit:
    try:
        return Unit(str(value))
    except ValueError:
        raise InvalidInput(f"unit must be 'A' or 'KW', got {value!r}") from None


def _credentials(username: str | None, password: str | None) -> tuple[str | None, str | None]:
    if password is None:
        if username is not None:
            raise InvalidInput("a username needs a password; give both or neither")
        return None, None
    _text(password, "password", 256)
    if len(password) < 8:
        raise InvalidInput("password must have at least 8 characters")
    # OCPP-J Basic auth: the username is the charge point identity unless configured otherwise
    return (None if username is None else _text(username, "username", 64)), password


def _to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        # float's shortest repr writes back the same digits for up to 15 significant digits, and the
        # reader parses them as Decimal again: exact for limits on the 0.1 A grid
        if not value.is_finite() or len(value.as_tuple().digits) > 15:
            raise InvalidInput(f"a schedule value must be a finite number of at most 15 digits, got {value}")
        return float(value)
    if isinstance(value, datetime):
        return as_utc(value, "schedule time").isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _schedule_json(schedule: Mapping[str, Any]) -> str:
    if not isinstance(schedule, Mapping):
        raise InvalidInput(f"schedule must be an object, got {type(schedule).__name__}")
    try:
        return json.dumps(schedule, default=_to_json, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"schedule cannot be stored as JSON: {error}") from None


# ---------------------------------------------------------------------------------------------
# the store


class CpoStore:
    """The adapter's database. Thread-safe: writers of this process queue on a lock (SQLite has one
    writer at a time); writers in other processes wait in BEGIN IMMEDIATE."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        allow_open_charge_points: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`allow_open_charge_points`: a charge point without a password may connect without credentials.
        Off by default: then a charge point needs a password to be admitted."""
        parsed = make_url(url)
        sqlite = parsed.get_backend_name() == "sqlite"
        if sqlite:
            if not parsed.database or parsed.database == ":memory:":
                # each pooled connection would get its own empty database
                raise InvalidInput(f"the CPO store needs a SQLite file, e.g. {DEFAULT_URL}; got {url}")
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.allow_open_charge_points = allow_open_charge_points
        self._clock = clock
        self.engine = make_engine(url)
        self._reader = self.engine.execution_options(**{_READ_ONLY: True})
        self._writer: AbstractContextManager[Any] = threading.Lock() if sqlite else nullcontext()
        with self._write() as connection:
            metadata.create_all(connection)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "CpoStore":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _now(self) -> datetime:
        return as_utc(self._clock(), "clock")

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._writer, self.engine.begin() as connection:
                yield connection
        except IntegrityError:
            raise Conflict("the change clashes with the stored data (a duplicate?); reload and retry") from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._reader.connect() as connection, connection.begin():
            yield connection

    # -- charge points -------------------------------------------------------------------------

    def add_charge_point(
        self, charge_point: ChargePoint, *, username: str | None = None, password: str | None = None
    ) -> ChargePointRecord:
        """Register a charge point; refuses an id that exists (Conflict). The password is kept as a
        scrypt hash; without one the charge point is admitted only if the store allows open ones."""
        if not isinstance(charge_point, ChargePoint):
            raise InvalidInput("add_charge_point takes a ChargePoint")
        username, password = _credentials(username, password)
        password_hash = None if password is None else hash_password(password)
        now = self._now()
        with self._write() as c:
            if c.execute(select(charge_points.c.id).where(charge_points.c.id == charge_point.id)).first():
                raise Conflict(f"charge point {charge_point.id} exists; update it or pick another id")
            c.execute(
                insert(charge_points).values(
                    **point_values(charge_point),
                    username=username,
                    password_hash=password_hash,
                    created_at=now,
                    updated_at=now,
                )
            )
        return ChargePointRecord(charge_point, username, password_hash is not None, now, now)

    def update_charge_point(self, charge_point: ChargePoint) -> ChargePointRecord:
        """Change a charge point's cable and ratings; its credentials stay."""
        if not isinstance(charge_point, ChargePoint):
            raise InvalidInput("update_charge_point takes a ChargePoint")
        with self._write() as c:
            done = c.execute(
                update(charge_points)
                .where(charge_points.c.id == charge_point.id)
                .values(**point_values(charge_point), updated_at=self._now())
            )
            if done.rowcount != 1:
                raise NotFound(f"charge point {charge_point.id} is not registered; add it first")
        return self._charge_point(charge_point.id)

    def set_credentials(self, charge_point_id: str, *, username: str | None, password: str | None) -> None:
        """Set (or, with both None, remove) a charge point's OCPP Basic credentials."""
        username, password = _credentials(username, password)
        password_hash = None if password is None else hash_password(password)
        with self._write() as c:
            done = c.execute(
                update(charge_points)
                .where(charge_points.c.id == charge_point_id)
                .values(username=username, password_hash=password_hash, updated_at=self._now())
            )
            if done.rowcount != 1:
                raise NotFound(f"charge point {charge_point_id} is not registered")

    def remove_charge_point(self, charge_point_id: str) -> None:
        with self._write() as c:
            if c.execute(delete(charge_points).where(charge_points.c.id == charge_point_id)).rowcount != 1:
                raise NotFound(f"charge point {charge_point_id} is not registered")

    def get_charge_point(self, charge_point_id: str) -> ChargePointRecord | None:
        with self._read() as c:
            row = c.execute(select(charge_points).where(charge_points.c.id == charge_point_id)).first()
        return None if row is None else _point_record(row._mapping)

    def _charge_point(self, charge_point_id: str) -> ChargePointRecord:
        record = self.get_charge_point(charge_point_id)
        if record is None:
            raise NotFound(f"charge point {charge_point_id} is not registered")
        return record

    def charge_points(self, cable_id: str | None = None) -> list[ChargePointRecord]:
        """All charge points (or those on one cable), by id."""
        query = select(charge_points).order_by(charge_points.c.id)
        if cable_id is not None:
            query = query.where(charge_points.c.cable_id == cable_id)
        with self._read() as c:
            return [_point_record(row._mapping) for row in c.execute(query)]

    def verify_charge_point(self, charge_point_id: str, username: str | None, password: str | None) -> bool:
        """Whether a charge point may connect with these HTTP Basic credentials. Unknown ids and wrong
        credentials take as long as right ones (scrypt runs either way; comparisons are constant-time).
        A charge point without a password is admitted only if the store allows open charge points."""
        with self._read() as c:
            row = c.execute(
                select(charge_points.c.username, charge_points.c.password_hash).where(
                    charge_points.c.id == charge_point_id
                )
            ).first()
        # scrypt runs whatever the row says, so the answer time tells nothing about the charge point
        stored_hash = _dummy_hash() if row is None or row.password_hash is None else row.password_hash
        expected_user = charge_point_id if row is None or row.username is None else row.username
        password_ok = verify_password(password or "", stored_hash)
        user_ok = same_secret(username or "", expected_user)
        if row is None:
            return False
        if row.password_hash is None:
            return self.allow_open_charge_points
        return username is not None and password is not None and password_ok and user_ok

    # -- budgets -------------------------------------------------------------------------------

    def replace_budgets(
        self,
        cable_id: str,
        blocks: Mapping[datetime, Decimal],
        unit: Unit | str,
        *,
        backup: Decimal | None = None,
        received_at: datetime,
    ) -> None:
        """Store a budget message: each block mentioned gets its new capacity, blocks not mentioned keep
        theirs (the last budget per block counts). A unit change drops the cable's blocks in the old
        unit (A and KW budgets do not mix). `backup` None keeps the stored backup. Blocks that started
        more than a day before `received_at` are pruned."""
        check_id(cable_id, "cable id")
        cable_unit = _unit(unit)
        received = as_utc(received_at, "received_at")
        rows = [
            {
                "cable_id": cable_id,
                "start": start,
                "capacity": to_capacity(capacity, f"capacity of block {start.isoformat()}"),
                "unit": cable_unit.value,
                "received_at": received,
            }
            for start, capacity in _by_block(blocks).items()
        ]
        backup_capacity = None if backup is None else to_capacity(backup, "backup")
        with self._write() as c:
            mine = budgets.c.cable_id == cable_id
            c.execute(delete(budgets).where(mine, budgets.c.unit != cable_unit.value))
            c.execute(delete(budgets).where(budgets.c.start < received - BUDGET_RETENTION))
            c.execute(delete(budgets).where(mine, budgets.c.start.in_([row["start"] for row in rows])))
            if rows:
                c.execute(insert(budgets), rows)
            if backup_capacity is not None:
                c.execute(delete(backups).where(backups.c.cable_id == cable_id))
                c.execute(
                    insert(backups).values(
                        cable_id=cable_id, capacity=backup_capacity, unit=cable_unit.value, received_at=received
                    )
                )

    def budgets(self, cable_id: str, *, since: datetime | None = None) -> list[StoredBudget]:
        """A cable's budget blocks in time order (from `since` on, if given)."""
        query = select(budgets).where(budgets.c.cable_id == cable_id).order_by(budgets.c.start)
        if since is not None:
            query = query.where(budgets.c.start >= as_utc(since, "since"))
        with self._read() as c:
            return [
                StoredBudget(r.cable_id, r.start, r.capacity, Unit(r.unit), r.received_at) for r in c.execute(query)
            ]

    def backup(self, cable_id: str) -> Backup | None:
        with self._read() as c:
            r = c.execute(select(backups).where(backups.c.cable_id == cable_id)).first()
        return None if r is None else Backup(r.cable_id, r.capacity, Unit(r.unit), r.received_at)

    def budget_cables(self) -> list[str]:
        """Cables with budget blocks or a backup."""
        with self._read() as c:
            ids = set(c.execute(select(budgets.c.cable_id).distinct()).scalars())
            ids.update(c.execute(select(backups.c.cable_id)).scalars())
        return sorted(ids)

    def prune_budgets(self, before: datetime) -> int:
        """Drop budget blocks that start before `before`; returns how many."""
        cutoff = as_utc(before, "before")
        with self._write() as c:
            return c.execute(delete(budgets).where(budgets.c.start < cutoff)).rowcount

    # -- transactions --------------------------------------------------------------------------

    def start_transaction(
        self, charge_point_id: str, connector_id: int, id_tag: str, meter_start_wh: int, started_at: datetime
    ) -> int:
        """Record a started transaction; returns its id, never used before (not even across restarts)."""
        check_id(charge_point_id, "charge point id")
        if _connector_id(connector_id) == 0:
            raise InvalidInput("a transaction runs on a connector >= 1, not on connector 0")
        values = {
            "charge_point_id": charge_point_id,
            "connector_id": connector_id,
            "id_tag": _text(id_tag, "id_tag", MAX_ID_TAG),
            "meter_start_wh": _non_negative_int(meter_start_wh, "meter_start_wh"),
            "started_at": as_utc(started_at, "started_at"),
        }
        with self._write() as c:
            key = c.execute(insert(transactions).values(**values)).inserted_primary_key
        assert key is not None  # noqa: S101 - an autoincrement insert always has one
        return int(key[0])

    def stop_transaction(
        self, transaction_id: int, meter_stop_wh: int, stopped_at: datetime, reason: str | None = None
    ) -> Transaction:
        """Record the end of a transaction. Repeating the same stop is harmless; a different stop of a
        stopped transaction is a Conflict."""
        _non_negative_int(transaction_id, "transaction_id", 2**31 - 1)
        _non_negative_int(meter_stop_wh, "meter_stop_wh")
        stopped = as_utc(stopped_at, "stopped_at")
        if reason is not None:
            _text(reason, "reason", 64)
        with self._write() as c:
            row = c.execute(select(transactions).where(transactions.c.id == transaction_id)).first()
            if row is None:
                raise NotFound(f"transaction {transaction_id} is unknown")
            if row.stopped_at is not None:
                if (row.meter_stop_wh, row.stopped_at, row.reason) == (meter_stop_wh, stopped, reason):
                    return _transaction(row._mapping)
                raise Conflict(f"transaction {transaction_id} stopped already at {row.stopped_at.isoformat()}")
            if stopped < row.started_at:
                raise InvalidInput(
                    f"transaction {transaction_id} started at {row.started_at.isoformat()}; "
                    f"it cannot stop earlier ({stopped.isoformat()})"
                )
            c.execute(
                update(transactions)
                .where(transactions.c.id == transaction_id)
                .values(meter_stop_wh=meter_stop_wh, stopped_at=stopped, reason=reason)
            )
            done = c.execute(select(transactions).where(transactions.c.id == transaction_id)).one()
        return _transaction(done._mapping)

    def get_transaction(self, transaction_id: int) -> Transaction | None:
        with self._read() as c:
            row = c.execute(select(transactions).where(transactions.c.id == transaction_id)).first()
        return None if row is None else _transaction(row._mapping)

    def open_transactions(self, charge_point_id: str | None = None) -> list[Transaction]:
        """Transactions not stopped yet, oldest first."""
        query = select(transactions).where(transactions.c.stopped_at.is_(None)).order_by(transactions.c.id)
        if charge_point_id is not None:
            query = query.where(transactions.c.charge_point_id == charge_point_id)
        with self._read() as c:
            return [_transaction(row._mapping) for row in c.execute(query)]

    def recent_transactions(self, limit: int = 100) -> list[Transaction]:
        """The newest transactions first."""
        query = select(transactions).order_by(transactions.c.id.desc()).limit(_positive(limit))
        with self._read() as c:
            return [_transaction(row._mapping) for row in c.execute(query)]

    # -- the usage outbox (disk buffer) --------------------------------------------------------

    def enqueue_usage(
        self, cable_id: str, blocks: Mapping[datetime, Decimal], unit: Unit | str
    ) -> dict[datetime, Enqueued]:
        """Queue usage values per block for the DSO. One row per (cable, block): a new value replaces
        the one in an unsent row (which keeps its place in the queue); a sent block is final and a new
        value for it is ignored ("already sent")."""
        check_id(cable_id, "cable id")
        cable_unit = _unit(unit)
        values = {
            start: to_capacity(value, f"usage of block {start.isoformat()}")
            for start, value in sorted(_by_block(blocks).items())
        }
        outcome: dict[datetime, Enqueued] = {}
        now = self._now()
        with self._write() as c:
            for start, value in values.items():
                where = (usage_outbox.c.cable_id == cable_id, usage_outbox.c.block_start == start)
                row = c.execute(select(usage_outbox).where(*where)).first()
                if row is None:
                    c.execute(
                        insert(usage_outbox).values(
                            cable_id=cable_id,
                            block_start=start,
                            value=value,
                            unit=cable_unit.value,
                            created_at=now,
                            attempts=0,
                        )
                    )
                    outcome[start] = "queued"
                elif row.sent_at is not None:
                    outcome[start] = "already sent"
                elif row.value == value and row.unit == cable_unit.value:
                    outcome[start] = "unchanged"
                else:
                    c.execute(update(usage_outbox).where(*where).values(value=value, unit=cable_unit.value))
                    outcome[start] = "replaced"
        return outcome

    def pending(self, limit: int | None = None, *, cable_id: str | None = None) -> list[OutboxItem]:
        """Unsent usage rows in the order they were queued."""
        query = select(usage_outbox).where(usage_outbox.c.sent_at.is_(None)).order_by(usage_outbox.c.seq)
        if cable_id is not None:
            query = query.where(usage_outbox.c.cable_id == cable_id)
        if limit is not None:
            query = query.limit(_positive(limit))
        with self._read() as c:
            return [_outbox_item(row._mapping) for row in c.execute(query)]

    def outbox(self, cable_id: str) -> list[OutboxItem]:
        """Every row of a cable, sent or not, in queue order."""
        query = select(usage_outbox).where(usage_outbox.c.cable_id == cable_id).order_by(usage_outbox.c.seq)
        with self._read() as c:
            return [_outbox_item(row._mapping) for row in c.execute(query)]

    def mark_sent(self, seqs: Iterable[int], *, sent_at: datetime | None = None) -> int:
        """Mark rows delivered (counts as an attempt); returns how many were pending."""
        ids = _seqs(seqs)
        moment = self._now() if sent_at is None else as_utc(sent_at, "sent_at")
        with self._write() as c:
            return c.execute(
                update(usage_outbox)
                .where(usage_outbox.c.seq.in_(ids), usage_outbox.c.sent_at.is_(None))
                .values(sent_at=moment, attempts=usage_outbox.c.attempts + 1, last_error=None)
            ).rowcount

    def mark_refused(self, seqs: Iterable[int], error: str) -> int:
        """Settle rows the DSO refused (it will never take them): no longer pending, the refusal kept."""
        ids = _seqs(seqs)
        message = " ".join(str(error).split())[:1000]
        with self._write() as c:
            return c.execute(
                update(usage_outbox)
                .where(usage_outbox.c.seq.in_(ids), usage_outbox.c.sent_at.is_(None))
                .values(sent_at=self._now(), attempts=usage_outbox.c.attempts + 1, last_error=message)
            ).rowcount

    def record_failure(self, seqs: Iterable[int], error: str) -> int:
        """Count a failed delivery attempt of pending rows and keep its error (one line, at most 1000
        characters); returns how many rows."""
        ids = _seqs(seqs)
        if not isinstance(error, str):
            raise InvalidInput("error must be text")
        message = " ".join(error.split())[:1000]
        with self._write() as c:
            return c.execute(
                update(usage_outbox)
                .where(usage_outbox.c.seq.in_(ids), usage_outbox.c.sent_at.is_(None))
                .values(attempts=usage_outbox.c.attempts + 1, last_error=message)
            ).rowcount

    # -- profiles sent -------------------------------------------------------------------------

    def record_profile(
        self,
        charge_point_id: str,
        connector_id: int,
        *,
        purpose: str,
        stack_level: int,
        schedule: Mapping[str, Any],
        status: str,
        charging_profile_id: int | None = None,
        transaction_id: int | None = None,
        detail: str | None = None,
        sent_at: datetime | None = None,
    ) -> ProfileRecord:
        """Record a profile sent to a charge point and how it answered ("Accepted", "Rejected", ...)."""
        check_id(charge_point_id, "charge point id")
        values = {
            "charge_point_id": charge_point_id,
            "connector_id": _connector_id(connector_id),
            "purpose": _text(purpose, "purpose", 32),
            "stack_level": _non_negative_int(stack_level, "stack_level", 1000),
            "charging_profile_id": None
            if charging_profile_id is None
            else _non_negative_int(charging_profile_id, "charging_profile_id", 2**31 - 1),
            "transaction_id": None
            if transaction_id is None
            else _non_negative_int(transaction_id, "transaction_id", 2**31 - 1),
            "schedule": _schedule_json(schedule),
            "status": _text(status, "status", 32),
            "detail": None if detail is None else _text(detail, "detail", 4000, empty=True),
            "sent_at": self._now() if sent_at is None else as_utc(sent_at, "sent_at"),
        }
        with self._write() as c:
            key = c.execute(insert(profiles).values(**values)).inserted_primary_key
            assert key is not None  # noqa: S101 - an autoincrement insert always has one
            row = c.execute(select(profiles).where(profiles.c.id == key[0])).one()
        return _profile(row._mapping)

    def latest_profiles(self, charge_point_id: str | None = None) -> dict[Key, ProfileRecord]:
        """The last profile recorded per (charge point, connector)."""
        newest = select(func.max(profiles.c.id)).group_by(profiles.c.charge_point_id, profiles.c.connector_id)
        if charge_point_id is not None:
            newest = newest.where(profiles.c.charge_point_id == charge_point_id)
        query = select(profiles).where(profiles.c.id.in_(newest.scalar_subquery()))
        with self._read() as c:
            records = [_profile(row._mapping) for row in c.execute(query)]
        return {(r.charge_point_id, r.connector_id): r for r in sorted(records, key=lambda r: r.id)}

    def recent_profiles(self, limit: int = 100, *, charge_point_id: str | None = None) -> list[ProfileRecord]:
        """The newest profiles first."""
        query = select(profiles).order_by(profiles.c.id.desc()).limit(_positive(limit))
        if charge_point_id is not None:
            query = query.where(profiles.c.charge_point_id == charge_point_id)
        with self._read() as c:
            return [_profile(row._mapping) for row in c.execute(query)]

    # -- history -------------------------------------------------------------------------------

    def prune_history(self, before: datetime) -> dict[str, int]:
        """Drop what is no longer needed from before `before`: stopped transactions, sent usage rows and
        profiles that are not the latest of their connector. Ids are never reused afterwards."""
        cutoff = as_utc(before, "before")
        newest = select(func.max(profiles.c.id)).group_by(profiles.c.charge_point_id, profiles.c.connector_id)
        with self._write() as c:
            return {
                "transactions": c.execute(delete(transactions).where(transactions.c.stopped_at < cutoff)).rowcount,
                "usage": c.execute(delete(usage_outbox).where(usage_outbox.c.sent_at < cutoff)).rowcount,
                "profiles": c.execute(
                    delete(profiles).where(profiles.c.sent_at < cutoff, profiles.c.id.not_in(newest.scalar_subquery()))
                ).rowcount,
            }

    # -- adapter state (key-value) -------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        with self._read() as c:
            return c.execute(select(adapter_state.c.value).where(adapter_state.c.key == key)).scalar_one_or_none()

    def set_state(self, key: str, value: str) -> None:
        _text(key, "state key", 100)
        if not isinstance(value, str):
            raise InvalidInput(f"state value must be text, got {type(value).__name__}")
        with self._write() as c:
            _put(c, key, value, self._now())

    def get_time(self, key: str) -> datetime | None:
        """A moment stored with `set_time` (e.g. the DSO's last heartbeat), tz-aware UTC."""
        value = self.get_state(key)
        return None if value is None else datetime.fromisoformat(value)

    def set_time(self, key: str, moment: datetime) -> None:
        self.set_state(key, as_utc(moment, key).isoformat())

    def next_number(self, key: str, *, first: int = 1) -> int:
        """An integer counter (e.g. chargingProfileId): each call returns the next, never the same twice."""
        _text(key, "state key", 100)
        _non_negative_int(first, "first", 2**62)
        with self._write() as c:
            current = c.execute(select(adapter_state.c.value).where(adapter_state.c.key == key)).scalar_one_or_none()
            number = first if current is None else int(current) + 1
            _put(c, key, str(number), self._now())
        return number


def _put(c: Connection, key: str, value: str, now: datetime) -> None:
    done = c.execute(
        update(adapter_state).where(adapter_state.c.key == key).values(value=value, updated_at=now)
    ).rowcount
    if done == 0:
        c.execute(insert(adapter_state).values(key=key, value=value, updated_at=now))


def _by_block(blocks: Mapping[datetime, object]) -> dict[datetime, object]:
    """Values by aligned UTC block start (aware datetimes of one instant are one key already)."""
    if not isinstance(blocks, Mapping):
        raise InvalidInput("blocks must map block starts to values")
    by_start: dict[datetime, object] = {}
    for start, value in blocks.items():
        if not isinstance(start, datetime):
            raise InvalidInput(f"a block start must be a date-time, got {start!r}")
        by_start[aligned(start, "block start")] = value
    return by_start


def _positive(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be a whole number >= 1, got {limit!r}")
    return limit


def _seqs(seqs: Iterable[int]) -> list[int]:
    ids = list(seqs)
    for seq in ids:
        _non_negative_int(seq, "seq", 2**62)
    return ids


def point_values(cp: ChargePoint) -> dict[str, object]:
    """A charge point's configuration by column name: stored as such, and shown as such by the REST API."""
    return {
        "id": cp.id,
        "cable_id": cp.cable_id,
        "max_current_a": cp.max_current_a,
        "phases": cp.phases,
        "voltage_v": cp.voltage_v,
        "connectors": cp.connectors,
        "protection_a": cp.protection_a,
        "connector_max_current_a": cp.connector_max_current_a,
    }


def _point_record(row: RowMapping) -> ChargePointRecord:
    cp = ChargePoint(
        id=row["id"],
        cable_id=row["cable_id"],
        max_current_a=row["max_current_a"],
        phases=row["phases"],
        voltage_v=row["voltage_v"],
        connectors=row["connectors"],
        protection_a=row["protection_a"],
        connector_max_current_a=row["connector_max_current_a"],
    )
    return ChargePointRecord(
        cp, row["username"], row["password_hash"] is not None, row["created_at"], row["updated_at"]
    )


def _transaction(row: RowMapping) -> Transaction:
    return Transaction(
        id=row["id"],
        charge_point_id=row["charge_point_id"],
        connector_id=row["connector_id"],
        id_tag=row["id_tag"],
        meter_start_wh=row["meter_start_wh"],
        started_at=row["started_at"],
        meter_stop_wh=row["meter_stop_wh"],
        stopped_at=row["stopped_at"],
        reason=row["reason"],
    )


def _outbox_item(row: RowMapping) -> OutboxItem:
    return OutboxItem(
        seq=row["seq"],
        cable_id=row["cable_id"],
        block_start=row["block_start"],
        value=row["value"],
        unit=Unit(row["unit"]),
        created_at=row["created_at"],
        sent_at=row["sent_at"],
        attempts=row["attempts"],
        last_error=row["last_error"],
    )


def _profile(row: RowMapping) -> ProfileRecord:
    try:
        schedule = json.loads(row["schedule"], parse_float=Decimal)
    except (ValueError, InvalidOperation):
        schedule = {}
    return ProfileRecord(
        id=row["id"],
        charge_point_id=row["charge_point_id"],
        connector_id=row["connector_id"],
        purpose=row["purpose"],
        stack_level=row["stack_level"],
        charging_profile_id=row["charging_profile_id"],
        transaction_id=row["transaction_id"],
        schedule=schedule,
        status=row["status"],
        detail=row["detail"],
        sent_at=row["sent_at"],
    )
