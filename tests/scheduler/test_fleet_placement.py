"""Fleet placement: every plan fits every node's budget, the exact search matches the whole
fleet's MILP, the bound is never below the value, and the heuristic never beats the optimum."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mainstream.core.errors import InfeasibleError
from scheduler import fleet_placement
from scheduler.cost_model import fits
from scheduler.deadline import Deadline
from scheduler.fleet import Fleet, FleetPlan
from scheduler.fleet_milp import solve_fleet_milp
from scheduler.fleet_placement import Placer, place_fleet, round_robin_sets
from scheduler.fleet_report import format_fleet_plan
from scheduler.problem import Objective
from scheduler.solvers import solve
from scheduler.workload import generate_fleet

TOLERANCE = 1e-6
FEW_RATES = (0.5, 1.0, 2.0, 5.0, 10.0)


def small_fleet(
    seed: int,
    nodes: int,
    cameras: int,
    apps: int,
    budget_fraction: float,
    objective: Objective = "mean_f1",
) -> Fleet:
    return generate_fleet(
        nodes,
        cameras,
        seed=seed,
        apps_per_camera=apps,
        budget_fraction=budget_fraction,
        num_cut_points=4,
        objective=objective,
        fps_options=FEW_RATES,
    )


def check_fits(fleet: Fleet, plan: FleetPlan) -> None:
    """Every camera on exactly one node that has its base; every node within its budget."""
    placed = [camera for node in plan.nodes for camera in node.cameras]
    assert sorted(placed) == sorted(camera.name for camera in fleet.cameras)
    budgets = {node.name: node.budget for node in fleet.nodes}
    for node in plan.nodes:
        assert fits(node.total_cost, budgets[node.node])
        if node.plan is not None:
            assert node.plan.total_cost == node.total_cost
            cameras = {app.camera for app in node.plan.apps}
            assert cameras == set(node.cameras)
    assert plan.upper_bound >= plan.value - 1e-12
    assert 0.0 <= plan.optimality_gap <= 1.0


fleets = st.builds(
    small_fleet,
    seed=st.integers(0, 10_000),
    nodes=st.integers(1, 3),
    cameras=st.integers(1, 4),
    apps=st.integers(1, 2),
    budget_fraction=st.floats(0.1, 0.6),
    objective=st.sampled_from(["mean_f1", "min_f1"]),
)


@given(fleet=fleets)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_placements_fit_every_budget_and_bound_their_value(fleet: Fleet) -> None:
    try:
        exact = place_fleet(fleet, "exact", time_limit_s=5)
    except InfeasibleError:
        with pytest.raises(InfeasibleError):
            place_fleet(fleet, "heuristic", time_limit_s=5)
        return
    check_fits(fleet, exact)
    assert exact.method == "exact" and exact.optimality_gap == 0.0
    try:
        heuristic = place_fleet(fleet, "heuristic", time_limit_s=5)
    except InfeasibleError:  # a packing the greedy missed: allowed, it says so
        return
    check_fits(fleet, heuristic)
    assert heuristic.value <= exact.value + TOLERANCE
    assert heuristic.upper_bound >= exact.value - TOLERANCE  # a bound on the optimum
    assert exact.round_robin is not None
    assert exact.round_robin.value <= exact.value + TOLERANCE


@given(
    seed=st.integers(0, 10_000),
    nodes=st.integers(1, 3),
    cameras=st.integers(1, 3),
    objective=st.sampled_from(["mean_f1", "min_f1"]),
)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_exact_placement_equals_the_fleet_milp(
    seed: int, nodes: int, cameras: int, objective: Objective
) -> None:
    fleet = small_fleet(seed, nodes, cameras, 1, 0.25, objective)
    milp = solve_fleet_milp(fleet, time_limit_s=30)
    try:
        exact = place_fleet(fleet, "exact", time_limit_s=5, with_round_robin=False)
    except InfeasibleError:
        assert milp is None
        return
    assert milp is not None and milp.optimal
    assert exact.value == pytest.approx(milp.value, abs=TOLERANCE)


def test_two_apps_per_camera_match_the_milp_too() -> None:
    fleet = small_fleet(4, 2, 2, 2, 0.15)
    milp = solve_fleet_milp(fleet, time_limit_s=30)
    exact = place_fleet(fleet, "exact", time_limit_s=5)
    assert milp is not None and milp.optimal
    assert exact.value == pytest.approx(milp.value, abs=TOLERANCE)
    assert exact.round_robin is not None and exact.value >= exact.round_robin.value - TOLERANCE


@pytest.mark.parametrize("objective", ["mean_f1", "min_f1"])
def test_node_values_from_camera_schedules_equal_the_node_scheduler(objective: Objective) -> None:
    """The knapsack over each camera's listed schedules is the node scheduler's optimum."""
    fleet = small_fleet(11, 2, 3, 2, 0.3, objective)
    placer = Placer(fleet, Deadline.after(30), node_time_limit_s=10)
    for node in fleet.nodes:
        cameras = frozenset(camera.name for camera in fleet.cameras)
        joined = placer.node_value(node.name, cameras)
        _, space = placer.space(node.name, cameras)
        solution = solve(space, objective, "auto", 10)
        if solution is None:
            assert joined is None
            continue
        assert joined is not None and solution.proven(objective)
        expected = solution.value(objective)
        if objective == "mean_f1":
            expected *= sum(a.weight for c in fleet.cameras for a in c.apps) / fleet.total_weight()
        assert joined.value == pytest.approx(expected, abs=1e-9)


def test_cameras_with_many_schedules_are_planned_by_the_node_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = small_fleet(5, 2, 3, 1, 0.25)
    listed = place_fleet(fleet, "exact", time_limit_s=5, with_round_robin=False)
    monkeypatch.setattr(fleet_placement, "CAMERA_SCHEDULE_LIMIT", 0)
    solved = place_fleet(fleet, "exact", time_limit_s=20, with_round_robin=False)
    assert solved.value == pytest.approx(listed.value, abs=TOLERANCE)


def test_heterogeneous_nodes_and_large_fleets_get_a_heuristic_with_its_gap() -> None:
    fleet = generate_fleet(
        4, 12, seed=2, apps_per_camera=2, num_cut_points=4, fps_options=FEW_RATES
    )
    plan = place_fleet(fleet, "auto", time_limit_s=3)
    check_fits(fleet, plan)
    assert plan.method == "heuristic"
    assert plan.upper_bound < 1.0  # the Lagrangian bound, not a trivial one
    assert plan.round_robin is not None and plan.value >= plan.round_robin.value
    text = format_fleet_plan(plan, fleet)
    assert "round-robin placement" in text and "gap" in text


def test_round_robin_takes_nodes_in_turn() -> None:
    fleet = small_fleet(1, 2, 5, 1, 0.5)
    sets = round_robin_sets(fleet)
    assert sets == {"node00": {"cam00", "cam02", "cam04"}, "node01": {"cam01", "cam03"}}


def test_a_camera_that_fits_nowhere_is_named() -> None:
    fleet = small_fleet(1, 2, 2, 2, 0.001)
    with pytest.raises(InfeasibleError, match=r"camera 'cam0[01]' fits on no node"):
        place_fleet(fleet, "exact", time_limit_s=5)


def test_fleet_files_are_checked() -> None:
    fleet = small_fleet(1, 2, 2, 1, 0.3)
    data = fleet.model_dump(mode="json")
    data["cameras"][1]["apps"][0]["name"] = data["cameras"][0]["apps"][0]["name"]
    with pytest.raises(ValidationError, match="app names must be unique"):
        Fleet.model_validate(data)
    data = fleet.model_dump(mode="json")
    data["nodes"][0]["profile"]["base_model"] = "other"
    data["nodes"][1]["profile"]["base_model"] = "other"
    with pytest.raises(ValidationError, match="no node has a profile"):
        Fleet.model_validate(data)
    assert math.isfinite(place_fleet(fleet, time_limit_s=5).value)
