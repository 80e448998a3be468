"""GET /metrics under gunicorn with two workers: every scrape, whichever worker answers it, counts
the OSCP messages of both workers (also after one of them is replaced), and shows the outbox from the
shared database; with GRIDCAP_WITH_SCHEDULER=true one worker runs the jobs and releases their lease
when gunicorn stops.

gunicorn runs as a subprocess with service/gunicorn_conf.py, on a SQLite database prepared here and
its own PROMETHEUS_MULTIPROC_DIR; no other server is needed.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from conftest import free_port
from oscp_support import PASSWORD, make_grid
from prometheus_client.parser import text_string_to_metric_families

from service.store import Database
from service.usecases import Context, leases, oscp

TOKEN = "a gunicorn test admin token"  # noqa: S105 - test credentials
START_TIMEOUT_S = 30
TIMEOUT_S = 10
BATCH = 24  # requests sent at once, over new connections, so that both workers take some
SCRAPES = 6


@dataclass
class Gunicorn:
    process: "subprocess.Popen[bytes]"
    base: str
    metrics_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        """The processes that wrote metrics: prometheus_client names its files <type>_<pid>.db."""
        return {int(f.stem.rsplit("_", 1)[1]) for f in self.metrics_dir.glob("counter_*.db")}

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = requests.get(f"{self.base}/metrics", timeout=TIMEOUT_S)
        assert response.status_code == 200, response.text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }


def sample(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return scraped.get((name, frozenset(labels.items())))


@pytest.fixture
def outbox(tmp_path: Path) -> tuple[str, dict[str, int]]:
    """A database with cable c1 and CPOs a and b (user-a, user-b), which are owed pushes."""
    url = f"sqlite:///{tmp_path / 'gridcap.db'}"
    db = Database(url)
    try:
        db.create_schema()
        ctx = Context(db)
        make_grid(ctx)
        owed = {str(row["cpo_id"]): int(str(row["depth"])) for row in oscp.outbox(ctx)}
    finally:
        db.dispose()
    assert owed == {"a": 2, "b": 1}
    return url, owed


@contextmanager
def running_gunicorn(tmp_path: Path, database_url: str, **extra_env: str) -> Iterator[Gunicorn]:
    """gunicorn with two workers on a free port, stopped with SIGTERM (and checked to exit 0) at the end."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDCAP_", "PROMETHEUS_"))}
    env.update(
        GRIDCAP_DATABASE_URL=database_url,
        GRIDCAP_ADMIN_TOKEN=TOKEN,
        GRIDCAP_HOST="127.0.0.1",
        GRIDCAP_PORT=str(port),
        GRIDCAP_WORKERS="2",
        GRIDCAP_TIMESERIES_PATH=str(tmp_path / "timeseries.db"),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        XDG_RUNTIME_DIR=str(tmp_path),  # gunicorn's control socket: not the shared one in $HOME
        **extra_env,
    )
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service.wsgi:app"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: nothing outlives the test
        )
    server = Gunicorn(process, f"http://127.0.0.1:{port}", metrics_dir, log)
    try:
        wait_healthy(server)
        yield server
    finally:
        stop(process)


def wait_healthy(server: Gunicorn) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.process.returncode}:\n{server.output()}")
        try:
            if requests.get(f"{server.base}/api/v1/health", timeout=TIMEOUT_S).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer /api/v1/health within {START_TIMEOUT_S} s:\n{server.output()}")


def stop(process: "subprocess.Popen[bytes]") -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the master stops its workers gracefully
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
    assert process.returncode == 0, f"gunicorn exited with {process.returncode}"


def heartbeat(base: str, password: str) -> int:
    """One JSON Heartbeat as CPO a, over a new connection (no session: no keep-alive)."""
    response = requests.post(
        f"{base}/oscp/1.0/json/Heartbeat",
        json={},
        auth=("user-a", password),
        headers={"Connection": "close"},
        timeout=TIMEOUT_S,
    )
    return response.status_code


def test_every_scrape_counts_the_messages_of_every_worker(tmp_path: Path, outbox: tuple[str, dict[str, int]]) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_999999.db").write_bytes(b"left over from an earlier run")
    (tmp_path / "metrics" / "keep.txt").write_text("not ours")
    with running_gunicorn(tmp_path, outbox[0]) as gunicorn:
        check_every_scrape(gunicorn, outbox[1])


def check_every_scrape(gunicorn: Gunicorn, owed: dict[str, int]) -> None:
    assert not (gunicorn.metrics_dir / "counter_999999.db").exists(), "stale metrics survived the start"
    assert (gunicorn.metrics_dir / "keep.txt").exists(), "a file that is not prometheus_client's was deleted"

    wrong = 6  # below FAILED_LOGINS_PER_MINUTE per worker: each is a NotAuthorized fault, none throttled
    statuses = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses += pool.map(lambda _: heartbeat(gunicorn.base, "not the password"), range(wrong))
        for _ in range(10):  # both workers take part within a batch or two; this bounds the wait
            statuses += pool.map(lambda _: heartbeat(gunicorn.base, PASSWORD), range(BATCH))
            if len(gunicorn.worker_pids()) >= 2:
                break
    assert statuses.count(401) == wrong
    ok = statuses.count(200)
    assert ok + wrong == len(statuses), statuses
    workers = gunicorn.worker_pids()
    assert len(workers) == 2, f"the messages did not reach both workers: {workers}"
    assert gunicorn.process.pid not in workers

    def check(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
        in_heartbeat = {"operation": "Heartbeat", "binding": "json"}
        assert sample(scraped, "gridcap_oscp_requests_total", **in_heartbeat, outcome="ok") == ok
        assert sample(scraped, "gridcap_oscp_requests_total", **in_heartbeat, outcome="NotAuthorized") == wrong
        assert sample(scraped, "gridcap_oscp_faults_total", operation="Heartbeat", fault="NotAuthorized") == wrong
        durations = sample(scraped, "gridcap_oscp_duration_seconds_count", direction="in", operation="Heartbeat")
        assert durations == ok + wrong
        assert sample(scraped, "gridcap_database_up") == 1
        for cpo_id, depth in owed.items():
            assert sample(scraped, "gridcap_outbox_depth", cpo=cpo_id) == depth
        assert sample(scraped, "gridcap_cpo_online", cpo="a") == 1  # its heartbeats reached the database
        assert sample(scraped, "gridcap_cpo_online", cpo="b") == 0

    for _ in range(SCRAPES):  # new connections: the scrapes land on either worker
        check(gunicorn.scrape())

    # A worker that ends (gunicorn's max_requests, a crash) takes none of its counts with it.
    os.kill(min(workers), signal.SIGTERM)
    deadline = time.monotonic() + START_TIMEOUT_S
    while pid_alive(min(workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(min(workers))
    wait_healthy(gunicorn)
    for _ in range(SCRAPES):
        check(gunicorn.scrape())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_with_the_scheduler_one_worker_runs_the_jobs_and_every_scrape_counts_them(
    tmp_path: Path, outbox: tuple[str, dict[str, int]]
) -> None:
    db = Database(outbox[0])
    ctx = Context(db)
    try:
        with running_gunicorn(tmp_path, outbox[0], GRIDCAP_WITH_SCHEDULER="true") as gunicorn:
            # The CPOs' endpoints (127.0.0.1:9) refuse: the push job counts Unreachable pushes.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                scraped = gunicorn.scrape()
                if sample(scraped, "gridcap_oscp_pushes_total", binding="soap11", outcome="Unreachable"):
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"no push was counted:\n{gunicorn.output()}")
            holder = leases.holder(ctx, leases.SCHEDULER)
            assert holder is not None
            assert int(holder.split(":")[1]) in gunicorn.worker_pids()  # a worker, not the master
            runs = [v for (name, _), v in scraped.items() if name == "gridcap_job_duration_seconds_count"]
            assert runs
            assert all(v >= 1 for v in runs)
            for _ in range(SCRAPES):  # either worker answers with the job holder's counts
                again = gunicorn.scrape()
                pushed = sample(again, "gridcap_oscp_pushes_total", binding="soap11", outcome="Unreachable")
                assert pushed is not None
                assert pushed >= 1
            assert gunicorn.output().count("now runs the scheduler's jobs") == 1
        assert leases.holder(ctx, leases.SCHEDULER) is None  # released as the worker stopped, not left to expire
    finally:
        db.dispose()
