"""Wiring of the CPO adapter: its database, the DSO link, the OCPP central system on an asyncio loop in a
background thread, and one Flask app with the OSCP endpoint (CPO role) and the REST API."""

import asyncio
import logging
import threading
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import Flask

from service.cpo.adapter import Adapter, AdapterSettings
from service.cpo.api import register_cpo_api
from service.cpo.dso import DsoLink, MessageLog, cpo_role
from service.cpo.profiles import ChargePoint
from service.cpo.store import CpoStore
from service.domain.errors import GridcapError
from service.oscp.v1.client import OscpClient
from service.oscp.v1.gateway import PREFIX, WSDL_DIR, GatewaySettings, OscpGateway, register_oscp
from service.settings import ConfigError, Settings

log = logging.getLogger("gridcap.cpo")

_POINT_FIELDS = {
    "id",
    "cable_id",
    "max_current_a",
    "phases",
    "voltage_v",
    "connectors",
    "protection_a",
    "connector_max_current_a",
    "username",
    "password",
}


@dataclass(frozen=True)
class ConfiguredPoint:
    charge_point: ChargePoint
    username: str | None = None
    password: str | None = None


def load_charge_points(path: str) -> list[ConfiguredPoint]:
    """The [[charge_point]] tables of a TOML file, each checked; any error names the entry and refuses all."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cpo_charge_points_file {path} cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cpo_charge_points_file {path} is not valid UTF-8 TOML: {exc}") from None
    entries = document.get("charge_point", [])
    unknown_top = sorted(set(document) - {"charge_point"})
    if unknown_top or not isinstance(entries, list):
        raise ConfigError(f"{path}: list charge points as [[charge_point]] tables (found {', '.join(unknown_top)})")
    out: list[ConfiguredPoint] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{path}: charge_point #{i + 1}"
        unknown = sorted(set(entry) - _POINT_FIELDS)
        if unknown:
            raise ConfigError(
                f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_POINT_FIELDS))}"
            )
        missing = [k for k in ("id", "cable_id", "max_current_a", "phases") if k not in entry]
        if missing:
            raise ConfigError(f"{where} misses {', '.join(missing)}")
        values: dict[str, Any] = {k: v for k, v in entry.items() if k not in ("username", "password")}
        for name in ("max_current_a", "voltage_v", "protection_a", "connector_max_current_a"):
            if name in values:
                values[name] = Decimal(str(values[name]))
        try:
            cp = ChargePoint(**values)
        except GridcapError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        if cp.id in seen:
            raise ConfigError(f"{where}: charge point {cp.id} is listed twice")
        seen.add(cp.id)
        out.append(ConfiguredPoint(cp, entry.get("username"), entry.get("password")))
    return out


def dso_endpoint(base_url: str, binding: str) -> str:
    """The DSO's OSCP endpoint under its base URL: the SOAP endpoint, or the JSON base."""
    return f"{base_url.rstrip('/')}{PREFIX}/{'json' if binding == 'json' else 'soap'}"


@dataclass
class AdapterService:
    """The adapter with everything it runs on; `start()` runs OCPP and the jobs, `close()` stops all."""

    settings: Settings
    adapter: Adapter
    app: Flask
    messages: MessageLog
    ocpp_host: str = "127.0.0.1"
    ocpp_port: int = 0
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _failure: BaseException | None = None

    def start(self, timeout_s: float = 30.0) -> int:
        """Start the loop thread; returns the OCPP port once it listens (raises if it could not)."""
        self._thread = threading.Thread(target=self._run, name="cpo-adapter", daemon=True)
        self._thread.start()
        while not self.adapter.ready.wait(0.05):
            timeout_s -= 0.05
            if not self._thread.is_alive() or timeout_s <= 0:
                failure = self._failure or "timed out"
                self.close()
                raise ConfigError(f"the OCPP server did not start on {self.ocpp_host}:{self.ocpp_port}: {failure}")
        assert self.adapter.ocpp_port is not None  # noqa: S101 - set before ready
        return self.adapter.ocpp_port

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.adapter.run(self._stop, ocpp_host=self.ocpp_host, ocpp_port=self.ocpp_port)

        try:
            asyncio.run(main())
        except Exception as exc:  # a loop that dies says why, once
            self._failure = exc
            log.exception("the CPO adapter loop stopped")

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():  # still finishing a call: leave what it uses open
                log.error("the CPO adapter loop did not stop within 30 s")
                return
        if self.adapter.dso is not None:
            self.adapter.dso.close()
        self.adapter.store.close()


def build_adapter_service(
    settings: Settings,
    *,
    admin_token: str,
    adapter_settings: AdapterSettings | None = None,
    ocpp_port: int | None = None,
    extra_points: Sequence[ConfiguredPoint] = (),
) -> AdapterService:
    """Everything `gridcap cpo serve` runs, built and checked; nothing is started yet. The charge points of
    `cpo_charge_points_file` and `extra_points` are registered (or updated) at start."""
    if not settings.cpo_dso_password:
        raise ConfigError(
            "cpo_dso_password (GRIDCAP_CPO_DSO_PASSWORD) is not set: the adapter accepts OSCP calls only from "
            "the DSO, which must send this password (the DSO's oscp_password)"
        )
    configured = load_charge_points(settings.cpo_charge_points_file) if settings.cpo_charge_points_file else []
    configured += extra_points
    messages = MessageLog()
    link = None
    if settings.cpo_dso_url:
        if not settings.cpo_username or not settings.cpo_password:
            raise ConfigError(
                "cpo_username and cpo_password (GRIDCAP_CPO_USERNAME, GRIDCAP_CPO_PASSWORD) must be set: "
                "they are this CPO's OSCP login at the DSO"
            )
        client = OscpClient(
            wsdl_dir=WSDL_DIR,
            username=settings.cpo_username,
            password=settings.cpo_password,
            timeout_s=settings.oscp_push_timeout_s,
        )
        url = dso_endpoint(settings.cpo_dso_url, settings.cpo_dso_binding)
        link = DsoLink(client, messages, url=url, binding=settings.cpo_dso_binding)
    store = CpoStore(settings.cpo_database_url, allow_open_charge_points=settings.cpo_open_charge_points == "true")
    for entry in configured:  # the file is authoritative for the charge points it lists
        if store.get_charge_point(entry.charge_point.id) is None:
            store.add_charge_point(entry.charge_point, username=entry.username, password=entry.password)
        else:
            store.update_charge_point(entry.charge_point)
            if entry.password is not None:
                store.set_credentials(entry.charge_point.id, username=entry.username, password=entry.password)
    defaults = AdapterSettings(heartbeat_interval_s=settings.heartbeat_interval_s)
    adapter = Adapter(
        store, dso=link, settings=adapter_settings or defaults, call_timeout_s=settings.ocpp_call_timeout_s
    )
    app = Flask("gridcap-cpo")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    role = cpo_role(
        receive=adapter.receive,
        seen=adapter.heard_from_dso,
        heartbeat_interval_s=lambda: adapter.settings.heartbeat_interval_s,
        dso_username=settings.cpo_dso_username,
        dso_password=settings.cpo_dso_password,
    )
    gateway = OscpGateway(role, GatewaySettings(settings.max_body_bytes, settings.oscp_rate_per_minute), messages)
    register_cpo_api(app, adapter, admin_token=admin_token, messages=messages)
    register_oscp(app, gateway)
    port = settings.ocpp_port if ocpp_port is None else ocpp_port
    return AdapterService(settings, adapter, app, messages, ocpp_host=settings.host, ocpp_port=port)
