"""gunicorn settings and hooks: `gunicorn -c python:service.gunicorn_conf` serves service.wsgi:app.

Settings (the environment; gunicorn's own command-line flags override them):

- bind: GRIDCAP_HOST and GRIDCAP_PORT (or GRIDCAP_CONFIG), as for `gridcap serve`
- workers: GRIDCAP_WORKERS (default 2); threads per worker: GRIDCAP_THREADS (more than 1: gthread)
- GRIDCAP_WITH_SCHEDULER=true: every worker starts the jobs; only the one holding the scheduler
  lease in the database runs them, the others take over within the lease's TTL if it dies
- PROMETHEUS_MULTIPROC_DIR: where the workers keep their metrics (prometheus_client multiprocess
  mode). Unset: a fresh private directory under the system temp dir, removed on exit. Its *.db
  files are deleted at start: counters start at 0 with the server, as Prometheus expects.

gunicorn applies every module-level name that matches one of its settings, so helpers start with _.
Importing this module is for gunicorn's master only: it reads the settings and sets the variable.
The workers are forked from the master and inherit its environment, which is why setting
PROMETHEUS_MULTIPROC_DIR here, before any worker imports prometheus_client, is enough.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from service.settings import ConfigError, load_settings

_MULTIPROC_VAR = "PROMETHEUS_MULTIPROC_DIR"
_MAX_WORKERS = 64


def _workers() -> int:
    raw = os.environ.get("GRIDCAP_WORKERS", "2")
    if not raw.strip().isdigit() or not 1 <= int(raw) <= _MAX_WORKERS:
        raise ConfigError(f"GRIDCAP_WORKERS must be a whole number from 1 to {_MAX_WORKERS}, got {raw!r}")
    return int(raw)


def _with_scheduler() -> bool:
    raw = os.environ.get("GRIDCAP_WITH_SCHEDULER", "false").strip().lower()
    if raw not in {"true", "false"}:
        raise ConfigError(f"GRIDCAP_WITH_SCHEDULER must be true or false, got {raw!r}")
    return raw == "true"


def _metrics_dir() -> tuple[Path, bool]:
    """The multiprocess directory, and whether this module created it (then it removes it on exit)."""
    configured = os.environ.get(_MULTIPROC_VAR)
    if configured:
        return Path(configured), False
    created = Path(tempfile.mkdtemp(prefix="gridcap-metrics-"))  # private (0700), one per server
    os.environ[_MULTIPROC_VAR] = str(created)
    return created, True


_settings = load_settings()
_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
_scheduled = _with_scheduler()
_metrics_path, _metrics_path_created = _metrics_dir()
_jobs: list[Any] = []  # this worker's scheduler (service.jobs.scheduler.Jobs), if it runs one

# --- gunicorn settings ------------------------------------------------------------------------------

wsgi_app = "service.wsgi:app"
bind = [f"{_host}:{_settings.port}"]
workers = _workers()
threads = _settings.threads
preload_app = False  # each worker builds its own engine and threads: nothing is shared across the fork

# --- hooks ----------------------------------------------------------------------------------------------


def on_starting(server: Any) -> None:
    """Before the first fork: start the counters from zero (files of an earlier run would add up)."""
    _metrics_path.mkdir(parents=True, exist_ok=True)
    for stale in _metrics_path.glob("*.db"):  # only prometheus_client's files: the directory may be shared
        stale.unlink()


def post_worker_init(worker: Any) -> None:
    """In the worker, once the app is loaded: start the jobs if asked to (they wait for the lease)."""
    if not _scheduled:
        return
    from service.app import wiring
    from service.jobs.scheduler import jobs_from_settings  # the same jobs as `gridcap serve --with-scheduler`

    wired = wiring(worker.wsgi)
    jobs = jobs_from_settings(_settings, wired.ctx, wired.recorder)
    jobs.start()
    _jobs.append(jobs)


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, as it ends: stop its jobs (releasing the lease) and write the message record."""
    for jobs in _jobs:
        jobs.shutdown(wait=True)
    app = getattr(worker, "wsgi", None)  # unset if the app failed to load
    wired = getattr(app, "extensions", {}).get("gridcap")
    if wired is not None:
        wired.close()


def child_exit(server: Any, worker: Any) -> None:
    """In the master, for each ended worker: drop its live-gauge files (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_metrics_path))  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _metrics_path_created:
        shutil.rmtree(_metrics_path, ignore_errors=True)
