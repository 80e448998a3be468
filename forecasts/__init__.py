"""Base-load forecasting for gridcap: a pure package (pandas, no I/O, no web or database framework).

Empty for now: cables use the static base load a DSO engineer sets (`Cable.base_load`, served by
`service.domain.ports.StaticBaseLoad`). A later issue fills this package with dataset checks,
features, models, a backtest and metrics around `forecast_core(history, *, config)`, which the
service then wires in as a `BaseLoadSource`. The import-linter contract in pyproject.toml keeps
this package free of Flask, SQLAlchemy, InfluxDB, zeep and APScheduler.
"""
