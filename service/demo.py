"""A small demo grid for `gridcap init-db --demo`: cables, CPOs and subscriptions, seeded through
the use cases (never raw SQL), so every demo object has its audit entries like any other.

The demo CPOs' passwords are generated here and kept in a 0600 JSON file next to the database
(`demo-credentials.json`), so `gridcap serve` can print them again.
"""

import dataclasses
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from service.domain.blocks import BLOCK, block_floor
from service.domain.model import Binding, Cable, Cpo, LimitOverride, Subscription
from service.domain.units import Unit, floor_grid
from service.timeseries import TimeseriesStore
from service.usecases import Context
from service.usecases.capacity import BlockQuantity, report_usage
from service.usecases.cpos import create_cpo
from service.usecases.grid import add_override, create_cable, list_cables, subscribe
from service.usecases.measurements import conversion

CREDENTIALS_FILE = "demo-credentials.json"

_CABLES = (
    # A 3-phase street cable in ampere per phase, with a safety margin.
    Cable(
        id="demo-kerkstraat",
        name="Kerkstraat LS street cable (3 x 230 V)",
        unit=Unit.AMPERE,
        rated_limit=Decimal(250),
        phases=3,
        voltage_v=Decimal(230),
        margin=Decimal(10),
        base_load=Decimal(85),
    ),
    # A feeder to a car park rated in kW (total power over all phases).
    Cable(
        id="demo-parkeerhub",
        name="Parkeerhub feeder (kW)",
        unit=Unit.KILOWATT,
        rated_limit=Decimal(150),
        phases=3,
        voltage_v=Decimal(230),
        margin=Decimal(5),
        base_load=Decimal(40),
    ),
    # A ring cable with maintenance planned tomorrow evening (see _maintenance).
    Cable(
        id="demo-molenweg",
        name="Molenweg LS ring (3 x 230 V)",
        unit=Unit.AMPERE,
        rated_limit=Decimal(160),
        phases=3,
        voltage_v=Decimal(230),
        margin=Decimal(8),
        base_load=Decimal(50),
    ),
    # A single-phase branch with a few kerbside chargers.
    Cable(
        id="demo-dorpsplein",
        name="Dorpsplein 1-phase branch",
        unit=Unit.AMPERE,
        rated_limit=Decimal(63),
        phases=1,
        voltage_v=Decimal(230),
        margin=Decimal(3),
        base_load=Decimal(12),
        reserve_share=Decimal("0.05"),
    ),
)

ADAPTER_CPO = "demo-chargeco"  # the CPO whose adapter `make run` starts on this machine
_CPOS = (
    Cpo(ADAPTER_CPO, "ChargeCo (demo)", ADAPTER_CPO, "https://chargeco.example/oscp/1.0/soap", Binding.SOAP11),
    Cpo("demo-voltline", "VoltLine (demo)", "demo-voltline", "https://voltline.example/oscp/1.0/json", Binding.JSON),
    Cpo("demo-parkplug", "ParkPlug (demo)", "demo-parkplug", "https://parkplug.example/oscp/1.0/soap", Binding.SOAP12),
)

# (cable, cpo, weight = charge points on the cable, guaranteed minimum in the cable's unit)
_SUBSCRIPTIONS = (
    ("demo-kerkstraat", "demo-chargeco", 12, 40),
    ("demo-kerkstraat", "demo-voltline", 6, 20),
    ("demo-parkeerhub", "demo-chargeco", 20, 30),
    ("demo-parkeerhub", "demo-parkplug", 10, 15),
    ("demo-parkeerhub", "demo-voltline", 4, 0),
    ("demo-molenweg", "demo-voltline", 8, 20),
    ("demo-molenweg", "demo-parkplug", 4, 10),
    ("demo-dorpsplein", "demo-parkplug", 6, 10),
)


def _maintenance(now: datetime) -> LimitOverride:
    """Tomorrow (UTC) 17:00-21:00: Molenweg runs at 100 A while a joint is replaced."""
    tomorrow = now.astimezone(UTC).date() + timedelta(days=1)
    start = datetime.combine(tomorrow, time(17, 0), tzinfo=UTC)
    return LimitOverride(start, start + timedelta(hours=4), Decimal(100), "maintenance: joint 4 replaced (demo)")


@dataclass(frozen=True)
class DemoCredential:
    cpo_id: str
    name: str
    username: str
    password: str
    cables: tuple[str, ...]


# ChargeCo's charge points for its adapter: (id, cable, max current per phase, phases, connectors)
_CHARGE_POINTS = (
    ("kerk-01", "demo-kerkstraat", 16, 3, 1),
    ("kerk-02", "demo-kerkstraat", 16, 3, 1),
    ("kerk-03", "demo-kerkstraat", 32, 1, 1),
    ("kerk-04", "demo-kerkstraat", 32, 3, 2),
    ("park-01", "demo-parkeerhub", 32, 3, 2),
    ("park-02", "demo-parkeerhub", 32, 3, 2),
)


@dataclass(frozen=True)
class DemoGrid:
    cables: tuple[str, ...]
    cpos: tuple[DemoCredential, ...]
    subscriptions: int
    override: LimitOverride
    adapter: dict[str, Any]  # the local CPO adapter: the DSO's password to it, its charge points


def seed_demo(ctx: Context, *, actor: str, adapter_url: str | None = None) -> DemoGrid | None:
    """Seed the demo grid if the database has no cables; None (and no change) if it has any.
    `adapter_url`: ChargeCo's OSCP endpoint is the local CPO adapter there (`gridcap cpo serve --demo`)."""
    if list_cables(ctx):
        return None
    for cable in _CABLES:
        create_cable(ctx, cable, actor=actor)
    override = add_override(ctx, "demo-molenweg", _maintenance(ctx.clock()), actor=actor)
    credentials = []
    local = {ADAPTER_CPO: adapter_url} if adapter_url else {}
    for listed in _CPOS:
        cpo = dataclasses.replace(listed, endpoint_url=local.get(listed.id, listed.endpoint_url))
        password = secrets.token_urlsafe(18)
        create_cpo(ctx, cpo, password, actor=actor)
        cables = tuple(cable for cable, cpo_id, _, _ in _SUBSCRIPTIONS if cpo_id == cpo.id)
        credentials.append(DemoCredential(cpo.id, cpo.name, cpo.username, password, cables))
    for cable_id, cpo_id, weight, minimum in _SUBSCRIPTIONS:
        subscribe(ctx, Subscription(cable_id, cpo_id, Decimal(weight), Decimal(minimum)), actor=actor)
    adapter = {
        "cpo_id": ADAPTER_CPO,
        "dso_password": secrets.token_urlsafe(18),
        "charge_points": [
            {
                "id": cp_id,
                "cable_id": cable_id,
                "max_current_a": current_a,
                "phases": phases,
                "connectors": connectors,
                "password": secrets.token_urlsafe(12),
            }
            for cp_id, cable_id, current_a, phases, connectors in _CHARGE_POINTS
        ],
    }
    return DemoGrid(tuple(c.id for c in _CABLES), tuple(credentials), len(_SUBSCRIPTIONS), override, adapter)


# --- the credentials file ------------------------------------------------------------------------


def _shown_url(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def credentials_path(database_url: str, admin_token_file: str) -> Path:
    """Next to an SQLite database file; for a server database, next to the admin token file."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / CREDENTIALS_FILE
    return Path(admin_token_file).parent / CREDENTIALS_FILE


def write_credentials(path: Path, database_url: str, grid: DemoGrid) -> None:
    """Write (or replace) the file with mode 0600: it holds passwords."""
    document = {
        "database": _shown_url(database_url),
        "cpos": [
            {"id": c.cpo_id, "name": c.name, "username": c.username, "password": c.password, "cables": list(c.cables)}
            for c in grid.cpos
        ],
        "adapter": grid.adapter,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        json.dump(document, fh, indent=2)
        fh.write("\n")


def read_credentials(path: Path, database_url: str) -> list[dict[str, Any]]:
    """The demo CPOs stored for this database; empty if there is no file or it is another database's."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(document, dict) or document.get("database") != _shown_url(database_url):
        return []
    cpos = document.get("cpos")
    return [c for c in cpos if isinstance(c, dict)] if isinstance(cpos, list) else []


def read_adapter(path: Path, database_url: str) -> dict[str, Any] | None:
    """The demo CPO adapter's set-up stored for this database (None: no demo, or another database's):
    its CPO's login at the DSO, the DSO's password to it, and its charge points with their passwords."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("database") != _shown_url(database_url):
        return None
    adapter = document.get("adapter")
    cpos = [c for c in document.get("cpos", []) if isinstance(c, dict) and c.get("id") == ADAPTER_CPO]
    if not isinstance(adapter, dict) or not cpos:
        return None
    return {**adapter, "username": cpos[0].get("username"), "password": cpos[0].get("password")}


# --- demo measurements ---------------------------------------------------------------------------

DEMO_HISTORY = timedelta(weeks=8)


def seed_demo_measurements(ctx: Context, store: TimeseriesStore, *, actor: str) -> int:
    """Eight weeks of synthetic measured load on each demo cable (households with EV charging on
    top, scaled to the cable's limit), written to `store`, with the EV part reported as usage by
    the cable's CPOs in proportion to their weight. Returns the points written; 0 (and no change)
    if the store already holds measurements of a demo cable."""
    from forecasts.synthetic import demo_measurements

    end = block_floor(ctx.clock())
    start = end - DEMO_HISTORY
    cables = {c.id: c for c in list_cables(ctx) if c.id in {d.id for d in _CABLES}}
    if not cables:
        return 0
    store.ensure_ready()
    existing = store.read_load(list(cables), end - timedelta(days=1), end)
    if existing.notna().any().any():
        return 0
    data = demo_measurements(list(cables), start=start, end=end, seed=2026)
    written = 0
    for cable_id, cable in cables.items():
        to_kw = conversion(cable.unit.value, Unit.KILOWATT.value, cable)
        scale = float(cable.rated_limit) * to_kw / float(data.limit_kw[cable_id])  # the demo's limit -> ours
        measured_kw = data.measured[cable_id] * scale
        written += store.write_load(cable_id, measured_kw * conversion(Unit.KILOWATT.value, store.layout.unit, cable))
        ev = data.ev_usage[cable_id] * scale / to_kw  # in the cable's unit
        weights = {cpo: Decimal(w) for c, cpo, w, _ in _SUBSCRIPTIONS if c == cable_id}
        total = sum(weights.values(), Decimal(0))
        for cpo_id, weight in weights.items():
            share = float(weight / total)
            blocks = [
                BlockQuantity(
                    s.to_pydatetime(), s.to_pydatetime() + BLOCK, floor_grid(Decimal(repr(max(0.0, v * share))))
                )
                for s, v in ev.items()
            ]
            report_usage(ctx, cable_id, cpo_id, blocks, actor=actor)
    return written
