"""The `gridcap` command: serve the API, initialise the database, and administer the grid.

Every change goes through the same use cases the REST API calls, with the actor `cli:<OS user>`
in the audit. Errors print `gridcap: error: <what to fix>` to stderr: exit code 2 for usage,
validation and configuration errors, 1 for anything else; a traceback only with --debug.
"""

import argparse
import contextlib
import dataclasses
import getpass
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy import inspect as sql_inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from service import demo
from service.domain.blocks import BLOCK, FIRST_YEAR, LAST_YEAR, block_starts
from service.domain.errors import GridcapError, InvariantViolation
from service.domain.model import Binding, Cable, Cpo, LimitOverride, Subscription
from service.domain.units import Unit
from service.settings import ConfigError, Settings, load_settings, read_token_file
from service.usecases import Context, audit, build_context, capacity, cpos, forecasting, grid, measurements

if TYPE_CHECKING:
    from service.cpo.app import ConfiguredPoint
    from service.timeseries import TimeseriesStore

log = logging.getLogger("gridcap.cli")

PROG = "gridcap"
EXIT_USAGE = 2
EXIT_FAILURE = 1


class UsageError(Exception):
    """The command line is wrong; the message says how to fix it."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so main() reports every error one way."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# --- argument types: validate on the command line, before anything is opened --------------------


def _aware_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time; write e.g. 2026-03-29T18:00+02:00 or 2026-03-29T16:00Z"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset, so its meaning would depend on this machine's time zone; "
            "add one, e.g. 2026-03-29T18:00+02:00 or 2026-03-29T16:00Z"
        )
    try:
        year = moment.astimezone(UTC).year
    except OverflowError:  # e.g. 9999-12-31T23:45-01:00 is in the year 10000 in UTC
        year = None
    if year is None or not FIRST_YEAR <= year <= LAST_YEAR:
        raise argparse.ArgumentTypeError(
            f"{text!r} is outside the years {FIRST_YEAR} to {LAST_YEAR} (UTC) that gridcap handles; "
            "give a date-time within them"
        )
    return moment


def _quantity(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 such as 40 or 12.5, got {text!r}")
    return value


def _share(text: str) -> Decimal:
    value = _quantity(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1) such as 0.1, got {text!r}")
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {text!r}")
        return value

    return convert


def _unit(text: str) -> Unit:
    try:
        return Unit(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unit must be A (current per phase) or KW (total power), got {text!r}"
        ) from None


def _binding(text: str) -> Binding:
    try:
        return Binding(text.lower())
    except ValueError:
        raise argparse.ArgumentTypeError(f"binding must be soap11, soap12 or json, got {text!r}") from None


# --- output ---------------------------------------------------------------------------------------


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _when(moment: datetime, *, seconds: bool = False) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ" if seconds else "%Y-%m-%dT%H:%MZ")


def _json_default(value: Any) -> Any:
    """JSON for our types: datetimes as ISO 8601 with offset, Decimals as numbers, dataclasses as objects."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot print {type(value).__name__} as JSON")


def _plain(value: Any) -> Any:
    """The JSON-ready form of a value (dicts, lists, strings and numbers only)."""
    return json.loads(json.dumps(value, default=_json_default))


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=_json_default, indent=2))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _fields(pairs: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}")


# --- plumbing -------------------------------------------------------------------------------------


def _actor() -> str:
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        name = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{name}"


def _sqlite_file(database_url: str) -> Path | None:
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigError(
            f"setting database_url (GRIDCAP_DATABASE_URL) is not a database URL: {database_url!r}; "
            "use e.g. sqlite:///var/gridcap.db or postgresql+psycopg://user:password@host/db"
        ) from None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database)
    return None


@contextlib.contextmanager
def _opened(settings: Settings, *, create: bool = False) -> Iterator[Context]:
    """A context on the configured database; refuses a database that `init-db` has not prepared."""
    path = _sqlite_file(settings.database_url)
    if path is not None and not create and not path.exists():
        raise UsageError(f"the database file {path} does not exist; create it with `gridcap init-db` first")
    ctx = build_context(settings)
    try:
        if not create and not sql_inspect(ctx.db.engine).has_table("decisions"):
            raise UsageError("the database has no gridcap schema yet; create it with `gridcap init-db` first")
        yield ctx
    finally:
        ctx.db.dispose()


def _error(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


# --- serve and init-db ----------------------------------------------------------------------------


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0", "*"):  # noqa: S104 - recognising, not binding
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _shown_token(settings: Settings, token: str) -> str:
    """The token itself if init-db wrote it to its file (a local set-up); else where it came from."""
    if not settings.admin_token:
        return f"{token}  (send as: Authorization: Bearer <token>)"
    if "GRIDCAP_ADMIN_TOKEN" in os.environ:
        source = "GRIDCAP_ADMIN_TOKEN"
    else:
        source = f"admin_token in {os.environ.get('GRIDCAP_CONFIG', 'the config file')}"
    return f"(from {source}; not shown)"


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    token = settings.resolved_admin_token()  # refuse early: no token, no server
    with _opened(settings):  # refuse a database init-db has not prepared
        pass
    local_adapter = None if settings.admin_token else _demo_adapter(settings)
    if local_adapter is not None and not settings.oscp_password:  # the local demo: pushes reach its adapter
        settings = dataclasses.replace(settings, oscp_password=str(local_adapter["dso_password"]))

    import waitress

    from service.app import create_app, wiring
    from service.jobs.scheduler import jobs_from_settings

    app = create_app(settings)
    try:
        server = waitress.create_server(app, host=settings.host, port=settings.port, threads=settings.threads)
    except OSError as exc:
        wiring(app).close()
        raise UsageError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); "
            "pick another port with --port or GRIDCAP_PORT"
        ) from None
    wired = wiring(app)
    scheduler = jobs_from_settings(settings, wired.ctx, wired.recorder) if args.with_scheduler else None
    base = f"http://{_display_host(settings.host)}:{settings.port}"
    print(f"gridcap is serving on {base} (database {make_url(settings.database_url).render_as_string()})")
    _fields(
        [
            ("  API", f"{base}/api/v1"),
            ("  Swagger UI", f"{base}/api/v1/docs"),
            ("  OpenAPI", f"{base}/api/v1/openapi.json"),
            ("  Health", f"{base}/api/v1/health"),
            ("  OSCP SOAP", f"{base}/oscp/1.0/soap (WSDL: {base}/oscp/1.0/soap?wsdl)"),
            ("  OSCP JSON", f"{base}/oscp/1.0/json/<Operation> (schemas: {base}/oscp/1.0/json/schema)"),
            (
                "  Jobs",
                "pushes, heartbeats, hand-outs and forecasts" if scheduler else "not running (--with-scheduler)",
            ),
            ("  Admin token", _shown_token(settings, token)),
        ]
    )
    creds_file = demo.credentials_path(settings.database_url, settings.admin_token_file)
    # Secrets go to the terminal only for a local set-up, whose token init-db wrote to a file; a
    # deployment that configures its token keeps them out of its logs (journald, container logs).
    creds = [] if settings.admin_token else demo.read_credentials(creds_file, settings.database_url)
    if creds:
        print(f"Demo CPO credentials (from {creds_file}):")
        _table(
            ["  CPO", "USERNAME", "PASSWORD", "CABLES"],
            [
                [
                    f"  {c.get('id', '')}",
                    str(c.get("username", "")),
                    str(c.get("password", "")),
                    ", ".join(map(str, c.get("cables", []))),
                ]
                for c in creds
            ],
        )
    print("Stop with Ctrl-C.", flush=True)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    if scheduler is not None:
        scheduler.start()
    try:
        server.run()  # returns on Ctrl-C or SIGTERM (waitress catches the KeyboardInterrupt)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        server.close()
        wiring(app).close()
    print("gridcap: stopped", flush=True)
    return 0


def _admin_token_step(settings: Settings) -> Callable[[], str]:
    """Check the admin token now; return the step that writes one (after the schema exists)."""
    if settings.admin_token:
        settings.resolved_admin_token()  # too short: a ConfigError now, not when serving
        return lambda: "admin token: set by GRIDCAP_ADMIN_TOKEN (or the config file); no file written"
    path = Path(settings.admin_token_file)
    if path.exists():
        if len(read_token_file(path)) < 16:
            raise ConfigError(
                f"{path} exists but holds no admin token of at least 16 characters; "
                "delete it and run `gridcap init-db` again to get a new one"
            )
        return lambda: f"admin token: kept {path}"

    def write() -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(secrets.token_urlsafe(32) + "\n")
        return f"admin token: written to {path} (mode 0600)"

    return write


def _seed_demo_measurements(settings: Settings, ctx: Context) -> None:
    """Synthetic history for the demo cables, only into the embedded store: never into a real InfluxDB."""
    if settings.timeseries_backend != "embedded":
        print(f"demo measurements: not written to the {settings.timeseries_backend} store; import your own")
        return
    with _timeseries(settings) as store:
        written = demo.seed_demo_measurements(ctx, store, actor=_actor())
    if written:
        print(f"demo measurements: {written} points of 8 weeks' load written to {settings.timeseries_path}")


def cmd_init_db(args: argparse.Namespace) -> int:
    settings = load_settings()
    write_token = _admin_token_step(settings)
    path = _sqlite_file(settings.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    with _opened(settings, create=True) as ctx:
        ctx.db.create_schema()
        print(f"database schema ready: {make_url(settings.database_url).render_as_string()}")
        print(write_token())
        if not args.demo:
            return 0
        adapter_url = f"http://127.0.0.1:{settings.cpo_port}/oscp/1.0/soap"  # `gridcap cpo serve --demo`
        seeded = demo.seed_demo(ctx, actor=_actor(), adapter_url=adapter_url)
        if seeded is None:
            count = len(grid.list_cables(ctx))
            print(f"demo grid: not seeded, the database already has {count} cable(s); nothing changed")
            return 0
        _seed_demo_measurements(settings, ctx)
        creds_file = demo.credentials_path(settings.database_url, settings.admin_token_file)
        demo.write_credentials(creds_file, settings.database_url, seeded)
        print(
            f"demo grid: seeded {len(seeded.cables)} cables ({', '.join(seeded.cables)}), "
            f"{len(seeded.cpos)} CPOs and {seeded.subscriptions} subscriptions"
        )
        o = seeded.override
        print(
            f"  maintenance override {o.id} on demo-molenweg: {_num(o.limit)} A from {_when(o.start)} to {_when(o.end)}"
        )
        print(f"  demo CPO credentials: {creds_file} (mode 0600); `gridcap serve` prints them")
    return 0


# --- the CPO adapter and simulated charge points ---------------------------------------------------


def _demo_adapter(settings: Settings) -> dict[str, Any] | None:
    return demo.read_adapter(
        demo.credentials_path(settings.database_url, settings.admin_token_file), settings.database_url
    )


def _demo_adapter_or_fail(settings: Settings) -> dict[str, Any]:
    found = _demo_adapter(settings)
    if found is None:
        raise UsageError("--demo needs the demo grid: run `gridcap init-db --demo` first (as `make run` does)")
    return found


def _demo_points(found: dict[str, Any]) -> list["ConfiguredPoint"]:
    from service.cpo.app import ConfiguredPoint
    from service.cpo.profiles import ChargePoint

    return [
        ConfiguredPoint(
            ChargePoint(
                id=str(cp["id"]),
                cable_id=str(cp["cable_id"]),
                max_current_a=Decimal(str(cp["max_current_a"])),
                phases=int(cp["phases"]),
                connectors=int(cp["connectors"]),
            ),
            username=str(cp["id"]),
            password=str(cp["password"]),
        )
        for cp in found["charge_points"]
    ]


def cmd_cpo_serve(args: argparse.Namespace) -> int:
    import waitress

    from service.cpo.app import build_adapter_service

    settings = load_settings()
    overrides = {k: v for k, v in (("host", args.host), ("cpo_port", args.port)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    token = settings.resolved_admin_token()
    extra: list[ConfiguredPoint] = []
    if args.demo:
        found = _demo_adapter_or_fail(settings)
        folder = demo.credentials_path(settings.database_url, settings.admin_token_file).parent
        local: dict[str, Any] = {
            "cpo_dso_url": settings.cpo_dso_url or f"http://127.0.0.1:{settings.port}",
            "cpo_username": settings.cpo_username or str(found["username"]),
            "cpo_password": settings.cpo_password or str(found["password"]),
            "cpo_dso_password": settings.cpo_dso_password or str(found["dso_password"]),
        }
        if settings.cpo_database_url == Settings.cpo_database_url:  # the default: next to the demo grid
            local["cpo_database_url"] = f"sqlite:///{folder / 'cpo.db'}"
        settings = dataclasses.replace(settings, **local)
        extra = _demo_points(found)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = build_adapter_service(settings, admin_token=token, extra_points=extra)
    try:
        server = waitress.create_server(service.app, host=settings.host, port=settings.cpo_port, threads=4)
    except OSError as exc:
        service.close()
        raise UsageError(
            f"cannot listen on {settings.host}:{settings.cpo_port} ({exc.strerror or exc}); "
            "pick another port with --port or GRIDCAP_CPO_PORT"
        ) from None
    try:
        ocpp_port = service.start()
    except ConfigError:
        server.close()
        raise
    base = f"http://{_display_host(settings.host)}:{settings.cpo_port}"
    print(
        f"gridcap CPO adapter is serving on {base} (database {make_url(settings.cpo_database_url).render_as_string()})"
    )
    _fields(
        [
            ("  REST API", f"{base}/api/v1/cpo (Swagger UI: {base}/api/v1/cpo/docs)"),
            ("  OSCP SOAP", f"{base}/oscp/1.0/soap (WSDL: {base}/oscp/1.0/soap?wsdl)"),
            ("  OSCP JSON", f"{base}/oscp/1.0/json/<Operation>"),
            ("  OCPP 1.6-J", f"ws://{_display_host(settings.host)}:{ocpp_port}/ocpp/<chargePointId>"),
            ("  DSO", f"{settings.cpo_dso_url or 'none (GRIDCAP_CPO_DSO_URL)'} as {settings.cpo_username or '-'}"),
            ("  Charge points", str(len(service.adapter.store.charge_points()))),
            ("  Admin token", _shown_token(settings, token)),
        ]
    )
    print("Stop with Ctrl-C.", flush=True)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
        service.close()
    print("gridcap CPO adapter: stopped", flush=True)
    return 0


def _register(settings: Settings, adapter_url: str, specs: Sequence[Any], cables: Sequence[str]) -> None:
    """Register generated charge points with a running adapter (already registered ones are kept)."""
    import requests

    if not cables:
        raise UsageError("--register needs --cable CABLE (repeatable): the cables the charge points are on")
    headers = {"Authorization": f"Bearer {settings.resolved_admin_token()}"}
    url = f"{adapter_url.rstrip('/')}/api/v1/cpo/charge-points"
    for n, spec in enumerate(specs):
        body = {
            "id": spec.id,
            "cable_id": cables[n % len(cables)],
            "max_current_a": float(spec.max_current_a),
            "phases": spec.phases,
            "connectors": spec.connectors,
        }
        try:
            reply = requests.post(url, json=body, headers=headers, timeout=10)
        except requests.RequestException as exc:
            raise UsageError(f"cannot register charge points at {url}: {exc}") from None
        if reply.status_code not in (201, 409):
            raise UsageError(f"registering {spec.id} at {url} failed: HTTP {reply.status_code} {reply.text[:200]}")
    print(f"registered {len(specs)} charge points at {adapter_url} (without passwords: the adapter must run with ")
    print("GRIDCAP_CPO_OPEN_CHARGE_POINTS=true; list them with passwords in cpo_charge_points_file otherwise)")


def cmd_simulate(args: argparse.Namespace) -> int:
    import asyncio

    from service.cpo.app import load_charge_points
    from service.cpo.simulator import ChargePointSpec, fleet_specs, run_fleet

    settings = load_settings()
    if args.demo:
        points = _demo_points(_demo_adapter_or_fail(settings))
    elif settings.cpo_charge_points_file:
        points = load_charge_points(settings.cpo_charge_points_file)
    else:
        points = []
    if points:
        count = args.charge_points or len(points)
        if count > len(points):
            raise UsageError(f"--charge-points {count}: the configuration lists only {len(points)} charge points")
        specs = [
            ChargePointSpec(
                id=e.charge_point.id,
                connectors=e.charge_point.connectors,
                max_current_a=e.charge_point.rating_a,
                phases=1 if e.charge_point.phases == 1 else 3,
                username=e.username or e.charge_point.id,
                password=e.password,
            )
            for e in points[:count]
        ]
    else:
        if not args.charge_points:
            raise UsageError("give --charge-points N (or --demo, or set cpo_charge_points_file)")
        specs = fleet_specs(args.charge_points, seed=args.seed)
        if args.register:
            _register(settings, args.register, specs, args.cable or [])
    url = args.url or f"ws://127.0.0.1:{settings.ocpp_port}/ocpp"
    print(
        f"simulating {len(specs)} charge points against {url}: {', '.join(s.id for s in specs[:8])}"
        f"{' ...' if len(specs) > 8 else ''}"
    )
    print("Cars arrive and leave at random; stop with Ctrl-C.", flush=True)
    options = {
        "mean_idle_s": args.mean_idle_s,
        "mean_stay_s": args.mean_stay_s,
        "meter_interval_s": args.meter_interval_s,
    }
    stop_event: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop_event
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop_event.set)
        await run_fleet(specs, url, stop=stop_event, seed=args.seed, **options)

    asyncio.run(main())
    print("gridcap simulate: stopped", flush=True)
    return 0


# --- cables ----------------------------------------------------------------------------------------


def cmd_cable_list(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        cables = grid.list_cables(ctx)
    if args.json:
        _print_json(cables)
    elif not cables:
        print("no cables; add one with `gridcap cable add` or seed a demo grid with `gridcap init-db --demo`")
    else:
        _table(
            ["ID", "NAME", "UNIT", "RATED", "MARGIN", "BASE LOAD", "RESERVE", "PHASES", "VOLTAGE", "OVERRIDES"],
            [
                [
                    c.id,
                    c.name,
                    c.unit.value,
                    _num(c.rated_limit),
                    _num(c.margin),
                    _num(c.base_load),
                    _num(c.reserve_share),
                    str(c.phases),
                    _num(c.voltage_v),
                    str(len(c.overrides)),
                ]
                for c in cables
            ],
        )
    return 0


def cmd_cable_show(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        cable = grid.get_cable(ctx, args.cable)
        subs = grid.list_subscriptions(ctx, args.cable)
    if args.json:
        _print_json({**_plain(cable), "subscriptions": subs})
        return 0
    u = cable.unit.value
    _fields(
        [
            ("id", cable.id),
            ("name", cable.name),
            ("unit", f"{u} ({'current per phase' if cable.unit is Unit.AMPERE else 'total power'})"),
            ("rated limit", f"{_num(cable.rated_limit)} {u}"),
            ("margin", f"{_num(cable.margin)} {u}"),
            ("base load", f"{_num(cable.base_load)} {u} (static)"),
            ("reserve share", _num(cable.reserve_share)),
            ("phases", str(cable.phases)),
            ("voltage", f"{_num(cable.voltage_v)} V"),
        ]
    )
    print("\nlimit overrides:")
    if cable.overrides:
        _table(
            ["  ID", "START", "END", "LIMIT", "REASON"],
            [[f"  {o.id}", _when(o.start), _when(o.end), _num(o.limit), o.reason] for o in cable.overrides],
        )
    else:
        print("  none")
    print("\nsubscriptions:")
    if subs:
        _table(
            ["  CPO", "WEIGHT", f"MINIMUM ({u})"],
            [[f"  {s.cpo_id}", _num(s.weight), _num(s.guaranteed_minimum)] for s in subs],
        )
    else:
        print("  none")
    return 0


_CABLE_FIELDS = ("name", "rated_limit", "phases", "voltage_v", "margin", "reserve_share", "base_load")


def cmd_cable_add(args: argparse.Namespace) -> int:
    cable = Cable(
        id=args.cable,
        name=args.name,
        unit=args.unit,
        rated_limit=args.rated_limit,
        phases=args.phases,
        voltage_v=args.voltage_v,
        margin=args.margin,
        reserve_share=args.reserve_share,
        base_load=args.base_load,
    )
    with _opened(load_settings()) as ctx:
        grid.create_cable(ctx, cable, actor=_actor())
    print(f"cable {cable.id} created: rated limit {_num(cable.rated_limit)} {cable.unit.value}")
    return 0


def cmd_cable_update(args: argparse.Namespace) -> int:
    changes = {name: getattr(args, name) for name in _CABLE_FIELDS if getattr(args, name) is not None}
    if not changes:
        raise UsageError(
            "nothing to change; give at least one of "
            + ", ".join("--" + name.replace("_", "-") for name in _CABLE_FIELDS)
        )
    with _opened(load_settings()) as ctx:
        grid.update_cable(ctx, args.cable, changes, actor=_actor())
    print(f"cable {args.cable} updated: {', '.join(f'{k} = {v}' for k, v in changes.items())}")
    return 0


def cmd_cable_delete(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        grid.delete_cable(ctx, args.cable, actor=_actor())
    print(f"cable {args.cable} deleted")
    return 0


def cmd_override_add(args: argparse.Namespace) -> int:
    override = LimitOverride(args.start, args.end, args.limit, args.reason)
    with _opened(load_settings()) as ctx:
        saved = grid.add_override(ctx, args.cable, override, actor=_actor())
    print(
        f"limit override {saved.id} added on cable {args.cable}: {_num(saved.limit)} "
        f"from {_when(saved.start)} to {_when(saved.end)}"
    )
    return 0


def cmd_override_remove(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        grid.remove_override(ctx, args.cable, args.override, actor=_actor())
    print(f"limit override {args.override} removed from cable {args.cable}")
    return 0


# --- CPOs -------------------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace) -> str | None:
    if not args.password_stdin:
        return None
    password = sys.stdin.read().rstrip("\r\n")
    if not password:
        raise UsageError(
            '--password-stdin read no password; pipe one in, e.g. `printf %s "$PASSWORD" | gridcap cpo ...`'
        )
    return password


def _cpo_subscriptions(ctx: Context, cpo_id: str) -> list[Subscription]:
    return [s for cable in grid.list_cables(ctx) for s in grid.list_subscriptions(ctx, cable.id) if s.cpo_id == cpo_id]


def cmd_cpo_list(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        found = cpos.list_cpos(ctx)
    if args.json:
        _print_json(found)
    elif not found:
        print("no CPOs; add one with `gridcap cpo add`")
    else:
        _table(
            ["ID", "NAME", "USERNAME", "BINDING", "ENDPOINT"],
            [[c.id, c.name, c.username, c.binding.value, c.endpoint_url] for c in found],
        )
    return 0


def cmd_cpo_show(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        cpo = cpos.get_cpo(ctx, args.cpo)
        subs = _cpo_subscriptions(ctx, args.cpo)
    if args.json:
        _print_json({**_plain(cpo), "subscriptions": subs})
        return 0
    _fields(
        [
            ("id", cpo.id),
            ("name", cpo.name),
            ("username", cpo.username),
            ("binding", cpo.binding.value),
            ("endpoint", cpo.endpoint_url),
        ]
    )
    print("\nsubscriptions:")
    if subs:
        _table(
            ["  CABLE", "WEIGHT", "MINIMUM"],
            [[f"  {s.cable_id}", _num(s.weight), _num(s.guaranteed_minimum)] for s in subs],
        )
    else:
        print("  none")
    return 0


def cmd_cpo_add(args: argparse.Namespace) -> int:
    cpo = Cpo(args.cpo, args.name, args.username or args.cpo, args.endpoint_url, args.binding)
    given = _read_password(args)
    if given is not None and len(given) < cpos.MIN_PASSWORD_LENGTH:
        raise UsageError(f"the password must be at least {cpos.MIN_PASSWORD_LENGTH} characters long")
    password = given if given is not None else secrets.token_urlsafe(18)
    with _opened(load_settings()) as ctx:
        cpos.create_cpo(ctx, cpo, password, actor=_actor())
    print(f"CPO {cpo.id} created with username {cpo.username}")
    if given is None:
        print(f"generated password (shown only now, store it safely): {password}")
    return 0


_CPO_FIELDS = ("name", "username", "endpoint_url", "binding")


def cmd_cpo_update(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {name: getattr(args, name) for name in _CPO_FIELDS if getattr(args, name) is not None}
    password = _read_password(args)
    if password is not None:
        changes["password"] = password
    if not changes:
        raise UsageError(
            "nothing to change; give at least one of --name, --username, --endpoint-url, --binding, --password-stdin"
        )
    with _opened(load_settings()) as ctx:
        cpos.update_cpo(ctx, args.cpo, changes, actor=_actor())
    shown = [f"{k} = {v}" for k, v in changes.items() if k != "password"]
    if password is not None:
        shown.append("password changed")
    print(f"CPO {args.cpo} updated: {', '.join(shown)}")
    return 0


def cmd_cpo_delete(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        cpos.delete_cpo(ctx, args.cpo, actor=_actor())
    print(f"CPO {args.cpo} deleted")
    return 0


# --- subscriptions ------------------------------------------------------------------------------------


def cmd_subscription_list(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        unit = grid.get_cable(ctx, args.cable).unit.value
        subs = grid.list_subscriptions(ctx, args.cable)
    if args.json:
        _print_json(subs)
    elif not subs:
        print(f"cable {args.cable} has no subscriptions; add one with `gridcap subscription add {args.cable} CPO`")
    else:
        _table(
            ["CPO", "WEIGHT", f"MINIMUM ({unit})"],
            [[s.cpo_id, _num(s.weight), _num(s.guaranteed_minimum)] for s in subs],
        )
    return 0


def cmd_subscription_add(args: argparse.Namespace) -> int:
    sub = Subscription(args.cable, args.cpo, args.weight, args.minimum)
    with _opened(load_settings()) as ctx:
        grid.subscribe(ctx, sub, actor=_actor())
    print(
        f"{args.cpo} subscribed to cable {args.cable}: weight {_num(sub.weight)}, "
        f"guaranteed minimum {_num(sub.guaranteed_minimum)}"
    )
    return 0


def cmd_subscription_update(args: argparse.Namespace) -> int:
    if args.weight is None and args.minimum is None:
        raise UsageError("nothing to change; give --weight, --minimum or both")
    with _opened(load_settings()) as ctx:
        changes = {"weight": args.weight, "guaranteed_minimum": args.minimum}
        changes = {k: v for k, v in changes.items() if v is not None}
        sub = grid.update_subscription(ctx, args.cable, args.cpo, changes, actor=_actor())
    print(
        f"subscription of {args.cpo} to cable {args.cable} changed: weight {_num(sub.weight)}, "
        f"guaranteed minimum {_num(sub.guaranteed_minimum)}"
    )
    return 0


def cmd_subscription_remove(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        grid.unsubscribe(ctx, args.cable, args.cpo, actor=_actor())
    print(f"subscription of {args.cpo} to cable {args.cable} removed")
    return 0


# --- capacity, requests, audit, horizon -----------------------------------------------------------------


def cmd_capacity(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        view = capacity.capacity(ctx, args.cable, args.start, args.end)
    if args.json:
        _print_json(view)
        return 0
    holders = sorted({cpo for b in view.blocks for cpo in b.budgets})
    print(f"cable {view.cable_id}: capacity per 15-minute block in {view.unit} (times in UTC)")
    rows = []
    for b in view.blocks:
        if b.handed_out:
            budgets = [_num(b.budgets[c]) if c in b.budgets else "-" for c in holders]
        else:  # before the service knew the cable: nothing was handed out
            budgets = ["n/a"] * len(holders)
        rows.append(
            [
                _when(b.start),
                _num(b.limit),
                _num(b.base_load),
                _num(b.margin),
                _num(b.available),
                _num(b.unallocated),
                *budgets,
            ]
        )
    _table(["START", "LIMIT", "BASE LOAD", "MARGIN", "AVAILABLE", "UNALLOCATED", *holders], rows)
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    settings = load_settings()
    # Only blocks of the horizon can be asked for: check the span before building a block for each
    # quarter hour of it (a range of centuries would take minutes and gigabytes to refuse).
    span = (args.end - args.start) // BLOCK
    most = settings.horizon_hours * (timedelta(hours=1) // BLOCK)
    if span > most:
        raise UsageError(
            f"--start {args.start.isoformat()} to --end {args.end.isoformat()} spans {span} blocks; a request "
            f"covers at most the {settings.horizon_hours}-hour horizon ({most} blocks); ask for a shorter range"
        )
    blocks = [capacity.BlockQuantity(s, s + BLOCK, args.capacity) for s in block_starts(args.start, args.end)]
    with _opened(settings) as ctx:
        result = capacity.request(ctx, args.cable, args.cpo, blocks, actor=_actor())
    if args.json:
        _print_json(
            {
                "decision_id": result.decision_id,
                "status": result.status,
                "blocks": [{"start": s, "end": s + BLOCK, "budget": c} for s, c in sorted(result.budgets.items())],
            }
        )
        return 0
    print(f"{result.status.value} (decision {result.decision_id}); budgets of {args.cpo} on {args.cable} now:")
    _table(["START", "BUDGET"], [[_when(s), _num(c)] for s, c in sorted(result.budgets.items())])
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    query: dict[str, Any] = {"cable_id": args.cable, "cpo_id": args.cpo, "since": args.since, "limit": args.limit}
    with _opened(load_settings()) as ctx:
        entries: Sequence[audit.Decision] | Sequence[audit.LedgerEntry]
        entries = audit.decisions(ctx, **query) if args.decisions else audit.ledger(ctx, **query)
    if args.json:  # shaped like GET /api/v1/audit and /api/v1/audit/decisions
        _print_json({"decisions": entries} if args.decisions else {"entries": entries})
    elif not entries:
        print("no audit entries match")
    elif args.decisions:
        _table(
            ["ID", "AT", "ACTOR", "ACTION", "CABLE", "CPO", "STATUS", "SEVERITY", "MESSAGE"],
            [
                [
                    str(d.id),
                    _when(d.at, seconds=True),
                    d.actor,
                    d.action,
                    d.cable_id or "-",
                    d.cpo_id or "-",
                    d.status or "-",
                    d.severity,
                    d.message,
                ]
                for d in entries
                if isinstance(d, audit.Decision)
            ],
        )
    else:
        _table(
            ["ID", "AT", "DECISION", "ACTOR", "ACTION", "CABLE", "CPO", "BLOCK", "OLD", "NEW", "REASON", "SEVERITY"],
            [
                [
                    str(e.id),
                    _when(e.at, seconds=True),
                    str(e.decision_id),
                    e.actor,
                    e.action,
                    e.cable_id,
                    e.cpo_id,
                    _when(e.start),
                    _num(e.old_capacity),
                    _num(e.new_capacity),
                    e.reason,
                    e.severity,
                ]
                for e in entries
                if isinstance(e, audit.LedgerEntry)
            ],
        )
    return 0


def cmd_horizon_roll(args: argparse.Namespace) -> int:
    with _opened(load_settings()) as ctx:
        rolled = capacity.roll_horizon(ctx)
    if args.json:
        _print_json({"handed_out": rolled.handed_out, "failed": rolled.failed})
    elif not rolled.handed_out and not rolled.failed:
        print("no cables; nothing to hand out")
    else:
        results = {cable: str(n) for cable, n in rolled.handed_out.items()}
        results |= {cable: f"failed: {message}" for cable, message in rolled.failed.items()}
        _table(["CABLE", "NEW BLOCKS HANDED OUT"], [[cable, results[cable]] for cable in sorted(results)])
    if rolled.failed:
        total = len(rolled.handed_out) + len(rolled.failed)
        failures = ", ".join(f"{cable} ({message})" for cable, message in sorted(rolled.failed.items()))
        return _error(
            f"new blocks were not handed out on {len(rolled.failed)} of {total} cables: {failures}; "
            "the other cables were rolled. Fix the cause and run `gridcap horizon roll` again",
            EXIT_FAILURE,
        )
    return 0


# --- scheduler, timeseries and forecasts ------------------------------------------------------------


@contextlib.contextmanager
def _timeseries(settings: Settings) -> Iterator["TimeseriesStore"]:
    from service.timeseries import build_timeseries

    store = build_timeseries(settings)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr when it is a terminal; `update(done, total)`."""
    from tqdm import tqdm

    bar = tqdm(desc=description, unit="step", disable=None, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def cmd_scheduler(args: argparse.Namespace) -> int:
    """The jobs without the web server (and without its admin token), until Ctrl-C or SIGTERM."""
    import threading

    from service.jobs.scheduler import jobs_from_settings
    from service.oscp.v1.recorder import Recorder

    settings = load_settings()
    with _opened(settings) as ctx:
        recorder = Recorder(ctx)
        jobs = jobs_from_settings(settings, ctx, recorder)
        stopped = threading.Event()

        def stop(_signum: int, _frame: FrameType | None) -> None:
            stopped.set()

        previous = signal.signal(signal.SIGTERM, stop)
        print(f"gridcap scheduler running as {jobs.lease.owner}: it runs the jobs while it holds the lease.")
        print("Stop with Ctrl-C.", flush=True)
        jobs.start()
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            jobs.shutdown(wait=True)
            recorder.close()
    print("gridcap scheduler: stopped", flush=True)
    return 0


def cmd_timeseries_import(args: argparse.Namespace) -> int:
    settings = load_settings()
    with _opened(settings) as ctx, _timeseries(settings) as store:
        try:
            with open(args.file, encoding="utf-8", newline="") as file:
                written = measurements.import_csv(ctx, store, args.cable, args.unit, file, phase=args.phase)
        except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}") from None
    print(f"{written} points of cable {args.cable} written to the {store.name} timeseries store")
    return 0


def cmd_timeseries_export(args: argparse.Namespace) -> int:
    settings = load_settings()
    end = args.to or datetime.now(UTC)
    start = args.from_ or end - timedelta(weeks=settings.forecast_history_weeks)
    with _opened(settings) as ctx, _timeseries(settings) as store:
        for line in measurements.export_csv(ctx, store, args.cable, start, end, unit=args.unit):
            sys.stdout.write(line)
    return 0


def cmd_forecast_run(args: argparse.Namespace) -> int:
    settings = load_settings()
    with _opened(settings) as ctx, _timeseries(settings) as store, _progress("forecasting") as progress:
        report = forecasting.refresh(ctx, store, cable_ids=args.cable or None, progress=progress)
    if args.json:
        _print_json(report)
    else:
        rows = [[c, "ok", model, ""] for c, model in report.refreshed.items()]
        rows += [[c, "failed", "-", why] for c, why in report.failed.items()]
        _table(["CABLE", "STATUS", "MODEL", "WHY"], sorted(rows) or [["-", "no cables", "", ""]])
        for cable_id, issues in sorted(report.warnings.items()):
            print(f"data of {cable_id}: " + "; ".join(issues))
    if report.failed:
        return _error(
            f"forecasts failed on {len(report.failed)} of {len(report.failed) + len(report.refreshed)} cables; "
            "they keep their last forecast while it covers a block, then the historical peak base load",
            EXIT_FAILURE,
        )
    return 0


def cmd_forecast_backtest(args: argparse.Namespace) -> int:
    settings = load_settings()
    with _opened(settings) as ctx, _timeseries(settings) as store, _progress("backtesting") as progress:
        run = forecasting.backtest(ctx, store, args.cable, start=args.from_, end=args.to, progress=progress)
    if args.plot:
        from service.plots import plot_backtest

        title = f"cable {args.cable}: day-ahead backtest of the {run.result.model} forecast"
        plot_backtest(run.result.frame, Path(args.plot), title=title, unit=run.unit)
    if args.json:
        _print_json(run.result.as_dict())
        return 0
    names = ["mae", "rmae", "pinball", "coverage", "overload_rate", "utilisation"]
    results = {f"{run.result.model} (chosen)": run.result.metrics, **run.result.baselines}
    _table(
        ["MODEL", *(n.upper() for n in names)],
        [[model, *(f"{m.get(n, float('nan')):.4f}" for n in names)] for model, m in results.items()],
    )
    print(f"values in {run.unit}; mae and pinball in {run.unit}, the rest are shares")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


# --- the parser ---------------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace], int]


class _Commands:
    """Builds subcommands that share --debug (anywhere on the line) and, for reads, --json."""

    def __init__(self) -> None:
        self.common = _Parser(add_help=False)
        self.common.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="log debug output and error tracebacks"
        )
        self.reading = _Parser(add_help=False)
        self.reading.add_argument("--json", action="store_true", help="print JSON for machines instead of a table")

    def command(
        self, group: Any, name: str, handler: Handler, help_: str, *, reads: bool = False
    ) -> argparse.ArgumentParser:
        parents = [self.common, self.reading] if reads else [self.common]
        sub: argparse.ArgumentParser = group.add_parser(name, help=help_, description=help_, parents=parents)
        sub.set_defaults(handler=handler)
        return sub

    def group(self, commands: Any, name: str, help_: str) -> Any:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help_, description=help_, parents=[self.common])
        sub.set_defaults(handler=None, group_parser=sub)
        return sub.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)


def _quantity_arg(p: argparse.ArgumentParser, flag: str, help_: str, **kwargs: Any) -> None:
    p.add_argument(flag, type=_quantity, metavar="N", help=help_, **kwargs)


def _datetime_arg(p: argparse.ArgumentParser, flag: str, help_: str, **kwargs: Any) -> None:
    p.add_argument(flag, type=_aware_datetime, metavar="DATETIME", help=help_, **kwargs)


def _add_cable_commands(b: _Commands, commands: Any) -> None:
    cable = b.group(commands, "cable", "list, show, add, change and delete cables and their limit overrides")
    b.command(cable, "list", cmd_cable_list, "list cables", reads=True)
    p = b.command(cable, "show", cmd_cable_show, "show a cable with its overrides and subscriptions", reads=True)
    p.add_argument("cable", metavar="CABLE")

    p = b.command(cable, "add", cmd_cable_add, "add a cable")
    p.add_argument("cable", metavar="CABLE", help="id: letters, digits, '.', '_', ':' or '-'")
    p.add_argument("--name", required=True)
    p.add_argument("--unit", required=True, type=_unit, help="A (current per phase) or KW (total power)")
    _quantity_arg(p, "--rated-limit", "rated limit in the cable's unit", required=True)
    p.add_argument("--phases", type=_int_between(1, 3), default=3, help="1, 2 or 3 (default 3)")
    _quantity_arg(p, "--voltage-v", "phase voltage (default 230)", default=Decimal(230))
    _quantity_arg(p, "--margin", "safety margin kept free, in the unit (default 0)", default=Decimal(0))
    p.add_argument(
        "--reserve-share",
        type=_share,
        default=Decimal("0.1"),
        metavar="SHARE",
        help="share of the available capacity kept back at hand-out (default 0.1)",
    )
    _quantity_arg(p, "--base-load", "static non-EV load in the unit (default 0)", default=Decimal(0))

    p = b.command(cable, "update", cmd_cable_update, "change a cable; capacity changes reallocate its budgets")
    p.add_argument("cable", metavar="CABLE")
    p.add_argument("--name")
    _quantity_arg(p, "--rated-limit", "rated limit in the cable's unit")
    p.add_argument("--phases", type=_int_between(1, 3), help="1, 2 or 3")
    _quantity_arg(p, "--voltage-v", "phase voltage")
    _quantity_arg(p, "--margin", "safety margin kept free")
    p.add_argument("--reserve-share", type=_share, metavar="SHARE", help="share kept back at hand-out")
    _quantity_arg(p, "--base-load", "static non-EV load")

    p = b.command(cable, "delete", cmd_cable_delete, "delete a cable without subscriptions")
    p.add_argument("cable", metavar="CABLE")
    p = b.command(cable, "override-add", cmd_override_add, "limit a cable for a period (maintenance, seasonal rating)")
    p.add_argument("cable", metavar="CABLE")
    _datetime_arg(p, "--start", "start, on a quarter hour", required=True)
    _datetime_arg(p, "--end", "end, on a quarter hour", required=True)
    _quantity_arg(p, "--limit", "the limit in the cable's unit", required=True)
    p.add_argument("--reason", required=True, help="why, e.g. 'maintenance on joint 4'")
    p = b.command(cable, "override-remove", cmd_override_remove, "remove a limit override")
    p.add_argument("cable", metavar="CABLE")
    p.add_argument("override", metavar="OVERRIDE_ID", type=_int_between(1, 2**31 - 1))


def _add_cpo_commands(b: _Commands, commands: Any) -> None:
    cpo = b.group(commands, "cpo", "list, show, add, change and delete charge point operators")
    b.command(cpo, "list", cmd_cpo_list, "list CPOs", reads=True)
    p = b.command(cpo, "show", cmd_cpo_show, "show a CPO and the cables it is subscribed to", reads=True)
    p.add_argument("cpo", metavar="CPO")

    p = b.command(cpo, "add", cmd_cpo_add, "add a CPO; without --password-stdin a password is generated and shown")
    p.add_argument("cpo", metavar="CPO", help="id: letters, digits, '.', '_', ':' or '-'")
    p.add_argument("--name", required=True)
    p.add_argument("--username", help="login name (default: the id)")
    p.add_argument("--endpoint-url", required=True, help="the CPO's OSCP endpoint, http(s)://...")
    p.add_argument("--binding", type=_binding, default=Binding.SOAP11, help="soap11 (default), soap12 or json")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    p = b.command(cpo, "update", cmd_cpo_update, "change a CPO (or its password, with --password-stdin)")
    p.add_argument("cpo", metavar="CPO")
    p.add_argument("--name")
    p.add_argument("--username")
    p.add_argument("--endpoint-url")
    p.add_argument("--binding", type=_binding, help="soap11, soap12 or json")
    p.add_argument("--password-stdin", action="store_true", help="read the new password from standard input")

    p = b.command(cpo, "delete", cmd_cpo_delete, "delete a CPO without subscriptions")
    p.add_argument("cpo", metavar="CPO")

    help_ = (
        "run the CPO adapter: OSCP endpoint and REST API (GRIDCAP_CPO_PORT, 8081), OCPP 1.6-J central system "
        "(GRIDCAP_OCPP_PORT, 9000), calling the DSO at GRIDCAP_CPO_DSO_URL"
    )
    p = b.command(cpo, "serve", cmd_cpo_serve, help_)
    p.add_argument("--host", help="address to listen on (default: setting host, 127.0.0.1)")
    p.add_argument("--port", type=_int_between(1, 65535), help="OSCP and REST port (default: GRIDCAP_CPO_PORT or 8081)")
    p.add_argument(
        "--demo", action="store_true", help="the demo grid's ChargeCo adapter with its charge points (make run)"
    )


def _add_subscription_commands(b: _Commands, commands: Any) -> None:
    sub = b.group(commands, "subscription", "which CPO is on which cable, with weight and guaranteed minimum")
    p = b.command(sub, "list", cmd_subscription_list, "list the subscriptions of a cable", reads=True)
    p.add_argument("cable", metavar="CABLE")

    p = b.command(sub, "add", cmd_subscription_add, "subscribe a CPO to a cable; budgets are shared anew")
    p.add_argument("cable", metavar="CABLE")
    p.add_argument("cpo", metavar="CPO")
    _quantity_arg(p, "--weight", "share weight, e.g. the CPO's charge points on the cable (default 1)", default=1)
    _quantity_arg(p, "--minimum", "guaranteed minimum budget in the cable's unit (default 0)", default=0)

    p = b.command(sub, "update", cmd_subscription_update, "change a subscription's weight or minimum")
    p.add_argument("cable", metavar="CABLE")
    p.add_argument("cpo", metavar="CPO")
    _quantity_arg(p, "--weight", "share weight, e.g. the CPO's charge points on the cable")
    _quantity_arg(p, "--minimum", "guaranteed minimum budget in the cable's unit")

    p = b.command(sub, "remove", cmd_subscription_remove, "end a subscription; its future budgets are freed")
    p.add_argument("cable", metavar="CABLE")
    p.add_argument("cpo", metavar="CPO")


def _add_capacity_commands(b: _Commands, commands: Any) -> None:
    help_ = "limit, base load, available capacity and budgets per block"
    p = b.command(commands, "capacity", cmd_capacity, help_, reads=True)
    p.add_argument("cable", metavar="CABLE")
    _datetime_arg(p, "--start", "first block (default: the current block)")
    _datetime_arg(p, "--end", "end of the last block (default: the end of the horizon)")

    help_ = "ask for a budget per block for a CPO (above its budget: a request; below: a hand-back)"
    p = b.command(commands, "request", cmd_request, help_, reads=True)
    p.add_argument("cable", metavar="CABLE")
    p.add_argument("cpo", metavar="CPO")
    _datetime_arg(p, "--start", "start of the first block (on a quarter hour)", required=True)
    _datetime_arg(p, "--end", "end of the last block (on a quarter hour)", required=True)
    _quantity_arg(p, "--capacity", "the wanted budget in each block, in the cable's unit", required=True)

    help_ = "budget changes (the ledger), or with --decisions every decision"
    p = b.command(commands, "audit", cmd_audit, help_, reads=True)
    p.add_argument("--cable", metavar="CABLE", help="only this cable")
    p.add_argument("--cpo", metavar="CPO", help="only this CPO")
    _datetime_arg(p, "--since", "only entries at or after this moment")
    p.add_argument(
        "--limit",
        type=_int_between(1, audit.MAX_ENTRIES),
        default=1000,
        help="at most this many entries, oldest first (default 1000)",
    )
    p.add_argument("--decisions", action="store_true", help="list decisions instead of budget changes")

    horizon = b.group(commands, "horizon", "the allocation horizon")
    help_ = "hand out the blocks that entered the horizon, on every cable"
    b.command(horizon, "roll", cmd_horizon_roll, help_, reads=True)


def _add_forecast_commands(b: _Commands, commands: Any) -> None:
    series = b.group(commands, "timeseries", "measured cable load in the timeseries store")
    help_ = "load a CSV file (columns time with UTC offset, value) of a cable's measured load; all rows or none"
    p = b.command(series, "import", cmd_timeseries_import, help_)
    p.add_argument("--cable", required=True, metavar="CABLE")
    p.add_argument("--unit", required=True, type=_unit, help="unit of the values in the file: KW or A")
    p.add_argument("--phase", help="the phase these values belong to, when measurements are per phase")
    p.add_argument("file", metavar="FILE.csv")
    help_ = "print a cable's raw measurements as CSV (time,value)"
    p = b.command(series, "export", cmd_timeseries_export, help_)
    p.add_argument("--cable", required=True, metavar="CABLE")
    p.add_argument("--unit", type=_unit, help="convert to KW or A (default: the store's unit)")
    _datetime_arg(p, "--from", "first moment (default: the forecast history before --to)", dest="from_")
    _datetime_arg(p, "--to", "end, exclusive (default: now)")

    forecast = b.group(commands, "forecast", "base-load forecasts")
    help_ = "refresh the forecasts now, store them and reallocate (the scheduler does this every 15 minutes)"
    p = b.command(forecast, "run", cmd_forecast_run, help_, reads=True)
    p.add_argument("--cable", action="append", metavar="CABLE", help="only this cable (repeatable)")
    help_ = "day-ahead rolling-origin backtest of a cable's forecasts against its baselines"
    p = b.command(forecast, "backtest", cmd_forecast_backtest, help_, reads=True)
    p.add_argument("--cable", required=True, metavar="CABLE")
    _datetime_arg(p, "--from", "first day (default: 4 weeks before --to)", dest="from_")
    _datetime_arg(p, "--to", "end (default: the current block)")
    p.add_argument("--plot", metavar="OUT.png", help="also draw actual vs forecast band vs limit vs available")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="DSO capacity service: cable limits and per-15-minute budgets for charge point operators "
        "(OSCP 1.0). Configure it with GRIDCAP_* environment variables or the TOML file named by GRIDCAP_CONFIG.",
        epilog="Date-times need a UTC offset, e.g. 2026-03-29T18:00+02:00 or 2026-03-29T16:00Z.",
    )
    parser.add_argument("--debug", action="store_true", help="log debug output and error tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    b = _Commands()

    help_ = (
        "serve the REST API (waitress); prints its URLs, and the admin token and demo credentials "
        "if the token is the one init-db wrote to its file"
    )
    p = b.command(commands, "serve", cmd_serve, help_)
    p.add_argument("--host", help="address to listen on (default: setting host, 127.0.0.1)")
    p.add_argument("--port", type=_int_between(1, 65535), help="port (default: GRIDCAP_PORT or 8080)")
    p.add_argument(
        "--with-scheduler",
        action="store_true",
        help="also run the jobs: push budget changes to CPOs, heartbeats, hand out new blocks",
    )

    help_ = "create or migrate the database schema, and an admin token file if no token is configured"
    p = b.command(commands, "init-db", cmd_init_db, help_)
    p.add_argument("--demo", action="store_true", help="seed a small demo grid if the database has no cables")

    help_ = "run the jobs without the web server (only one process at a time runs them: a lease in the database)"
    b.command(commands, "scheduler", cmd_scheduler, help_)

    help_ = "run simulated OCPP 1.6-J charge points with cars coming and going, against the CPO adapter"
    p = b.command(commands, "simulate", cmd_simulate, help_)
    p.add_argument("--charge-points", type=_int_between(1, 10_000), metavar="N", help="how many")
    p.add_argument("--demo", action="store_true", help="the demo adapter's charge points (make run)")
    p.add_argument("--url", help="the central system, e.g. ws://127.0.0.1:9000/ocpp (default: GRIDCAP_OCPP_PORT)")
    p.add_argument("--seed", type=int, default=0, help="random seed for cars and arrivals (default 0)")
    p.add_argument(
        "--register", metavar="ADAPTER_URL", help="first register them with the adapter, e.g. http://127.0.0.1:8081"
    )
    p.add_argument(
        "--cable", action="append", metavar="CABLE", help="with --register: the cables they are on (repeatable)"
    )
    p.add_argument("--mean-idle-s", type=float, default=600.0, help="mean wait before a car arrives (default 600)")
    p.add_argument("--mean-stay-s", type=float, default=3600.0, help="mean time a car stays (default 3600)")
    p.add_argument("--meter-interval-s", type=int, default=60, help="MeterValues every N s while charging (60)")
    _add_forecast_commands(b, commands)
    _add_cable_commands(b, commands)
    _add_cpo_commands(b, commands)
    _add_subscription_commands(b, commands)
    _add_capacity_commands(b, commands)
    return parser


# --- main ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 failure, 2 usage, validation or configuration)."""
    parsed = _parse(argv)
    if isinstance(parsed, int):
        return parsed
    args, handler = parsed
    debug = bool(getattr(args, "debug", False))
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if debug or handler is cmd_serve:  # serve logs as its settings say (create_app)
        return _run(handler, args, debug=debug)
    with _warnings_without_tracebacks():
        return _run(handler, args, debug=debug)


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        hint = " (run with --debug for the traceback)" if record.exc_info else ""
        return f"{PROG}: {record.levelname.lower()} in {record.name}: {record.getMessage()}{hint}"


@contextlib.contextmanager
def _warnings_without_tracebacks() -> Iterator[None]:
    """Warnings the use cases log reach stderr as one line each; their tracebacks only with --debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLine())
    logger = logging.getLogger("gridcap")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _run(handler: Handler, args: argparse.Namespace, *, debug: bool) -> int:
    try:
        return handler(args)
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except BrokenPipeError:  # the reader went away (`gridcap audit | head`): stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:  # every error becomes a message, never a traceback
        message, code = _describe(exc)
        if debug:
            log.exception("%s", message)
        elif code == EXIT_FAILURE:
            message += " (run with --debug for details)"
        return _error(message, code)


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Handler] | int:
    """The parsed command line and its handler, or the exit code if there is nothing to run."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return _error(str(exc), EXIT_USAGE)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        shown = getattr(args, "group_parser", parser)
        return _error(f"choose a command (see `{shown.prog} --help`)", EXIT_USAGE)
    return args, handler


def _describe(exc: Exception) -> tuple[str, int]:
    """The message and exit code for an error."""
    if isinstance(exc, UsageError | ConfigError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, InvariantViolation):
        return f"internal error, nothing was changed (please report it): {exc.message}", EXIT_FAILURE
    if isinstance(exc, GridcapError):
        return (exc.message), EXIT_USAGE
    from forecasts import ForecastError
    from service.timeseries import TimeseriesError

    if isinstance(exc, SQLAlchemyError):
        cause = getattr(exc, "orig", None) or exc
        return f"database error: {str(cause).splitlines()[0]}", EXIT_FAILURE
    if isinstance(exc, OSError | TimeseriesError | ForecastError):
        return str(exc), EXIT_FAILURE
    return f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILURE
