"""The Grafana dashboards and provisioning, checked without a Grafana: the checked-in JSON is what
service.monitoring.dashboards builds (so it queries the names the service writes), and every
dashboard is well-formed and consistent with the provisioned datasource."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from service.monitoring import dashboards, names
from service.settings import Settings

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
BUILT = dashboards.build()
BUILTINS = {"timeFilter", "__interval", "__interval_ms", "__range", "__from", "__to"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def parse_yaml(text: str) -> Any:
    """The YAML subset the provisioning files use: nested mappings, lists of mappings, plain scalars."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.strip():
            lines.append((len(line) - len(line.lstrip()), line.strip()))

    def scalar(value: str) -> object:
        if value in {"true", "false"}:
            return value == "true"
        if re.fullmatch(r"-?\d+", value):
            return int(value)
        return value.strip("'\"")

    def block(i: int, indent: int) -> tuple[object, int]:
        if lines[i][1].startswith("- "):
            items: list[object] = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                # a list item: re-read its first line as a mapping key two columns further in
                lines[i] = (indent + 2, lines[i][1][2:])
                item, i = block(i, indent + 2)
                items.append(item)
            return items, i
        mapping: dict[str, object] = {}
        while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
            key, _, value = lines[i][1].partition(":")
            assert key, lines[i]
            i += 1
            if value.strip():
                mapping[key] = scalar(value.strip())
            elif i < len(lines) and lines[i][0] > indent:
                mapping[key], i = block(i, lines[i][0])
            elif i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                mapping[key], i = block(i, indent)
            else:
                mapping[key] = None
        return mapping, i

    parsed, end = block(0, lines[0][0])
    assert end == len(lines), f"unparsed from line {lines[end]}"
    return parsed


def datasources() -> list[dict[str, Any]]:
    parsed = parse_yaml((GRAFANA / "provisioning" / "datasources" / "gridcap.yaml").read_text(encoding="utf-8"))
    result: list[dict[str, Any]] = parsed["datasources"]
    return result


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # inside a row
    return found


def annotations(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in board["annotations"]["list"] if not a.get("builtIn")]


def board_queries(board: dict[str, Any]) -> list[str]:
    """Every query a dashboard runs: panel targets and annotations."""
    found = [t["query"] for p in panels(board) for t in p.get("targets", [])]
    return found + [a["query"] for a in annotations(board)]


def used_variables(text: str) -> set[str]:
    return {a or b for a, b in VARIABLE.findall(text)} - BUILTINS


def test_the_checked_in_dashboards_are_what_the_code_builds() -> None:
    on_disk = {path.name for path in (GRAFANA / "dashboards").glob("*.json")}
    assert on_disk == set(BUILT), "run `python -m service.monitoring.dashboards` to rewrite grafana/dashboards"
    for name, board in BUILT.items():
        text = (GRAFANA / "dashboards" / name).read_text(encoding="utf-8")
        assert text == dashboards.render(board), f"{name} is stale: run `python -m service.monitoring.dashboards`"


def test_the_dashboards_query_the_measurements_the_service_writes() -> None:
    queries = " ".join(query for board in BUILT.values() for query in board_queries(board))
    written = (
        names.FORECAST,
        names.CAPACITY,
        names.BUDGET,
        names.USAGE,
        names.FORECAST_QUALITY,
        names.LIMIT_CHANGE,
        names.OSCP,
        names.ALLOCATION,
        names.REQUESTS,
        names.CPO_STATE,
        names.JOB,
    )
    for measurement in written:
        assert f'"{measurement.measurement()}"' in queries
    assert f'"{Settings().load_measurement}"' in queries


def test_another_prefix_reaches_every_query() -> None:
    boards = dashboards.build(Settings(results_prefix="dso_", load_measurement="feeder_load"))
    text = json.dumps(boards)
    assert '\\"dso_capacity\\"' in text
    assert '\\"feeder_load\\"' in text
    assert "gridcap_" not in text.replace("gridcap-", "").replace("gridcap:", "").replace('"gridcap"', "")


@pytest.mark.parametrize("name", sorted(BUILT))
def test_a_dashboard_is_well_formed(name: str) -> None:
    board = BUILT[name]
    assert board["uid"]
    assert board["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0
        assert pos["w"] >= 1
        assert pos["h"] >= 1
        assert pos["x"] + pos["w"] <= 24, f"{name} panel {panel['id']} runs past 24 columns"
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), f"duplicate refIds in {name} panel {panel['id']}"
        for t in panel.get("targets", []):
            assert t["rawQuery"] is True
            assert "$timeFilter" in t["query"], f"{name} panel {panel['id']} ignores the time range"
    for annotation in annotations(board):
        assert annotation["name"]
        assert "$timeFilter" in annotation["query"], f"{name} annotation {annotation['name']} ignores the time range"
        assert annotation["textColumn"]


def test_uids_are_unique_across_dashboards() -> None:
    uids = [board["uid"] for board in BUILT.values()]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("name", sorted(BUILT))
def test_every_datasource_is_provisioned(name: str) -> None:
    provisioned = {ds["uid"] for ds in datasources()}
    board = BUILT[name]
    used = [v["datasource"] for v in board["templating"]["list"] if "datasource" in v]
    for panel in panels(board):
        used.extend([panel["datasource"], *(t["datasource"] for t in panel.get("targets", []))])
    used.extend(a["datasource"] for a in annotations(board))
    assert used
    assert {ds["uid"] for ds in used} <= provisioned


@pytest.mark.parametrize("name", sorted(BUILT))
def test_variables_are_defined_before_use(name: str) -> None:
    board = BUILT[name]
    defined: set[str] = set()
    for variable in board["templating"]["list"]:
        assert used_variables(variable["query"]) <= defined, f"{variable['name']} uses a later variable"
        defined.add(variable["name"])
    assert len(defined) == len(board["templating"]["list"]), "a variable name is defined twice"
    for panel in panels(board):
        texts = [panel["title"], panel.get("description", ""), *(t["query"] for t in panel.get("targets", []))]
        for text in texts:
            assert used_variables(text) <= defined, f"{name} panel {panel['id']}: {text}"
    for annotation in annotations(board):
        assert used_variables(annotation["query"]) <= defined, f"{name} annotation {annotation['name']}"


def test_the_cable_variable_lists_the_cables_with_capacity() -> None:
    (cable,) = [v for v in BUILT["cable-detail.json"]["templating"]["list"] if v["name"] == "cable"]
    assert cable["query"] == 'SHOW TAG VALUES FROM "gridcap_capacity" WITH KEY = "cable"'


def test_the_datasource_is_influxql_from_the_environment() -> None:
    (ds,) = datasources()
    assert ds["uid"] == dashboards.DATASOURCE_UID
    assert ds["type"] == "influxdb"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["url"] == "${GRIDCAP_INFLUX_URL}"
    assert ds["user"] == "${GRIDCAP_INFLUX_USERNAME}"
    assert ds["jsonData"]["dbName"] == "${GRIDCAP_INFLUX_DATABASE}"
    assert ds["secureJsonData"]["password"] == "${GRIDCAP_INFLUX_PASSWORD}"  # noqa: S105 - a reference to the environment


def test_the_dashboard_provider_reads_the_dashboards_folder() -> None:
    parsed = parse_yaml((GRAFANA / "provisioning" / "dashboards" / "gridcap.yaml").read_text(encoding="utf-8"))
    (provider,) = parsed["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "${GRIDCAP_GRAFANA_DASHBOARDS}"
    assert parsed["apiVersion"] == 1


def test_limit_changes_are_annotated_on_the_cable_detail() -> None:
    (annotation,) = annotations(BUILT["cable-detail.json"])
    assert '"gridcap_limit_change"' in annotation["query"]
    assert "\"cable\" = '$cable'" in annotation["query"]


def test_the_cpo_view_is_per_cpo() -> None:
    board = BUILT["cpo-view.json"]
    assert [v["name"] for v in board["templating"]["list"]] == ["cpo"]
    for panel in panels(board):
        for t in panel.get("targets", []):
            assert "'$cpo'" in t["query"], f"panel {panel['title']} shows every CPO"


def test_the_command_writes_a_deployments_names_or_refuses_bad_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRIDCAP_RESULTS_PREFIX", "dso_")
    assert dashboards.main([str(tmp_path / "defaults")]) == 0
    assert '\\"gridcap_capacity\\"' in (tmp_path / "defaults" / "grid-overview.json").read_text(encoding="utf-8")
    assert dashboards.main([str(tmp_path / "site"), "--settings"]) == 0
    assert '\\"dso_capacity\\"' in (tmp_path / "site" / "grid-overview.json").read_text(encoding="utf-8")
    assert str(tmp_path / "site" / "cpo-view.json") in capsys.readouterr().out
    monkeypatch.setenv("GRIDCAP_PORT", "not a port")
    with pytest.raises(SystemExit) as refused:
        dashboards.main([str(tmp_path / "bad"), "--settings"])
    assert refused.value.code == 2
    assert "GRIDCAP_PORT" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
