"""The seeded workload generator: determinism, shapes, ranges and valid, non-trivial problems."""

from __future__ import annotations

import itertools
import json

import pytest

from mainstream.core.errors import InvalidParameterError
from scheduler.problem import Problem
from scheduler.workload import (
    CORRELATION_RANGE,
    EVENT_FREQUENCY_RANGE,
    EVENT_LENGTH_RANGE_S,
    example_profile,
    generate_apps,
    generate_fleet_problem,
    generate_paper_problem,
    generate_problem,
    mobilenet_v1_layers,
    mobilenet_v1_total_cost,
    no_sharing_full_rate_cost,
    paper_profile,
)


def test_default_profile_looks_like_mobilenet_v1() -> None:
    profile = example_profile()
    names = [cut.name for cut in profile.cut_points]
    assert len(names) == 16
    assert names[0] == "input"
    assert profile.cut_points[0].cumulative_cost == 0.0
    assert names[1] == "conv1_relu"
    assert names[2:14] == [f"conv_pw_{block}_relu" for block in range(1, 13)]
    assert names[-2:] == ["conv_dw_13_relu", "conv_pw_13_relu"]
    assert 15.0 <= profile.total_cost <= 20.0
    assert profile.base_model == "mobilenet_v1"
    assert profile.cost_unit == "ms"
    costs = [cut.cumulative_cost for cut in profile.cut_points]
    assert all(later > earlier for earlier, later in itertools.pairwise(costs))
    assert profile.total_cost > costs[-1]


@pytest.mark.parametrize("num_cut_points", [2, 3, 5, 8, 14, 15, 16, 17, 22, 28])
def test_profile_sizes(num_cut_points: int) -> None:
    profile = example_profile(num_cut_points)
    names = [cut.name for cut in profile.cut_points]
    assert len(names) == num_cut_points
    assert names[0] == "input"
    assert names[-1] == "conv_pw_13_relu"
    # A subset of the full network, in network order, with the full network's costs.
    full = dict(mobilenet_v1_layers())
    order = list(full)
    assert [order.index(name) for name in names] == sorted(order.index(name) for name in names)
    for cut in profile.cut_points:
        assert cut.cumulative_cost == pytest.approx(full[cut.name], abs=1e-4)
    assert profile.total_cost == pytest.approx(mobilenet_v1_total_cost(), abs=1e-4)


def test_layer_costs_follow_the_architecture() -> None:
    """Pointwise convolutions carry most of the time; the head after the last block is tiny."""
    full = dict(mobilenet_v1_layers())
    assert len(full) == 28
    pointwise_3 = full["conv_pw_3_relu"] - full["conv_dw_3_relu"]
    pointwise_4 = full["conv_pw_4_relu"] - full["conv_dw_4_relu"]
    assert pointwise_3 == pytest.approx(2 * pointwise_4)  # 128->128 at 56x56 vs 128->256 at 28x28
    assert 0 < mobilenet_v1_total_cost() - full["conv_pw_13_relu"] < 0.1


@pytest.mark.parametrize("bad", [0, 1, 29, -3, 2.5, True])
def test_profile_rejects_bad_sizes(bad: object) -> None:
    with pytest.raises(InvalidParameterError, match="num_cut_points") as raised:
        example_profile(bad)  # type: ignore[arg-type]
    assert raised.value.field == "num_cut_points"


def test_apps_are_deterministic_by_seed() -> None:
    profile = example_profile()
    first = [app.model_dump() for app in generate_apps(6, seed=42, profile=profile)]
    again = [app.model_dump() for app in generate_apps(6, seed=42, profile=profile)]
    other = [app.model_dump() for app in generate_apps(6, seed=43, profile=profile)]
    assert first == again
    assert first != other
    # App i does not depend on how many apps come after it.
    prefix = [app.model_dump() for app in generate_apps(3, seed=42, profile=profile)]
    assert prefix == first[:3]


def test_app_statistics_ranges_and_spread() -> None:
    apps = generate_apps(200, seed=1, profile=example_profile())
    assert len({app.name for app in apps}) == 200
    for field, (low, high) in [
        ("event_length_s", EVENT_LENGTH_RANGE_S),
        ("event_frequency", EVENT_FREQUENCY_RANGE),
        ("correlation", CORRELATION_RANGE),
    ]:
        values = [getattr(app, field) for app in apps]
        assert all(low <= value <= high for value in values), field
        # Spread over the whole range, not stuck at one value.
        width = high - low
        assert min(values) < low + 0.1 * width, field
        assert max(values) > high - 0.1 * width, field
    assert EVENT_LENGTH_RANGE_S == (0.2, 1.0)
    assert EVENT_FREQUENCY_RANGE == (0.1, 0.9)
    assert CORRELATION_RANGE == (0.1, 0.9)


@pytest.mark.parametrize("num_cut_points", [16, 28, 5])
def test_accuracy_is_flat_then_falls_off_a_cliff(num_cut_points: int) -> None:
    profile = example_profile(num_cut_points)
    cut_names = [cut.name for cut in profile.cut_points]
    for app in generate_apps(50, seed=7, profile=profile):
        assert [candidate.cut_point for candidate in app.candidates] == cut_names
        recall = [candidate.recall for candidate in app.candidates]
        false_positive_rate = [candidate.false_positive_rate for candidate in app.candidates]
        assert all(0 <= value <= 1 for value in recall + false_positive_rate)
        # Deeper cuts (more frozen layers) are never better per frame.
        assert all(b <= a for a, b in itertools.pairwise(recall))
        assert all(b >= a for a, b in itertools.pairwise(false_positive_rate))
        # Nearly flat through all but the deepest two cut points ...
        flat_recall_loss = recall[0] - recall[-3]
        flat_false_positive_rise = false_positive_rate[-3] - false_positive_rate[0]
        assert flat_recall_loss <= 0.05 + 1e-9
        assert flat_false_positive_rise <= 0.02 + 1e-9
        # ... then a cliff much larger than the whole flat part.
        assert recall[-3] - recall[-1] >= 0.15
        assert recall[-3] - recall[-1] > 3 * flat_recall_loss
        assert false_positive_rate[-1] - false_positive_rate[-3] >= 0.05
        # The fully specialised model is good.
        assert 0.8 <= recall[0] <= 0.97
        assert 0.01 <= false_positive_rate[0] <= 0.08


def test_generate_apps_rejects_bad_counts() -> None:
    with pytest.raises(InvalidParameterError, match="num_apps"):
        generate_apps(0, seed=1, profile=example_profile())


def test_problem_is_valid_and_deterministic() -> None:
    problem = generate_problem(8, seed=3)
    assert isinstance(problem, Problem)
    assert problem.camera_fps == 10
    assert problem.objective == "mean_f1"
    assert len(problem.apps) == 8
    assert problem.profile is not None and len(problem.profile.cut_points) == 16
    assert max(problem.fps_options) == 10
    assert all(app.base_model == "mobilenet_v1" for app in problem.apps)
    # It survives the JSON boundary unchanged.
    text = json.dumps(problem.model_dump(mode="json"))
    assert Problem.model_validate_json(text) == problem
    assert generate_problem(8, seed=3) == problem
    assert generate_problem(8, seed=4) != problem


def test_problem_options() -> None:
    problem = generate_problem(
        4, seed=0, budget=123.5, camera_fps=30, objective="min_f1", num_cut_points=6
    )
    assert problem.budget == 123.5
    assert problem.camera_fps == 30
    assert problem.objective == "min_f1"
    assert problem.profile is not None and len(problem.profile.cut_points) == 6
    assert max(problem.fps_options) == 30
    assert all(0 < fps <= 30 for fps in problem.fps_options)
    assert all(len(app.candidates) == 6 for app in problem.apps)

    slow_camera = generate_problem(2, seed=0, camera_fps=4)
    assert max(slow_camera.fps_options) == 4


def schedule_cost(problem: Problem, cut_points: list[str], fps: list[float]) -> float:
    """DESIGN §3 for one camera and one base model, written out independently of the search."""
    profile = problem.profile
    assert profile is not None
    depth = [profile.index_of(cut) for cut in cut_points]
    costs = [cut.cumulative_cost for cut in profile.cut_points]
    stem = sum(
        (costs[segment] - costs[segment - 1])
        * max((rate for rate, cut in zip(fps, depth, strict=True) if cut >= segment), default=0)
        for segment in range(1, len(costs))
    )
    branches = sum(
        rate * (profile.total_cost - costs[cut]) for rate, cut in zip(fps, depth, strict=True)
    )
    return stem + branches


@pytest.mark.parametrize("num_apps", [1, 3, 10, 40])
def test_default_budget_is_neither_trivial_nor_infeasible(num_apps: int) -> None:
    problem = generate_problem(num_apps, seed=11)
    profile = problem.profile
    assert profile is not None
    most_accurate = [app.candidates[0].cut_point for app in problem.apps]
    deepest = [profile.cut_points[-1].name] * num_apps
    everything_at_camera_rate = schedule_cost(
        problem, most_accurate, [problem.camera_fps] * num_apps
    )
    cheapest = schedule_cost(problem, deepest, [min(problem.fps_options)] * num_apps)

    assert everything_at_camera_rate == pytest.approx(
        no_sharing_full_rate_cost(profile, num_apps, problem.camera_fps)
    )
    assert cheapest < problem.budget < everything_at_camera_rate
    # Far from it: without sharing, the apps average under half the camera rate.
    assert problem.budget < 0.5 * everything_at_camera_rate


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_apps": 0}, "num_apps"),
        ({"budget": 0}, "budget"),
        ({"budget": -5.0}, "budget"),
        ({"budget": float("nan")}, "budget"),
        ({"camera_fps": 0}, "camera_fps"),
        ({"objective": "max_f1"}, "objective"),
        ({"num_cut_points": 1}, "num_cut_points"),
    ],
)
def test_generate_problem_rejects_bad_arguments(kwargs: dict, field: str) -> None:
    arguments = {"num_apps": 2, "seed": 0, **kwargs}
    with pytest.raises(InvalidParameterError) as raised:
        generate_problem(**arguments)
    assert raised.value.field == field


def test_a_thinner_base_is_a_cheaper_distinct_profile() -> None:
    full, half = example_profile(16), example_profile(16, width_multiplier=0.5)
    assert half.base_model == "mobilenet_v1_050" != full.base_model
    assert [cut.name for cut in half.cut_points] == [cut.name for cut in full.cut_points]
    assert 0.2 * full.total_cost < half.total_cost < 0.5 * full.total_cost
    with pytest.raises(InvalidParameterError, match="width_multiplier"):
        example_profile(16, width_multiplier=1.5)


def test_fleet_problem_spreads_apps_over_cameras_and_bases() -> None:
    problem = generate_fleet_problem(40, num_cameras=4, seed=2)
    assert problem == generate_fleet_problem(40, num_cameras=4, seed=2)
    assert problem != generate_fleet_problem(40, num_cameras=4, seed=3)
    bases = {profile.base_model for profile in problem.all_profiles()}
    assert bases == {"mobilenet_v1", "mobilenet_v1_050"}
    assert all(profile.decode_cost == 0.5 for profile in problem.all_profiles())
    per_camera: dict[str, set[str | None]] = {}
    for app in problem.apps:
        per_camera.setdefault(app.camera, set()).add(app.base_model)
    assert len(per_camera) == 4
    assert all(found == bases for found in per_camera.values())
    full_rate = sum(
        problem.camera_fps * (problem.profile_for(app.base_model or "").total_cost + 0.5)
        for app in problem.apps
    )
    assert problem.budget == pytest.approx(0.1 * full_rate, rel=1e-6)


def test_paper_problem_has_flat_near_tied_curves_with_a_late_cliff() -> None:
    problem = generate_paper_problem(10, seed=5, budget=150)
    assert problem == generate_paper_problem(10, seed=5, budget=150)
    assert problem.budget == 150 and problem.camera_fps == 10
    assert len(problem.fps_options) == 19 and problem.fps_options[0] == 0.1
    assert problem.profile == paper_profile()
    near_ties = 0
    for app in problem.apps:
        recall = [candidate.recall for candidate in app.candidates]
        flat = recall[:10]
        assert max(flat) - min(flat) <= 0.03  # nearly flat over the first ten cut points
        assert recall[0] - recall[-1] >= 0.09  # a cliff at the end
        near_ties += sum(abs(a - b) < 0.01 for a, b in itertools.pairwise(recall))
        assert EVENT_LENGTH_RANGE_S[0] <= app.event_length_s <= EVENT_LENGTH_RANGE_S[1]
    assert near_ties >= 10 * 8  # most neighbouring cut points are within 0.01
