"""`mainstream schedule` end to end: the real CLI entry point on real problem files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mainstream.cli.main import main
from mainstream.core.errors import InfeasibleError
from scheduler.problem import Plan, Problem
from scheduler.sweep import SweepResult

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_JSON = REPO / "examples" / "problem.json"
EXAMPLE_YAML = REPO / "examples" / "problem.yaml"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `mainstream ARGS` through `main()` exactly as the console script does."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def example() -> Problem:
    return Problem.model_validate_json(EXAMPLE_JSON.read_text(encoding="utf-8"))


def write_problem(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_readme_command_prints_a_readable_schedule() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mainstream.cli.main", "schedule", "dry-run", str(EXAMPLE_JSON)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    example = Problem.model_validate_json(EXAMPLE_JSON.read_text(encoding="utf-8"))
    for app in example.apps:
        assert app.name in completed.stdout
    for label in ("Mainstream", "Max-Sharing", "No-Sharing", "Cut point", "FPS", "F1"):
        assert label in completed.stdout


def test_table_lists_every_app_and_both_baselines(
    example: Problem, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["schedule", "dry-run", str(EXAMPLE_JSON)], capsys)
    assert code == 0, err
    for app in example.apps:
        assert any(line.startswith(app.name + " ") for line in out.splitlines())
    assert "Max-Sharing" in out and "No-Sharing" in out
    assert f"of {example.budget:g} ms/s budget" in out


def test_json_prints_only_the_plan(example: Problem, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["schedule", "dry-run", str(EXAMPLE_JSON), "--json"], capsys)
    assert code == 0, err
    plan = Plan.model_validate_json(out)  # fails on anything but the plan
    assert isinstance(json.loads(out), dict)
    assert [app.name for app in plan.apps] == [app.name for app in example.apps]
    assert plan.budget == example.budget
    assert plan.total_cost <= plan.budget + 1e-9
    assert plan.solver == "auto" and plan.optimality_gap == 0.0  # small: proven optimal
    assert plan.upper_bound == pytest.approx(plan.value)
    assert set(plan.baselines) == {"max_sharing", "no_sharing"}


def test_the_example_shows_mainstream_beating_both_baselines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(["schedule", "dry-run", str(EXAMPLE_JSON), "--json"], capsys)
    assert code == 0, err
    plan = Plan.model_validate_json(out)
    for baseline in plan.baselines.values():
        assert baseline.feasible
        assert plan.value >= baseline.value + 0.05
    assert len({app.cut_point for app in plan.apps}) >= 2  # neither all shared nor all alone


def test_budget_and_objective_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["schedule", "dry-run", str(EXAMPLE_JSON), "--json", "--budget", "80"]
    code, out, err = run_cli([*args, "--objective", "min_f1", "--solver", "greedy"], capsys)
    assert code == 0, err
    plan = Plan.model_validate_json(out)
    assert plan.budget == 80
    assert plan.objective == "min_f1"
    assert plan.solver == "greedy"
    assert plan.value == pytest.approx(min(app.f1 for app in plan.apps))


def test_yaml_gives_the_same_plan_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert yaml.safe_load(EXAMPLE_YAML.read_text()) == json.loads(EXAMPLE_JSON.read_text())
    plans = []
    for path in (EXAMPLE_JSON, EXAMPLE_YAML):
        code, out, err = run_cli(["schedule", "dry-run", str(path), "--json"], capsys)
        assert code == 0, err
        plans.append(Plan.model_validate_json(out).model_dump(exclude={"solve_time_s"}))
    assert plans[0] == plans[1]


def test_report_writes_html_with_svg_charts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "plan.html"
    args = ["schedule", "dry-run", str(EXAMPLE_JSON), "--json", "--report", str(report)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    Plan.model_validate_json(out)  # the report does not leak onto stdout
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") >= 4
    assert "compute budget" in page
    assert str(report) in err
    assert [path.name for path in tmp_path.iterdir()] == ["plan.html"]  # no temp files left


def test_report_into_a_missing_directory_fails_before_planning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "missing" / "plan.html"
    code, out, err = run_cli(
        ["schedule", "dry-run", str(EXAMPLE_JSON), "--report", str(report)], capsys
    )
    assert code != 0
    assert "does not exist" in err
    assert out == ""
    assert not report.exists()


def test_time_limit_bounds_the_solve_and_the_table_states_the_gap(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(["schedule", "dry-run", str(EXAMPLE_JSON)], capsys)
    assert code == 0, err
    assert "proven optimal" in out
    args = ["schedule", "dry-run", str(EXAMPLE_JSON), "--json", "--solver", "milp"]
    code, out, err = run_cli([*args, "--time-limit", "0.05"], capsys)
    assert code == 0, err
    plan = Plan.model_validate_json(out)
    # HiGHS is cut short: whatever it proved by then, the plan reports it honestly.
    assert plan.solve_time_s < 0.05 + 0.5
    assert plan.upper_bound is not None and plan.upper_bound >= plan.value - 1e-9
    assert plan.optimality_gap is not None and 0.0 <= plan.optimality_gap <= 1.0
    for bad in ("0", "-1", "abc"):
        code, _, err = run_cli(
            ["schedule", "dry-run", str(EXAMPLE_JSON), "--time-limit", bad], capsys
        )
        assert code == 2 and "--time-limit" in err
    code, _, err = run_cli(["schedule", "dry-run", "--time-limit", "2"], capsys)
    assert code == 2 and "--time-limit needs a PROBLEM file" in err


def test_infeasible_budget_exits_non_zero_with_a_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["schedule", "dry-run", str(EXAMPLE_JSON), "--json", "--budget", "0.001"]
    code, out, err = run_cli(args, capsys)
    assert code == InfeasibleError.exit_code != 0
    assert out == ""
    assert err.startswith("error: ")
    assert "budget" in err.lower()


def test_malformed_problem_lists_each_bad_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(EXAMPLE_JSON.read_text())
    del data["budget"]
    data["apps"][1]["event_frequency"] = 1.5
    data["apps"][0]["candidates"][0]["recall"] = "high"
    path = write_problem(tmp_path / "bad.json", data)
    code, out, err = run_cli(["schedule", "dry-run", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert "budget: Field required" in err
    assert "apps.1.event_frequency" in err and "1.5" in err
    assert "apps.0.candidates.0.recall" in err


def test_inconsistent_problem_names_the_offender(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(EXAMPLE_JSON.read_text())
    data["apps"][0]["candidates"][0]["cut_point"] = "conv_pw_99_relu"
    path = write_problem(tmp_path / "bad.json", data)
    code, _, err = run_cli(["schedule", "dry-run", str(path)], capsys)
    assert code == 2
    assert "conv_pw_99_relu" in err and data["apps"][0]["name"] in err


def test_syntax_errors_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "budget": 10,\n  "apps": [\n}\n', encoding="utf-8")
    code, _, err = run_cli(["schedule", "dry-run", str(path)], capsys)
    assert code == 2
    assert "not valid JSON (line 4" in err

    path = tmp_path / "broken.yaml"
    path.write_text("budget: 10\napps: [unclosed\n", encoding="utf-8")
    code, _, err = run_cli(["schedule", "dry-run", str(path)], capsys)
    assert code == 2
    assert f"not valid YAML: {path}, line 3, column 1: expected ',' or ']'" in err
    assert "<unicode string>" not in err and len(err.strip().splitlines()) == 1


def test_a_yaml_list_is_not_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "list.yml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    code, _, err = run_cli(["schedule", "dry-run", str(path)], capsys)
    assert code == 2
    assert "must hold a mapping" in err


def test_missing_and_unknown_files_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["schedule", "dry-run", str(tmp_path / "nope.json")], capsys)
    assert code != 0 and out == ""
    assert "problem file not found" in err and "nope.json" in err

    other = tmp_path / "problem.txt"
    other.write_text(EXAMPLE_JSON.read_text(), encoding="utf-8")
    code, _, err = run_cli(["schedule", "dry-run", str(other)], capsys)
    assert code == 2
    assert ".json, .yaml or .yml" in err


def test_sweep_over_listed_budgets(example: Problem, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        ["schedule", "sweep", str(EXAMPLE_JSON), "--budgets", "0.001,60,120"], capsys
    )
    assert code == 0, err
    rows = [
        line.split() for line in out.splitlines() if line.strip().startswith(str(len(example.apps)))
    ]
    assert [row[1] for row in rows] == ["0.001", "60", "120"]
    assert rows[0][2:5] == ["infeasible"] * 3
    assert "Mainstream" in out and "Max-Sharing" in out and "No-Sharing" in out


def test_sweep_budget_range_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        ["schedule", "sweep", str(EXAMPLE_JSON), "--budget-range", "40:120:3", "--json"], capsys
    )
    assert code == 0, err
    result = SweepResult.model_validate_json(out)
    assert result.budgets() == [40.0, 80.0, 120.0]
    assert result.source == "problem"


def test_sweep_around_the_problem_budget_by_default(
    example: Problem, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["schedule", "sweep", str(EXAMPLE_JSON), "--json"], capsys)
    assert code == 0, err
    result = SweepResult.model_validate_json(out)
    assert example.budget in result.budgets()
    assert len(result.budgets()) >= 5


def test_sweep_app_subsets_of_a_problem(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        ["schedule", "sweep", str(EXAMPLE_JSON), "--apps", "1,2", "--budgets", "60", "--json"],
        capsys,
    )
    assert code == 0, err
    result = SweepResult.model_validate_json(out)
    assert [(point.num_apps, point.budget) for point in result.points] == [(1, 60.0), (2, 60.0)]


def test_sweep_generated_workloads_with_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "sweep.html"
    code, out, err = run_cli(
        ["schedule", "sweep", "--apps", "1,2", "--seed", "4", "--report", str(report)], capsys
    )
    assert code == 0, err
    assert "generated workloads (seed 4)" in out
    page = report.read_text(encoding="utf-8")
    assert "<svg" in page and "number of apps" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budgets", "10", "--budget-range", "1:2:2"], "not both"),
        (["--budgets", "10,abc"], "'abc' is not a number"),
        (["--budgets", "10,-1"], "must be > 0"),
        (["--budget-range", "10:20"], "MIN:MAX:STEPS"),
        (["--budget-range", "30:20:3"], "MIN <= MAX"),
        (["--apps", "1,x"], "not a whole number"),
        (["--apps", "99"], "at most the problem's"),
    ],
)
def test_sweep_rejects_bad_options_with_exit_code_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["schedule", "sweep", str(EXAMPLE_JSON), *args], capsys)
    assert code == 2
    assert message in err
    assert out == ""


def test_help_explains_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["schedule", "--help"], capsys)
    assert code == 0
    assert "dry-run" in out and "sweep" in out
    code, out, _ = run_cli(["schedule", "dry-run", "--help"], capsys)
    assert code == 0
    for option in ("--json", "--report", "--solver", "--budget", "--objective"):
        assert option in out


def test_candidates_with_counts_get_an_f1_interval_and_a_confidence(
    example: Problem, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = example.model_dump(mode="json", exclude_none=True)
    for app in data["apps"]:
        for candidate in app["candidates"]:
            positives, negatives = 400, 300  # thin: fewer than 1,000 negative frames
            candidate["evidence"] = {
                "positive_frames": positives,
                "positive_fires": round(candidate["recall"] * positives),
                "negative_frames": negatives,
                "negative_fires": round(candidate["false_positive_rate"] * negatives),
                "events": 40,
            }
    path = write_problem(tmp_path / "counted.json", data)

    code, out, _ = run_cli(["schedule", "dry-run", str(path)], capsys)
    assert code == 0
    assert "F1 90% interval" in out
    assert "Planned on the posterior means" in out
    assert f"warning: {data['apps'][0]['name']}: thin evidence, 300 negative frames" in out

    code, out, _ = run_cli(["schedule", "dry-run", str(path), "--json"], capsys)
    mean_plan = Plan.model_validate_json(out)
    for app in mean_plan.apps:
        assert app.f1_interval is not None
        assert app.f1_interval[0] <= app.f1 <= app.f1_interval[1]

    code, out, _ = run_cli(
        ["schedule", "dry-run", str(path), "--json", "--confidence", "0.9"], capsys
    )
    confident = Plan.model_validate_json(out)
    assert confident.confidence == 0.9
    assert confident.value <= mean_plan.value

    code, _, err = run_cli(["schedule", "dry-run", str(path), "--confidence", "1.5"], capsys)
    assert code == 2 and "--confidence" in err
