from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ElementTree

import pytest

from scheduler.planner import make_plan
from scheduler.problem import Plan, Problem
from scheduler.report import (
    ChartSeries,
    format_plan,
    format_sweep,
    fps_curves,
    html_report,
    line_chart_svg,
    log_ticks,
    nice_ticks,
    sweep_html_report,
    text_table,
)
from scheduler.sweep import SweepResult, sweep_budgets, sweep_generated, with_budget
from scheduler.workload import generate_problem


@pytest.fixture(scope="module")
def problem() -> Problem:
    generated = generate_problem(3, seed=11, num_cut_points=6)
    names = ["trains", "pedestrians", "buses"]
    apps = [
        app.model_copy(update={"name": name})
        for app, name in zip(generated.apps, names, strict=True)
    ]
    return generated.model_copy(update={"apps": apps})


@pytest.fixture(scope="module")
def plan(problem: Problem) -> Plan:
    return make_plan(problem)


@pytest.fixture(scope="module")
def sweep(problem: Problem) -> SweepResult:
    return sweep_budgets(problem, [1e-4, 0.5 * problem.budget, problem.budget, 2 * problem.budget])


def svg_blocks(text: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", text, flags=re.DOTALL)


def test_plan_table_has_a_row_per_app_with_its_choice(plan: Plan, problem: Problem) -> None:
    text = format_plan(plan, problem)
    lines = text.splitlines()
    for app in plan.apps:
        row = next(line for line in lines if line.startswith(app.name + " "))
        assert app.cut_point in row
        assert f"{app.f1:.3f}" in row
        assert f"{app.recall:.3f}" in row and f"{app.precision:.3f}" in row
    assert f"{plan.value:.3f}" in text
    assert plan.solver in text
    assert "3 apps on mobilenet_v1" in text
    assert "ms/s" in text


def test_plan_table_shows_cost_shares_that_add_up(plan: Plan, problem: Problem) -> None:
    text = format_plan(plan, problem)
    header_index = next(i for i, line in enumerate(text.splitlines()) if line.startswith("App "))
    rows = text.splitlines()[header_index + 2 : header_index + 2 + len(plan.apps) + 1]
    shares = [float(match) for row in rows for match in re.findall(r"([\d.]+)%$", row)]
    assert len(shares) >= len(plan.apps)
    assert sum(shares) == pytest.approx(100.0, abs=0.1 * len(shares))


def test_plan_table_puts_the_baselines_beside_mainstream(plan: Plan, problem: Problem) -> None:
    text = format_plan(plan, problem)
    comparison = text.split("Compared with the baselines", 1)[1]
    header = comparison.splitlines()[1]
    assert header.split() == ["Mainstream", "Max-Sharing", "No-Sharing"]
    value_row = next(line for line in comparison.splitlines() if line.startswith("mean event F1"))
    expected = [plan.value, plan.baselines["max_sharing"].value, plan.baselines["no_sharing"].value]
    assert value_row.split()[-3:] == [f"{value:.3f}" for value in expected]
    for app in plan.apps:
        assert any(line.startswith(f"F1 {app.name}") for line in comparison.splitlines())


def test_plan_table_says_when_a_baseline_does_not_fit(problem: Problem) -> None:
    profile = problem.all_profiles()[0]
    unshared_minimum = len(problem.apps) * min(problem.fps_options) * profile.total_cost
    tight = with_budget(problem, 0.6 * unshared_minimum)
    plan = make_plan(tight)
    assert not plan.baselines["no_sharing"].feasible
    text = format_plan(plan, tight)
    assert "No-Sharing does not fit" in text


def test_text_table_aligns_columns() -> None:
    lines = text_table(["Name", "Value"], [["a", "1.5"], ["longer", "10.25"]], right_from=1)
    assert lines == [
        "Name    Value",
        "------  -----",
        "a         1.5",
        "longer  10.25",
    ]


def test_sweep_table_marks_infeasible_budgets_and_gains(sweep: SweepResult) -> None:
    text = format_sweep(sweep)
    rows = [line for line in text.splitlines() if re.match(r"\s*3\s", line)]
    assert len(rows) == len(sweep.points)
    assert rows[0].split()[2:] == ["infeasible", "infeasible", "infeasible", "-"]
    last = sweep.points[-1]
    gain = last.gain_over_best_baseline()
    assert gain is not None
    assert rows[-1].split()[-1] == f"{gain:+.3f}"
    assert "Max-Sharing" in text and "No-Sharing" in text


def test_html_report_is_self_contained(plan: Plan, problem: Problem, sweep: SweepResult) -> None:
    page = html_report(plan, problem, sweep)
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert "<script" not in page.lower()
    external = re.findall(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page)
    assert external == []
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert "<style>" in page


def test_html_report_charts_are_well_formed_svg(
    plan: Plan, problem: Problem, sweep: SweepResult
) -> None:
    page = html_report(plan, problem, sweep)
    blocks = svg_blocks(page)
    assert len(blocks) >= 4  # budget sweep, F1 vs fps, per-app bars, budget use
    for block in blocks:
        ElementTree.fromstring(block)  # raises on malformed XML


def test_html_report_shows_the_plan_baselines_and_inputs(
    plan: Plan, problem: Problem, sweep: SweepResult
) -> None:
    page = html_report(plan, problem, sweep)
    for label in ("Mainstream", "Max-Sharing", "No-Sharing"):
        assert label in page
    for app in plan.apps:
        assert app.name in page
        assert app.cut_point in page
    for cut in problem.all_profiles()[0].cut_points:
        assert cut.name in page
    assert "compute budget" in page and "analysed frames per second" in page
    assert "this problem&#x27;s budget" in page
    assert "Problem as JSON" in page


def test_html_report_without_a_sweep_still_has_the_other_charts(
    plan: Plan, problem: Problem
) -> None:
    page = html_report(plan, problem)
    assert "compute budget (" not in page
    assert len(svg_blocks(page)) >= 3


def test_html_escapes_names(problem: Problem) -> None:
    apps = list(problem.apps)
    apps[0] = apps[0].model_copy(update={"name": "<b>cars & trucks</b>"})
    hostile = problem.model_copy(update={"apps": apps})
    page = html_report(make_plan(hostile), hostile)
    assert "<b>cars" not in page
    assert "&lt;b&gt;cars &amp; trucks&lt;/b&gt;" in page
    for block in svg_blocks(page):
        ElementTree.fromstring(block)


def test_fps_curves_pass_through_the_planned_points(plan: Plan, problem: Problem) -> None:
    curves = fps_curves(plan, problem)
    assert [app.name for app, _ in curves] == [app.name for app in plan.apps]
    for app, curve in curves:
        rates = [fps for fps, _ in curve]
        assert rates == sorted(rates)
        assert rates[0] == min(problem.fps_options) and rates[-1] == problem.camera_fps
        at_plan = dict(curve)[app.fps]
        assert at_plan == pytest.approx(app.f1, abs=1e-9)


def test_sweep_report_has_a_chart_per_workload_size() -> None:
    result = sweep_generated([1, 2], budgets=[15.0, 30.0, 60.0], seed=2)
    page = sweep_html_report(result)
    assert "vs compute budget — 1 app<" in page
    assert "vs compute budget — 2 apps" in page
    assert "vs number of apps" in page
    for block in svg_blocks(page):
        ElementTree.fromstring(block)


def test_line_chart_breaks_lines_at_missing_values() -> None:
    svg = line_chart_svg(
        [ChartSeries("s", [(1, 0.2), (2, 0.4), (3, None), (4, 0.5), (5, 0.6)], "#000")],
        x_label="x",
        y_label="y",
    )
    lines = re.findall(r'<path d="M[^"]*" fill="none" stroke="#000"', svg)
    assert len(lines) == 2
    assert lines[0].count("L") == 1 and lines[1].count("L") == 1
    assert svg.count("<circle") == 4


def test_line_chart_with_nothing_to_plot_says_so() -> None:
    svg = line_chart_svg([ChartSeries("s", [(1, None)], "#000")], x_label="x", y_label="y")
    assert "no feasible points" in svg
    ElementTree.fromstring(svg)


@pytest.mark.parametrize(("low", "high"), [(0, 1), (37.5, 300), (0.013, 0.92), (5, 5), (-3, 7)])
def test_nice_ticks_cover_the_range_with_even_steps(low: float, high: float) -> None:
    ticks = nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    assert 2 <= len(ticks) <= 12


def test_log_ticks_stay_inside_the_range() -> None:
    assert log_ticks(0.1, 10) == [0.1, 0.2, 0.5, 1, 2, 5, 10]
    ticks = log_ticks(0.3, 0.4)
    assert len(ticks) == 2 and all(0.3 <= tick <= 0.4 for tick in ticks)
    assert all(math.isfinite(tick) for tick in log_ticks(1e-3, 1e3))
