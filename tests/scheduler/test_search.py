"""Option tables, the exact search, the greedy, the MILP reference, baselines and the planner."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mainstream.core.errors import InfeasibleError, InvalidParameterError
from scheduler.cost_model import Placement, fits, schedule_cost
from scheduler.event_model import EventParams, event_quality
from scheduler.greedy import UpgradeCosts, solve_greedy
from scheduler.options import (
    build_option_tables,
    build_search_space,
    most_accurate_candidate,
)
from scheduler.planner import evaluate_assignment, make_plan
from scheduler.problem import AppSpec, Candidate, CutPoint, Objective, Problem, Profile
from scheduler.search import (
    ENUMERATE_LIMIT,
    Solution,
    search_arrays,
    solve_exact,
    solve_milp,
)
from scheduler.workload import generate_problem
from tests.scheduler.brute_force import brute_force, every_assignment
from tests.scheduler.instances import random_problem

TOLERANCE = 1e-9


def independent_cost(problem: Problem, space_solution: Solution, tables: list) -> float:
    """The solution's cost, recomputed by the cost model from the chosen options."""
    return schedule_cost(
        problem,
        {
            app.name: Placement(app.camera, app.base_model or "", option.stem_depth, option.fps)
            for app, table, position in zip(
                problem.apps, tables, space_solution.choice, strict=True
            )
            for option in [table.options[table.kept[position]]]
        },
    ).total


def test_option_quality_is_the_event_model_to_the_last_bit() -> None:
    for seed in range(40):
        problem = random_problem(seed, auto_vote_share=0.6)
        for sharing in ("shared", "no_sharing", "max_sharing"):
            for app, table in zip(problem.apps, build_option_tables(problem, sharing), strict=True):
                for option in table.options:
                    candidate = next(c for c in app.candidates if c.cut_point == option.cut_point)
                    expected = event_quality(
                        EventParams(
                            camera_fps=problem.camera_fps,
                            analysis_fps=option.fps,
                            event_length_s=app.event_length_s,
                            event_frequency=app.event_frequency,
                            correlation=app.correlation,
                            recall=candidate.recall,
                            false_positive_rate=candidate.false_positive_rate,
                            x_vote=option.x_vote,
                        )
                    )
                    assert (option.recall, option.precision, option.f1) == (
                        expected.recall,
                        expected.precision,
                        expected.f1,
                    )


def test_auto_vote_offers_every_vote_and_pruning_keeps_one_per_cut_and_rate() -> None:
    problem = random_problem(3, auto_vote_share=1.0)
    for table in build_option_tables(problem):
        assert {option.x_vote for option in table.options} == {1, 2, 3, 4, 5}
        kept = table.kept_options()
        assert len({(o.stem_depth, o.fps) for o in kept}) == len(kept)
        # No kept option is beaten by another at least as deep, as slow and as good.
        for a in kept:
            for b in kept:
                if a is not b:
                    assert not (b.stem_depth >= a.stem_depth and b.fps <= a.fps and b.f1 >= a.f1)


@pytest.mark.parametrize("enumerate_limit", [0, ENUMERATE_LIMIT], ids=["search", "default"])
@pytest.mark.parametrize("objective", ["mean_f1", "min_f1"])
def test_exact_equals_brute_force_and_greedy_never_beats_it(
    objective: Objective, enumerate_limit: int
) -> None:
    """Every assignment of every (unpruned) option, on random small problems: several
    cameras and base models, decode and split overheads, free cut points, auto votes.
    With `enumerate_limit` 0 the solver searches even where it would list everything."""
    seeds = range(240) if enumerate_limit == 0 else range(240, 300)
    checked = 0
    for seed in seeds:
        problem = random_problem(seed)
        tables = build_option_tables(problem)
        truth = brute_force(problem, tables)
        space = build_search_space(problem, tables)
        exact = solve_exact(space, objective, enumerate_limit=enumerate_limit)
        greedy = solve_greedy(space, objective)
        if truth is None:
            assert exact is None and greedy is None, f"seed {seed}"
            continue
        best_mean, _, best_min, best_mean_at_best_min = truth
        assert exact is not None, f"seed {seed}"
        if objective == "mean_f1":
            assert exact.mean_f1 == pytest.approx(best_mean, abs=TOLERANCE), f"seed {seed}"
        else:
            assert exact.min_f1 == pytest.approx(best_min, abs=TOLERANCE), f"seed {seed}"
            assert exact.mean_f1 == pytest.approx(best_mean_at_best_min, abs=TOLERANCE)
        assert fits(independent_cost(problem, exact, tables), problem.budget), f"seed {seed}"
        assert greedy is not None, f"seed {seed}"
        assert fits(independent_cost(problem, greedy, tables), problem.budget), f"seed {seed}"
        assert greedy.value(objective) <= exact.value(objective) + TOLERANCE, f"seed {seed}"
        checked += 1
    assert checked >= 0.9 * len(seeds)


def test_larger_random_problems_against_brute_force() -> None:
    for seed in range(5000, 5060):
        problem = random_problem(seed, max_apps=4, max_cuts=5, max_rates=3, auto_vote_share=0.0)
        tables = build_option_tables(problem)
        truth = brute_force(problem, tables)
        exact = solve_exact(build_search_space(problem, tables), "mean_f1", enumerate_limit=0)
        if truth is None:
            assert exact is None
        else:
            assert exact is not None and exact.mean_f1 == pytest.approx(truth[0], abs=TOLERANCE)


def several_cameras(num_apps: int, cameras: int, seed: int, budget_scale: float) -> Problem:
    problem = generate_problem(num_apps, seed=seed, num_cut_points=8)
    problem.budget *= budget_scale
    for index, app in enumerate(problem.apps):
        app.camera = f"cam{index % cameras}"
    assert problem.profile is not None
    problem.profile.decode_cost = 0.5
    return problem


MEDIUM = [
    pytest.param(lambda: random_problem(9003, max_apps=7, max_cuts=6, max_rates=5), 0, id="random"),
    pytest.param(
        lambda: generate_problem(5, seed=1, num_cut_points=8, budget=30.0), 0, id="workload"
    ),
    # Two apps per camera: each camera's sub-schedules are listed, then joined.
    pytest.param(
        lambda: several_cameras(6, 3, seed=2, budget_scale=0.2), ENUMERATE_LIMIT, id="3-cameras"
    ),
]


@pytest.mark.parametrize(("make_problem", "enumerate_limit"), MEDIUM)
@pytest.mark.parametrize("objective", ["mean_f1", "min_f1"])
def test_exact_equals_the_milp_reference(
    make_problem: Callable[[], Problem], enumerate_limit: int, objective: Objective
) -> None:
    problem = make_problem()
    space = build_search_space(problem, build_option_tables(problem))
    exact = solve_exact(space, objective, enumerate_limit=enumerate_limit)
    reference = solve_milp(space, objective, time_limit_s=30.0)  # optimal even when busy
    assert exact is not None and reference is not None
    assert exact.value(objective) == pytest.approx(reference.value(objective), abs=1e-7)
    assert exact.mean_f1 == pytest.approx(reference.mean_f1, abs=1e-7)


def test_an_infeasible_budget_names_the_minimum_cost() -> None:
    problem = random_problem(11)
    tables = build_option_tables(problem)
    _, costs, _, _ = every_assignment(problem, tables)
    cheapest = float(costs.min())
    problem.budget = cheapest * 0.99
    with pytest.raises(InfeasibleError, match="budget") as raised:
        make_plan(problem)
    assert f"{cheapest:.6g}" in str(raised.value)
    problem.budget = cheapest * (1 + 1e-12)
    assert make_plan(problem, with_baselines=False).total_cost <= problem.budget * (1 + 1e-9)


def two_app_problem(budget: float) -> Problem:
    """Two apps whose most accurate candidate is the fully specialised one (cut 'input')."""
    cuts = [("input", 0.0), ("mid", 6.0), ("deep", 9.0)]
    quality = [(0.95, 0.02), (0.9, 0.04), (0.6, 0.2)]
    return Problem(
        budget=budget,
        camera_fps=10,
        fps_options=[0.5, 1, 2, 5],
        profile=Profile(
            base_model="net",
            cut_points=[CutPoint(name=n, cumulative_cost=c) for n, c in cuts],
            total_cost=10.0,
        ),
        apps=[
            AppSpec(
                name=f"app{i}",
                event_length_s=0.8,
                event_frequency=0.3,
                correlation=0.4,
                x_vote="auto" if i else 1,
                candidates=[
                    Candidate(cut_point=n, recall=r, false_positive_rate=q)
                    for (n, _), (r, q) in zip(cuts, quality, strict=True)
                ],
            )
            for i in range(2)
        ],
    )


def test_baselines_are_what_they_claim() -> None:
    problem = two_app_problem(budget=30.0)
    plan = make_plan(problem)
    no_sharing, max_sharing = plan.baselines["no_sharing"], plan.baselines["max_sharing"]
    assert no_sharing.feasible and max_sharing.feasible
    for app, planned in zip(problem.apps, no_sharing.apps, strict=True):
        assert planned.cut_point == most_accurate_candidate(app).cut_point == "input"
    # Nothing shared: each app pays the whole network per analysed frame.
    assert no_sharing.total_cost == pytest.approx(sum(a.fps * 10.0 for a in no_sharing.apps))
    assert {app.cut_point for app in max_sharing.apps} == {"deep"}
    assert plan.value >= max(no_sharing.value, max_sharing.value) - TOLERANCE
    for baseline in (no_sharing, max_sharing):
        assert baseline.total_cost <= problem.budget * (1 + 1e-9)
        assert baseline.value == pytest.approx(np.mean([a.f1 for a in baseline.apps]))


def test_a_baseline_that_does_not_fit_is_reported_not_raised() -> None:
    # Sharing the stem makes 2 apps at 0.5 fps cost 4.5 + 2 * 0.5: No-Sharing needs 10.
    problem = two_app_problem(budget=6.0)
    plan = make_plan(problem)
    assert plan.value > 0
    assert plan.baselines["no_sharing"].feasible is False
    assert plan.baselines["no_sharing"].value == 0.0
    assert plan.baselines["max_sharing"].feasible is True


def test_plan_figures_add_up_and_replay_through_evaluate_assignment() -> None:
    problem = generate_problem(6, seed=4)
    problem.budget *= 0.2
    for solver in ("exact", "greedy"):
        plan = make_plan(problem, solver=solver, with_baselines=False)
        assert plan.solver == solver and plan.solve_time_s > 0
        assert sum(app.cost for app in plan.apps) == pytest.approx(plan.total_cost)
        assert plan.value == pytest.approx(np.mean([app.f1 for app in plan.apps]))
        again = evaluate_assignment(
            problem, {app.name: (app.cut_point, app.fps, app.x_vote) for app in plan.apps}
        )
        assert again.value == pytest.approx(plan.value, abs=1e-12)
        assert again.total_cost == pytest.approx(plan.total_cost, abs=1e-9)
        assert [a.cost for a in again.apps] == pytest.approx([a.cost for a in plan.apps])


def test_evaluate_assignment_rejects_bad_assignments() -> None:
    problem = generate_problem(2, seed=0)
    good = {app.name: (app.candidates[0].cut_point, 2.0, 1) for app in problem.apps}
    with pytest.raises(InvalidParameterError, match="every app"):
        evaluate_assignment(problem, dict(list(good.items())[:1]))
    with pytest.raises(InvalidParameterError, match="nobody"):
        evaluate_assignment(problem, {**good, "nobody": ("input", 1.0, 1)})
    name = problem.apps[0].name
    with pytest.raises(InvalidParameterError, match="cut_point"):
        evaluate_assignment(problem, {**good, name: ("no_such_layer", 1.0, 1)})
    with pytest.raises(InvalidParameterError, match="analysis_fps"):
        evaluate_assignment(problem, {**good, name: ("input", 99.0, 1)})
    # Rates outside fps_options are fine: the runtime may run any rate.
    assert evaluate_assignment(problem, {**good, name: ("input", 2.5, 2)}).apps[0].fps == 2.5


def test_unknown_solver_is_rejected() -> None:
    with pytest.raises(InvalidParameterError, match="solver"):
        make_plan(generate_problem(1, seed=0), solver="fastest")  # type: ignore[arg-type]


def test_thirty_apps_solve_exactly_and_beat_both_baselines() -> None:
    problem = generate_problem(30, seed=0)
    problem.budget *= 0.2
    plan = make_plan(problem)
    greedy = make_plan(problem, solver="greedy", with_baselines=False)
    assert greedy.value <= plan.value + TOLERANCE
    assert plan.value > plan.baselines["max_sharing"].value
    assert plan.value > plan.baselines["no_sharing"].value


def test_greedy_prices_every_single_switch_exactly() -> None:
    rng = np.random.default_rng(5)
    for seed in range(30):
        problem = random_problem(seed, max_apps=4, auto_vote_share=0.5)
        arrays = search_arrays(build_search_space(problem, build_option_tables(problem)))
        choice = [int(rng.choice(np.nonzero(row)[0])) for row in arrays.valid]
        extra = UpgradeCosts(arrays).extra_costs(choice)
        before = arrays.total_cost(choice)
        for app, column in zip(*np.nonzero(arrays.valid), strict=True):
            switched = [*choice[:app], int(column), *choice[app + 1 :]]
            assert extra[app, column] == pytest.approx(
                arrays.total_cost(switched) - before, abs=1e-9
            )


def test_greedy_is_optimal_for_a_single_app() -> None:
    for seed in range(20):
        problem = generate_problem(1, seed=seed)
        problem.budget *= [0.05, 0.2, 1.0][seed % 3]
        assert make_plan(problem, solver="greedy", with_baselines=False).value == pytest.approx(
            make_plan(problem, with_baselines=False).value, abs=TOLERANCE
        )
