"""Settings: embedded defaults, then the TOML file named by GRIDCAP_CONFIG, then GRIDCAP_* variables.

Every malformed setting is a ConfigError whose message names the setting and says what it expects.
"""

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from service.settings import ConfigError, Settings, load_settings


def config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "gridcap.toml"
    path.write_text(text, encoding="utf-8")
    return {"GRIDCAP_CONFIG": str(path)}


def refused(environ: dict[str, str], *needles: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    return message


# --- where values come from ----------------------------------------------------------------------


def test_defaults_without_a_file_or_variables() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.database_url == "sqlite:///var/gridcap.db"
    assert (settings.host, settings.port, settings.threads) == ("127.0.0.1", 8080, 8)
    assert settings.admin_token == ""
    assert settings.usage_margin_share == Decimal("0.2")
    policy = settings.policy()
    assert policy.horizon == timedelta(hours=48)
    assert policy.reclaim_notice == timedelta(seconds=900)
    assert policy.usage_lookback == timedelta(hours=24)


def test_the_environment_is_read_only_when_asked() -> None:
    assert load_settings({"GRIDCAP_PORT": "9000"}).port == 9000


def test_a_config_file_sets_values_of_every_type(tmp_path: Path) -> None:
    env = config(
        tmp_path,
        'host = "0.0.0.0"\nport = 9090\nusage_margin_share = 0.5\nlog_level = "debug"\nhorizon_hours = "24"\n',
    )
    settings = load_settings(env)
    assert (settings.host, settings.port, settings.horizon_hours) == ("0.0.0.0", 9090, 24)  # noqa: S104
    assert settings.usage_margin_share == Decimal("0.5")
    assert settings.log_level == "debug"


def test_the_environment_wins_over_the_config_file(tmp_path: Path) -> None:
    env = config(tmp_path, 'port = 9090\nhost = "file.example"\n')
    settings = load_settings({**env, "GRIDCAP_PORT": "9191", "GRIDCAP_USAGE_MARGIN_SHARE": "1.5"})
    assert settings.port == 9191
    assert settings.host == "file.example"
    assert settings.usage_margin_share == Decimal("1.5")


def test_other_gridcap_variables_are_not_settings() -> None:
    assert load_settings({"GRIDCAP_TEST_POSTGRES_URL": "postgresql://x", "GRIDCAP_PROT": "1"}) == Settings()


def test_unknown_keys_in_the_config_file_are_named(tmp_path: Path) -> None:
    env = config(tmp_path, 'prot = 8080\nlog_level = "INFO"\n[server]\nport = 1\n')
    message = refused(env, "unknown setting(s) prot, server", "known: database_url, host, port")
    assert str(tmp_path) in message


# --- the config file -------------------------------------------------------------------------------


def test_a_missing_config_file(tmp_path: Path) -> None:
    refused({"GRIDCAP_CONFIG": str(tmp_path / "nope.toml")}, "GRIDCAP_CONFIG names", "does not exist")


def test_a_config_file_that_is_not_toml(tmp_path: Path) -> None:
    refused(config(tmp_path, "port = \n"), "is not valid TOML")


def test_a_config_file_that_is_a_directory(tmp_path: Path) -> None:
    refused({"GRIDCAP_CONFIG": str(tmp_path)}, f"GRIDCAP_CONFIG names {tmp_path}, which is a directory", "a file")


def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('host = "Straße"\n'.encode("latin-1"))
    refused({"GRIDCAP_CONFIG": str(path)}, f"{path} is not UTF-8 text", "save it as UTF-8")


def test_a_config_file_that_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = config(tmp_path, "port = 9090\n")

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    monkeypatch.setattr(Path, "read_bytes", denied)
    refused(env, f"GRIDCAP_CONFIG names {env['GRIDCAP_CONFIG']}, which cannot be read", "Permission denied")


# --- values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["eighty", "80.5", "", "1e3", "1" * 5000])
def test_whole_numbers(raw: str) -> None:
    refused({"GRIDCAP_PORT": raw}, "setting port (GRIDCAP_PORT) must be a whole number")


@pytest.mark.parametrize("value", ["8080.5", "true", '"eighty"', "[8080]"])
def test_whole_numbers_in_the_config_file(tmp_path: Path, value: str) -> None:
    refused(config(tmp_path, f"port = {value}\n"), "setting port (GRIDCAP_PORT) must be a whole number")


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("port", 1, 65535),
        ("threads", 1, 256),
        ("horizon_hours", 1, 168),
        ("reclaim_notice_s", 0, 86400),
        ("usage_lookback_hours", 1, 744),
        ("max_body_bytes", 1024, 67108864),
        ("heartbeat_interval_s", 5, 3600),
        ("oscp_rate_per_minute", 1, 1_000_000),
        ("oscp_push_timeout_s", 1, 300),
    ],
)
def test_whole_numbers_in_range(name: str, low: int, high: int) -> None:
    variable = f"GRIDCAP_{name.upper()}"
    assert getattr(load_settings({variable: str(low)}), name) == low
    assert getattr(load_settings({variable: str(high)}), name) == high
    for outside in (low - 1, high + 1):
        refused({variable: str(outside)}, f"setting {name} ({variable}) must be between {low} and {high}")


@pytest.mark.parametrize("raw", ["lots", "0,2", "", "1/5"])
def test_decimals(raw: str) -> None:
    refused({"GRIDCAP_USAGE_MARGIN_SHARE": raw}, "usage_margin_share (GRIDCAP_USAGE_MARGIN_SHARE) must be a number")


@pytest.mark.parametrize("raw", ["nan", "NaN", "-nan", "sNaN", "inf", "Infinity", "-Infinity"])
def test_decimals_must_be_finite(raw: str) -> None:
    refused(
        {"GRIDCAP_USAGE_MARGIN_SHARE": raw},
        "usage_margin_share (GRIDCAP_USAGE_MARGIN_SHARE) must be a finite number",
        repr(raw),
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_decimals_in_the_config_file_must_be_finite(tmp_path: Path, value: str) -> None:
    refused(config(tmp_path, f"usage_margin_share = {value}\n"), "must be a finite number")


@pytest.mark.parametrize("value", ["true", "[0.2]", "{ a = 1 }"])
def test_decimals_of_the_wrong_type_in_the_config_file(tmp_path: Path, value: str) -> None:
    refused(config(tmp_path, f"usage_margin_share = {value}\n"), "must be a number")


@pytest.mark.parametrize("raw", ["-0.1", "10.01"])
def test_usage_margin_share_range(raw: str) -> None:
    refused({"GRIDCAP_USAGE_MARGIN_SHARE": raw}, "usage_margin_share must be between 0 and 10")


@pytest.mark.parametrize("value", ["1", "true", "[1]", "2026-01-01"])
def test_strings_in_the_config_file(tmp_path: Path, value: str) -> None:
    refused(config(tmp_path, f"host = {value}\n"), "setting host (GRIDCAP_HOST) must be a string")


def test_log_level() -> None:
    assert load_settings({"GRIDCAP_LOG_LEVEL": "warning"}).log_level == "warning"
    refused({"GRIDCAP_LOG_LEVEL": "LOUD"}, "log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")


# --- the admin token -------------------------------------------------------------------------------


def test_the_admin_token_setting_wins_over_its_file(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    path.write_text("from-the-file-and-long-enough\n")
    assert Settings(admin_token_file=str(path)).resolved_admin_token() == "from-the-file-and-long-enough"
    configured = Settings(admin_token="from-the-setting-long-enough", admin_token_file=str(path))  # noqa: S106
    assert configured.resolved_admin_token() == "from-the-setting-long-enough"


def test_no_admin_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no admin token: set GRIDCAP_ADMIN_TOKEN"):
        Settings(admin_token_file=str(tmp_path / "missing")).resolved_admin_token()
    with pytest.raises(ConfigError, match="at least 16 characters"):
        Settings(admin_token="short").resolved_admin_token()  # noqa: S106


def test_an_unreadable_admin_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"GRIDCAP_ADMIN_TOKEN_FILE. {re.escape(str(tmp_path))} cannot be read"):
        Settings(admin_token_file=str(tmp_path)).resolved_admin_token()
    binary = tmp_path / "admin-token"
    binary.write_bytes(b"\xff\xfe not text at all, but long")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        Settings(admin_token_file=str(binary)).resolved_admin_token()


@pytest.mark.parametrize("raw", ["dso.example", "ftp://dso.example", "https://", "https://dso.example/a b"])
def test_public_url(raw: str) -> None:
    refused({"GRIDCAP_PUBLIC_URL": raw}, "public_url must be an http(s) URL")


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"GRIDCAP_TIMESERIES_BACKEND": "influx"}, "timeseries_backend must be embedded, influx1 or influx2"),
        ({"GRIDCAP_LOAD_UNIT": "MW"}, "load_unit must be KW or A"),
        ({"GRIDCAP_FORECAST_COVERAGE": "0.4"}, "forecast_coverage must be at least 0.5 and below 1"),
        ({"GRIDCAP_FORECAST_COVERAGE": "1"}, "forecast_coverage must be at least 0.5 and below 1"),
        ({"GRIDCAP_TIMESERIES_BACKEND": "influx1", "GRIDCAP_INFLUX_URL": "127.0.0.1:8086"}, "influx_url must be"),
        ({"GRIDCAP_FORECAST_INTERVAL_MIN": "0"}, "forecast_interval_min"),
        ({"GRIDCAP_FORECAST_HISTORY_WEEKS": "105"}, "forecast_history_weeks"),
        ({"GRIDCAP_BACKTEST_ISSUE_TIME": "12:10"}, "backtest_issue_time must be HH:MM on a quarter hour"),
        ({"GRIDCAP_FORECAST_LOCAL_TZ": "Mars/Olympus"}, "forecast_local_tz must be an IANA time zone"),
        ({"GRIDCAP_LOAD_POWER_FACTOR": "1.2"}, "load_power_factor must be between 0.5 and 1"),
    ],
)
def test_timeseries_and_forecast_settings_are_checked(environ: dict[str, str], needle: str) -> None:
    refused(environ, needle)


def test_the_influx_url_is_only_checked_when_influx_is_used() -> None:
    assert load_settings({"GRIDCAP_INFLUX_URL": "not a url"}).timeseries_backend == "embedded"
    settings = load_settings({"GRIDCAP_TIMESERIES_BACKEND": "influx2", "GRIDCAP_INFLUX_URL": "https://influx.example"})
    assert settings.influx_url == "https://influx.example"
