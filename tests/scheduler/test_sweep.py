from __future__ import annotations

import itertools
import math

import pytest

from mainstream.core.errors import InvalidParameterError
from scheduler.planner import make_plan
from scheduler.problem import Problem
from scheduler.sweep import (
    STRATEGIES,
    SweepPoint,
    SweepResult,
    budget_range,
    budgets_around,
    first_apps,
    sweep_app_subsets,
    sweep_budgets,
    sweep_generated,
    with_budget,
)
from scheduler.workload import generate_problem

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def problem() -> Problem:
    return generate_problem(3, seed=7, num_cut_points=6)


def test_each_budget_matches_a_direct_plan(problem: Problem) -> None:
    budgets = [0.8 * problem.budget, problem.budget, 1.5 * problem.budget]
    result = sweep_budgets(problem, budgets)
    assert [point.budget for point in result.points] == budgets
    for point in result.points:
        plan = make_plan(with_budget(problem, point.budget))
        assert point.num_apps == 3
        assert point.mainstream.feasible
        assert point.mainstream.value == pytest.approx(plan.value, abs=TOLERANCE)
        assert point.mainstream.total_cost == pytest.approx(plan.total_cost, abs=TOLERANCE)
        assert point.mainstream.app_f1 == {app.name: app.f1 for app in plan.apps}
        for key in ("max_sharing", "no_sharing"):
            baseline = plan.baselines[key]
            outcome = point.outcome(key)
            assert outcome.feasible == baseline.feasible
            if baseline.feasible:
                assert outcome.value == pytest.approx(baseline.value, abs=TOLERANCE)


def test_more_budget_never_hurts_and_mainstream_never_loses(problem: Problem) -> None:
    budgets = budget_range(0.1 * problem.budget, 2 * problem.budget, 8)
    result = sweep_budgets(problem, budgets)
    values = [point.mainstream.value for point in result.points]
    assert all(value is not None for value in values)
    feasible_values = [value for value in values if value is not None]
    assert all(b >= a - TOLERANCE for a, b in itertools.pairwise(feasible_values))
    for point in result.points:
        assert point.mainstream.value is not None
        for outcome in (point.max_sharing, point.no_sharing):
            if outcome.value is not None:
                assert point.mainstream.value >= outcome.value - TOLERANCE
        gain = point.gain_over_best_baseline()
        assert gain is not None and gain >= -TOLERANCE


def test_a_budget_too_small_for_anything_is_recorded_not_raised(problem: Problem) -> None:
    result = sweep_budgets(problem, [1e-4, problem.budget])
    tiny, normal = result.points
    for strategy in STRATEGIES:
        assert not tiny.outcome(strategy).feasible
        assert tiny.outcome(strategy).value is None
    assert tiny.gain_over_best_baseline() is None
    assert normal.mainstream.feasible
    assert result.series("mainstream") == [
        (1e-4, None),
        (problem.budget, normal.mainstream.value),
    ]


def test_no_sharing_alone_can_be_infeasible(problem: Problem) -> None:
    # Between the cheapest shared schedule and the cheapest unshared one, only sharing fits.
    profile = problem.all_profiles()[0]
    lowest_fps = min(problem.fps_options)
    unshared_minimum = len(problem.apps) * lowest_fps * profile.total_cost
    point = sweep_budgets(problem, [0.6 * unshared_minimum]).points[0]
    assert point.mainstream.feasible
    assert point.max_sharing.feasible
    assert not point.no_sharing.feasible


def test_progress_callback_sees_every_point(problem: Problem) -> None:
    seen: list[SweepPoint] = []
    result = sweep_budgets(problem, [problem.budget, 2 * problem.budget], on_point=seen.append)
    assert seen == result.points


def test_app_subsets_use_the_first_apps(problem: Problem) -> None:
    result = sweep_app_subsets(problem, [1, 3], budgets=[problem.budget])
    assert [point.num_apps for point in result.points] == [1, 3]
    names = [app.name for app in problem.apps]
    assert set(result.points[0].mainstream.app_f1) == set(names[:1])
    assert set(result.points[1].mainstream.app_f1) == set(names)
    # Alone, the first app can afford any option it had when sharing the budget with others.
    alone, shared = result.points
    first = names[0]
    assert alone.mainstream.app_f1[first] >= shared.mainstream.app_f1[first] - TOLERANCE
    assert result.app_counts() == [1, 3]


def test_app_subsets_default_to_the_problem_budget(problem: Problem) -> None:
    result = sweep_app_subsets(problem, [2])
    assert result.budgets() == [problem.budget]
    assert result.source == "problem_subsets"


def test_generated_sweep_is_seeded_and_uses_each_workloads_budget() -> None:
    first = sweep_generated([1, 2], seed=3)
    again = sweep_generated([1, 2], seed=3)
    assert first.points == again.points
    assert [point.budget for point in first.points] == [
        generate_problem(1, 3).budget,
        generate_problem(2, 3).budget,
    ]
    assert first.source == "generated" and first.seed == 3
    assert first.budget_unit == "ms/s"


def test_generated_sweep_with_budgets_covers_every_pair() -> None:
    result = sweep_generated([1, 2], budgets=[20.0, 40.0], seed=1, objective="min_f1")
    assert [(point.num_apps, point.budget) for point in result.points] == [
        (1, 20.0),
        (1, 40.0),
        (2, 20.0),
        (2, 40.0),
    ]
    assert result.objective == "min_f1"
    for point in result.points:
        if point.mainstream.value is not None:
            assert point.mainstream.value == pytest.approx(min(point.mainstream.app_f1.values()))


def test_result_round_trips_through_json(problem: Problem) -> None:
    result = sweep_budgets(problem, [1e-4, problem.budget])
    assert SweepResult.model_validate_json(result.model_dump_json()) == result


def test_with_budget_and_first_apps_leave_the_problem_alone(problem: Problem) -> None:
    before = problem.model_dump()
    assert with_budget(problem, 12.5).budget == 12.5
    assert [app.name for app in first_apps(problem, 2).apps] == [
        app.name for app in problem.apps[:2]
    ]
    assert problem.model_dump() == before


def test_budgets_around_brackets_the_budget() -> None:
    budgets = budgets_around(150.0)
    assert 150.0 in budgets
    assert budgets == sorted(budgets)
    assert budgets[0] == pytest.approx(37.5) and budgets[-1] == pytest.approx(300.0)
    assert len(budgets) == 10  # nine evenly spaced plus the budget itself


def test_budget_range_is_evenly_spaced_and_inclusive() -> None:
    assert budget_range(50, 150, 3) == [50.0, 100.0, 150.0]
    assert budget_range(0.1, 0.3, 3) == [0.1, 0.2, 0.3]  # no floating-point noise
    assert budget_range(7, 7, 1) == [7.0]
    steps = budget_range(10, 200, 20)
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert all(math.isclose(gap, 10.0) for gap in gaps)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda p: sweep_budgets(p, []), "budgets"),
        (lambda p: sweep_budgets(p, [100.0, -5.0]), "budget"),
        (lambda p: sweep_budgets(p, [math.nan]), "budget"),
        (lambda p: sweep_app_subsets(p, [4]), "app_counts"),
        (lambda p: sweep_app_subsets(p, [0]), "app_counts"),
        (lambda p: budget_range(100, 50, 3), "budget range"),
        (lambda p: budget_range(50, 100, 1), "steps"),
        (lambda p: budgets_around(0.0), "budget"),
    ],
)
def test_bad_sweep_parameters_are_rejected_by_name(problem: Problem, call, field: str) -> None:
    with pytest.raises(InvalidParameterError) as raised:
        call(problem)
    assert raised.value.field == field
