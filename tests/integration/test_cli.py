"""The `gridcap` command line, in process against a real SQLite file in tmp_path.

Every command runs through `service.cli.main([...])` with GRIDCAP_* pointing into tmp_path, so the
tests see exit codes, stdout and stderr as a user would; one test runs the installed entry points
in a subprocess.
"""

import getpass
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.domain.blocks import BLOCK, block_floor
from service.store import Database
from service.usecases import Context
from service.usecases.cpos import authenticate

REPO = Path(__file__).resolve().parents[2]


class Cli:
    """Runs `gridcap ARGS` in process and keeps what it printed."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        self.root = root
        self.db_file = root / "data" / "gridcap.db"
        self.token_file = root / "secrets" / "admin-token"
        self.out = ""
        self.err = ""

    def __call__(self, *args: str, stdin: str | None = None) -> int:
        if stdin is not None:
            self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        self.capsys.readouterr()
        code = main(list(args))
        self.out, self.err = self.capsys.readouterr()
        assert "Traceback" not in self.out + self.err
        return code

    def json(self, *args: str) -> Any:
        assert self(*args, "--json") == 0, self.err
        return json.loads(self.out)

    def fails(self, code: int, *args: str, stdin: str | None = None) -> str:
        """Run a command that must fail with `code`; return its one error message."""
        assert self(*args, stdin=stdin) == code, (self.out, self.err)
        assert self.err.startswith("gridcap: error: "), self.err
        assert self.err.count("gridcap: error: ") == 1
        return self.err

    def state(self) -> dict[str, Any]:
        """Everything a change could touch, as the CLI reports it."""
        return {
            "cables": self.json("cable", "list"),
            "cpos": self.json("cpo", "list"),
            "subs": {c["id"]: self.json("subscription", "list", c["id"]) for c in self.json("cable", "list")},
            "decisions": self.json("audit", "--decisions", "--limit", "10000"),
        }


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for key in list(os.environ):
        if key.startswith("GRIDCAP_"):
            monkeypatch.delenv(key)
    runner = Cli(capsys, monkeypatch, tmp_path)
    monkeypatch.setenv("GRIDCAP_DATABASE_URL", f"sqlite:///{runner.db_file}")
    monkeypatch.setenv("GRIDCAP_ADMIN_TOKEN_FILE", str(runner.token_file))
    monkeypatch.setenv("GRIDCAP_TIMESERIES_PATH", str(runner.root / "data" / "timeseries.db"))
    return runner


@pytest.fixture
def ready(cli: Cli) -> Cli:
    assert cli("init-db") == 0, cli.err
    return cli


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database seeded once by `init-db --demo`; tests get a copy (seeding takes a second)."""
    root = tmp_path_factory.mktemp("demo-template")
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("GRIDCAP_"):
                mp.delenv(key)
        mp.setenv("GRIDCAP_DATABASE_URL", f"sqlite:///{root / 'data' / 'gridcap.db'}")
        mp.setenv("GRIDCAP_ADMIN_TOKEN_FILE", str(root / "secrets" / "admin-token"))
        mp.setenv("GRIDCAP_TIMESERIES_PATH", str(root / "data" / "timeseries.db"))
        assert main(["init-db", "--demo"]) == 0
    return root


@pytest.fixture
def demo(cli: Cli, demo_template: Path) -> Cli:
    shutil.copytree(demo_template, cli.root, dirs_exist_ok=True)
    return cli


def at(hours: float) -> str:
    """A quarter hour `hours` from now, with its offset, as a user types it."""
    return (block_floor(datetime.now(UTC)) + timedelta(hours=hours)).isoformat()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- init-db ---------------------------------------------------------------------------------------


def test_init_db_creates_the_schema_and_a_private_admin_token(cli: Cli) -> None:
    assert not cli.db_file.parent.exists()
    assert cli("init-db") == 0
    assert cli.db_file.exists()
    assert mode(cli.token_file) == 0o600
    token = cli.token_file.read_text().strip()
    assert len(token) >= 32
    assert f"written to {cli.token_file}" in cli.out

    assert cli("init-db") == 0  # again: the schema stays, the token is kept
    assert cli.token_file.read_text().strip() == token
    assert "kept" in cli.out
    assert cli.json("cable", "list") == []


def test_init_db_writes_no_token_file_when_the_token_is_configured(cli: Cli) -> None:
    cli.monkeypatch.setenv("GRIDCAP_ADMIN_TOKEN", "a-configured-token-of-enough-length")
    assert cli("init-db") == 0
    assert not cli.token_file.exists()
    assert "GRIDCAP_ADMIN_TOKEN" in cli.out


def test_init_db_refuses_an_unusable_token_before_creating_anything(cli: Cli) -> None:
    cli.token_file.parent.mkdir()
    cli.token_file.write_text("\n")
    err = cli.fails(2, "init-db")
    assert "delete it and run `gridcap init-db` again" in err
    assert not cli.db_file.exists()

    cli.token_file.unlink()
    cli.token_file.mkdir()
    assert "cannot be read" in cli.fails(2, "init-db")
    assert not cli.db_file.exists()

    cli.token_file.rmdir()
    cli.monkeypatch.setenv("GRIDCAP_ADMIN_TOKEN", "short")
    assert "at least 16 characters" in cli.fails(2, "init-db")
    assert not cli.db_file.exists()


# --- serve ---------------------------------------------------------------------------------------------


class _Server:
    """Stands in for waitress' server: `serve` prints what it prints, then `run` returns at once."""

    def run(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def serving(demo: Cli) -> Cli:
    """The demo grid, its credentials file claimed for this copy of the database, and no real server."""
    credentials = demo.db_file.parent / "demo-credentials.json"
    document = json.loads(credentials.read_text())
    credentials.write_text(json.dumps({**document, "database": f"sqlite:///{demo.db_file}"}))
    demo.monkeypatch.setattr("waitress.create_server", lambda app, **options: _Server())
    return demo


def demo_passwords(cli: Cli) -> list[str]:
    document = json.loads((cli.db_file.parent / "demo-credentials.json").read_text())
    return [cpo["password"] for cpo in document["cpos"]]


def test_serve_prints_token_and_demo_credentials_of_a_local_set_up(serving: Cli) -> None:
    assert serving("serve", "--port", "8123") == 0, serving.err
    token = serving.token_file.read_text().strip()
    assert f"Admin token  {token}  (send as: Authorization: Bearer <token>)" in serving.out
    assert "Demo CPO credentials (from " in serving.out
    for password in demo_passwords(serving):
        assert password in serving.out
    assert "http://127.0.0.1:8123/api/v1/docs" in serving.out


def test_serve_does_not_print_a_configured_token_or_demo_credentials(serving: Cli) -> None:
    token = "a-production-token-from-the-environment"  # noqa: S105
    serving.monkeypatch.setenv("GRIDCAP_ADMIN_TOKEN", token)
    assert serving("serve") == 0, serving.err
    assert "Admin token  (from GRIDCAP_ADMIN_TOKEN; not shown)" in serving.out
    assert token not in serving.out
    assert "http://127.0.0.1:8080/api/v1/docs" in serving.out
    for password in demo_passwords(serving):
        assert password not in serving.out
    assert serving.token_file.read_text().strip() not in serving.out


def test_serve_does_not_print_a_token_from_the_config_file(serving: Cli, tmp_path: Path) -> None:
    token = "a-production-token-from-the-config-file"  # noqa: S105
    config = tmp_path / "gridcap.toml"
    config.write_text(f'admin_token = "{token}"\n')
    serving.monkeypatch.setenv("GRIDCAP_CONFIG", str(config))
    assert serving("serve") == 0, serving.err
    assert f"Admin token  (from admin_token in {config}; not shown)" in serving.out
    assert token not in serving.out
    for password in demo_passwords(serving):
        assert password not in serving.out


def test_init_db_demo_seeds_once_through_the_use_cases(cli: Cli) -> None:
    assert cli("init-db", "--demo") == 0, cli.err
    assert "seeded 4 cables" in cli.out
    cables = {c["id"]: c for c in cli.json("cable", "list")}
    assert len(cables) == 4
    assert {c["unit"] for c in cables.values()} == {"A", "KW"}
    street = cables["demo-kerkstraat"]
    assert (street["unit"], street["rated_limit"], street["margin"], street["phases"]) == ("A", 250, 10, 3)
    assert cables["demo-parkeerhub"]["rated_limit"] == 150
    (override,) = cables["demo-molenweg"]["overrides"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert override["start"].startswith(tomorrow)
    assert all(c["base_load"] > 0 for c in cables.values())

    cpos = cli.json("cpo", "list")
    assert len(cpos) == 3
    subs = cli.json("subscription", "list", "demo-parkeerhub")
    assert {s["cpo_id"] for s in subs} == {"demo-chargeco", "demo-parkplug", "demo-voltline"}
    assert any(s["guaranteed_minimum"] > 0 for s in subs)

    creds_file = cli.db_file.parent / "demo-credentials.json"
    assert mode(creds_file) == 0o600
    creds = json.loads(creds_file.read_text())["cpos"]
    assert {c["id"] for c in creds} == {c["id"] for c in cpos}
    ctx = Context(Database(f"sqlite:///{cli.db_file}"))
    try:
        for c in creds:
            assert authenticate(ctx, c["username"], c["password"]) == c["id"]
    finally:
        ctx.db.dispose()

    actors = {d["actor"] for d in cli.json("audit", "--decisions", "--limit", "10000")["decisions"]}
    assert actors == {f"cli:{getpass.getuser()}", "system"}

    before = cli.state()
    assert cli("init-db", "--demo") == 0
    assert "not seeded" in cli.out
    assert "nothing changed" in cli.out
    assert cli.state() == before
    assert json.loads(creds_file.read_text())["cpos"] == creds


# --- admin commands --------------------------------------------------------------------------------


def test_cable_commands(ready: Cli) -> None:
    cli = ready
    assert cli("cable", "list") == 0
    assert "no cables" in cli.out
    args = ("cable", "add", "ls-1", "--name", "Kerkstraat LS-1", "--unit", "a", "--rated-limit", "250")
    assert cli(*args, "--margin", "10", "--base-load", "60") == 0, cli.err
    assert "cable ls-1 created" in cli.out
    assert cli("cable", "add", "kw-1", "--name", "Feeder", "--unit", "KW", "--rated-limit", "150", "--phases", "1") == 0

    assert cli("cable", "list") == 0
    assert cli.out.splitlines()[0].split()[:3] == ["ID", "NAME", "UNIT"]
    assert "ls-1" in cli.out
    assert "kw-1" in cli.out
    shown = cli.json("cable", "show", "ls-1")
    assert shown["unit"] == "A"
    assert shown["rated_limit"] == 250
    assert shown["voltage_v"] == 230
    assert shown["reserve_share"] == 0.1
    assert shown["subscriptions"] == []

    assert cli("cable", "update", "ls-1", "--rated-limit", "200.5", "--name", "Kerkstraat") == 0, cli.err
    shown = cli.json("cable", "show", "ls-1")
    assert (shown["rated_limit"], shown["name"]) == (200.5, "Kerkstraat")

    start, end = at(3), at(5)
    args = ("cable", "override-add", "ls-1", "--start", start, "--end", end, "--limit", "120", "--reason", "works")
    assert cli(*args) == 0, cli.err
    assert "limit override 1 added" in cli.out
    assert cli("cable", "show", "ls-1") == 0
    assert "works" in cli.out
    (override,) = cli.json("cable", "show", "ls-1")["overrides"]
    assert datetime.fromisoformat(override["start"]) == datetime.fromisoformat(start)
    view = cli.json("capacity", "ls-1", "--start", start, "--end", at(3.5))
    assert [b["limit"] for b in view["blocks"]] == [120, 120]

    assert cli("cable", "override-remove", "ls-1", str(override["id"])) == 0
    assert cli.json("cable", "show", "ls-1")["overrides"] == []
    assert "no limit override 1" in cli.fails(2, "cable", "override-remove", "ls-1", "1")

    assert cli("cable", "delete", "kw-1") == 0
    assert [c["id"] for c in cli.json("cable", "list")] == ["ls-1"]


def test_cpo_commands_and_passwords(ready: Cli) -> None:
    cli = ready
    assert cli("cpo", "add", "cpo-1", "--name", "ChargeCo", "--endpoint-url", "https://cpo.example/oscp") == 0
    generated = cli.out.split("store it safely): ")[1].strip()
    assert len(generated) >= 12
    from_vault = "a-password-from-a-vault"
    args = ("cpo", "add", "cpo-2", "--name", "VoltLine", "--username", "volt", "--endpoint-url", "http://v.example")
    assert cli(*args, "--binding", "JSON", "--password-stdin", stdin=from_vault + "\n") == 0, cli.err
    assert "generated" not in cli.out
    assert from_vault not in cli.out

    listed = cli.json("cpo", "list")
    assert [(c["id"], c["username"], c["binding"]) for c in listed] == [
        ("cpo-1", "cpo-1", "soap11"),
        ("cpo-2", "volt", "json"),
    ]
    assert all("password" not in json.dumps(c) for c in listed)
    assert cli("cpo", "show", "cpo-2") == 0
    assert "http://v.example" in cli.out

    changed = "another-long-password"
    assert cli("cpo", "update", "cpo-2", "--name", "VoltLine BV", "--password-stdin", stdin=changed) == 0
    assert "password changed" in cli.out
    assert cli.json("cpo", "show", "cpo-2")["name"] == "VoltLine BV"
    ctx = Context(Database(f"sqlite:///{cli.db_file}"))
    try:
        assert authenticate(ctx, "cpo-1", generated) == "cpo-1"
        assert authenticate(ctx, "volt", changed) == "cpo-2"
    finally:
        ctx.db.dispose()

    assert cli("cpo", "delete", "cpo-1") == 0
    assert [c["id"] for c in cli.json("cpo", "list")] == ["cpo-2"]


def test_subscription_commands_share_budgets(ready: Cli) -> None:
    cli = ready
    assert (
        cli("cable", "add", "ls-1", "--name", "LS", "--unit", "A", "--rated-limit", "100", "--reserve-share", "0") == 0
    )
    for cpo in ("cpo-1", "cpo-2"):
        assert cli("cpo", "add", cpo, "--name", cpo, "--endpoint-url", "https://x.example") == 0
    assert cli("subscription", "add", "ls-1", "cpo-1", "--weight", "3", "--minimum", "10") == 0, cli.err
    assert cli("subscription", "add", "ls-1", "cpo-2") == 0
    subs = cli.json("subscription", "list", "ls-1")
    assert [(s["cpo_id"], s["weight"], s["guaranteed_minimum"]) for s in subs] == [
        ("cpo-1", 3, 10),
        ("cpo-2", 1, 0),
    ]
    block = cli.json("capacity", "ls-1", "--start", at(4), "--end", at(4.25))["blocks"][0]
    assert block["budgets"] == {"cpo-1": 77.5, "cpo-2": 22.5}  # 10 + 90 * 3/4, 90 * 1/4

    assert cli("subscription", "update", "ls-1", "cpo-2", "--minimum", "5") == 0, cli.err
    subs = cli.json("subscription", "list", "ls-1")
    assert [(s["weight"], s["guaranteed_minimum"]) for s in subs] == [(3, 10), (1, 5)]
    assert cli("cpo", "show", "cpo-2") == 0
    assert "ls-1" in cli.out

    assert cli("subscription", "remove", "ls-1", "cpo-2") == 0
    assert [s["cpo_id"] for s in cli.json("subscription", "list", "ls-1")] == ["cpo-1"]
    block = cli.json("capacity", "ls-1", "--start", at(4), "--end", at(4.25))["blocks"][0]
    assert block["budgets"] == {"cpo-1": 100}


def test_capacity_request_audit_and_horizon(demo: Cli) -> None:
    cli = demo
    assert cli("capacity", "demo-kerkstraat") == 0
    lines = cli.out.splitlines()
    assert lines[1].split() == [
        "START", "LIMIT", "BASE", "LOAD", "MARGIN", "AVAILABLE", "UNALLOCATED", "demo-chargeco", "demo-voltline",
    ]  # fmt: skip
    assert len(lines) == 2 + 48 * 4  # the whole horizon by default

    start, end = at(6), at(6.5)
    view = cli.json("capacity", "demo-kerkstraat", "--start", start, "--end", end)
    assert view["unit"] == "A"
    assert len(view["blocks"]) == 2
    block = view["blocks"][0]
    assert block["available"] == 250 - 85 - 10
    assert block["handed_out"] is True
    held = Decimal(str(block["budgets"]["demo-voltline"]))

    t0 = datetime.now(UTC)
    result = cli.json("request", "demo-kerkstraat", "demo-voltline", "--start", start, "--end", end, "--capacity", "5")
    assert result["status"] == "Accepted"  # less than it holds: a hand-back
    assert [b["budget"] for b in result["blocks"]] == [5, 5]
    assert held > 5
    args = ("request", "demo-kerkstraat", "demo-voltline", "--start", start, "--end", end, "--capacity", "1000")
    assert cli(*args) == 0
    assert cli.out.startswith("PartiallyAccepted (decision ") or cli.out.startswith("Rejected (decision ")

    decisions = cli.json("audit", "--decisions", "--cable", "demo-kerkstraat", "--cpo", "demo-voltline")["decisions"]
    requests = [d for d in decisions if d["action"] == "request"]
    assert len(requests) == 2
    assert all(d["actor"] == f"cli:{getpass.getuser()}" for d in requests)
    ledger = cli.json("audit", "--cpo", "demo-voltline", "--since", t0.isoformat(), "--limit", "50")["entries"]
    assert {e["reason"] for e in ledger} >= {"handed_back", "request_granted"}
    assert all(e["cpo_id"] == "demo-voltline" and datetime.fromisoformat(e["at"]) >= t0 for e in ledger)
    assert cli("audit", "--cable", "demo-kerkstraat", "--limit", "3") == 0
    assert len(cli.out.splitlines()) == 4
    assert cli("audit", "--decisions", "--limit", "2") == 0
    assert "hand_out" in cli.out

    assert cli.json("horizon", "roll") == {
        "handed_out": dict.fromkeys(["demo-dorpsplein", "demo-kerkstraat", "demo-molenweg", "demo-parkeerhub"], 0),
        "failed": {},
    }
    assert cli("horizon", "roll") == 0
    assert "demo-molenweg" in cli.out
    assert cli.err == ""


def test_horizon_roll_reports_each_failed_cable_and_exits_1(demo: Cli) -> None:
    from service.usecases import capacity

    real = capacity.ensure_horizon

    def ensure_horizon(ctx: Context, cable_id: str) -> int:
        if cable_id == "demo-molenweg":
            raise RuntimeError("disk full")
        return real(ctx, cable_id)

    demo.monkeypatch.setattr(capacity, "ensure_horizon", ensure_horizon)
    assert demo("horizon", "roll") == 1
    assert "gridcap: error: new blocks were not handed out on 1 of 4 cables: demo-molenweg (disk full)" in demo.err
    assert "handing out new blocks on cable demo-molenweg failed (run with --debug for the traceback)" in demo.err
    rows = {line.split()[0]: line.split(maxsplit=1)[1] for line in demo.out.splitlines()[1:]}
    assert rows["demo-kerkstraat"] == "0"
    assert rows["demo-molenweg"].startswith("failed: disk full")

    assert demo("horizon", "roll", "--json") == 1
    assert json.loads(demo.out) == {
        "handed_out": dict.fromkeys(["demo-dorpsplein", "demo-kerkstraat", "demo-parkeerhub"], 0),
        "failed": {"demo-molenweg": "disk full"},
    }
    assert "demo-molenweg (disk full)" in demo.err


_FAILING_ROLL = """
import sys
from service.usecases import capacity
real = capacity.ensure_horizon
def ensure_horizon(ctx, cable_id):
    if cable_id == "demo-molenweg":
        raise RuntimeError("disk full")
    return real(ctx, cable_id)
capacity.ensure_horizon = ensure_horizon
from service.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_a_failure_logged_by_a_use_case_shows_its_traceback_only_with_debug(demo: Cli, debug: bool) -> None:
    args = ["horizon", "roll", *(["--debug"] if debug else [])]
    ran = subprocess.run(
        [sys.executable, "-c", _FAILING_ROLL, *args], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert ran.returncode == 1
    assert "handing out new blocks on cable demo-molenweg failed" in ran.stderr
    assert ("Traceback" in ran.stderr) is debug, ran.stderr
    assert ran.stderr.count("gridcap: error: ") == 1


def test_help_is_not_an_error(cli: Cli) -> None:
    assert cli("--help") == 0
    assert "init-db" in cli.out
    assert cli("cable", "add", "--help") == 0
    assert "--rated-limit" in cli.out


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "choose a command (see `gridcap --help`)"),
        (("cable",), "choose a command (see `gridcap cable --help`)"),
        (("cable", "frob"), "invalid choice: 'frob'"),
        (("cable", "add", "x", "--unit", "A", "--rated-limit", "1"), "required: --name"),
        (("cable", "add", "x", "--name", "X", "--unit", "MW", "--rated-limit", "1"), "unit must be A"),
        (("cable", "add", "x", "--name", "X", "--unit", "A", "--rated-limit", "lots"), "expected a number >= 0"),
        (("cable", "add", "x", "--name", "X", "--unit", "A", "--rated-limit", "-1"), "expected a number >= 0"),
        (("cable", "add", "x y", "--name", "X", "--unit", "A", "--rated-limit", "1"), "is not a valid id"),
        (("cable", "add", "x", "--name", "X", "--unit", "A", "--rated-limit", "1", "--phases", "4"), "from 1 to 3"),
        (("cable", "update", "demo-molenweg", "--reserve-share", "1"), "share in [0, 1)"),
        (("cable", "update", "demo-molenweg"), "nothing to change"),
        (("cable", "show", "nope"), "cable 'nope' does not exist; list the cables to see which do"),
        (
            ("cable", "add", "demo-molenweg", "--name", "X", "--unit", "A", "--rated-limit", "1"),
            "update it instead of creating it again",
        ),
        (("cable", "delete", "demo-molenweg"), "still has subscribers"),
        (
            (
                "cable",
                "override-add",
                "demo-molenweg",
                "--start",
                "2026-11-25T17:00",
                "--end",
                "2026-11-25T18:00Z",
                "--limit",
                "5",
                "--reason",
                "x",
            ),
            "'2026-11-25T17:00' has no UTC offset",
        ),
        (
            (
                "cable",
                "override-add",
                "demo-molenweg",
                "--start",
                "tomorrow",
                "--end",
                "2026-11-25T18:00Z",
                "--limit",
                "5",
                "--reason",
                "x",
            ),
            "is not an ISO 8601 date-time",
        ),
        (
            (
                "cable",
                "override-add",
                "demo-molenweg",
                "--start",
                "2026-11-25T17:05Z",
                "--end",
                "2026-11-25T18:00Z",
                "--limit",
                "5",
                "--reason",
                "x",
            ),
            "is not on a quarter hour",
        ),
        (
            (
                "cable",
                "override-add",
                "demo-molenweg",
                "--start",
                "2026-11-25T17:00Z",
                "--end",
                "2026-11-25T18:00Z",
                "--limit",
                "5",
                "--reason",
                " ",
            ),
            "must say why",
        ),
        (("cable", "override-remove", "demo-molenweg", "one"), "expected a whole number"),
        (("cpo", "add", "c", "--name", "C", "--endpoint-url", "ftp://c"), "must be an http(s) URL"),
        (("cpo", "add", "c", "--name", "C", "--endpoint-url", "https://c.example", "--binding", "xml"), "binding must"),
        (("cpo", "add", "demo-chargeco", "--name", "C", "--endpoint-url", "https://c.example"), "already exists"),
        (("cpo", "update", "demo-chargeco"), "nothing to change"),
        (("cpo", "update", "nope", "--name", "N"), "CPO 'nope' does not exist; list the CPOs to see which do"),
        (("cpo", "delete", "demo-chargeco"), "remove those subscriptions first"),
        (("subscription", "add", "demo-molenweg", "demo-chargeco", "--minimum", "100"), "lower the minimums"),
        (
            ("subscription", "add", "demo-molenweg", "demo-voltline"),
            "update the subscription instead of adding it again",
        ),
        (("subscription", "add", "demo-molenweg", "nope"), "CPO 'nope' does not exist"),
        (("subscription", "update", "demo-molenweg", "demo-chargeco", "--weight", "2"), "is not subscribed"),
        (("subscription", "update", "demo-molenweg", "demo-voltline"), "give --weight, --minimum or both"),
        (("subscription", "remove", "demo-molenweg", "demo-chargeco"), "is not subscribed"),
        (("capacity", "demo-molenweg", "--start", "2026-01-01T00:00:00"), "has no UTC offset"),
        (("capacity", "demo-molenweg", "--end", at(24 * 10)), "at or before the horizon's end"),
        (("request", "demo-molenweg", "demo-chargeco", "--start", "S", "--end", "E", "--capacity", "1"), "ISO 8601"),
        (("audit", "--limit", "0"), "from 1 to 10000"),
        (("audit", "--since", "2026-11-24 12:00"), "has no UTC offset"),
        (("serve", "--port", "70000"), "from 1 to 65535"),
        (("capacity", "demo-molenweg", "--end", "9999-12-31T23:45-01:00"), "outside the years 1970 to 2999"),
        (("audit", "--since", "0001-01-01T00:00+01:00"), "outside the years 1970 to 2999"),
        (
            (
                "cable",
                "override-add",
                "demo-molenweg",
                "--start",
                "0001-01-01T00:00+01:00",
                "--end",
                at(2),
                "--limit",
                "5",
                "--reason",
                "r",
            ),
            "'0001-01-01T00:00+01:00' is outside the years 1970 to 2999",
        ),
        (
            (
                "request",
                "demo-molenweg",
                "demo-voltline",
                "--start",
                at(2),
                "--end",
                "9999-12-31T23:45-01:00",
                "--capacity",
                "1",
            ),
            "argument --end: '9999-12-31T23:45-01:00' is outside the years 1970 to 2999",
        ),
        (
            (
                "request",
                "demo-molenweg",
                "demo-voltline",
                "--start",
                at(1),
                "--end",
                at(1 + 24 * 365 * 900),
                "--capacity",
                "1",
            ),
            "spans 31536000 blocks; a request covers at most the 48-hour horizon (192 blocks)",
        ),
        (
            ("request", "demo-molenweg", "demo-voltline", "--start", at(-1), "--end", at(48.25), "--capacity", "1"),
            "spans 197 blocks; a request covers at most the 48-hour horizon (192 blocks)",
        ),
    ],
)
def test_bad_input_is_a_usage_error_that_changes_nothing(demo: Cli, args: tuple[str, ...], message: str) -> None:
    before = demo.state()
    assert message in demo.fails(2, *args)
    assert demo.state() == before


def test_requests_are_checked_against_horizon_and_subscriptions(demo: Cli) -> None:
    before = demo.state()
    cable = ("request", "demo-molenweg")
    window = ("--start", at(2), "--end", at(3), "--capacity", "10")
    assert "is not subscribed to cable" in demo.fails(2, *cable, "demo-chargeco", *window)
    far = ("--start", at(24 * 30), "--end", at(24 * 30 + 1), "--capacity", "10")
    assert "beyond the horizon" in demo.fails(2, *cable, "demo-voltline", *far)
    past = ("--start", at(-2), "--end", at(-1), "--capacity", "10")
    assert "already ended" in demo.fails(2, *cable, "demo-voltline", *past)
    odd = ("--start", at(2), "--end", (block_floor(datetime.now(UTC)) + BLOCK * 8 + timedelta(minutes=5)).isoformat())
    assert "quarter hour" in demo.fails(2, *cable, "demo-voltline", *odd, "--capacity", "1")
    assert demo.state() == before


def test_passwords_on_stdin_are_checked(ready: Cli) -> None:
    args = ("cpo", "add", "c", "--name", "C", "--endpoint-url", "https://c.example", "--password-stdin")
    assert "at least 12 characters" in ready.fails(2, *args, stdin="short\n")
    assert "read no password" in ready.fails(2, *args, stdin="")
    assert ready.json("cpo", "list") == []


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GRIDCAP_PORT", "eighty", "setting port (GRIDCAP_PORT) must be a whole number"),
        ("GRIDCAP_PORT", "0", "must be between 1 and 65535"),
        ("GRIDCAP_HORIZON_HOURS", "-1", "horizon_hours"),
        ("GRIDCAP_CONFIG", "/nonexistent/gridcap.toml", "GRIDCAP_CONFIG names /nonexistent/gridcap.toml"),
        ("GRIDCAP_DATABASE_URL", "not a url", "is not a database URL"),
        ("GRIDCAP_USAGE_MARGIN_SHARE", "nan", "must be a finite number"),
        ("GRIDCAP_CONFIG", "/", "GRIDCAP_CONFIG names /, which is a directory"),
    ],
)
def test_configuration_errors_are_usage_errors(ready: Cli, variable: str, value: str, message: str) -> None:
    ready.monkeypatch.setenv(variable, value)
    for command in (("cable", "list"), ("init-db",), ("serve",)):
        assert message in ready.fails(2, *command)


def test_a_config_file_with_an_unknown_key_is_reported(ready: Cli, tmp_path: Path) -> None:
    config = tmp_path / "gridcap.toml"
    config.write_text('prot = 8080\nlog_level = "INFO"\n')
    ready.monkeypatch.setenv("GRIDCAP_CONFIG", str(config))
    assert "unknown setting(s) prot" in ready.fails(2, "cable", "list")


def test_commands_before_init_db_say_what_to_do_and_create_nothing(cli: Cli) -> None:
    assert "create it with `gridcap init-db` first" in cli.fails(2, "cable", "list")
    assert not cli.db_file.exists()
    cli.db_file.parent.mkdir(parents=True)
    cli.db_file.touch()  # an empty file, as another tool might leave it
    assert "no gridcap schema yet" in cli.fails(2, "cpo", "list")
    assert "no admin token" in cli.fails(2, "serve")


def test_other_failures_exit_1_and_log_a_traceback_only_with_debug(cli: Cli, caplog: pytest.LogCaptureFixture) -> None:
    cli.db_file.parent.mkdir(parents=True)
    cli.db_file.write_bytes(b"this is not an SQLite database, it only has its name" * 100)
    err = cli.fails(1, "cable", "list")
    assert "database error: file is not a database" in err
    assert "--debug" in err
    assert not [r for r in caplog.records if r.exc_info]

    for args in (("cable", "list", "--debug"), ("--debug", "cpo", "list")):
        caplog.clear()
        assert "file is not a database" in cli.fails(1, *args)
        (logged,) = [r for r in caplog.records if r.exc_info]
        assert logged.name == "gridcap.cli"


# --- the installed entry points --------------------------------------------------------------------


def test_entry_points_run_in_a_subprocess(demo: Cli) -> None:
    env = {**os.environ}  # carries the GRIDCAP_* variables the fixture set
    shown = subprocess.run(
        [sys.executable, "-m", "service", "--help"], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "init-db" in shown.stdout
    assert "serve" in shown.stdout

    gridcap = Path(sys.executable).parent / "gridcap"
    command = [str(gridcap)] if gridcap.exists() else [sys.executable, "-m", "service"]
    listed = subprocess.run(
        [*command, "cable", "list", "--json"], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 4

    failed = subprocess.run(
        [*command, "cable", "show", "nope"], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.startswith("gridcap: error: cable 'nope' does not exist")
    assert "Traceback" not in failed.stderr
