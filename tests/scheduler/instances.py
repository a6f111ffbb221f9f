"""Small random scheduling problems for the scheduler tests (several cameras and bases,
non-monotone accuracy, decode and split overheads, X-voting)."""

from __future__ import annotations

import itertools
import math

import numpy as np

from scheduler.options import build_option_tables
from scheduler.problem import AppSpec, Candidate, CutPoint, Problem, Profile
from tests.scheduler.brute_force import every_assignment


def random_profile(rng: np.random.Generator, base_model: str, num_cuts: int) -> Profile:
    steps = rng.uniform(0.0, 3.0, size=num_cuts - 1)
    steps[rng.random(num_cuts - 1) < 0.15] = 0.0  # some cut points cost nothing extra
    cumulative = np.concatenate(([0.0], np.cumsum(steps)))
    extras = rng.random(2) < 0.3
    return Profile(
        base_model=base_model,
        cut_points=[
            CutPoint(name=f"{base_model}_cut{k}", cumulative_cost=float(c))
            for k, c in enumerate(cumulative)
        ],
        total_cost=float(cumulative[-1] + rng.uniform(0.2, 2.0)),
        decode_cost=float(rng.uniform(0.1, 1.0)) if extras[0] else 0.0,
        split_overhead=float(rng.uniform(0.05, 0.5)) if extras[1] else 0.0,
    )


def random_problem(
    seed: int,
    max_apps: int = 3,
    max_cuts: int = 4,
    max_rates: int = 3,
    auto_vote_share: float = 0.3,
) -> Problem:
    """A random problem whose budget lies between the cheapest and the dearest schedules."""
    rng = np.random.default_rng(seed)
    num_bases = 1 if rng.random() < 0.7 else 2
    num_cameras = 1 if rng.random() < 0.6 else 2
    profiles = [
        random_profile(rng, f"base{b}", int(rng.integers(2, max_cuts + 1)))
        for b in range(num_bases)
    ]
    camera_fps = float(rng.choice([5.0, 10.0, 15.0]))
    num_rates = int(rng.integers(1, max_rates + 1))
    fps_options = sorted({float(round(r, 2)) for r in rng.uniform(0.2, camera_fps, size=num_rates)})
    apps = []
    for index in range(int(rng.integers(1, max_apps + 1))):
        profile = profiles[int(rng.integers(num_bases))]
        cuts = [cut.name for cut in profile.cut_points]
        chosen = sorted(
            rng.choice(len(cuts), size=int(rng.integers(1, len(cuts) + 1)), replace=False)
        )
        candidates = [
            Candidate(
                cut_point=cuts[k],
                recall=float(rng.uniform(0.3, 0.99)),
                false_positive_rate=float(rng.uniform(0.0, 0.3)),
            )
            for k in chosen
        ]
        apps.append(
            AppSpec(
                name=f"app{index}",
                camera=f"cam{int(rng.integers(num_cameras))}",
                base_model=profile.base_model,
                event_length_s=float(rng.uniform(0.1, 1.5)),
                event_frequency=float(rng.uniform(0.05, 0.9)),
                correlation=float(rng.uniform(0.0, 0.95)),
                x_vote="auto" if rng.random() < auto_vote_share else int(rng.integers(1, 3)),
                weight=float(rng.uniform(0.5, 2.0)) if rng.random() < 0.3 else 1.0,
                candidates=candidates,
            )
        )
    problem = Problem(
        camera_fps=camera_fps,
        budget=1.0,
        objective="mean_f1",
        fps_options=fps_options,
        profiles=profiles,
        apps=apps,
    )
    # A budget from a little below the cheapest schedule to a little above the dearest.
    tables = build_option_tables(problem)
    if math.prod(len(table.options) for table in tables) <= 200_000:
        _, costs, _, _ = every_assignment(problem, tables)
        low, high = float(costs.min()), float(costs.max())
    else:  # too many to list: every app alone at its cheapest, or at its dearest
        low = sum(min(o.branch_cost for o in table.options) for table in tables)
        high = sum(max(o.branch_cost for o in table.options) for table in tables)
    problem.budget = max(1e-3, low + float(rng.uniform(-0.03, 1.03)) * (high - low))
    return problem


def all_assignments(num_options: list[int]) -> itertools.product[tuple[int, ...]]:
    return itertools.product(*(range(count) for count in num_options))
