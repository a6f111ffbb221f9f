"""The cost model of DESIGN §3 on hand-computed schedules."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.cost_model import (
    FEASIBILITY_TOLERANCE,
    Placement,
    branch_cost,
    fits,
    schedule_cost,
    stem_cost,
    stem_cost_by_rate,
)
from scheduler.problem import AppSpec, Candidate, CutPoint, Problem, Profile

# Cut points at cumulative cost 0, 2, 5; whole network 8.
CUMULATIVE = [0.0, 2.0, 5.0]


def profile(base_model: str = "base", decode_cost: float = 0.0, split: float = 0.0) -> Profile:
    return Profile(
        base_model=base_model,
        cut_points=[
            CutPoint(name=f"{base_model}_c{k}", cumulative_cost=cost)
            for k, cost in enumerate(CUMULATIVE)
        ],
        total_cost=8.0,
        decode_cost=decode_cost,
        split_overhead=split,
    )


def problem(profiles: list[Profile], apps: dict[str, tuple[str, str]]) -> Problem:
    """apps: name -> (camera, base model); one candidate per cut point."""
    return Problem(
        budget=1000.0,
        fps_options=[1, 3, 4, 6],
        profiles=profiles,
        apps=[
            AppSpec(
                name=name,
                camera=camera,
                base_model=base,
                event_length_s=0.5,
                event_frequency=0.2,
                correlation=0.3,
                candidates=[
                    Candidate(cut_point=f"{base}_c{k}", recall=0.9, false_positive_rate=0.05)
                    for k in range(len(CUMULATIVE))
                ],
            )
            for name, (camera, base) in apps.items()
        ],
    )


# A at depth 2 and 4 fps, B at depth 1 and 6 fps, C at depth 2 and 1 fps, D at the input, 3 fps.
DEMANDS = {"A": (2, 4.0), "B": (1, 6.0), "C": (2, 1.0), "D": (0, 3.0)}


def placements(
    cameras: dict[str, str], bases: dict[str, str] | None = None
) -> dict[str, Placement]:
    bases = bases or {}
    return {
        name: Placement(cameras[name], bases.get(name, "base"), depth, fps)
        for name, (depth, fps) in DEMANDS.items()
    }


def test_shared_stem_runs_each_segment_at_the_fastest_app_that_needs_it() -> None:
    # Segment 0->1 (cost 2) is needed by A, B, C: max 6 fps -> 12.
    # Segment 1->2 (cost 3) is needed by A, C: max 4 fps -> 12.
    assert stem_cost(CUMULATIVE, list(DEMANDS.values())) == pytest.approx(24.0)
    # The same by rate layers: 1*C(2) + 2*C(2) + 1*C(2) + 2*C(1) = 5 + 10 + 5 + 4.
    assert stem_cost_by_rate(CUMULATIVE, list(DEMANDS.values())) == pytest.approx(24.0)


def test_one_camera_one_base_total_branches_and_fair_shares() -> None:
    spec = problem([profile()], {name: ("cam", "base") for name in DEMANDS})
    cost = schedule_cost(spec, placements(dict.fromkeys(DEMANDS, "cam")))
    assert cost.branches == pytest.approx({"A": 12.0, "B": 36.0, "C": 3.0, "D": 24.0})
    assert cost.stems == pytest.approx({("cam", "base"): 24.0})
    assert cost.decode == {"cam": 0.0}
    assert cost.total == pytest.approx(99.0)
    # Each frame of a segment is split evenly among the apps analysing it.
    # Segment 0->1: (0,1] fps by A, B, C; (1,4] by A, B; (4,6] by B alone.
    # Segment 1->2: (0,1] by A, C; (1,4] by A alone.
    assert cost.app_shares == pytest.approx(
        {
            "A": 12.0 + (2 / 3 + 3.0) + (1.5 + 9.0),
            "B": 36.0 + (2 / 3 + 3.0 + 4.0),
            "C": 3.0 + 2 / 3 + 1.5,
            "D": 24.0,
        }
    )
    assert sum(cost.app_shares.values()) == pytest.approx(cost.total)


def test_apps_on_different_cameras_share_nothing() -> None:
    cameras = {"A": "cam0", "B": "cam0", "C": "cam1", "D": "cam1"}
    spec = problem([profile()], {name: (cameras[name], "base") for name in DEMANDS})
    cost = schedule_cost(spec, placements(cameras))
    # cam0: A, B -> 2*6 + 3*4 = 24. cam1: C alone -> 2*1 + 3*1 = 5 (D needs no stem).
    assert cost.stems == pytest.approx({("cam0", "base"): 24.0, ("cam1", "base"): 5.0})
    assert cost.total == pytest.approx(75.0 + 29.0)


def test_apps_on_different_base_models_share_nothing() -> None:
    bases = {"A": "x", "B": "y", "C": "x", "D": "y"}
    spec = problem([profile("x"), profile("y")], {name: ("cam", bases[name]) for name in DEMANDS})
    renamed = {
        name: Placement("cam", bases[name], depth, fps) for name, (depth, fps) in DEMANDS.items()
    }
    cost = schedule_cost(spec, renamed)
    # base x: A, C -> 2*4 + 3*4 = 20. base y: B alone -> 2*6 = 12.
    assert cost.stems == pytest.approx({("cam", "x"): 20.0, ("cam", "y"): 12.0})
    assert cost.total == pytest.approx(75.0 + 32.0)


def test_decode_once_per_camera_and_split_overhead_per_shared_branch() -> None:
    cameras = {"A": "cam0", "B": "cam0", "C": "cam1", "D": "cam1"}
    spec = problem(
        [profile(decode_cost=0.5, split=0.25)], {name: (cameras[name], "base") for name in DEMANDS}
    )
    cost = schedule_cost(spec, placements(cameras))
    # Decode at each camera's fastest app: cam0 6 fps, cam1 3 fps.
    assert cost.decode == pytest.approx({"cam0": 3.0, "cam1": 1.5})
    # Every head fed by the shared DAG pays the split overhead per analysed frame.
    assert cost.branches == pytest.approx({"A": 13.0, "B": 37.5, "C": 3.25, "D": 24.75})
    assert cost.total == pytest.approx(13.0 + 37.5 + 3.25 + 24.75 + 29.0 + 4.5)
    assert sum(cost.app_shares.values()) == pytest.approx(cost.total)
    # cam1's decode: (0,1] fps used by C and D, (1,3] by D alone.
    assert cost.app_shares["C"] == pytest.approx(3.25 + 2.0 + 3.0 + 0.5 * 1 / 2)
    # An app run end to end on its own pays no split overhead.
    assert branch_cost(spec.profile_for("base"), 0, 3.0, shared=False) == pytest.approx(24.0)
    assert branch_cost(spec.profile_for("base"), 0, 3.0, shared=True) == pytest.approx(24.75)


def test_budget_tolerance_absorbs_rounding_only() -> None:
    assert fits(100.0 * (1 + FEASIBILITY_TOLERANCE / 2), 100.0)
    assert not fits(100.0 * (1 + 10 * FEASIBILITY_TOLERANCE), 100.0)


def test_segment_and_rate_layer_sums_agree_on_random_stems() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        cumulative = np.concatenate(([0.0], np.cumsum(rng.uniform(0, 3, int(rng.integers(1, 8))))))
        demands = [
            (int(rng.integers(0, len(cumulative))), float(rng.choice([0.5, 1.0, 2.0, 5.0])))
            for _ in range(int(rng.integers(1, 6)))
        ]
        assert stem_cost(list(cumulative), demands) == pytest.approx(
            stem_cost_by_rate(list(cumulative), demands), abs=1e-9
        )


def test_a_split_overhead_measured_at_a_cut_point_overrides_the_profiles() -> None:
    measured = profile(split=0.25)
    measured.cut_points[1] = CutPoint(name="base_c1", cumulative_cost=2.0, split_overhead=1.5)
    # Depth 1 pays its own overhead; the others the profile's single figure.
    assert measured.split_overhead_at(1) == 1.5
    assert measured.split_overhead_at(2) == 0.25
    assert branch_cost(measured, 1, 2.0) == pytest.approx(2.0 * (8.0 - 2.0 + 1.5))
    assert branch_cost(measured, 2, 2.0) == pytest.approx(2.0 * (8.0 - 5.0 + 0.25))
    assert branch_cost(measured, 1, 2.0, shared=False) == pytest.approx(2.0 * 6.0)
    with pytest.raises(ValueError):
        CutPoint(name="negative", cumulative_cost=1.0, split_overhead=-0.1)
