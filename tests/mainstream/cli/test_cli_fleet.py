"""`mainstream fleet plan` end to end on the example fleet, and its one-line file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scheduler.fleet import FleetPlan
from tests.mainstream.cli.test_cli_schedule import run_cli

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "fleet.yaml"


def test_plan_prints_every_node_the_bound_and_round_robin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(["fleet", "plan", str(EXAMPLE), "--time-limit", "5"], capsys)
    assert code == 0, err
    assert "Mainstream fleet plan: 4 cameras, 6 apps on 3 nodes at 10 fps" in out
    assert "(gap 0.00%)" in out and "Method     exact" in out
    for node in ("edge-1", "edge-2", "edge-big"):
        assert node in out
    assert "Round-robin placement (camera i on node i mod 3)" in out


def test_plan_json_places_every_camera_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        ["fleet", "plan", str(EXAMPLE), "--json", "--objective", "min_f1"], capsys
    )
    assert code == 0, err
    plan = FleetPlan.model_validate_json(out)
    assert plan.objective == "min_f1" and plan.optimality_gap == 0.0
    assert sorted(plan.assignment()) == ["crossing", "depot", "platform", "school"]
    for node in plan.nodes:
        assert node.total_cost <= node.budget * (1 + 1e-9)
    assert plan.round_robin is not None and plan.round_robin.value <= plan.value + 1e-9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["nodes"][1].update(budget=-5),
            "nodes.1.budget: Input should be greater than 0",
        ),
        (lambda d: d["cameras"][0].pop("apps"), "cameras.0.apps: Field required"),
        (lambda d: d["nodes"][0].update(speed=2), "nodes.0.speed: Extra inputs are not permitted"),
        (
            lambda d: d["cameras"][0]["apps"][0]["candidates"][1].update(cut_point="nowhere"),
            "node 'edge-1': app 'trains': candidate cut_point 'nowhere' is not in the",
        ),
        (
            lambda d: d["cameras"][0]["apps"][0].update(camera="elsewhere"),
            "app 'trains' is listed under camera 'platform' but names camera 'elsewhere'",
        ),
        (
            lambda d: d["cameras"][1]["apps"][0].update(name="trains"),
            "app names must be unique across the fleet: ['trains']",
        ),
    ],
)
def test_bad_fleet_files_get_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: object, message: str
) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    change(data)  # type: ignore[operator]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out, err = run_cli(["fleet", "plan", str(path)], capsys)
    assert code == 2 and out == ""
    line = err.strip()
    assert "\n" not in line
    assert str(path) in line and message in line


def test_nodes_may_name_the_profile_file_mainstream_profile_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    (tmp_path / "big.json").write_text(json.dumps(data["nodes"][2]["profile"]))
    data["nodes"][2]["profile"] = "big.json"
    data["nodes"][1]["profile"] = "missing.json"
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    code, _, err = run_cli(["fleet", "plan", str(path)], capsys)
    assert code == 2
    assert f"{path}: nodes.1.profile: cannot read profile file missing.json" in err
    data["nodes"][1]["profile"] = "big.json"
    path.write_text(yaml.safe_dump(data))
    code, out, err = run_cli(["fleet", "plan", str(path), "--json"], capsys)
    assert code == 0, err
    assert FleetPlan.model_validate_json(out).value > 0
