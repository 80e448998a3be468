"""Shared fixtures: a settable clock, databases on SQLite and on the real PostgreSQL server, and
databases on the real InfluxDB server.

`make test` runs pytest inside tests/servers/with-servers.sh, which starts PostgreSQL and influxd on
loopback and exports GRIDCAP_TEST_POSTGRES_URL, GRIDCAP_TEST_INFLUX_URL and GRIDCAP_TEST_INFLUXD.
With --require-servers a missing server fails the run instead of skipping the tests that need it.
"""

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
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


# --- InfluxDB -----------------------------------------------------------------------------------


def _server_env(config: pytest.Config, variable: str, what: str) -> str:
    value = os.environ.get(variable)
    if not value:
        message = f"no {what}: run the tests with `make test` ({variable} unset)"
        if config.getoption("--require-servers"):
            pytest.fail(message)
        pytest.skip(message)
    return value


def influx_query(url: str, statement: str, auth: tuple[str, str] | None = None, **params: str) -> dict[str, object]:
    """One InfluxQL statement over plain HTTP; fails the test on any error."""
    response = requests.post(f"{url}/query", params=params, data={"q": statement}, auth=auth, timeout=30)
    response.raise_for_status()
    body: dict[str, object] = response.json()
    assert not any("error" in r for r in body.get("results", [])), body  # type: ignore[attr-defined]
    return body


@pytest.fixture
def influx_url(request: pytest.FixtureRequest) -> str:
    """The test influxd (auth off), from tests/servers/with-servers.sh."""
    return _server_env(request.config, "GRIDCAP_TEST_INFLUX_URL", "InfluxDB server").rstrip("/")


@pytest.fixture
def influx_database(influx_url: str) -> Iterator[str]:
    """A fresh database on the test influxd, with a name no other test uses; dropped afterwards."""
    name = f"gridcap_{uuid.uuid4().hex[:12]}"
    influx_query(influx_url, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        influx_query(influx_url, f'DROP DATABASE "{name}"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class InfluxAuthServer:
    """A second influxd with auth-enabled = true and max-row-limit = 1000 (an unchunked answer stops at
    1,000 rows): an admin, and a user with no privileges at all."""

    url: str
    admin: tuple[str, str]
    nobody: tuple[str, str]


@pytest.fixture(scope="module")
def influx_auth_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InfluxAuthServer]:
    influxd = _server_env(request.config, "GRIDCAP_TEST_INFLUXD", "influxd")
    home = tmp_path_factory.mktemp("influx-auth")
    for attempt in range(5):
        port = free_port()
        (home / "influxdb.conf").write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{home}/meta"
[data]
  dir = "{home}/data"
  wal-dir = "{home}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  auth-enabled = true
  max-row-limit = 1000
  log-enabled = false
  pprof-enabled = false
""",
            encoding="utf-8",
        )
        log = (home / "influxd.log").open("wb")
        process = subprocess.Popen([influxd, "-config", str(home / "influxdb.conf")], stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        if _wait_ping(url, process):
            break
        process.kill()
        process.wait()
        log.close()
        text = (home / "influxd.log").read_text(errors="replace")
        if "address already in use" not in text or attempt == 4:
            pytest.fail(f"the second influxd (auth on) did not start:\n{text}")
    admin, nobody = ("admin", "admin password"), ("nobody", "nobody's password")
    try:
        # With no admin yet, influxd accepts the first CREATE USER ... WITH ALL PRIVILEGES unauthenticated.
        influx_query(url, f"CREATE USER {admin[0]} WITH PASSWORD '{admin[1]}' WITH ALL PRIVILEGES")
        influx_query(url, f"CREATE USER {nobody[0]} WITH PASSWORD 'nobody\\'s password'", auth=admin)
        yield InfluxAuthServer(url, admin, nobody)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _wait_ping(url: str, process: "subprocess.Popen[bytes]", timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 204:
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    return False
