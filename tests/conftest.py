"""Shared fixtures: a settable clock, and databases on SQLite and on the real PostgreSQL server.

`make test` runs pytest inside tests/servers/with-servers.sh, which starts PostgreSQL on loopback
and exports GRIDCAP_TEST_POSTGRES_URL. With --require-servers a missing server fails the run
instead of skipping the tests that need it.
"""

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy

from service.store import Database
from service.usecases import Context


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-servers", action="store_true", help="fail, not skip, when a test server is missing")
    parser.addoption("--benchmarks", action="store_true", help="run tests/benchmarks (slow; figures, not checks)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if "benchmarks" in collection_path.parts and not config.getoption("--benchmarks"):
        return True
    return None


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 24, 12, 7, 30, tzinfo=UTC))


def postgres_admin_url(config: pytest.Config) -> str:
    url = os.environ.get("GRIDCAP_TEST_POSTGRES_ADMIN_URL")
    if not url:
        message = "no PostgreSQL server: run the tests with `make test` (GRIDCAP_TEST_POSTGRES_ADMIN_URL unset)"
        if config.getoption("--require-servers"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database on the test PostgreSQL server, dropped afterwards."""
    admin_url = sqlalchemy.make_url(postgres_admin_url(request.config))
    name = f"gridcap_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gridcap.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.create_schema()
    yield database
    database.dispose()


@pytest.fixture
def ctx(db: Database, clock: Clock) -> Context:
    return Context(db, clock=clock)
