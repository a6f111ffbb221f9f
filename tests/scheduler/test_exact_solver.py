"""The exact solver returns the proven optimum: it equals brute-force enumeration."""

from __future__ import annotations

import pytest

from mainstream.core.errors import InfeasibleError
from scheduler.options import build_option_tables
from scheduler.planner import make_plan
from scheduler.problem import Problem
from scheduler.workload import generate_problem
from tests.scheduler.brute_force import brute_force
from tests.scheduler.instances import random_problem

SEEDS = range(220)


def with_objective(problem: Problem, objective: str) -> Problem:
    return problem.model_copy(update={"objective": objective})


@pytest.mark.parametrize("objective", ["mean_f1", "min_f1"])
def test_exact_equals_brute_force_on_random_small_instances(objective: str) -> None:
    checked = infeasible = 0
    for seed in SEEDS:
        problem = with_objective(random_problem(seed), objective)
        truth = brute_force(problem, build_option_tables(problem, "shared"))
        if truth is None:
            with pytest.raises(InfeasibleError):
                make_plan(problem, with_baselines=False)
            infeasible += 1
            continue
        best_mean, _, best_min, _ = truth
        plan = make_plan(problem, with_baselines=False)
        expected = best_mean if objective == "mean_f1" else best_min
        assert plan.value == pytest.approx(expected, abs=1e-9), f"seed {seed}"
        assert plan.total_cost <= problem.budget * (1 + 1e-9), f"seed {seed}"
        checked += 1
    assert checked + infeasible == len(SEEDS) and checked >= 200


@pytest.mark.parametrize("seed", range(4))
def test_greedy_is_feasible_and_never_beats_exact(seed: int) -> None:
    problem = generate_problem(12, seed=seed)
    exact = make_plan(problem, with_baselines=False)
    greedy = make_plan(problem, solver="greedy", with_baselines=False)
    assert greedy.total_cost <= problem.budget * (1 + 1e-9)
    assert greedy.value <= exact.value + 1e-12


@pytest.mark.parametrize("seed", range(2))
def test_exact_equals_milp_on_medium_instances(seed: int) -> None:
    problem = generate_problem(6, seed=seed, num_cut_points=8)
    assert make_plan(problem, with_baselines=False).value == pytest.approx(
        make_plan(problem, solver="milp", with_baselines=False, time_limit_s=30.0).value, abs=1e-7
    )  # HiGHS given the time to be optimal, even on a busy machine


def test_baselines_are_what_they_claim() -> None:
    problem = generate_problem(5, seed=3)
    plan = make_plan(problem)
    deepest = problem.all_profiles()[0].cut_points[-1].name
    assert {app.cut_point for app in plan.baselines["max_sharing"].apps} == {deepest}
    for app in plan.baselines["no_sharing"].apps:
        spec = next(a for a in problem.apps if a.name == app.name)
        # No-Sharing keeps each app on one single (its most accurate) candidate.
        assert app.cut_point in {c.cut_point for c in spec.candidates}
    assert plan.value >= max(b.value for b in plan.baselines.values()) - 1e-12


def test_an_infeasible_budget_is_a_clear_error() -> None:
    problem = generate_problem(3, seed=0).model_copy(update={"budget": 1e-6})
    with pytest.raises(InfeasibleError, match="budget"):
        make_plan(problem)
