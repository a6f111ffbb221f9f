"""Brute-force optimum of a small scheduling problem: every assignment of every option."""

from __future__ import annotations

import numpy as np

from scheduler.cost_model import budget_limit, camera_decode_cost
from scheduler.options import AppOptions
from scheduler.problem import Problem


def every_assignment(
    problem: Problem, tables: list[AppOptions]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(assignments, cost, mean_f1, min_f1) of every assignment of every option.

    Costs are computed straight from DESIGN §3, vectorised over the assignments.
    """
    counts = [len(table.options) for table in tables]
    grids = np.meshgrid(*[np.arange(count) for count in counts], indexing="ij")
    combos = np.stack([grid.ravel() for grid in grids], axis=1)  # (assignments, apps)
    total_weight = sum(table.weight for table in tables)

    cost = np.zeros(len(combos))
    mean = np.zeros(len(combos))
    worst = np.full(len(combos), np.inf)
    rates, depths = [], []
    for app, table in enumerate(tables):
        pick = combos[:, app]
        options = table.options
        cost += np.array([o.branch_cost for o in options])[pick]
        f1 = np.array([o.f1 for o in options])[pick]
        mean += table.weight * f1 / total_weight
        worst = np.minimum(worst, f1)
        rates.append(np.array([o.fps for o in options])[pick])
        depths.append(np.array([o.stem_depth for o in options])[pick])

    groups = {(table.camera, table.base_model) for table in tables}
    for camera, base_model in groups:
        members = [
            a for a, t in enumerate(tables) if (t.camera, t.base_model) == (camera, base_model)
        ]
        cumulative = [cut.cumulative_cost for cut in problem.profile_for(base_model).cut_points]
        for j in range(1, len(cumulative)):
            running = np.zeros(len(combos))
            for a in members:
                running = np.maximum(running, np.where(depths[a] >= j, rates[a], 0.0))
            cost += (cumulative[j] - cumulative[j - 1]) * running
    for camera in {table.camera for table in tables}:
        members = [a for a, t in enumerate(tables) if t.camera == camera]
        running = np.max(np.stack([rates[a] for a in members]), axis=0)
        cost += camera_decode_cost(problem, camera) * running

    return combos, cost, mean, worst


def brute_force(
    problem: Problem, tables: list[AppOptions]
) -> tuple[float, float, float, float] | None:
    """(best mean_f1, its cost, best min_f1, best mean among min_f1 optima) or None."""
    _, cost, mean, worst = every_assignment(problem, tables)
    feasible = cost <= budget_limit(problem.budget)
    if not feasible.any():
        return None
    best = int(np.argmax(np.where(feasible, mean, -np.inf)))
    best_min = float(np.max(np.where(feasible, worst, -np.inf)))
    at_floor = feasible & (worst >= best_min)
    best_mean_at_floor = float(np.max(np.where(at_floor, mean, -np.inf)))
    return float(mean[best]), float(cost[best]), best_min, best_mean_at_floor
