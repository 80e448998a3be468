"""`gridcap cpo serve` and `gridcap simulate` as the processes an operator runs: the adapter on loopback
ports, simulated charge points registered over its REST API and connected over OCPP."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port

TOKEN = "an admin token for the CLI tests"  # noqa: S105 - test credentials
GRIDCAP = str(Path(sys.executable).with_name("gridcap"))


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCAP_")}
    env.update(
        GRIDCAP_ADMIN_TOKEN=TOKEN,
        GRIDCAP_CPO_DATABASE_URL=f"sqlite:///{tmp_path / 'cpo.db'}",
        GRIDCAP_CPO_DSO_PASSWORD="the DSO's password to the adapter",  # noqa: S106 - test credentials
        GRIDCAP_CPO_OPEN_CHARGE_POINTS="true",
        GRIDCAP_CPO_PORT=str(free_port()),
        GRIDCAP_OCPP_PORT=str(free_port()),
        **extra,
    )
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> "subprocess.Popen[bytes]":
    with log.open("wb") as sink:
        return subprocess.Popen([GRIDCAP, *args], env=env, stdout=sink, stderr=subprocess.STDOUT)


def stop(process: "subprocess.Popen[bytes]") -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def status(base: str) -> dict[str, object]:
    reply = requests.get(f"{base}/api/v1/cpo/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    found: dict[str, object] = reply.json()
    return found


def test_the_adapter_and_simulated_charge_points_run_as_commands(tmp_path: Path) -> None:
    env = environment(tmp_path)
    base = f"http://127.0.0.1:{env['GRIDCAP_CPO_PORT']}"
    adapter = start(["cpo", "serve"], env, tmp_path / "adapter.log")
    simulate = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/api/v1/cpo/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        printed = (tmp_path / "adapter.log").read_text()
        assert f"{base}/api/v1/cpo" in printed, printed
        assert f"ws://127.0.0.1:{env['GRIDCAP_OCPP_PORT']}/ocpp/<chargePointId>" in printed
        simulate = start(
            ["simulate", "--charge-points", "3", "--register", base, "--cable", "c1", "--cable", "c2"],
            env,
            tmp_path / "simulate.log",
        )
        deadline = time.monotonic() + 60
        connected: object = []
        while time.monotonic() < deadline:
            connected = status(base)["ocpp"]["connected"]  # type: ignore[index]
            if connected == ["sim-0001", "sim-0002", "sim-0003"]:
                break
            time.sleep(0.2)
        assert connected == ["sim-0001", "sim-0002", "sim-0003"], (tmp_path / "simulate.log").read_text()
        points = requests.get(
            f"{base}/api/v1/cpo/charge-points", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        ).json()
        assert [p["cable_id"] for p in points] == ["c1", "c2", "c1"]
        assert stop(simulate) == 0
        assert "gridcap simulate: stopped" in (tmp_path / "simulate.log").read_text()
    finally:
        if simulate is not None and simulate.poll() is None:
            simulate.kill()
        code = stop(adapter)
    assert code == 0
    assert "gridcap CPO adapter: stopped" in (tmp_path / "adapter.log").read_text()


@pytest.mark.parametrize(
    ("args", "extra", "needle"),
    [
        (["cpo", "serve"], {"GRIDCAP_CPO_DSO_PASSWORD": ""}, "cpo_dso_password"),
        (["cpo", "serve"], {"GRIDCAP_CPO_DSO_URL": "http://127.0.0.1:1"}, "cpo_username and cpo_password"),
        (["cpo", "serve"], {"GRIDCAP_CPO_DSO_BINDING": "soap13"}, "cpo_dso_binding"),
        (["cpo", "serve", "--demo"], {}, "init-db --demo"),
        (["simulate"], {}, "--charge-points"),
        (["simulate", "--charge-points", "2", "--register", "http://127.0.0.1:1"], {}, "--cable"),
    ],
)
def test_bad_set_ups_are_refused_with_a_clear_message(
    tmp_path: Path, args: list[str], extra: dict[str, str], needle: str
) -> None:
    env = environment(tmp_path, GRIDCAP_DATABASE_URL=f"sqlite:///{tmp_path / 'dso.db'}") | extra
    done = subprocess.run([GRIDCAP, *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert needle in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
