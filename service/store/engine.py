"""Engines and transactions that serialise writers per cable, across threads and processes.

PostgreSQL: every write transaction locks the rows of the cables it touches (SELECT ... FOR UPDATE,
in id order, so two writers never deadlock); other cables proceed in parallel.
SQLite: a write transaction starts with BEGIN IMMEDIATE, taking the database's single write lock
up front, so two processes can never read the same budgets and both decide on them.
"""

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.domain.errors import Conflict
from service.store.prepared import run_driver_sql
from service.store.tables import CableRow, CpoRow

log = logging.getLogger("gridcap.store")

_READ_ONLY = "gridcap_read_only"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 60}, hide_parameters=True)
        _configure_sqlite(engine)
        return engine
    # hide_parameters: a failed statement's log line must not carry password hashes
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        # On the driver's connection: a statement through SQLAlchemy costs more than this one takes
        execute = connection.connection.driver_connection.execute
        run_driver_sql(connection.dialect, execute, "BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """The engine and the two kinds of transaction the use cases need."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._reader = self.engine.execution_options(**{_READ_ONLY: True})
        # SQLite has one writer at a time. Threads of this process queue here rather than in
        # SQLite's busy handler, which polls with sleeps of up to 100 ms; other processes still
        # wait in BEGIN IMMEDIATE.
        self._writer = threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def create_schema(self) -> None:
        """Bring the schema to the newest migration (creating it in an empty database)."""
        with self.engine.begin() as connection:
            config = _alembic_config(connection)
            tables = set(inspect(connection).get_table_names())
            if "cables" in tables and "alembic_version" not in tables:
                command.stamp(config, "0001")  # made by create_all before migrations existed
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self, lock_cables: Iterable[str] = (), lock_cpos: Iterable[str] = ()) -> Iterator[Session]:
        """A transaction that holds its locks from the start, commits on success and rolls back on
        any exception. Read the clock inside it: a decision's `now` must not predate its lock."""
        try:
            with self._writer, Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.connection()  # BEGIN (IMMEDIATE on SQLite) now, not at the first query
                if self.dialect != "sqlite":
                    for table, ids in ((CableRow, lock_cables), (CpoRow, lock_cpos)):
                        if ids := sorted(set(ids)):
                            session.execute(
                                select(table.id).where(table.id.in_(ids)).order_by(table.id).with_for_update()
                            )
                yield session
        except IntegrityError:
            log.warning("write rolled back by a database constraint", exc_info=True)
            raise Conflict(
                "the change clashes with one made at the same time (a duplicate id or name?); retry"
            ) from None

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "service.store:migrations")
    config.attributes["connection"] = connection
    return config
