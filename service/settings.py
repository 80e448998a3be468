"""The one settings object: embedded defaults, then an optional TOML file, then the environment.

Every key can be set in the TOML file named by GRIDCAP_CONFIG (keys as below, lower case) or as an
environment variable GRIDCAP_<KEY>; the environment wins. Nothing is read at import time.
"""

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.domain.allocation import Policy


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what is expected."""


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///var/gridcap.db"
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 8
    admin_token: str = ""  # empty: read from admin_token_file
    admin_token_file: str = "var/admin-token"  # noqa: S105 - a path, not a secret
    horizon_hours: int = 48
    reclaim_notice_s: int = 900
    usage_margin_share: Decimal = Decimal("0.2")
    usage_lookback_hours: int = 24
    max_body_bytes: int = 1_048_576
    heartbeat_interval_s: int = 60
    oscp_rate_per_minute: int = 600  # requests per CPO per minute, per server process
    oscp_push_timeout_s: int = 10
    public_url: str = ""  # how CPOs reach this service, e.g. https://dso.example; empty: the host they used
    oscp_username: str = "dso"  # how the DSO identifies itself to CPO endpoints
    oscp_password: str = ""  # empty: pushes and heartbeats to CPOs carry no credentials
    # Timeseries: where measured cable load is read and results are written (see service/timeseries)
    timeseries_backend: str = "embedded"  # embedded | influx1 | influx2
    timeseries_path: str = "var/timeseries.db"  # the embedded store's file
    influx_url: str = "http://127.0.0.1:8086"
    influx_database: str = "gridcap"  # influx1: database (2.x/3.x: mapped by DBRP)
    influx_username: str = ""
    influx_password: str = ""
    influx_token: str = ""  # influx2
    influx_org: str = ""  # influx2
    influx_bucket: str = "gridcap"  # influx2
    influx_timeout_s: int = 30
    load_measurement: str = "cable_load"
    load_field: str = "value"
    load_cable_tag: str = "cable"
    load_phase_tag: str = ""  # empty: one series per cable; else per-phase series, combined per block
    load_unit: str = "KW"  # KW or A: the unit of the measured values
    load_power_factor: Decimal = Decimal("0.9")  # the lowest expected; kW -> A divides by it (0.5-1)
    results_prefix: str = "gridcap_"  # measurements written back for monitoring start with this
    # Forecasts
    forecast_interval_min: int = 15
    forecast_history_weeks: int = 8
    forecast_coverage: Decimal = Decimal("0.95")
    forecast_local_tz: str = "Europe/Amsterdam"  # calendar features and the backtest's issue time
    backtest_issue_time: str = "12:00"  # local: backtests issue each day-ahead forecast then, the day before
    # The CPO adapter (`gridcap cpo serve`): OSCP and REST on cpo_port, OCPP 1.6-J on ocpp_port
    cpo_port: int = 8081
    ocpp_port: int = 9000
    cpo_database_url: str = "sqlite:///var/cpo.db"  # the adapter's own small database
    cpo_dso_url: str = ""  # the DSO's base URL, e.g. https://dso.example (its OSCP endpoint is under /oscp/1.0)
    cpo_dso_binding: str = "soap11"  # soap11 | soap12 | json
    cpo_username: str = ""  # this CPO's OSCP login at the DSO
    cpo_password: str = ""
    cpo_dso_username: str = "dso"  # how the DSO identifies itself when it calls the adapter
    cpo_dso_password: str = ""  # required: the DSO's oscp_password
    cpo_charge_points_file: str = ""  # a TOML file of [[charge_point]] tables, registered at start
    cpo_open_charge_points: str = "false"  # true: charge points without a password connect without credentials
    ocpp_call_timeout_s: int = 10
    log_level: str = "INFO"

    def policy(self) -> Policy:
        return Policy(
            horizon=timedelta(hours=self.horizon_hours),
            reclaim_notice=timedelta(seconds=self.reclaim_notice_s),
            usage_margin_share=self.usage_margin_share,
            usage_lookback=timedelta(hours=self.usage_lookback_hours),
            heartbeat_interval=timedelta(seconds=self.heartbeat_interval_s),
        )

    def backend_needs_url(self) -> bool:
        return self.timeseries_backend != "embedded"

    def resolved_admin_token(self) -> str:
        """The admin token from the setting, else from its file; refuse to run without one."""
        token = self.admin_token or read_token_file(Path(self.admin_token_file))
        if len(token) < 16:
            raise ConfigError(
                "no admin token: set GRIDCAP_ADMIN_TOKEN (at least 16 characters) or run `gridcap init-db`, "
                f"which writes a random one to {self.admin_token_file}"
            )
        return token


def read_token_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        raise ConfigError(
            f"setting admin_token_file (GRIDCAP_ADMIN_TOKEN_FILE): {path} is not UTF-8 text, so it holds no token; "
            "delete it and run `gridcap init-db` to write a new one"
        ) from None
    except OSError as exc:  # a directory, no permission, ...
        raise ConfigError(
            f"setting admin_token_file (GRIDCAP_ADMIN_TOKEN_FILE) {path} cannot be read "
            f"({exc.strerror or exc}); point it at the token file `gridcap init-db` writes"
        ) from None


_CHECKS: dict[str, tuple[object, object]] = {
    "port": (1, 65535),
    "threads": (1, 256),
    "horizon_hours": (1, 24 * 7),
    "reclaim_notice_s": (0, 24 * 3600),
    "usage_lookback_hours": (1, 24 * 31),
    "max_body_bytes": (1024, 64 * 1_048_576),
    "heartbeat_interval_s": (5, 3600),
    "oscp_rate_per_minute": (1, 1_000_000),
    "oscp_push_timeout_s": (1, 300),
    "influx_timeout_s": (1, 600),
    "forecast_interval_min": (1, 24 * 60),
    "forecast_history_weeks": (1, 104),
    "cpo_port": (1, 65535),
    "ocpp_port": (1, 65535),
    "ocpp_call_timeout_s": (1, 300),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = env.get("GRIDCAP_CONFIG")
    if config_path:
        values.update(_read_config(config_path))
    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{config_path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for name in known:
        if f"GRIDCAP_{name.upper()}" in env:
            values[name] = env[f"GRIDCAP_{name.upper()}"]
    converted: dict[str, Any] = {}
    for name, raw in values.items():
        converted[name] = _convert(name, known[name].type, raw)
    settings = Settings(**converted)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    """Rules that span a value's meaning rather than its type."""
    if not Decimal(0) <= settings.usage_margin_share <= 10:
        raise ConfigError("usage_margin_share must be between 0 and 10 (0.2 = keep peak usage + 20 %)")
    if settings.public_url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", settings.public_url):
        raise ConfigError(f"public_url must be an http(s) URL such as https://dso.example, got {settings.public_url!r}")
    if settings.timeseries_backend not in {"embedded", "influx1", "influx2"}:
        raise ConfigError(
            f"timeseries_backend must be embedded, influx1 or influx2, got {settings.timeseries_backend!r}"
        )
    if settings.load_unit not in {"KW", "A"}:
        raise ConfigError(
            f"load_unit must be KW or A (the unit of the measured cable load), got {settings.load_unit!r}"
        )
    if not Decimal("0.5") <= settings.forecast_coverage < 1:
        raise ConfigError(
            f"forecast_coverage must be at least 0.5 and below 1 (0.95 = 95 %), got {settings.forecast_coverage}"
        )
    if not Decimal("0.5") <= settings.load_power_factor <= 1:
        raise ConfigError(f"load_power_factor must be between 0.5 and 1, got {settings.load_power_factor}")
    try:
        ZoneInfo(settings.forecast_local_tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"forecast_local_tz must be an IANA time zone such as Europe/Amsterdam, got {settings.forecast_local_tz!r}"
        ) from None
    if not re.fullmatch(r"([01]\d|2[0-3]):(00|15|30|45)", settings.backtest_issue_time):
        raise ConfigError(
            f"backtest_issue_time must be HH:MM on a quarter hour, e.g. 12:00, got {settings.backtest_issue_time!r}"
        )
    if settings.backend_needs_url() and not re.fullmatch(r"https?://[^\s/?#]+/?", settings.influx_url):
        raise ConfigError(
            f"influx_url must be an http(s) URL such as http://127.0.0.1:8086, got {settings.influx_url!r}"
        )
    if settings.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError("log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    _check_cpo(settings)


def _check_cpo(settings: Settings) -> None:
    if settings.cpo_dso_binding not in {"soap11", "soap12", "json"}:
        raise ConfigError(f"cpo_dso_binding must be soap11, soap12 or json, got {settings.cpo_dso_binding!r}")
    if settings.cpo_dso_url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", settings.cpo_dso_url):
        raise ConfigError(
            f"cpo_dso_url must be an http(s) URL such as https://dso.example, got {settings.cpo_dso_url!r}"
        )
    if settings.cpo_open_charge_points.lower() not in {"true", "false"}:
        raise ConfigError(f"cpo_open_charge_points must be true or false, got {settings.cpo_open_charge_points!r}")


def _read_config(config_path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"GRIDCAP_CONFIG names {config_path}, which does not exist") from None
    except IsADirectoryError:
        raise ConfigError(
            f"GRIDCAP_CONFIG names {config_path}, which is a directory; name a file, e.g. /etc/gridcap/gridcap.toml"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{config_path} is not UTF-8 text (byte {exc.start} cannot be decoded); TOML files are UTF-8, "
            "so save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"GRIDCAP_CONFIG names {config_path}, which cannot be read ({exc.strerror or exc}); check its permissions"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path} is not valid TOML: {exc}") from None


def _convert(name: str, kind: object, raw: object) -> object:
    where = f"setting {name} (GRIDCAP_{name.upper()})"
    if kind in (int, "int"):
        try:
            value = int(str(raw))
        except ValueError:
            raise ConfigError(f"{where} must be a whole number, got {raw!r}") from None
        low, high = _CHECKS.get(name, (None, None))
        if low is not None and not low <= value <= high:  # type: ignore[operator]
            raise ConfigError(f"{where} must be between {low} and {high}, got {value}")
        return value
    if kind in (Decimal, "Decimal"):
        try:
            number = Decimal(str(raw))
        except InvalidOperation:
            raise ConfigError(f"{where} must be a number, got {raw!r}") from None
        if not number.is_finite():
            raise ConfigError(f"{where} must be a finite number such as 0.2, got {raw!r}")
        return number
    if not isinstance(raw, str):
        raise ConfigError(f"{where} must be a string, got {raw!r}")
    return raw
