"""`make run` end to end: it initialises a demo database, serves it, and prints how to use it.

Runs in the repository itself (no copy), with the database, token file and port pointed into
tmp_path; `make run` still creates an empty var/ in the repository (its `mkdir -p var`). The venv
is the one running this test, so `-o .venv/.installed` keeps make from reinstalling it.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=5)
    return response.status_code, response.content


class Running:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, base: str) -> None:
        self.process, self.log, self.base = process, log, base
        self.adapter = self.ocpp = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[Running]:
    if not (REPO / ".venv" / "bin" / "gridcap").exists():
        pytest.fail("no .venv/bin/gridcap: run `make install` first")
    port, cpo_port, ocpp_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCAP_")}
    env.update(
        GRIDCAP_DATABASE_URL=f"sqlite:///{tmp_path / 'run' / 'gridcap.db'}",
        GRIDCAP_ADMIN_TOKEN_FILE=str(tmp_path / "run" / "admin-token"),
        GRIDCAP_TIMESERIES_PATH=str(tmp_path / "run" / "timeseries.db"),
        GRIDCAP_PORT=str(port),
        GRIDCAP_CPO_PORT=str(cpo_port),
        GRIDCAP_OCPP_PORT=str(ocpp_port),
    )
    log = tmp_path / "make-run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: make and the server stop together
        )
    running = Running(process, log, f"http://127.0.0.1:{port}")
    running.adapter = f"http://127.0.0.1:{cpo_port}"
    running.ocpp = f"ws://127.0.0.1:{ocpp_port}/ocpp"
    try:
        yield running
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
    deadline = time.monotonic() + 10
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(process.pid), "make run left processes behind"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_healthy(running: Running) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            pytest.fail(f"make run exited with {running.process.returncode}:\n{running.output()}")
        try:
            status, _ = get(f"{running.base}/api/v1/health")
        except requests.ConnectionError:
            status = 0
        if status == 200:
            return
        time.sleep(0.2)
    pytest.fail(f"/api/v1/health did not answer 200 within {START_TIMEOUT_S} s:\n{running.output()}")


def test_make_run_serves_the_demo_grid_and_prints_how_to_use_it(make_run: Running, tmp_path: Path) -> None:
    wait_healthy(make_run)
    printed = make_run.output()
    base = make_run.base
    for url in (f"{base}/api/v1", f"{base}/api/v1/docs", f"{base}/api/v1/openapi.json", f"{base}/api/v1/health"):
        assert url in printed
    token = (tmp_path / "run" / "admin-token").read_text().strip()
    assert f"Admin token  {token}" in printed
    credentials = json.loads((tmp_path / "run" / "demo-credentials.json").read_text())["cpos"]
    assert len(credentials) == 3
    for cpo in credentials:
        assert re.search(rf"{cpo['id']}\s+{cpo['username']}\s+{re.escape(cpo['password'])}\s", printed), printed

    status, body = get(f"{base}/api/v1/cables", token)
    assert status == 200, body
    assert {c["id"] for c in json.loads(body)} == {
        "demo-kerkstraat",
        "demo-parkeerhub",
        "demo-molenweg",
        "demo-dorpsplein",
    }
    assert get(f"{base}/api/v1/cables")[0] == 401
    assert get(f"{base}/api/v1/openapi.json")[0] == 200
    assert get(f"{base}/api/v1/docs")[0] == 200

    # The scheduler forecasts the demo cables from the demo measurements as soon as it starts.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        forecast = json.loads(get(f"{base}/api/v1/cables/demo-kerkstraat/forecast", token)[1])
        if forecast["status"] != "never":
            break
        time.sleep(0.5)
    assert forecast["status"] == "ok", forecast["message"]
    assert {b["source"] for b in forecast["blocks"][1:]} == {"forecast"}

    # The CPO adapter gets ChargeCo's budgets from the DSO and turns them into charging profiles on the
    # simulated charge points.
    printed = make_run.output()
    for url in (f"{make_run.adapter}/api/v1/cpo", f"{make_run.adapter}/oscp/1.0/soap", f"{make_run.ocpp}/"):
        assert url in printed, printed
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = json.loads(get(f"{make_run.adapter}/api/v1/cpo/status", token)[1])
        cables = {b["cable_id"] for b in json.loads(get(f"{make_run.adapter}/api/v1/cpo/budgets", token)[1])}
        profiles = json.loads(get(f"{make_run.adapter}/api/v1/cpo/profiles", token)[1])["profiles"]
        accepted = {p["charge_point_id"] for p in profiles if p["status"] == "Accepted"}
        if (
            len(status["ocpp"]["connected"]) == 6
            and {"demo-kerkstraat", "demo-parkeerhub"} <= cables
            and len(accepted) == 6
        ):
            break
        time.sleep(0.5)
    assert status["dso"]["online"], status
    assert len(status["ocpp"]["connected"]) == 6, status
    assert {"demo-kerkstraat", "demo-parkeerhub"} <= cables
    assert len(accepted) == 6, profiles

    os.killpg(make_run.process.pid, signal.SIGTERM)
    make_run.process.wait(timeout=15)
    output = make_run.output()
    for stopped in ("gridcap: stopped", "gridcap CPO adapter: stopped", "gridcap simulate: stopped"):
        assert stopped in output, output
