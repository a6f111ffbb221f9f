"""The mixed-integer program for scipy's HiGHS: an independent reference and a fallback.

It shares nothing with the exact search but the search space, so the tests use it as the
reference, and the `auto` solver uses its dual bound where the search's own bounds are weak.

Pure logic: numpy/scipy only, no I/O.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from scheduler.arrays import (
    OPTIMALITY_TOLERANCE,
    Solution,
    make_solution,
    min_cost_choice,
    search_arrays,
    segment_levels,
)
from scheduler.cost_model import budget_limit
from scheduler.deadline import DEFAULT_TIME_LIMIT_S, Deadline
from scheduler.greedy import greedy_choice
from scheduler.options import SearchSpace
from scheduler.problem import Objective

HIGHS_TIME_SHARE = {"small": 0.9, "large": 0.6}
"""Of the time left, what HiGHS is told it has: its presolve does not look at the clock, so
the rest absorbs its overrun, which grows with the model (`LARGE_MODEL` options)."""

LARGE_MODEL = 5000


def solve_milp(
    space: SearchSpace, objective: Objective, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> Solution | None:
    """Solve with scipy's MILP (HiGHS) within `time_limit_s`. None when nothing fits the budget.

    Variables: x[a, o] = app a runs option o; y[s, l] = segment s runs at >= its l-th level.
    Each app's demand for a segment is linked to y level by level, which keeps the relaxation
    tight. `min_f1` is solved in two stages: the best worst F1, then the best mean with every
    app at least that good. The solution's `upper_bound` is HiGHS's dual bound (equal to the
    value when HiGHS proves it optimal). When time runs out before HiGHS finds a schedule,
    the greedy's schedule is returned with what bound there is.
    """
    started = time.perf_counter()
    deadline = Deadline.after(time_limit_s)
    arrays = search_arrays(space)
    cheapest = min_cost_choice(arrays, arrays.valid)
    if cheapest is None or cheapest[0] > arrays.limit:
        return None  # proven by the exact minimum-cost programme, not by HiGHS
    # A schedule to fall back on should HiGHS find none in time: the greedy's, quickly.
    fallback = greedy_choice(arrays, objective, deadline=deadline.share(0.2)) or cheapest[1]
    first, bound = _milp_stage(space, objective, None, deadline)
    if first is None:
        first = make_solution(space, fallback)
    if objective == "min_f1" and not deadline.expired():
        floor = first.min_f1
        second, _ = _milp_stage(space, "mean_f1", floor, deadline)
        if second is not None and second.min_f1 >= floor - 1e-12:
            first = second
    value = first.value(objective)
    if bound is None:  # every app at its best, budget ignored
        best = np.where(arrays.valid, arrays.f1 if objective == "min_f1" else arrays.score, -np.inf)
        best_each = best.max(axis=1)
        bound = float(best_each.min() if objective == "min_f1" else best_each.sum())
    first.upper_bound = value if bound - value <= OPTIMALITY_TOLERANCE else max(bound, value)
    first.stats["solve_time_s"] = time.perf_counter() - started
    return first


def _milp_stage(
    space: SearchSpace, objective: Objective, minimum_f1: float | None, deadline: Deadline
) -> tuple[Solution | None, float | None]:
    """The stage's best schedule found in time (None: none) and its proven bound on the
    stage's objective (None: none proven)."""
    levels = segment_levels(space)
    level_offset = []
    x_offset, count = [], 0
    for rates in space.rate:
        x_offset.append(count)
        count += len(rates)
    for segment_levels_ in levels:
        level_offset.append(count)
        count += len(segment_levels_) - 1  # level 0 needs no variable
    use_t = objective == "min_f1"
    t_index = count
    num_vars = count + (1 if use_t else 0)

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lower: list[float] = []
    upper: list[float] = []

    def add_row(entries: list[tuple[int, float]], lo: float, hi: float) -> None:
        row = len(lower)
        for col, value in entries:
            rows.append(row)
            cols.append(col)
            vals.append(value)
        lower.append(lo)
        upper.append(hi)

    def y(segment: int, rate: float) -> int:
        position = int(np.searchsorted(levels[segment], rate))
        return level_offset[segment] + position - 1

    # One option per app.
    for app, rates in enumerate(space.rate):
        add_row([(x_offset[app] + o, 1.0) for o in range(len(rates))], 1.0, 1.0)
    # Levels are nested: y[s, l+1] <= y[s, l] and y[s, l] <= y[parent, same rate].
    for segment, segment_levels_ in enumerate(levels):
        parent = space.segments[segment].parent
        for position in range(1, len(segment_levels_)):
            here = level_offset[segment] + position - 1
            if position > 1:
                add_row([(here, 1.0), (here - 1, -1.0)], -np.inf, 0.0)
            if parent >= 0:
                add_row([(here, 1.0), (y(parent, segment_levels_[position]), -1.0)], -np.inf, 0.0)
    # Demand: app a's options at or below segment s with rate >= level l need y[s, l].
    ancestors = [_ancestors(space, segment) for segment in range(len(space.segments))]
    for app, (segments, rates) in enumerate(zip(space.segment_of, space.rate, strict=True)):
        if deadline.expired():  # building a large model takes a while: stop in time
            return None, None
        demand: dict[int, list[tuple[int, float]]] = {}
        for o, (segment, rate) in enumerate(zip(segments.tolist(), rates.tolist(), strict=True)):
            for above in ancestors[segment]:
                for position in range(1, len(levels[above])):
                    if levels[above][position] <= rate:
                        key = level_offset[above] + position - 1
                        demand.setdefault(key, []).append((x_offset[app] + o, 1.0))
        for key, entries in demand.items():
            add_row([*entries, (key, -1.0)], -np.inf, 0.0)
    # Budget.
    budget_row: list[tuple[int, float]] = []
    for app, costs in enumerate(space.cost):
        budget_row.extend((x_offset[app] + o, float(c)) for o, c in enumerate(costs.tolist()))
    for segment, segment_levels_ in enumerate(levels):
        weight = space.segments[segment].cost_per_frame
        for position in range(1, len(segment_levels_)):
            step = float(segment_levels_[position] - segment_levels_[position - 1])
            budget_row.append((level_offset[segment] + position - 1, weight * step))
    add_row(budget_row, -np.inf, budget_limit(space.budget))

    objective_vector = np.zeros(num_vars)
    integrality = np.ones(num_vars)
    bounds_low = np.zeros(num_vars)
    bounds_high = np.ones(num_vars)
    if use_t:
        objective_vector[t_index] = -1.0
        integrality[t_index] = 0
        for app, f1 in enumerate(space.f1):
            add_row(
                [(t_index, 1.0)] + [(x_offset[app] + o, -float(v)) for o, v in enumerate(f1)],
                -np.inf,
                0.0,
            )
    else:
        for app, score in enumerate(space.score):
            objective_vector[x_offset[app] : x_offset[app] + len(score)] = -score
    if minimum_f1 is not None:
        for app, f1 in enumerate(space.f1):
            too_low = np.nonzero(f1 < minimum_f1)[0]
            bounds_high[x_offset[app] + too_low] = 0.0

    matrix = coo_matrix((vals, (rows, cols)), shape=(len(lower), num_vars)).tocsr()
    size = "large" if sum(len(rates) for rates in space.rate) > LARGE_MODEL else "small"
    if deadline.remaining() <= 0.0:
        return None, None
    result = milp(
        objective_vector,
        constraints=LinearConstraint(matrix, np.array(lower), np.array(upper)),
        integrality=integrality,
        bounds=Bounds(bounds_low, bounds_high),
        options={
            "time_limit": max(1e-3, HIGHS_TIME_SHARE[size] * deadline.remaining()),
            "mip_rel_gap": 0.0,
        },
    )
    dual_bound = getattr(result, "mip_dual_bound", None)
    bound = -float(dual_bound) if dual_bound is not None and np.isfinite(dual_bound) else None
    if result.status == 0 and result.x is not None:
        bound = -float(result.fun)  # proven optimal
    if result.x is None:
        return None, bound
    choice = [
        int(np.argmax(result.x[x_offset[app] : x_offset[app] + len(rates)]))
        for app, rates in enumerate(space.rate)
    ]
    solution = make_solution(space, choice)
    if solution.cost > budget_limit(space.budget):  # HiGHS's tolerances: not a schedule
        return None, bound
    return solution, bound


def _ancestors(space: SearchSpace, segment: int) -> list[int]:
    """The segment itself and every segment above it."""
    chain = []
    while segment >= 0:
        chain.append(segment)
        segment = space.segments[segment].parent
    return chain
